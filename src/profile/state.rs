//! One user's in-memory state and the pure rules for applying a mutation to it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

use super::ProfileConfig;
use crate::clock::Millis;
use crate::config::StoreConfig;
use crate::store::{Aggregate, StoredEvent, UserRecord, WriteOp};

const DAY_MS: Millis = 86_400_000;

/// The aggregates snapshot is rewritten after this many events (and at session end, and
/// with every engagement count); the events in between are replayed from their rows when
/// the user is loaded. Bounds both the replay and the per-event write cost.
const SNAPSHOT_EVERY: u64 = 64;

/// An event that happened longer than this before the gateway saw it (a buffered or
/// backfilled event) gets its id remembered on a dedup row: ids are otherwise recovered
/// from the event rows, by occurrence time, when the user is loaded.
const DEDUP_ROW_AFTER_MS: Millis = 60_000;

/// A user's aggregates by event name, in a vector sorted by name rather than a hash map:
/// a user has one to a few dozen event names, and most users in memory have one
/// (`$session_start`), for which a `HashMap` allocates at least four buckets (~320
/// bytes, in every idle session) where this allocates one entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregates(Vec<(String, Aggregate)>);

impl Aggregates {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The aggregate of an event name.
    pub fn get(&self, name: &str) -> Option<&Aggregate> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// The aggregate of an event name, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Aggregate> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    /// The aggregate of an event name, created empty if missing (the name is copied
    /// only then).
    pub fn entry(&mut self, name: &str) -> &mut Aggregate {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                if self.0.len() < 4 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (name.to_string(), Aggregate::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// `(name, aggregate)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Aggregate)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// How many event names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Aggregate)> for Aggregates {
    fn from_iter<I: IntoIterator<Item = (String, Aggregate)>>(iter: I) -> Self {
        let mut a = Aggregates::default();
        for (k, v) in iter {
            match a.find(&k) {
                Ok(i) => a.0[i].1 = v,
                Err(i) => a.0.insert(i, (k, v)),
            }
        }
        a.0.shrink_to_fit();
        a
    }
}

impl<'a> IntoIterator for &'a Aggregates {
    type Item = (&'a String, &'a Aggregate);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Aggregate)>,
        fn(&'a (String, Aggregate)) -> (&'a String, &'a Aggregate),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl std::ops::Index<&str> for Aggregates {
    type Output = Aggregate;
    fn index(&self, name: &str) -> &Aggregate {
        self.get(name).expect("no aggregate of that name")
    }
}

/// A change to a user.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// An event.
    Event {
        /// Client dedup id.
        id: Option<String>,
        /// Name.
        name: String,
        /// Properties.
        properties: Map<String, Value>,
        /// When it happened; `None` = now.
        at: Option<Millis>,
    },
    /// Attribute changes (null removes).
    Attributes {
        /// Client dedup id.
        id: Option<String>,
        /// Changes.
        attributes: Map<String, Value>,
        /// Trusted (token, admin API, write key) or client (`identify`).
        trusted: bool,
    },
}

/// What happened to one mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied.
    Applied,
    /// Its id was seen before; nothing applied (the earlier copy is durable).
    Duplicate,
    /// A client tried to set a key it may not.
    Forbidden(String),
}

/// Remembered client ids: hashes for memory, bounded by count and age.
#[derive(Debug, Default)]
struct Dedup {
    order: VecDeque<(u64, Millis)>,
    set: HashSet<u64>,
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl Dedup {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(&id_hash(id))
    }

    fn insert(&mut self, id: &str, at: Millis, now: Millis, cfg: &StoreConfig) {
        let h = id_hash(id);
        if self.set.insert(h) {
            self.order.push_back((h, at));
        }
        let horizon = now - cfg.dedup_ttl.as_millis() as Millis;
        while let Some(&(old, t)) = self.order.front() {
            if self.order.len() > cfg.dedup_max_per_user || t < horizon {
                self.order.pop_front();
                self.set.remove(&old);
            } else {
                break;
            }
        }
    }
}

