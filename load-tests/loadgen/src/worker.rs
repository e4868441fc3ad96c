//! One generator process: opens its share of the sessions (each bound to one of the
//! source addresses), then runs the phases the coordinator asks for on stdin — an event
//! phase at a fixed total rate spread evenly over its sessions, or a reconnect storm —
//! and answers each with one JSON line on stdout. Everything it measures goes into HDR
//! histograms of microseconds.
//!
//! Stdout carries only protocol lines (`READY {…}`, `DONE {…}`); diagnostics go to stderr.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::hist::{self, Dump};
use crate::proto;

type Ws = WebSocketStream<TcpStream>;

/// What one worker process does; built by the coordinator, passed as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerCfg {
    pub index: usize,
    /// Sessions this worker opens.
    pub sessions: usize,
    /// Global index of its first session (user ids and source addresses derive from it).
    pub first_global: usize,
    pub sources: Vec<Ipv4Addr>,
    pub target: SocketAddr,
    pub url: String,
    pub secret: String,
    pub user_prefix: String,
    /// Sessions per second for this worker; 0 = as fast as `concurrency` allows.
    pub connect_rate: f64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub event: String,
    pub trigger_event: String,
    /// Share of events sent as `trigger_event` (expected to produce a `message`).
    pub trigger_share: f64,
    pub threads: usize,
    /// Client read buffer per session, bytes.
    pub read_buffer: usize,
}

/// A command from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Send `rate` events/s (this worker's share) for `warmup_s + duration_s`, measuring
    /// after the warm-up; ids without an answer `grace_s` after the end count as missing.
    Events {
        rate: f64,
        duration_s: f64,
        warmup_s: f64,
        grace_s: f64,
    },
    /// Every session drops its TCP connection (RST) at once and reconnects with resume.
    Storm { timeout_s: f64 },
    /// Records the arrival time of every `message` (answering `ARMED` at once, so the
    /// coordinator can then make the gateway send them) until each live session got one
    /// or `timeout_s` passed.
    Collect { timeout_s: f64 },
    /// Close everything and exit.
    Exit,
}

/// What a worker reports after connecting and after each command. Counters cover the
/// phase just finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub connected: u64,
    pub connect_failed: u64,
    /// Epoch ms of the first connect attempt and of the last welcome.
    pub first_start_ms: u64,
    pub last_welcome_ms: u64,
    pub connect: Dump,
    pub ok: Dump,
    pub message: Dump,
    pub lag: Dump,
    pub storm: Dump,
    pub sent: u64,
    pub sent_measured: u64,
    pub oks_measured: u64,
    pub late_oks: u64,
    pub missing: u64,
    pub messages: u64,
    pub errors: BTreeMap<String, u64>,
    pub storm_resumed: u64,
    pub storm_new: u64,
    pub storm_failed: u64,
    pub storm_retries: u64,
    /// Sessions alive at the end of the phase.
    pub alive: u64,
    /// Seconds of the measured window.
    pub window_s: f64,
    /// collect: epoch µs at which each `message` arrived.
    #[serde(default)]
    pub arrivals_us: Vec<u64>,
}

struct Stats {
    connect: Histogram<u64>,
    ok: Histogram<u64>,
    message: Histogram<u64>,
    lag: Histogram<u64>,
    storm: Histogram<u64>,
    r: Report,
}

impl Stats {
    fn new() -> Self {
        Stats {
            connect: hist::new(),
            ok: hist::new(),
            message: hist::new(),
            lag: hist::new(),
            storm: hist::new(),
            r: Report::default(),
        }
    }

    fn error(&mut self, what: impl Into<String>) {
        let mut k: String = what.into();
        k.truncate(80);
        *self.r.errors.entry(k).or_default() += 1;
    }

    fn report(&self) -> Report {
        let mut r = self.r.clone();
        r.connect = hist::dump(&self.connect);
        r.ok = hist::dump(&self.ok);
        r.message = hist::dump(&self.message);
        r.lag = hist::dump(&self.lag);
        r.storm = hist::dump(&self.storm);
        r
    }
}

