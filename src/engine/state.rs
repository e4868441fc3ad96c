//! The engine's per-user state, persisted with the user (one JSON snapshot per change):
//! recorded segment membership, goals already fired, cap slots (committed and reserved),
//! deliveries waiting for a session, and the recent decisions that `explain` shows.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::text::{eq_str, same_text};
use crate::clock::Millis;

/// Recent decisions kept per user.
pub const MAX_DECISIONS: usize = 100;
/// Engagements remembered per user for once-per-delivery counting.
pub const MAX_SEEN: usize = 256;

/// A delivery holding a cap slot until it is seen or gives the slot back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reservation {
    /// Delivery id.
    pub delivery: String,
    /// When it was made.
    pub at: Millis,
    /// When it expires unseen.
    pub expires_at: Millis,
    /// The session it was sent to (None while pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Message kind (a modal occupies its session).
    #[serde(default)]
    pub kind: String,
}

/// Cap bookkeeping for one campaign.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CapState {
    /// Deliveries made, for `did: delivered` conditions. (Kept here, in the engine state
    /// each delivery writes anyway, rather than as an `$engage:<campaign>:delivered`
    /// event row: three B-tree inserts fewer per delivery. Rows written before still
    /// count, through the aggregates.)
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub delivered: u64,
    /// Deliveries seen (impression).
    #[serde(default)]
    pub committed: u64,
    /// Time of the last seen delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_committed: Option<Millis>,
    /// Deliveries not yet seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Reservation>,
    /// Impressions not yet converted, for attribution: `(delivery, variant, at)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impressions: Vec<(String, String, Millis)>,
    /// Control exposures not yet converted: `(variant, at)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<(String, Millis)>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl CapState {
    /// Slots in use: seen plus reserved.
    pub fn used(&self) -> u64 {
        self.committed + self.reserved.len() as u64
    }

    /// The user's last delivery of the campaign (seen or reserved).
    pub fn last_delivery(&self) -> Option<Millis> {
        self.reserved
            .iter()
            .map(|r| r.at)
            .chain(self.last_committed)
            .max()
    }
}

/// A user's cap state by campaign: a vector sorted by `campaign_key(id)`, so that
/// finding a campaign compares integers and its id once, where a map keyed by id compares
/// strings at every step (the hot path checks the caps of every campaign an event fires).
/// The state is boxed: an entry is 40 bytes, most users hold none or one. Serialized as a
/// JSON object `{campaign: state}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caps(Vec<(u64, String, Box<CapState>)>);

impl Caps {
    /// Where `id` (whose key is `key`) is or would be inserted.
    fn find(&self, key: u64, id: &str) -> Result<usize, usize> {
        // Most users hold a few entries: a scan's loads do not wait on each other.
        let mut i = if self.0.len() <= 16 {
            self.0
                .iter()
                .position(|(k, _, _)| *k >= key)
                .unwrap_or(self.0.len())
        } else {
            self.0.partition_point(|(k, _, _)| *k < key)
        };
        while let Some((k, other, _)) = self.0.get(i) {
            if *k != key {
                break;
            }
            if eq_str(other, id) {
                return Ok(i);
            }
            i += 1;
        }
        Err(i)
    }

    /// The campaign's cap state, `key` being `campaign_key(id)`.
    pub fn get_keyed(&self, key: u64, id: &str) -> Option<&CapState> {
        self.find(key, id).ok().map(|i| &*self.0[i].2)
    }

    /// The campaign's cap state.
    pub fn get(&self, id: &str) -> Option<&CapState> {
        self.get_keyed(campaign_key(id), id)
    }

    /// The campaign's cap state, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut CapState> {
        let i = self.find(campaign_key(id), id).ok()?;
        Some(&mut self.0[i].2)
    }

    /// The campaign's cap state, created empty if missing.
    pub fn entry(&mut self, id: &str) -> &mut CapState {
        let key = campaign_key(id);
        let i = match self.find(key, id) {
            Ok(i) => i,
            Err(i) => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (key, id.to_string(), Box::default()));
                i
            }
        };
        &mut self.0[i].2
    }

    /// `(campaign, state)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &CapState)> {
        self.0.iter().map(|(_, id, cap)| (id, &**cap))
    }

    /// The states, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &CapState> {
        self.0.iter().map(|(_, _, cap)| &**cap)
    }

    /// Whether no campaign has cap state.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many campaigns have cap state.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Forgets all cap state.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl Serialize for Caps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Caps {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Box<CapState>>::deserialize(d)?;
        let mut v: Vec<_> = map
            .into_iter()
            .map(|(id, cap)| (campaign_key(&id), id, cap))
            .collect();
        v.sort_by_key(|e| e.0);
        Ok(Caps(v))
    }
}

