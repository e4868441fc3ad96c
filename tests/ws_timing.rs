//! Time-driven behaviour on paused tokio time: hello timeout, heartbeat, token expiry
//! and refresh, resume window expiry. No real sleeps: time is advanced explicitly.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn no_hello_within_the_timeout_closes_4000() {
    let srv = start().await;
    let mut ws = srv.connect().await;
    settle().await;
    advance(Duration::from_millis(9_900)).await;
    // Still open just before the deadline: a late hello would still be accepted.
    let mut ws2 = srv.connect().await;
    settle().await;
    advance(Duration::from_millis(200)).await;
    assert_eq!(expect_close(&mut ws).await, Some(4000));
    send(
        &mut ws2,
        json!({"type":"hello","token":srv.token("u", 600)}),
    )
    .await;
    assert_eq!(recv(&mut ws2).await["type"], "welcome");
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_closed_after_two_heartbeats() {
    let srv = start_with(|c| c.session.heartbeat = Duration::from_secs(10)).await;
    let (mut ws, welcome) = srv.hello("u_hb").await;
    assert_eq!(welcome["heartbeat_ms"], 10_000);
    // We do not read, so the client's WebSocket never answers the server's pings.
    advance(Duration::from_secs(19)).await;
    assert_eq!(
        srv.app().registry.live_count("u_hb"),
        1,
        "still open before two intervals"
    );
    advance(Duration::from_secs(2)).await;
    assert_eq!(expect_close(&mut ws).await, Some(4000));
}

#[tokio::test(start_paused = true)]
async fn responsive_peer_stays_open_across_many_heartbeats() {
    let srv = start_with(|c| c.session.heartbeat = Duration::from_secs(10)).await;
    let (mut ws, _) = srv.hello("u_alive").await;
    for i in 0..10 {
        advance(Duration::from_secs(10)).await;
        // Reading lets the client answer the ping; the activity keeps the session busy.
        send(&mut ws, json!({"type":"activity","id":format!("a{i}")})).await;
        assert_eq!(recv(&mut ws).await["type"], "ok");
    }
    assert_eq!(srv.app().registry.live_count("u_alive"), 1);
}

#[tokio::test(start_paused = true)]
async fn token_expiry_closes_4002_with_5s_leeway() {
    let srv = start().await;
    let (mut ws, _) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_exp", 30)}))
        .await;
    advance(Duration::from_secs(34)).await;
    assert_eq!(
        srv.app().registry.live_count("u_exp"),
        1,
        "open inside the leeway"
    );
    advance(Duration::from_secs(3)).await;
    assert_eq!(expect_close(&mut ws).await, Some(4002));
}

#[tokio::test(start_paused = true)]
async fn auth_before_exp_keeps_the_session() {
    // A long heartbeat so only the token can end this quiet session.
    let srv = start_with(|c| c.session.heartbeat = Duration::from_secs(3600)).await;
    let (mut ws, _) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_ref", 30)}))
        .await;
    advance(Duration::from_secs(20)).await;
    send(
        &mut ws,
        json!({"type":"auth","id":"r","token":srv.token("u_ref", 60)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["r"]}));
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        srv.app().registry.live_count("u_ref"),
        1,
        "the refreshed token is in force"
    );
    advance(Duration::from_secs(40)).await;
    assert_eq!(expect_close(&mut ws).await, Some(4002));
}

