//! Wiring: builds the shared [`App`] from a [`Config`], binds the listener, runs the
//! background maintenance (session expiry, retention), and drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::gateway::registry::{deliver, DeliveryInput, Registry};
use crate::metrics::Metrics;
use crate::profile::{Mutation, ProfileConfig, Profiles};
use crate::protocol::ValueLimits;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError, WriteOp};

/// Everything a request or session handler needs, shared by reference count.
pub struct App {
    /// Validated configuration.
    pub cfg: Config,
    /// Wall clock (injectable for tests).
    pub clock: Clock,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// In-memory user state, ordered per user.
    pub profiles: Profiles,
    /// Live sessions.
    pub registry: Registry,
    /// Token verification.
    pub auth: Authenticator,
    /// Limits on user-supplied values.
    pub values: ValueLimits,
    /// Cancelled when the node starts draining.
    pub shutdown: CancellationToken,
    /// Every connection and session task, for draining.
    pub tracker: TaskTracker,
    /// The campaign engine.
    pub engine: crate::engine::Engine,
}

impl App {
    /// Delivers a message to the user's most recently active live session on this node.
    /// Returns `(session id, seq)`, or `None` when the user has no live session. (The
    /// campaign engine decides *what* to deliver; this is the delivery mechanism.)
    pub async fn deliver_to_user(
        &self,
        user: &str,
        input: DeliveryInput,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let Some(session) = self.registry.most_recent(user) else {
            return Ok(None);
        };
        let (seq, _) = deliver(
            &*self.store,
            &session,
            &input,
            self.cfg.limits.outbox_max,
            self.clock.now_ms(),
        )
        .await?;
        Ok(Some((session.id.to_string(), seq)))
    }

    /// Ends sessions that were not resumed within `resume_ttl`, recording `$session_end`.
    pub async fn expire_sessions(self: &Arc<Self>) {
        let now = self.clock.now_ms();
        let before = now - self.cfg.session.resume_ttl.as_millis() as i64;
        for s in self.registry.expire(before) {
            let ended = s.core.lock().detached_at.unwrap_or(now);
            let unacked: Vec<Arc<str>> = s
                .core
                .lock()
                .outbox
                .iter()
                .map(|e| e.rec.frame.clone())
                .collect();
            let (m, del) = session_end(&s.id, s.started_at, ended);
            if let Err(e) = crate::engine::session_expired(self, &s.user, m, del, unacked).await {
                tracing::warn!(error = %e, "recording session end failed");
            }
        }
    }

    /// Sessions the store holds that no process resumed (they were live when an earlier
    /// process stopped without draining, e.g. a crash) are ended like the in-memory ones
    /// once past `resume_ttl` (+ a minute): what they delivered but was never acked goes
    /// to the user's live session or waits for their next one. Retention would
    /// otherwise delete them with their outbox.
    pub async fn expire_stored_sessions(self: &Arc<Self>) {
        const CHUNK: usize = 256;
        let before = self.stored_sessions_before();
        loop {
            let stale = match self.store.stale_sessions(before, CHUNK).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "reading stale sessions failed");
                    return;
                }
            };
            let (n, mut ended) = (stale.len(), 0);
            for rec in stale {
                // Live in this process: its row is refreshed (see `refresh_live_sessions`).
                if self.registry.get(&rec.id).is_some() {
                    continue;
                }
                let (m, del) = session_end(&rec.id, rec.started_at, rec.updated_at);
                let unacked = rec.outbox.into_iter().map(|o| o.frame).collect();
                if let Err(e) =
                    crate::engine::session_expired(self, &rec.user, m, del, unacked).await
                {
                    tracing::warn!(error = %e, "ending a stored session failed");
                    return;
                }
                ended += 1;
            }
            if n < CHUNK || ended == 0 {
                return;
            }
        }
    }

    /// Stored sessions last seen before this are past resuming (retention deletes them).
    fn stored_sessions_before(&self) -> crate::clock::Millis {
        self.clock.now_ms() - self.cfg.session.resume_ttl.as_millis() as i64 - 60_000
    }

    /// Keeps the stored `updated_at` of live sessions fresh, a share of them per expiry
    /// tick so that each is written every `resume_ttl / 4` or more often: a session's row
    /// is otherwise written only when it starts and when it detaches, and retention (or
    /// the next process, after a crash) would take a session live for longer than
    /// `resume_ttl` for one nobody can resume.
    pub fn refresh_live_sessions(&self, tick: u64) {
        use std::hash::{Hash, Hasher};
        let every = (self.cfg.session.resume_ttl / 4)
            .as_secs()
            .checked_div(EXPIRY_TICK.as_secs())
            .unwrap_or(1)
            .max(1);
        let now = self.clock.now_ms();
        let ops: Vec<WriteOp> = self
            .registry
            .all_live()
            .into_iter()
            .filter(|s| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                s.id.hash(&mut h);
                h.finish() % every == tick % every
            })
            .map(|s| WriteOp::Session {
                id: s.id.to_string(),
                user: s.user.to_string(),
                started_at: s.started_at,
                updated_at: now,
            })
            .collect();
        if !ops.is_empty() {
            drop(self.store.submit(ops));
        }
    }

    /// Applies retention to the store.
    pub async fn prune(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let sc = &self.cfg.store;
        self.store
            .submit(vec![WriteOp::Prune {
                history_before: now - sc.history_days as i64 * 86_400_000,
                history_max_events: sc.history_max_events,
                dedup_before: now - sc.dedup_ttl.as_millis() as i64,
                sessions_before: self.stored_sessions_before(),
            }])
            .wait()
            .await
    }
}

