//! Live session state: session id → session, user id → live sessions. Each session keeps
//! its delivery sequence and the outbox of unacknowledged deliveries, which outlive the
//! connection (for resume) until `resume_ttl` passes. Connections are woken through a
//! `Notify`; nothing here touches a socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

use crate::clock::Millis;
use crate::protocol::frames::MessageFrame;
use crate::protocol::{CloseCode, ServerFrame};
use crate::store::{OutboxRecord, SessionRecord, Store, StoreError, WriteOp};

/// One entry of a session's outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// The persisted record (seq, delivery, frame).
    pub rec: OutboxRecord,
    /// Durable in the store: only durable entries are sent.
    pub durable: bool,
}

/// Mutable per-session state.
#[derive(Debug, Default)]
pub struct SessionCore {
    /// Highest seq assigned.
    pub seq: u64,
    /// Highest seq acknowledged.
    pub acked: u64,
    /// Highest seq written to the current connection.
    pub sent: u64,
    /// Unacknowledged deliveries, ascending by seq.
    pub outbox: VecDeque<OutboxEntry>,
    /// Frames to send that are not deliveries (revokes).
    pub control: Vec<String>,
    /// The attached connection's generation; `None` while detached.
    pub attached: Option<u64>,
    /// Bumped on every attach; a connection whose generation is stale exits.
    pub generation: u64,
    /// A close the connection should perform.
    pub kick: Option<CloseCode>,
    /// Rebuilt from storage and not yet resumed by its owner. The store keeps no seq for
    /// acknowledged deliveries (an ack only deletes outbox rows), so the owner's resume
    /// takes its `last_seq` as the seq floor (`Conn::resume_from`).
    pub restored: bool,
    /// When the session was last detached.
    pub detached_at: Option<Millis>,
    /// Current page path.
    pub page: Option<String>,
    /// What campaigns did in this session; created on first use (most sessions never
    /// get a delivery, and these four fields were 96 bytes in every one).
    campaigns: Option<Box<SessionCampaigns>>,
    /// When this session's engine timer is due (None: not armed).
    pub timer_at: Option<Millis>,
}

/// Per-session campaign state (see [`SessionCore::campaigns`]).
#[derive(Debug, Default)]
pub struct SessionCampaigns {
    /// The modal delivery currently shown (at most one per session).
    pub modal: Option<String>,
    /// Deliveries per campaign in this session (for `max_per_session`).
    pub campaign_counts: std::collections::BTreeMap<String, u64>,
    /// Session-duration campaigns already fired in this session.
    pub duration_fired: std::collections::BTreeSet<String>,
    /// Inactivity campaigns fired, with the activity instant they fired for.
    pub inactivity_fired: std::collections::BTreeMap<String, Millis>,
}

static NO_CAMPAIGNS: SessionCampaigns = SessionCampaigns {
    modal: None,
    campaign_counts: std::collections::BTreeMap::new(),
    duration_fired: std::collections::BTreeSet::new(),
    inactivity_fired: std::collections::BTreeMap::new(),
};

impl SessionCore {
    /// What campaigns did in this session (empty if nothing yet).
    pub fn campaigns(&self) -> &SessionCampaigns {
        self.campaigns.as_deref().unwrap_or(&NO_CAMPAIGNS)
    }

    /// The same, for changing (created on first use).
    pub fn campaigns_mut(&mut self) -> &mut SessionCampaigns {
        self.campaigns.get_or_insert_default()
    }
}

/// A session, shared between its connection task and whoever delivers to it.
#[derive(Debug)]
pub struct Session {
    /// Session id.
    pub id: Arc<str>,
    /// User id.
    pub user: Arc<str>,
    /// Start time (kept across resumes).
    pub started_at: Millis,
    /// Last track, page or activity frame, or the hello (attach), epoch ms: inactivity
    /// counts from it.
    pub last_active: AtomicI64,
    /// Last track, page or activity frame, epoch ms; 0 before the first. The session a
    /// delivery with no cause session goes to is the one with the newest (contract §6):
    /// a session just opened does not outrank one the user was active in.
    pub last_frame: AtomicI64,
    /// Mutable state.
    pub core: Mutex<SessionCore>,
    /// Wakes the attached connection.
    pub notify: Notify,
}

impl Session {
    /// A new session.
    pub fn new(id: Arc<str>, user: Arc<str>, started_at: Millis) -> Self {
        Session {
            id,
            user,
            started_at,
            last_active: AtomicI64::new(started_at),
            last_frame: AtomicI64::new(0),
            core: Mutex::new(SessionCore::default()),
            notify: Notify::new(),
        }
    }

