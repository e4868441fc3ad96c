//! `/healthz` (liveness), `/readyz` (store reachable, not draining), `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => axum::Json(json!({"status": "ready", "store": "ok"})).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "store": e.to_string()})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "store": "timeout"})),
        )
            .into_response(),
    }
}

/// Prometheus text format (0.0.4) by default; OpenMetrics for a scraper that asks for it
/// (`Accept: application/openmetrics-text`, as Prometheus itself does).
pub async fn metrics(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics.render(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            app.metrics.render_prometheus(),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
