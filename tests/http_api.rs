//! The HTTP API over real sockets: admin user calls, server-side events, the
//! Segment-compatible tracking API, health, readiness and metrics.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

async fn body(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let srv = start().await;
    let c = srv.http();
    let (s, b) = body(c.get(srv.url("/v1/users/u")).send().await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = body(
        c.get(srv.url("/v1/users/u"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = body(
        c.patch(srv.url("/v1/users/u"))
            .json(&json!({"attributes":{}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = body(
        c.post(srv.url("/v1/users/u/events"))
            .bearer_auth("nope")
            .json(&json!({"events":[]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, b) = body(
        c.get(srv.url("/v1/users/nobody"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn patch_sets_and_removes_attributes() {
    let srv = start().await;
    let c = srv.http();
    let (s, b) = body(
        c.patch(srv.url("/v1/users/u_1"))
            .bearer_auth(ADMIN)
            .json(&json!({"attributes":{"plan":"professional","signed_up_at":"2026-11-01T00:00:00Z","x":1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["attributes"]["plan"], "professional");
    let (_, b) = body(
        c.patch(srv.url("/v1/users/u_1"))
            .bearer_auth(ADMIN)
            .json(&json!({"attributes":{"x":null}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        b["attributes"],
        json!({"plan":"professional","signed_up_at":"2026-11-01T00:00:00Z"})
    );
    let (s, b) = body(
        c.patch(srv.url("/v1/users/u_1"))
            .bearer_auth(ADMIN)
            .json(&json!({"attributes":{"$activity":1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["path"].as_str()),
        (400, Some("attributes.$activity"))
    );
    let (s, b) = body(
        c.patch(srv.url("/v1/users/u_1"))
            .bearer_auth(ADMIN)
            .json(&json!({"attributes":"plan"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b["error"]["path"].as_str()), (400, Some("attributes")));
    let (s, b) = body(
        c.patch(srv.url("/v1/users/u_1"))
            .bearer_auth(ADMIN)
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
}

#[tokio::test]
async fn attribute_change_is_in_effect_for_a_live_session() {
    let srv = start().await;
    let (_ws, _) = srv.hello("u_live").await;
    let c = srv.http();
    c.patch(srv.url("/v1/users/u_live"))
        .bearer_auth(ADMIN)
        .json(&json!({"attributes":{"plan":"pro"}}))
        .send()
        .await
        .unwrap();
    let (_, user) = srv.get_user("u_live").await;
    assert_eq!(user["attributes"]["plan"], "pro");
    assert_eq!(user["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn server_events_are_validated_with_paths() {
    let srv = start().await;
    let c = srv.http();
    let post = |b: Value| {
        c.post(srv.url("/v1/users/u_ev/events"))
            .bearer_auth(ADMIN)
            .json(&b)
            .send()
    };
    let (s, b) = body(post(json!({"events":[{"id":"a","event":"signup","at":"2026-11-01T10:00:00Z","properties":{"src":"ads"}}]})).await.unwrap()).await;
    assert_eq!((s, b["accepted"].as_u64()), (200, Some(1)));
    let (_, user) = srv.get_user("u_ev").await;
    assert_eq!(
        user["aggregates"]["signup"]["first_seen"],
        "2026-11-01T10:00:00.000Z"
    );
    for (bad, path) in [
        (json!({}), "events"),
        (
            json!({"events":[{"event":"ok"},{"event":""}]}),
            "events[1].event",
        ),
        (
            json!({"events":[{"event":"x","properties":"no"}]}),
            "events[0].properties",
        ),
        (
            json!({"events":[{"event":"x","at":"yesterday"}]}),
            "events[0].at",
        ),
        (
            json!({"events":[{"event":"x","at":"2999-01-01T00:00:00Z"}]}),
            "events[0].at",
        ),
        (json!({"events":[{"event":"x","id":5}]}), "events[0].id"),
        (json!({"events":[{"event":"$bogus"}]}), "events[0].event"),
        (json!({"events":[7]}), "events[0]"),
    ] {
        let (s, b) = body(post(bad.clone()).await.unwrap()).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(b["error"]["path"], path, "{bad} -> {b}");
    }
    // Nothing from a rejected request was applied (all-or-nothing validation).
    let (_, user) = srv.get_user("u_ev").await;
    assert!(user["aggregates"].get("ok").is_none());
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let srv = start_with(|c| c.limits.http_body_bytes = 1024).await;
    let big = json!({"events":[{"event":"x","properties":{"s":"y".repeat(2000)}}]});
    let (s, b) = body(
        srv.http()
            .post(srv.url("/v1/users/u/events"))
            .bearer_auth(ADMIN)
            .json(&big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
}

#[tokio::test]
async fn unknown_routes_are_json_404_and_wrong_methods_json_405() {
    let srv = start().await;
    let (s, b) = body(reqwest::get(srv.url("/v1/nothing-here")).await.unwrap()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    // The error shape always has `path`, null when no field is at fault.
    assert!(b["error"].as_object().unwrap()["path"].is_null(), "{b}");
    let c = srv.http();
    for (method, path) in [
        (reqwest::Method::POST, "/v1/segments"),
        (reqwest::Method::PATCH, "/v1/campaigns/x"),
        (reqwest::Method::DELETE, "/v1/users/u"),
    ] {
        let r = c
            .request(method.clone(), srv.url(path))
            .send()
            .await
            .unwrap();
        let (s, b) = body(r).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn segment_compatible_calls() {
    let srv = start().await;
    let c = srv.http();
    let seg = |path: &str, b: Value| {
        c.post(srv.url(path))
            .header("authorization", basic(WRITE_KEY))
            .json(&b)
            .send()
    };
    let (s, b) = body(seg("/v1/track", json!({"userId":"u_seg","event":"Order Completed","properties":{"total":9},"messageId":"m1","timestamp":"2026-11-20T00:00:00Z"})).await.unwrap()).await;
    assert_eq!((s, b["success"].as_bool()), (200, Some(true)));
    // Same messageId again: deduplicated.
    seg(
        "/v1/track",
        json!({"userId":"u_seg","event":"Order Completed","messageId":"m1"}),
    )
    .await
    .unwrap();
    let (s, _) = body(seg("/v1/identify", json!({"userId":"u_seg","traits":{"plan":"professional","email":"a@b.c"},"messageId":"m2"})).await.unwrap()).await;
    assert_eq!(s, 200);
    let (s, _) = body(seg("/v1/page", json!({"userId":"u_seg","name":"Setup","properties":{"url":"https://app.example.com/setup?x=1"},"messageId":"m3"})).await.unwrap()).await;
    assert_eq!(s, 200);
    let (s, _) = body(
        seg(
            "/v1/batch",
            json!({"batch":[
                {"type":"track","userId":"u_seg","event":"Order Completed","messageId":"m4"},
                {"type":"track","userId":"u_seg2","event":"Signed Up","messageId":"m5"},
                {"type":"track","anonymousId":"anon-1","event":"Viewed"},
                {"type":"screen","userId":"u_seg","name":"Home"},
                {"type":"identify","userId":"u_seg2","traits":{"plan":"free"}}
            ]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let (_, u) = srv.get_user("u_seg").await;
    assert_eq!(u["aggregates"]["Order Completed"]["count"], 2);
    assert_eq!(u["aggregates"]["$page_view"]["count"], 1);
    assert_eq!(u["attributes"]["plan"], "professional");
    let (_, u2) = srv.get_user("u_seg2").await;
    assert_eq!(u2["attributes"]["plan"], "free");
    assert_eq!(u2["aggregates"]["Signed Up"]["count"], 1);
    let (s, _) = srv.get_user("anon-1").await;
    assert_eq!(s, 404, "anonymous-only calls are skipped");
}

#[tokio::test]
async fn segment_calls_reject_bad_keys_and_payloads() {
    let srv = start().await;
    let c = srv.http();
    let (s, _) = body(
        c.post(srv.url("/v1/track"))
            .json(&json!({"userId":"u","event":"e"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = body(
        c.post(srv.url("/v1/track"))
            .header("authorization", basic("wrong"))
            .json(&json!({"userId":"u","event":"e"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let seg = |path: &str, b: Value| {
        c.post(srv.url(path))
            .header("authorization", basic(WRITE_KEY))
            .json(&b)
            .send()
    };
    for (path, bad, err_path) in [
        ("/v1/track", json!({"userId":"u","event":42}), "body.event"),
        ("/v1/track", json!({"event":"e"}), "body.userId"),
        (
            "/v1/track",
            json!({"userId":"u","event":"e","timestamp":"soon"}),
            "body.timestamp",
        ),
        (
            "/v1/track",
            json!({"userId":"u","event":"e","messageId":42}),
            "body.messageId",
        ),
        (
            "/v1/identify",
            json!({"userId":"u","traits":[1]}),
            "body.traits",
        ),
        ("/v1/batch", json!({"batch":"nope"}), "batch"),
        (
            "/v1/batch",
            json!({"batch":[{"userId":"u","event":"e"}]}),
            "batch[0].type",
        ),
        (
            "/v1/batch",
            json!({"batch":[{"type":"warp","userId":"u"}]}),
            "batch[0].type",
        ),
    ] {
        let (s, b) = body(seg(path, bad.clone()).await.unwrap()).await;
        assert_eq!(s, 400, "{path} {bad}");
        assert_eq!(b["error"]["path"], err_path, "{path} {bad} -> {b}");
    }
    let (s, b) = body(
        c.post(srv.url("/v1/track"))
            .header("authorization", basic(WRITE_KEY))
            .body("][")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let srv = start().await;
    let (s, b) = body(reqwest::get(srv.url("/healthz")).await.unwrap()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")));
    let (s, b) = body(reqwest::get(srv.url("/readyz")).await.unwrap()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ready")));
    let (mut ws, _) = srv.hello("u_m").await;
    send(&mut ws, json!({"type":"track","id":"m1","event":"e"})).await;
    recv(&mut ws).await;
    send_text(&mut ws, "nope").await;
    recv(&mut ws).await;
    let r = reqwest::get(srv.url("/metrics")).await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    // Prometheus text: a counter's TYPE names its samples; no OpenMetrics `# EOF`.
    assert!(
        text.contains("# TYPE beckon_frames_in_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    for needle in [
        "beckon_sessions 1",
        "beckon_frames_in_total{type=\"track\"} 1",
        "beckon_frames_out_total{type=\"ok\"} 1",
        "beckon_errors_total{code=\"invalid_json\"} 1",
        "beckon_ack_latency_seconds_count 1",
        "beckon_store_commit_seconds_count",
        "beckon_events_total{door=\"ws\"}",
    ] {
        assert!(text.contains(needle), "metrics lack `{needle}`:\n{text}");
    }
    // OpenMetrics for a scraper that asks for it (Prometheus does).
    let r = srv
        .http()
        .get(srv.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE beckon_frames_in counter"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

/// A Segment batch: a bad call is reported and the good ones are applied (Segment's
/// libraries do not retry a 400); `sentAt` corrects a device clock that runs ahead, as
/// Segment does, instead of the call being refused as from the future.
#[tokio::test]
async fn segment_batches_keep_their_good_calls_and_correct_skewed_clocks() {
    let srv = start().await;
    let c = srv.http();
    let post = |b: Value| {
        c.post(srv.url("/v1/batch"))
            .header("authorization", basic(WRITE_KEY))
            .json(&b)
            .send()
    };
    let (s, b) = body(
        post(json!({"batch":[
            {"type":"track","userId":"u_good","event":"kept","messageId":"k1"},
            {"type":"track","userId":"u_good","messageId":"k2"}
        ]}))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rejected"][0]["index"], 1, "{b}");
    assert_eq!(b["rejected"][0]["error"]["path"], "batch[1].event", "{b}");
    let (_, user) = srv.get_user("u_good").await;
    assert_eq!(user["aggregates"]["kept"]["count"], 1);

    let now = srv.clock.now_ms();
    let ahead = beckon::clock::rfc3339(now + 10 * 60_000);
    let (s, b) = body(
        post(json!({"sentAt": ahead, "batch":[
            {"type":"track","userId":"u_fast","event":"skewed","timestamp": ahead}
        ]}))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, b.get("rejected")), (200, None), "{b}");
    let (_, user) = srv.get_user("u_fast").await;
    let seen = user["aggregates"]["skewed"]["first_seen"].as_str().unwrap();
    let at = beckon::clock::parse_rfc3339(seen).unwrap();
    assert!((at - now).abs() < 60_000, "stored at {seen}, now {now}");
}
