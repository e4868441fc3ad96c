//! One WebSocket connection: the hello handshake, then a loop that decodes client frames
//! (via `protocol`), hands them to the engine (which orders them per user and commits
//! them), answers `ok`/`error` as commits land, sends deliveries from the session's
//! outbox, pings, and closes with the contract's codes. Generic over the byte stream so it
//! runs on any `AsyncRead + AsyncWrite`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ratelimit::{RateLimiter, Verdict};
use super::registry::Session;
use crate::app::App;
use crate::auth::AuthError;
use crate::clock::{rfc3339, Millis};
use crate::metrics::TypeLabel;
use crate::profile::{Mutation, Outcome, UserHandle};
use crate::protocol::frames::PageContext;
use crate::protocol::{decode_text, ClientFrame, CloseCode, Decoded, ErrorCode, ServerFrame};
use crate::store::WriteOp;

/// Why a connection ends.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, String),
    /// The peer is gone (or the transport failed): nothing to send.
    Gone,
    /// The peer sent a Close frame: tungstenite has queued the reply (RFC 6455 §5.5.1),
    /// which only needs flushing.
    PeerClosed,
}

/// What woke an idle session.
enum Wake {
    Notified,
    Done(Pending),
    Frame(Incoming),
    Timer,
}

/// A frame read from the socket, reduced to what the session acts on.
enum Incoming {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary,
    Other,
    End(End),
}

fn classify(msg: Option<Result<Message, WsError>>) -> Incoming {
    match msg {
        Some(Ok(Message::Text(t))) => Incoming::Text(t),
        Some(Ok(Message::Binary(_))) => Incoming::Binary,
        Some(Ok(Message::Close(_))) => Incoming::End(End::PeerClosed),
        None => Incoming::End(End::Gone),
        Some(Ok(_)) => Incoming::Other,
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            Incoming::End(close(
                CloseCode::TooBig,
                format!("frame of {size} bytes over the {max_size} limit"),
            ))
        }
        Some(Err(WsError::Capacity(_))) => {
            Incoming::End(close(CloseCode::TooBig, "frame over the size limit"))
        }
        Some(Err(WsError::Utf8)) => Incoming::End(close(
            CloseCode::InvalidPayload,
            "text frame is not valid UTF-8",
        )),
        Some(Err(_)) => Incoming::End(End::Gone),
    }
}

fn close(code: CloseCode, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

/// Serves one upgraded WebSocket until it closes.
///
/// Memory: this future is most of an idle session's footprint, one per client for hours.
/// The transient steps (handshake, frame handling, close) are boxed so that it is only
/// as big as its idle state, and the socket and the connection are borrowed or boxed
/// rather than moved in (an async fn keeps a by-value argument twice: as it was passed
/// and as its local). Inline, all this made every session's task 3.5 KB;
/// `RUSTFLAGS=-Zprint-type-sizes cargo +nightly build --release --lib` shows the layout.
pub async fn serve<S>(app: &Arc<App>, ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = Box::pin(handshake(app, ws)).await;
    let end = match handshake {
        Ok(mut conn) => {
            app.metrics.sessions.inc();
            let end = conn.run(ws).await;
            app.metrics.sessions.dec();
            conn.finish();
            end
        }
        Err(end) => end,
    };
    match end {
        End::Close(code, reason) => {
            app.metrics.close(code);
            tracing::debug!(code = code.code(), %reason, "closing session");
            Box::pin(send_close(ws, code, &reason)).await;
        }
        End::PeerClosed => {
            // Echo the peer's close (queued by tungstenite on reading it), briefly.
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
        }
        End::Gone => {}
    }
}

/// Sends a close frame and waits briefly for the peer's, so the close code arrives
/// before the TCP connection goes away.
async fn send_close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Reads the next text frame (skipping control frames).
async fn next_text<S>(ws: &mut WebSocketStream<S>) -> Result<String, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Binary(_))) => {
                return Err(close(
                    CloseCode::Protocol,
                    "the first frame must be a hello text frame",
                ))
            }
            Some(Ok(Message::Close(_))) => return Err(End::PeerClosed),
            None => return Err(End::Gone),
            Some(Ok(_)) => continue,
            Some(Err(WsError::Capacity(_))) => {
                return Err(close(CloseCode::TooBig, "frame over the size limit"))
            }
            Some(Err(WsError::Utf8)) => {
                return Err(close(CloseCode::Protocol, "hello is not valid UTF-8"))
            }
            Some(Err(_)) => return Err(End::Gone),
        }
    }
}

