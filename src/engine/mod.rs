//! The campaign engine: where an event, a timer or an attribute change becomes a
//! message. Conditions and definitions are compiled (`condition`, `definitions`) into an
//! indexed [`Ruleset`] swapped atomically on every change; each user's evaluation runs
//! inside that user's ordered transaction (`profile::Profiles::transact`), so caps hold
//! when two sessions fire at once, and its writes (membership, cap slots, the delivery's
//! outbox entry) commit together before anything is sent.

pub mod condition;
pub mod definitions;
pub mod ruleset;
pub mod state;
pub mod template;
pub mod text;
pub mod timers;

mod decide;
mod explain;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::Value;

use crate::app::App;
use crate::clock::Millis;
use crate::gateway::registry::{self, Session};
use crate::profile::{Barrier, Derivations, Mutation, Outcome};
use crate::store::{StoreError, WriteOp};
pub(crate) use decide::segments_now;
use definitions::{Campaign, Segment, Trigger};
pub use explain::explain;
use ruleset::{Change, Ruleset};
use timers::{TimerKey, Timers};

pub use decide::Effects;

/// How many tasks share a re-evaluation of every user in memory.
const FANOUT_TASKS: usize = 4;

/// A fan-out task yields to the other tasks on its worker this often (users).
const FANOUT_YIELD_EVERY: usize = 64;

/// How many users' revocations run at once.
const FANOUT_CONCURRENCY: usize = 512;

/// One campaign's unseen deliveries: delivery → user.
type Outstanding = DashMap<String, Arc<str>, foldhash::fast::RandomState>;

/// The engine's shared state.
pub struct Engine {
    /// The current compiled rule set.
    pub rules: ArcSwap<Ruleset>,
    /// Event derivations shared with the profiles (filters, activity weights).
    pub derive: Arc<Derivations>,
    timers: OnceLock<Timers>,
    /// Unseen deliveries by campaign: delivery → user (for revoke on pause/edit/delete).
    /// Keyed by admin-defined campaign ids and server-made delivery ids: foldhash.
    outstanding: DashMap<String, Outstanding, foldhash::fast::RandomState>,
    /// Serializes definition changes.
    defs: tokio::sync::Mutex<()>,
}

/// A definition change refused.
#[derive(Debug)]
pub enum DefError {
    /// Invalid: path and message.
    Invalid(condition::CondError),
    /// In use (e.g. a segment referenced by campaigns).
    Conflict(String),
    /// Not found.
    NotFound,
    /// Store failure.
    Store(StoreError),
}

impl From<StoreError> for DefError {
    fn from(e: StoreError) -> Self {
        DefError::Store(e)
    }
}

impl Engine {
    /// An engine with no definitions.
    pub fn new(derive: Arc<Derivations>) -> Self {
        Engine {
            rules: ArcSwap::from_pointee(Ruleset::default()),
            derive,
            timers: OnceLock::new(),
            outstanding: DashMap::default(),
            defs: tokio::sync::Mutex::new(()),
        }
    }

    /// Installs the timer facility (once, at start-up).
    pub fn set_timers(&self, t: Timers) {
        let _ = self.timers.set(t);
    }

    fn timers(&self) -> Option<&Timers> {
        self.timers.get()
    }

    fn track_outstanding(&self, campaign: &str, delivery: &str, user: &Arc<str>) {
        // The campaign's map usually exists: no key copied to find it (a fan-out tracks
        // thousands of deliveries of one campaign).
        if let Some(m) = self.outstanding.get(campaign) {
            m.insert(delivery.to_string(), user.clone());
            return;
        }
        self.outstanding
            .entry(campaign.to_string())
            .or_default()
            .insert(delivery.to_string(), user.clone());
    }

    fn untrack_outstanding(&self, campaign: &str, delivery: &str) {
        if let Some(m) = self.outstanding.get(campaign) {
            m.remove(delivery);
        }
    }

    fn install(&self, segments: Vec<Arc<Segment>>, campaigns: Vec<Arc<Campaign>>) -> bool {
        let rs = Ruleset::build(segments, campaigns);
        let old: HashSet<String> = self
            .derive
            .filters
            .load()
            .iter()
            .map(|f| f.key.clone())
            .collect();
        let new: HashSet<String> = rs.filters.iter().map(|f| f.key.clone()).collect();
        let filters_changed = old != new;
        if filters_changed {
            self.derive.filters.store(Arc::new(rs.filters.clone()));
        }
        self.rules.store(Arc::new(rs));
        filters_changed
    }
}