    /// Rebuilds a session persisted by an earlier process (see [`SessionCore::restored`]).
    pub fn from_record(rec: SessionRecord) -> Self {
        let s = Session::new(
            Arc::from(rec.id.as_str()),
            Arc::from(rec.user.as_str()),
            rec.started_at,
        );
        {
            let mut core = s.core.lock();
            core.seq = rec.seq;
            core.restored = true;
            core.outbox = rec
                .outbox
                .into_iter()
                .map(|rec| OutboxEntry { rec, durable: true })
                .collect();
            core.detached_at = Some(rec.updated_at);
        }
        s
    }

    /// Asks the attached connection to close with `code`.
    pub fn kick(&self, code: CloseCode) {
        self.core.lock().kick = Some(code);
        self.notify.notify_one();
    }

    /// Wakes the attached connection (e.g. to notice a drain).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Queues a control frame (e.g. revoke) for the attached connection.
    pub fn send_control(&self, frame: &ServerFrame) {
        self.core.lock().control.push(frame.encode());
        self.notify.notify_one();
    }
}

/// A message to deliver into a session.
#[derive(Debug, Clone)]
pub struct DeliveryInput {
    /// Cluster-unique delivery id.
    pub delivery: String,
    /// Campaign id.
    pub campaign: String,
    /// Variant id.
    pub variant: String,
    /// Rendered message.
    pub message: Value,
    /// Expiry, epoch ms.
    pub expires_at: Option<Millis>,
}

/// All sessions of this node. Looked up several times per event, so with a fast hash
/// (foldhash, randomly seeded) rather than SipHash.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<Arc<str>, Arc<Session>, foldhash::fast::RandomState>,
    live: DashMap<Arc<str>, Vec<Arc<Session>>, foldhash::fast::RandomState>,
}