#[derive(Clone)]
enum Phase {
    Idle,
    Events(Arc<EventsPhase>),
    Storm(Arc<StormPhase>),
    Exit,
}

struct EventsPhase {
    start: Instant,
    warm_until: Instant,
    send_until: Instant,
    report_at: Instant,
    /// Time between two events of one session.
    period: Duration,
    sessions: usize,
}

struct StormPhase {
    at: Instant,
    deadline: Instant,
}

struct Ctx {
    cfg: WorkerCfg,
    stats: Mutex<Stats>,
    sem: Arc<Semaphore>,
    ws_cfg: WebSocketConfig,
    connect_done: AtomicUsize,
    alive: AtomicUsize,
    storm_done: AtomicUsize,
    /// A `Collect` command is running.
    collecting: std::sync::atomic::AtomicBool,
}

impl Ctx {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wall-clock µs since the epoch (shared by the coordinator and the workers, which run on
/// the same machine).
pub fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn epoch_ms() -> u64 {
    epoch_us() / 1000
}

/// Runs a worker to completion.
pub fn main(cfg: WorkerCfg) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(cfg.threads.max(1));
    rt.enable_all().build()?.block_on(run(cfg))
}

async fn run(cfg: WorkerCfg) -> anyhow::Result<()> {
    let mut ws_cfg = WebSocketConfig::default();
    ws_cfg.read_buffer_size = cfg.read_buffer;
    ws_cfg.write_buffer_size = 0;
    let ctx = Arc::new(Ctx {
        sem: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        cfg,
        stats: Mutex::new(Stats::new()),
        ws_cfg,
        connect_done: AtomicUsize::new(0),
        alive: AtomicUsize::new(0),
        storm_done: AtomicUsize::new(0),
        collecting: Default::default(),
    });
    let n = ctx.cfg.sessions;
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);

