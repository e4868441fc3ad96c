//! One engine step for one user, run inside the user's transaction: apply a change,
//! update segment membership, collect the campaigns it fires, and decide — audience,
//! caps (with reservations), variant, priority, one modal per session — recording every
//! decision. Side effects that must wait for durability are collected in [`Effects`].

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::condition::{engagement_key, Did, Subject};
use super::definitions::{Audience, Campaign, PagePattern, Trigger};
use super::ruleset::{Change, Ruleset};
use super::state::{Decision, Pending, Reservation};
use super::timers::TimerKey;
use crate::analytics::{self, metric};
use crate::app::App;
use crate::clock::Millis;
use crate::gateway::registry::{self, Session};
use crate::metrics::OutcomeLabel;
use crate::profile::{Mutation, Outcome, UserState};
use crate::protocol::frames::EngageAction;
use crate::store::{DeliveryRecord, WriteOp};

/// Most impressions remembered per campaign for conversion attribution.
const MAX_IMPRESSIONS: usize = 20;

/// What to do once the step's writes are durable.
#[derive(Default)]
pub struct Effects {
    user: Option<Arc<str>>,
    prepared: Vec<(Arc<Session>, u64)>,
    expiries: Vec<(String, Millis)>,
    cancel_expiries: Vec<String>,
    outstanding: Vec<(String, String, bool)>,
    /// Decision outcomes (runs of one outcome counted together), for the metrics; most
    /// steps take one or two kinds of decision, counted without an allocation.
    decisions: smallvec::SmallVec<[(&'static str, u64); 2]>,
    new_decisions: Vec<String>,
    user_timer: Option<Option<Millis>>,
}

impl Effects {
    /// Confirms (or aborts) prepared deliveries and applies timers and indexes.
    pub fn perform(self, app: &Arc<App>, committed: bool) {
        if !committed {
            for (s, seq) in self.prepared {
                registry::abort_delivery(&s, seq);
            }
            return;
        }
        for (s, seq) in &self.prepared {
            registry::confirm_delivery(s, *seq, app.cfg.limits.outbox_max);
        }
        let Some(user) = self.user else { return };
        for (campaign, delivery, add) in &self.outstanding {
            if *add {
                app.engine.track_outstanding(campaign, delivery, &user);
            } else {
                app.engine.untrack_outstanding(campaign, delivery);
            }
        }
        for &(outcome, n) in &self.decisions {
            app.metrics
                .decisions
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(n);
        }
        if let Some(timers) = app.engine.timers() {
            for (d, at) in self.expiries {
                timers.set(
                    TimerKey::Expiry(user.clone(), Arc::from(d.as_str())),
                    super::wall_to_instant(app, at),
                );
            }
            for d in self.cancel_expiries {
                timers.cancel(TimerKey::Expiry(user.clone(), Arc::from(d.as_str())));
            }
            match self.user_timer {
                Some(Some(at)) => timers.set(
                    TimerKey::User(user.clone()),
                    super::wall_to_instant(app, at),
                ),
                Some(None) => timers.cancel(TimerKey::User(user.clone())),
                None => {}
            }
        }
    }
}

/// The context of one engine step.
pub struct Ctx<'a> {
    app: &'a Arc<App>,
    rs: &'a Ruleset,
    user: &'a Arc<str>,
    now: Millis,
    session: Option<Arc<Session>>,
    fx: &'a mut Effects,
    dirty: bool,
    target: Option<Option<Arc<Session>>>,
    /// The target session's current page, read once per step.
    page: Option<Option<Arc<str>>>,
    /// When the event being evaluated happened (`at`, if it was given), for conversions.
    event_at: Option<Millis>,
}

/// A campaign due in a step, with the cause its decision records (an event's cause is
/// shared by every step).
type Candidate<'a> = (&'a Arc<Campaign>, Cow<'a, Arc<str>>);

pub(crate) fn subject<'s>(
    app: &App,
    st: &'s UserState,
    now: Millis,
    page: Option<&'s str>,
    props: Option<&'s Map<String, Value>>,
) -> Subject<'s> {
    Subject {
        attributes: &st.attributes,
        aggregates: &st.aggregates,
        caps: Some(&st.engine.caps),
        filtered: &st.filtered,
        activity: st.activity,
        half_life: app.engine.derive.half_life,
        now,
        page,
        props,
    }
}