impl Registry {
    /// Looks up a session (live or detached).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id).map(|s| s.value().clone())
    }

    /// Live sessions of a user.
    pub fn live_sessions(&self, user: &str) -> Vec<Arc<Session>> {
        self.live.get(user).map(|v| v.clone()).unwrap_or_default()
    }

    /// Live session count of a user.
    pub fn live_count(&self, user: &str) -> usize {
        self.live.get(user).map(|v| v.len()).unwrap_or(0)
    }

    /// The user's most recently active live session: the newest track, page or activity
    /// frame; among sessions without one, the newest hello.
    pub fn most_recent(&self, user: &str) -> Option<Arc<Session>> {
        self.live
            .get(user)?
            .iter()
            .max_by_key(|s| {
                (
                    s.last_frame.load(Ordering::Relaxed),
                    s.last_active.load(Ordering::Relaxed),
                )
            })
            .cloned()
    }

    /// Registers a session (new or rebuilt) without attaching it.
    pub fn insert(&self, session: Arc<Session>) {
        self.sessions.insert(session.id.clone(), session);
    }

    /// Attaches a connection to `session`, replacing any earlier one (which is told to
    /// close). Returns the connection's generation.
    pub fn attach(&self, session: &Arc<Session>) -> u64 {
        let gen = {
            let mut core = session.core.lock();
            core.generation += 1;
            core.attached = Some(core.generation);
            core.detached_at = None;
            core.kick = None;
            core.generation
        };
        let mut live = self.live.entry(session.user.clone()).or_default();
        if !live.iter().any(|s| Arc::ptr_eq(s, session)) {
            live.push(session.clone());
        }
        // Wake a replaced connection so it notices the new generation.
        session.notify.notify_waiters();
        gen
    }

    /// Detaches the connection of generation `gen`; no-op if it was replaced.
    pub fn detach(&self, session: &Arc<Session>, gen: u64, now: Millis) {
        {
            let mut core = session.core.lock();
            if core.attached != Some(gen) {
                return;
            }
            core.attached = None;
            core.detached_at = Some(now);
            core.kick = None;
        }
        if let dashmap::mapref::entry::Entry::Occupied(mut e) =
            self.live.entry(session.user.clone())
        {
            e.get_mut().retain(|s| !Arc::ptr_eq(s, session));
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Removes sessions detached before `before`, returning them.
    pub fn expire(&self, before: Millis) -> Vec<Arc<Session>> {
        let mut gone = Vec::new();
        self.sessions.retain(|_, s| {
            let core = s.core.lock();
            let expired = core.attached.is_none() && core.detached_at.is_some_and(|t| t < before);
            if expired {
                gone.push(s.clone());
            }
            !expired
        });
        gone
    }

    /// Users with at least one live session.
    pub fn live_users(&self) -> Vec<Arc<str>> {
        self.live.iter().map(|e| e.key().clone()).collect()
    }

    /// Every live session (for draining and metrics).
    pub fn all_live(&self) -> Vec<Arc<Session>> {
        self.live.iter().flat_map(|e| e.value().clone()).collect()
    }
}

/// Assigns the next seq and encodes the `message` frame; the entry waits in the outbox,
/// unsent, until [`confirm_delivery`]. Returns the seq and the writes that persist it
/// (commit them, then confirm; or [`abort_delivery`] if the commit fails).
pub fn prepare_delivery(
    session: &Session,
    input: &DeliveryInput,
    now: Millis,
) -> (u64, Vec<WriteOp>) {
    let mut core = session.core.lock();
    core.seq += 1;
    let seq = core.seq;
    let frame = serde_json::to_string(&MessageFrame {
        kind: "message",
        seq,
        delivery: &input.delivery,
        campaign: &input.campaign,
        variant: &input.variant,
        message: &input.message,
        expires_at: input.expires_at.map(crate::clock::rfc3339),
    })
    .unwrap_or_default();
    let rec = OutboxRecord {
        seq,
        delivery: input.delivery.clone(),
        frame: frame.into(),
    };
    let ops = vec![
        WriteOp::Delivery(crate::store::DeliveryRecord {
            id: input.delivery.clone(),
            user: session.user.to_string(),
            campaign: input.campaign.clone(),
            variant: input.variant.clone(),
            created_at: now,
            expires_at: input.expires_at,
        }),
        WriteOp::Outbox {
            session: session.id.to_string(),
            entry: rec.clone(),
        },
    ];
    core.outbox.push_back(OutboxEntry {
        rec,
        durable: false,
    });
    (seq, ops)
}

/// Marks a prepared delivery durable and wakes the connection. Past `outbox_max`
/// unacknowledged deliveries the session is kicked as a slow consumer (the deliveries
/// stay in the outbox for resume). Returns whether it overflowed.
pub fn confirm_delivery(session: &Session, seq: u64, outbox_max: usize) -> bool {
    let overflow = {
        let mut core = session.core.lock();
        if let Some(e) = core.outbox.iter_mut().find(|e| e.rec.seq == seq) {
            e.durable = true;
        }
        let overflow = core.outbox.len() > outbox_max;
        if overflow && core.attached.is_some() {
            core.kick = Some(CloseCode::SlowConsumer);
        }
        overflow
    };
    session.notify.notify_one();
    overflow
}

/// Drops a prepared delivery whose commit failed.
pub fn abort_delivery(session: &Session, seq: u64) {
    session.core.lock().outbox.retain(|e| e.rec.seq != seq);
}

/// Removes a delivery from a session (revoked or expired): drops it from the outbox and
/// sends `revoke` if the client already has it. Returns the write that forgets it.
pub fn withdraw_delivery(session: &Session, delivery: &str) -> WriteOp {
    let sent = {
        let mut core = session.core.lock();
        // Still queued and unsent: dropping it is enough. Sent, or already acked (so
        // no longer in the outbox): the client may show it, so tell it to remove it.
        let queued = core
            .outbox
            .iter()
            .find(|e| e.rec.delivery == delivery)
            .map(|e| e.rec.seq);
        let sent = queued.is_none_or(|seq| seq <= core.sent);
        core.outbox.retain(|e| e.rec.delivery != delivery);
        if core.campaigns().modal.as_deref() == Some(delivery) {
            core.campaigns_mut().modal = None;
        }
        sent
    };
    if sent {
        session.send_control(&ServerFrame::Revoke {
            delivery: delivery.to_string(),
        });
    }
    WriteOp::OutboxDelete {
        session: session.id.to_string(),
        delivery: delivery.to_string(),
    }
}

/// Assigns the next seq, persists the delivery and wakes the connection once durable.
/// Returns the seq and whether the outbox overflowed.
pub async fn deliver(
    store: &dyn Store,
    session: &Session,
    input: &DeliveryInput,
    outbox_max: usize,
    now: Millis,
) -> Result<(u64, bool), StoreError> {
    let (seq, ops) = prepare_delivery(session, input, now);
    if let Err(e) = store.submit(ops).wait().await {
        abort_delivery(session, seq);
        return Err(e);
    }
    Ok((seq, confirm_delivery(session, seq, outbox_max)))
}
