//! The Segment-compatible tracking API (`/v1/batch|track|identify|page`), so existing
//! Segment/RudderStack sources and `@segment/analytics-node` can send to Beckon: HTTP
//! Basic auth with a write key as user name, `messageId` as the dedup id, `identify`
//! traits as trusted attributes. Calls without `userId` (anonymous only) are accepted
//! and skipped: Beckon's users are the token's `sub`. `screen`, `group` and `alias`
//! are accepted and ignored.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::users::{
    apply_events, bounded_array, check_attributes, check_event, check_user_id, EventKeys,
    ServerEvent,
};
use super::{constant_time_eq, ApiError, JsonBody};
use crate::app::App;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::profile::Mutation;

/// Segment's names for an event's id and time (for error paths).
const SEGMENT_KEYS: EventKeys = EventKeys {
    id: "messageId",
    at: "timestamp",
};

fn require_write_key(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "Segment-compatible calls need HTTP Basic auth with a write key as user name",
            )
        })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| ApiError::unauthorized("malformed Basic credentials"))?;
    let decoded = String::from_utf8_lossy(&decoded);
    let key = decoded.split(':').next().unwrap_or_default();
    if !key.is_empty()
        && app
            .cfg
            .write_keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()))
    {
        Ok(())
    } else {
        Err(ApiError::unauthorized("unknown write key"))
    }
}

/// One validated Segment call.
enum Call {
    Event(String, ServerEvent),
    Identify(String, Option<String>, Map<String, Value>),
    Skip,
}

fn user_id(v: &Value, path: &str) -> Result<Option<String>, ApiError> {
    let id = match v.get("userId") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{path}.userId"),
                "must be a string",
            ))
        }
    };
    check_user_id(&id)
        .map_err(|_| ApiError::invalid(format!("{path}.userId"), "must be 1..=256 bytes"))?;
    Ok(Some(id))
}

/// A call's `timestamp`, corrected for the sender's clock as Segment does: with `sentAt`
/// (the call's own, else the batch's) the event happened `sentAt − timestamp` before the
/// call arrived, whatever the device's clock said. Without `sentAt`, as given.
fn corrected_timestamp(app: &App, v: &Value, batch_sent_at: Option<&Value>) -> Option<Value> {
    let timestamp = v.get("timestamp")?;
    let sent_at = v.get("sentAt").or(batch_sent_at).and_then(Value::as_str);
    match (
        timestamp.as_str().and_then(parse_rfc3339),
        sent_at.and_then(parse_rfc3339),
    ) {
        (Some(t), Some(sent)) => Some(Value::String(rfc3339(app.clock.now_ms() - (sent - t)))),
        _ => Some(timestamp.clone()),
    }
}

fn parse_call(
    app: &App,
    v: &Value,
    kind: &str,
    path: &str,
    batch_sent_at: Option<&Value>,
) -> Result<Call, ApiError> {
    if !v.is_object() {
        return Err(ApiError::invalid(path, "must be an object"));
    }
    let uid = user_id(v, path)?;
    if !matches!(kind, "track" | "identify" | "page") {
        if matches!(kind, "screen" | "group" | "alias") {
            return Ok(Call::Skip);
        }
        return Err(ApiError::invalid(
            format!("{path}.type"),
            "one of track, identify, page, screen, group, alias",
        ));
    }
    let Some(uid) = uid else {
        if v.get("anonymousId").is_some() {
            return Ok(Call::Skip);
        }
        return Err(ApiError::invalid(
            format!("{path}.userId"),
            "required (or anonymousId, which is accepted and skipped)",
        ));
    };
    let message_id = v.get("messageId");
    let timestamp = corrected_timestamp(app, v, batch_sent_at);
    let timestamp = timestamp.as_ref();
    match kind {
        "track" => Ok(Call::Event(
            uid,
            check_event(
                app,
                path,
                &SEGMENT_KEYS,
                message_id,
                v.get("event"),
                v.get("properties"),
                timestamp,
            )?,
        )),
        "page" => {
            let mut props = match v.get("properties") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!("{path}.properties"),
                        "must be an object",
                    ))
                }
            };
            if !props.contains_key("path") {
                if let Some(p) = props.get("url").and_then(Value::as_str).and_then(url_path) {
                    props.insert("path".into(), Value::String(p));
                }
            }
            if let (false, Some(Value::String(name))) = (props.contains_key("title"), v.get("name"))
            {
                props.insert("title".into(), Value::String(name.clone()));
            }
            let props = Value::Object(props);
            let name = Value::String("$page_view".into());
            Ok(Call::Event(
                uid,
                check_event(
                    app,
                    path,
                    &SEGMENT_KEYS,
                    message_id,
                    Some(&name),
                    Some(&props),
                    timestamp,
                )?,
            ))
        }
        _ => {
            let traits = match v.get("traits") {
                None | Some(Value::Null) => Map::new(),
                other => check_attributes(app, &format!("{path}.traits"), other)?,
            };
            let mid = match message_id {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            Ok(Call::Identify(uid, mid, traits))
        }
    }
}

