//! Segment and campaign definitions (contract §4, §5): validated in full on PUT (every
//! error with the path of the offending field and what is allowed there) and compiled
//! into the forms the engine evaluates.

use serde_json::{Map, Value};

use super::condition::{compile, Cond, CondError, Context, Deps};
use super::template::Template;
use crate::clock::{parse_rfc3339, Millis};

fn err(path: &str, message: impl Into<String>) -> CondError {
    CondError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Longest definition id.
pub const MAX_ID: usize = 128;

/// Checks a definition id from the URL against the body's.
pub fn check_id(id: &str, body: &Value) -> Result<(), CondError> {
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(err(
            "id",
            format!("ids are 1..={MAX_ID} characters of A-Z a-z 0-9 - _ . :"),
        ));
    }
    match body.get("id") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == id => Ok(()),
        Some(_) => Err(err("id", "must match the id in the URL")),
    }
}

fn name(body: &Value) -> Result<String, CondError> {
    match body.get("name") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= 256 => Ok(s.clone()),
        Some(_) => Err(err("name", "must be a string of at most 256 bytes")),
    }
}

fn duration(v: Option<&Value>, path: &str) -> Result<Option<Millis>, CondError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::duration::parse(s)
            .map(|d| Some(d.as_millis() as Millis))
            .map_err(|e| err(path, e)),
        Some(_) => Err(err(
            path,
            "must be a duration string such as \"30m\" or \"7d\"",
        )),
    }
}

/// A compiled segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The condition.
    pub cond: Cond,
    /// What it reads.
    pub deps: Deps,
    /// The definition as saved.
    pub raw: Value,
}

/// Validates and compiles a segment body.
pub fn parse_segment(id: &str, body: &Value) -> Result<Segment, CondError> {
    if !body.is_object() {
        return Err(err(
            "body",
            "a segment is an object {\"name\":…,\"conditions\":{…}}",
        ));
    }
    check_id(id, body)?;
    let name = name(body)?;
    let c = body
        .get("conditions")
        .ok_or_else(|| err("conditions", "required"))?;
    let cond = compile(c, "conditions", Context::User)?;
    let mut deps = Deps::default();
    cond.deps(&mut deps);
    let mut raw = body.clone();
    raw["id"] = Value::String(id.to_string());
    Ok(Segment {
        id: id.to_string(),
        name,
        cond,
        deps,
        raw,
    })
}

/// Campaign status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not live yet.
    Draft,
    /// Live.
    Active,
    /// Stopped for now.
    Paused,
    /// Retired.
    Archived,
}

/// A page pattern: exact, or a glob where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq)]
pub struct PagePattern(pub String);

impl PagePattern {
    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        glob(self.0.as_bytes(), path.as_bytes())
    }

    /// Whether an optional page filter admits a session's current page (no filter:
    /// any page; a filter and no known page: no).
    pub fn admits(filter: &Option<PagePattern>, current: &Option<String>) -> bool {
        match (filter, current) {
            (Some(p), Some(cur)) => p.matches(cur),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What fires a campaign.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Each matching event.
    Event {
        /// Event name.
        event: String,
        /// Filter over the event's properties (and user/session forms).
        filter: Option<Cond>,
    },
    /// A session idle on a page for `dur`.
    Inactivity {
        /// Idle time, ms.
        dur: Millis,
        /// Page filter.
        page: Option<PagePattern>,
    },
    /// A session open for `dur`.
    SessionDuration {
        /// Open time, ms.
        dur: Millis,
    },
    /// The user enters a segment.
    SegmentEntry {
        /// Segment id.
        segment: String,
    },
    /// Lifetime count of an event reaches `count` (once per user).
    GoalCount {
        /// Event name.
        event: String,
        /// Count to reach.
        count: u64,
    },
    /// Conditions first hold (once per user).
    GoalCond {
        /// The milestone.
        cond: Cond,
        /// What it reads.
        deps: Deps,
    },
}

impl Trigger {
    /// Wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Event { .. } => "event",
            Trigger::Inactivity { .. } => "inactivity",
            Trigger::SessionDuration { .. } => "session_duration",
            Trigger::SegmentEntry { .. } => "segment_entry",
            Trigger::GoalCount { .. } | Trigger::GoalCond { .. } => "goal",
        }
    }
}

