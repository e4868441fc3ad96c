//! Durable state behind the [`Store`] trait: user profiles, event history, dedup ids,
//! sessions and their unacknowledged deliveries, definitions. The embedded SQLite
//! implementation lives in [`sqlite`]; a Redis one implements the same trait for cluster
//! mode. Writes are submitted in order and acknowledged only once durable (group commit);
//! the store holds no business rules.

pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::clock::Millis;

/// A store failure. Callers treat it as "not durable": nothing is acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Per user and event name: lifetime count, first/last seen and day buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Lifetime count.
    pub count: u64,
    /// First occurrence, epoch ms.
    pub first: Millis,
    /// Last occurrence, epoch ms.
    pub last: Millis,
    /// `(day since epoch, count)`, ascending, retained for the history window.
    pub days: Vec<(i32, u32)>,
    /// The newest occurrences' times, ascending, at most `store.window_exact_events`
    /// (one inline, no allocation): rolling windows are exact over them. Not stored:
    /// rebuilt from the retained events when the user is loaded.
    #[serde(skip)]
    pub recent: smallvec::SmallVec<[Millis; 1]>,
}

/// Everything stored about one user, as loaded into memory.
#[derive(Debug, Clone, Default)]
pub struct UserRecord {
    /// Attributes (trusted and client-writable).
    pub attributes: Map<String, Value>,
    /// Aggregates by event name, covering the user's events up to `aggregates_seq`.
    pub aggregates: Vec<(String, Aggregate)>,
    /// The per-user event seq the aggregates snapshot includes; stored events above it
    /// are replayed into the aggregates when the user is loaded.
    pub aggregates_seq: u64,
    /// Remembered client ids with the time they were seen (ids of events are kept on the
    /// event rows instead, see [`StoredEvent::id`]).
    pub dedup: Vec<(String, Millis)>,
    /// The campaign engine's per-user state (JSON), if any.
    pub engine: Option<String>,
    /// The user's most recent engine decisions (JSON), oldest first.
    pub decisions: Vec<String>,
}

/// One event in a user's retained history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Per-user sequence number (0 for events stored before sequence numbers existed).
    pub seq: u64,
    /// Client id, if any.
    pub id: Option<String>,
    /// When it happened, epoch ms.
    pub at: Millis,
    /// Event name.
    pub name: String,
    /// Properties.
    pub properties: Map<String, Value>,
}

/// A session as persisted for resume across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// User id.
    pub user: String,
    /// Start, epoch ms (kept across resumes).
    pub started_at: Millis,
    /// Highest seq assigned as far as the store knows: at least every unacked
    /// delivery's. Seqs the client acked are not kept (an ack only deletes outbox rows);
    /// the resuming client reports them (`last_seq`).
    pub seq: u64,
    /// Last time the session was seen, epoch ms.
    pub updated_at: Millis,
    /// Unacknowledged deliveries, ascending by seq.
    pub outbox: Vec<OutboxRecord>,
}

/// An unacknowledged delivery as sent to a session.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Per-session seq.
    pub seq: u64,
    /// Delivery id.
    pub delivery: String,
    /// The encoded `message` frame, shared by the session's outbox and the write that
    /// makes it durable.
    pub frame: std::sync::Arc<str>,
}

/// A delivery's ownership, for validating `engage`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Delivery id.
    pub id: String,
    /// The user it was sent to.
    pub user: String,
    /// Campaign id.
    pub campaign: String,
    /// Variant id.
    pub variant: String,
    /// Created, epoch ms.
    pub created_at: Millis,
    /// Expiry, epoch ms.
    pub expires_at: Option<Millis>,
}