/// A user's live state.
#[derive(Debug, Default)]
pub struct UserState {
    /// Attributes.
    pub attributes: Map<String, Value>,
    /// Aggregates by event name (engagement under `$engage:<campaign>:<did>`).
    pub aggregates: Aggregates,
    /// Aggregates of events matching a property filter, by derivation key.
    pub filtered: HashMap<String, Aggregate>,
    /// `$activity`: the score as of an instant, `(score, at)`.
    pub activity: (f64, Millis),
    /// The campaign engine's per-user state.
    pub engine: crate::engine::state::EngineState,
    /// Boxed and created on the first id: most users in memory never send one.
    dedup: Option<Box<Dedup>>,
    exists: bool,
    /// Whether the engine evaluated every segment and campaign for this state since it
    /// was loaded. The stored memberships may predate a definition change or a time
    /// crossing that happened while the user was not in memory (a definition's fan-out
    /// and the time-crossing timers reach only users in memory).
    pub evaluated: bool,
    /// The seq of the user's last stored event.
    event_seq: u64,
    /// The event seq the stored aggregates snapshot includes.
    aggregates_seq: u64,
}

impl UserState {
    /// Builds the state from a stored record and the user's retained events.
    pub fn from_record(
        rec: Option<UserRecord>,
        events: &[StoredEvent],
        now: Millis,
        cfg: &StoreConfig,
        derive: &Derivations,
    ) -> Self {
        let mut s = UserState {
            activity: (0.0, now),
            ..UserState::default()
        };
        if let Some(rec) = rec {
            s.exists = true;
            s.attributes = rec.attributes;
            s.aggregates = rec.aggregates.into_iter().collect();
            s.aggregates_seq = rec.aggregates_seq;
            s.event_seq = rec.aggregates_seq;
            let mut ids = rec.dedup;
            ids.extend(events.iter().filter_map(|e| Some((e.id.clone()?, e.at))));
            ids.sort_by_key(|&(_, at)| at);
            for (id, at) in ids {
                s.dedup.get_or_insert_default().insert(&id, at, now, cfg);
            }
            // Events stored after the snapshot was written; the times of those it
            // includes (rolling windows' exact times are not stored).
            for e in events {
                if e.seq > s.aggregates_seq {
                    record(s.aggregates.entry(&e.name), e.at, now, cfg);
                    s.event_seq = s.event_seq.max(e.seq);
                } else if let Some(agg) = s.aggregates.get_mut(&e.name) {
                    remember(agg, e.at, now, cfg);
                }
            }
            if let Some(e) = rec
                .engine
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
            {
                s.engine = e;
            }
            s.engine.decisions = rec
                .decisions
                .iter()
                .filter_map(|d| serde_json::from_str::<crate::engine::state::Decision>(d).ok())
                .collect();
        }
        // Older events are only here for the replay above.
        let since = now - cfg.history_days as Millis * DAY_MS;
        let retained = &events[events.partition_point(|e| e.at < since)..];
        s.derive_from(retained, now, cfg, derive);
        s
    }

    /// Appends a snapshot of every aggregate, including the events stored so far.
    fn snapshot_aggregates(&mut self, user: &str, ops: &mut Vec<WriteOp>) {
        self.aggregates_seq = self.event_seq;
        ops.push(WriteOp::Aggregates {
            user: user.into(),
            seq: self.event_seq,
            aggregates: serde_json::to_string(&self.aggregates.iter().collect::<Vec<_>>())
                .unwrap_or_default(),
        });
    }

    /// Recomputes the filtered aggregates and the activity score from history.
    pub fn derive_from(
        &mut self,
        events: &[StoredEvent],
        now: Millis,
        cfg: &StoreConfig,
        derive: &Derivations,
    ) {
        self.filtered.clear();
        self.activity = (0.0, now);
        let filters = derive.filters.load();
        for e in events.iter().filter(|e| !is_engagement(&e.name)) {
            self.activity = bump_activity(
                self.activity,
                e.at.min(now),
                derive.weight(&e.name),
                derive.half_life,
            );
            for f in filters
                .iter()
                .filter(|f| f.event == e.name && f.matches(&e.properties))
            {
                record(
                    self.filtered.entry(f.key.clone()).or_default(),
                    e.at,
                    now,
                    cfg,
                );
            }
        }
        for f in filters.iter() {
            self.filtered.entry(f.key.clone()).or_default();
        }
    }