/// Who may receive a campaign.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Everyone.
    Everyone,
    /// Members of a segment.
    Segment(String),
    /// Users (and sessions) meeting conditions.
    Conditions(Cond, Value),
}

/// A message with its text templates.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message as saved.
    pub raw: Value,
    /// `(JSON pointer, template)` for every text field.
    templates: Vec<(String, Template)>,
}

impl Message {
    /// `modal`, `banner`, …
    pub fn kind(&self) -> &str {
        self.raw.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The message with templates rendered for this user.
    pub fn render(&self, attrs: &Map<String, Value>) -> Value {
        let mut out = self.raw.clone();
        for (ptr, t) in &self.templates {
            if let Some(slot) = out.pointer_mut(ptr) {
                *slot = Value::String(t.render(attrs));
            }
        }
        out
    }
}

/// One variant.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Id.
    pub id: String,
    /// Relative weight.
    pub weight: u64,
    /// Control: exposure recorded, nothing sent.
    pub control: bool,
    /// The message (None for control).
    pub message: Option<Message>,
}

/// Frequency caps.
#[derive(Debug, Clone, Default)]
pub struct Frequency {
    /// Per user, ever.
    pub max_per_user: Option<u64>,
    /// Per session.
    pub max_per_session: Option<u64>,
    /// Since the user's last delivery of the campaign, ms.
    pub min_interval: Option<Millis>,
}

/// The campaign's conversion goal.
#[derive(Debug, Clone)]
pub struct Goal {
    /// Event name.
    pub event: String,
    /// Window after the impression, ms.
    pub within: Millis,
}

/// A compiled campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Id.
    pub id: String,
    /// `campaign_key(id)`, for the user's cap state and decisions.
    pub key: u64,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Trigger.
    pub trigger: Trigger,
    /// Audience.
    pub audience: Audience,
    /// Variants.
    pub variants: Vec<Variant>,
    /// Caps.
    pub frequency: Frequency,
    /// Higher wins among campaigns fired by one cause.
    pub priority: i64,
    /// Schedule start.
    pub start: Option<Millis>,
    /// Schedule end.
    pub end: Option<Millis>,
    /// Conversion goal.
    pub goal: Option<Goal>,
    /// How long an unseen delivery stays valid, ms.
    pub expires_after: Millis,
    /// The definition as saved.
    pub raw: Value,
}

/// Default `expires_after` (contract §6).
pub const DEFAULT_EXPIRES: Millis = 24 * 3_600_000;

impl Campaign {
    /// Active and inside the schedule at `now`.
    pub fn live_at(&self, now: Millis) -> bool {
        self.status == Status::Active
            && self.start.is_none_or(|s| now >= s)
            && self.end.is_none_or(|e| now < e)
    }

    /// The variant for a user: a stable hash of (user, campaign) over the weights.
    pub fn variant_for(&self, user: &str) -> &Variant {
        let total: u64 = self.variants.iter().map(|v| v.weight).sum();
        let mut point = stable_hash(user, &self.id) % total.max(1);
        for v in &self.variants {
            if point < v.weight {
                return v;
            }
            point -= v.weight;
        }
        &self.variants[0]
    }
}