/// One durable write. Snapshots rather than deltas, so replays are idempotent.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Replace the user's attributes.
    ///
    /// JSON payloads in write ops are serialized by the caller (on the async workers, in
    /// parallel), not by the store's single writer thread, which is the bottleneck.
    Attributes {
        /// User id.
        user: String,
        /// Full attribute set, a JSON object.
        attributes: String,
        /// Time of the change.
        at: Millis,
    },
    /// Replace the user's aggregates snapshot. Written every so many events rather than
    /// per event: the events after `seq` are on their own rows and replayed at load.
    Aggregates {
        /// User id.
        user: String,
        /// The last per-user event seq the snapshot includes.
        seq: u64,
        /// Every aggregate of the user: a JSON array of `[event name, aggregate]`.
        aggregates: String,
    },
    /// Append to the user's event history.
    Event {
        /// User id.
        user: String,
        /// Per-user sequence number (1, 2, …).
        seq: u64,
        /// Occurrence time.
        at: Millis,
        /// Event name.
        name: String,
        /// Properties, a JSON object.
        properties: String,
        /// Client id, if any.
        id: Option<String>,
    },
    /// Remember a client id.
    Dedup {
        /// User id.
        user: String,
        /// Client id.
        id: String,
        /// When seen.
        at: Millis,
    },
    /// Create or refresh a session row (outbox untouched).
    Session {
        /// Session id.
        id: String,
        /// User id.
        user: String,
        /// Start time.
        started_at: Millis,
        /// Now.
        updated_at: Millis,
    },
    /// Record a delivery sent to a session (raises the session's seq).
    Outbox {
        /// Session id.
        session: String,
        /// Record.
        entry: OutboxRecord,
    },
    /// The client acknowledged everything up to `upto`.
    Ack {
        /// Session id.
        session: String,
        /// Highest acked seq.
        upto: u64,
    },
    /// Forget a session and its outbox.
    DeleteSession {
        /// Session id.
        id: String,
    },
    /// Record a delivery's ownership.
    Delivery(DeliveryRecord),
    /// Record engagement (impressions dedup by delivery).
    Engagement {
        /// Delivery id.
        delivery: String,
        /// User id.
        user: String,
        /// `impression`, `click`, `dismiss`.
        action: String,
        /// Button for clicks, else empty.
        button: String,
        /// When.
        at: Millis,
    },
    /// Replace the engine's per-user state (membership, caps, pending, decisions).
    EngineState {
        /// User id.
        user: String,
        /// JSON snapshot.
        data: String,
    },
    /// Append one engine decision to the user's history (for explain).
    Decision {
        /// User id.
        user: String,
        /// When.
        at: Millis,
        /// JSON.
        data: String,
    },
    /// Remove one delivery from a session's outbox (revoked or expired).
    OutboxDelete {
        /// Session id.
        session: String,
        /// Delivery id.
        delivery: String,
    },
    /// Save a segment or campaign definition.
    Definition {
        /// `segment` or `campaign`.
        kind: String,
        /// Id.
        id: String,
        /// JSON body; `None` deletes.
        body: Option<String>,
        /// When.
        at: Millis,
    },
    /// Count one analytics fact (and its user, for unique counts).
    Stat {
        /// Campaign id.
        campaign: String,
        /// Variant id.
        variant: String,
        /// Hour since the epoch.
        hour: i64,
        /// Metric name.
        metric: String,
        /// User id.
        user: String,
    },
    /// Retention: drop history, dedup ids and sessions older than the given instants.
    Prune {
        /// Events before this go.
        history_before: Millis,
        /// Most events kept per user.
        history_max_events: u32,
        /// Dedup ids before this go.
        dedup_before: Millis,
        /// Sessions not seen since this go.
        sessions_before: Millis,
    },
}

/// Resolves once the submitted writes are durable (or failed).
pub struct CommitTicket(oneshot::Receiver<Result<(), StoreError>>);

impl CommitTicket {
    /// A ticket already resolved (for stores or paths with nothing to write).
    pub fn ready(result: Result<(), StoreError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        CommitTicket(rx)
    }

    /// Builds a ticket from a channel the store will answer.
    pub fn new(rx: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        CommitTicket(rx)
    }

    /// Waits for durability, blocking the thread (outside async code only).
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(StoreError("store writer stopped".into())))
    }

    /// Waits for durability.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError("store writer stopped".into())))
    }
}

/// The durable state seam (embedded SQLite now, Redis in cluster mode).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Enqueues writes; writes become durable in submission order. Synchronous so that
    /// callers holding a per-user lock fix the order of that user's writes.
    fn submit(&self, ops: Vec<WriteOp>) -> CommitTicket;

    /// Loads a user, `None` when nothing is stored.
    async fn load_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError>;

    /// The user's events that happened at or after `since` or whose seq is above
    /// `seq_above`, oldest first.
    async fn events(
        &self,
        user: &str,
        since: Millis,
        seq_above: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Loads a session with its outbox.
    async fn load_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Sessions last seen before `before` that still hold unacknowledged deliveries, at
    /// most `limit`: retention hands their deliveries back to the engine (the user's next
    /// session gets them) before it deletes them.
    async fn stale_sessions(
        &self,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Loads a delivery's ownership record.
    async fn delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Analytics counts of a campaign for hours in `[from_hour, to_hour)`.
    async fn stats(
        &self,
        campaign: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<crate::analytics::Rows, StoreError>;

    /// Unique users per (variant, metric) of a campaign for hours in `[from_hour, to_hour)`.
    async fn stat_uniques(
        &self,
        campaign: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<crate::analytics::Uniques, StoreError>;

    /// Unique users per `(variant, bucket's first hour, metric)` of a campaign for hours
    /// in `[from_hour, to_hour)`, in buckets of `bucket_hours` from the epoch, for the
    /// metrics in [`crate::analytics::CONVERTED`].
    async fn stat_bucket_uniques(
        &self,
        campaign: &str,
        from_hour: i64,
        to_hour: i64,
        bucket_hours: i64,
    ) -> Result<crate::analytics::Rows, StoreError>;

    /// Every saved definition of a kind, as `(id, JSON body)`.
    async fn definitions(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Waits until everything submitted so far is durable.
    async fn flush(&self) -> Result<(), StoreError> {
        self.submit(Vec::new()).wait().await
    }
}
