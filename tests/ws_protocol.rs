//! The WebSocket protocol over real sockets: one test per frame type, error code and
//! close code (timing-based closes are in ws_timing.rs).

mod common;

use beckon::gateway::registry::DeliveryInput;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn delivery(id: &str) -> DeliveryInput {
    DeliveryInput {
        delivery: id.into(),
        campaign: "c1".into(),
        variant: "a".into(),
        message: json!({"kind": "banner", "body": "hi"}),
        expires_at: None,
    }
}

#[tokio::test]
async fn hello_welcome_track_ok_and_profile() {
    let srv = start().await;
    let (mut ws, welcome) = srv.hello("u_1").await;
    assert_eq!(welcome["user"], "u_1");
    assert_eq!(welcome["resumed"], false);
    assert!(welcome["session"].as_str().unwrap().starts_with("s_"));
    assert_eq!(welcome["heartbeat_ms"], 25000);
    assert!(beckon::clock::parse_rfc3339(welcome["server_time"].as_str().unwrap()).is_some());

    send(
        &mut ws,
        json!({"type":"track","id":"e1","event":"export_completed","properties":{"rows":10}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["e1"]}));

    let (status, user) = srv.get_user("u_1").await;
    assert_eq!(status, 200);
    assert_eq!(user["aggregates"]["export_completed"]["count"], 1);
    assert_eq!(user["aggregates"]["$session_start"]["count"], 1);
    assert_eq!(user["sessions"][0]["session"], welcome["session"]);
}

#[tokio::test]
async fn page_sets_the_session_page_and_records_a_page_view() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_p").await;
    send(
        &mut ws,
        json!({"type":"page","id":"p1","path":"/setup","title":"Setup"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["p1"]}));
    let (_, user) = srv.get_user("u_p").await;
    assert_eq!(user["sessions"][0]["page"], "/setup");
    assert_eq!(user["aggregates"]["$page_view"]["count"], 1);
}

#[tokio::test]
async fn identify_only_client_writable_keys() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_i").await;
    send(
        &mut ws,
        json!({"type":"identify","id":"i1","attributes":{"first_name":"Ada"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["i1"]}));
    send(
        &mut ws,
        json!({"type":"identify","id":"i2","attributes":{"plan":"enterprise"}}),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(
        (
            err["type"].as_str(),
            err["code"].as_str(),
            err["id"].as_str()
        ),
        (Some("error"), Some("forbidden_attribute"), Some("i2"))
    );
    send(
        &mut ws,
        json!({"type":"identify","id":"i3","attributes":{"$activity":100}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "forbidden_attribute");
    let (_, user) = srv.get_user("u_i").await;
    assert_eq!(user["attributes"], json!({"first_name":"Ada"}));
    // The session stayed open.
    send(&mut ws, json!({"type":"activity","id":"a1"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["a1"]}));
}

#[tokio::test]
async fn token_attributes_are_trusted_and_merged() {
    let srv = start().await;
    let t = srv.token_with("u_t", json!({"plan":"professional","seats":5}));
    let (_ws, _) = srv.hello_frame(json!({"type":"hello","token":t})).await;
    let (_, user) = srv.get_user("u_t").await;
    assert_eq!(user["attributes"], json!({"plan":"professional","seats":5}));
}

#[tokio::test]
async fn batch_frames_are_processed_in_order_with_one_ok() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_b").await;
    send(
        &mut ws,
        json!([
            {"type":"track","id":"b1","event":"a"},
            {"type":"nope","id":"b2"},
            {"type":"track","id":"b3","event":"a"},
            {"type":"activity"}
        ]),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("unknown_type"), Some("b2"))
    );
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["b1","b3"]}));
    let (_, user) = srv.get_user("u_b").await;
    assert_eq!(user["aggregates"]["a"]["count"], 2);
}

