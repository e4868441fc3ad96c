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
    let mut items: Vec<Value> = rs.segments.values().map(|s| s.raw.clone()).collect();
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
