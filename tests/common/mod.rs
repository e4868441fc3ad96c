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

/// Next JSON text frame (control frames skipped). Panics on close.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
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
        match ws.next().await {
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