async fn handshake<S>(app: &Arc<App>, ws: &mut WebSocketStream<S>) -> Result<Box<Conn>, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = match tokio::time::timeout(app.cfg.limits.hello_timeout, next_text(ws)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(close(
                CloseCode::Protocol,
                "no hello within the hello timeout",
            ))
        }
    };
    let (token, resume, page, _sdk) = match decode_text(&text, &app.values) {
        Decoded::Single(Ok(ClientFrame::Hello {
            token,
            resume,
            page,
            sdk,
        })) => (token, resume, page, sdk),
        Decoded::Single(Ok(other)) => {
            return Err(close(
                CloseCode::Protocol,
                format!("the first frame must be hello, got {}", other.kind()),
            ))
        }
        Decoded::Single(Err(e)) => {
            return Err(close(
                CloseCode::Protocol,
                format!("invalid hello: {}", e.message),
            ))
        }
        Decoded::Batch(_) => {
            return Err(close(
                CloseCode::Protocol,
                "the first frame must be a single hello, not a batch",
            ))
        }
    };
    app.metrics
        .frames_in
        .get_or_create(&TypeLabel { r#type: "hello" })
        .inc();
    let verified = app.auth.verify(&token).map_err(|e| match e {
        AuthError::Expired => close(CloseCode::TokenExpired, "token expired"),
        AuthError::Invalid(m) => close(CloseCode::Unauthorized, m),
    })?;
    let now = app.clock.now_ms();

    // Resume: only a session of the same user, not expired, live or persisted.
    let mut resumed = None;
    if let Some(r) = &resume {
        let ttl = app.cfg.session.resume_ttl.as_millis() as i64;
        let found = match app.registry.get(&r.session) {
            // Detached past `resume_ttl`: expired, even before the sweep ends it.
            Some(s) if s.core.lock().detached_at.is_some_and(|t| t + ttl < now) => None,
            Some(s) => Some(s),
            None => match app.store.load_session(&r.session).await {
                Ok(Some(rec)) if rec.updated_at + ttl >= now => {
                    let s = Arc::new(Session::from_record(rec));
                    app.registry.insert(s.clone());
                    Some(s)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "session lookup failed; starting a new session");
                    None
                }
            },
        };
        resumed = found
            .filter(|s| &*s.user == verified.user.as_str())
            .map(|s| (s, r.last_seq));
    }
    let is_resume = resumed.is_some();
    let already_live = resumed
        .as_ref()
        .is_some_and(|(s, _)| s.core.lock().attached.is_some());
    if !already_live && app.registry.live_count(&verified.user) >= app.cfg.limits.sessions_per_user
    {
        return Err(close(
            CloseCode::TooManySessions,
            format!(
                "at most {} sessions per user",
                app.cfg.limits.sessions_per_user
            ),
        ));
    }

    let user = app.profiles.attach(&verified.user).await.map_err(|e| {
        tracing::error!(error = %e, "loading user failed");
        close(CloseCode::GoingAway, "store unavailable; retry")
    })?;
    let session = match &resumed {
        Some((s, _)) => s.clone(),
        None => {
            let s = Arc::new(Session::new(
                Arc::from(crate::ids::session_id()),
                user.user().clone(),
                now,
            ));
            app.registry.insert(s.clone());
            s
        }
    };
    let gen = app.registry.attach(&session);
    if let Some(p) = &page {
        session.core.lock().page = Some(p.path.clone());
    }
    session.last_active.store(now, Ordering::Relaxed);
    let mut mutations = Vec::new();
    if !verified.attributes.is_empty() {
        mutations.push(Mutation::Attributes {
            id: None,
            attributes: verified.attributes.clone(),
            trusted: true,
        });
    }
    if !is_resume {
        let mut props = Map::new();
        props.insert("session".into(), Value::String(session.id.to_string()));
        mutations.push(Mutation::Event {
            id: None,
            name: "$session_start".into(),
            properties: props,
            at: Some(now),
        });
    }
    let session_row = WriteOp::Session {
        id: session.id.to_string(),
        user: session.user.to_string(),
        started_at: session.started_at,
        updated_at: now,
    };
    // Segment entries that happened while away and waiting deliveries go to this session;
    // they queue behind the welcome. The step is ordered before the welcome is sent (so
    // the client's first frames apply after it); its fsync is not waited for.
    let step =
        match crate::engine::session_started(app, &session, mutations, vec![session_row]).await {
            Ok(step) => step,
            Err(e) => {
                tracing::error!(error = %e, "recording session start failed");
                app.registry.detach(&session, gen, now);
                app.profiles.detach(user);
                return Err(close(CloseCode::GoingAway, "store unavailable; retry"));
            }
        };
    let (app2, s2) = (app.clone(), session.clone());
    app.tracker.spawn(async move {
        if let Err(e) = step.finish(&app2).await {
            tracing::error!(error = %e, "session start not durable; closing the session");
            s2.kick(CloseCode::GoingAway);
        }
    });

    let welcome = ServerFrame::Welcome {
        session: session.id.to_string(),
        user: verified.user.clone(),
        resumed: is_resume,
        heartbeat_ms: app.cfg.session.heartbeat.as_millis() as u64,
        server_time: rfc3339(now),
    };
    let mut conn = Box::new(Conn {
        app: app.clone(),
        session,
        gen,
        user: Some(user),
        limiter: RateLimiter::new(
            app.cfg.limits.frames_per_sec,
            app.cfg.limits.frames_burst,
            app.cfg.limits.rate_strikes,
        ),
        token_deadline: verified.exp.map(|exp| app.auth.deadline_ms(exp)),
        out: Vec::new(),
    });
    conn.push(&welcome);
    if let Some((_, last_seq)) = resumed {
        conn.resume_from(last_seq);
    }
    Ok(conn)
}

