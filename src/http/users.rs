//! Admin user calls: `GET/PATCH /v1/users/{id}`, `POST /v1/users/{id}/events`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Map, Value};

use super::{require_admin, ApiError, JsonBody};
use crate::app::App;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::metrics::DoorLabel;
use crate::profile::{Mutation, Outcome};
use crate::protocol::limits::EventNameError;

/// Longest user id accepted.
pub const MAX_USER_ID: usize = 256;

pub fn check_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_USER_ID {
        return Err(ApiError::invalid(
            "id",
            format!("user id must be 1..={MAX_USER_ID} bytes"),
        ));
    }
    Ok(())
}

/// The user as the API shows it.
async fn user_view(app: &App, id: &str) -> Result<Option<Value>, ApiError> {
    let rs = app.engine.rules.load_full();
    let view = app
        .profiles
        .read(id, |s| {
            let now = app.clock.now_ms();
            let segments = crate::engine::segments_now(app, &rs, s, now);
            let mut aggregates = Map::new();
            let mut engagement = Map::new();
            for (name, a) in &s.aggregates {
                let view = json!({"count": a.count, "first_seen": rfc3339(a.first), "last_seen": rfc3339(a.last)});
                match name.strip_prefix("$engage:").and_then(|r| r.rsplit_once(':')) {
                    Some((campaign, did)) => {
                        let e = engagement.entry(campaign.to_string()).or_insert_with(|| json!({}));
                        e[did] = json!(a.count);
                    }
                    None => {
                        aggregates.insert(name.clone(), view);
                    }
                }
            }
            // Deliveries are counted in the cap state (older ones as `$engage:` rows too).
            for (campaign, cap) in s.engine.caps.iter().filter(|(_, c)| c.delivered > 0) {
                let e = engagement.entry(campaign.clone()).or_insert_with(|| json!({}));
                e["delivered"] = json!(e["delivered"].as_u64().unwrap_or(0) + cap.delivered);
            }
            let activity = crate::profile::activity_at(s.activity, now, app.engine.derive.half_life);
            json!({"attributes": s.attributes, "aggregates": aggregates, "segments": segments,
                   "engagement": engagement, "activity": (activity * 100.0).round() / 100.0})
        })
        .await?;
    let sessions: Vec<Value> = app
        .registry
        .live_sessions(id)
        .iter()
        .map(|s| {
            json!({
                "session": &*s.id,
                "started_at": rfc3339(s.started_at),
                "last_active": rfc3339(s.last_active.load(Ordering::Relaxed)),
                "page": s.core.lock().page,
            })
        })
        .collect();
    let Some(mut view) = view else {
        return Ok(None);
    };
    view["id"] = json!(id);
    view["sessions"] = json!(sessions);
    Ok(Some(view))
}

pub async fn get_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    check_user_id(&id)?;
    user_view(&app, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
}

/// Validates an attributes object for a trusted door.
pub fn check_attributes(
    app: &App,
    path: &str,
    v: Option<&Value>,
) -> Result<Map<String, Value>, ApiError> {
    let Some(Value::Object(attrs)) = v else {
        return Err(ApiError::invalid(
            path,
            "must be an object of attribute name to value (null removes)",
        ));
    };
    if let Some(k) = attrs.keys().find(|k| k.starts_with('$') || k.is_empty()) {
        return Err(ApiError::invalid(
            format!("{path}.{k}"),
            "attribute names must be non-empty and not start with `$` (reserved)",
        ));
    }
    app.values
        .check_object(path, attrs)
        .map_err(|e| ApiError::too_large(e.path, e.message))?;
    Ok(attrs.clone())
}

pub async fn patch_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    check_user_id(&id)?;
    let attributes = check_attributes(&app, "attributes", body.get("attributes"))?;
    let m = Mutation::Attributes {
        id: None,
        attributes,
        trusted: true,
    };
    let out = crate::engine::ingest(&app, &id, vec![m], vec![], None).await?;
    if let Some(Outcome::Forbidden(k)) = out.first() {
        return Err(ApiError::invalid(
            format!("attributes.{k}"),
            "reserved attribute",
        ));
    }
    Ok(Json(
        user_view(&app, &id)
            .await?
            .unwrap_or_else(|| json!({"id": id})),
    ))
}

