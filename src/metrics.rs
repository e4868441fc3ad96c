//! Prometheus metrics, one registry per gateway instance (so tests can run several).
//! Labels are low-cardinality: frame types, error and close codes; never user ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set with one `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Frame type.
    pub r#type: &'static str,
}

/// Label set with one `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Error or close code.
    pub code: &'static str,
}

/// Label set with one `door` label (where an event came in).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoorLabel {
    /// `ws`, `rest` or `segment`.
    pub door: &'static str,
}

/// All gateway metrics.
pub struct Metrics {
    registry: Registry,
    /// Live WebSocket sessions.
    pub sessions: Gauge,
    /// Open TCP connections.
    pub connections: Gauge,
    /// Client frames received, by type (batch elements count one each).
    pub frames_in: Family<TypeLabel, Counter>,
    /// Server frames sent, by type.
    pub frames_out: Family<TypeLabel, Counter>,
    /// Error frames sent, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Sessions closed by the server, by close code.
    pub closes: Family<CodeLabel, Counter>,
    /// Events applied, by door.
    pub events: Family<DoorLabel, Counter>,
    /// Duplicate ids answered without re-applying.
    pub duplicates: Counter,
    /// Frame received to `ok` sent.
    pub ack_seconds: Histogram,
    /// Store group-commit latency (the transaction; with fsync on, not its fsync).
    pub store_commit_seconds: Histogram,
    /// The WAL fdatasync that makes committed groups durable (fsync on).
    pub store_sync_seconds: Histogram,
    /// Writes per group commit.
    pub store_commit_ops: Histogram,
    /// A write's submit to durable: its wait for the writer, its group's commit and the
    /// WAL sync that makes it durable.
    pub store_write_seconds: Histogram,
    /// RESTART checkpoints (the WAL over its limit): how long each held the writer.
    pub store_wal_restart_seconds: Histogram,
    /// Failed store writes.
    pub store_errors: Counter,
    /// Errors from accept() (e.g. out of file descriptors).
    pub accept_errors: Counter,
    /// Connections refused because `max_connections` was reached or fds ran out.
    pub connections_refused: Counter,
    /// Sessions closed because their outbox overflowed.
    pub slow_consumers: Counter,
    /// Campaign decisions by outcome.
    pub decisions: Family<OutcomeLabel, Counter>,
    /// A definition change re-evaluating every user in memory: until every user's step
    /// was computed and submitted.
    pub fanout_evaluate_seconds: Histogram,
    /// The same until every step was durable and its messages sent.
    pub fanout_seconds: Histogram,
}

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Decision outcome.
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("beckon");
        let m = Metrics {
            sessions: Gauge::default(),
            connections: Gauge::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            errors: Family::default(),
            closes: Family::default(),
            events: Family::default(),
            duplicates: Counter::default(),
            ack_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_commit_ops: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            store_write_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_wal_restart_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_errors: Counter::default(),
            accept_errors: Counter::default(),
            connections_refused: Counter::default(),
            slow_consumers: Counter::default(),
            decisions: Family::default(),
            fanout_evaluate_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            fanout_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register("sessions", "Live WebSocket sessions", m.sessions.clone());
        registry.register("connections", "Open TCP connections", m.connections.clone());
        registry.register(
            "frames_in",
            "Client frames received by type",
            m.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Server frames sent by type",
            m.frames_out.clone(),
        );
        registry.register("errors", "Error frames sent by code", m.errors.clone());
        registry.register(
            "closes",
            "Sessions closed by the server by close code",
            m.closes.clone(),
        );
        registry.register("events", "Events applied by door", m.events.clone());
        registry.register(
            "duplicates",
            "Duplicate client ids answered without re-applying",
            m.duplicates.clone(),
        );
        registry.register(
            "ack_latency_seconds",
            "Client frame received to ok sent",
            m.ack_seconds.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Store group-commit latency (the transaction, without its fsync)",
            m.store_commit_seconds.clone(),
        );
        registry.register(
            "store_sync_seconds",
            "WAL fdatasync making committed groups durable (fsync on)",
            m.store_sync_seconds.clone(),
        );
        registry.register(
            "store_commit_ops",
            "Writes per group commit",
            m.store_commit_ops.clone(),
        );
        registry.register(
            "store_write_seconds",
            "A write's submit to durable: its wait for the writer, its group's commit and fsync",
            m.store_write_seconds.clone(),
        );
        registry.register(
            "store_wal_restart_seconds",
            "WAL over its limit: time each RESTART checkpoint held the store writer",
            m.store_wal_restart_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store writes",
            m.store_errors.clone(),
        );
        registry.register("accept_errors", "accept() errors", m.accept_errors.clone());
        registry.register(
            "connections_refused",
            "Connections refused at a limit",
            m.connections_refused.clone(),
        );
        registry.register(
            "slow_consumers",
            "Sessions closed for outbox overflow",
            m.slow_consumers.clone(),
        );
        registry.register(
            "decisions",
            "Campaign decisions by outcome",
            m.decisions.clone(),
        );
        registry.register(
            "fanout_evaluate_seconds",
            "Definition change: every user in memory evaluated and its writes submitted",
            m.fanout_evaluate_seconds.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Definition change: every user in memory evaluated, durable and its messages sent",
            m.fanout_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Times a re-evaluation of every user in memory.
    pub fn observe_fanout(&self, evaluated: std::time::Duration, done: std::time::Duration) {
        self.fanout_evaluate_seconds
            .observe(evaluated.as_secs_f64());
        self.fanout_seconds.observe(done.as_secs_f64());
    }

    /// OpenMetrics text exposition (`application/openmetrics-text; version=1.0.0`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Prometheus text exposition (`text/plain; version=0.0.4`): the OpenMetrics text
    /// with each counter's `# HELP`/`# TYPE` named as its samples are (`…_total`; in
    /// OpenMetrics they name the family without the suffix) and no `# EOF`. These
    /// metrics use only counters, gauges and histograms, which is all it takes.
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }

    /// Counts an error frame.
    pub fn error(&self, code: crate::protocol::ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts a server-initiated close.
    pub fn close(&self, code: crate::protocol::CloseCode) {
        self.closes
            .get_or_create(&CodeLabel { code: code.label() })
            .inc();
    }
}

/// See [`Metrics::render_prometheus`].
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