/// Most batches of frames awaiting durability per session; past it the session stops
/// reading until the oldest lands.
const MAX_INFLIGHT: usize = 64;

/// A batch of frames whose writes are submitted, waiting for durability.
struct Pending {
    durable: bool,
    ids: Vec<String>,
    events: u64,
    received: Instant,
}

/// The session's in-flight batches, completed in frame order.
type Inflight =
    FuturesOrdered<std::pin::Pin<Box<dyn std::future::Future<Output = Pending> + Send>>>;

/// An attached connection's state.
struct Conn {
    app: Arc<App>,
    session: Arc<Session>,
    gen: u64,
    user: Option<UserHandle>,
    limiter: RateLimiter,
    /// Wall-clock instant (ms) after which the token is no longer honoured.
    token_deadline: Option<i64>,
    /// Encoded frames waiting to be written.
    out: Vec<String>,
}

impl Conn {
    fn push(&mut self, frame: &ServerFrame) {
        self.app
            .metrics
            .frames_out
            .get_or_create(&TypeLabel {
                r#type: frame.kind(),
            })
            .inc();
        self.out.push(frame.encode());
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>, id: Option<String>) {
        self.app.metrics.error(code);
        self.push(&ServerFrame::Error {
            code,
            message: message.into(),
            id,
        });
    }

    fn user_id(&self) -> &str {
        &self.session.user
    }

