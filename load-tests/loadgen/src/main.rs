//! `beckon-loadgen`: the load generator for Beckon and its echo floor.
//!
//! `run` coordinates one scenario: it starts `--procs` worker processes (this same binary,
//! `worker` subcommand) that each open their share of the sessions from the given source
//! addresses, drives their phases over stdin/stdout, merges their HDR histograms, samples
//! the target process from /proc, prints a table and writes JSON. `compare` turns a
//! gateway result and a floor result into a Markdown table of ratios.

mod hist;
mod procstat;
mod proto;
mod worker;

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use worker::{epoch_us, Command, Report, WorkerCfg};

/// Beckon's dev-mode JWT secret (`beckon serve --dev`).
const DEV_SECRET: &str = "beckon-dev-secret-NOT-FOR-PRODUCTION";

#[derive(Parser)]
#[command(
    version,
    about = "Load generator for the Beckon gateway and its echo floor"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once from the command line
enum Cmd {
    /// Run one scenario against a target and report.
    Run(RunArgs),
    /// Markdown table of a gateway result against a floor result (ratio = gateway / floor).
    Compare { gateway: PathBuf, floor: PathBuf },
    /// Internal: one generator process, driven by `run` over stdin/stdout.
    #[command(hide = true)]
    Worker { cfg: String },
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// N idle authenticated sessions; target RSS per idle session.
    ConnectIdle,
    /// Events/s ladder over the sessions; ok (and message) latency per step.
    SteadyEvents,
    /// Sessions/s opened and welcomed.
    HandshakeRate,
    /// Every session drops at once and reconnects with resume.
    ReconnectStorm,
    /// A campaign that targets every live session is published (`PUT /v1/campaigns`);
    /// time until each session has its message. Beckon only (the floor has no campaigns).
    CampaignPublish,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// The Beckon gateway.
    Beckon,
    /// The echo floor (same framing, no Beckon logic).
    Echo,
}

#[derive(clap::Args, Debug, Clone, Serialize)]
struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// What is being measured (a label; both speak the same protocol).
    #[arg(long, value_enum, default_value = "beckon")]
    mode: Mode,
    /// WebSocket URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    /// HS256 secret for the tokens the generator mints.
    #[arg(long, env = "BECKON_JWT_SECRET", default_value = DEV_SECRET)]
    secret: String,
    /// Sessions in total (split over the processes).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Generator processes (each holds fewer than 20,000 sockets).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Source addresses, comma-separated; session i uses address i mod count.
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    sources: Vec<Ipv4Addr>,
    /// Sessions opened per second in total; 0 = as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Handshakes in flight per process.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// connect-idle: seconds to hold the sessions before the final sample.
    #[arg(long, default_value_t = 5.0)]
    hold_s: f64,
    /// steady-events: total events/s for each step of the ladder.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    rates: Vec<f64>,
    /// steady-events: measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// steady-events: unmeasured seconds before each step.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds after a step for the last answers; later ones count as missing.
    #[arg(long, default_value_t = 2.0)]
    grace_s: f64,
    /// A step is sustained when p99 ok latency is at most this, nothing is missing,
    /// no error frame came back and ≥ 95% of the target rate was acknowledged.
    #[arg(long, default_value_t = 10.0)]
    max_p99_ms: f64,
    /// Keep climbing the ladder after a step that is not sustained.
    #[arg(long)]
    keep_going: bool,
    /// Share of events sent as --trigger-event (expected to produce a `message`).
    #[arg(long, default_value_t = 0.0)]
    trigger_share: f64,
    #[arg(long, default_value = "lt_event")]
    event: String,
    #[arg(long, default_value = "lt_trigger")]
    trigger_event: String,
    /// reconnect-storm: seconds allowed for every session to be back.
    #[arg(long, default_value_t = 60.0)]
    storm_timeout_s: f64,
    /// Target process to sample from /proc (RSS, CPU).
    #[arg(long)]
    pid: Option<u32>,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Free-form label stored in the results.
    #[arg(long, default_value = "")]
    label: String,
    /// Runtime threads per generator process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Client read buffer per session, bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// User ids are PREFIX + session index (default: lt<pid>-).
    #[arg(long)]
    user_prefix: Option<String>,
    /// campaign-publish: the campaign's JSON body (it should deliver to every session).
    #[arg(long, env = "BECKON_LT_CAMPAIGN")]
    campaign: Option<String>,
    /// campaign-publish: the gateway's admin token.
    #[arg(long, env = "BECKON_ADMIN_TOKEN", default_value = "beckon-dev-admin")]
    admin_token: String,
    /// Exit non-zero when any session failed to connect or come back, or an event went
    /// unanswered (used on the floor by the smoke test: checks the harness itself).
    #[arg(long)]
    strict: bool,
}