/// A delivery waiting for the user's next session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// Delivery id.
    pub delivery: String,
    /// Campaign id.
    pub campaign: String,
    /// Variant id.
    pub variant: String,
    /// The rendered message.
    pub message: Value,
    /// Created.
    pub created_at: Millis,
    /// Expires.
    pub expires_at: Millis,
}

/// One decision, for explain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    /// When.
    pub at: Millis,
    /// Campaign id.
    pub campaign: String,
    /// `delivered`, `pending`, `control`, `capped`, `not_in_audience`, `outside_schedule`,
    /// `lost_to_priority`, `modal_busy`, `expired`, `revoked`. A literal when the engine
    /// takes the decision (no allocation per decision; a repeat compares pointers).
    pub outcome: Cow<'static, str>,
    /// What fired it (`event:NAME` is shared by every decision the event causes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Arc<str>>,
    /// Details (which cap, which campaign won); most are literals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'static, str>>,
    /// Variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Delivery id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// How many more times the same decision was taken since `first_at` (consecutive
    /// repeats, e.g. a capped campaign, are folded into one entry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// When the first of the folded decisions was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_at: Option<Millis>,
}

/// A user's most recent decisions ([`MAX_DECISIONS`]), oldest first, with each one's
/// `campaign_key` in a list beside them: finding a campaign's last decision (every
/// decision does, to fold repeats) scans 8-byte keys, not 170-byte decisions. Boxed, so
/// a user without decisions (most idle sessions' users) holds one pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions(Option<Box<DecisionList>>);

#[derive(Debug, Clone, Default, PartialEq)]
struct DecisionList {
    list: VecDeque<Decision>,
    keys: VecDeque<u64>,
}

impl Decisions {
    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.0.iter().flat_map(|d| d.list.iter())
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |d| d.list.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The campaign's last decision (`key` is `campaign_key(campaign)`).
    pub fn last_of(&mut self, key: u64, campaign: &str) -> Option<&mut Decision> {
        let d = self.0.as_mut()?;
        let mut end = d.keys.len();
        while let Some(i) = d.keys.range(..end).rposition(|k| *k == key) {
            if eq_str(&d.list[i].campaign, campaign) {
                return Some(&mut d.list[i]);
            }
            end = i;
        }
        None
    }

    /// Appends a decision, dropping the oldest beyond [`MAX_DECISIONS`].
    pub fn push(&mut self, x: Decision) {
        self.push_keyed(campaign_key(&x.campaign), x);
    }

    /// [`Decisions::push`] with `key` = `campaign_key(x.campaign)` already at hand.
    pub fn push_keyed(&mut self, key: u64, x: Decision) {
        // Most users have one or two decisions: not the default first allocation of
        // four (~0.7 KB).
        let d = self.0.get_or_insert_with(|| {
            Box::new(DecisionList {
                list: VecDeque::with_capacity(1),
                keys: VecDeque::with_capacity(1),
            })
        });
        d.keys.push_back(key);
        d.list.push_back(x);
        while d.list.len() > MAX_DECISIONS {
            d.list.pop_front();
            d.keys.pop_front();
        }
    }
}

impl FromIterator<Decision> for Decisions {
    fn from_iter<I: IntoIterator<Item = Decision>>(iter: I) -> Self {
        let mut d = Decisions::default();
        for x in iter {
            d.push(x);
        }
        d
    }
}

/// A cheap hash of a campaign id (FNV-1a), never 0.
pub fn campaign_key(campaign: &str) -> u64 {
    let h = campaign.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    h.max(1)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The engine's state for one user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EngineState {
    /// Segments the user was last recorded inside.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub segments: BTreeSet<String>,
    /// Goal campaigns that already fired.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub goals: BTreeSet<String>,
    /// Caps by campaign.
    #[serde(default, skip_serializing_if = "Caps::is_empty")]
    pub caps: Caps,
    /// Deliveries waiting for a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// Recent decisions, oldest first. Not part of the snapshot: each decision is
    /// appended on its own (`WriteOp::Decision`) and the newest are loaded with the user.
    #[serde(skip)]
    pub decisions: Decisions,
    /// Recently counted engagements (`delivery:action:button`).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub seen: VecDeque<String>,
}