    /// The client has everything up to `last_seq`: treat it as acked, resend the rest.
    /// A `last_seq` above the session's seq is clamped, except on the owner's first resume
    /// of a session rebuilt from storage, which takes it as its seq floor (so that no new
    /// delivery reuses a seq the client has seen: see `SessionCore::restored`).
    fn resume_from(&mut self, last_seq: u64) {
        let mut core = self.session.core.lock();
        if std::mem::take(&mut core.restored) {
            core.seq = core.seq.max(last_seq);
        }
        let last = last_seq.min(core.seq);
        core.sent = last;
        if last > core.acked {
            drop(core);
            let _ = self.ack(last);
        }
    }

    fn ack(&mut self, seq: u64) -> Result<(), String> {
        let mut core = self.session.core.lock();
        if seq > core.sent {
            return Err(format!(
                "ack of seq {seq}, but the last seq sent is {}",
                core.sent
            ));
        }
        if seq <= core.acked {
            return Ok(());
        }
        core.acked = seq;
        while core.outbox.front().is_some_and(|e| e.rec.seq <= seq) {
            core.outbox.pop_front();
        }
        drop(core);
        // Acks need no reply: the write is ordered behind the deliveries it removes.
        drop(self.app.store.submit(vec![WriteOp::Ack {
            session: self.session.id.to_string(),
            upto: seq,
        }]));
        Ok(())
    }