/// The path of an absolute or relative URL.
fn url_path(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => {
            return url
                .starts_with('/')
                .then(|| url.split(['?', '#']).next().unwrap_or("/").to_string())
        }
    };
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    Some(path.split(['?', '#']).next().unwrap_or("/").to_string())
}

async fn run(app: &Arc<App>, calls: Vec<Call>) -> Result<(), ApiError> {
    // Consecutive calls for one user are applied together, in order.
    let mut i = 0;
    let calls: Vec<Call> = calls
        .into_iter()
        .filter(|c| !matches!(c, Call::Skip))
        .collect();
    while i < calls.len() {
        match &calls[i] {
            Call::Identify(uid, mid, traits) => {
                let m = Mutation::Attributes {
                    id: mid.clone(),
                    attributes: traits.clone(),
                    trusted: true,
                };
                crate::engine::ingest(app, uid, vec![m], vec![], None).await?;
                i += 1;
            }
            Call::Event(uid, _) => {
                let uid = uid.clone();
                let mut events = Vec::new();
                while let Some(Call::Event(u, e)) = calls.get(i) {
                    if *u != uid {
                        break;
                    }
                    events.push(ServerEvent {
                        id: e.id.clone(),
                        name: e.name.clone(),
                        properties: e.properties.clone(),
                        at: e.at,
                    });
                    i += 1;
                }
                apply_events(app, &uid, events, "segment").await?;
            }
            Call::Skip => i += 1,
        }
    }
    Ok(())
}

async fn single(
    app: Arc<App>,
    headers: HeaderMap,
    body: Value,
    kind: &str,
) -> Result<Json<Value>, ApiError> {
    require_write_key(&app, &headers)?;
    let call = parse_call(&app, &body, kind, "body", None)?;
    run(&app, vec![call]).await?;
    Ok(Json(json!({"success": true})))
}

pub async fn track(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    single(app, headers, body, "track").await
}

pub async fn identify(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    single(app, headers, body, "identify").await
}

pub async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    single(app, headers, body, "page").await
}

pub async fn batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require_write_key(&app, &headers)?;
    let items = bounded_array(
        &app,
        &body,
        "batch",
        "an array of track/identify/page calls",
    )?;
    // Each call stands alone: one bad call is reported, not the whole batch refused
    // (Segment's libraries do not retry a 400, so its good calls would be lost). A batch
    // with no good call at all is a 400 naming the first bad one.
    let sent_at = body.get("sentAt");
    let mut calls = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut first_error = None;
    for (i, item) in items.iter().enumerate() {
        let path = format!("batch[{i}]");
        let call = item
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid(format!("{path}.type"), "required: track, identify or page")
            })
            .and_then(|kind| parse_call(&app, item, kind, &path, sent_at));
        match call {
            Ok(c) => calls.push(c),
            Err(e) => {
                rejected.push(json!({"index": i, "error": e.body()}));
                first_error.get_or_insert(e);
            }
        }
    }
    if calls.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    run(&app, calls).await?;
    if rejected.is_empty() {
        return Ok(Json(json!({"success": true})));
    }
    Ok(Json(json!({"success": true, "rejected": rejected})))
}

#[cfg(test)]
mod tests {
    use super::url_path;

    #[test]
    fn url_paths() {
        assert_eq!(
            url_path("https://app.example.com/setup?x=1").as_deref(),
            Some("/setup")
        );
        assert_eq!(url_path("https://app.example.com").as_deref(), Some("/"));
        assert_eq!(url_path("/a/b#c").as_deref(), Some("/a/b"));
        assert_eq!(url_path("nope"), None);
    }
}