/// One reported number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figure {
    name: String,
    value: f64,
    unit: String,
    /// `lower` or `higher` is better (or `info`).
    better: String,
}

fn fig(name: impl Into<String>, value: f64, unit: &str, better: &str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        better: better.into(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker { cfg } => worker::main(serde_json::from_str(&cfg)?),
        Cmd::Compare { gateway, floor } => compare(&gateway, &floor),
        Cmd::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(args)),
    }
}

/// The `host:port` of a ws:// URL, which must be loopback.
fn target_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = hostport
        .to_socket_addrs()?
        .find(|a| a.is_ipv4())
        .context("no IPv4 address for the target")?;
    if !addr.ip().is_loopback() {
        bail!("refusing non-loopback target {addr}");
    }
    Ok(addr)
}

struct Workers {
    children: Vec<Child>,
    stdin: Vec<ChildStdin>,
    lines: Vec<Lines<BufReader<ChildStdout>>>,
}

impl Workers {
    fn spawn(args: &RunArgs, target: SocketAddr) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let procs = args.procs.max(1);
        let prefix = args
            .user_prefix
            .clone()
            .unwrap_or_else(|| format!("lt{}-", std::process::id()));
        let mut w = Workers {
            children: Vec::new(),
            stdin: Vec::new(),
            lines: Vec::new(),
        };
        let mut first = 0;
        for i in 0..procs {
            let n = args.sessions / procs + usize::from(i < args.sessions % procs);
            let cfg = WorkerCfg {
                index: i,
                sessions: n,
                first_global: first,
                sources: args.sources.clone(),
                target,
                url: args.url.clone(),
                secret: args.secret.clone(),
                user_prefix: prefix.clone(),
                connect_rate: args.connect_rate / procs as f64,
                concurrency: args.concurrency,
                event: args.event.clone(),
                trigger_event: args.trigger_event.clone(),
                trigger_share: args.trigger_share,
                threads: args.threads,
                read_buffer: args.read_buffer,
            };
            first += n;
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .arg(serde_json::to_string(&cfg)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a generator process")?;
            w.stdin.push(child.stdin.take().expect("piped"));
            w.lines
                .push(BufReader::new(child.stdout.take().expect("piped")).lines());
            w.children.push(child);
        }
        Ok(w)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    /// Reads one `TAG {json}` line from every worker.
    async fn expect(&mut self, tag: &str, timeout: Duration) -> anyhow::Result<Vec<Report>> {
        let mut out = Vec::new();
        for (i, lines) in self.lines.iter_mut().enumerate() {
            let line = tokio::time::timeout(timeout, lines.next_line())
                .await
                .with_context(|| format!("worker {i}: no {tag} within {timeout:?}"))??
                .with_context(|| format!("worker {i} exited before {tag}"))?;
            let body = line
                .strip_prefix(tag)
                .with_context(|| format!("worker {i}: expected {tag}, got {line:.80}"))?;
            out.push(serde_json::from_str(body.trim())?);
        }
        Ok(out)
    }

    async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let line = format!("{}\n", serde_json::to_string(cmd)?);
        for s in &mut self.stdin {
            s.write_all(line.as_bytes()).await?;
            s.flush().await?;
        }
        Ok(())
    }

    async fn command(&mut self, cmd: &Command, timeout: Duration) -> anyhow::Result<Vec<Report>> {
        self.send(cmd).await?;
        self.expect("DONE", timeout).await
    }

    async fn exit(mut self) -> anyhow::Result<()> {
        let _ = self.command(&Command::Exit, Duration::from_secs(15)).await;
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
        Ok(())
    }
}

/// Sums counters and merges histograms of the workers' reports.
struct Merged {
    reports: Vec<Report>,
}