    /// Moves outbox and control frames into `out`; an error means close.
    fn collect_outgoing(&mut self) -> Result<(), End> {
        let mut core = self.session.core.lock();
        if core.attached != Some(self.gen) {
            return Err(close(
                CloseCode::Normal,
                "session resumed on another connection",
            ));
        }
        if let Some(code) = core.kick.take() {
            let reason = if code == CloseCode::SlowConsumer {
                self.app.metrics.slow_consumers.inc();
                "outbox full: reconnect and resume"
            } else {
                "store unavailable: reconnect and resume"
            };
            return Err(close(code, reason));
        }
        let control = std::mem::take(&mut core.control);
        let from = core.sent;
        let mut sent = from;
        let mut frames = Vec::new();
        for e in core.outbox.iter().filter(|e| e.rec.seq > from) {
            if !e.durable {
                break;
            }
            frames.push(e.rec.frame.to_string());
            sent = e.rec.seq;
        }
        core.sent = sent;
        drop(core);
        let metrics = &self.app.metrics;
        metrics
            .frames_out
            .get_or_create(&TypeLabel { r#type: "revoke" })
            .inc_by(control.len() as u64);
        metrics
            .frames_out
            .get_or_create(&TypeLabel { r#type: "message" })
            .inc_by(frames.len() as u64);
        self.out.extend(control);
        self.out.extend(frames);
        Ok(())
    }

    async fn flush<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.out.is_empty() {
            return Ok(());
        }
        // Taken, not drained: an idle session keeps no buffer capacity.
        for text in std::mem::take(&mut self.out) {
            ws.feed(Message::Text(text.into()))
                .await
                .map_err(|_| End::Gone)?;
        }
        ws.flush().await.map_err(|_| End::Gone)
    }

    async fn run<S>(&mut self, ws: &mut WebSocketStream<S>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut inflight: Inflight = FuturesOrdered::new();
        let end = self.run_loop(ws, &mut inflight).await;
        if !inflight.is_empty() {
            self.app
                .tracker
                .spawn(async move { while inflight.next().await.is_some() {} });
        }
        end
    }

    async fn run_loop<S>(&mut self, ws: &mut WebSocketStream<S>, inflight: &mut Inflight) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // One timer for the heartbeat, the token's expiry and the session's next
        // session-timed campaign deadline (inactivity, session duration), which
        // `engine::arm_session` sets in the session and wakes it to notice (each timer is
        // ~100 bytes in every idle session; a shared timer queue entry was ~190).
        let hb = self.app.cfg.session.heartbeat;
        // The first ping comes at a point of the first interval fixed by the session id,
        // then every interval: sessions that connected together (a deploy, a reconnect
        // storm) do not ping together forever after. 19,000 sessions connected within
        // 4 s had pinged in a 4 s burst every 25 s at ~18% of a core. The points are on
        // a 50 ms grid of the wall clock, so the pings due in one tick go out on one
        // wake-up: spread one by one, each woke an idle worker, and idle sessions cost
        // 2.5× the CPU (load-tests/RESULTS.md, the final round).
        let mut next_ping =
            Instant::now() + first_ping_after(hb, &self.session.id, self.app.clock.now_ms());
        let mut last_heard = Instant::now();
        let mut token_at = self.token_instant();
        let mut campaign: Option<(Millis, Instant)> = None;
        // Silence is timed on its own, not at the pings: a peer silent for two intervals
        // is closed then, whatever the pings' phase.
        let wake_at = |next_ping: Instant,
                       last_heard: Instant,
                       token_at: Instant,
                       c: Option<(Millis, Instant)>| {
            let at = next_ping.min(last_heard + hb * 2).min(token_at);
            c.map_or(at, |(_, c)| at.min(c))
        };
        let timer = tokio::time::sleep_until(wake_at(next_ping, last_heard, token_at, campaign));
        tokio::pin!(timer);
        let expired = |token_at: Instant, deadline: Option<i64>| {
            deadline.is_some() && Instant::now() >= token_at
        };
        loop {
            // A drain wakes every session (`Session::wake`) rather than each waiting on
            // the shutdown token: that wait was 80 bytes in every idle session.
            if self.app.shutdown.is_cancelled() {
                return close(
                    CloseCode::GoingAway,
                    "server draining: reconnect and resume",
                );
            }
            if let Err(end) = self.collect_outgoing() {
                return end;
            }
            if !self.out.is_empty() {
                if let Err(end) = Box::pin(self.flush(ws)).await {
                    return end;
                }
            }
            let armed = self.session.core.lock().timer_at;
            if armed != campaign.map(|c| c.0) {
                campaign = armed.map(|at| (at, crate::engine::wall_to_instant(&self.app, at)));
                timer
                    .as_mut()
                    .reset(wake_at(next_ping, last_heard, token_at, campaign));
            }
            // The wait holds only the select's own futures; what a wake-up leads to runs
            // after it, in boxed futures, so an idle session's task stays small.
            let wake = tokio::select! {
                biased;
                _ = self.session.notify.notified() => Wake::Notified,
                Some(done) = inflight.next(), if !inflight.is_empty() => Wake::Done(done),
                msg = ws.next(), if inflight.len() < MAX_INFLIGHT => Wake::Frame(classify(msg)),
                _ = &mut timer => Wake::Timer,
            };
            match wake {
                Wake::Notified => {}
                Wake::Done(done) => self.complete(done),
                Wake::Frame(frame) => {
                    if expired(token_at, self.token_deadline) {
                        return close(
                            CloseCode::TokenExpired,
                            "token expired: send auth before exp",
                        );
                    }
                    last_heard = Instant::now();
                    let text = match frame {
                        Incoming::Text(t) => t,
                        Incoming::Binary => {
                            self.error(
                                ErrorCode::InvalidFrame,
                                "binary frames are not accepted; send JSON text",
                                None,
                            );
                            continue;
                        }
                        Incoming::Other => continue,
                        Incoming::End(end) => return end,
                    };
                    if let Some(end) = Box::pin(self.handle_text(&text, inflight)).await {
                        let _ = Box::pin(self.flush(ws)).await;
                        return end;
                    }
                    // Always: an `auth` frame may have set, moved or removed the deadline
                    // (a stale instant left in the past would make the timer fire at once,
                    // again and again).
                    token_at = self.token_instant();
                    timer
                        .as_mut()
                        .reset(wake_at(next_ping, last_heard, token_at, campaign));
                }
                Wake::Timer => {
                    if expired(token_at, self.token_deadline) {
                        return close(
                            CloseCode::TokenExpired,
                            "token expired: send auth before exp",
                        );
                    }
                    let now = Instant::now();
                    if campaign.is_some_and(|(_, at)| now >= at) {
                        campaign = None;
                        self.session.core.lock().timer_at = None;
                        self.app.tracker.spawn(crate::engine::on_timer(
                            self.app.clone(),
                            crate::engine::timers::TimerKey::Session(self.session.id.clone()),
                        ));
                    }
                    if now >= last_heard + hb * 2 {
                        return close(
                            CloseCode::Protocol,
                            "heartbeat timeout: no frame or pong for two intervals",
                        );
                    }
                    if now >= next_ping {
                        let ping = Box::pin(ws.send(Message::Ping(Default::default())));
                        if ping.await.is_err() {
                            return End::Gone;
                        }
                        // On the grid: the next one an interval after this one was due.
                        next_ping += hb;
                        if next_ping <= now {
                            next_ping = now + hb;
                        }
                    }
                    timer
                        .as_mut()
                        .reset(wake_at(next_ping, last_heard, token_at, campaign));
                }
            }
        }
    }

    /// A batch became durable (or failed): answer its ids.
    fn complete(&mut self, p: Pending) {
        if !p.durable {
            for id in p.ids {
                self.error(ErrorCode::Unavailable, "not stored; resend later", Some(id));
            }
            return;
        }
        self.app
            .metrics
            .events
            .get_or_create(&crate::metrics::DoorLabel { door: "ws" })
            .inc_by(p.events);
        if !p.ids.is_empty() {
            self.push(&ServerFrame::Ok { ids: p.ids });
            self.app
                .metrics
                .ack_seconds
                .observe(p.received.elapsed().as_secs_f64());
        }
    }

    fn token_instant(&self) -> Instant {
        let left = self
            .token_deadline
            .map(|d| d - self.app.clock.now_ms())
            .unwrap_or(i64::MAX / 4);
        Instant::now() + Duration::from_millis(left.clamp(0, 100 * 365 * 86_400_000) as u64)
    }

    fn touch(&self) {
        let now = self.app.clock.now_ms();
        self.session.last_active.store(now, Ordering::Relaxed);
        self.session.last_frame.store(now, Ordering::Relaxed);
    }

    /// Handles one text frame (single or batch). Returns `Some` to close.
    async fn handle_text(&mut self, text: &str, inflight: &mut Inflight) -> Option<End> {
        let received = Instant::now();
        let items = match decode_text(text, &self.app.values) {
            Decoded::Single(r) => vec![r],
            Decoded::Batch(v) => v,
        };
        let mut mutations: Vec<Mutation> = Vec::new();
        let mut mutation_ids: Vec<Option<String>> = Vec::new();
        let mut ok_now: Vec<String> = Vec::new();
        let mut active = false;
        let mut page_changed = false;
        self.limiter.begin_message();
        for item in items {
            match self.limiter.check() {
                Verdict::Allow => {}
                Verdict::Reject => {
                    let id = match &item {
                        Ok(f) => f.id().map(str::to_string),
                        Err(e) => e.id.clone(),
                    };
                    self.error(
                        ErrorCode::RateLimited,
                        "over the frame rate limit; slow down and resend",
                        id,
                    );
                    continue;
                }
                Verdict::Close => {
                    return Some(close(
                        CloseCode::RateLimited,
                        "sustained flood over the rate limit",
                    ))
                }
            }
            let frame = match item {
                Ok(f) => f,
                Err(e) => {
                    self.error(e.code, e.message, e.id);
                    continue;
                }
            };
            self.app
                .metrics
                .frames_in
                .get_or_create(&TypeLabel {
                    r#type: frame.kind(),
                })
                .inc();
            match frame {
                ClientFrame::Hello { .. } => self.error(
                    ErrorCode::InvalidFrame,
                    "hello was already received on this session",
                    None,
                ),
                ClientFrame::Track {
                    id,
                    event,
                    properties,
                } => {
                    active = true;
                    mutation_ids.push(id.clone());
                    mutations.push(Mutation::Event {
                        id,
                        name: event,
                        properties,
                        at: None,
                    });
                }
                ClientFrame::Page { id, page } => {
                    active = true;
                    page_changed = true;
                    self.session.core.lock().page = Some(page.path.clone());
                    mutation_ids.push(id.clone());
                    mutations.push(page_view(id, page));
                }
                ClientFrame::Identify { id, attributes } => {
                    mutation_ids.push(id.clone());
                    mutations.push(Mutation::Attributes {
                        id,
                        attributes,
                        trusted: false,
                    });
                }
                ClientFrame::Activity { id } => {
                    active = true;
                    ok_now.extend(id);
                }
                ClientFrame::Ack { id, seq } => match self.ack(seq) {
                    Ok(()) => ok_now.extend(id),
                    Err(m) => self.error(ErrorCode::InvalidFrame, m, id),
                },
                ClientFrame::Engage {
                    id,
                    delivery,
                    action,
                    button,
                } => {
                    let Some(rec) = self.delivery_of(&delivery).await else {
                        self.error(
                            ErrorCode::UnknownDelivery,
                            format!("no delivery `{delivery}` for this user"),
                            id,
                        );
                        continue;
                    };
                    match crate::engine::engage(&self.app, &self.session, &rec, action, button)
                        .await
                    {
                        Ok(()) => ok_now.extend(id),
                        Err(e) => {
                            tracing::warn!(error = %e, "engagement not durable");
                            self.error(ErrorCode::Unavailable, "not stored; resend later", id);
                        }
                    }
                }
                ClientFrame::Auth { id, token } => {
                    let v = match self.app.auth.verify(&token) {
                        Ok(v) => v,
                        Err(AuthError::Expired) => {
                            return Some(close(CloseCode::TokenExpired, "token expired"))
                        }
                        Err(AuthError::Invalid(m)) => {
                            return Some(close(CloseCode::Unauthorized, m))
                        }
                    };
                    if v.user != self.user_id() {
                        return Some(close(
                            CloseCode::Unauthorized,
                            "auth token is for another user",
                        ));
                    }
                    self.token_deadline = v.exp.map(|exp| self.app.auth.deadline_ms(exp));
                    if !v.attributes.is_empty() {
                        mutation_ids.push(None);
                        mutations.push(Mutation::Attributes {
                            id: None,
                            attributes: v.attributes,
                            trusted: true,
                        });
                    }
                    ok_now.extend(id);
                }
            }
        }
        if active {
            // Before evaluating, so inactivity is measured from this frame.
            self.touch();
        }
        if !mutations.is_empty() {
            let n_events = mutations
                .iter()
                .filter(|m| matches!(m, Mutation::Event { .. }))
                .count() as u64;
            let user = self.session.user.clone();
            // Ordered now, durable later: the session reads on while the commit is in
            // flight, and the `ok` goes out when it lands (in frame order).
            match crate::engine::ingest_submit(&self.app, &user, mutations, Some(&self.session))
                .await
            {
                Ok((outcomes, step)) => {
                    let mut ids = Vec::new();
                    for (id, outcome) in mutation_ids.into_iter().zip(outcomes) {
                        match outcome {
                            Outcome::Applied => ids.extend(id),
                            Outcome::Duplicate => {
                                self.app.metrics.duplicates.inc();
                                ids.extend(id)
                            }
                            Outcome::Forbidden(key) => self.error(
                                ErrorCode::ForbiddenAttribute,
                                format!("attribute `{key}` is not client-writable"),
                                id,
                            ),
                        }
                    }
                    // Driven by this session's loop (no task per frame); if the connection
                    // ends first, what is left is handed to a task so its deliveries are
                    // still confirmed.
                    let app = self.app.clone();
                    inflight.push_back(Box::pin(async move {
                        let durable = step.finish(&app).await.is_ok();
                        Pending {
                            durable,
                            ids,
                            events: n_events,
                            received,
                        }
                    }));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "frame not durable");
                    for id in mutation_ids.into_iter().flatten() {
                        self.error(ErrorCode::Unavailable, "not stored; resend later", Some(id));
                    }
                }
            }
        }
        if active {
            crate::engine::activity(&self.app, &self.session, page_changed);
        }
        if !ok_now.is_empty() {
            self.push(&ServerFrame::Ok { ids: ok_now });
            self.app
                .metrics
                .ack_seconds
                .observe(received.elapsed().as_secs_f64());
        }
        None
    }

    /// The delivery's record, if it was made for this user.
    async fn delivery_of(&self, delivery: &str) -> Option<crate::store::DeliveryRecord> {
        match self.app.store.delivery(delivery).await {
            Ok(Some(d)) if d.user == self.user_id() => Some(d),
            _ => None,
        }
    }

    /// Detaches from the session; it stays resumable until `resume_ttl`.
    fn finish(&mut self) {
        let now = self.app.clock.now_ms();
        self.app.registry.detach(&self.session, self.gen, now);
        drop(self.app.store.submit(vec![WriteOp::Session {
            id: self.session.id.to_string(),
            user: self.session.user.to_string(),
            started_at: self.session.started_at,
            updated_at: now,
        }]));
        if let Some(user) = self.user.take() {
            self.app.profiles.detach(user);
        }
    }
}

/// A `page` frame as a `$page_view` event.
pub fn page_view(id: Option<String>, page: PageContext) -> Mutation {
    let mut props = Map::new();
    props.insert("path".into(), Value::String(page.path));
    if let Some(t) = page.title {
        props.insert("title".into(), Value::String(t));
    }
    if let Some(r) = page.referrer {
        props.insert("referrer".into(), Value::String(r));
    }
    Mutation::Event {
        id,
        name: "$page_view".into(),
        properties: props,
        at: None,
    }
}

/// When a session's first ping is due: a point in `(0, hb]` fixed by its id, so that the
/// pings of sessions that connected together spread over the interval, moved up to the
/// next multiple of a grid (50 ms, or hb / 8 when shorter) of the wall clock `now_ms`,
/// so that the pings of one tick share a wake-up.
fn first_ping_after(hb: Duration, session: &str, now_ms: Millis) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    session.hash(&mut h);
    let share = (h.finish() % 1024 + 1) as u32;
    let grid = (hb / 8).min(Duration::from_millis(50));
    // Within the first interval, rounding up included.
    let at = now_ms.saturating_add(((hb - grid) * share / 1024).as_millis() as i64);
    let grid = grid.as_millis().max(1) as i64;
    let on_grid = at.div_euclid(grid).saturating_add(1).saturating_mul(grid);
    Duration::from_millis(on_grid.saturating_sub(now_ms).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First pings fall inside the first interval, on the 50 ms grid of the wall clock,
    /// and sessions that connect at the same instant get them spread over the interval.
    #[test]
    fn first_pings_spread_over_the_interval_on_a_grid() {
        let hb = Duration::from_secs(25);
        let now: Millis = 1_764_000_000_123;
        let firsts: Vec<Duration> = (0..1000)
            .map(|i| first_ping_after(hb, &format!("s_{i}"), now))
            .collect();
        for d in &firsts {
            assert!(*d > Duration::ZERO && *d <= hb, "{d:?}");
            assert_eq!(
                (now + d.as_millis() as Millis) % 50,
                0,
                "{d:?} is off the grid"
            );
        }
        // Spread: every tenth of the interval gets some, none gets most.
        let mut tenths = [0usize; 10];
        for d in &firsts {
            tenths[((d.as_millis() * 10 / hb.as_millis()) as usize).min(9)] += 1;
        }
        assert!(
            tenths.iter().all(|&n| (40..=160).contains(&n)),
            "{tenths:?}"
        );
        // The same session always gets the same point; a short heartbeat a finer grid.
        assert_eq!(first_ping_after(hb, "s_7", now), firsts[7]);
        let short = first_ping_after(Duration::from_millis(100), "s_7", now);
        assert!(short > Duration::ZERO && short <= Duration::from_millis(100));
    }
}