/// FNV-1a over (user, campaign) with a splitmix finish: stable across builds and nodes.
pub fn stable_hash(user: &str, campaign: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes().chain([0u8]).chain(campaign.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Refuses unknown keys where a typo would silently change a definition's meaning
/// (`"witin"` in a condition made a windowed count a lifetime one; `"max_per_usr"` left a
/// campaign uncapped): inside conditions, and in a campaign's trigger, audience,
/// frequency, schedule and goal. The top level and messages may carry extra keys (kept
/// and ignored: tooling often adds a description or tags). Checked on PUT, after the
/// definition parsed, so definitions stored by an earlier version load as before.
pub fn check_keys(kind: &str, body: &Value) -> Result<(), CondError> {
    let Value::Object(b) = body else {
        return Ok(());
    };
    if kind == "segment" {
        return b
            .get("conditions")
            .map_or(Ok(()), |c| cond_keys(c, "conditions"));
    }
    if let Some(Value::Object(t)) = b.get("trigger") {
        let allowed: &[&str] = match t.get("type").and_then(Value::as_str) {
            Some("event") => &["type", "event", "where"],
            Some("inactivity") => &["type", "duration", "page"],
            Some("session_duration") => &["type", "duration"],
            Some("segment_entry") => &["type", "segment"],
            Some("goal") => &["type", "event", "count", "conditions"],
            _ => return Ok(()),
        };
        only(t, "trigger", allowed)?;
        if let Some(w) = t.get("where") {
            cond_keys(w, "trigger.where")?;
        }
        if let Some(c) = t.get("conditions") {
            cond_keys(c, "trigger.conditions")?;
        }
    }
    if let Some(Value::Object(a)) = b.get("audience") {
        only(a, "audience", &["segment", "conditions"])?;
        if let Some(c) = a.get("conditions") {
            cond_keys(c, "audience.conditions")?;
        }
    }
    for (key, allowed) in [
        (
            "frequency",
            &["max_per_user", "max_per_session", "min_interval"][..],
        ),
        ("schedule", &["start", "end"][..]),
        ("goal", &["event", "within"][..]),
    ] {
        if let Some(Value::Object(o)) = b.get(key) {
            only(o, key, allowed)?;
        }
    }
    Ok(())
}

/// A condition node's keys, by its kind (the first kind key present, in the order
/// `condition::compile` reads them), recursively.
fn cond_keys(v: &Value, path: &str) -> Result<(), CondError> {
    const KINDS: [(&str, &[&str]); 9] = [
        ("all", &["all"]),
        ("any", &["any"]),
        ("not", &["not"]),
        ("prop", &["prop", "op", "value"]),
        ("page", &["page"]),
        ("attr", &["attr", "op", "value"]),
        ("since", &["since", "op", "value"]),
        ("event", &["event", "where", "within", "count", "last_seen"]),
        ("campaign", &["campaign", "did", "count"]),
    ];
    let Value::Object(o) = v else {
        return Ok(());
    };
    let Some((kind, allowed)) = KINDS.iter().find(|(k, _)| o.contains_key(*k)) else {
        return Ok(());
    };
    only(o, path, allowed)?;
    match *kind {
        "all" | "any" => {
            if let Some(Value::Array(items)) = o.get(*kind) {
                for (i, c) in items.iter().enumerate() {
                    cond_keys(c, &format!("{path}.{kind}[{i}]"))?;
                }
            }
        }
        "not" => cond_keys(&o["not"], &format!("{path}.not"))?,
        "event" => {
            if let Some(w) = o.get("where") {
                cond_keys(w, &format!("{path}.where"))?;
            }
        }
        _ => {}
    }
    // The {op, value} objects inside a node.
    for key in ["page", "count", "last_seen"] {
        if let Some(Value::Object(inner)) = o.get(key) {
            only(inner, &format!("{path}.{key}"), &["op", "value"])?;
        }
    }
    Ok(())
}

fn only(o: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), CondError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(err(
            &format!("{path}.{k}"),
            format!("unknown key `{k}`: expected {}", allowed.join(", ")),
        )),
    }
}

/// Looks up whether a segment id exists (for reference checks).
pub type SegmentExists<'a> = &'a dyn Fn(&str) -> bool;