/// The segments the user is in at `now`, evaluated afresh: what the API shows. The
/// memberships the engine keeps (`EngineState::segments`) are current for users in
/// memory but may be stale for one just loaded (see `UserState::evaluated`).
pub(crate) fn segments_now(
    app: &App,
    rs: &Ruleset,
    st: &UserState,
    now: Millis,
) -> std::collections::BTreeSet<String> {
    let s = subject(app, st, now, None, None);
    rs.segments
        .values()
        .filter(|seg| s.eval(&seg.cond))
        .map(|seg| seg.id.clone())
        .collect()
}

impl<'a> Ctx<'a> {
    /// A step for `user` at `now`, caused in `session` (if any).
    pub fn new(
        app: &'a Arc<App>,
        rs: &'a Ruleset,
        user: &'a Arc<str>,
        now: Millis,
        session: Option<Arc<Session>>,
        fx: &'a mut Effects,
    ) -> Self {
        fx.user = Some(user.clone());
        Ctx {
            app,
            rs,
            user,
            now,
            session,
            fx,
            dirty: false,
            event_at: None,
            target: None,
            page: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        st: &mut UserState,
        campaign: &str,
        outcome: &'static str,
        cause: Option<&Arc<str>>,
        detail: Option<Cow<'static, str>>,
        variant: Option<&str>,
        delivery: Option<&str>,
    ) {
        tracing::debug!(user = %self.user, campaign, outcome, "decision");
        match self.fx.decisions.last_mut() {
            Some((o, n)) if std::ptr::eq(*o, outcome) => *n += 1,
            _ => self.fx.decisions.push((outcome, 1)),
        }
        let key = super::state::campaign_key(campaign);
        // Fold a repeat of the campaign's last decision without allocating a new one.
        if delivery.is_none()
            && st
                .engine
                .fold_repeat(campaign, key, outcome, cause, detail.as_deref(), self.now)
        {
            return;
        }
        let d = Decision {
            at: self.now,
            campaign: campaign.to_string(),
            outcome: Cow::Borrowed(outcome),
            cause: cause.cloned(),
            detail,
            variant: variant.map(str::to_string),
            delivery: delivery.map(str::to_string),
            repeats: 0,
            first_at: None,
        };
        // Appended on its own, so the state snapshot does not carry the history.
        // (A folded repeat only updates memory: a reload shows its first occurrence.)
        self.fx
            .new_decisions
            .push(serde_json::to_string(&d).unwrap_or_default());
        st.engine.push_decision(key, d);
    }

    /// Applies one mutation and evaluates what it makes due.
    pub fn apply_mutation(
        &mut self,
        st: &mut UserState,
        m: Mutation,
        ops: &mut Vec<WriteOp>,
    ) -> Outcome {
        let outcome = st.apply(self.user, &m, self.now, self.app.profiles.config(), ops);
        if outcome == Outcome::Applied {
            let (change, props) = match m {
                Mutation::Event {
                    name,
                    properties,
                    at,
                    ..
                } => {
                    self.event_at = at;
                    (Change::Event(name), Some(properties))
                }
                Mutation::Attributes { attributes, .. } => (
                    Change::Attrs(attributes.into_iter().map(|(k, _)| k).collect()),
                    None,
                ),
            };
            self.evaluate(st, change, props.as_ref(), ops);
            self.event_at = None;
        }
        outcome
    }

    /// Re-evaluates after `change` with no event at hand.
    pub fn reevaluate(&mut self, st: &mut UserState, change: Change, ops: &mut Vec<WriteOp>) {
        self.evaluate(st, change, None, ops);
    }

    fn update_segments(&mut self, st: &mut UserState, change: &Change) -> Vec<String> {
        let segs = self.rs.affected_segments(change);
        if segs.is_empty() {
            return Vec::new();
        }
        let verdicts: Vec<(String, bool)> = {
            let s = subject(self.app, st, self.now, None, None);
            segs.iter()
                .map(|seg| (seg.id.clone(), s.eval(&seg.cond)))
                .collect()
        };
        let mut entered = Vec::new();
        for (id, inside) in verdicts {
            if inside {
                if st.engine.segments.insert(id.clone()) {
                    entered.push(id);
                    self.dirty = true;
                }
            } else if st.engine.segments.remove(&id) {
                self.dirty = true;
            }
        }
        entered
    }

    fn evaluate(
        &mut self,
        st: &mut UserState,
        change: Change,
        props: Option<&Map<String, Value>>,
        ops: &mut Vec<WriteOp>,
    ) {
        if let Change::Event(name) = &change {
            self.attribute_conversions(st, name, ops);
        }
        let entered = self.update_segments(st, &change);
        let rs: &'a Ruleset = self.rs;
        let mut cands: Vec<Candidate<'a>> = Vec::new();
        // Candidates from one of the rule set's lists are in order already.
        let mut lists = entered.len();
        for seg in &entered {
            for c in rs.by_segment.get(seg).into_iter().flatten() {
                cands.push((c, Cow::Owned(Arc::from(format!("segment_entry:{seg}")))));
            }
        }
        let listeners = match &change {
            Change::Event(name) => rs
                .by_event
                .get(name)
                .filter(|l| !l.campaigns.is_empty())
                .map(|l| (name, l)),
            _ => None,
        };
        if let Some((name, listeners)) = listeners {
            lists += 1;
            cands.reserve_exact(listeners.campaigns.len());
            let page = self.target_page();
            for c in &listeners.campaigns {
                match &c.trigger {
                    Trigger::Event { filter, .. } => {
                        let ok = filter.as_ref().is_none_or(|f| {
                            subject(self.app, st, self.now, page.as_deref(), props).eval(f)
                        });
                        if ok {
                            cands.push((c, Cow::Borrowed(&listeners.cause)));
                        }
                    }
                    Trigger::GoalCount { count, .. } => {
                        let n = st.aggregates.get(name).map(|a| a.count).unwrap_or(0);
                        if n >= *count
                            && c.live_at(self.now)
                            && st.engine.goals.insert(c.id.clone())
                        {
                            self.dirty = true;
                            cands.push((c, Cow::Owned(Arc::from(format!("goal:{name}")))));
                        }
                    }
                    _ => {}
                }
            }
        }
        let before_goals = cands.len();
        for c in rs.affected_goals(&change) {
            if let Trigger::GoalCond { cond, .. } = &c.trigger {
                if !st.engine.goals.contains(&c.id)
                    && c.live_at(self.now)
                    && subject(self.app, st, self.now, None, None).eval(cond)
                {
                    st.engine.goals.insert(c.id.clone());
                    self.dirty = true;
                    cands.push((c, Cow::Owned(Arc::from("goal:conditions"))));
                }
            }
        }
        if cands.len() > before_goals {
            lists += 1;
        }
        self.decide(st, cands, lists <= 1, ops);
    }

    /// A goal event converts every impression (and control exposure) of a campaign
    /// with that goal that happened within the goal window before it, once each.
    fn attribute_conversions(&mut self, st: &mut UserState, event: &str, ops: &mut Vec<WriteOp>) {
        let Some(campaigns) = self.rs.by_goal_event.get(event) else {
            return;
        };
        // The goal event's own time: a backfilled event (its `at` in the past) converts
        // the impressions of the window before it, not those of the window before now.
        let t = self.event_at.unwrap_or(self.now).min(self.now);
        let mut engaged = Vec::new();
        for c in campaigns {
            let Some(goal) = &c.goal else { continue };
            let Some(cap) = st.engine.caps.get_mut(&c.id) else {
                continue;
            };
            let in_window = |at: Millis| at >= t - goal.within && at <= t;
            let converted: Vec<(String, String)> = cap
                .impressions
                .iter()
                .filter(|(_, _, at)| in_window(*at))
                .map(|(d, v, _)| (d.clone(), v.clone()))
                .collect();
            let control: Vec<String> = cap
                .controls
                .iter()
                .filter(|(_, at)| in_window(*at))
                .map(|(v, _)| v.clone())
                .collect();
            // Converted, or out of the window for any event from now on: either way
            // they can no longer convert. Later ones wait for a later goal event.
            let open = |at: Millis| !in_window(at) && at >= self.now - goal.within;
            let before = (cap.impressions.len(), cap.controls.len());
            cap.impressions.retain(|(_, _, at)| open(*at));
            cap.controls.retain(|(_, at)| open(*at));
            if before != (cap.impressions.len(), cap.controls.len()) {
                self.dirty = true;
            }
            if converted.is_empty() && control.is_empty() {
                continue;
            }
            self.dirty = true;
            if !converted.is_empty() {
                engaged.push(c.id.clone());
            }
            for (_, variant) in &converted {
                ops.push(analytics::count(
                    &c.id,
                    variant,
                    metric::CONVERT,
                    self.user,
                    t,
                ));
                st.count(
                    self.user,
                    engagement_key(&c.id, Did::Convert),
                    t,
                    self.app.profiles.config(),
                    ops,
                );
            }
            for variant in &control {
                ops.push(analytics::count(
                    &c.id,
                    variant,
                    metric::CONTROL_CONVERT,
                    self.user,
                    t,
                ));
            }
        }
        // Conversions are engagement: segments and triggers over `did: convert` see
        // them now, as they see impressions, clicks and dismissals.
        for id in engaged {
            self.evaluate(st, Change::Engagement(id), None, ops);
        }
    }

    /// The session a delivery goes to: the cause's, else the most recently active one
    /// (looked up once per step).
    fn target_session(&mut self) -> Option<Arc<Session>> {
        if let Some(t) = &self.target {
            return t.clone();
        }
        let t = match &self.session {
            Some(s) if s.core.lock().attached.is_some() => Some(s.clone()),
            _ => self.app.registry.most_recent(self.user),
        };
        self.target = Some(t.clone());
        t
    }

    /// The target session's current page (looked up once per step).
    fn target_page(&mut self) -> Option<Arc<str>> {
        if let Some(p) = &self.page {
            return p.clone();
        }
        let p = self
            .target_session()
            .and_then(|s| s.core.lock().page.as_deref().map(Arc::from));
        self.page = Some(p.clone());
        p
    }

    fn in_audience(&self, st: &UserState, c: &Campaign, page: Option<&str>) -> bool {
        match &c.audience {
            Audience::Everyone => true,
            Audience::Segment(id) => st.engine.segments.contains(id),
            Audience::Conditions(cond, _) => subject(self.app, st, self.now, page, None).eval(cond),
        }
    }

    fn capped(
        &self,
        st: &UserState,
        c: &Campaign,
        target: Option<&Arc<Session>>,
    ) -> Option<&'static str> {
        let cap = st.engine.caps.get_keyed(c.key, &c.id);
        if let Some(max) = c.frequency.max_per_user {
            let used = cap.map(|c| c.used()).unwrap_or(0);
            if used >= max {
                return Some("max_per_user reached");
            }
        }
        if let (Some(iv), Some(last)) = (
            c.frequency.min_interval,
            cap.and_then(|c| c.last_delivery()),
        ) {
            if self.now < last + iv {
                return Some("inside min_interval");
            }
        }
        if let (Some(max), Some(s)) = (c.frequency.max_per_session, target) {
            let n = s
                .core
                .lock()
                .campaigns()
                .campaign_counts
                .get(&c.id)
                .copied()
                .unwrap_or(0);
            if n >= max {
                return Some("max_per_session reached");
            }
        }
        None
    }