/// A started gateway.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Shared state (tests use it to inspect and to inject deliveries).
    pub app: Arc<App>,
    accept: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    timers: JoinHandle<()>,
}

impl Running {
    /// Drains: stop accepting, close sessions with 1001, wait up to the grace period,
    /// make every acknowledged write durable.
    pub async fn shutdown(self) {
        let app = self.app;
        app.shutdown.cancel();
        // Sessions check the token when woken (they do not each wait on it).
        for s in app.registry.all_live() {
            s.wake();
        }
        let _ = self.accept.await;
        let _ = self.maintenance.await;
        let _ = self.timers.await;
        app.tracker.close();
        if tokio::time::timeout(app.cfg.shutdown_grace, app.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain grace period passed with connections still open");
        }
        if let Err(e) = app.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// Binds with our own backlog (tokio's `bind` uses 1024 and std's 128).
async fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Builds the app and starts serving on `cfg.listen`.
pub async fn start(cfg: Config, clock: Clock) -> anyhow::Result<Running> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let fd_limit = crate::gateway::raise_fd_limit();
    let max_connections = match cfg.limits.max_connections {
        0 => fd_limit.saturating_sub(64).max(16) as usize,
        n => n,
    };
    let metrics = Arc::new(Metrics::new());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &cfg.data_dir,
            SqliteOptions {
                fsync: cfg.store.fsync,
                linger: std::time::Duration::from_micros(cfg.store.commit_linger_us),
                wal_limit_bytes: cfg.store.wal_limit_mb << 20,
                ..Default::default()
            },
            metrics.clone(),
        )
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?,
    );
    let auth = Authenticator::new(
        &cfg.jwt,
        cfg.session.token_leeway.as_secs() as i64,
        clock.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let derive = Arc::new(crate::profile::Derivations {
        half_life: cfg.activity.half_life.as_millis().max(1) as i64,
        weights: cfg.activity.weights.clone(),
        default_weight: cfg.activity.default_weight,
        ..Default::default()
    });
    let profiles = Profiles::new(
        store.clone(),
        clock.clone(),
        ProfileConfig {
            client_writable: cfg.client_writable.iter().cloned().collect(),
            store: cfg.store.clone(),
            derive: derive.clone(),
        },
    );
    let listener = listen(cfg.listen, cfg.limits.listen_backlog)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        values: cfg.limits.values(),
        cfg,
        clock,
        metrics,
        store,
        profiles,
        registry: Registry::default(),
        auth,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        engine: crate::engine::Engine::new(derive),
    });
    crate::engine::load_definitions(&app)
        .await
        .map_err(anyhow::Error::msg)?;
    let timers = crate::engine::start_timers(&app);
    if app.cfg.dev {
        crate::dev::seed(&app).await;
    }
    tracing::info!(%addr, max_connections, fd_limit, "beckon listening");
    let accept = tokio::spawn(crate::gateway::accept_loop(
        app.clone(),
        listener,
        max_connections,
    ));
    let maintenance = tokio::spawn(maintenance(app.clone()));
    Ok(Running {
        addr,
        app,
        accept,
        maintenance,
        timers,
    })
}

/// How often sessions past `resume_ttl` are ended.
const EXPIRY_TICK: Duration = Duration::from_secs(30);

/// The `$session_end` event of a session and the write that deletes it.
fn session_end(
    id: &str,
    started_at: crate::clock::Millis,
    ended: crate::clock::Millis,
) -> (Mutation, WriteOp) {
    let mut props = Map::new();
    props.insert("session".into(), Value::String(id.to_string()));
    props.insert("duration_ms".into(), Value::from(ended - started_at));
    let m = Mutation::Event {
        id: None,
        name: "$session_end".into(),
        properties: props,
        at: Some(ended),
    };
    (m, WriteOp::DeleteSession { id: id.to_string() })
}

async fn maintenance(app: Arc<App>) {
    let mut expiry = tokio::time::interval(EXPIRY_TICK);
    let mut retention = tokio::time::interval(Duration::from_secs(3600));
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = expiry.tick() => {
                app.expire_sessions().await;
                app.refresh_live_sessions(tick);
                app.expire_stored_sessions().await;
                tick += 1;
            }
            _ = retention.tick() => {
                if let Err(e) = app.prune().await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
            }
        }
    }
}

/// Runs until SIGINT/SIGTERM, then drains. `on_listening` gets the bound address (the
/// port the OS chose for `--listen …:0`).
pub async fn run(cfg: Config, on_listening: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let running = start(cfg, Clock::system()).await?;
    on_listening(running.addr);
    shutdown_signal().await;
    tracing::info!("draining");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