    // Connect phase: paced opens, bounded in flight.
    ctx.stats().r.first_start_ms = epoch_ms();
    let start = Instant::now();
    for j in 0..n {
        if ctx.cfg.connect_rate > 0.0 {
            tokio::time::sleep_until(
                start + Duration::from_secs_f64(j as f64 / ctx.cfg.connect_rate),
            )
            .await;
        }
        let permit = ctx.sem.clone().acquire_owned().await?;
        tokio::spawn(session_task(ctx.clone(), j, permit, phase_rx.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ctx.connect_done.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut r = ctx.stats().report();
    r.window_s = start.elapsed().as_secs_f64();
    r.alive = ctx.alive.load(Ordering::Relaxed) as u64;
    emit("READY", &r)?;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let cmd: Command = serde_json::from_str(&line).context("command from coordinator")?;
        *ctx.stats() = Stats::new();
        match cmd {
            Command::Events {
                rate,
                duration_s,
                warmup_s,
                grace_s,
            } => {
                let start = Instant::now() + Duration::from_millis(50);
                let warm_until = start + Duration::from_secs_f64(warmup_s);
                let send_until = warm_until + Duration::from_secs_f64(duration_s);
                let report_at = send_until + Duration::from_secs_f64(grace_s);
                let period = Duration::from_secs_f64(n as f64 / rate.max(0.001));
                phase_tx.send_replace(Phase::Events(Arc::new(EventsPhase {
                    start,
                    warm_until,
                    send_until,
                    report_at,
                    period,
                    sessions: n,
                })));
                tokio::time::sleep_until(report_at + Duration::from_millis(300)).await;
                let mut r = ctx.stats().report();
                r.window_s = duration_s;
                r.alive = ctx.alive.load(Ordering::Relaxed) as u64;
                phase_tx.send_replace(Phase::Idle);
                emit("DONE", &r)?;
            }
            Command::Storm { timeout_s } => {
                let alive = ctx.alive.load(Ordering::Relaxed);
                ctx.storm_done.store(0, Ordering::Relaxed);
                let at = Instant::now();
                let deadline = at + Duration::from_secs_f64(timeout_s);
                phase_tx.send_replace(Phase::Storm(Arc::new(StormPhase { at, deadline })));
                while ctx.storm_done.load(Ordering::Relaxed) < alive
                    && Instant::now() < deadline + Duration::from_secs(1)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut r = ctx.stats().report();
                r.window_s = at.elapsed().as_secs_f64();
                r.alive = ctx.alive.load(Ordering::Relaxed) as u64;
                phase_tx.send_replace(Phase::Idle);
                emit("DONE", &r)?;
            }
            Command::Collect { timeout_s } => {
                let alive = ctx.alive.load(Ordering::Relaxed) as u64;
                let at = Instant::now();
                let deadline = at + Duration::from_secs_f64(timeout_s);
                ctx.collecting.store(true, Ordering::SeqCst);
                emit("ARMED", &Report::default())?;
                while ctx.stats().r.messages < alive && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Late duplicates would show up here; give them a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                ctx.collecting.store(false, Ordering::SeqCst);
                let mut r = ctx.stats().report();
                r.window_s = at.elapsed().as_secs_f64();
                r.alive = ctx.alive.load(Ordering::Relaxed) as u64;
                emit("DONE", &r)?;
            }
            Command::Exit => {
                phase_tx.send_replace(Phase::Exit);
                let until = Instant::now() + Duration::from_secs(5);
                while ctx.alive.load(Ordering::Relaxed) > 0 && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                emit("DONE", &Report::default())?;
                return Ok(());
            }
        }
    }
    Ok(())
}

fn emit(tag: &str, r: &Report) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{tag} {}", serde_json::to_string(r)?)?;
    out.flush()?;
    Ok(())
}

/// Opens one session: TCP from the session's source address, WebSocket upgrade, `hello`,
/// then waits for `welcome`.
async fn open(
    ctx: &Ctx,
    g: usize,
    resume: Option<(&str, u64)>,
) -> anyhow::Result<(Ws, proto::Incoming)> {
    let src = ctx.cfg.sources[g % ctx.cfg.sources.len()];
    let sock = TcpSocket::new_v4().context("socket")?;
    sock.bind(SocketAddr::new(src.into(), 0)).context("bind")?;
    let stream = sock.connect(ctx.cfg.target).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(ctx.cfg.url.as_str(), stream, Some(ctx.ws_cfg))
            .await
            .context("upgrade")?;
    let user = format!("{}{g}", ctx.cfg.user_prefix);
    let token = proto::mint(ctx.cfg.secret.as_bytes(), &user, 3600);
    ws.send(Message::Text(proto::hello(&token, resume).into()))
        .await
        .context("send hello")?;
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match proto::decode(&t) {
                Some(f) if f.kind == "welcome" => return Ok((ws, f)),
                Some(f) if f.kind == "error" => bail!("error {}", f.code.unwrap_or_default()),
                _ => continue,
            },
            Ok(Some(Ok(Message::Close(c)))) => {
                bail!("close {}", c.map(|c| u16::from(c.code)).unwrap_or(0))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => bail!("ws: {e}"),
            Ok(None) => bail!("eof before welcome"),
            Err(_) => bail!("no welcome within 15 s"),
        }
    }
}

fn error_key(e: &anyhow::Error) -> String {
    // The outermost context plus the root cause, without addresses or counters.
    let root = e.root_cause().to_string();
    format!("{e}: {root}")
}

struct Pending {
    n: u64,
    sent: Instant,
    measured: bool,
}

