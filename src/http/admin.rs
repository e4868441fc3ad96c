//! Admin definition calls: segments and campaigns (PUT validates fully and takes effect
//! at once), and `explain`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{require_admin, ApiError, JsonBody};
use crate::app::App;
use crate::engine::{self, DefError};

impl From<DefError> for ApiError {
    fn from(e: DefError) -> Self {
        match e {
            DefError::Invalid(c) => ApiError::invalid(c.path, c.message),
            DefError::Conflict(m) => ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: m,
                path: None,
            },
            DefError::NotFound => ApiError::not_found("no such definition"),
            DefError::Store(e) => e.into(),
        }
    }
}

async fn segment_view(app: &App, id: &str) -> Option<Value> {
    let seg = app.engine.rules.load().segments.get(id).cloned()?;
    let mut v = seg.raw.clone();
    v["live_members"] = json!(engine::live_members(app, id).await);
    Some(v)
}

pub async fn put_segment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    engine::put_segment(&app, &id, &body).await?;
    Ok(Json(segment_view(&app, &id).await.unwrap_or(Value::Null)))
}

pub async fn get_segment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    segment_view(&app, &id)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no segment `{id}`")))
}

pub async fn delete_segment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&app, &headers)?;
    engine::delete_segment(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_segments(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let rs = app.engine.rules.load_full();
    let mut items = Vec::new();
    for s in rs.segments.values() {
        let mut v = s.raw.clone();
        v["live_members"] = json!(engine::live_members(&app, &s.id).await);
        items.push(v);
    }
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({"segments": items})))
}

pub async fn put_campaign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    Ok(Json(engine::put_campaign(&app, &id, &body).await?))
}

pub async fn get_campaign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    app.engine
        .rules
        .load()
        .campaigns
        .get(&id)
        .map(|c| Json(c.raw.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no campaign `{id}`")))
}

pub async fn delete_campaign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&app, &headers)?;
    engine::delete_campaign(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_campaigns(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let rs = app.engine.rules.load_full();
    let mut items: Vec<Value> = rs.campaigns.values().map(|c| c.raw.clone()).collect();
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({"campaigns": items})))
}

pub async fn explain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    super::users::check_user_id(&id)?;
    let cid = q
        .get("campaign")
        .ok_or_else(|| ApiError::invalid("campaign", "required query parameter: ?campaign=<id>"))?;
    let camp = app
        .engine
        .rules
        .load()
        .campaigns
        .get(cid)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no campaign `{cid}`")))?;
    engine::explain(&app, &id, &camp)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
}

/// `GET /v1/campaigns/{id}/stats?from=&to=&interval=hour|day` (JSON, or CSV with
/// `Accept: text/csv` / `?format=csv`; another `format` is a 400).
pub async fn stats(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::analytics::{self, Interval, HOUR_MS};
    require_admin(&app, &headers)?;
    let camp = app
        .engine
        .rules
        .load()
        .campaigns
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no campaign `{id}`")))?;
    let format_csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "json or csv")),
    };
    let now = app.clock.now_ms();
    let ts = |k: &str, default: i64| -> Result<i64, ApiError> {
        match q.get(k) {
            None => Ok(default),
            Some(s) => crate::clock::parse_rfc3339(s)
                .ok_or_else(|| ApiError::invalid(k, "an RFC 3339 timestamp")),
        }
    };
    let to = ts("to", now)?;
    let from = ts("from", to - 7 * 86_400_000)?;
    if from >= to {
        return Err(ApiError::invalid("from", "must be before `to`"));
    }
    let interval = match q.get("interval") {
        None => Interval::Day,
        Some(s) => {
            Interval::parse(s).ok_or_else(|| ApiError::invalid("interval", "hour or day"))?
        }
    };
    let (from_h, to_h) = (
        from.div_euclid(HOUR_MS),
        (to + HOUR_MS - 1).div_euclid(HOUR_MS),
    );
    let bucket_hours = match interval {
        Interval::Hour => 1,
        Interval::Day => 24,
    };
    let counted = analytics::Counted {
        rows: app.store.stats(&id, from_h, to_h).await?,
        uniques: app.store.stat_uniques(&id, from_h, to_h).await?,
        converted: app
            .store
            .stat_bucket_uniques(&id, from_h, to_h, bucket_hours)
            .await?,
    };
    let variants: Vec<(String, bool)> = camp
        .variants
        .iter()
        .map(|v| (v.id.clone(), v.control))
        .collect();
    let body = analytics::summarize(&id, from, to, interval, &variants, &counted);
    let wants_csv = format_csv
        || headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            analytics::to_csv(&body),
        )
            .into_response());
    }
    Ok(Json(body).into_response())
}

/// `GET /v1/overview`: live figures for the dashboard.
pub async fn overview(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    use crate::metrics::{DoorLabel, OutcomeLabel};
    require_admin(&app, &headers)?;
    let m = &app.metrics;
    let events: u64 = ["ws", "rest", "segment"]
        .iter()
        .map(|door| m.events.get_or_create(&DoorLabel { door }).get())
        .sum();
    let mut decisions = serde_json::Map::new();
    for outcome in [
        "delivered",
        "pending",
        "control",
        "capped",
        "not_in_audience",
        "outside_schedule",
        "lost_to_priority",
        "modal_busy",
        "expired",
        "revoked",
    ] {
        decisions.insert(
            outcome.into(),
            json!(m.decisions.get_or_create(&OutcomeLabel { outcome }).get()),
        );
    }
    Ok(Json(json!({
        "sessions": m.sessions.get(),
        "connections": m.connections.get(),
        "events_total": events,
        "decisions": decisions,
        "campaigns": app.engine.rules.load().campaigns.len(),
        "server_time": crate::clock::rfc3339(app.clock.now_ms()),
    })))
}