pub(crate) fn wall_to_instant(app: &App, at: Millis) -> tokio::time::Instant {
    let delta = (at - app.clock.now_ms()).max(0) as u64;
    tokio::time::Instant::now() + std::time::Duration::from_millis(delta)
}

/// Loads saved definitions at start-up.
pub async fn load_definitions(app: &App) -> Result<(), String> {
    let mut segments = Vec::new();
    for (id, body) in app
        .store
        .definitions("segment")
        .await
        .map_err(|e| e.to_string())?
    {
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("segment {id}: {e}"))?;
        match definitions::parse_segment(&id, &v) {
            Ok(s) => segments.push(Arc::new(s)),
            Err(e) => {
                tracing::error!(segment = %id, path = %e.path, "stored segment no longer valid: {}", e.message)
            }
        }
    }
    let ids: HashSet<String> = segments.iter().map(|s| s.id.clone()).collect();
    let mut campaigns = Vec::new();
    for (id, body) in app
        .store
        .definitions("campaign")
        .await
        .map_err(|e| e.to_string())?
    {
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("campaign {id}: {e}"))?;
        match definitions::parse_campaign(&id, &v, &|s| ids.contains(s)) {
            Ok(c) => campaigns.push(Arc::new(c)),
            Err(e) => {
                tracing::error!(campaign = %id, path = %e.path, "stored campaign no longer valid: {}", e.message)
            }
        }
    }
    tracing::info!(
        segments = segments.len(),
        campaigns = campaigns.len(),
        "definitions loaded"
    );
    app.engine.install(segments, campaigns);
    Ok(())
}

fn current_lists(rs: &Ruleset) -> (Vec<Arc<Segment>>, Vec<Arc<Campaign>>) {
    (
        rs.segments.values().cloned().collect(),
        rs.campaigns.values().cloned().collect(),
    )
}

/// `PUT /v1/segments/{id}`: validates, saves, and re-evaluates every loaded user.
pub async fn put_segment(app: &Arc<App>, id: &str, body: &Value) -> Result<Value, DefError> {
    let seg = Arc::new(definitions::parse_segment(id, body).map_err(DefError::Invalid)?);
    definitions::check_keys("segment", body).map_err(DefError::Invalid)?;
    let _guard = app.engine.defs.lock().await;
    save_definition(app, "segment", id, Some(&seg.raw)).await?;
    let (mut segs, camps) = current_lists(&app.engine.rules.load());
    segs.retain(|s| s.id != id);
    segs.push(seg.clone());
    let refresh = app.engine.install(segs, camps);
    if refresh {
        app.profiles.refresh_derived().await;
    }
    reevaluate_loaded(app, Change::Segment(id.to_string())).await;
    Ok(seg.raw.clone())
}

