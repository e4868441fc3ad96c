//! Engine benchmarks (criterion, in-process, no sockets, no store commits):
//! - `event/10k_campaigns_10_listening`: one event with 10,000 active campaigns of which
//!   10 listen to that event name (each with a property filter), user capped → the
//!   steady-state cost of evaluating an event.
//! - `event/delivering`: the same with one delivery decided per event.
//! - `event_1k/…`: 1,000 active campaigns over 100 event names: an event 10 of them
//!   listen to (user capped), and an event none listens to (most events).
//! - `attributes/1k_segments_10_dependent`: an attribute change re-evaluating the 10
//!   segments (of 1,000) that read it.
//! - `publish/goal_campaign_19k_users`: publishing a goal-condition campaign evaluated
//!   for 19,000 users held in memory (condition false: evaluation without writes).
//!
//! Run: `cargo bench --bench engine`; `cargo bench --bench engine -- event_1k` runs one
//! group, and skips the other groups' set-up (10,000 campaigns take a minute to load).

use std::sync::Arc;
use std::time::{Duration, Instant};

use beckon::engine;
use beckon::profile::{Mutation, UserState};
use beckon::{Clock, Config};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};

/// Whether criterion's name filter (a substring, in practice) can select one of `ids`:
/// a group whose benchmarks are all filtered out skips its set-up. An option criterion
/// takes a value for is skipped with its value; a filter that looks like a regular
/// expression selects everything.
fn selected(ids: &[&str]) -> bool {
    const WITH_VALUE: &[&str] = &[
        "--color",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            filter = Some(a.as_str());
            break;
        }
        i += 1;
    }
    match filter {
        None => true,
        Some(f) if f.contains(|c: char| "\\^$.*+?()[]{}|".contains(c)) => true,
        Some(f) => ids.iter().any(|id| id.contains(f)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn app(rt: &tokio::runtime::Runtime) -> (beckon::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().into(),
        ..Config::default()
    };
    cfg.jwt.secret = Some("bench".into());
    cfg.admin_token = Some("bench".into());
    cfg.store.fsync = false;
    let running = rt.block_on(beckon::start(cfg, Clock::system())).unwrap();
    (running, dir)
}

fn event(name: &str, props: Value) -> Mutation {
    Mutation::Event {
        id: None,
        name: name.into(),
        properties: props.as_object().cloned().unwrap_or_default(),
        at: None,
    }
}

fn campaign(id: &str, event: &str, plan: &str, max_per_user: Option<u64>) -> Value {
    json!({"id":id,"status":"active",
        "trigger":{"type":"event","event":event,"where":{"prop":"plan","op":"eq","value":plan}},
        "audience":{"conditions":{"attr":"tier","op":"in","value":["gold","silver"]}},
        "frequency":{"max_per_user":max_per_user},
        "variants":[{"id":"a","weight":1,"message":{"kind":"banner","body":"Hi {{ user.first_name | default: \"there\" }}"}}]})
}

/// `n` capped event campaigns spread over `n / 10` event names (10 listen to `e0`), and
/// a gold-tier user on whom the 10 already delivered (capped from then on).
fn capped_setup(
    rt: &tokio::runtime::Runtime,
    app: &Arc<beckon::App>,
    n: usize,
) -> (Arc<str>, UserState, Value) {
    rt.block_on(async {
        for i in 0..n {
            let ev = format!("e{}", i % (n / 10));
            let id = format!("c{i}");
            engine::put_campaign(app, &id, &campaign(&id, &ev, "pro", Some(1)))
                .await
                .unwrap();
        }
    });
    let user: Arc<str> = Arc::from("bench-user");
    let mut state = UserState::default();
    state.attributes.insert("tier".into(), json!("gold"));
    let props = json!({"plan":"pro","n":1});
    // Warm: the first event delivers once per listening campaign, then all are capped.
    for _ in 0..20 {
        engine::step_detached(app, &user, &mut state, event("e0", props.clone()));
    }
    (user, state, props)
}

fn bench_events(c: &mut Criterion) {
    if !selected(&["event/10k_campaigns_10_listening", "event/delivering"]) {
        return;
    }
    let rt = runtime();
    let (running, _dir) = app(&rt);
    let app = running.app.clone();
    let (user, mut state, props) = capped_setup(&rt, &app, 10_000);
    let mut g = c.benchmark_group("event");
    g.bench_function("10k_campaigns_10_listening", |b| {
        b.iter(|| engine::step_detached(&app, &user, &mut state, event("e0", props.clone())))
    });
    rt.block_on(async {
        for i in 0..10 {
            let id = format!("d{i}");
            engine::put_campaign(&app, &id, &campaign(&id, "e1", "pro", None))
                .await
                .unwrap();
        }
    });
    let mut fresh = UserState::default();
    fresh.attributes.insert("tier".into(), json!("gold"));
    g.bench_function("delivering", |b| {
        b.iter(|| {
            let r = engine::step_detached(&app, &user, &mut fresh, event("e1", props.clone()));
            fresh.engine.pending.clear();
            fresh.engine.caps.clear();
            r
        })
    });
    g.finish();
    rt.block_on(running.shutdown());
}

fn bench_events_1k(c: &mut Criterion) {
    if !selected(&["event_1k/10_listening_capped", "event_1k/none_listening"]) {
        return;
    }
    let rt = runtime();
    let (running, _dir) = app(&rt);
    let app = running.app.clone();
    let (user, mut state, props) = capped_setup(&rt, &app, 1_000);
    let mut g = c.benchmark_group("event_1k");
    g.bench_function("10_listening_capped", |b| {
        b.iter(|| engine::step_detached(&app, &user, &mut state, event("e0", props.clone())))
    });
    g.bench_function("none_listening", |b| {
        b.iter(|| {
            engine::step_detached(
                &app,
                &user,
                &mut state,
                event("page_scrolled", props.clone()),
            )
        })
    });
    g.finish();
    rt.block_on(running.shutdown());
}

fn bench_segments(c: &mut Criterion) {
    if !selected(&["attributes/1k_segments_10_dependent"]) {
        return;
    }
    let rt = runtime();
    let (running, _dir) = app(&rt);
    let app = running.app.clone();
    rt.block_on(async {
        for i in 0..1000 {
            let attr = if i % 100 == 0 { "plan".to_string() } else { format!("a{i}") };
            let seg = json!({"conditions":{"all":[{"attr":attr,"op":"eq","value":"pro"},{"event":format!("x{i}"),"count":{"op":"eq","value":0}}]}});
            engine::put_segment(&app, &format!("s{i}"), &seg).await.unwrap();
        }
    });
    let user: Arc<str> = Arc::from("seg-user");
    let mut state = UserState::default();
    let mut flip = false;
    c.bench_function("attributes/1k_segments_10_dependent", |b| {
        b.iter(|| {
            flip = !flip;
            let mut attrs = Map::new();
            attrs.insert("plan".into(), json!(if flip { "pro" } else { "free" }));
            engine::step_detached(
                &app,
                &user,
                &mut state,
                Mutation::Attributes {
                    id: None,
                    attributes: attrs,
                    trusted: true,
                },
            )
        })
    });
    rt.block_on(running.shutdown());
}

fn bench_publish(c: &mut Criterion) {
    if !selected(&["publish/goal_campaign_19k_users"]) {
        return;
    }
    let rt = runtime();
    let (running, _dir) = app(&rt);
    let app = running.app.clone();
    let handles = rt.block_on(async {
        let mut hs = Vec::new();
        for i in 0..19_000 {
            hs.push(app.profiles.attach(&format!("u{i}")).await.unwrap());
        }
        hs
    });
    let mut g = c.benchmark_group("publish");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut n = 0;
    g.bench_function("goal_campaign_19k_users", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("goal{n}");
                let body = json!({"status":"active","trigger":{"type":"goal","conditions":{"event":"never_happens","count":{"op":"gte","value":1}}},
                    "variants":[{"id":"a","message":{"kind":"banner","body":"x"}}]});
                let t = Instant::now();
                rt.block_on(engine::put_campaign(&app, &id, &body)).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    drop(handles);
    rt.block_on(running.shutdown());
}

criterion_group!(
    benches,
    bench_events,
    bench_events_1k,
    bench_segments,
    bench_publish
);
criterion_main!(benches);