fn parse_trigger(
    v: Option<&Value>,
    segment_exists: SegmentExists<'_>,
) -> Result<Trigger, CondError> {
    let Some(Value::Object(t)) = v else {
        return Err(err("trigger", "required: an object with a `type` (event, inactivity, session_duration, segment_entry, goal)"));
    };
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
    let req_str = |k: &str| -> Result<String, CondError> {
        match t.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(err(&format!("trigger.{k}"), "required: a non-empty string")),
        }
    };
    let req_dur = |k: &str| -> Result<Millis, CondError> {
        duration(t.get(k), &format!("trigger.{k}"))?
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                err(
                    &format!("trigger.{k}"),
                    "required: a positive duration such as \"5m\"",
                )
            })
    };
    Ok(match kind {
        "event" => {
            let event = req_str("event")?;
            let filter = match t.get("where") {
                None | Some(Value::Null) => None,
                Some(w) => Some(compile(w, "trigger.where", Context::Trigger)?),
            };
            Trigger::Event { event, filter }
        }
        "inactivity" => {
            let page = match t.get("page") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() => Some(PagePattern(s.clone())),
                Some(_) => {
                    return Err(err(
                        "trigger.page",
                        "a path such as \"/setup\" or a glob such as \"/setup*\"",
                    ))
                }
            };
            Trigger::Inactivity {
                dur: req_dur("duration")?,
                page,
            }
        }
        "session_duration" => Trigger::SessionDuration {
            dur: req_dur("duration")?,
        },
        "segment_entry" => {
            let segment = req_str("segment")?;
            if !segment_exists(&segment) {
                return Err(err(
                    "trigger.segment",
                    format!("no segment `{segment}`: create it first"),
                ));
            }
            Trigger::SegmentEntry { segment }
        }
        "goal" => match (t.get("event"), t.get("conditions")) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "trigger",
                    "a goal has either event (+count) or conditions, not both",
                ))
            }
            (Some(_), None) => {
                let event = req_str("event")?;
                let count = match t.get("count") {
                    None | Some(Value::Null) => 1,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| err("trigger.count", "a whole number >= 1"))?,
                };
                Trigger::GoalCount { event, count }
            }
            (None, Some(c)) => {
                let cond = compile(c, "trigger.conditions", Context::User)?;
                let mut deps = Deps::default();
                cond.deps(&mut deps);
                Trigger::GoalCond { cond, deps }
            }
            (None, None) => {
                return Err(err("trigger", "a goal needs event (+count) or conditions"))
            }
        },
        "" => {
            return Err(err(
                "trigger.type",
                "required: event, inactivity, session_duration, segment_entry or goal",
            ))
        }
        other => {
            return Err(err(
                "trigger.type",
                format!(
                "`{other}` is not one of event, inactivity, session_duration, segment_entry, goal"
            ),
            ))
        }
    })
}

fn check_url(v: &Value, path: &str, allow_relative: bool) -> Result<(), CondError> {
    let Value::String(u) = v else {
        return Err(err(path, "must be a string URL"));
    };
    let lower = u.trim().to_ascii_lowercase();
    let ok = lower.starts_with("https://")
        || lower.starts_with("http://")
        || (allow_relative && lower.starts_with('/') && !lower.starts_with("//"));
    // Browsers read `\` as `/`: `/\evil.example` would be a protocol-relative URL.
    let ok = ok && !u.contains('\\') && !u.chars().any(char::is_control);
    if !ok || u.len() > 2048 {
        return Err(err(
            path,
            if allow_relative {
                "must be an http(s) URL or a path starting with /"
            } else {
                "must be an http(s) URL"
            },
        ));
    }
    Ok(())
}

const MAX_TEXT: usize = 4096;

