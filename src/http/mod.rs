//! The HTTP side on the gateway's one port: admin API (users, events), the
//! Segment-compatible tracking API, health, readiness and metrics, and the WebSocket
//! upgrade at `/v1/ws`. Handlers validate and translate; state changes go through
//! `profile::Profiles` like the WebSocket door's.

mod admin;
pub mod error;
mod health;
mod segment;
mod users;
mod web;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::app::App;
use crate::gateway::ConnSlot;
pub use error::ApiError;

/// The router for every HTTP route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/ws", get(ws_upgrade))
        .route(
            "/v1/users/{id}",
            get(users::get_user).patch(users::patch_user),
        )
        .route("/v1/users/{id}/events", post(users::post_events))
        .route("/v1/users/{id}/explain", get(admin::explain))
        .route("/v1/segments", get(admin::list_segments))
        .route(
            "/v1/segments/{id}",
            get(admin::get_segment)
                .put(admin::put_segment)
                .delete(admin::delete_segment),
        )
        .route("/v1/campaigns", get(admin::list_campaigns))
        .route(
            "/v1/campaigns/{id}",
            get(admin::get_campaign)
                .put(admin::put_campaign)
                .delete(admin::delete_campaign),
        )
        .route("/v1/batch", post(segment::batch))
        .route("/v1/track", post(segment::track))
        .route("/v1/identify", post(segment::identify))
        .route("/v1/page", post(segment::page))
        .route("/v1/campaigns/{id}/stats", get(admin::stats))
        .route("/v1/overview", get(admin::overview))
        .route("/dashboard", get(web::dashboard_root))
        .route("/dashboard/", get(web::dashboard_index))
        .route("/dashboard/{*path}", get(web::dashboard))
        .route("/demo", get(web::demo_root))
        .route("/demo/", get(web::demo_index))
        .route("/demo/token", get(web::demo_token))
        .route("/demo/plan", post(web::demo_plan))
        .route("/demo/{*path}", get(web::demo))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(app)
}

/// Serves HTTP/1 on one TCP connection (with upgrades), draining on shutdown. Every
/// request carries the connection's slot, so an upgraded session keeps holding it.
pub async fn serve_connection(
    app: Arc<App>,
    router: Router,
    stream: TcpStream,
    slot: Arc<ConnSlot>,
) {
    let service = TowerToHyperService::new(router.layer(axum::Extension(slot)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = app.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// `GET /v1/ws`: the RFC 6455 handshake done by hand so the session runs directly on
/// tokio-tungstenite with our buffer sizes.
async fn ws_upgrade(
    State(app): State<Arc<App>>,
    slot: Option<axum::Extension<Arc<ConnSlot>>>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return ApiError {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "upgrade_required",
            message: "this endpoint speaks WebSocket".into(),
            path: None,
        }
        .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return ApiError::invalid("Sec-WebSocket-Version", "WebSocket version 13 is required")
            .into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return ApiError::invalid("Sec-WebSocket-Key", "missing Sec-WebSocket-Key").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let app2 = app.clone();
    app.tracker.spawn(async move {
        // The session holds the connection's slot for as long as it runs.
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => crate::gateway::run_upgraded(app2, upgraded).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Checks `Authorization: Bearer <admin token>` in constant time.
pub fn require_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("admin calls need Authorization: Bearer <admin token>")
        })?;
    let want = app.cfg.admin_token.as_deref().unwrap_or_default();
    if constant_time_eq(given.trim().as_bytes(), want.as_bytes()) && !want.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong admin token"))
    }
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body with our error mapping: 413 over the configured limit, 400 otherwise.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let limit = app.cfg.limits.http_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::body_too_large(limit))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON with a readable error.
pub fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid("body", format!("body has the wrong shape: {e}"))
        }
        _ => ApiError::invalid_json(format!("body is not valid JSON: {e}")),
    })
}