async fn next_tick(iv: &mut Option<Interval>) -> Instant {
    match iv {
        Some(iv) => iv.tick().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn session_task(
    ctx: Arc<Ctx>,
    j: usize,
    permit: OwnedSemaphorePermit,
    mut phase_rx: watch::Receiver<Phase>,
) {
    let g = ctx.cfg.first_global + j;
    let t0 = Instant::now();
    let opened = open(&ctx, g, None).await;
    drop(permit);
    let (mut ws, welcome) = match opened {
        Ok(x) => {
            let mut st = ctx.stats();
            hist::record(&mut st.connect, t0.elapsed().as_micros() as u64);
            st.r.connected += 1;
            st.r.last_welcome_ms = st.r.last_welcome_ms.max(epoch_ms());
            x
        }
        Err(e) => {
            let mut st = ctx.stats();
            st.r.connect_failed += 1;
            st.error(error_key(&e));
            drop(st);
            ctx.connect_done.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    ctx.alive.fetch_add(1, Ordering::Relaxed);
    ctx.connect_done.fetch_add(1, Ordering::Relaxed);

    let mut sid = welcome.session.unwrap_or_default();
    let mut last_seq = 0u64;
    let mut next_id = 0u64;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut triggers: VecDeque<(Instant, bool)> = VecDeque::new();
    let mut events: Option<Arc<EventsPhase>> = None;
    let mut tick: Option<Interval> = None;
    let mut report_at: Option<Instant> = None;
    // Spreads trigger events evenly: each session starts at a different point.
    let mut trigger_acc = (j as f64 * 0.618_033_988_7).fract();
    phase_rx.borrow_and_update();

    loop {
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() { break; }
                let phase = phase_rx.borrow_and_update().clone();
                match phase {
                    Phase::Idle => { events = None; tick = None; report_at = None; }
                    Phase::Exit => { let _ = ws.close(None).await; break; }
                    Phase::Events(e) => {
                        let offset = e.period.mul_f64(j as f64 / e.sessions.max(1) as f64);
                        let mut iv = tokio::time::interval_at(e.start + offset, e.period);
                        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
                        tick = Some(iv);
                        report_at = Some(e.report_at);
                        events = Some(e);
                    }
                    Phase::Storm(s) => {
                        // An abrupt network loss: RST, no close frame, nothing pending survives.
                        pending.clear();
                        triggers.clear();
                        let _ = socket_linger_zero(&ws);
                        drop(ws);
                        match storm_reconnect(&ctx, g, &sid, last_seq, &s).await {
                            Some((w, welcome)) => {
                                ws = w;
                                if let Some(s) = welcome.session { sid = s; }
                            }
                            None => { ctx.alive.fetch_sub(1, Ordering::Relaxed); return; }
                        }
                    }
                }
            }
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let Some(f) = proto::decode(&t) else {
                            ctx.stats().error("undecodable server frame");
                            continue;
                        };
                        match f.kind.as_str() {
                            "ok" => {
                                let now = Instant::now();
                                let mut st = ctx.stats();
                                for id in &f.ids {
                                    let n = proto::event_number(id);
                                    match pending.iter().position(|p| Some(p.n) == n) {
                                        Some(i) => {
                                            let p = pending.remove(i).expect("index in range");
                                            if p.measured {
                                                hist::record(&mut st.ok, (now - p.sent).as_micros() as u64);
                                                st.r.oks_measured += 1;
                                            }
                                        }
                                        None => st.r.late_oks += 1,
                                    }
                                }
                            }
                            "message" => {
                                let now = Instant::now();
                                {
                                    let mut st = ctx.stats();
                                    st.r.messages += 1;
                                    if ctx.collecting.load(Ordering::Relaxed) {
                                        st.r.arrivals_us.push(epoch_us());
                                    }
                                    if let Some((sent, measured)) = triggers.pop_front() {
                                        if measured {
                                            hist::record(&mut st.message, (now - sent).as_micros() as u64);
                                        }
                                    }
                                }
                                if let Some(seq) = f.seq {
                                    last_seq = last_seq.max(seq);
                                    if ws.send(Message::Text(proto::ack(last_seq).into())).await.is_err() {
                                        ctx.stats().error("send failed");
                                        break;
                                    }
                                }
                            }
                            "error" => {
                                let mut st = ctx.stats();
                                st.error(format!("error frame {}", f.code.as_deref().unwrap_or("?")));
                                if let Some(n) = f.id.as_deref().and_then(proto::event_number) {
                                    pending.retain(|p| p.n != n);
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        ctx.stats().error(format!("closed by server {}", c.map(|c| u16::from(c.code)).unwrap_or(0)));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => { ctx.stats().error(format!("ws error: {e}")); break; }
                    None => { ctx.stats().error("eof"); break; }
                }
            }
            at = next_tick(&mut tick) => {
                let Some(e) = events.as_ref() else { tick = None; continue; };
                if at >= e.send_until { tick = None; continue; }
                let now = Instant::now();
                let measured = at >= e.warm_until;
                next_id += 1;
                trigger_acc += ctx.cfg.trigger_share;
                let trigger = trigger_acc >= 1.0;
                if trigger { trigger_acc -= 1.0; }
                let name = if trigger { &ctx.cfg.trigger_event } else { &ctx.cfg.event };
                if ws.send(Message::Text(proto::track(next_id, name).into())).await.is_err() {
                    ctx.stats().error("send failed");
                    break;
                }
                let sent = Instant::now();
                pending.push_back(Pending { n: next_id, sent, measured });
                if trigger { triggers.push_back((sent, measured)); }
                let mut st = ctx.stats();
                st.r.sent += 1;
                if measured {
                    st.r.sent_measured += 1;
                    hist::record(&mut st.lag, (now - at).as_micros() as u64);
                }
            }
            _ = sleep_opt(report_at) => {
                report_at = None;
                let missing = pending.iter().filter(|p| p.measured).count() as u64;
                ctx.stats().r.missing += missing;
                pending.clear();
                triggers.clear();
            }
        }
    }
    ctx.alive.fetch_sub(1, Ordering::Relaxed);
}

#[allow(deprecated)]
fn socket_linger_zero(ws: &Ws) -> std::io::Result<()> {
    ws.get_ref().set_linger(Some(Duration::ZERO))
}

/// Reconnects with resume until welcomed or the storm's deadline passes.
async fn storm_reconnect(
    ctx: &Ctx,
    g: usize,
    sid: &str,
    last_seq: u64,
    s: &StormPhase,
) -> Option<(Ws, proto::Incoming)> {
    let mut backoff_ms = 50u64;
    let mut attempt = 0u64;
    loop {
        if Instant::now() >= s.deadline {
            ctx.stats().r.storm_failed += 1;
            ctx.storm_done.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let permit = ctx.sem.acquire().await.ok()?;
        let r = tokio::time::timeout_at(s.deadline, open(ctx, g, Some((sid, last_seq)))).await;
        drop(permit);
        match r {
            Ok(Ok((ws, welcome))) => {
                let mut st = ctx.stats();
                hist::record(&mut st.storm, s.at.elapsed().as_micros() as u64);
                if welcome.resumed == Some(true) && welcome.session.as_deref() == Some(sid) {
                    st.r.storm_resumed += 1;
                } else {
                    st.r.storm_new += 1;
                }
                drop(st);
                ctx.storm_done.fetch_add(1, Ordering::Relaxed);
                return Some((ws, welcome));
            }
            Ok(Err(e)) => {
                let mut st = ctx.stats();
                st.r.storm_retries += 1;
                st.error(format!("storm: {}", error_key(&e)));
            }
            Err(_) => {}
        }
        attempt += 1;
        // Deterministic jitter so retries do not arrive in lockstep.
        let jitter = (g as u64 * 7919 + attempt * 104_729) % backoff_ms.max(1);
        tokio::time::sleep(Duration::from_millis(backoff_ms / 2 + jitter)).await;
        backoff_ms = (backoff_ms * 2).min(1000);
    }
}