    /// Whether anything was ever recorded for this user.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Whether a client id was already seen.
    pub fn seen(&self, id: &str) -> bool {
        self.dedup.as_ref().is_some_and(|d| d.contains(id))
    }

    /// Counts one engagement (`$engage:<campaign>:<did>` aggregate) and persists it.
    ///
    /// Stored as an event row of that name (no properties), which a reload replays into
    /// the aggregate like any event after the snapshot, rather than by writing the whole
    /// aggregates snapshot at once: the row's index entry lands beside the triggering
    /// event's, on a page the commit writes anyway, where the snapshot was a page of its
    /// own per delivery. Such rows are not user activity (see [`is_engagement`]).
    pub fn count(
        &mut self,
        user: &str,
        name: String,
        now: Millis,
        cfg: &ProfileConfig,
        ops: &mut Vec<WriteOp>,
    ) {
        let agg = self.aggregates.entry(&name);
        record(agg, now, now, &cfg.store);
        self.event_seq += 1;
        ops.push(WriteOp::Event {
            user: user.into(),
            seq: self.event_seq,
            at: now,
            name,
            properties: "{}".into(),
            id: None,
        });
        if self.event_seq - self.aggregates_seq >= SNAPSHOT_EVERY {
            self.snapshot_aggregates(user, ops);
        }
        self.exists = true;
    }

    /// Applies a mutation, appending the writes that make it durable.
    pub fn apply(
        &mut self,
        user: &str,
        m: &Mutation,
        now: Millis,
        cfg: &ProfileConfig,
        ops: &mut Vec<WriteOp>,
    ) -> Outcome {
        let id = match m {
            Mutation::Event { id, .. } | Mutation::Attributes { id, .. } => id.clone(),
        };
        if let Some(id) = &id {
            if self.seen(id) {
                return Outcome::Duplicate;
            }
        }
        let mut event_id_on_row = false;
        match m {
            Mutation::Event {
                name,
                properties,
                at,
                ..
            } => {
                let at = at.unwrap_or(now).min(now);
                let agg = self.aggregates.entry(name);
                record(agg, at, now, &cfg.store);
                let d = &cfg.derive;
                self.activity = bump_activity(self.activity, at, d.weight(name), d.half_life);
                for f in d
                    .filters
                    .load()
                    .iter()
                    .filter(|f| f.event == *name && f.matches(properties))
                {
                    record(
                        self.filtered.entry(f.key.clone()).or_default(),
                        at,
                        now,
                        &cfg.store,
                    );
                }
                self.event_seq += 1;
                let snapshot = self.event_seq - self.aggregates_seq >= SNAPSHOT_EVERY
                    || name == "$session_end";
                ops.push(WriteOp::Event {
                    user: user.into(),
                    seq: self.event_seq,
                    at,
                    name: name.clone(),
                    properties: serde_json::to_string(properties).unwrap_or_default(),
                    id: id.clone(),
                });
                if snapshot {
                    self.snapshot_aggregates(user, ops);
                }
                // Its row carries the id; a late event's id also gets a dedup row.
                event_id_on_row = now - at <= DEDUP_ROW_AFTER_MS;
            }
            Mutation::Attributes {
                attributes,
                trusted,
                ..
            } => {
                // `$` names are the gateway's own (e.g. `$activity`), for every door.
                if let Some(k) = attributes.keys().find(|k| k.starts_with('$')) {
                    return Outcome::Forbidden(k.clone());
                }
                if !trusted {
                    if let Some(k) = attributes
                        .keys()
                        .find(|k| !cfg.client_writable.contains(*k))
                    {
                        return Outcome::Forbidden(k.clone());
                    }
                }
                let mut changed = false;
                for (k, v) in attributes {
                    if v.is_null() {
                        changed |= self.attributes.remove(k).is_some();
                    } else if self.attributes.get(k) != Some(v) {
                        self.attributes.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
                // A user whose attributes were set exists even if nothing changed.
                if changed || !self.exists {
                    ops.push(WriteOp::Attributes {
                        user: user.into(),
                        attributes: serde_json::to_string(&self.attributes).unwrap_or_default(),
                        at: now,
                    });
                }
            }
        }
        self.exists = true;
        if let Some(id) = id {
            self.dedup
                .get_or_insert_default()
                .insert(&id, now, now, &cfg.store);
            if !event_id_on_row {
                ops.push(WriteOp::Dedup {
                    user: user.into(),
                    id,
                    at: now,
                });
            }
        }
        Outcome::Applied
    }
}

/// The activity score at `now`: `score · 2^(−(now − at)/half_life)`.
pub fn activity_at((score, at): (f64, Millis), now: Millis, half_life: Millis) -> f64 {
    if score == 0.0 || half_life <= 0 {
        return score;
    }
    score * 0.5f64.powf((now - at) as f64 / half_life as f64)
}

/// Adds an event of weight `w` at `at` to the score, keeping it anchored at the later instant.
pub fn bump_activity(cur: (f64, Millis), at: Millis, w: f64, half_life: Millis) -> (f64, Millis) {
    if w == 0.0 {
        return cur;
    }
    if at >= cur.1 {
        (activity_at(cur, at, half_life) + w, at)
    } else {
        (cur.0 + activity_at((w, at), cur.1, half_life), cur.1)
    }
}

/// An event property filter whose matching events are aggregated per user.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Derivation key (event + canonical filter).
    pub key: String,
    /// Event name.
    pub event: String,
    /// Predicate over properties.
    pub pred: crate::engine::condition::Cond,
}

impl Filter {
    /// Whether an event's properties match.
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        let (none, no_filtered) = (Aggregates::default(), HashMap::new());
        let subject = crate::engine::condition::Subject {
            attributes: props,
            aggregates: &none,
            caps: None,
            filtered: &no_filtered,
            activity: (0.0, 0),
            half_life: 1,
            now: 0,
            page: None,
            props: Some(props),
        };
        subject.eval(&self.pred)
    }
}

