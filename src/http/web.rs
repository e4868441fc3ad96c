//! Browser pages served by the gateway itself, embedded in the binary (built from `web/`
//! into `src/http/assets/`): the operator dashboard at `/dashboard/` (always; it holds no
//! data, every call it makes needs the admin token) and, in `--dev` mode, the demo app at
//! `/demo/` with its helpers `/demo/token` and `/demo/plan`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{ApiError, JsonBody};
use crate::app::App;
use crate::profile::Mutation;

#[derive(rust_embed::RustEmbed)]
#[folder = "src/http/assets/"]
struct Assets;

fn asset(path: &str) -> Option<Response> {
    let file = Assets::get(path)?;
    let mime = file.metadata.mimetype().to_string();
    Some(
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    )
}

/// Serves `section/path`, falling back to the section's `index.html` (client-side routes).
fn serve(section: &str, path: &str) -> Response {
    let path = path.trim_start_matches('/');
    if !path.is_empty() {
        if let Some(r) = asset(&format!("{section}/{path}")) {
            return r;
        }
    }
    asset(&format!("{section}/index.html")).unwrap_or_else(|| {
        ApiError::not_found(format!(
            "the {section} assets are not built: cd web && npm ci && npm run build"
        ))
        .into_response()
    })
}

pub async fn dashboard_root() -> Redirect {
    Redirect::permanent("/dashboard/")
}

pub async fn dashboard_index() -> Response {
    serve("dashboard", "")
}

pub async fn dashboard(Path(path): Path<String>) -> Response {
    serve("dashboard", &path)
}

fn dev_only(app: &App) -> Result<(), ApiError> {
    if app.cfg.dev {
        Ok(())
    } else {
        Err(ApiError::not_found("the demo is served in --dev mode only"))
    }
}

pub async fn demo_root(State(app): State<Arc<App>>) -> Result<Redirect, ApiError> {
    dev_only(&app)?;
    Ok(Redirect::temporary("/demo/"))
}

pub async fn demo_index(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    dev_only(&app)?;
    Ok(serve("demo", ""))
}

pub async fn demo(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    dev_only(&app)?;
    Ok(serve("demo", &path))
}

fn demo_user(v: Option<&String>) -> Result<String, ApiError> {
    match v {
        Some(u)
            if !u.is_empty()
                && u.len() <= 64
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(u.clone())
        }
        _ => Err(ApiError::invalid(
            "user",
            "a demo user id of 1..=64 characters A-Z a-z 0-9 - _",
        )),
    }
}

/// `GET /demo/token?user=`: a one-hour token signed with the dev secret, for a demo user.
pub async fn demo_token(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    dev_only(&app)?;
    let user = demo_user(q.get("user"))?;
    let secret = app.cfg.jwt.secret.clone().unwrap_or_default();
    // Marks the user as a demo user: the seeded example campaigns target only them.
    let mut attrs = Map::new();
    attrs.insert("demo".into(), Value::Bool(true));
    let token = crate::auth::mint_hs256(&secret, &user, attrs, app.clock.now_secs(), Some(3600));
    Ok(Json(json!({"token": token})))
}

/// `POST /demo/plan {"user","plan"}`: what the demo's backend would do on a plan change.
pub async fn demo_plan(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    dev_only(&app)?;
    let user = demo_user(
        body.get("user")
            .and_then(Value::as_str)
            .map(str::to_string)
            .as_ref(),
    )?;
    let plan = body
        .get("plan")
        .and_then(Value::as_str)
        .filter(|p| ["free", "professional", "enterprise"].contains(p));
    let plan = plan.ok_or_else(|| ApiError::invalid("plan", "free, professional or enterprise"))?;
    let mut attrs = Map::new();
    attrs.insert("plan".into(), json!(plan));
    if plan == "professional" {
        // So the seeded "5 days after signup" segment has something to look at.
        attrs.insert(
            "signed_up_at".into(),
            json!(crate::clock::rfc3339(app.clock.now_ms() - 6 * 86_400_000)),
        );
    }
    crate::engine::ingest(
        &app,
        &user,
        vec![Mutation::Attributes {
            id: None,
            attributes: attrs,
            trusted: true,
        }],
        vec![],
        None,
    )
    .await?;
    Ok(Json(json!({"user": user, "plan": plan})))
}
