//! Per-session frame rate limiting: a token bucket (sustained rate + burst) and a
//! "strike" bucket of WebSocket messages with rejected frames that decides when a flood
//! becomes a 4008 close. Each element of a batch takes a token, but a batch costs at
//! most one strike: one message, however large, is not a sustained flood.

use tokio::time::Instant;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: answer `rate_limited`.
    Reject,
    /// Over the limit for too long: close with 4008.
    Close,
}

/// Token bucket pair, on tokio time (so tests can pause it).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f32,
    burst: f32,
    tokens: f32,
    strike_cap: f32,
    strikes: f32,
    last: Instant,
    /// The current message already cost its strike.
    struck: bool,
}

impl RateLimiter {
    /// `rate` frames/s sustained, `burst` extra, `strikes` rejections tolerated.
    pub fn new(rate: f64, burst: f64, strikes: f64) -> Self {
        RateLimiter {
            rate: rate as f32,
            burst: burst as f32,
            tokens: burst as f32,
            strike_cap: strikes as f32,
            strikes: strikes as f32,
            last: Instant::now(),
            struck: false,
        }
    }

    /// A new WebSocket message (a frame or a batch of them) begins.
    pub fn begin_message(&mut self) {
        self.struck = false;
    }

    /// Accounts one frame (one element of a batch).
    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        // Strikes heal at a tenth of the sustained rate: an occasional burst is
        // forgiven, a client that stays over the limit runs out.
        self.strikes = (self.strikes + dt * self.rate / 10.0).min(self.strike_cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if !self.struck {
            self.struck = true;
            self.strikes -= 1.0;
        }
        if self.strikes < 0.0 {
            Verdict::Close
        } else {
            Verdict::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let mut rl = RateLimiter::new(100.0, 200.0, 100.0);
        for _ in 0..200 {
            assert_eq!(rl.check(), Verdict::Allow);
        }
        assert_eq!(rl.check(), Verdict::Reject);
        tokio::time::advance(Duration::from_millis(100)).await;
        for _ in 0..10 {
            assert_eq!(rl.check(), Verdict::Allow);
        }
        assert_eq!(rl.check(), Verdict::Reject);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_flood_closes() {
        let mut rl = RateLimiter::new(100.0, 200.0, 100.0);
        let mut verdicts = Vec::new();
        for _ in 0..400 {
            rl.begin_message();
            verdicts.push(rl.check());
        }
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            200
        );
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
    }

    /// One batch over the budget: its extra elements are rejected, one strike in all;
    /// only messages that go on over the limit use the strikes up.
    #[tokio::test(start_paused = true)]
    async fn one_large_batch_costs_one_strike() {
        let mut rl = RateLimiter::new(100.0, 200.0, 3.0);
        rl.begin_message();
        let verdicts: Vec<_> = (0..1000).map(|_| rl.check()).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            200
        );
        assert_eq!(
            verdicts[200..]
                .iter()
                .filter(|v| **v == Verdict::Reject)
                .count(),
            800
        );
        let mut last = Verdict::Allow;
        for _ in 0..4 {
            rl.begin_message();
            last = rl.check();
            if last == Verdict::Close {
                break;
            }
        }
        assert_eq!(
            last,
            Verdict::Close,
            "strikes 3 → 2 (the batch) → 1 → 0 → closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steady_client_never_closes() {
        let mut rl = RateLimiter::new(100.0, 200.0, 100.0);
        for _ in 0..2000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            assert_eq!(rl.check(), Verdict::Allow);
        }
    }
}
