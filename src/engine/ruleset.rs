//! The compiled rule set: every segment and campaign plus the indexes that find what an
//! event, an attribute change, an engagement or a segment entry can affect, so the cost
//! of an event does not grow with unrelated campaigns. Rebuilt on each definition change
//! and swapped atomically.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

use super::definitions::{Campaign, Segment, Status, Trigger};
use crate::clock::Millis;
use crate::profile::Filter;

/// What changed for a user.
#[derive(Debug, Clone)]
pub enum Change {
    /// An event was recorded.
    Event(String),
    /// Attributes changed.
    Attrs(Vec<String>),
    /// Engagement with a campaign was counted.
    Engagement(String),
    /// Time passed (re-evaluate time-dependent definitions).
    Time,
    /// One segment's definition changed.
    Segment(String),
    /// One goal-condition campaign was published.
    Goal(String),
    /// Everything (session start, a definition changed).
    All,
}

/// The rule set's maps: keyed by operator-defined ids and event names, looked up a few
/// times per event, so a fast hash (foldhash) rather than SipHash.
pub type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// The active campaigns an event name triggers, in decision order.
pub struct Listeners {
    /// The decision cause they record (`event:NAME`), shared by every step.
    pub cause: Arc<str>,
    /// Highest priority first, then by id.
    pub campaigns: Vec<Arc<Campaign>>,
}

/// Indexed definitions.
#[derive(Default)]
pub struct Ruleset {
    /// Segments by id.
    pub segments: HashMap<String, Arc<Segment>>,
    /// Campaigns by id (all statuses).
    pub campaigns: HashMap<String, Arc<Campaign>>,
    /// Active campaigns with event or goal-count triggers, by event name.
    pub by_event: HashMap<String, Listeners>,
    /// Active segment-entry campaigns by segment.
    pub by_segment: HashMap<String, Vec<Arc<Campaign>>>,
    /// Active goal-condition campaigns.
    pub goal_conds: Vec<Arc<Campaign>>,
    /// Active inactivity and session-duration campaigns.
    pub session_timed: Vec<Arc<Campaign>>,
    /// The shortest `duration` of the active inactivity campaigns (`engine::activity`
    /// reads it on every track, page and activity frame).
    pub min_inactivity: Option<Millis>,
    /// Campaigns (any status) by conversion goal event, for attribution.
    pub by_goal_event: HashMap<String, Vec<Arc<Campaign>>>,
    seg_by_event: HashMap<String, Vec<String>>,
    seg_by_attr: HashMap<String, Vec<String>>,
    seg_by_campaign: HashMap<String, Vec<String>>,
    seg_activity: Vec<String>,
    seg_time: Vec<String>,
    /// Property filters used anywhere.
    pub filters: Vec<Filter>,
}