/// CPU time this thread used (the test's runtime, which runs the gateway's sessions),
/// from /proc, in ticks of 10 ms.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(start_paused = true)]
async fn auth_with_a_token_without_exp_lifts_the_deadline_and_the_session_idles() {
    let srv = start_with(|c| c.session.heartbeat = Duration::from_secs(3600)).await;
    let (mut ws, _) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_noexp", 30)}))
        .await;
    let no_exp = beckon::auth::mint_hs256(
        SECRET,
        "u_noexp",
        Default::default(),
        srv.clock.now_secs(),
        None,
    );
    send(&mut ws, json!({"type":"auth","id":"r","token":no_exp})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["r"]}));
    // Past the first token's expiry: nothing to close, and nothing to wake up for. (A
    // timer left at the old instant fires in a loop: the CPU check fails, or the paused
    // clock never gets to idle and the watchdog does.)
    let rest = async {
        advance(Duration::from_secs(60)).await;
        let before = cpu_ticks();
        real_wait(500).await;
        let used = cpu_ticks() - before;
        assert!(
            used <= 10,
            "an idle session burnt {used}0 ms of CPU in 500 ms"
        );
        send(&mut ws, json!({"type":"activity","id":"a"})).await;
        assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["a"]}));
    };
    tokio::select! {
        () = rest => {}
        _ = real_timer(20_000) => panic!("the session kept the runtime busy for 20 s"),
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_refills_over_time() {
    let srv = start_with(|c| {
        c.limits.frames_per_sec = 10.0;
        c.limits.frames_burst = 10.0;
    })
    .await;
    let (mut ws, _) = srv.hello("u_rl").await;
    let batch: Vec<_> = (0..11)
        .map(|i| json!({"type":"activity","id":format!("x{i}")}))
        .collect();
    send(&mut ws, serde_json::Value::Array(batch)).await;
    let err = recv(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("rate_limited"), Some("x10"))
    );
    assert_eq!(recv(&mut ws).await["ids"].as_array().unwrap().len(), 10);
    advance(Duration::from_secs(1)).await;
    let batch: Vec<_> = (0..10)
        .map(|i| json!({"type":"activity","id":format!("y{i}")}))
        .collect();
    send(&mut ws, serde_json::Value::Array(batch)).await;
    assert_eq!(recv(&mut ws).await["ids"].as_array().unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn detached_session_expires_after_resume_ttl_and_records_session_end() {
    let srv = start_with(|c| c.session.resume_ttl = Duration::from_secs(60)).await;
    let (ws, welcome) = srv.hello("u_ttl").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    drop(ws);
    settle().await;
    advance(Duration::from_secs(30)).await;
    srv.app().expire_sessions().await;
    assert!(
        srv.app().registry.get(&session).is_some(),
        "resumable inside the window"
    );
    advance(Duration::from_secs(31)).await;
    srv.app().expire_sessions().await;
    assert!(srv.app().registry.get(&session).is_none());
    let (_, user) = srv.get_user("u_ttl").await;
    assert_eq!(user["aggregates"]["$session_end"]["count"], 1);
    let (_ws, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_ttl", 60),"resume":{"session":session,"last_seq":0}}))
        .await;
    assert_eq!(w["resumed"], false, "an expired session is not resumed");
}

/// Past `resume_ttl` a detached session is not resumed, even before the sweep that ends
/// it has run (it used to be resumed from memory until then).
#[tokio::test(start_paused = true)]
async fn a_session_past_resume_ttl_is_not_resumed_before_the_sweep() {
    let srv = start_with(|c| c.session.resume_ttl = Duration::from_secs(60)).await;
    let (ws, welcome) = srv.hello("u_ttl2").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    drop(ws);
    settle().await;
    advance(Duration::from_secs(61)).await;
    assert!(srv.app().registry.get(&session).is_some(), "not swept yet");
    let (_ws, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_ttl2", 600),"resume":{"session":session,"last_seq":0}}))
        .await;
    assert_eq!(w["resumed"], false);
    assert_ne!(w["session"].as_str(), Some(session.as_str()));
}

/// A gateway with a 60 s resume window and a campaign `hi` on the event `go`.
async fn resume_window_60s_with_a_campaign() -> TestServer {
    let srv = start_with(|c| {
        c.session.resume_ttl = Duration::from_secs(60);
        c.session.heartbeat = Duration::from_secs(3600);
    })
    .await;
    srv.put_ok(
        "/v1/campaigns/hi",
        json!({"id":"hi","name":"hi","status":"active",
               "trigger":{"type":"event","event":"go"},
               "variants":[{"id":"a","weight":1,"message":{"kind":"banner","body":"Hi"}}]}),
    )
    .await;
    srv
}

/// `user` gets `hi`'s message and goes away without acking it; returns the message.
async fn delivered_then_gone(srv: &TestServer, user: &str) -> serde_json::Value {
    let (mut ws, _) = srv.hello(user).await;
    send(&mut ws, json!({"type":"track","id":"g1","event":"go"})).await;
    let m = recv_message(&mut ws).await;
    drop(ws);
    settle().await;
    m
}

/// A session that is not resumed within `resume_ttl` ends; what it was sent but never
/// acked waits for the user's next session, with the same delivery id (at least once).
#[tokio::test(start_paused = true)]
async fn unacked_deliveries_of_an_expired_session_go_to_the_next_one() {
    let srv = resume_window_60s_with_a_campaign().await;
    let m = delivered_then_gone(&srv, "u_lost").await;
    advance(Duration::from_secs(61)).await;
    srv.app().expire_sessions().await;
    let (mut ws, w) = srv.hello("u_lost").await;
    assert_eq!(w["resumed"], false);
    let again = recv_message(&mut ws).await;
    assert_eq!(again["delivery"], m["delivery"]);
    assert_eq!(again["message"]["body"], "Hi");
}

/// The same, with another session of the user live when the first one's window
/// passes: the unacked delivery goes to it at once.
#[tokio::test(start_paused = true)]
async fn unacked_deliveries_of_an_expired_session_go_to_a_live_one() {
    let srv = resume_window_60s_with_a_campaign().await;
    let m = delivered_then_gone(&srv, "u_moved").await;
    let (mut other, _) = srv.hello("u_moved").await;
    advance(Duration::from_secs(61)).await;
    srv.app().expire_sessions().await;
    assert_eq!(recv_message(&mut other).await["delivery"], m["delivery"]);
}

/// A session live for longer than `resume_ttl` keeps its stored row and unacked
/// deliveries through the retention pass (its row's `updated_at` is refreshed while it
/// is live): after a crash it can still be resumed. Retention used to delete both.
#[tokio::test(start_paused = true)]
async fn a_long_lived_session_keeps_its_stored_outbox_through_retention() {
    let srv = resume_window_60s_with_a_campaign().await;
    let (mut ws, welcome) = srv.hello_long("u_long", json!({})).await;
    let session = welcome["session"].as_str().unwrap().to_string();
    send(&mut ws, json!({"type":"track","id":"g1","event":"go"})).await;
    let m = recv_message(&mut ws).await;
    advance(Duration::from_secs(300)).await;
    srv.app().prune().await.unwrap();
    let rec = srv.app().store.load_session(&session).await.unwrap();
    let rec = rec.expect("a live session's row outlives retention");
    assert_eq!(rec.outbox.len(), 1);
    assert_eq!(rec.outbox[0].delivery, m["delivery"].as_str().unwrap());
    assert!(rec.updated_at >= srv.clock.now_ms() - 60_000);
}

/// A session the store holds but no process resumes (the process that served it
/// stopped; a crash leaves the same rows) is ended once past `resume_ttl`: what it was
/// sent and never acked goes to the user's next session, same delivery id. Retention
/// used to delete it with its outbox.
#[tokio::test(start_paused = true)]
async fn unacked_deliveries_of_a_session_from_before_a_restart_go_to_the_next_one() {
    let mut srv = resume_window_60s_with_a_campaign().await;
    let (mut ws, w) = srv.hello("u_restarted").await;
    let old = w["session"].as_str().unwrap().to_string();
    send(&mut ws, json!({"type":"track","id":"g1","event":"go"})).await;
    let m = recv_message(&mut ws).await;
    drop(ws);
    settle().await;
    srv.stop().await;
    let mut cfg = base_config(srv.dir.path());
    cfg.session.resume_ttl = Duration::from_secs(60);
    cfg.session.heartbeat = Duration::from_secs(3600);
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let srv2 = start_in(dir, cfg).await;
    // Past resume_ttl + 1 min; the sweep (every 30 s) hands the delivery on.
    advance(Duration::from_secs(151)).await;
    real_wait(50).await;
    let (mut ws, w) = srv2.hello("u_restarted").await;
    assert_eq!(w["resumed"], false);
    let again = recv_message(&mut ws).await;
    assert_eq!(again["delivery"], m["delivery"]);
    assert_eq!(again["message"]["body"], "Hi");
    // Handed on, the old session is gone from the store.
    assert!(srv2.app().store.load_session(&old).await.unwrap().is_none());
}
