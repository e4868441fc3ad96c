//! Beckon: a self-hosted, real-time in-app messaging gateway.
//!
//! The path of an event: `gateway` (socket, WebSocket session) → `protocol` (decode,
//! validate) → `profile` (apply in order per user, durable through `store`) → `ok`.
//! Deliveries flow the other way through a session's outbox (`gateway::registry`).
//! See docs/architecture.md.

#![forbid(unsafe_code)]

pub mod analytics;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod duration;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod profile;
pub mod protocol;
pub mod store;

pub use app::{run, start, App, Running};
pub use clock::Clock;
pub use config::Config;