    fn decide(
        &mut self,
        st: &mut UserState,
        mut cands: Vec<Candidate<'a>>,
        sorted: bool,
        ops: &mut Vec<WriteOp>,
    ) {
        if cands.is_empty() {
            return;
        }
        // Highest priority first, then by id. The rule set keeps each of its lists in this
        // order, so candidates from one list (most steps) need no sort.
        let order = |a: &Candidate, b: &Candidate| {
            b.0.priority
                .cmp(&a.0.priority)
                .then_with(|| a.0.id.cmp(&b.0.id))
        };
        if !sorted && !cands.is_sorted_by(|a, b| order(a, b).is_le()) {
            cands.sort_by(order);
        }
        // One rule set holds one `Arc` per campaign.
        cands.dedup_by(|a, b| Arc::ptr_eq(a.0, b.0));
        let target = self.target_session();
        let page = self.target_page();
        let mut winner: Option<String> = None;
        for (c, cause) in cands {
            let cause = Some(&*cause);
            let c: &Campaign = c;
            if !c.live_at(self.now) {
                self.record(st, &c.id, "outside_schedule", cause, None, None, None);
                continue;
            }
            if let Some(w) = &winner {
                let detail = format!("`{w}` won on priority");
                self.record(
                    st,
                    &c.id,
                    "lost_to_priority",
                    cause,
                    Some(detail.into()),
                    None,
                    None,
                );
                continue;
            }
            if !self.in_audience(st, c, page.as_deref()) {
                self.record(st, &c.id, "not_in_audience", cause, None, None, None);
                continue;
            }
            if let Some(which) = self.capped(st, c, target.as_ref()) {
                self.record(st, &c.id, "capped", cause, Some(which.into()), None, None);
                continue;
            }
            let variant = c.variant_for(self.user);
            if variant.control {
                // Exposure without a message; it uses a cap slot like a seen delivery.
                let cap = st.engine.caps.entry(&c.id);
                cap.committed += 1;
                cap.last_committed = Some(self.now);
                cap.controls.push((variant.id.clone(), self.now));
                if cap.controls.len() > MAX_IMPRESSIONS {
                    cap.controls.remove(0);
                }
                self.dirty = true;
                ops.push(analytics::count(
                    &c.id,
                    &variant.id,
                    metric::CONTROL,
                    self.user,
                    self.now,
                ));
                st.count(
                    self.user,
                    format!("$engage:{}:control", c.id),
                    self.now,
                    self.app.profiles.config(),
                    ops,
                );
                let vid = variant.id.clone();
                self.record(st, &c.id, "control", cause, None, Some(&vid), None);
                winner = Some(c.id.clone());
                continue;
            }
            let Some(message) = variant.message.as_ref() else {
                continue;
            };
            let rendered = message.render(&st.attributes);
            let kind = message.kind().to_string();
            if kind == "modal"
                && target
                    .as_ref()
                    .is_some_and(|t| t.core.lock().campaigns().modal.is_some())
            {
                self.record(
                    st,
                    &c.id,
                    "modal_busy",
                    cause,
                    Some("another modal is open in the session".into()),
                    None,
                    None,
                );
                continue;
            }
            let vid = variant.id.clone();
            self.deliver(st, c, &vid, rendered, kind, target.as_ref(), cause, ops);
            winner = Some(c.id.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        st: &mut UserState,
        c: &Campaign,
        variant: &str,
        message: Value,
        kind: String,
        target: Option<&Arc<Session>>,
        cause: Option<&Arc<str>>,
        ops: &mut Vec<WriteOp>,
    ) {
        let delivery = crate::ids::delivery_id(self.now);
        let expires_at = self.now + c.expires_after;
        self.dirty = true;
        ops.push(analytics::count(
            &c.id,
            variant,
            metric::DELIVERED,
            self.user,
            self.now,
        ));
        // Counted for `did: delivered` in the cap state, which this step writes anyway.
        let cap = st.engine.caps.entry(&c.id);
        cap.delivered += 1;
        cap.reserved.push(Reservation {
            delivery: delivery.clone(),
            at: self.now,
            expires_at,
            session: target.map(|s| s.id.to_string()),
            kind: kind.clone(),
        });
        match target {
            Some(s) => {
                let (seq, dops) = registry::prepare_delivery(
                    s,
                    &super::input(&delivery, &c.id, variant, message, expires_at),
                    self.now,
                );
                ops.extend(dops);
                self.fx.prepared.push((s.clone(), seq));
                let mut core = s.core.lock();
                *core
                    .campaigns_mut()
                    .campaign_counts
                    .entry(c.id.clone())
                    .or_default() += 1;
                if kind == "modal" {
                    core.campaigns_mut().modal = Some(delivery.clone());
                }
                drop(core);
                self.record(
                    st,
                    &c.id,
                    "delivered",
                    cause,
                    Some(format!("session {}", s.id).into()),
                    Some(variant),
                    Some(&delivery),
                );
            }
            None => {
                ops.push(WriteOp::Delivery(DeliveryRecord {
                    id: delivery.clone(),
                    user: self.user.to_string(),
                    campaign: c.id.clone(),
                    variant: variant.to_string(),
                    created_at: self.now,
                    expires_at: Some(expires_at),
                }));
                st.engine.pending.push(Pending {
                    delivery: delivery.clone(),
                    campaign: c.id.clone(),
                    variant: variant.to_string(),
                    message,
                    created_at: self.now,
                    expires_at,
                });
                self.record(
                    st,
                    &c.id,
                    "pending",
                    cause,
                    Some("no live session; waits for the next one".into()),
                    Some(variant),
                    Some(&delivery),
                );
            }
        }
        self.fx.expiries.push((delivery.clone(), expires_at));
        self.fx.outstanding.push((c.id.clone(), delivery, true));
    }

    /// Sends deliveries that waited for a session into this one.
    pub fn flush_pending(&mut self, st: &mut UserState, ops: &mut Vec<WriteOp>) {
        let Some(s) = self.session.clone() else {
            return;
        };
        for p in std::mem::take(&mut st.engine.pending) {
            if p.expires_at <= self.now {
                continue;
            }
            let kind = p.message.get("kind").and_then(Value::as_str).unwrap_or("");
            // The session's rules hold for what waited too: one modal at a time, and the
            // campaign's max_per_session (two waiting deliveries of one campaign, or two
            // modals, arrived together). What they refuse gives its cap slot back.
            // And a campaign that is no longer live (its schedule ended while the
            // delivery waited; paused or deleted ones were revoked already) sends nothing.
            let campaign = self.rs.campaigns.get(&p.campaign);
            let refused = if !campaign.is_some_and(|c| c.live_at(self.now)) {
                Some("expired")
            } else {
                let core = s.core.lock();
                let c = core.campaigns();
                if kind == "modal" && c.modal.is_some() {
                    Some("modal_busy")
                } else {
                    let max = campaign.and_then(|c| c.frequency.max_per_session);
                    let n = c.campaign_counts.get(&p.campaign).copied().unwrap_or(0);
                    max.is_some_and(|max| n >= max).then_some("capped")
                }
            };
            if let Some(outcome) = refused {
                self.withdraw(st, &p.delivery, outcome, ops);
                continue;
            }
            // Rendered now, with the attributes the user has now (an attribute set while
            // the delivery waited shows); an edit of the campaign revoked it, so its
            // variant is still the one decided.
            let message = campaign
                .and_then(|c| c.variants.iter().find(|v| v.id == p.variant))
                .and_then(|v| v.message.as_ref())
                .map_or_else(|| p.message.clone(), |m| m.render(&st.attributes));
            let input = super::input(&p.delivery, &p.campaign, &p.variant, message, p.expires_at);
            let (seq, dops) = registry::prepare_delivery(&s, &input, self.now);
            ops.extend(dops);
            self.fx.prepared.push((s.clone(), seq));
            {
                let mut core = s.core.lock();
                *core
                    .campaigns_mut()
                    .campaign_counts
                    .entry(p.campaign.clone())
                    .or_default() += 1;
                if kind == "modal" {
                    core.campaigns_mut().modal = Some(p.delivery.clone());
                }
            }
            if let Some(cap) = st.engine.caps.get_mut(&p.campaign) {
                if let Some(r) = cap.reserved.iter_mut().find(|r| r.delivery == p.delivery) {
                    r.session = Some(s.id.to_string());
                }
            }
            self.record(
                st,
                &p.campaign,
                "delivered",
                Some(&Arc::from("pending")),
                Some(format!("session {}", s.id).into()),
                Some(&p.variant),
                Some(&p.delivery),
            );
        }
        self.dirty = true;
    }

    /// A session ended (its resume window passed) with deliveries it never acked: they
    /// wait for the user's next session, as a delivery with no session does (at least
    /// once). Entries already withdrawn (revoked, expired) or not parsable are dropped.
    pub fn requeue_unacked(&mut self, st: &mut UserState, frames: &[Arc<str>]) {
        for frame in frames {
            let Ok(v) = serde_json::from_str::<Value>(frame) else {
                continue;
            };
            let Some(delivery) = v["delivery"].as_str() else {
                continue;
            };
            let Some((campaign, i)) = st.engine.reservation(delivery) else {
                continue;
            };
            let expires_at = v["expires_at"]
                .as_str()
                .and_then(crate::clock::parse_rfc3339)
                .unwrap_or(self.now);
            if expires_at <= self.now || st.engine.pending.iter().any(|p| p.delivery == delivery) {
                continue;
            }
            if let Some(r) = st
                .engine
                .caps
                .get_mut(&campaign)
                .and_then(|c| c.reserved.get_mut(i))
            {
                r.session = None;
            }
            st.engine.pending.push(crate::engine::state::Pending {
                delivery: delivery.to_string(),
                campaign,
                variant: v["variant"].as_str().unwrap_or_default().to_string(),
                message: v["message"].clone(),
                created_at: self.now,
                expires_at,
            });
            self.dirty = true;
        }
    }

    /// Gives back the cap slot of an unseen delivery and removes it from its session.
    pub fn withdraw(
        &mut self,
        st: &mut UserState,
        delivery: &str,
        outcome: &'static str,
        ops: &mut Vec<WriteOp>,
    ) {
        let Some((campaign, i)) = st.engine.reservation(delivery) else {
            return;
        };
        // The reservation and any pending entry go: saved with the engine state, or a
        // user not in memory would get them back at the next load (a revoked pending
        // delivery sent at the next session; an expiry recorded again).
        self.dirty = true;
        let r = st
            .engine
            .caps
            .get_mut(&campaign)
            .map(|c| c.reserved.remove(i));
        st.engine.pending.retain(|p| p.delivery != delivery);
        if let Some(sid) = r.as_ref().and_then(|r| r.session.as_deref()) {
            match self.app.registry.get(sid) {
                Some(s) => {
                    ops.push(registry::withdraw_delivery(&s, delivery));
                    if let Some(n) = s
                        .core
                        .lock()
                        .campaigns_mut()
                        .campaign_counts
                        .get_mut(&campaign)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
                None => ops.push(WriteOp::OutboxDelete {
                    session: sid.to_string(),
                    delivery: delivery.to_string(),
                }),
            }
        }
        if outcome != "expired" {
            self.fx.cancel_expiries.push(delivery.to_string());
        }
        self.fx
            .outstanding
            .push((campaign.clone(), delivery.to_string(), false));
        self.record(
            st,
            &campaign,
            outcome,
            None,
            Some("unseen: cap slot given back".into()),
            None,
            Some(delivery),
        );
    }

    /// Withdraws every reservation whose time has passed.
    pub fn expire_due(&mut self, st: &mut UserState, ops: &mut Vec<WriteOp>) {
        let due: Vec<String> = st
            .engine
            .caps
            .values()
            .flat_map(|c| {
                c.reserved
                    .iter()
                    .filter(|r| r.expires_at <= self.now)
                    .map(|r| r.delivery.clone())
            })
            .collect();
        for d in due {
            self.withdraw(st, &d, "expired", ops);
        }
    }

    /// Engagement with a delivery of this user.
    pub fn engage(
        &mut self,
        st: &mut UserState,
        d: &DeliveryRecord,
        action: EngageAction,
        button: Option<String>,
        ops: &mut Vec<WriteOp>,
    ) {
        let button = if action == EngageAction::Click {
            button.unwrap_or_default()
        } else {
            String::new()
        };
        ops.push(WriteOp::Engagement {
            delivery: d.id.clone(),
            user: self.user.to_string(),
            action: action.as_str().to_string(),
            button: button.clone(),
            at: self.now,
        });
        // The first time this delivery sees this action (analytics count it once).
        let first = st
            .engine
            .first_time(format!("{}:{}:", d.id, action.as_str()));
        if first {
            self.dirty = true;
        }
        if action == EngageAction::Impression {
            if let Some((campaign, i)) = st.engine.reservation(&d.id) {
                let cap = st.engine.caps.get_mut(&campaign).expect("found above");
                let r = cap.reserved.remove(i);
                cap.committed += 1;
                cap.last_committed = Some(r.at);
                remember_impression(cap, d, self.now);
                st.engine.pending.retain(|p| p.delivery != d.id);
                self.fx.cancel_expiries.push(d.id.clone());
                self.fx.outstanding.push((campaign, d.id.clone(), false));
                self.dirty = true;
            } else if first {
                // Seen after it expired or was revoked (the impression was in flight):
                // it was shown, so it takes its cap slot again, as the impression would
                // have; the stats and the caps agree.
                let cap = st.engine.caps.entry(&d.campaign);
                cap.committed += 1;
                cap.last_committed = Some(cap.last_committed.unwrap_or(0).max(d.created_at));
                remember_impression(cap, d, self.now);
            }
        } else if let Some(s) = &self.session {
            let mut core = s.core.lock();
            if core.campaigns().modal.as_deref() == Some(d.id.as_str()) {
                core.campaigns_mut().modal = None;
            }
        }
        let did = match action {
            EngageAction::Impression => Did::Impression,
            EngageAction::Click => Did::Click,
            EngageAction::Dismiss => Did::Dismiss,
        };
        // Each button's clicks count once per delivery; the delivery's clicks (the
        // click-through's numerator) once, whichever buttons were clicked: two buttons of
        // one message clicked made a click-through of 2 (clicks per impression).
        if action == EngageAction::Click && st.engine.first_time(format!("{}:click:{button}", d.id))
        {
            self.dirty = true;
            let per_button = format!("click:{button}");
            ops.push(analytics::count(
                &d.campaign,
                &d.variant,
                &per_button,
                self.user,
                self.now,
            ));
        }
        if first {
            let m = match action {
                EngageAction::Impression => metric::IMPRESSION,
                EngageAction::Click => metric::CLICK,
                EngageAction::Dismiss => metric::DISMISS,
            };
            ops.push(analytics::count(
                &d.campaign,
                &d.variant,
                m,
                self.user,
                self.now,
            ));
            st.count(
                self.user,
                engagement_key(&d.campaign, did),
                self.now,
                self.app.profiles.config(),
                ops,
            );
            self.evaluate(st, Change::Engagement(d.campaign.clone()), None, ops);
        }
    }

    /// The cause session's inactivity and session-duration deadlines that have passed.
    pub fn session_due(&mut self, st: &mut UserState, ops: &mut Vec<WriteOp>) {
        let Some(s) = self.session.clone() else {
            return;
        };
        let last = s.last_active.load(Ordering::Relaxed);
        let rs: &'a Ruleset = self.rs;
        let mut cands: Vec<Candidate<'a>> = Vec::new();
        {
            let mut core = s.core.lock();
            for c in &rs.session_timed {
                if !c.live_at(self.now) {
                    continue;
                }
                match &c.trigger {
                    Trigger::Inactivity { dur, page } => {
                        let on_page = PagePattern::admits(page, &core.page);
                        if on_page
                            && self.now - last >= *dur
                            && core.campaigns().inactivity_fired.get(&c.id) != Some(&last)
                        {
                            core.campaigns_mut()
                                .inactivity_fired
                                .insert(c.id.clone(), last);
                            cands.push((c, Cow::Owned(Arc::from("inactivity"))));
                        }
                    }
                    Trigger::SessionDuration { dur }
                        if self.now - s.started_at >= *dur
                            && core.campaigns_mut().duration_fired.insert(c.id.clone()) =>
                    {
                        cands.push((c, Cow::Owned(Arc::from("session_duration"))));
                    }
                    _ => {}
                }
            }
        }
        self.decide(st, cands, true, ops);
    }

    /// Persists the engine state if it changed and schedules the user's next time crossing.
    pub fn finish(&mut self, st: &mut UserState, ops: &mut Vec<WriteOp>) {
        for data in self.fx.new_decisions.drain(..) {
            ops.push(WriteOp::Decision {
                user: self.user.to_string(),
                at: self.now,
                data,
            });
        }
        if self.dirty {
            ops.push(WriteOp::EngineState {
                user: self.user.to_string(),
                data: serde_json::to_string(&st.engine).unwrap_or_default(),
            });
        }
        if self.app.registry.live_count(self.user) == 0 {
            return;
        }
        if !self.rs.has_time_dependents() {
            self.fx.user_timer = Some(None);
            return;
        }
        let s = subject(self.app, st, self.now, None, None);
        let segs = self
            .rs
            .time_segments()
            .filter_map(|seg| s.next_crossing(&seg.cond));
        let goals = self
            .rs
            .goal_conds
            .iter()
            .filter(|c| !st.engine.goals.contains(&c.id))
            .filter_map(|c| match &c.trigger {
                Trigger::GoalCond { cond, deps } if deps.time => s.next_crossing(cond),
                _ => None,
            });
        self.fx.user_timer = Some(segs.chain(goals).min());
    }
}

/// Keeps a seen delivery for conversion attribution (the newest `MAX_IMPRESSIONS`).
fn remember_impression(cap: &mut super::state::CapState, d: &DeliveryRecord, at: Millis) {
    cap.impressions.push((d.id.clone(), d.variant.clone(), at));
    if cap.impressions.len() > MAX_IMPRESSIONS {
        cap.impressions.remove(0);
    }
}