/// What is derived from every event: filtered aggregates and the activity score.
#[derive(Debug)]
pub struct Derivations {
    /// Filters currently used by some definition.
    pub filters: arc_swap::ArcSwap<Vec<Filter>>,
    /// Activity half-life, ms.
    pub half_life: Millis,
    /// Weight per event name.
    pub weights: HashMap<String, f64>,
    /// Weight of other events.
    pub default_weight: f64,
}

impl Default for Derivations {
    fn default() -> Self {
        Derivations {
            filters: Default::default(),
            half_life: 7 * DAY_MS,
            weights: [("$session_end".to_string(), 0.0)].into(),
            default_weight: 1.0,
        }
    }
}

impl Derivations {
    /// The activity weight of an event.
    pub fn weight(&self, name: &str) -> f64 {
        self.weights
            .get(name)
            .copied()
            .unwrap_or(self.default_weight)
    }
}

/// Whether a stored event row is an engagement count (see [`UserState::count`]) rather
/// than something the user did.
pub fn is_engagement(name: &str) -> bool {
    name.starts_with("$engage:")
}

/// Counts one occurrence at `at` into an aggregate: day buckets for the history window,
/// and the newest `store.window_exact_events` times for exact rolling windows.
pub fn record(agg: &mut Aggregate, at: Millis, now: Millis, cfg: &StoreConfig) {
    if agg.count == 0 {
        agg.first = at;
        agg.last = at;
    } else {
        agg.first = agg.first.min(at);
        agg.last = agg.last.max(at);
    }
    agg.count += 1;
    let day = at.div_euclid(DAY_MS) as i32;
    let oldest = (now.div_euclid(DAY_MS) as i32) - cfg.history_days as i32;
    if day >= oldest {
        match agg.days.binary_search_by_key(&day, |&(d, _)| d) {
            Ok(i) => agg.days[i].1 += 1,
            Err(i) => agg.days.insert(i, (day, 1)),
        }
    }
    let keep_from = agg.days.partition_point(|&(d, _)| d < oldest);
    agg.days.drain(..keep_from);
    remember(agg, at, now, cfg);
}