/// The array at `field`, at most `limits.events_per_request` long.
pub fn bounded_array<'a>(
    app: &App,
    body: &'a Value,
    field: &str,
    what: &str,
) -> Result<&'a Vec<Value>, ApiError> {
    let Some(Value::Array(items)) = body.get(field) else {
        return Err(ApiError::invalid(field, format!("required: {what}")));
    };
    let max = app.cfg.limits.events_per_request;
    if items.len() > max {
        return Err(ApiError::too_large(
            field,
            format!("at most {max} items per request"),
        ));
    }
    Ok(items)
}

/// One validated server-side event.
pub struct ServerEvent {
    pub id: Option<String>,
    pub name: String,
    pub properties: Map<String, Value>,
    pub at: Option<i64>,
}

/// What a door calls an event's id and time, for error paths: the REST API's `id` and
/// `at`, Segment's `messageId` and `timestamp`.
pub struct EventKeys {
    pub id: &'static str,
    pub at: &'static str,
}

/// The REST API's names.
pub const REST_KEYS: EventKeys = EventKeys { id: "id", at: "at" };

/// Validates an event name, properties and timestamp from a trusted door.
pub fn check_event(
    app: &App,
    path: &str,
    keys: &EventKeys,
    id: Option<&Value>,
    name: Option<&Value>,
    props: Option<&Value>,
    at: Option<&Value>,
) -> Result<ServerEvent, ApiError> {
    let id = match id {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= crate::protocol::decode::MAX_ID_BYTES =>
        {
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{path}.{}", keys.id),
                "must be a non-empty string of at most 256 bytes",
            ))
        }
    };
    let name = match name {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::invalid(
                format!("{path}.event"),
                "required: the event name as a string",
            ))
        }
    };
    app.values
        .check_event_name(&name, false)
        .map_err(|e| match e {
            EventNameError::Invalid(m) => ApiError::invalid(format!("{path}.event"), m),
            EventNameError::TooLong(m) => ApiError::too_large(format!("{path}.event"), m),
        })?;
    let properties = match props {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{path}.properties"),
                "must be an object",
            ))
        }
    };
    app.values
        .check_object(&format!("{path}.properties"), &properties)
        .map_err(|e| ApiError::too_large(e.path, e.message))?;
    let at = match at {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = parse_rfc3339(s).ok_or_else(|| {
                ApiError::invalid(
                    format!("{path}.{}", keys.at),
                    "must be an RFC 3339 timestamp",
                )
            })?;
            // Clock skew is tolerated; events from the far future are not.
            if t > app.clock.now_ms() + 300_000 {
                return Err(ApiError::invalid(
                    format!("{path}.{}", keys.at),
                    "more than 5 minutes in the future",
                ));
            }
            Some(t)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{path}.{}", keys.at),
                "must be an RFC 3339 timestamp string",
            ))
        }
    };
    Ok(ServerEvent {
        id,
        name,
        properties,
        at,
    })
}

/// Applies validated events for one user; returns (accepted ids, duplicate count).
pub async fn apply_events(
    app: &Arc<App>,
    user: &str,
    events: Vec<ServerEvent>,
    door: &'static str,
) -> Result<(Vec<String>, usize), ApiError> {
    let ids: Vec<Option<String>> = events.iter().map(|e| e.id.clone()).collect();
    let n = events.len();
    let muts = events
        .into_iter()
        .map(|e| Mutation::Event {
            id: e.id,
            name: e.name,
            properties: e.properties,
            at: e.at,
        })
        .collect();
    let outcomes = crate::engine::ingest(app, user, muts, vec![], None).await?;
    let dups = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    app.metrics
        .events
        .get_or_create(&DoorLabel { door })
        .inc_by((n - dups) as u64);
    app.metrics.duplicates.inc_by(dups as u64);
    Ok((ids.into_iter().flatten().collect(), dups))
}

pub async fn post_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    check_user_id(&id)?;
    let items = bounded_array(
        &app,
        &body,
        "events",
        "an array of {id, event, properties, at}",
    )?;
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("events[{i}]");
        if !item.is_object() {
            return Err(ApiError::invalid(path, "must be an object"));
        }
        events.push(check_event(
            &app,
            &path,
            &REST_KEYS,
            item.get("id"),
            item.get("event"),
            item.get("properties"),
            item.get("at"),
        )?);
    }
    let n = events.len();
    let (ids, dups) = apply_events(&app, &id, events, "rest").await?;
    Ok(Json(
        json!({"accepted": n - dups, "duplicates": dups, "ids": ids}),
    ))
}