#[tokio::test]
async fn duplicate_ids_count_once_across_doors() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_d").await;
    for _ in 0..2 {
        send(&mut ws, json!({"type":"track","id":"same","event":"x"})).await;
        assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["same"]}));
    }
    // The same id through the REST door is a duplicate too.
    let r = srv
        .http()
        .post(srv.url("/v1/users/u_d/events"))
        .bearer_auth(ADMIN)
        .json(&json!({"events":[{"id":"same","event":"x"},{"id":"new","event":"x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["duplicates"], 1);
    let (_, user) = srv.get_user("u_d").await;
    assert_eq!(user["aggregates"]["x"]["count"], 2);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_session_stays_open() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_bad").await;
    let cases: Vec<(&str, &str)> = vec![
        ("this is not json", "invalid_json"),
        ("[1,2", "invalid_json"),
        ("42", "invalid_frame"),
        ("\"str\"", "invalid_frame"),
        (r#"{"id":"x1"}"#, "invalid_frame"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (r#"{"type":"track","id":"x2"}"#, "invalid_frame"),
        (r#"{"type":"track","id":"x3","event":42}"#, "invalid_frame"),
        (r#"{"type":"track","id":"x4","event":""}"#, "invalid_frame"),
        (
            r#"{"type":"track","id":"x5","event":"$session_start"}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"track","id":"x6","event":"$made_up"}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"track","id":"x7","event":"e","properties":[1]}"#,
            "invalid_frame",
        ),
        (r#"{"type":"ack","seq":"7"}"#, "invalid_frame"),
        (
            r#"{"type":"engage","delivery":"d","action":"stare"}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"track","id":"x8","event":"e","properties":{"n":1e999}}"#,
            "invalid_json",
        ),
    ];
    for (text, code) in cases {
        send_text(&mut ws, text).await;
        let err = recv(&mut ws).await;
        assert_eq!(err["type"], "error", "{text}");
        assert_eq!(err["code"], code, "{text} -> {err}");
    }
    // Over-limit values.
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    send(
        &mut ws,
        json!({"type":"track","id":"big1","event":"e","properties":many}),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("too_large"), Some("big1"))
    );
    send(
        &mut ws,
        json!({"type":"track","id":"big2","event":"e","properties":{"s":"x".repeat(1025)}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "too_large");
    send(
        &mut ws,
        json!({"type":"track","id":"big3","event":"e".repeat(129)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "too_large");
    let deep = format!(
        r#"{{"type":"track","id":"big4","event":"e","properties":{}1{}}}"#,
        "{\"a\":".repeat(10),
        "}".repeat(10)
    );
    send_text(&mut ws, &deep).await;
    assert_eq!(recv(&mut ws).await["code"], "too_large");
    // Huge but valid numbers are accepted.
    send(&mut ws, json!({"type":"track","id":"num","event":"e","properties":{"n":1e300,"m":-99999999999999999999i128 as f64}})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["num"]}));
    // Binary frames and invalid UTF-8.
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid_frame");
    // A second hello.
    send(
        &mut ws,
        json!({"type":"hello","token":srv.token("u_bad", 60)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "invalid_frame");
    // Still open and working; nothing invalid was recorded.
    send(&mut ws, json!({"type":"track","id":"fine","event":"e"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["fine"]}));
    let (_, user) = srv.get_user("u_bad").await;
    assert_eq!(user["aggregates"]["e"]["count"], 2);
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::Data, coding::OpCode, Frame, FrameHeader,
    };
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_utf").await;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    ws.send(Message::Frame(Frame::from_payload(
        header,
        vec![0xff, 0xfe, 0xfd].into(),
    )))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn frame_over_the_size_limit_closes_1009() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_huge").await;
    let text = format!(
        r#"{{"type":"track","event":"e","properties":{{"s":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    let _ = ws.send(Message::Text(text.into())).await;
    assert_eq!(expect_close(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn first_frame_must_be_hello() {
    let srv = start().await;
    let mut ws = srv.connect().await;
    send(&mut ws, json!({"type":"track","event":"e"})).await;
    assert_eq!(expect_close(&mut ws).await, Some(4000));
    let mut ws = srv.connect().await;
    send_text(&mut ws, "garbage").await;
    assert_eq!(expect_close(&mut ws).await, Some(4000));
    let mut ws = srv.connect().await;
    send(&mut ws, json!({"type":"hello"})).await;
    assert_eq!(expect_close(&mut ws).await, Some(4000));
}

#[tokio::test]
async fn bad_tokens_close_4001_or_4002() {
    use base64::Engine;
    let srv = start().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let wrong_secret = beckon::auth::mint_hs256(
        "other",
        "u",
        Default::default(),
        srv.clock.now_secs(),
        Some(60),
    );
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(r#"{"sub":"u"}"#)
    );
    let no_sub = {
        let t = beckon::auth::mint_hs256(
            SECRET,
            "x",
            Default::default(),
            srv.clock.now_secs(),
            Some(60),
        );
        // Re-sign claims without sub.
        let _ = t;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"exp": srv.clock.now_secs() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    for (token, code) in [
        (wrong_secret, 4001),
        (alg_none, 4001),
        (no_sub, 4001),
        ("x.y.z".to_string(), 4001),
        (srv.token("u", -60), 4002),
    ] {
        let mut ws = srv.connect().await;
        send(&mut ws, json!({"type":"hello","token":token})).await;
        assert_eq!(expect_close(&mut ws).await, Some(code), "token {token}");
    }
}

#[tokio::test]
async fn auth_refresh_is_accepted_and_other_users_token_closes() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_a").await;
    send(
        &mut ws,
        json!({"type":"auth","id":"r1","token":srv.token("u_a", 7200)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await, json!({"type":"ok","ids":["r1"]}));
    send(
        &mut ws,
        json!({"type":"auth","token":srv.token("someone_else", 7200)}),
    )
    .await;
    assert_eq!(expect_close(&mut ws).await, Some(4001));
}

#[tokio::test]
async fn too_many_sessions_closes_4009() {
    let srv = start_with(|c| c.limits.sessions_per_user = 2).await;
    let (_a, _) = srv.hello("u_many").await;
    let (_b, _) = srv.hello("u_many").await;
    let mut c = srv.connect().await;
    send(
        &mut c,
        json!({"type":"hello","token":srv.token("u_many", 60)}),
    )
    .await;
    assert_eq!(expect_close(&mut c).await, Some(4009));
    // Another user is unaffected.
    let (_d, _) = srv.hello("u_other").await;
}

/// One large batch over the budget is not a flood: its extra elements get
/// `rate_limited`, the rest are answered, the session stays open. Messages that go on
/// over the limit use up the strikes (one each) and the session is closed with 4008.
#[tokio::test]
async fn one_large_batch_is_rate_limited_a_flood_is_closed_4008() {
    let srv = start_with(|c| {
        c.limits.frames_per_sec = 5.0;
        c.limits.frames_burst = 5.0;
        c.limits.rate_strikes = 3.0;
    })
    .await;
    let (mut ws, _) = srv.hello("u_flood").await;
    let batch: Vec<Value> = (0..30)
        .map(|i| json!({"type":"track","id":format!("f{i}"),"event":"flood"}))
        .collect();
    send(&mut ws, Value::Array(batch)).await;
    let (mut limited, mut acked) = (Vec::new(), Vec::new());
    while limited.len() + acked.len() < 30 {
        let v = recv(&mut ws).await;
        match v["type"].as_str() {
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                limited.push(v["id"].as_str().unwrap().to_string());
            }
            Some("ok") => acked.extend(
                v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string()),
            ),
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(acked, ["f0", "f1", "f2", "f3", "f4"]);
    assert_eq!(limited.len(), 25);
    // The accepted ones are stored; the session is still open.
    let (_, user) = srv.get_user("u_flood").await;
    assert_eq!(user["aggregates"]["flood"]["count"], 5, "{user}");
    // Going on over the limit: one strike per message; the fourth closes.
    let (mut errors, mut sent) = (0, 0);
    let code = loop {
        sent += 1;
        assert!(sent < 50, "never closed");
        send(&mut ws, json!({"type":"activity","id":format!("g{sent}")})).await;
        match futures_util::StreamExt::next(&mut ws).await {
            // A slow machine may have refilled a token in between.
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"ok""#) => {}
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["code"], "rate_limited", "{v}");
                errors += 1;
            }
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            other => panic!("expected a 4008 close, got {other:?}"),
        }
    };
    assert_eq!(code, Some(4008));
    assert!(errors >= 2, "rate_limited before the close: {errors}");
}

#[tokio::test]
async fn ack_of_a_seq_never_sent_is_an_error() {
    let srv = start().await;
    let (mut ws, _) = srv.hello("u_ack").await;
    send(&mut ws, json!({"type":"ack","id":"k1","seq":5})).await;
    let err = recv(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("invalid_frame"), Some("k1"))
    );
}

#[tokio::test]
async fn deliveries_have_seq_ack_and_engage_validates_ownership() {
    let srv = start().await;
    let (mut a, _) = srv.hello("u_owner").await;
    let (mut b, _) = srv.hello("u_intruder").await;
    srv.app()
        .deliver_to_user("u_owner", delivery("d_1"))
        .await
        .unwrap()
        .unwrap();
    let msg = recv(&mut a).await;
    assert_eq!(
        (
            msg["type"].as_str(),
            msg["seq"].as_u64(),
            msg["delivery"].as_str()
        ),
        (Some("message"), Some(1), Some("d_1"))
    );
    assert_eq!(msg["message"]["body"], "hi");
    send(&mut a, json!({"type":"ack","seq":1})).await;
    // Another user's delivery id is unknown to them.
    send(
        &mut b,
        json!({"type":"engage","id":"g1","delivery":"d_1","action":"impression"}),
    )
    .await;
    let err = recv(&mut b).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("unknown_delivery"), Some("g1"))
    );
    send(
        &mut a,
        json!({"type":"engage","id":"g2","delivery":"d_1","action":"impression"}),
    )
    .await;
    assert_eq!(recv(&mut a).await, json!({"type":"ok","ids":["g2"]}));
    send(
        &mut a,
        json!({"type":"engage","id":"g3","delivery":"d_1","action":"click","button":"go"}),
    )
    .await;
    assert_eq!(recv(&mut a).await, json!({"type":"ok","ids":["g3"]}));
    send(
        &mut a,
        json!({"type":"engage","id":"g4","delivery":"d_nope","action":"dismiss"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["code"], "unknown_delivery");
}

#[tokio::test]
async fn resume_resends_unacked_deliveries_and_keeps_identity() {
    let srv = start().await;
    let (mut ws, welcome) = srv.hello("u_r").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    for d in ["d_a", "d_b", "d_c"] {
        srv.app().deliver_to_user("u_r", delivery(d)).await.unwrap();
    }
    for seq in 1..=3 {
        assert_eq!(recv(&mut ws).await["seq"], seq);
    }
    send(&mut ws, json!({"type":"ack","seq":1})).await;
    drop(ws);
    // The client got seq 2 but not its ack through: resume from last_seq 2.
    let (mut ws, welcome) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_r", 60),"resume":{"session":session,"last_seq":2}}))
        .await;
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["session"], session.as_str());
    let again = recv(&mut ws).await;
    assert_eq!(
        (again["seq"].as_u64(), again["delivery"].as_str()),
        (Some(3), Some("d_c"))
    );
    // New deliveries continue the sequence.
    srv.app()
        .deliver_to_user("u_r", delivery("d_d"))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["seq"], 4);
}

#[tokio::test]
async fn resume_of_unknown_or_foreign_session_starts_fresh() {
    let srv = start().await;
    let (_ws, welcome) = srv.hello("u_x").await;
    let theirs = welcome["session"].as_str().unwrap().to_string();
    let (_ws2, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_y", 60),"resume":{"session":theirs,"last_seq":0}}))
        .await;
    assert_eq!(w["resumed"], false);
    assert_ne!(w["session"], theirs.as_str());
    let (_ws3, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_y", 60),"resume":{"session":"s_unknown","last_seq":3}}))
        .await;
    assert_eq!(w["resumed"], false);
}

#[tokio::test]
async fn resume_takes_over_a_still_open_connection() {
    let srv = start().await;
    let (mut old, welcome) = srv.hello("u_take").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    let (_new, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_take", 60),"resume":{"session":session,"last_seq":0}}))
        .await;
    assert_eq!(w["resumed"], true);
    assert_eq!(expect_close(&mut old).await, Some(1000));
    let (_, user) = srv.get_user("u_take").await;
    assert_eq!(user["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn slow_consumer_is_closed_4010_and_keeps_its_outbox() {
    let srv = start_with(|c| c.limits.outbox_max = 2).await;
    let (mut ws, welcome) = srv.hello("u_slow").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    for d in ["d_1", "d_2", "d_3"] {
        srv.app()
            .deliver_to_user("u_slow", delivery(d))
            .await
            .unwrap();
    }
    assert_eq!(expect_close(&mut ws).await, Some(4010));
    let (mut ws, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token("u_slow", 60),"resume":{"session":session,"last_seq":0}}))
        .await;
    assert_eq!(w["resumed"], true);
    let seqs: Vec<u64> = [
        recv(&mut ws).await,
        recv(&mut ws).await,
        recv(&mut ws).await,
    ]
    .iter()
    .map(|m| m["seq"].as_u64().unwrap())
    .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

/// Drains `srv` (its client sees 1001) and starts a gateway on the same data directory.
async fn restart(srv: &mut TestServer, ws: &mut Ws) -> TestServer {
    let stop = srv.stop();
    let (code, ()) = tokio::join!(expect_close(ws), stop);
    assert_eq!(code, Some(1001));
    let cfg = base_config(srv.dir.path());
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    start_in(dir, cfg).await
}

/// A `hello` of `user` resuming `session` from `last_seq`: the socket and `resumed`.
async fn resume(srv: &TestServer, user: &str, session: &str, last_seq: u64) -> (Ws, bool) {
    let (ws, w) = srv
        .hello_frame(json!({"type":"hello","token":srv.token(user, 60),"resume":{"session":session,"last_seq":last_seq}}))
        .await;
    (ws, w["resumed"] == true)
}

/// [`restart`], then [`resume`], which must find the session.
async fn restart_and_resume(
    srv: &mut TestServer,
    ws: &mut Ws,
    user: &str,
    session: &str,
    last_seq: u64,
) -> (TestServer, Ws) {
    let srv2 = restart(srv, ws).await;
    let (ws, resumed) = resume(&srv2, user, session, last_seq).await;
    assert!(resumed);
    (srv2, ws)
}

#[tokio::test]
async fn drain_closes_sessions_with_1001_and_resume_works_after_restart() {
    let mut srv = start().await;
    let (mut ws, welcome) = srv.hello("u_drain").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    srv.app()
        .deliver_to_user("u_drain", delivery("d_keep"))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["seq"], 1);
    send(
        &mut ws,
        json!({"type":"track","id":"t1","event":"before_restart"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
    let (srv2, mut ws) = restart_and_resume(&mut srv, &mut ws, "u_drain", &session, 0).await;
    let again = recv(&mut ws).await;
    assert_eq!(
        (again["seq"].as_u64(), again["delivery"].as_str()),
        (Some(1), Some("d_keep"))
    );
    let (_, user) = srv2.get_user("u_drain").await;
    assert_eq!(user["aggregates"]["before_restart"]["count"], 1);
    // The dedup memory survived the restart too.
    send(
        &mut ws,
        json!({"type":"track","id":"t1","event":"before_restart"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
    let (_, user) = srv2.get_user("u_drain").await;
    assert_eq!(user["aggregates"]["before_restart"]["count"], 1);
}

#[tokio::test]
async fn seqs_keep_rising_after_a_restart_when_everything_was_acked() {
    let mut srv = start().await;
    let (mut ws, welcome) = srv.hello("u_seq").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    for d in ["d_one", "d_two"] {
        srv.app()
            .deliver_to_user("u_seq", delivery(d))
            .await
            .unwrap();
    }
    assert_eq!(recv(&mut ws).await["seq"], 1);
    assert_eq!(recv(&mut ws).await["seq"], 2);
    send(&mut ws, json!({"type":"ack","seq":2})).await;
    // The ack's write is ordered before this event's, whose ok means both are durable.
    send(&mut ws, json!({"type":"track","id":"t1","event":"x"})).await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
    // The store kept no seq for the acked deliveries (an ack only deletes outbox
    // rows): the resuming client's last_seq carries it, so nothing is resent and the
    // next delivery is seq 3, not a seq the client already has.
    let (srv2, mut ws) = restart_and_resume(&mut srv, &mut ws, "u_seq", &session, 2).await;
    srv2.app()
        .deliver_to_user("u_seq", delivery("d_three"))
        .await
        .unwrap();
    let next = recv(&mut ws).await;
    assert_eq!(
        (next["seq"].as_u64(), next["delivery"].as_str()),
        (Some(3), Some("d_three"))
    );
}

#[tokio::test]
async fn another_users_resume_after_a_restart_moves_no_seq() {
    let mut srv = start().await;
    let (mut ws, welcome) = srv.hello("u_own").await;
    let session = welcome["session"].as_str().unwrap().to_string();
    srv.app()
        .deliver_to_user("u_own", delivery("d_one"))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["seq"], 1);
    send(&mut ws, json!({"type":"ack","seq":1})).await;
    send(&mut ws, json!({"type":"track","id":"t1","event":"x"})).await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
    let srv2 = restart(&mut srv, &mut ws).await;
    // Someone else names the session with a large last_seq: not theirs, not resumed,
    // and the floor they named is not taken.
    let (_theirs, resumed) = resume(&srv2, "u_other", &session, 50).await;
    assert!(!resumed);
    let (mut ws, resumed) = resume(&srv2, "u_own", &session, 1).await;
    assert!(resumed);
    srv2.app()
        .deliver_to_user("u_own", delivery("d_two"))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["seq"], 2);
}

#[tokio::test]
async fn max_connections_refuses_cleanly_with_503() {
    let srv = start_with(|c| c.limits.max_connections = 2).await;
    let (_a, _) = srv.hello("u_c1").await;
    let (_b, _) = srv.hello("u_c2").await;
    let r = reqwest::get(srv.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    drop(_a);
    // Once a slot frees up, connections are served again.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if reqwest::get(srv.url("/healthz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "connections served again after one closed");
}

/// A client's Close is answered with a Close (RFC 6455 §5.5.1), so the client sees a
/// clean close with its own code rather than a dropped connection (1006).
#[tokio::test]
async fn a_client_close_is_echoed() {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let srv = start().await;
    let (after_hello, _) = srv.hello("u_bye").await;
    // After the hello, and before it.
    for (mut ws, code) in [
        (after_hello, CloseCode::Normal),
        (srv.connect().await, CloseCode::Away),
    ] {
        let frame = CloseFrame {
            code,
            reason: "bye".into(),
        };
        ws.send(Message::Close(Some(frame))).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, Some(u16::from(code)));
    }
}