/// `DELETE /v1/segments/{id}`.
pub async fn delete_segment(app: &Arc<App>, id: &str) -> Result<(), DefError> {
    let _guard = app.engine.defs.lock().await;
    let rs = app.engine.rules.load_full();
    if !rs.segments.contains_key(id) {
        return Err(DefError::NotFound);
    }
    let users: Vec<&String> = rs
        .campaigns
        .values()
        .filter(|c| {
            matches!(&c.trigger, Trigger::SegmentEntry { segment } if segment == id)
                || matches!(&c.audience, definitions::Audience::Segment(s) if s == id)
        })
        .map(|c| &c.id)
        .collect();
    if !users.is_empty() {
        return Err(DefError::Conflict(format!(
            "segment `{id}` is used by campaigns: {}",
            users
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    save_definition(app, "segment", id, None).await?;
    let (mut segs, camps) = current_lists(&rs);
    segs.retain(|s| s.id != id);
    app.engine.install(segs, camps);
    Ok(())
}

/// `PUT /v1/campaigns/{id}`: validates, saves, revokes the old version's unseen
/// deliveries if it changed, and brings every live session up to date.
pub async fn put_campaign(app: &Arc<App>, id: &str, body: &Value) -> Result<Value, DefError> {
    let _guard = app.engine.defs.lock().await;
    let rs = app.engine.rules.load_full();
    let camp = Arc::new(
        definitions::parse_campaign(id, body, &|s| rs.segments.contains_key(s))
            .map_err(DefError::Invalid)?,
    );
    definitions::check_keys("campaign", body).map_err(DefError::Invalid)?;
    definitions::check_event_names(&camp, app.cfg.limits.max_event_name_chars)
        .map_err(DefError::Invalid)?;
    let changed = rs.campaigns.get(id).is_none_or(|old| old.raw != camp.raw);
    if !changed {
        return Ok(camp.raw.clone());
    }
    save_definition(app, "campaign", id, Some(&camp.raw)).await?;
    let (segs, mut camps) = current_lists(&rs);
    camps.retain(|c| c.id != id);
    camps.push(camp.clone());
    let refresh = app.engine.install(segs, camps);
    drop(_guard);
    if rs.campaigns.contains_key(id) {
        revoke_campaign(app, id).await;
    }
    if refresh {
        app.profiles.refresh_derived().await;
    }
    publish(app, &camp).await;
    Ok(camp.raw.clone())
}

/// `DELETE /v1/campaigns/{id}`.
pub async fn delete_campaign(app: &Arc<App>, id: &str) -> Result<(), DefError> {
    let guard = app.engine.defs.lock().await;
    let rs = app.engine.rules.load_full();
    if !rs.campaigns.contains_key(id) {
        return Err(DefError::NotFound);
    }
    save_definition(app, "campaign", id, None).await?;
    let (segs, mut camps) = current_lists(&rs);
    camps.retain(|c| c.id != id);
    app.engine.install(segs, camps);
    drop(guard);
    revoke_campaign(app, id).await;
    Ok(())
}

async fn save_definition(
    app: &App,
    kind: &str,
    id: &str,
    body: Option<&Value>,
) -> Result<(), StoreError> {
    app.store
        .submit(vec![WriteOp::Definition {
            kind: kind.into(),
            id: id.into(),
            body: body.map(|b| b.to_string()),
            at: app.clock.now_ms(),
        }])
        .wait()
        .await
}

/// Makes a (new or edited) campaign live for every session at once.
async fn publish(app: &Arc<App>, camp: &Campaign) {
    match &camp.trigger {
        Trigger::Inactivity { .. } | Trigger::SessionDuration { .. } => {
            for s in app.registry.all_live() {
                arm_session(app, &s);
            }
        }
        Trigger::GoalCond { .. } => reevaluate_loaded(app, Change::Goal(camp.id.clone())).await,
        _ => {}
    }
}

/// Re-evaluates every user in memory after a definition change, in two phases:
/// 1. every user's step (evaluation and its ordered writes) is computed and submitted,
///    spread over a few tasks so both cores evaluate while the writer commits; no step
///    waits for earlier steps' durability, so the writer receives the fan-out as fast as
///    it is evaluated and commits it in a few large groups (each page written once per
///    group, not once per few hundred users);
/// 2. each step's commit is awaited and its effects performed (the message sent).
///
/// Sending only after every user is evaluated delays the first message (to ~0.4 s for
/// 19,000 users here) but finishes sooner: sends interleaved with the evaluation took
/// 1.85–1.9 s in all instead of 1.56 s (load-tests/RESULTS.md, campaign-publish).
/// Returns when every step is durable and sent. Timed in
/// `beckon_fanout_evaluate_seconds` and `beckon_fanout_seconds`.
async fn reevaluate_loaded(app: &Arc<App>, change: Change) {
    let users = app.profiles.loaded();
    if users.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let per_task = users.len().div_ceil(FANOUT_TASKS);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in users.chunks(per_task) {
        let (app, change, chunk) = (app.clone(), change.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut steps = Vec::with_capacity(chunk.len());
            for (i, u) in chunk.iter().enumerate() {
                let change = change.clone();
                // Nothing answers on a fan-out step: one without writes is not
                // submitted as a barrier (most users often match nothing).
                match submit_as(&app, u, None, Barrier::IfWrites, |ctx, state, ops| {
                    ctx.reevaluate(state, change, ops)
                })
                .await
                {
                    Ok(((), step)) => steps.push(step),
                    Err(e) => tracing::warn!(error = %e, "re-evaluation failed"),
                }
                if i % FANOUT_YIELD_EVERY == FANOUT_YIELD_EVERY - 1 {
                    tokio::task::yield_now().await;
                }
            }
            steps
        });
    }
    let mut chunks = Vec::with_capacity(FANOUT_TASKS);
    while let Some(r) = tasks.join_next().await {
        chunks.push(r.unwrap_or_default());
    }
    let evaluated = started.elapsed();
    // One sequence per task, each in its submission order, which is the order its
    // commits land in: a step waits only for its own commit, later ones are then
    // already durable. (A future per step, all 19,000 polled at once, cost a heap task
    // each and its wake-ups; see load-tests/RESULTS.md.)
    futures_util::future::join_all(chunks.into_iter().map(|steps| async move {
        for step in steps {
            if let Err(e) = step.finish(app).await {
                tracing::warn!(error = %e, "re-evaluation failed");
            }
        }
    }))
    .await;
    let done = started.elapsed();
    app.metrics.observe_fanout(evaluated, done);
    tracing::info!(
        users = users.len(),
        evaluated_ms = evaluated.as_millis() as u64,
        durable_ms = done.as_millis() as u64,
        "re-evaluated every user in memory"
    );
}

/// Revokes every unseen delivery of a campaign (paused, edited or deleted).
pub async fn revoke_campaign(app: &Arc<App>, campaign: &str) {
    let Some((_, deliveries)) = app.engine.outstanding.remove(campaign) else {
        return;
    };
    let mut by_user: std::collections::HashMap<Arc<str>, Vec<String>> = Default::default();
    for (d, u) in deliveries {
        by_user.entry(u).or_default().push(d);
    }
    futures_util::stream::iter(by_user)
        .for_each_concurrent(FANOUT_CONCURRENCY, |(user, ds)| async move {
            let r = run(app, &user, None, |ctx, state, ops| {
                for d in &ds {
                    ctx.withdraw(state, d, "revoked", ops);
                }
            })
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "revoking failed");
            }
        })
        .await;
}

/// Runs an engine step for `user` inside the user's transaction, then performs its
/// effects (confirm deliveries, timers, revokes) once the writes are durable.
async fn run<T>(
    app: &Arc<App>,
    user: &str,
    session: Option<&Arc<Session>>,
    f: impl FnOnce(&mut decide::Ctx<'_>, &mut crate::profile::UserState, &mut Vec<WriteOp>) -> T,
) -> Result<T, StoreError> {
    let (out, step) = submit(app, user, session, f).await?;
    step.finish(app).await.map(|()| out)
}

/// A submitted engine step: its writes are ordered; durability and effects come later.
pub struct Step {
    durable: crate::profile::Durable,
    effects: Effects,
}

impl Step {
    /// Waits for durability, then performs the step's effects.
    pub async fn finish(self, app: &Arc<App>) -> Result<(), StoreError> {
        let r = app.profiles.finish(self.durable).await;
        self.effects.perform(app, r.is_ok());
        r
    }
}

async fn submit<T>(
    app: &Arc<App>,
    user: &str,
    session: Option<&Arc<Session>>,
    f: impl FnOnce(&mut decide::Ctx<'_>, &mut crate::profile::UserState, &mut Vec<WriteOp>) -> T,
) -> Result<(T, Step), StoreError> {
    submit_as(app, user, session, Barrier::Always, f).await
}

/// Whether `f` itself evaluates everything (`Change::All`), so a freshly loaded user
/// needs no catch-up before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    Before,
    ByStep,
}

async fn submit_as<T>(
    app: &Arc<App>,
    user: &str,
    session: Option<&Arc<Session>>,
    barrier: Barrier,
    f: impl FnOnce(&mut decide::Ctx<'_>, &mut crate::profile::UserState, &mut Vec<WriteOp>) -> T,
) -> Result<(T, Step), StoreError> {
    submit_full(app, user, session, barrier, CatchUp::Before, f).await
}

async fn submit_full<T>(
    app: &Arc<App>,
    user: &str,
    session: Option<&Arc<Session>>,
    barrier: Barrier,
    catch_up: CatchUp,
    f: impl FnOnce(&mut decide::Ctx<'_>, &mut crate::profile::UserState, &mut Vec<WriteOp>) -> T,
) -> Result<(T, Step), StoreError> {
    let rs = app.engine.rules.load_full();
    let now = app.clock.now_ms();
    let mut effects = Effects::default();
    let (out, durable) = app
        .profiles
        .transact_submit_as(user, barrier, |uid, state, ops| {
            let mut ctx = decide::Ctx::new(app, &rs, uid, now, session.cloned(), &mut effects);
            ctx.expire_due(state, ops);
            // Loaded from the store for this step: bring its memberships up to date (a
            // segment defined, or a time crossed, while the user was not in memory)
            // before the step's own change is evaluated against them.
            if !std::mem::replace(&mut state.evaluated, true) && catch_up == CatchUp::Before {
                ctx.reevaluate(state, Change::All, ops);
            }
            let out = f(&mut ctx, state, ops);
            ctx.finish(state, ops);
            out
        })
        .await?;
    Ok((out, Step { durable, effects }))
}

/// Runs one engine step on a user state that is not in the profile store and commits
/// nothing: the pure evaluation cost, for benchmarks. Returns the mutation's outcome and
/// the number of writes the step would commit.
#[doc(hidden)]
pub fn step_detached(
    app: &Arc<App>,
    user: &Arc<str>,
    state: &mut crate::profile::UserState,
    m: Mutation,
) -> (Outcome, usize) {
    let rs = app.engine.rules.load();
    let mut effects = Effects::default();
    let mut ops = Vec::new();
    let mut ctx = decide::Ctx::new(app, &rs, user, app.clock.now_ms(), None, &mut effects);
    let outcome = ctx.apply_mutation(state, m, &mut ops);
    ctx.finish(state, &mut ops);
    (outcome, ops.len())
}

/// Applies mutations from any door and evaluates what they make due. `session` is the
/// session where they happened (deliveries go there first).
pub async fn ingest(
    app: &Arc<App>,
    user: &str,
    mutations: Vec<Mutation>,
    extra: Vec<WriteOp>,
    session: Option<&Arc<Session>>,
) -> Result<Vec<Outcome>, StoreError> {
    run(app, user, session, |ctx, state, ops| {
        ops.extend(extra);
        mutations
            .into_iter()
            .map(|m| ctx.apply_mutation(state, m, ops))
            .collect()
    })
    .await
}

/// [`ingest`] without waiting for durability: returns once the step is ordered (its
/// writes submitted under the user's lock), with the [`Step`] that completes it.
pub async fn ingest_submit(
    app: &Arc<App>,
    user: &str,
    mutations: Vec<Mutation>,
    session: Option<&Arc<Session>>,
) -> Result<(Vec<Outcome>, Step), StoreError> {
    submit(app, user, session, |ctx, state, ops| {
        mutations
            .into_iter()
            .map(|m| ctx.apply_mutation(state, m, ops))
            .collect()
    })
    .await
}

/// A session started or resumed: apply its opening mutations, find segment entries that
/// happened while away, deliver what was waiting, and arm its timers. Returns once the
/// step is ordered (submitted); the returned [`Step`] completes it, so the `welcome`
/// need not wait for an fsync.
pub async fn session_started(
    app: &Arc<App>,
    session: &Arc<Session>,
    mutations: Vec<Mutation>,
    extra: Vec<WriteOp>,
) -> Result<Step, StoreError> {
    let ((), step) = submit_full(
        app,
        &session.user,
        Some(session),
        Barrier::Always,
        CatchUp::ByStep,
        |ctx, state, ops| {
            ops.extend(extra);
            for m in mutations {
                ctx.apply_mutation(state, m, ops);
            }
            ctx.reevaluate(state, Change::All, ops);
            ctx.flush_pending(state, ops);
        },
    )
    .await?;
    arm_session(app, session);
    Ok(step)
}

/// A session was not resumed within `resume_ttl`: records its end, deletes it, and
/// sends what it delivered but was never acked to the user's most recently active live
/// session, or keeps it for their next session.
pub async fn session_expired(
    app: &Arc<App>,
    user: &str,
    end: Mutation,
    delete: WriteOp,
    unacked: Vec<Arc<str>>,
) -> Result<(), StoreError> {
    let live = app.registry.most_recent(user);
    run(app, user, live.as_ref(), |ctx, state, ops| {
        ops.push(delete);
        ctx.requeue_unacked(state, &unacked);
        ctx.apply_mutation(state, end, ops);
        if !unacked.is_empty() {
            ctx.flush_pending(state, ops);
        }
    })
    .await
}

/// Engagement with one of the user's deliveries.
pub async fn engage(
    app: &Arc<App>,
    session: &Arc<Session>,
    delivery: &crate::store::DeliveryRecord,
    action: crate::protocol::frames::EngageAction,
    button: Option<String>,
) -> Result<(), StoreError> {
    run(app, &session.user, Some(session), |ctx, state, ops| {
        ctx.engage(state, delivery, action, button, ops)
    })
    .await
}

/// The user was active in `session` (track, page, activity): re-arm its inactivity
/// timers when the page changed, when none is armed, or when the one armed is later than
/// an inactivity deadline counted from now could be (it may be another campaign's, e.g.
/// a session-duration deadline, set after this campaign fired). An armed deadline that
/// is earlier is left alone: when it comes, `arm_session` counts from the last activity.
pub fn activity(app: &App, session: &Session, page_changed: bool) {
    let Some(armed) = session.core.lock().timer_at else {
        return arm_session(app, session);
    };
    let soonest = || {
        let rs = app.engine.rules.load();
        rs.min_inactivity.map(|dur| app.clock.now_ms() + dur)
    };
    if page_changed || soonest().is_some_and(|at| at < armed) {
        arm_session(app, session);
    }
}

/// Computes and schedules a session's next inactivity / session-duration deadline.
pub fn arm_session(app: &App, session: &Session) {
    let rs = app.engine.rules.load();
    let now = app.clock.now_ms();
    let last = session.last_active.load(Ordering::Relaxed);
    let next = {
        let core = session.core.lock();
        if core.attached.is_none() {
            None
        } else {
            rs.session_timed
                .iter()
                .filter(|c| c.end.is_none_or(|e| now < e))
                .filter_map(|c| match &c.trigger {
                    Trigger::Inactivity { dur, page } => {
                        let on_page = definitions::PagePattern::admits(page, &core.page);
                        (on_page && core.campaigns().inactivity_fired.get(&c.id) != Some(&last))
                            .then(|| (last + dur).max(c.start.unwrap_or(Millis::MIN)))
                    }
                    Trigger::SessionDuration { dur } => {
                        (!core.campaigns().duration_fired.contains(&c.id))
                            .then(|| (session.started_at + dur).max(c.start.unwrap_or(Millis::MIN)))
                    }
                    _ => None,
                })
                .min()
        }
    };
    // The session's own timer waits for it (see `gateway::session`): wake the session
    // to notice a new deadline.
    let prev = std::mem::replace(&mut session.core.lock().timer_at, next);
    if prev != next {
        session.wake();
    }
}

/// A timer came due.
pub async fn on_timer(app: Arc<App>, key: TimerKey) {
    let result = match &key {
        TimerKey::User(user) => {
            if app.registry.live_count(user) == 0 {
                return;
            }
            run(&app, user, None, |ctx, state, ops| {
                ctx.reevaluate(state, Change::Time, ops)
            })
            .await
        }
        TimerKey::Session(sid) => {
            let Some(session) = app.registry.get(sid) else {
                return;
            };
            if session.core.lock().attached.is_none() {
                return;
            }
            session.core.lock().timer_at = None;
            let r = run(
                &app,
                &session.user.clone(),
                Some(&session),
                |ctx, state, ops| ctx.session_due(state, ops),
            )
            .await;
            arm_session(&app, &session);
            r
        }
        TimerKey::Expiry(user, delivery) => {
            run(&app, user, None, |ctx, state, ops| {
                ctx.withdraw(state, delivery, "expired", ops)
            })
            .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, ?key, "timer handling failed");
    }
}

/// Starts the timer task for `app`.
pub fn start_timers(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(app);
    let tracker = app.tracker.clone();
    let (timers, task) = Timers::start(
        move |key| {
            if let Some(app) = weak.upgrade() {
                tracker.spawn(on_timer(app, key));
            }
        },
        app.shutdown.clone(),
    );
    app.engine.set_timers(timers);
    task
}

/// Live member count of a segment among connected users.
pub async fn live_members(app: &App, segment: &str) -> usize {
    let mut n = 0;
    for user in app.registry.live_users() {
        if let Ok(Some(true)) = app
            .profiles
            .read(&user, |s| s.engine.segments.contains(segment))
            .await
        {
            n += 1;
        }
    }
    n
}

/// Delivery input for a session from a pending delivery or a fresh decision.
pub(crate) fn input(
    delivery: &str,
    campaign: &str,
    variant: &str,
    message: Value,
    expires_at: Millis,
) -> registry::DeliveryInput {
    registry::DeliveryInput {
        delivery: delivery.to_string(),
        campaign: campaign.to_string(),
        variant: variant.to_string(),
        message,
        expires_at: Some(expires_at),
    }
}
