//! Engagement analytics with known numbers: a scripted scenario (users shown, clicking,
//! dismissing, converting inside and outside the goal window, a control group) whose
//! stats come out exactly; duplicates counted once; counters survive a restart; CSV agrees.

mod common;

use std::time::Duration;

use beckon::engine::definitions::parse_campaign;
use common::*;
use serde_json::{json, Value};

fn promo() -> Value {
    json!({"id":"promo","status":"active","trigger":{"type":"event","event":"go"},
      "variants":[{"id":"a","weight":50,"message":{"kind":"modal","title":"Deal","body":"Half price",
                   "buttons":[{"id":"yes","label":"Yes","url":"/buy"},{"id":"no","label":"No","action":"dismiss"}]}},
                  {"id":"control","weight":50,"control":true}],
      "goal":{"event":"buy","within":"1h"}})
}

#[derive(Clone, Copy)]
struct Plan {
    impressions: usize,
    click: bool,
    dismiss: bool,
    buy_after_min: Option<u64>,
}

#[tokio::test(start_paused = true)]
async fn scripted_scenario_gives_exact_stats_and_survives_restart() {
    let mut srv = start_with(|c| {
        c.session.heartbeat = Duration::from_secs(86_400);
        c.session.resume_ttl = Duration::from_secs(86_400);
    })
    .await;
    srv.put_ok("/v1/campaigns/promo", promo()).await;
    let camp = parse_campaign("promo", &promo(), &|_| false).unwrap();
    // Pick 6 treatment and 4 control users by the same stable hash the gateway uses.
    let (mut treat, mut ctl) = (Vec::new(), Vec::new());
    for i in 0.. {
        let u = format!("user-{i}");
        if camp.variant_for(&u).control {
            if ctl.len() < 4 {
                ctl.push(u);
            }
        } else if treat.len() < 6 {
            treat.push(u);
        }
        if treat.len() == 6 && ctl.len() == 4 {
            break;
        }
    }
    let plans = [
        Plan {
            impressions: 2,
            click: true,
            dismiss: false,
            buy_after_min: Some(10),
        }, // converts (dup impression)
        Plan {
            impressions: 1,
            click: false,
            dismiss: true,
            buy_after_min: Some(30),
        }, // converts
        Plan {
            impressions: 1,
            click: true,
            dismiss: false,
            buy_after_min: Some(90),
        }, // too late
        Plan {
            impressions: 1,
            click: false,
            dismiss: false,
            buy_after_min: None,
        },
        Plan {
            impressions: 0,
            click: false,
            dismiss: false,
            buy_after_min: Some(5),
        }, // never saw it: no conversion
        Plan {
            impressions: 3,
            click: false,
            dismiss: true,
            buy_after_min: None,
        },
    ];
    let mut sockets = Vec::new();
    for (u, plan) in treat.iter().zip(plans) {
        let (mut ws, _) = srv.hello_long(u, json!({})).await;
        send(&mut ws, json!({"type":"track","id":"go1","event":"go"})).await;
        let m = recv_message(&mut ws).await;
        let d = m["delivery"].clone();
        for i in 0..plan.impressions {
            send(
                &mut ws,
                json!({"type":"engage","id":format!("imp{i}"),"delivery":d,"action":"impression"}),
            )
            .await;
        }
        if plan.click {
            send(
                &mut ws,
                json!({"type":"engage","id":"clk","delivery":d,"action":"click","button":"yes"}),
            )
            .await;
            send(
                &mut ws,
                json!({"type":"engage","id":"clk2","delivery":d,"action":"click","button":"yes"}),
            )
            .await;
            send(
                &mut ws,
                json!({"type":"engage","id":"clk3","delivery":d,"action":"click","button":"no"}),
            )
            .await;
        }
        if plan.dismiss {
            send(
                &mut ws,
                json!({"type":"engage","id":"dis","delivery":d,"action":"dismiss"}),
            )
            .await;
        }
        sync(&mut ws).await;
        sockets.push((ws, plan));
    }
    for (i, u) in ctl.iter().enumerate() {
        let (mut ws, _) = srv.hello_long(u, json!({})).await;
        send(&mut ws, json!({"type":"track","id":"go1","event":"go"})).await;
        assert_eq!(recv(&mut ws).await["type"], "ok");
        // Control users 0 and 1 buy within the hour, 2 after it, 3 never.
        if i < 3 {
            sockets.push((
                ws,
                Plan {
                    impressions: 0,
                    click: false,
                    dismiss: false,
                    buy_after_min: Some(if i < 2 { 20 } else { 80 }),
                },
            ));
        }
    }
    // Time passes; purchases happen at their minute (through the REST door for variety).
    let mut minute = 0;
    let mut buys: Vec<(u64, String)> = Vec::new();
    for (u, plan) in treat.iter().zip(plans) {
        if let Some(m) = plan.buy_after_min {
            buys.push((m, u.clone()));
        }
    }
    for (i, u) in ctl.iter().enumerate().take(3) {
        buys.push((if i < 2 { 20 } else { 80 }, u.clone()));
    }
    buys.sort();
    for (at, u) in buys {
        jump(Duration::from_secs((at - minute) * 60)).await;
        minute = at;
        let (s, _) = srv
            .admin(
                "POST",
                &format!("/v1/users/{u}/events"),
                Some(json!({"events":[{"id":"buy1","event":"buy"}]})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let from = beckon::clock::rfc3339(srv.clock.now_ms() - 86_400_000);
    let to = beckon::clock::rfc3339(srv.clock.now_ms() + 3_600_000);
    let path = format!("/v1/campaigns/promo/stats?from={from}&to={to}&interval=hour");
    let (s, stats) = srv.admin("GET", &path, None).await;
    assert_eq!(s, 200, "{stats}");
    let a = &stats["variants"][0];
    assert_eq!(a["variant"], "a");
    // Hand-computed from the plans above.
    assert_eq!(a["delivered"], 6);
    assert_eq!(a["impressions"], 5, "duplicate impressions count once");
    assert_eq!(
        a["clicks"], 2,
        "a delivery's clicks count once, on however many buttons, however often"
    );
    assert_eq!(a["clicks_by_button"]["yes"], 2);
    assert_eq!(a["clicks_by_button"]["no"], 2);
    assert_eq!(a["dismissals"], 2);
    assert_eq!(
        a["conversions"], 2,
        "inside the window, after an impression"
    );
    assert_eq!(a["unique_users"]["impressions"], 5);
    assert_eq!(a["click_through_rate"], 0.4);
    assert_eq!(a["dismissal_rate"], 0.4);
    assert_eq!(a["conversion_rate"], 0.4);
    assert_eq!(stats["control"]["exposures"], 4);
    assert_eq!(stats["control"]["conversions"], 2);
    assert_eq!(stats["control"]["conversion_rate"], 0.5);
    let lift = a["lift"].as_f64().unwrap();
    assert!((lift - (-0.2)).abs() < 1e-9, "0.4 vs 0.5: {lift}");
    let ci = a["lift_ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < lift && lift < ci[1].as_f64().unwrap());
    // The converted users carry it into conditions.
    let (_, u0) = srv.get_user(&treat[0]).await;
    assert_eq!(u0["engagement"]["promo"]["convert"], 1);
    // CSV agrees.
    let csv = srv
        .http()
        .get(srv.url(&path))
        .bearer_auth(ADMIN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let total_a = csv
        .lines()
        .find(|l| l.starts_with("total,") && l.split(',').nth(2) == Some("a"))
        .unwrap();
    let cols: Vec<&str> = total_a.split(',').collect();
    assert_eq!(&cols[3..8], &["6", "5", "2", "2", "2"], "{csv}");
    // Counters survive a restart.
    drop(sockets);
    srv.stop().await;
    let cfg = base_config(srv.dir.path());
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let srv2 = start_in(dir, cfg).await;
    let (_, again) = srv2.admin("GET", &path, None).await;
    assert_eq!(again["variants"], stats["variants"]);
    assert_eq!(again["control"], stats["control"]);
    let (s, _) = srv2.admin("GET", "/v1/campaigns/nope/stats", None).await;
    assert_eq!(s, 404);
    // `format` is json or csv; anything else is a clear 400, not JSON in its place.
    let (s, body) = srv2.admin("GET", &format!("{path}&format=xml"), None).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"]["path"], "format", "{body}");
    let (s, json) = srv2
        .admin("GET", &format!("{path}&format=json"), None)
        .await;
    assert_eq!((s, &json["variants"]), (200, &stats["variants"]));
    let (s, _) = srv2
        .admin("GET", "/v1/campaigns/promo/stats?interval=week", None)
        .await;
    assert_eq!(s, 400);
}

/// Conversions are users (contract §7): one user shown the campaign twice who then buys
/// once converts once, in the totals and in the series. A variant nothing was counted
/// for yet is listed with zeros.
#[tokio::test(start_paused = true)]
async fn conversions_count_users_and_every_variant_is_listed() {
    let srv = start().await;
    let twice = json!({"id":"twice","status":"active","trigger":{"type":"event","event":"go"},
      "variants":[{"id":"only","weight":1,"message":{"kind":"banner","body":"Hi"}},
                  {"id":"never","weight":0,"message":{"kind":"banner","body":"Hi"}}],
      "goal":{"event":"buy","within":"1h"}});
    srv.put_ok("/v1/campaigns/twice", twice).await;
    let path = "/v1/campaigns/twice/stats?interval=hour";
    let (_, fresh) = srv.admin("GET", path, None).await;
    let listed: Vec<&str> = fresh["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["never", "only"], "{fresh}");
    assert_eq!(fresh["variants"][1]["delivered"], 0);
    assert!(fresh["variants"][1]["conversion_rate"].is_null());
    let (mut ws, _) = srv.hello("u_twice").await;
    for i in 0..2 {
        send(
            &mut ws,
            json!({"type":"track","id":format!("go{i}"),"event":"go"}),
        )
        .await;
        let m = recv_message(&mut ws).await;
        send(
            &mut ws,
            json!({"type":"engage","id":format!("imp{i}"),"delivery":m["delivery"],"action":"impression"}),
        )
        .await;
    }
    send(&mut ws, json!({"type":"track","id":"b1","event":"buy"})).await;
    sync(&mut ws).await;
    let (_, stats) = srv.admin("GET", path, None).await;
    let only = &stats["variants"][1];
    assert_eq!(only["variant"], "only");
    assert_eq!(only["impressions"], 2);
    assert_eq!(only["conversions"], 1, "{stats}");
    assert_eq!(only["unique_users"]["conversions"], 1);
    assert_eq!(only["conversion_rate"], 0.5);
    let series: u64 = stats["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["conversions"].as_u64().unwrap())
        .sum();
    assert_eq!(series, 1);
}