fn parse_message(v: &Value, path: &str) -> Result<Message, CondError> {
    let Value::Object(m) = v else {
        return Err(err(path, "required: an object with a `kind`"));
    };
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
    if !matches!(kind, "modal" | "banner" | "tooltip" | "slideout" | "custom") {
        return Err(err(
            &format!("{path}.kind"),
            "one of modal, banner, tooltip, slideout, custom",
        ));
    }
    let mut templates = Vec::new();
    let mut text = |key: &str, required: bool| -> Result<(), CondError> {
        let p = format!("{path}.{key}");
        match m.get(key) {
            None | Some(Value::Null) if !required => Ok(()),
            Some(Value::String(s)) if s.len() <= MAX_TEXT => {
                let t = Template::parse(s).map_err(|e| err(&p, e))?;
                templates.push((format!("/{key}"), t));
                Ok(())
            }
            Some(Value::String(_)) => Err(err(&p, format!("at most {MAX_TEXT} bytes"))),
            _ => Err(err(
                &p,
                if required {
                    "required: a string"
                } else {
                    "must be a string"
                },
            )),
        }
    };
    match kind {
        "modal" => {
            text("title", false)?;
            text("body", !m.contains_key("title"))?;
            if let Some(u) = m.get("image_url").filter(|u| !u.is_null()) {
                check_url(u, &format!("{path}.image_url"), true)?;
            }
        }
        "banner" => {
            text("body", true)?;
            match m.get("position") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "top" || s == "bottom" => {}
                _ => return Err(err(&format!("{path}.position"), "top or bottom")),
            }
        }
        "tooltip" => {
            text("body", true)?;
            match m.get("anchor") {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => {}
                _ => return Err(err(&format!("{path}.anchor"), "required: a CSS selector")),
            }
            match m.get("placement") {
                None | Some(Value::Null) => {}
                Some(Value::String(s))
                    if ["top", "bottom", "left", "right", "auto"].contains(&s.as_str()) => {}
                _ => {
                    return Err(err(
                        &format!("{path}.placement"),
                        "top, bottom, left, right or auto",
                    ))
                }
            }
        }
        "slideout" => {
            text("title", false)?;
            text("body", true)?;
        }
        _ => {
            if !m.get("data").is_some_and(Value::is_object) {
                return Err(err(
                    &format!("{path}.data"),
                    "required: an object for the app's own renderer",
                ));
            }
        }
    }
    if let Some(b) = m.get("buttons").filter(|b| !b.is_null()) {
        let Value::Array(buttons) = b else {
            return Err(err(
                &format!("{path}.buttons"),
                "must be an array of {id, label, url?, action?}",
            ));
        };
        if buttons.len() > 5 {
            return Err(err(&format!("{path}.buttons"), "at most 5 buttons"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, btn) in buttons.iter().enumerate() {
            let bp = format!("{path}.buttons[{i}]");
            let id = btn
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 64);
            let Some(id) = id else {
                return Err(err(&format!("{bp}.id"), "required: a non-empty string"));
            };
            if !ids.insert(id.to_string()) {
                return Err(err(&format!("{bp}.id"), "button ids must be unique"));
            }
            match btn.get("label") {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => {
                    let t = Template::parse(s).map_err(|e| err(&format!("{bp}.label"), e))?;
                    templates.push((format!("/buttons/{i}/label"), t));
                }
                _ => {
                    return Err(err(
                        &format!("{bp}.label"),
                        "required: a string of at most 256 bytes",
                    ))
                }
            }
            if let Some(u) = btn.get("url").filter(|u| !u.is_null()) {
                check_url(u, &format!("{bp}.url"), true)?;
            }
            match btn.get("action") {
                None | Some(Value::Null) => {}
                Some(Value::String(a)) if a == "dismiss" => {}
                _ => {
                    return Err(err(
                        &format!("{bp}.action"),
                        "the only action is \"dismiss\"",
                    ))
                }
            }
        }
    }
    Ok(Message {
        raw: v.clone(),
        templates,
    })
}

/// The event names a campaign fires or converts on, within the gateway's limit on event
/// names (`limits.max_event_name_chars`): a longer one could never be received, so the
/// campaign could never fire or convert.
pub fn check_event_names(c: &Campaign, max_chars: usize) -> Result<(), CondError> {
    let named = [
        match &c.trigger {
            Trigger::Event { event, .. } | Trigger::GoalCount { event, .. } => {
                Some(("trigger.event", event))
            }
            _ => None,
        },
        c.goal.as_ref().map(|g| ("goal.event", &g.event)),
    ];
    for (path, name) in named.into_iter().flatten() {
        if name.chars().count() > max_chars {
            return Err(err(
                path,
                format!("event names are at most {max_chars} characters (limits.max_event_name_chars); no such event can be received"),
            ));
        }
    }
    Ok(())
}

