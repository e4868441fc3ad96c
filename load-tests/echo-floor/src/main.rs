//! The floor: a bare tokio-tungstenite WebSocket server that speaks Beckon's framing
//! (contract §2) with none of Beckon's logic, so the load generator can measure the same
//! load against it and report the gateway as a ratio to what the stack itself costs.
//!
//! It answers `hello` with `welcome` (echoing a `resume.session` back as resumed),
//! answers each `track`/`page`/`identify` carrying an `id` with `{"type":"ok","ids":[id]}`,
//! and, when the event is the configured trigger name, also sends a `message` frame so
//! event→message latency has a floor too. It stores nothing, verifies a JWT only when
//! given a secret, and pings every `--heartbeat-ms` like the gateway.
//!
//! With `--durable FILE`, it is the floor of a *durable* gateway: each event (and the
//! `message` it triggers) is appended to FILE by one writer thread, which writes
//! everything queued in one `write` and one `fdatasync` (group commit, no linger), and
//! the `ok` and the `message` go out only after that. The file is written full of zeros
//! first and then overwritten in a ring, so a sync never has to grow the file (as a
//! SQLite WAL within its size limit). That is the least a gateway that acknowledges
//! only what is durable must do per event: what is left between it and Beckon is
//! Beckon's own cost, not the contract's.
//!
//! With `--publish`, an HTTP `PUT` on the same port (what the load generator sends to
//! publish a campaign) makes every live session send one `message` frame: the floor of
//! the campaign-publish scenario's fan-out. Without it the sessions carry nothing extra
//! (their idle size is the connect-idle floor).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
#[command(about = "Bare tokio-tungstenite server with Beckon's framing (the load-test floor)")]
struct Args {
    /// Listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// WebSocket read buffer per session, bytes (the gateway's default, 512).
    #[arg(long, default_value_t = 512)]
    read_buffer: usize,
    /// WebSocket write buffer per session, bytes (the gateway's default is 0).
    #[arg(long, default_value_t = 0)]
    write_buffer: usize,
    /// Ping interval in ms (0 = never), like the gateway's heartbeat.
    #[arg(long, default_value_t = 25_000)]
    heartbeat_ms: u64,
    /// Verify the hello's HS256 token with this secret (off by default: no Beckon logic).
    #[arg(long)]
    jwt_secret: Option<String>,
    /// A `track` of this event also gets a `message` frame.
    #[arg(long, default_value = "lt_trigger")]
    trigger_event: String,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Answer HTTP requests on the same port; a `PUT` sends every live session a message.
    #[arg(long)]
    publish: bool,
    /// Make each event durable in this file (group commit with fdatasync) before its `ok`.
    #[arg(long)]
    durable: Option<std::path::PathBuf>,
    /// With `--durable`: the ring file's size in MiB.
    #[arg(long, default_value_t = 256)]
    durable_mb: u64,
}

/// One append: the bytes, and who waits for them to be durable.
type Append = (String, tokio::sync::oneshot::Sender<()>);

/// The durable floor's log: one writer thread, group commit.
struct Log(std::sync::mpsc::Sender<Append>);