impl EngineState {
    /// Folds a repeat of the campaign's last decision (same outcome, cause and detail, no
    /// delivery) into it; false if the decision is not a repeat. `key` is
    /// `campaign_key(campaign)`.
    pub fn fold_repeat(
        &mut self,
        campaign: &str,
        key: u64,
        outcome: &str,
        cause: Option<&Arc<str>>,
        detail: Option<&str>,
        now: Millis,
    ) -> bool {
        let last = self.decisions.last_of(key, campaign);
        let same_cause = |a: Option<&Arc<str>>| match (a, cause) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || eq_str(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        let same_detail = |a: Option<&str>| match (a, detail) {
            (Some(a), Some(b)) => same_text(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        match last {
            Some(last)
                if same_text(&last.outcome, outcome)
                    && same_cause(last.cause.as_ref())
                    && same_detail(last.detail.as_deref())
                    && last.delivery.is_none() =>
            {
                last.first_at.get_or_insert(last.at);
                last.at = now;
                last.repeats += 1;
                true
            }
            _ => false,
        }
    }

    /// Records a new decision, keeping the most recent ones; `key` is
    /// `campaign_key(d.campaign)`.
    pub fn push_decision(&mut self, key: u64, d: Decision) {
        self.decisions.push_keyed(key, d);
    }

    /// Marks an engagement as counted; false if it already was.
    pub fn first_time(&mut self, key: String) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        self.seen.push_back(key);
        while self.seen.len() > MAX_SEEN {
            self.seen.pop_front();
        }
        true
    }

    /// Finds the reservation of a delivery: `(campaign, index)`.
    pub fn reservation(&self, delivery: &str) -> Option<(String, usize)> {
        self.caps.iter().find_map(|(c, cap)| {
            cap.reserved
                .iter()
                .position(|r| r.delivery == delivery)
                .map(|i| (c.clone(), i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(campaign: &str, at: Millis) -> Decision {
        Decision {
            at,
            campaign: campaign.into(),
            outcome: Cow::Borrowed("capped"),
            cause: None,
            detail: None,
            variant: None,
            delivery: None,
            repeats: 0,
            first_at: None,
        }
    }

    #[test]
    fn caps_find_every_campaign_and_round_trip_as_a_json_object() {
        let mut caps = Caps::default();
        // More than the 16 entries a lookup scans, so both lookups are exercised.
        for n in [3usize, 40] {
            caps.clear();
            for i in 0..n {
                caps.entry(&format!("c{i}")).committed = i as u64;
            }
            assert_eq!(caps.len(), n);
            for i in 0..n {
                assert_eq!(caps.get(&format!("c{i}")).unwrap().committed, i as u64);
            }
            assert!(caps.get("missing").is_none());
            caps.get_mut("c1").unwrap().committed = 100;
            // An existing entry is not duplicated.
            caps.entry("c1").committed += 1;
            assert_eq!(caps.len(), n);
            let json = serde_json::to_value(&caps).unwrap();
            assert_eq!(json["c1"]["committed"], 101);
            assert_eq!(json.as_object().unwrap().len(), n);
            let back: Caps = serde_json::from_value(json).unwrap();
            assert_eq!(back, caps);
        }
    }

    #[test]
    fn a_campaigns_last_decision_is_found_and_the_oldest_are_dropped() {
        let mut d = Decisions::default();
        for i in 0..(MAX_DECISIONS as i64 + 10) {
            d.push(decision(&format!("c{}", i % 7), i));
        }
        assert_eq!(d.len(), MAX_DECISIONS);
        assert_eq!(d.iter().next().unwrap().at, 10);
        let last = (0..MAX_DECISIONS as i64 + 10)
            .rev()
            .find(|i| i % 7 == 3)
            .unwrap();
        assert_eq!(d.last_of(campaign_key("c3"), "c3").unwrap().at, last);
        assert!(d.last_of(campaign_key("c9"), "c9").is_none());
        // A key that matches without the id matching is not a find.
        assert!(d.last_of(campaign_key("c3"), "other").is_none());
    }

    #[test]
    fn a_repeat_folds_and_a_different_decision_does_not() {
        let mut st = EngineState::default();
        let cause: Arc<str> = Arc::from("event:e");
        let mut first = decision("c", 1);
        first.cause = Some(cause.clone());
        first.detail = Some(Cow::Borrowed("max_per_user reached"));
        st.push_decision(campaign_key("c"), first);
        let key = campaign_key("c");
        // The same cause text in another allocation, the same detail text elsewhere.
        let other_cause: Arc<str> = Arc::from("event:e");
        let detail = String::from("max_per_user reached");
        assert!(st.fold_repeat("c", key, "capped", Some(&other_cause), Some(&detail), 5));
        assert!(st.fold_repeat(
            "c",
            key,
            "capped",
            Some(&cause),
            Some("max_per_user reached"),
            7
        ));
        let d = st.decisions.iter().next().unwrap();
        assert_eq!((d.repeats, d.first_at, d.at), (2, Some(1), 7));
        assert!(!st.fold_repeat("c", key, "not_in_audience", Some(&cause), None, 8));
        assert!(!st.fold_repeat("c", key, "capped", None, Some(&detail), 8));
        assert!(!st.fold_repeat("c", key, "capped", Some(&cause), None, 8));
        assert!(!st.fold_repeat("d", campaign_key("d"), "capped", Some(&cause), None, 8));
    }
}
