//! The injectable wall clock. Everything that compares against wall time (token `exp`,
//! event timestamps, retention) asks a [`Clock`], so tests can run on paused tokio time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A wall clock: the system's, or one anchored to tokio's (pausable) monotonic clock.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Arc<ClockKind>,
}

#[derive(Debug)]
enum ClockKind {
    System,
    Tokio {
        base_wall: Millis,
        base: tokio::time::Instant,
    },
}

impl Clock {
    /// The operating system's clock (production).
    pub fn system() -> Self {
        Clock {
            kind: Arc::new(ClockKind::System),
        }
    }

    /// A clock that starts at `wall` and then follows `tokio::time::Instant`, so that
    /// `tokio::time::advance` moves it. Must be created inside a tokio runtime.
    pub fn tokio_anchored(wall: Millis) -> Self {
        Clock {
            kind: Arc::new(ClockKind::Tokio {
                base_wall: wall,
                base: tokio::time::Instant::now(),
            }),
        }
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> Millis {
        match &*self.kind {
            ClockKind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
            ClockKind::Tokio { base_wall, base } => {
                base_wall + base.elapsed().as_millis() as Millis
            }
        }
    }

    /// Now, in seconds since the epoch (JWT `exp` units).
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = Clock::tokio_anchored(1_000_000);
        assert_eq!(c.now_ms(), 1_000_000);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(c.now_ms(), 1_005_000);
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_764_374_400_123;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
