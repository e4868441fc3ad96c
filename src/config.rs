//! Typed, validated configuration. Sources, lowest precedence first: built-in defaults,
//! the TOML file (`--config`), then flags and their environment twins (contract §9).
//! `Config` is plain data so tests build one directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_str;
use crate::protocol::ValueLimits;

/// Dev-mode JWT secret: fixed so `beckon token --dev` and `serve --dev` agree.
pub const DEV_JWT_SECRET: &str = "beckon-dev-secret-NOT-FOR-PRODUCTION";
/// Dev-mode admin token.
pub const DEV_ADMIN_TOKEN: &str = "beckon-dev-admin";
/// Dev-mode Segment-compatible write key.
pub const DEV_WRITE_KEY: &str = "beckon-dev-write-key";

/// Everything the gateway needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API, WebSocket and dashboard address.
    pub listen: SocketAddr,
    /// Folder of the embedded store.
    pub data_dir: PathBuf,
    /// Redis URL: set = cluster mode.
    pub redis_url: Option<String>,
    /// Token verification.
    pub jwt: JwtConfig,
    /// Bearer token for admin calls.
    pub admin_token: Option<String>,
    /// Segment-compatible write keys.
    pub write_keys: Vec<String>,
    /// Attributes a client may set with `identify`.
    pub client_writable: Vec<String>,
    /// Dev mode: fixed secrets, demo page, example campaigns.
    pub dev: bool,
    /// Logging.
    pub log: LogConfig,
    /// Protocol and resource limits.
    pub limits: Limits,
    /// Session behaviour.
    pub session: SessionConfig,
    /// Embedded store behaviour.
    pub store: StoreConfig,
    /// The `$activity` score.
    pub activity: ActivityConfig,
    /// How long a drain may take on SIGTERM/SIGINT.
    #[serde(with = "serde_str")]
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./beckon-data"),
            redis_url: None,
            jwt: JwtConfig::default(),
            admin_token: None,
            write_keys: Vec::new(),
            client_writable: Vec::new(),
            dev: false,
            log: LogConfig::default(),
            limits: Limits::default(),
            session: SessionConfig::default(),
            store: StoreConfig::default(),
            activity: ActivityConfig::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// JWT verification settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM file with an RS256 or ES256 public key (used instead of the secret when set).
    pub public_key_file: Option<PathBuf>,
    /// `RS256` or `ES256` when `public_key_file` is set.
    pub algorithm: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive, e.g. `info` or `beckon=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Every protocol and resource limit (contract §2 defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message; over it the session is closed with 1009.
    pub max_frame_bytes: usize,
    /// Most keys in a properties/attributes object.
    pub max_properties: usize,
    /// Deepest nesting inside properties (the properties object is level 1).
    pub max_depth: usize,
    /// Longest string value or key, bytes.
    pub max_string_bytes: usize,
    /// Longest event name, characters.
    pub max_event_name_chars: usize,
    /// Sustained frames per second per session (each element of a batch counts).
    pub frames_per_sec: f64,
    /// Burst allowance above the sustained rate.
    pub frames_burst: f64,
    /// Rejected frames a session may accumulate (the strike bucket refills at a tenth
    /// of `frames_per_sec`) before it is closed with 4008.
    pub rate_strikes: f64,
    /// Live sessions per user on this node; the next one is closed with 4009.
    pub sessions_per_user: usize,
    /// Open TCP connections (HTTP and WebSocket); 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// The listen backlog (connections waiting to be accepted); bursts of handshakes
    /// beyond it are dropped by the kernel and retried by clients after a second or more.
    pub listen_backlog: u32,
    /// Time allowed for `hello`.
    #[serde(with = "serde_str")]
    pub hello_timeout: Duration,
    /// Largest HTTP request body (413 over it).
    pub http_body_bytes: usize,
    /// Unacknowledged deliveries held per session; past it the session is closed
    /// with 4010 (slow consumer) and resends happen on resume.
    pub outbox_max: usize,
    /// Events per `POST /v1/users/{id}/events` or Segment batch.
    pub events_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_properties: 50,
            max_depth: 5,
            max_string_bytes: 1024,
            max_event_name_chars: 128,
            frames_per_sec: 100.0,
            frames_burst: 200.0,
            rate_strikes: 100.0,
            sessions_per_user: 20,
            max_connections: 0,
            listen_backlog: 4096,
            hello_timeout: Duration::from_secs(10),
            http_body_bytes: 1024 * 1024,
            outbox_max: 256,
            events_per_request: 1000,
        }
    }
}

/// Session behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Server ping interval; a peer silent for two intervals is closed.
    #[serde(with = "serde_str")]
    pub heartbeat: Duration,
    /// How long a disconnected session can be resumed.
    #[serde(with = "serde_str")]
    pub resume_ttl: Duration,
    /// WebSocket read buffer per session, bytes (small: many idle sessions; a frame
    /// larger than it is read in several reads, and the buffer keeps its size).
    pub read_buffer_bytes: usize,
    /// WebSocket write buffer per session, bytes.
    pub write_buffer_bytes: usize,
    /// Leeway on token `exp` (at most 5 s per the contract).
    #[serde(with = "serde_str")]
    pub token_leeway: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat: Duration::from_secs(25),
            resume_ttl: Duration::from_secs(3600),
            read_buffer_bytes: 512,
            write_buffer_bytes: 0,
            token_leeway: Duration::from_secs(5),
        }
    }
}

/// Embedded store behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// fsync every group commit (power-loss safe). Off: safe against process crashes only.
    pub fsync: bool,
    /// Under load, how long the store writer waits for more writes to share a group
    /// commit, in microseconds (0: never): a write that arrives within this long of the
    /// end of the last commit waits for the rest of it; an idle gateway commits at once.
    pub commit_linger_us: u64,
    /// Most the write-ahead log may hold before a checkpoint starts it over, MiB (the
    /// WAL file is kept near this size; see docs/operations.md).
    pub wal_limit_mb: u64,
    /// Raw event history retained per user, days (aggregates keep day buckets as long).
    pub history_days: u32,
    /// Raw events retained per user (oldest dropped first).
    pub history_max_events: u32,
    /// Newest occurrences per user and event name whose exact times are kept in memory:
    /// a rolling `within` window is exact over them; one reaching further back counts its
    /// oldest UTC day in full (0: windows by UTC day only).
    pub window_exact_events: u32,
    /// How long client ids are remembered for dedup.
    #[serde(with = "serde_str")]
    pub dedup_ttl: Duration,
    /// Most client ids remembered per user.
    pub dedup_max_per_user: usize,
}

/// Most exact times `store.window_exact_events` may keep per user and event name.
pub const MAX_WINDOW_EXACT_EVENTS: u32 = 4096;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fsync: true,
            commit_linger_us: 500,
            wal_limit_mb: 256,
            history_days: 90,
            history_max_events: 10_000,
            window_exact_events: 128,
            dedup_ttl: Duration::from_secs(7 * 86_400),
            dedup_max_per_user: 2_000,
        }
    }
}

/// The `$activity` score: Σ weight(event) · 2^(−age / half_life) over the user's events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// Half-life of an event's contribution.
    #[serde(with = "serde_str")]
    pub half_life: Duration,
    /// Weight of events not listed in `weights`.
    pub default_weight: f64,
    /// Weight per event name.
    pub weights: std::collections::HashMap<String, f64>,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            half_life: Duration::from_secs(7 * 86_400),
            default_weight: 1.0,
            weights: [("$session_end".to_string(), 0.0)].into(),
        }
    }
}

impl Limits {
    /// The value limits the protocol decoder and the HTTP doors enforce.
    pub fn values(&self) -> ValueLimits {
        ValueLimits {
            max_properties: self.max_properties,
            max_depth: self.max_depth,
            max_string_bytes: self.max_string_bytes,
            max_event_name_chars: self.max_event_name_chars,
        }
    }
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| format!("config file: {e}"))
    }

    /// Fills dev-mode secrets where none were given.
    pub fn apply_dev_defaults(&mut self) {
        if !self.dev {
            return;
        }
        if self.jwt.secret.is_none() && self.jwt.public_key_file.is_none() {
            self.jwt.secret = Some(DEV_JWT_SECRET.into());
        }
        if self.admin_token.is_none() {
            self.admin_token = Some(DEV_ADMIN_TOKEN.into());
        }
        if self.write_keys.is_empty() {
            self.write_keys.push(DEV_WRITE_KEY.into());
        }
        if self.client_writable.is_empty() {
            self.client_writable = vec!["first_name".into(), "last_name".into(), "locale".into()];
        }
    }

    /// Checks the configuration as a whole; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt.secret.as_deref().is_none_or(str::is_empty)
            && self.jwt.public_key_file.is_none()
        {
            return Err(
                "a JWT secret is required: --jwt-secret / BECKON_JWT_SECRET (or --dev)".into(),
            );
        }
        if self.admin_token.as_deref().is_none_or(str::is_empty) {
            return Err(
                "an admin token is required: --admin-token / BECKON_ADMIN_TOKEN (or --dev)".into(),
            );
        }
        if self.redis_url.is_some() {
            return Err("cluster mode (--redis-url) is not available in this build yet; run without it for the embedded store".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!(
                "log.format `{}`: use `text` or `json`",
                self.log.format
            ));
        }
        if self.store.wal_limit_mb == 0 {
            return Err("store.wal_limit_mb must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 {
            return Err("limits.max_frame_bytes must be at least 1024".into());
        }
        if l.frames_per_sec <= 0.0 || l.frames_burst < 1.0 || l.rate_strikes < 1.0 {
            return Err(
                "limits.frames_per_sec must be > 0, frames_burst and rate_strikes >= 1".into(),
            );
        }
        if l.sessions_per_user == 0 || l.outbox_max == 0 || l.events_per_request == 0 {
            return Err(
                "limits.sessions_per_user, outbox_max and events_per_request must be >= 1".into(),
            );
        }
        if self.session.heartbeat < Duration::from_millis(100) {
            return Err("session.heartbeat must be at least 100ms".into());
        }
        if self.session.heartbeat > Duration::from_secs(366 * 86_400) {
            return Err("session.heartbeat must be at most 366d".into());
        }
        if self.session.token_leeway > Duration::from_secs(5) {
            return Err("session.token_leeway may be at most 5s (contract §2)".into());
        }
        if self.session.read_buffer_bytes < 256 {
            return Err("session.read_buffer_bytes must be at least 256".into());
        }
        if self.store.window_exact_events > MAX_WINDOW_EXACT_EVENTS {
            return Err(format!(
                "store.window_exact_events must be at most {MAX_WINDOW_EXACT_EVENTS} (times kept in memory per user and event name)"
            ));
        }
        if self.store.history_days < 90 {
            return Err(
                "store.history_days must be at least 90 (conditions look back 90 days)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_frame_bytes, 65536);
        assert_eq!(c.limits.max_properties, 50);
        assert_eq!(c.limits.sessions_per_user, 20);
        assert_eq!(c.limits.hello_timeout, Duration::from_secs(10));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c = Config::from_toml(
            "listen = \"0.0.0.0:9000\"\n[limits]\nmax_properties = 10\nhello_timeout = \"3s\"\n[session]\nheartbeat = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_properties, 10);
        assert_eq!(c.limits.hello_timeout, Duration::from_secs(3));
        assert_eq!(c.session.heartbeat, Duration::from_secs(5));
        assert!(Config::from_toml("nope = 1").is_err());
        assert!(Config::from_toml("[limits]\nhello_timeout = \"3 parsecs\"").is_err());
    }

    #[test]
    fn validation_explains_missing_secrets() {
        let c = Config::default();
        assert!(c.validate().unwrap_err().contains("--jwt-secret"));
        let mut dev = Config {
            dev: true,
            ..Config::default()
        };
        dev.apply_dev_defaults();
        assert!(dev.validate().is_ok());
    }

    #[test]
    fn the_wal_limit_is_read_and_checked() {
        let mut c = Config::from_toml("dev = true\n[store]\nwal_limit_mb = 32\n").unwrap();
        c.apply_dev_defaults();
        assert_eq!(c.store.wal_limit_mb, 32);
        assert!(c.validate().is_ok());
        c.store.wal_limit_mb = 0;
        assert!(c.validate().unwrap_err().contains("wal_limit_mb"));
    }

    #[test]
    fn exact_window_times_are_read_and_bounded() {
        let mut c = Config::from_toml("dev = true\n[store]\nwindow_exact_events = 0\n").unwrap();
        c.apply_dev_defaults();
        assert_eq!(c.store.window_exact_events, 0);
        assert!(c.validate().is_ok());
        c.store.window_exact_events = MAX_WINDOW_EXACT_EVENTS + 1;
        assert!(c.validate().unwrap_err().contains("window_exact_events"));
    }

    #[test]
    fn the_heartbeat_is_bounded_both_ways() {
        let mut c = Config::from_toml("dev = true\n[session]\nheartbeat = \"366d\"\n").unwrap();
        c.apply_dev_defaults();
        assert!(c.validate().is_ok());
        c.session.heartbeat = Duration::from_secs(367 * 86_400);
        assert!(c.validate().unwrap_err().contains("at most 366d"));
        c.session.heartbeat = Duration::from_millis(99);
        assert!(c.validate().unwrap_err().contains("at least 100ms"));
    }
}