impl Merged {
    fn sum(&self, f: impl Fn(&Report) -> u64) -> u64 {
        self.reports.iter().map(f).sum()
    }
    fn hist(&self, f: impl Fn(&Report) -> &hist::Dump) -> hist::Summary {
        hist::summary(&hist::merge(self.reports.iter().map(f)))
    }
    fn errors(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for r in &self.reports {
            for (k, v) in &r.errors {
                *m.entry(k.clone()).or_insert(0) += v;
            }
        }
        m
    }
}

struct Sampler {
    t0: Instant,
    pid: Option<u32>,
}

impl Sampler {
    fn target(&self) -> Option<procstat::Sample> {
        self.pid
            .and_then(|p| procstat::sample(p, self.t0.elapsed().as_secs_f64()))
    }
    /// The generator processes together (RSS and CPU summed).
    fn generators(&self, pids: &[u32]) -> procstat::Sample {
        let at = self.t0.elapsed().as_secs_f64();
        let mut s = procstat::Sample {
            at_s: at,
            ..Default::default()
        };
        for p in pids {
            if let Some(x) = procstat::sample(*p, at) {
                s.rss_kib += x.rss_kib;
                s.hwm_kib += x.hwm_kib;
                s.threads += x.threads;
                s.cpu_s += x.cpu_s;
            }
        }
        s
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let target = target_of(&args.url)?;
    for s in &args.sources {
        if !s.is_loopback() {
            bail!("refusing non-loopback source address {s}");
        }
    }
    if args.sessions / args.procs.max(1) >= 19_500 {
        bail!("at most 19,500 sessions per generator process (20,000 open files): raise --procs");
    }
    let sampler = Sampler {
        t0: Instant::now(),
        pid: args.pid,
    };
    let mut figures: Vec<Figure> = Vec::new();
    let mut detail = serde_json::Map::new();

    let before = sampler.target();
    let mut workers = Workers::spawn(&args, target)?;
    let ready = Merged {
        reports: workers.expect("READY", Duration::from_secs(180)).await?,
    };
    let connected_at = sampler.target();
    let pids = workers.pids();
    let connected = ready.sum(|r| r.connected);
    let failed = ready.sum(|r| r.connect_failed);
    let first = ready
        .reports
        .iter()
        .map(|r| r.first_start_ms)
        .min()
        .unwrap_or(0);
    let last = ready
        .reports
        .iter()
        .map(|r| r.last_welcome_ms)
        .max()
        .unwrap_or(0);
    let window_s = (last.saturating_sub(first)) as f64 / 1000.0;
    let conn = ready.hist(|r| &r.connect);
    detail.insert(
        "connect".into(),
        json!({"connected": connected, "failed": failed, "window_s": window_s,
               "latency": conn, "errors": ready.errors()}),
    );
    figures.push(fig(
        "sessions connected",
        connected as f64,
        "sessions",
        "higher",
    ));
    figures.push(fig("connect failures", failed as f64, "sessions", "lower"));
    figures.push(fig(
        "handshakes/s",
        if window_s > 0.0 {
            connected as f64 / window_s
        } else {
            0.0
        },
        "sessions/s",
        "higher",
    ));
    figures.push(fig("connect+handshake p50", conn.p50_ms, "ms", "lower"));
    figures.push(fig("connect+handshake p99", conn.p99_ms, "ms", "lower"));
    figures.push(fig("connect+handshake max", conn.max_ms, "ms", "lower"));
    if let (Some(b), Some(a)) = (before, connected_at) {
        figures.push(fig(
            "target CPU during connect",
            procstat::cpu_percent(&b, &a),
            "% of a core",
            "lower",
        ));
    }

    let outcome = scenario(
        &args,
        &sampler,
        &mut workers,
        &pids,
        connected,
        before,
        &mut figures,
        &mut detail,
    )
    .await;
    workers.exit().await?;
    outcome?;

    let result = json!({
        "scenario": args.scenario,
        "mode": args.mode,
        "label": args.label,
        "args": args,
        "started_epoch_s": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "target_before": before,
        "figures": figures,
        "detail": detail,
    });
    print_table(&args, &figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if connected == 0 {
        bail!("no session connected");
    }
    if args.strict {
        let bad: Vec<&Figure> = figures
            .iter()
            .filter(|f| {
                matches!(
                    f.name.as_str(),
                    "connect failures"
                        | "storm: failed"
                        | "storm: not resumed (new session)"
                        | "publish: sessions without a message"
                ) && f.value > 0.0
            })
            .collect();
        if !bad.is_empty()
            || detail.get("steps").is_some_and(|s| {
                s.as_array()
                    .is_some_and(|a| a.iter().any(|x| x["missing"].as_u64() != Some(0)))
            })
        {
            bail!("strict: failures in a run that should have none: {bad:?}");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    args: &RunArgs,
    sampler: &Sampler,
    workers: &mut Workers,
    pids: &[u32],
    connected: u64,
    before: Option<procstat::Sample>,
    figures: &mut Vec<Figure>,
    detail: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let per = |kib: u64| kib as f64 / connected.max(1) as f64;
    match args.scenario {
        Scenario::ConnectIdle | Scenario::HandshakeRate => {
            let gen_connected = sampler.generators(pids);
            if args.scenario == Scenario::ConnectIdle {
                tokio::time::sleep(Duration::from_secs_f64(args.hold_s)).await;
            }
            let held = sampler.target();
            if let (Some(b), Some(a)) = (before, held) {
                figures.push(fig("target RSS before", b.rss_kib as f64, "KiB", "info"));
                figures.push(fig(
                    "target RSS with sessions",
                    a.rss_kib as f64,
                    "KiB",
                    "info",
                ));
                figures.push(fig(
                    "target RSS per idle session",
                    per(a.rss_kib.saturating_sub(b.rss_kib)),
                    "KiB",
                    "lower",
                ));
                figures.push(fig("target threads", a.threads as f64, "threads", "info"));
                detail.insert("target_held".into(), json!(a));
            }
            figures.push(fig(
                "generator RSS per session",
                per(gen_connected.rss_kib),
                "KiB",
                "info",
            ));
        }
        Scenario::SteadyEvents => {
            let mut best = 0.0f64;
            let mut steps = Vec::new();
            for &rate in &args.rates {
                let procs = workers.children.len() as f64;
                let (t0, g0) = (sampler.target(), sampler.generators(pids));
                let m = Merged {
                    reports: workers
                        .command(
                            &Command::Events {
                                rate: rate / procs,
                                duration_s: args.duration_s,
                                warmup_s: args.warmup_s,
                                grace_s: args.grace_s,
                            },
                            Duration::from_secs_f64(
                                args.warmup_s + args.duration_s + args.grace_s + 60.0,
                            ),
                        )
                        .await?,
                };
                let (t1, g1) = (sampler.target(), sampler.generators(pids));
                let ok = m.hist(|r| &r.ok);
                let msg = m.hist(|r| &r.message);
                let lag = m.hist(|r| &r.lag);
                let acked = m.sum(|r| r.oks_measured);
                let achieved = acked as f64 / args.duration_s;
                let missing = m.sum(|r| r.missing);
                let errors = m.errors();
                let n_errors: u64 = errors.values().sum();
                let sustained = missing == 0
                    && n_errors == 0
                    && ok.count > 0
                    && ok.p99_ms <= args.max_p99_ms
                    && achieved >= 0.95 * rate;
                if sustained {
                    best = best.max(rate);
                }
                let target_cpu = match (t0, t1) {
                    (Some(a), Some(b)) => procstat::cpu_percent(&a, &b),
                    _ => f64::NAN,
                };
                let gen_cpu = procstat::cpu_percent(&g0, &g1);
                let r = rate as u64;
                figures.push(fig(format!("ok p50 @ {r}/s"), ok.p50_ms, "ms", "lower"));
                figures.push(fig(format!("ok p99 @ {r}/s"), ok.p99_ms, "ms", "lower"));
                figures.push(fig(
                    format!("acked/s @ {r}/s"),
                    achieved,
                    "events/s",
                    "higher",
                ));
                if args.trigger_share > 0.0 {
                    figures.push(fig(
                        format!("event→message p50 @ {r}/s"),
                        msg.p50_ms,
                        "ms",
                        "lower",
                    ));
                    figures.push(fig(
                        format!("event→message p99 @ {r}/s"),
                        msg.p99_ms,
                        "ms",
                        "lower",
                    ));
                }
                if !target_cpu.is_nan() {
                    figures.push(fig(
                        format!("target CPU @ {r}/s"),
                        target_cpu,
                        "% of a core",
                        "lower",
                    ));
                }
                eprintln!(
                    "step {r}/s: acked {achieved:.0}/s ok p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.1} ms, missing {missing}, errors {n_errors}, send lag p99 {:.2} ms, target CPU {target_cpu:.0}%, generator CPU {gen_cpu:.0}% → {}",
                    ok.p50_ms, ok.p99_ms, ok.p999_ms, ok.max_ms, lag.p99_ms,
                    if sustained { "sustained" } else { "NOT sustained" }
                );
                steps.push(json!({
                    "rate": rate, "achieved": achieved, "sent": m.sum(|r| r.sent_measured),
                    "ok": ok, "message": msg, "messages": m.sum(|r| r.messages),
                    "send_lag": lag, "missing": missing, "late_oks": m.sum(|r| r.late_oks),
                    "errors": errors, "target_cpu_percent": target_cpu,
                    "generator_cpu_percent": gen_cpu, "sustained": sustained,
                    "alive": m.sum(|r| r.alive),
                }));
                if !sustained && !args.keep_going {
                    break;
                }
            }
            figures.push(fig("max sustained rate", best, "events/s", "higher"));
            detail.insert("steps".into(), json!(steps));
        }
        Scenario::CampaignPublish => {
            let Some(body) = args.campaign.clone() else {
                bail!("campaign-publish needs --campaign '<campaign JSON>'");
            };
            let timeout_s = args.storm_timeout_s;
            workers.send(&Command::Collect { timeout_s }).await?;
            workers.expect("ARMED", Duration::from_secs(30)).await?;
            let t0 = sampler.target();
            let put_start = epoch_us();
            let path = format!("/v1/campaigns/lt-publish-{}", std::process::id());
            let target = target_of(&args.url)?;
            let (status, answer) =
                http_request("PUT", target, &path, &args.admin_token, &body).await?;
            let put_ms = (epoch_us() - put_start) as f64 / 1000.0;
            if !(200..300).contains(&status) {
                bail!("PUT {path} answered {status}: {answer:.300}");
            }
            let m = Merged {
                reports: workers
                    .expect("DONE", Duration::from_secs_f64(timeout_s + 60.0))
                    .await?,
            };
            let t1 = sampler.target();
            let mut rel: Vec<f64> = m
                .reports
                .iter()
                .flat_map(|r| r.arrivals_us.iter())
                .map(|&a| a.saturating_sub(put_start) as f64 / 1000.0)
                .collect();
            rel.sort_by(|a, b| a.total_cmp(b));
            let alive = m.sum(|r| r.alive);
            let q = |p: f64| -> f64 {
                if rel.is_empty() {
                    return 0.0;
                }
                rel[((rel.len() - 1) as f64 * p).round() as usize]
            };
            let (first, last) = (q(0.0), q(1.0));
            // The gateway's own timing of the fan-out (its /metrics): every user in memory
            // evaluated and its writes submitted, then durable and sent.
            if matches!(args.mode, Mode::Beckon) {
                let (_, metrics) = http_request("GET", target, "/metrics", &args.admin_token, "")
                    .await
                    .unwrap_or_default();
                let metric_ms = |name: &str| -> f64 {
                    metrics
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                        .map_or(0.0, |s| s * 1000.0)
                };
                figures.push(fig(
                    "publish: evaluated (gateway)",
                    metric_ms("beckon_fanout_evaluate_seconds_sum"),
                    "ms",
                    "lower",
                ));
                figures.push(fig(
                    "publish: durable and sent (gateway)",
                    metric_ms("beckon_fanout_seconds_sum"),
                    "ms",
                    "lower",
                ));
            }
            figures.push(fig("publish: PUT answered", put_ms, "ms", "lower"));
            figures.push(fig(
                "publish: messages received",
                rel.len() as f64,
                "messages",
                "higher",
            ));
            figures.push(fig(
                "publish: sessions without a message",
                alive.saturating_sub(rel.len() as u64) as f64,
                "sessions",
                "lower",
            ));
            figures.push(fig("publish: first message", first, "ms", "lower"));
            figures.push(fig("publish: message p50", q(0.5), "ms", "lower"));
            figures.push(fig("publish: message p99", q(0.99), "ms", "lower"));
            figures.push(fig("publish: last message", last, "ms", "lower"));
            figures.push(fig(
                "publish: flush rate (first → last)",
                if last > first {
                    (rel.len() as f64 - 1.0) / ((last - first) / 1000.0)
                } else {
                    0.0
                },
                "messages/s",
                "higher",
            ));
            if let (Some(a), Some(b)) = (t0, t1) {
                figures.push(fig(
                    "target CPU during publish",
                    procstat::cpu_percent(&a, &b),
                    "% of a core",
                    "lower",
                ));
            }
            detail.insert(
                "publish".into(),
                json!({"put_ms": put_ms, "received": rel.len(), "alive": alive,
                       "errors": m.errors()}),
            );
        }
        Scenario::ReconnectStorm => {
            let t0 = sampler.target();
            let m = Merged {
                reports: workers
                    .command(
                        &Command::Storm {
                            timeout_s: args.storm_timeout_s,
                        },
                        Duration::from_secs_f64(args.storm_timeout_s + 60.0),
                    )
                    .await?,
            };
            let t1 = sampler.target();
            let s = m.hist(|r| &r.storm);
            let resumed = m.sum(|r| r.storm_resumed);
            let new = m.sum(|r| r.storm_new);
            let failed = m.sum(|r| r.storm_failed);
            figures.push(fig("storm: all back", s.max_ms / 1000.0, "s", "lower"));
            figures.push(fig("storm: reconnect p50", s.p50_ms, "ms", "lower"));
            figures.push(fig("storm: reconnect p99", s.p99_ms, "ms", "lower"));
            figures.push(fig("storm: resumed", resumed as f64, "sessions", "higher"));
            figures.push(fig(
                "storm: not resumed (new session)",
                new as f64,
                "sessions",
                "lower",
            ));
            figures.push(fig("storm: failed", failed as f64, "sessions", "lower"));
            figures.push(fig(
                "storm: reconnects/s",
                (resumed + new) as f64 / (s.max_ms / 1000.0).max(0.001),
                "sessions/s",
                "higher",
            ));
            if let (Some(a), Some(b)) = (t0, t1) {
                figures.push(fig(
                    "target CPU during storm",
                    procstat::cpu_percent(&a, &b),
                    "% of a core",
                    "lower",
                ));
            }
            detail.insert(
                "storm".into(),
                json!({"latency": s, "resumed": resumed, "new": new, "failed": failed,
                       "retries": m.sum(|r| r.storm_retries), "errors": m.errors()}),
            );
            if failed > 0 || resumed + new == 0 {
                eprintln!("storm: {failed} sessions did not come back");
            }
        }
    }
    Ok(())
}

/// A bare HTTP/1.1 PUT with a bearer token (the one admin call the harness makes).
async fn http_request(
    method: &str,
    target: SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(target).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status in the answer")?;
    Ok((status, text))
}

fn print_table(args: &RunArgs, figures: &[Figure]) {
    println!(
        "\n{:?} against {:?} ({}), {} sessions over {} process(es), {} source address(es)",
        args.scenario,
        args.mode,
        args.url,
        args.sessions,
        args.procs,
        args.sources.len()
    );
    println!("{:<40} {:>14}  unit", "figure", "value");
    for f in figures {
        println!("{:<40} {:>14.3}  {}", f.name, f.value, f.unit);
    }
    println!();
}

fn compare(gateway: &PathBuf, floor: &PathBuf) -> anyhow::Result<()> {
    let read = |p: &PathBuf| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        )?)
    };
    let (g, f) = (read(gateway)?, read(floor)?);
    let figs = |v: &serde_json::Value| -> Vec<Figure> {
        serde_json::from_value(v["figures"].clone()).unwrap_or_default()
    };
    let floor_figs = figs(&f);
    println!(
        "| {} | gateway | floor | gateway / floor |\n|---|---:|---:|---:|",
        g["scenario"].as_str().unwrap_or("?")
    );
    for gf in figs(&g) {
        let ff = floor_figs.iter().find(|x| x.name == gf.name);
        let (fv, ratio) = match ff {
            Some(ff) if ff.value != 0.0 => (
                format!("{:.2}", ff.value),
                format!("{:.2}", gf.value / ff.value),
            ),
            Some(ff) => (format!("{:.2}", ff.value), "–".into()),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {} ({}) | {:.2} | {} | {} |",
            gf.name, gf.unit, gf.value, fv, ratio
        );
    }
    Ok(())
}