impl Log {
    fn open(path: &std::path::Path, size_mb: u64) -> std::io::Result<Log> {
        use std::io::Write;
        let size = size_mb.max(1) * 1024 * 1024;
        let mut file = std::fs::File::create(path)?;
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..size / zeros.len() as u64 {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        let (tx, rx) = std::sync::mpsc::channel::<Append>();
        std::thread::Builder::new()
            .name("floor-log".into())
            .spawn(move || {
                use std::os::unix::fs::FileExt;
                let mut at = 0u64;
                let mut buf = Vec::new();
                let mut waiting = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some((bytes, done)) = next {
                        buf.extend_from_slice(bytes.as_bytes());
                        buf.push(b'\n');
                        waiting.push(done);
                        next = rx.try_recv().ok();
                    }
                    if at + buf.len() as u64 > size {
                        at = 0;
                    }
                    let res = file.write_all_at(&buf, at).and_then(|_| file.sync_data());
                    if let Err(e) = res {
                        eprintln!("durable log: {e}");
                        std::process::exit(1);
                    }
                    at += buf.len() as u64;
                    buf.clear();
                    for done in waiting.drain(..) {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(Log(tx))
    }

    /// Resolves once `record` is durable.
    async fn append(&self, record: String) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.0.send((record, done)).is_ok() {
            let _ = wait.await;
        }
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    resume: Option<Resume>,
}

#[derive(Deserialize)]
struct Resume {
    session: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

struct Shared {
    args: Args,
    key: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
    next_session: AtomicU64,
    next_delivery: AtomicU64,
    /// `--durable`: the log every event is appended to before its `ok`.
    log: Option<Log>,
    /// Bumped by each HTTP `PUT` (with `--publish`).
    published: tokio::sync::watch::Sender<u64>,
}

/// What else, besides its own frames, makes a session send a `message`.
trait Publishes: Send + 'static {
    fn next(&mut self) -> impl std::future::Future<Output = ()> + Send + '_;
}

/// Nothing (a zero-sized type: the session is exactly the bare one).
struct Never;

impl Publishes for Never {
    fn next(&mut self) -> impl std::future::Future<Output = ()> + Send + '_ {
        std::future::pending()
    }
}

/// Each publication (`--publish`).
struct OnPut(tokio::sync::watch::Receiver<u64>);

impl Publishes for OnPut {
    async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("refusing non-loopback listen address {}", args.listen);
        std::process::exit(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let key = args.jwt_secret.as_ref().map(|s| {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        (jsonwebtoken::DecodingKey::from_secret(s.as_bytes()), v)
    });
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    // An explicit backlog of 1024 (the gateway currently listens with 128: see RESULTS.md).
    let listener: TcpListener = socket.listen(1024)?;
    eprintln!("echo-floor listening on {}", args.listen);
    let log = match &args.durable {
        Some(path) => {
            let log = Log::open(path, args.durable_mb)?;
            eprintln!("durable: appending events to {}", path.display());
            Some(log)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        log,
        args,
        key,
        next_session: AtomicU64::new(1),
        next_delivery: AtomicU64::new(1),
        published: tokio::sync::watch::channel(0).0,
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                if shared.args.publish {
                    tokio::spawn(http_or_session(shared.clone(), stream));
                } else {
                    tokio::spawn(session(shared.clone(), stream, Never));
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `--publish`: an HTTP request (`PUT` publishes; anything else gets an empty 200), or
/// a WebSocket session that also sends a message on each publication.
async fn http_or_session(shared: Arc<Shared>, stream: TcpStream) {
    let mut first = [0u8; 4];
    if stream.peek(&mut first).await.is_err() {
        return;
    }
    if &first == b"GET " && !looks_like_upgrade(&stream).await {
        return http(shared, stream, false).await;
    }
    if &first == b"PUT " {
        return http(shared, stream, true).await;
    }
    let published = OnPut(shared.published.subscribe());
    session(shared, stream, published).await
}

/// Whether the request waiting on `stream` asks for a WebSocket upgrade.
async fn looks_like_upgrade(stream: &TcpStream) -> bool {
    let mut buf = vec![0u8; 2048];
    let n = stream.peek(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .to_ascii_lowercase()
        .contains("upgrade: websocket")
}

async fn http(shared: Arc<Shared>, mut stream: TcpStream, publish: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the head and the body (`Content-Length`), then answer and close.
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let body_len = loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break end + 4 + len;
        }
    };
    while req.len() < body_len {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    if publish {
        shared.published.send_modify(|n| *n += 1);
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await;
}

fn message_frame(shared: &Shared, seq: u64) -> String {
    let d = shared.next_delivery.fetch_add(1, Ordering::Relaxed);
    format!(
        "{{\"type\":\"message\",\"seq\":{seq},\"delivery\":\"d_{d}\",\"campaign\":\"floor\",\"variant\":\"a\",\"message\":{{\"kind\":\"banner\",\"body\":\"floor\"}},\"expires_at\":\"2100-01-01T00:00:00Z\"}}"
    )
}

async fn session<P: Publishes>(shared: Arc<Shared>, stream: TcpStream, mut published: P) {
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = shared.args.read_buffer;
    cfg.write_buffer_size = shared.args.write_buffer;
    cfg.max_write_buffer_size = 256 * 1024 + shared.args.write_buffer + 1;
    cfg.max_message_size = Some(64 * 1024);
    cfg.max_frame_size = Some(64 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await else {
        return;
    };
    // Handshake: the first text frame must be hello.
    let hello = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        _ => return,
    };
    let Ok(f) = serde_json::from_str::<Frame>(&hello) else {
        return;
    };
    if f.kind != "hello" {
        return;
    }
    let token = f.token.unwrap_or_default();
    let user = match &shared.key {
        Some((k, v)) => match jsonwebtoken::decode::<Claims>(&token, k, v) {
            Ok(d) => d.claims.sub,
            Err(_) => return,
        },
        None => "u".to_string(),
    };
    let (sid, resumed) = match f.resume {
        Some(r) => (r.session, true),
        None => (
            format!("s_{}", shared.next_session.fetch_add(1, Ordering::Relaxed)),
            false,
        ),
    };
    let welcome = serde_json::json!({
        "type": "welcome", "session": sid, "user": user, "resumed": resumed,
        "heartbeat_ms": shared.args.heartbeat_ms, "server_time": "1970-01-01T00:00:00Z"
    })
    .to_string();
    if ws.send(Message::Text(welcome.into())).await.is_err() {
        return;
    }
    let hb = Duration::from_millis(if shared.args.heartbeat_ms == 0 {
        u64::MAX / 4
    } else {
        shared.args.heartbeat_ms
    });
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(f) = serde_json::from_str::<Frame>(&text) else { continue };
                let Some(id) = f.id else { continue };
                let ok = format!("{{\"type\":\"ok\",\"ids\":[{}]}}", serde_json::Value::String(id));
                let message = (f.kind == "track"
                    && f.event.as_deref() == Some(shared.args.trigger_event.as_str()))
                .then(|| {
                    seq += 1;
                    message_frame(&shared, seq)
                });
                if let Some(log) = &shared.log {
                    // The event and the delivery it triggers, in one durable append.
                    let record = match &message {
                        Some(m) => format!("{text}\n{m}"),
                        None => text.to_string(),
                    };
                    log.append(record).await;
                }
                if ws.feed(Message::Text(ok.into())).await.is_err() { return; }
                if let Some(m) = message {
                    if ws.feed(Message::Text(m.into())).await.is_err() { return; }
                }
                if ws.flush().await.is_err() { return; }
            }
            _ = published.next() => {
                seq += 1;
                let m = message_frame(&shared, seq);
                if ws.send(Message::Text(m.into())).await.is_err() { return; }
            }
            _ = heartbeat.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() { return; }
            }
        }
    }
}