/// Validates and compiles a campaign body.
pub fn parse_campaign(
    id: &str,
    body: &Value,
    segment_exists: SegmentExists<'_>,
) -> Result<Campaign, CondError> {
    if !body.is_object() {
        return Err(err("body", "a campaign is an object (contract §5)"));
    }
    check_id(id, body)?;
    let name = name(body)?;
    let status = match body
        .get("status")
        .and_then(|s| if s.is_null() { None } else { Some(s) })
    {
        None => Status::Draft,
        Some(Value::String(s)) => match s.as_str() {
            "draft" => Status::Draft,
            "active" => Status::Active,
            "paused" => Status::Paused,
            "archived" => Status::Archived,
            _ => return Err(err("status", "one of draft, active, paused, archived")),
        },
        Some(_) => return Err(err("status", "one of draft, active, paused, archived")),
    };
    let trigger = parse_trigger(body.get("trigger"), segment_exists)?;
    let audience = match body.get("audience") {
        None | Some(Value::Null) => Audience::Everyone,
        Some(Value::Object(a)) => match (a.get("segment"), a.get("conditions")) {
            (Some(Value::String(s)), None) => {
                if !segment_exists(s) {
                    return Err(err(
                        "audience.segment",
                        format!("no segment `{s}`: create it first"),
                    ));
                }
                Audience::Segment(s.clone())
            }
            (None, Some(c)) => Audience::Conditions(
                compile(c, "audience.conditions", Context::Session)?,
                c.clone(),
            ),
            _ => {
                return Err(err(
                    "audience",
                    "either {\"segment\":\"id\"} or {\"conditions\":{…}}",
                ))
            }
        },
        Some(_) => {
            return Err(err(
                "audience",
                "either {\"segment\":\"id\"} or {\"conditions\":{…}}",
            ))
        }
    };
    let Some(Value::Array(vs)) = body.get("variants") else {
        return Err(err(
            "variants",
            "required: a non-empty array of {id, weight, message} (or control: true)",
        ));
    };
    if vs.is_empty() || vs.len() > 26 {
        return Err(err("variants", "between 1 and 26 variants"));
    }
    let mut variants = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, v) in vs.iter().enumerate() {
        let p = format!("variants[{i}]");
        let vid = v
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 64);
        let Some(vid) = vid else {
            return Err(err(&format!("{p}.id"), "required: a non-empty string"));
        };
        if !ids.insert(vid.to_string()) {
            return Err(err(&format!("{p}.id"), "variant ids must be unique"));
        }
        let weight = match v.get("weight") {
            None | Some(Value::Null) => 1,
            Some(w) => w
                .as_u64()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| err(&format!("{p}.weight"), "a whole number 0..=1000000"))?,
        };
        let control = match v.get("control") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(&format!("{p}.control"), "true or false")),
        };
        let message = match (control, v.get("message").filter(|m| !m.is_null())) {
            (true, Some(_)) => {
                return Err(err(
                    &format!("{p}.message"),
                    "a control variant sends nothing: drop its message",
                ))
            }
            (true, None) => None,
            (false, Some(m)) => Some(parse_message(m, &format!("{p}.message"))?),
            (false, None) => {
                return Err(err(
                    &format!("{p}.message"),
                    "required (or \"control\": true)",
                ))
            }
        };
        variants.push(Variant {
            id: vid.to_string(),
            weight,
            control,
            message,
        });
    }
    if variants.iter().map(|v| v.weight).sum::<u64>() == 0 {
        return Err(err("variants", "the weights must not all be 0"));
    }
    let frequency = match body.get("frequency") {
        None | Some(Value::Null) => Frequency::default(),
        Some(Value::Object(f)) => {
            let count = |k: &str| -> Result<Option<u64>, CondError> {
                match f.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v.as_u64().filter(|n| *n >= 1).map(Some).ok_or_else(|| {
                        err(&format!("frequency.{k}"), "a whole number >= 1 (or null)")
                    }),
                }
            };
            Frequency {
                max_per_user: count("max_per_user")?,
                max_per_session: count("max_per_session")?,
                min_interval: duration(f.get("min_interval"), "frequency.min_interval")?,
            }
        }
        Some(_) => {
            return Err(err(
                "frequency",
                "an object {max_per_user, max_per_session, min_interval}",
            ))
        }
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_i64()
            .filter(|p| p.abs() <= 1_000_000)
            .ok_or_else(|| err("priority", "an integer"))?,
    };
    let (start, end) = match body.get("schedule") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(s)) => {
            let ts = |k: &str| -> Result<Option<Millis>, CondError> {
                match s.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(t)) => parse_rfc3339(t).map(Some).ok_or_else(|| {
                        err(&format!("schedule.{k}"), "an RFC 3339 timestamp or null")
                    }),
                    Some(_) => Err(err(
                        &format!("schedule.{k}"),
                        "an RFC 3339 timestamp or null",
                    )),
                }
            };
            let (a, b) = (ts("start")?, ts("end")?);
            if let (Some(a), Some(b)) = (a, b) {
                if b <= a {
                    return Err(err("schedule.end", "must be after schedule.start"));
                }
            }
            (a, b)
        }
        Some(_) => return Err(err("schedule", "an object {start, end}")),
    };
    let goal = match body.get("goal") {
        None | Some(Value::Null) => None,
        Some(Value::Object(g)) => {
            let event = g
                .get("event")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| err("goal.event", "required: the conversion event name"))?;
            let within = duration(g.get("within"), "goal.within")?.unwrap_or(7 * 86_400_000);
            Some(Goal {
                event: event.to_string(),
                within,
            })
        }
        Some(_) => return Err(err("goal", "an object {event, within}")),
    };
    let expires_after =
        duration(body.get("expires_after"), "expires_after")?.unwrap_or(DEFAULT_EXPIRES);
    if expires_after <= 0 {
        return Err(err("expires_after", "must be a positive duration"));
    }
    let mut raw = body.clone();
    raw["id"] = Value::String(id.to_string());
    if raw.get("status").is_none_or(Value::is_null) {
        raw["status"] = Value::String("draft".into());
    }
    Ok(Campaign {
        id: id.to_string(),
        key: super::state::campaign_key(id),
        name,
        status,
        trigger,
        audience,
        variants,
        frequency,
        priority,
        start,
        end,
        goal,
        expires_after,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed() -> Value {
        json!({"id":"connect-integration","name":"Nudge","status":"active",
         "trigger":{"type":"segment_entry","segment":"pro-no-integration"},
         "audience":{"segment":"pro-no-integration"},
         "variants":[
           {"id":"a","weight":45,"message":{"kind":"modal","title":"Connect your first integration",
              "body":"Hi {{ user.first_name | default: \"there\" }}, it takes two minutes.",
              "buttons":[{"id":"go","label":"Connect now","url":"/integrations"},{"id":"later","label":"Later","action":"dismiss"}]}},
           {"id":"b","weight":45,"message":{"kind":"banner","body":"Connect an integration to sync your data.","buttons":[{"id":"go","label":"Connect","url":"/integrations"}]}},
           {"id":"control","weight":10,"control":true}],
         "frequency":{"max_per_user":1,"max_per_session":1,"min_interval":"1d"},
         "priority":50,
         "schedule":{"start":"2026-12-01T00:00:00Z","end":null},
         "goal":{"event":"integration_connected","within":"3d"},
         "expires_after":"30m"})
    }

    #[test]
    fn the_contract_example_parses() {
        let c = parse_campaign("connect-integration", &seed(), &|s| {
            s == "pro-no-integration"
        })
        .unwrap();
        assert_eq!(c.variants.len(), 3);
        assert_eq!(c.frequency.max_per_user, Some(1));
        assert_eq!(c.expires_after, 30 * 60_000);
        let attrs = json!({"first_name":"Ada"}).as_object().unwrap().clone();
        let m = c.variants[0].message.as_ref().unwrap().render(&attrs);
        assert_eq!(m["body"], "Hi Ada, it takes two minutes.");
    }

    #[test]
    fn unknown_keys_are_refused_where_they_would_change_the_meaning() {
        let keys = |f: &dyn Fn(&mut Value)| {
            let mut v = seed();
            f(&mut v);
            check_keys("campaign", &v).err().map(|e| e.path)
        };
        assert_eq!(keys(&|_| {}), None, "the contract's example");
        assert_eq!(keys(&|v| v["description"] = json!("x")), None, "top level");
        assert_eq!(
            keys(&|v| v["variants"][0]["message"]["x"] = json!(1)),
            None,
            "messages"
        );
        assert_eq!(
            keys(&|v| v["frequency"]["max_per_usr"] = json!(1)).as_deref(),
            Some("frequency.max_per_usr")
        );
        assert_eq!(
            keys(&|v| v["goal"]["witin"] = json!("1d")).as_deref(),
            Some("goal.witin")
        );
        assert_eq!(
            keys(&|v| v["schedule"]["stop"] = json!(null)).as_deref(),
            Some("schedule.stop")
        );
        assert_eq!(
            keys(&|v| v["trigger"]["page"] = json!("/x")).as_deref(),
            Some("trigger.page")
        );
        assert_eq!(
            keys(&|v| {
                v["audience"] = json!({"conditions":{"all":[
                    {"attr":"plan","op":"eq","value":"pro"},
                    {"event":"e","count":{"op":"gte","value":1},"witin":"30d"}]}})
            })
            .as_deref(),
            Some("audience.conditions.all[1].witin")
        );
        assert_eq!(
            keys(&|v| {
                v["trigger"] = json!({"type":"event","event":"e",
                    "where":{"not":{"prop":"p","op":"eq","value":1,"vaule":2}}})
            })
            .as_deref(),
            Some("trigger.where.not.vaule")
        );
        let seg = |c: Value| {
            check_keys("segment", &json!({"conditions": c}))
                .err()
                .map(|e| e.path)
        };
        assert_eq!(
            seg(json!({"event":"e","last_seen":{"op":"gte","value":"1d","unit":"d"}})).as_deref(),
            Some("conditions.last_seen.unit")
        );
        assert_eq!(
            seg(json!({"all":[{"attr":"a","op":"exists"}],"any":[]})).as_deref(),
            Some("conditions.any")
        );
        assert_eq!(
            seg(json!({"campaign":"c","did":"click","count":{"op":"gte","value":1}})),
            None
        );
    }

    #[test]
    fn validation_errors_have_paths() {
        let e = |f: &dyn Fn(&mut Value)| {
            let mut v = seed();
            f(&mut v);
            parse_campaign("connect-integration", &v, &|s| s == "pro-no-integration")
                .unwrap_err()
                .path
        };
        assert_eq!(e(&|v| v["status"] = json!("live")), "status");
        assert_eq!(
            e(&|v| v["trigger"]["type"] = json!("whenever")),
            "trigger.type"
        );
        assert_eq!(
            e(&|v| v["trigger"]["segment"] = json!("nope")),
            "trigger.segment"
        );
        assert_eq!(
            e(&|v| v["trigger"] = json!({"type":"inactivity","duration":"soon"})),
            "trigger.duration"
        );
        assert_eq!(
            e(&|v| v["variants"][0]["message"]["kind"] = json!("popup")),
            "variants[0].message.kind"
        );
        assert_eq!(
            e(
                &|v| v["variants"][0]["message"]["buttons"][0]["url"] =
                    json!("javascript:alert(1)")
            ),
            "variants[0].message.buttons[0].url"
        );
        for url in ["/\\evil.example", "//evil.example", "data:text/html,x"] {
            assert_eq!(
                e(&|v| v["variants"][0]["message"]["buttons"][0]["url"] = json!(url)),
                "variants[0].message.buttons[0].url",
                "{url}"
            );
        }
        assert_eq!(
            e(&|v| v["variants"][1]["message"]["body"] = json!("{{ user.x")),
            "variants[1].message.body"
        );
        assert_eq!(
            e(&|v| v["variants"][2]["message"] = json!({"kind":"banner","body":"x"})),
            "variants[2].message"
        );
        assert_eq!(
            e(&|v| v["frequency"]["min_interval"] = json!(5)),
            "frequency.min_interval"
        );
        assert_eq!(
            e(&|v| v["schedule"]["end"] = json!("2026-01-01T00:00:00Z")),
            "schedule.end"
        );
        assert_eq!(
            e(&|v| v["audience"] = json!({"conditions":{"attr":"plan","op":"eq"}})),
            "audience.conditions.value"
        );
        assert_eq!(e(&|v| v["id"] = json!("other")), "id");
    }

    #[test]
    fn globs() {
        let p = PagePattern("/setup*".into());
        assert!(p.matches("/setup") && p.matches("/setup/step-2") && !p.matches("/settings"));
        assert!(PagePattern("/a/*/edit".into()).matches("/a/42/edit"));
        assert!(!PagePattern("/setup".into()).matches("/setup/2"));
    }

    #[test]
    fn variants_are_stable_and_split_by_weight() {
        let c = parse_campaign("connect-integration", &seed(), &|_| true).unwrap();
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000 {
            let u = format!("user-{i}");
            let v = c.variant_for(&u).id.clone();
            assert_eq!(c.variant_for(&u).id, v, "stable per user");
            *counts.entry(v).or_insert(0) += 1;
        }
        // 45/45/10 within ±3 points (≈ 6 standard deviations at n = 10,000).
        for (id, want) in [("a", 4500), ("b", 4500), ("control", 1000)] {
            let got = counts[id];
            assert!((got as i64 - want).abs() < 300, "{id}: {got} vs {want}");
        }
    }
}
