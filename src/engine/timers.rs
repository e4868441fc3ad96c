//! One shared timer facility: a single task owning a `DelayQueue` keyed by what is due
//! (a user's next time crossing, a session's next inactivity/duration deadline, a
//! delivery's expiry). Scheduling a key again moves its one entry; cancelled entries are
//! removed from the queue, so they cost nothing later. Runs on tokio time, so tests
//! drive it with paused time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::delay_queue::{DelayQueue, Key};

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// Re-evaluate a user's time-dependent segments and goals.
    User(Arc<str>),
    /// A session's inactivity / session-duration deadline.
    Session(Arc<str>),
    /// A delivery's expiry: `(user, delivery)`.
    Expiry(Arc<str>, Arc<str>),
}

enum Cmd {
    Set(TimerKey, Instant),
    Cancel(TimerKey),
}

/// Handle to the timer task.
#[derive(Clone)]
pub struct Timers {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Timers {
    /// Starts the timer task; `fire` is called for every key that comes due.
    pub fn start(
        fire: impl Fn(TimerKey) + Send + 'static,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (Timers, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let task = tokio::spawn(async move {
            let mut queue: DelayQueue<TimerKey> = DelayQueue::new();
            let mut keys: HashMap<TimerKey, Key> = HashMap::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    cmd = rx.recv() => match cmd {
                        None => return,
                        Some(Cmd::Set(k, at)) => match keys.get(&k) {
                            Some(existing) => queue.reset_at(existing, at),
                            None => {
                                let qk = queue.insert_at(k.clone(), at);
                                keys.insert(k, qk);
                            }
                        },
                        Some(Cmd::Cancel(k)) => {
                            if let Some(qk) = keys.remove(&k) {
                                queue.remove(&qk);
                            }
                        }
                    },
                    Some(expired) = queue.next(), if !queue.is_empty() => {
                        let k = expired.into_inner();
                        keys.remove(&k);
                        fire(k);
                    }
                }
            }
        });
        (Timers { tx }, task)
    }

    /// Schedules `key` at `at` (replacing an earlier schedule of the same key).
    pub fn set(&self, key: TimerKey, at: Instant) {
        let _ = self.tx.send(Cmd::Set(key, at));
    }

    /// Schedules `key` after `delay`.
    pub fn set_in(&self, key: TimerKey, delay: Duration) {
        self.set(key, Instant::now() + delay);
    }

    /// Cancels `key`.
    pub fn cancel(&self, key: TimerKey) {
        let _ = self.tx.send(Cmd::Cancel(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn fires_in_order_reschedules_and_cancels() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f2 = fired.clone();
        let (t, _task) = Timers::start(move |k| f2.lock().unwrap().push(k), Default::default());
        let u = |s: &str| TimerKey::User(Arc::from(s));
        t.set_in(u("a"), Duration::from_secs(10));
        t.set_in(u("b"), Duration::from_secs(5));
        t.set_in(u("c"), Duration::from_secs(7));
        t.set_in(u("a"), Duration::from_secs(3)); // moved earlier: one entry
        t.cancel(u("c"));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(*fired.lock().unwrap(), vec![u("a"), u("b")]);
    }
}
