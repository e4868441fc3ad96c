//! `explain`: why a user would or would not get a campaign now — each condition with the
//! user's actual value and its verdict, the caps and their state, the schedule, the
//! variant, and the user's recent decisions for that campaign.

use std::sync::Arc;

use serde_json::{json, Value};

use super::definitions::{Audience, Campaign, Status, Trigger};
use crate::app::App;
use crate::clock::rfc3339;
use crate::store::StoreError;

fn status(s: Status) -> &'static str {
    match s {
        Status::Draft => "draft",
        Status::Active => "active",
        Status::Paused => "paused",
        Status::Archived => "archived",
    }
}

/// Builds the explanation; `None` when the user has no data.
pub async fn explain(
    app: &Arc<App>,
    user: &str,
    c: &Arc<Campaign>,
) -> Result<Option<Value>, StoreError> {
    let rs = app.engine.rules.load_full();
    let now = app.clock.now_ms();
    let session = app.registry.most_recent(user);
    let page = session.as_ref().and_then(|s| s.core.lock().page.clone());
    let session_count = session.as_ref().map(|s| {
        s.core
            .lock()
            .campaigns()
            .campaign_counts
            .get(&c.id)
            .copied()
            .unwrap_or(0)
    });
    app.profiles
        .read(user, |st| {
            let subject = super::decide::subject(app, st, now, page.as_deref(), None);
            let segments = super::decide::segments_now(app, &rs, st, now);
            let mut reasons: Vec<String> = Vec::new();
            if c.status != Status::Active {
                reasons.push(format!("campaign is {}", status(c.status)));
            }
            let in_schedule = c.start.is_none_or(|s| now >= s) && c.end.is_none_or(|e| now < e);
            if !in_schedule {
                reasons.push("outside the schedule".into());
            }
            let (audience, in_audience) = match &c.audience {
                Audience::Everyone => (json!({"kind":"everyone","verdict":true}), true),
                Audience::Segment(id) => {
                    let member = segments.contains(id);
                    let conditions = rs.segments.get(id).map(|seg| subject.explain(&seg.cond, &seg.raw["conditions"]));
                    (json!({"kind":"segment","segment":id,"member":member,"verdict":member,"conditions":conditions}), member)
                }
                Audience::Conditions(cond, raw) => {
                    let v = subject.eval(cond);
                    (json!({"kind":"conditions","verdict":v,"page":page,"conditions":subject.explain(cond, raw)}), v)
                }
            };
            if !in_audience {
                reasons.push("not in the audience".into());
            }
            let trigger = match &c.trigger {
                Trigger::SegmentEntry { segment } => {
                    json!({"type":"segment_entry","segment":segment,"member":segments.contains(segment)})
                }
                Trigger::GoalCount { event, count } => json!({"type":"goal","event":event,"count":count,
                    "current":st.aggregates.get(event).map(|a| a.count).unwrap_or(0),"fired":st.engine.goals.contains(&c.id)}),
                Trigger::GoalCond { cond, .. } => json!({"type":"goal","fired":st.engine.goals.contains(&c.id),
                    "conditions":subject.explain(cond, &c.raw["trigger"]["conditions"])}),
                other => {
                    let mut t = c.raw["trigger"].clone();
                    t["type"] = json!(other.kind());
                    t
                }
            };
            let cap = st.engine.caps.get(&c.id).cloned().unwrap_or_default();
            let f = &c.frequency;
            let user_ok = f.max_per_user.is_none_or(|m| cap.used() < m);
            let next_allowed = f.min_interval.and_then(|iv| cap.last_delivery().map(|l| l + iv));
            let interval_ok = next_allowed.is_none_or(|t| now >= t);
            let session_ok = match (f.max_per_session, session_count) {
                (Some(m), Some(n)) => n < m,
                _ => true,
            };
            if !user_ok {
                reasons.push("max_per_user reached".into());
            }
            if !interval_ok {
                reasons.push("inside min_interval".into());
            }
            if !session_ok {
                reasons.push("max_per_session reached in the current session".into());
            }
            let variant = c.variant_for(user);
            let decisions: Vec<Value> = st
                .engine
                .decisions
                .iter()
                .filter(|d| d.campaign == c.id)
                .rev()
                .map(|d| {
                    let mut v = serde_json::to_value(d).unwrap_or_default();
                    v["at"] = json!(rfc3339(d.at));
                    if let Some(f) = d.first_at {
                        v["first_at"] = json!(rfc3339(f));
                    }
                    v
                })
                .collect();
            json!({
                "user": user,
                "campaign": c.id,
                "status": status(c.status),
                "now": rfc3339(now),
                "eligible": reasons.is_empty(),
                "reasons": reasons,
                "schedule": {"start": c.start.map(rfc3339), "end": c.end.map(rfc3339), "in_schedule": in_schedule},
                "trigger": trigger,
                "audience": audience,
                "caps": {
                    "max_per_user": {"limit": f.max_per_user, "seen": cap.committed, "reserved": cap.reserved.len(), "ok": user_ok},
                    "min_interval": {"interval": f.min_interval.map(|m| crate::duration::format(std::time::Duration::from_millis(m as u64))),
                        "last_delivery": cap.last_delivery().map(rfc3339), "next_allowed": next_allowed.map(rfc3339), "ok": interval_ok},
                    "max_per_session": {"limit": f.max_per_session, "current_session": session.as_ref().map(|s| s.id.to_string()),
                        "count": session_count, "ok": session_ok},
                    "outstanding": cap.reserved.iter().map(|r| json!({"delivery": r.delivery, "at": rfc3339(r.at), "expires_at": rfc3339(r.expires_at)})).collect::<Vec<_>>(),
                },
                "variant": {"id": variant.id, "control": variant.control},
                "decisions": decisions,
            })
        })
        .await
}