impl Ruleset {
    /// Builds the indexes.
    pub fn build(segments: Vec<Arc<Segment>>, campaigns: Vec<Arc<Campaign>>) -> Ruleset {
        let mut r = Ruleset::default();
        let mut filter_keys = foldhash::HashSet::default();
        let mut add_filters = |r: &mut Ruleset, deps: &super::condition::Deps| {
            for (key, event, pred) in &deps.filters {
                if filter_keys.insert(key.clone()) {
                    r.filters.push(Filter {
                        key: key.clone(),
                        event: event.clone(),
                        pred: pred.clone(),
                    });
                }
            }
        };
        for s in &segments {
            let d = &s.deps;
            for e in &d.events {
                r.seg_by_event
                    .entry(e.clone())
                    .or_default()
                    .push(s.id.clone());
            }
            for a in &d.attrs {
                r.seg_by_attr
                    .entry(a.clone())
                    .or_default()
                    .push(s.id.clone());
            }
            for c in &d.campaigns {
                r.seg_by_campaign
                    .entry(c.clone())
                    .or_default()
                    .push(s.id.clone());
            }
            if d.activity {
                r.seg_activity.push(s.id.clone());
            }
            if d.time {
                r.seg_time.push(s.id.clone());
            }
            add_filters(&mut r, d);
            r.segments.insert(s.id.clone(), s.clone());
        }
        for c in &campaigns {
            r.campaigns.insert(c.id.clone(), c.clone());
            if let Some(g) = &c.goal {
                r.by_goal_event
                    .entry(g.event.clone())
                    .or_default()
                    .push(c.clone());
            }
            let mut deps = super::condition::Deps::default();
            if let super::definitions::Audience::Conditions(cond, _) = &c.audience {
                cond.deps(&mut deps);
            }
            if let Trigger::GoalCond { deps: gd, .. } = &c.trigger {
                add_filters(&mut r, gd);
            }
            add_filters(&mut r, &deps);
            if c.status != Status::Active {
                continue;
            }
            match &c.trigger {
                Trigger::Event { event, .. } | Trigger::GoalCount { event, .. } => r
                    .by_event
                    .entry(event.clone())
                    .or_insert_with(|| Listeners {
                        cause: Arc::from(format!("event:{event}")),
                        campaigns: Vec::new(),
                    })
                    .campaigns
                    .push(c.clone()),
                Trigger::SegmentEntry { segment } => r
                    .by_segment
                    .entry(segment.clone())
                    .or_default()
                    .push(c.clone()),
                Trigger::GoalCond { .. } => r.goal_conds.push(c.clone()),
                Trigger::Inactivity { dur, .. } => {
                    r.min_inactivity = Some(r.min_inactivity.map_or(*dur, |m| m.min(*dur)));
                    r.session_timed.push(c.clone())
                }
                Trigger::SessionDuration { .. } => r.session_timed.push(c.clone()),
            }
        }
        // Candidates are decided highest priority first, then by id (`decide`): lists
        // kept in that order spare most steps a sort.
        let order = |a: &Arc<Campaign>, b: &Arc<Campaign>| {
            b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id))
        };
        let event_lists = r.by_event.values_mut().map(|l| &mut l.campaigns);
        for list in event_lists.chain(r.by_segment.values_mut()) {
            list.sort_by(order);
        }
        r.goal_conds.sort_by(order);
        r.session_timed.sort_by(order);
        r
    }

    /// Segments whose membership `change` can affect.
    pub fn affected_segments(&self, change: &Change) -> Vec<Arc<Segment>> {
        let ids: Vec<&String> = match change {
            Change::All => return self.segments.values().cloned().collect(),
            Change::Time => self.seg_time.iter().collect(),
            Change::Event(e) => self
                .seg_by_event
                .get(e)
                .into_iter()
                .flatten()
                .chain(self.seg_activity.iter())
                .collect(),
            Change::Attrs(keys) => keys
                .iter()
                .flat_map(|k| self.seg_by_attr.get(k).into_iter().flatten())
                .collect(),
            Change::Engagement(c) => self.seg_by_campaign.get(c).into_iter().flatten().collect(),
            Change::Segment(id) => return self.segments.get(id).cloned().into_iter().collect(),
            Change::Goal(_) => return Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        ids.into_iter()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.segments.get(id).cloned())
            .collect()
    }

    /// Goal-condition campaigns `change` can affect.
    pub fn affected_goals<'s, 'c>(
        &'s self,
        change: &'c Change,
    ) -> impl Iterator<Item = &'s Arc<Campaign>> + use<'s, 'c> {
        self.goal_conds.iter().filter(move |c| {
            let Trigger::GoalCond { deps, .. } = &c.trigger else {
                return false;
            };
            match change {
                Change::All => true,
                Change::Time => deps.time,
                Change::Event(e) => deps.events.contains(e) || deps.activity,
                Change::Attrs(keys) => keys.iter().any(|k| deps.attrs.contains(k)),
                Change::Engagement(cid) => deps.campaigns.contains(cid),
                Change::Segment(_) => false,
                Change::Goal(id) => &c.id == id,
            }
        })
    }

    /// Whether some definition changes with time alone.
    pub fn has_time_dependents(&self) -> bool {
        !self.seg_time.is_empty()
            || self
                .goal_conds
                .iter()
                .any(|c| matches!(&c.trigger, Trigger::GoalCond { deps, .. } if deps.time))
    }

    /// Segments that can change with time alone.
    pub fn time_segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.seg_time.iter().filter_map(|id| self.segments.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn campaign(id: &str, priority: i64) -> Arc<Campaign> {
        let body = json!({"status":"active","priority":priority,
            "trigger":{"type":"event","event":"e"},
            "variants":[{"id":"a","message":{"kind":"banner","body":"x"}}]});
        Arc::new(super::super::definitions::parse_campaign(id, &body, &|_| false).unwrap())
    }

    /// `decide` skips its sort for candidates from one list: the lists must be in
    /// decision order (highest priority first, then by id) whatever the input order.
    #[test]
    fn listener_lists_are_in_decision_order() {
        let r = Ruleset::build(
            vec![],
            vec![
                campaign("b", 1),
                campaign("z", 5),
                campaign("a", 1),
                campaign("c", 0),
            ],
        );
        let ids: Vec<&str> = r.by_event["e"]
            .campaigns
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["z", "a", "b", "c"]);
    }
}