/// Keeps `at` among the aggregate's newest `store.window_exact_events` times (an
/// occurrence older than all of a full list, or than the history window, is left out).
fn remember(agg: &mut Aggregate, at: Millis, now: Millis, cfg: &StoreConfig) {
    let oldest = (now.div_euclid(DAY_MS) as i32) - cfg.history_days as i32;
    let in_history = |t: Millis| (t.div_euclid(DAY_MS) as i32) >= oldest;
    if in_history(at) {
        let cap = cfg.window_exact_events as usize;
        let i = agg.recent.partition_point(|&t| t <= at);
        if agg.recent.len() < cap {
            agg.recent.insert(i, at);
        } else if i > 0 {
            agg.recent.insert(i, at);
            agg.recent.remove(0);
        }
    }
    let keep_from = agg.recent.partition_point(|&t| !in_history(t));
    agg.recent.drain(..keep_from);
}

/// Where a rolling window of `window_ms` ending at `now` starts: occurrences at or after
/// it are inside.
fn window_start(window_ms: Millis, now: Millis) -> Millis {
    now - window_ms
}

/// Whether `agg.recent` holds every retained occurrence at or after `start`: it holds
/// them all, or its oldest is before `start` (it keeps the newest ones).
fn exact_from(agg: &Aggregate, start: Millis) -> bool {
    let retained: u64 = agg.days.iter().map(|&(_, c)| c as u64).sum();
    agg.recent.len() as u64 == retained || agg.recent.first().is_some_and(|&t| t < start)
}

/// Occurrences within the last `window_ms` (a rolling window: at or after `now −
/// window_ms`). Exact over the newest `store.window_exact_events` occurrences; a window
/// reaching further back than those counts the UTC day it starts in in full.
pub fn count_within(agg: &Aggregate, window_ms: Millis, now: Millis) -> u64 {
    let start = window_start(window_ms, now);
    if exact_from(agg, start) {
        return (agg.recent.len() - agg.recent.partition_point(|&t| t < start)) as u64;
    }
    let from = start.div_euclid(DAY_MS) as i32;
    agg.days
        .iter()
        .filter(|&&(d, _)| d >= from)
        .map(|&(_, c)| c as u64)
        .sum()
}

