//! The engine's per-user state, persisted with the user (one JSON snapshot per change):
//! recorded segment membership, goals already fired, cap slots (committed and reserved),
//! deliveries waiting for a session, and the recent decisions that `explain` shows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// `lost_to_priority`, `modal_busy`, `expired`, `revoked`.
    pub outcome: String,
    /// What fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Details (which cap, which campaign won).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
    /// `campaign_key(campaign)`, so that finding a campaign's last decision compares
    /// integers; 0 = not computed (compare the ids).
    #[serde(skip)]
    pub key: u64,
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
    /// Caps by campaign. Boxed: a B-tree node holds room for 11 entries, ~1.3 KB per
    /// user with one campaign's state inline, ~0.35 KB with it boxed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caps: BTreeMap<String, Box<CapState>>,
    /// Deliveries waiting for a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// Recent decisions, oldest first. Not part of the snapshot: each decision is
    /// appended on its own (`WriteOp::Decision`) and the newest are loaded with the user.
    #[serde(skip)]
    pub decisions: VecDeque<Decision>,
    /// Recently counted engagements (`delivery:action:button`).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub seen: VecDeque<String>,
}

impl EngineState {
    /// Folds a repeat of the campaign's last decision (same outcome, cause and detail, no
    /// delivery) into it; false if the decision is not a repeat.
    pub fn fold_repeat(
        &mut self,
        campaign: &str,
        outcome: &str,
        cause: Option<&str>,
        detail: Option<&str>,
        now: Millis,
    ) -> bool {
        let key = campaign_key(campaign);
        let last = self
            .decisions
            .iter_mut()
            .rev()
            .find(|x| (x.key == key || x.key == 0) && x.campaign == campaign);
        match last {
            Some(last)
                if last.outcome == outcome
                    && last.cause.as_deref() == cause
                    && last.detail.as_deref() == detail
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

    /// Records a new decision, keeping the most recent ones.
    pub fn push_decision(&mut self, d: Decision) {
        // Most users have one or two decisions: not the default first allocation of
        // four (~0.7 KB).
        if self.decisions.capacity() == 0 {
            self.decisions.reserve_exact(1);
        }
        self.decisions.push_back(d);
        while self.decisions.len() > MAX_DECISIONS {
            self.decisions.pop_front();
        }
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
