//! Shared integration-test helpers: start a real gateway on 127.0.0.1:0 with a temp data
//! dir, mint tokens, and talk to it with a real WebSocket client and HTTP client.
#![allow(dead_code)]

use std::time::Duration;

use beckon::config::Config;
use beckon::{Clock, Running};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const SECRET: &str = "test-secret";
pub const ADMIN: &str = "test-admin";
pub const WRITE_KEY: &str = "test-write-key";

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub clock: Clock,
}

pub fn base_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.jwt.secret = Some(SECRET.into());
    cfg.admin_token = Some(ADMIN.into());
    cfg.write_keys = vec![WRITE_KEY.into()];
    cfg.client_writable = vec!["first_name".into()];
    cfg.store.fsync = false;
    cfg
}

/// Starts a gateway with the test defaults, adjusted by `f`.
pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = base_config(dir.path());
    f(&mut cfg);
    start_in(dir, cfg).await
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// Starts a gateway on an existing data dir (for restart tests).
pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> TestServer {
    let clock = Clock::tokio_anchored(Clock::system().now_ms());
    let running = beckon::start(cfg, clock.clone())
        .await
        .expect("gateway starts");
    TestServer {
        addr: running.addr,
        running: Some(running),
        dir,
        clock,
    }
}

impl TestServer {
    pub fn app(&self) -> &std::sync::Arc<beckon::App> {
        &self.running.as_ref().unwrap().app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A token for `user` valid for `ttl_secs` on the server's clock.
    pub fn token(&self, user: &str, ttl_secs: i64) -> String {
        beckon::auth::mint_hs256(
            SECRET,
            user,
            Map::new(),
            self.clock.now_secs(),
            Some(ttl_secs),
        )
    }

    pub fn token_with(&self, user: &str, attrs: Value) -> String {
        beckon::auth::mint_hs256(
            SECRET,
            user,
            attrs.as_object().unwrap().clone(),
            self.clock.now_secs(),
            Some(3600),
        )
    }

    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", self.addr))
            .await
            .expect("ws connect");
        ws
    }

    /// Connects and completes hello; returns the socket and the welcome frame.
    pub async fn hello(&self, user: &str) -> (Ws, Value) {
        self.hello_frame(json!({"type": "hello", "token": self.token(user, 3600)}))
            .await
    }

    pub async fn hello_frame(&self, hello: Value) -> (Ws, Value) {
        let mut ws = self.connect().await;
        send(&mut ws, hello).await;
        let welcome = recv(&mut ws).await;
        assert_eq!(
            welcome["type"], "welcome",
            "expected welcome, got {welcome}"
        );
        (ws, welcome)
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn get_user(&self, user: &str) -> (u16, Value) {
        let r = self
            .http()
            .get(self.url(&format!("/v1/users/{user}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub async fn send_text(ws: &mut Ws, s: &str) {
    ws.send(Message::Text(s.to_string().into())).await.unwrap();
}

/// Resolves after `ms` of real time, whatever tokio's (possibly paused) clock does.
pub fn real_timer(ms: u64) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = tx.send(());
    });
    rx
}

/// The next frame, failing the test after 10 s of real time instead of hanging.
async fn next_frame(ws: &mut Ws) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::select! {
        m = ws.next() => m,
        _ = real_timer(10_000) => panic!("no frame within 10 s"),
    }
}

/// Next JSON text frame (control frames skipped). Panics on close.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match next_frame(ws).await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => panic!("unexpected close: {c:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code (None if no close frame).
pub async fn expect_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match next_frame(ws).await {
            Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// Lets spawned tasks run (and register their timers) without moving paused time much.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Advances paused time in steps so every timer along the way fires in order.
pub async fn advance(total: Duration) {
    let step = Duration::from_millis(100);
    let mut left = total;
    while left > Duration::ZERO {
        let d = left.min(step);
        tokio::time::advance(d).await;
        settle().await;
        left -= d;
    }
}

impl TestServer {
    /// An admin call with a JSON body; returns (status, body).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http().request(m, self.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// PUT that must succeed.
    pub async fn put_ok(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.admin("PUT", path, Some(body)).await;
        assert_eq!(s, 200, "PUT {path}: {b}");
        b
    }

    /// Hello with a token valid for 60 days (for tests that move time by days).
    pub async fn hello_long(&self, user: &str, extra: Value) -> (Ws, Value) {
        let mut hello = json!({"type": "hello", "token": self.token(user, 60 * 86_400)});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                hello[k] = v;
            }
        }
        self.hello_frame(hello).await
    }
}

/// Lets real time pass (the store commits on a real thread) while tokio time stays put.
pub async fn real_wait(ms: u64) {
    let _ = real_timer(ms).await;
}

/// Moves paused time by `d` in one step, then lets the work it makes due finish.
pub async fn jump(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
    real_wait(30).await;
    settle().await;
}

/// Asserts that no text frame is waiting on the socket (after letting work finish).
pub async fn assert_quiet(ws: &mut Ws) {
    use futures_util::FutureExt;
    real_wait(80).await;
    settle().await;
    while let Some(next) = ws.next().now_or_never() {
        match next {
            Some(Ok(Message::Text(t))) => panic!("expected no frame, got {t}"),
            Some(Ok(Message::Close(c))) => panic!("expected no frame, got close {c:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// Next `message` frame (skipping `ok`s), with its fields.
pub async fn recv_message(ws: &mut Ws) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == "message" {
            return v;
        }
        assert_ne!(v["type"], "error", "unexpected error frame {v}");
    }
}

/// Sends an `activity` frame with id `sync` and reads until its `ok`: every frame sent
/// before it has been answered. Fails on an error frame.
pub async fn sync(ws: &mut Ws) {
    send(ws, json!({"type":"activity","id":"sync"})).await;
    loop {
        let v = recv(ws).await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ok" && v["ids"].as_array().unwrap().contains(&json!("sync")) {
            return;
        }
    }
}

/// Counts the `message` frames that arrive until the socket goes quiet.
pub async fn drain_messages(ws: &mut Ws) -> usize {
    use futures_util::FutureExt;
    real_wait(80).await;
    settle().await;
    let mut n = 0;
    while let Some(next) = ws.next().now_or_never() {
        if let Some(Ok(Message::Text(t))) = next {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "message" {
                n += 1;
            }
        }
    }
    n
}