/// The next instant after `now` at which an occurrence leaves the rolling window of
/// `window_ms` (the count of [`count_within`] falls then), if any is inside.
pub fn window_leaves_at(agg: &Aggregate, window_ms: Millis, now: Millis) -> Option<Millis> {
    let start = window_start(window_ms, now);
    if exact_from(agg, start) {
        // The oldest time inside is still inside at `t + window_ms`, out 1 ms later.
        let i = agg.recent.partition_point(|&t| t < start);
        return agg.recent.get(i).map(|&t| t + window_ms + 1);
    }
    // By day: the oldest bucket still in the window leaves it at (day+1)·DAY + w.
    let from = start.div_euclid(DAY_MS) as i32;
    agg.days
        .iter()
        .filter(|(d, _)| *d >= from)
        .map(|(d, _)| (*d as Millis + 1) * DAY_MS + window_ms)
        .find(|t| *t > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ProfileConfig {
        ProfileConfig {
            client_writable: ["first_name".to_string()].into(),
            store: StoreConfig::default(),
            derive: Default::default(),
        }
    }

    fn ev(id: &str, name: &str, at: Option<Millis>) -> Mutation {
        Mutation::Event {
            id: Some(id.into()),
            name: name.into(),
            properties: Map::new(),
            at,
        }
    }

    /// What the store would give back at load for these writes: the newest aggregates
    /// snapshot and its seq, the dedup rows, and the event rows.
    fn stored(ops: &[WriteOp]) -> (UserRecord, Vec<StoredEvent>) {
        let mut rec = UserRecord::default();
        let mut events = vec![];
        for op in ops {
            match op {
                WriteOp::Event {
                    seq,
                    at,
                    name,
                    properties,
                    id,
                    ..
                } => events.push(StoredEvent {
                    seq: *seq,
                    id: id.clone(),
                    at: *at,
                    name: name.clone(),
                    properties: serde_json::from_str(properties).unwrap(),
                }),
                WriteOp::Aggregates {
                    seq, aggregates, ..
                } => {
                    rec.aggregates_seq = *seq;
                    rec.aggregates = serde_json::from_str(aggregates).unwrap();
                }
                WriteOp::Dedup { id, at, .. } => rec.dedup.push((id.clone(), *at)),
                _ => {}
            }
        }
        events.sort_by_key(|e| e.at);
        (rec, events)
    }

    #[test]
    fn a_reload_replays_events_after_the_snapshot_and_recovers_ids_from_event_rows() {
        let (c, now) = (cfg(), 100 * DAY_MS);
        let mut s = UserState::default();
        let mut ops = vec![];
        for i in 0..70 {
            s.apply("u", &ev(&format!("e{i}"), "x", None), now, &c, &mut ops);
        }
        // Buffered on the client for two hours: its id also gets a dedup row.
        s.apply(
            "u",
            &ev("late", "y", Some(now - 7_200_000)),
            now,
            &c,
            &mut ops,
        );
        let count = |f: fn(&WriteOp) -> bool| ops.iter().filter(|o| f(o)).count();
        assert_eq!(count(|o| matches!(o, WriteOp::Event { .. })), 71);
        assert_eq!(
            count(|o| matches!(o, WriteOp::Aggregates { seq: 64, .. })),
            1
        );
        assert_eq!(count(|o| matches!(o, WriteOp::Aggregates { .. })), 1);
        assert_eq!(
            count(|o| matches!(o, WriteOp::Dedup { id, .. } if id == "late")),
            1
        );
        assert_eq!(count(|o| matches!(o, WriteOp::Dedup { .. })), 1);

        let (rec, events) = stored(&ops);
        let mut r = UserState::from_record(
            Some(rec),
            &events,
            now + 1000,
            &c.store,
            &Derivations::default(),
        );
        assert_eq!(r.aggregates["x"].count, 70, "64 snapshotted + 6 replayed");
        assert_eq!(r.aggregates["y"].count, 1);
        for id in ["e0", "e63", "e69", "late"] {
            assert!(r.seen(id), "{id} remembered after the reload");
        }
        let mut more = vec![];
        r.apply("u", &ev("e70", "x", None), now + 2000, &c, &mut more);
        assert!(matches!(more[0], WriteOp::Event { seq: 72, .. }));
    }

    #[test]
    fn engagement_counts_are_event_rows_replayed_at_load_and_are_not_activity() {
        let (c, now) = (cfg(), 100 * DAY_MS);
        let mut s = UserState::default();
        let mut ops = vec![];
        s.apply("u", &ev("e1", "x", None), now, &c, &mut ops);
        for i in 0..3 {
            s.count("u", "$engage:c:delivered".into(), now + i, &c, &mut ops);
        }
        // No snapshot: one event row each, numbered after the user's events.
        assert!(!ops.iter().any(|o| matches!(o, WriteOp::Aggregates { .. })));
        let seqs: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o {
                WriteOp::Event { seq, name, .. } if name == "$engage:c:delivered" => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        let reload = |ops: &[WriteOp]| {
            let (rec, events) = stored(ops);
            let derive = Derivations::default();
            UserState::from_record(Some(rec), &events, now + 1000, &c.store, &derive)
        };
        let r = reload(&ops);
        assert_eq!(r.aggregates["$engage:c:delivered"].count, 3);
        assert_eq!(r.aggregates["x"].count, 1);
        // Activity comes from the one user event only.
        let only_x = reload(&ops[..1]);
        assert!(only_x.activity.0 > 0.0);
        assert_eq!(r.activity, only_x.activity);
        // Counted past the snapshot interval, the snapshot is written as for events.
        let mut s = UserState::default();
        let mut ops = vec![];
        for i in 0..SNAPSHOT_EVERY as i64 {
            s.count("u", "$engage:c:click".into(), now + i, &c, &mut ops);
        }
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, WriteOp::Aggregates { seq, .. } if *seq == SNAPSHOT_EVERY))
                .count(),
            1
        );
    }

    #[test]
    fn events_update_aggregates_and_dedup() {
        let mut s = UserState::default();
        let mut ops = vec![];
        let now = 100 * DAY_MS;
        assert_eq!(
            s.apply("u", &ev("a", "x", None), now, &cfg(), &mut ops),
            Outcome::Applied
        );
        assert_eq!(
            s.apply("u", &ev("a", "x", None), now, &cfg(), &mut ops),
            Outcome::Duplicate
        );
        assert_eq!(
            s.apply(
                "u",
                &ev("b", "x", Some(now - 3 * DAY_MS)),
                now,
                &cfg(),
                &mut ops
            ),
            Outcome::Applied
        );
        let agg = &s.aggregates["x"];
        assert_eq!((agg.count, agg.first, agg.last), (2, now - 3 * DAY_MS, now));
        assert_eq!(count_within(agg, DAY_MS, now), 1);
        assert_eq!(count_within(agg, 7 * DAY_MS, now), 2);
        assert!(s.exists());
    }

    #[test]
    fn day_buckets_keep_the_history_window() {
        let mut agg = Aggregate::default();
        let now = 200 * DAY_MS;
        let c = StoreConfig::default();
        record(&mut agg, now - 100 * DAY_MS, now, &c);
        record(&mut agg, now - 89 * DAY_MS, now, &c);
        record(&mut agg, now, now, &c);
        assert_eq!(agg.count, 3, "lifetime count keeps everything");
        assert_eq!(
            agg.days.len(),
            2,
            "buckets older than the window are dropped"
        );
        assert_eq!(agg.recent.as_slice(), &[now - 89 * DAY_MS, now]);
    }

    const HOUR: Millis = 3_600_000;

    #[test]
    fn windows_roll_to_the_millisecond_within_a_day() {
        // Noon: the day-granular count took the whole day (and yesterday's overlap).
        let now = 200 * DAY_MS + 12 * HOUR;
        let c = StoreConfig::default();
        let mut agg = Aggregate::default();
        for at in [now - 30 * HOUR, now - 2 * HOUR, now - HOUR, now - 1000] {
            record(&mut agg, at, now, &c);
        }
        assert_eq!(count_within(&agg, HOUR, now), 2, "now − 1 h is inside");
        assert_eq!(count_within(&agg, HOUR - 1, now), 1);
        assert_eq!(count_within(&agg, 2 * HOUR, now), 3);
        assert_eq!(count_within(&agg, DAY_MS, now), 3);
        assert_eq!(count_within(&agg, 2 * DAY_MS, now), 4);
        assert_eq!(count_within(&agg, 500, now), 0);
        // The −1 h event leaves a 1 h window 1 ms after now; then the −1 s one.
        assert_eq!(window_leaves_at(&agg, HOUR, now), Some(now + 1));
        assert_eq!(
            window_leaves_at(&agg, HOUR, now + 1),
            Some(now - 1000 + HOUR + 1)
        );
        assert_eq!(count_within(&agg, HOUR, now + 1), 1);
        assert_eq!(window_leaves_at(&agg, 500, now), None);
        // Out of order (a backdated REST event) lands in its place.
        record(&mut agg, now - 90 * 60_000, now, &c);
        assert_eq!(count_within(&agg, 2 * HOUR, now), 4);
        assert!(agg.recent.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn exact_window_times_are_rebuilt_when_the_user_is_loaded() {
        let now = 200 * DAY_MS + 12 * HOUR;
        let c = cfg();
        let mut s = UserState::default();
        let mut ops = vec![];
        // 70 events a minute apart, ending now: a snapshot is written at the 64th.
        let n = SNAPSHOT_EVERY as i64 + 6;
        for i in 0..n {
            let at = now - (n - 1 - i) * 60_000;
            s.apply("u", &ev(&format!("e{i}"), "x", Some(at)), now, &c, &mut ops);
        }
        assert!(ops.iter().any(|o| matches!(o, WriteOp::Aggregates { .. })));
        let (rec, events) = stored(&ops);
        let r = UserState::from_record(Some(rec), &events, now, &c.store, &Derivations::default());
        let agg = &r.aggregates["x"];
        assert_eq!(agg.recent.len() as i64, n);
        assert_eq!(count_within(agg, 30 * 60_000, now), 31);
        assert_eq!(count_within(agg, HOUR, now), 61);
    }

    #[test]
    fn a_window_past_the_kept_times_counts_its_first_day_whole() {
        let now = 200 * DAY_MS + 12 * HOUR;
        let c = StoreConfig {
            window_exact_events: 3,
            ..StoreConfig::default()
        };
        let mut agg = Aggregate::default();
        // Five events, an hour apart, ending an hour ago: the newest three are kept.
        for i in (1..=5).rev() {
            record(&mut agg, now - i * HOUR, now, &c);
        }
        assert_eq!(agg.recent.len(), 3);
        // Windows the kept times cover are exact.
        assert_eq!(count_within(&agg, HOUR, now), 1);
        assert_eq!(count_within(&agg, 3 * HOUR - 1, now), 2);
        // Reaching past them, the window's first (UTC) day counts whole: all five.
        assert_eq!(count_within(&agg, 4 * HOUR, now), 5);
        // An event older than every kept time still counts by day, not in `recent`.
        record(&mut agg, now - 10 * HOUR, now, &c);
        assert_eq!(agg.recent.first(), Some(&(now - 3 * HOUR)));
        assert_eq!(count_within(&agg, 11 * HOUR, now), 6);
        // Without its times (as stored: they are rebuilt at load), windows go by day.
        let json = serde_json::to_string(&agg).unwrap();
        assert!(!json.contains("recent"));
        let old: Aggregate = serde_json::from_str(&json).unwrap();
        assert_eq!(count_within(&old, HOUR, now), 6);
        assert_eq!(
            window_leaves_at(&old, HOUR, now),
            Some((now.div_euclid(DAY_MS) + 1) * DAY_MS + HOUR)
        );
        // 0 keeps no times: windows by day.
        let by_day = StoreConfig {
            window_exact_events: 0,
            ..StoreConfig::default()
        };
        let mut agg = Aggregate::default();
        record(&mut agg, now - 2 * HOUR, now, &by_day);
        assert!(agg.recent.is_empty());
        assert_eq!(count_within(&agg, HOUR, now), 1);
    }

    #[test]
    fn client_attributes_only_for_writable_keys() {
        let mut s = UserState::default();
        let mut ops = vec![];
        let attrs = |v: Value| v.as_object().unwrap().clone();
        let m = Mutation::Attributes {
            id: None,
            attributes: attrs(json!({"plan": "pro"})),
            trusted: false,
        };
        assert_eq!(
            s.apply("u", &m, 0, &cfg(), &mut ops),
            Outcome::Forbidden("plan".into())
        );
        assert!(ops.is_empty());
        let m = Mutation::Attributes {
            id: None,
            attributes: attrs(json!({"first_name": "Ada"})),
            trusted: false,
        };
        assert_eq!(s.apply("u", &m, 0, &cfg(), &mut ops), Outcome::Applied);
        let m = Mutation::Attributes {
            id: None,
            attributes: attrs(json!({"plan": "pro", "first_name": null})),
            trusted: true,
        };
        assert_eq!(s.apply("u", &m, 0, &cfg(), &mut ops), Outcome::Applied);
        assert_eq!(Value::Object(s.attributes.clone()), json!({"plan": "pro"}));
    }

    #[test]
    fn dedup_is_bounded() {
        let mut c = cfg();
        c.store.dedup_max_per_user = 3;
        let mut s = UserState::default();
        let mut ops = vec![];
        for i in 0..5 {
            s.apply("u", &ev(&format!("e{i}"), "x", None), 0, &c, &mut ops);
        }
        assert!(!s.seen("e0") && !s.seen("e1"));
        assert!(s.seen("e2") && s.seen("e4"));
    }
}
