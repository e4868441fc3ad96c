//! `--dev` conveniences: example segments and campaigns for all four trigger kinds, so the
//! demo app at `/demo/` shows messages within a minute. Seeded only into an empty store,
//! and scoped to demo users (tokens from `/demo/token` carry `"demo": true`), so that
//! users of your own tests and campaigns on a dev gateway never meet them.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::app::App;

/// `(id, definition)` pairs.
type Definitions = Vec<(&'static str, Value)>;

fn examples() -> (Definitions, Definitions) {
    #[allow(non_snake_case)]
    let DEMO = json!({"attr":"demo","op":"eq","value":true});
    let demo_audience = json!({"conditions": DEMO});
    let segments = vec![
        (
            "professional",
            json!({"name":"Professional plan","conditions":{"attr":"plan","op":"eq","value":"professional"}}),
        ),
        (
            "pro-no-integration",
            json!({"name":"Pro, no integration after 5 days (demo users)","conditions":{"all":[
                DEMO,
                {"attr":"plan","op":"eq","value":"professional"},
                {"since":"signed_up_at","op":"gte","value":"5d"},
                {"event":"integration_connected","count":{"op":"eq","value":0}}]}}),
        ),
        (
            "power-users",
            json!({"name":"Active users","conditions":{"attr":"$activity","op":"gte","value":10}}),
        ),
    ];
    let campaigns = vec![
        (
            "setup-help",
            json!({"name":"Stuck on setup (inactivity)","status":"active",
                "trigger":{"type":"inactivity","duration":"30s","page":"/demo/setup*"},
                "audience": demo_audience,
                "variants":[{"id":"a","weight":1,"message":{"kind":"banner","position":"bottom",
                    "body":"Stuck on setup, {{ user.first_name | default: \"friend\" }}? Our guide takes 3 minutes.",
                    "buttons":[{"id":"guide","label":"Open the guide","url":"/demo/setup#guide"},{"id":"close","label":"Not now","action":"dismiss"}]}}],
                "frequency":{"max_per_session":2},"priority":10,"expires_after":"10m"}),
        ),
        (
            "long-session",
            json!({"name":"Two minutes in (session duration)","status":"active",
                "trigger":{"type":"session_duration","duration":"2m"},
                "audience": demo_audience,
                "variants":[{"id":"a","weight":1,"message":{"kind":"slideout","title":"Enjoying Acme?","body":"Tell us what you would improve.",
                    "buttons":[{"id":"feedback","label":"Give feedback","url":"/demo/dashboard#feedback"}]}}],
                "frequency":{"max_per_user":3},"priority":5,"expires_after":"10m"}),
        ),
        (
            "pro-welcome",
            json!({"name":"Welcome to Professional (segment entry)","status":"active",
                "trigger":{"type":"segment_entry","segment":"professional"},
                "audience":{"segment":"professional"},
                "variants":[{"id":"a","weight":1,"message":{"kind":"modal","title":"Welcome to Professional",
                    "body":"Hi {{ user.first_name | default: \"there\" }}, connect an integration to get the most out of it.",
                    "buttons":[{"id":"connect","label":"Connect now","url":"/demo/dashboard#integrations"},{"id":"later","label":"Later","action":"dismiss"}]}}],
                "priority":50,"goal":{"event":"integration_connected","within":"3d"},"expires_after":"30m"}),
        ),
        (
            "first-export",
            json!({"name":"First export (goal)","status":"active",
                "trigger":{"type":"goal","event":"export_completed","count":1},
                "audience": demo_audience,
                "variants":[{"id":"a","weight":1,"message":{"kind":"banner","position":"top","body":"Your first export is done. Schedule it to run every week?",
                    "buttons":[{"id":"schedule","label":"Schedule it","url":"/demo/dashboard#schedule"}]}}],
                "priority":40,"goal":{"event":"export_scheduled","within":"1d"},"expires_after":"30m"}),
        ),
        (
            "upgrade-nudge",
            json!({"name":"Clicked upgrade (event, A/B with control)","status":"active",
                "trigger":{"type":"event","event":"clicked_upgrade","where":{"prop":"plan","op":"eq","value":"pro"}},
                "audience": demo_audience,
                "variants":[
                    {"id":"a","weight":45,"message":{"kind":"slideout","title":"Professional, in short","body":"Unlimited exports, integrations and priority support.",
                        "buttons":[{"id":"upgrade","label":"Upgrade","url":"/demo/dashboard#upgrade"}]}},
                    {"id":"b","weight":45,"message":{"kind":"modal","title":"Try Professional free for 14 days","body":"No card needed.",
                        "buttons":[{"id":"upgrade","label":"Start trial","url":"/demo/dashboard#upgrade"},{"id":"no","label":"No thanks","action":"dismiss"}]}},
                    {"id":"control","weight":10,"control":true}],
                "frequency":{"min_interval":"1m"},"priority":30,"goal":{"event":"upgraded","within":"1d"},"expires_after":"30m"}),
        ),
        (
            "export-tip",
            json!({"name":"Export tooltip (event)","status":"active",
                "trigger":{"type":"event","event":"feature_viewed","where":{"prop":"feature","op":"eq","value":"reports"}},
                "audience": demo_audience,
                "variants":[{"id":"a","weight":1,"message":{"kind":"tooltip","anchor":"#export-button","placement":"bottom",
                    "body":"Export any report as CSV from here."}}],
                "frequency":{"max_per_session":1},"priority":20,"expires_after":"10m"}),
        ),
    ];
    (segments, campaigns)
}

/// Seeds the examples if the store has no definitions yet.
pub async fn seed(app: &Arc<App>) {
    {
        let rs = app.engine.rules.load();
        if !rs.segments.is_empty() || !rs.campaigns.is_empty() {
            return;
        }
    }
    let (segments, campaigns) = examples();
    for (id, body) in segments {
        if let Err(e) = crate::engine::put_segment(app, id, &body).await {
            tracing::warn!(segment = id, "seeding failed: {e:?}");
        }
    }
    for (id, body) in campaigns {
        if let Err(e) = crate::engine::put_campaign(app, id, &body).await {
            tracing::warn!(campaign = id, "seeding failed: {e:?}");
        }
    }
    tracing::info!("dev mode: example segments and campaigns seeded (see /demo/)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_valid_definitions() {
        let (segments, campaigns) = examples();
        let ids: Vec<&str> = segments.iter().map(|(id, _)| *id).collect();
        for (id, body) in &segments {
            crate::engine::definitions::parse_segment(id, body).unwrap();
            crate::engine::definitions::check_keys("segment", body).unwrap();
        }
        let mut kinds = std::collections::HashSet::new();
        for (id, body) in &campaigns {
            let c = crate::engine::definitions::parse_campaign(id, body, &|s| ids.contains(&s))
                .unwrap();
            crate::engine::definitions::check_keys("campaign", body).unwrap();
            kinds.insert(c.trigger.kind());
        }
        assert_eq!(
            kinds.len(),
            5,
            "every trigger kind has an example: {kinds:?}"
        );
    }
}
