//! Conditions (contract §4): parsed from JSON with a path for every error, compiled once
//! into [`Cond`] under depth and size limits, evaluated by pure functions over a user's
//! state ([`Subject`]). Also: an explaining evaluator (each node with its actual value
//! and verdict) and the next instant at which the passing of time alone could change a
//! condition's value (for exact time crossings).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::clock::{parse_rfc3339, Millis};
use crate::profile::activity_at;
use crate::store::Aggregate;

/// Most nesting of all/any/not.
pub const MAX_DEPTH: usize = 10;
/// Most nodes in one condition tree.
pub const MAX_NODES: usize = 256;

/// Attribute-style operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// In a list.
    In,
    /// Not in a list.
    NotIn,
    /// Less than.
    Lt,
    /// Less or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Gte,
    /// Present.
    Exists,
    /// Absent.
    NotExists,
    /// Substring or list element.
    Contains,
    /// String prefix.
    StartsWith,
}

const OPS: &str = "eq, ne, in, not_in, lt, lte, gt, gte, exists, not_exists, contains, starts_with";
const CMPS: &str = "eq, ne, lt, lte, gt, gte";

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "exists" => Op::Exists,
            "not_exists" => Op::NotExists,
            "contains" => Op::Contains,
            "starts_with" => Op::StartsWith,
            _ => return None,
        })
    }

    fn is_cmp(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Lt | Op::Lte | Op::Gt | Op::Gte)
    }
}

/// Engagement kinds (`did`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Did {
    /// Delivered.
    Delivered,
    /// Seen.
    Impression,
    /// Clicked.
    Click,
    /// Dismissed.
    Dismiss,
    /// Converted (goal after impression).
    Convert,
}

impl Did {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Did::Delivered => "delivered",
            Did::Impression => "impression",
            Did::Click => "click",
            Did::Dismiss => "dismiss",
            Did::Convert => "convert",
        }
    }

    fn parse(s: &str) -> Option<Did> {
        Some(match s {
            "delivered" => Did::Delivered,
            "impression" => Did::Impression,
            "click" => Did::Click,
            "dismiss" => Did::Dismiss,
            "convert" => Did::Convert,
            _ => return None,
        })
    }
}

/// The aggregate name under which a user's engagement with a campaign is counted.
pub fn engagement_key(campaign: &str, did: Did) -> String {
    format!("$engage:{campaign}:{}", did.as_str())
}

/// What an event condition measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// Count (lifetime, or within a rolling window).
    Count {
        /// Comparison.
        op: Op,
        /// Right-hand side.
        value: f64,
        /// Rolling window, ms.
        within: Option<Millis>,
    },
    /// Time since the last occurrence.
    LastSeen {
        /// Comparison.
        op: Op,
        /// Duration, ms.
        dur: Millis,
    },
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Every child holds.
    All(Vec<Cond>),
    /// Some child holds.
    Any(Vec<Cond>),
    /// The child does not hold.
    Not(Box<Cond>),
    /// An attribute compared with a value.
    Attr {
        /// Attribute name.
        attr: String,
        /// Operator.
        op: Op,
        /// Right-hand side (Null for exists/not_exists).
        value: Value,
    },
    /// The `$activity` score compared with a number.
    Activity {
        /// Operator.
        op: Op,
        /// Threshold.
        value: f64,
    },
    /// Time since a timestamp attribute.
    Since {
        /// Attribute holding an RFC 3339 timestamp.
        attr: String,
        /// Operator.
        op: Op,
        /// Duration, ms.
        dur: Millis,
    },
    /// An event aggregate.
    Event {
        /// Event name.
        event: String,
        /// Property filter and its derivation key (the aggregate of matching events).
        filter: Option<(String, Box<Cond>)>,
        /// What is measured.
        measure: Measure,
    },
    /// Engagement with a campaign.
    Engagement {
        /// Campaign id.
        campaign: String,
        /// Kind.
        did: Did,
        /// Operator.
        op: Op,
        /// Count threshold.
        value: f64,
    },
    /// The session's current page.
    Page {
        /// Operator.
        op: Op,
        /// Right-hand side.
        value: Value,
    },
    /// An event property (trigger `where`, event `where`).
    Prop {
        /// Property name (dots walk into objects).
        prop: String,
        /// Operator.
        op: Op,
        /// Right-hand side.
        value: Value,
    },
}

/// A compile error: where, and what is allowed there.
#[derive(Debug, Clone, PartialEq)]
pub struct CondError {
    /// Dotted path of the offending field.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> CondError {
    CondError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Where a condition is used decides which forms it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Segment definitions and goal conditions: user-level, no session.
    User,
    /// Campaign audiences: user-level plus the session's `page`.
    Session,
    /// A trigger's `where`: the event's properties plus user and session forms.
    Trigger,
    /// An event aggregate's `where`: properties only.
    Props,
}

/// Parses and compiles a condition at `path`.
pub fn compile(v: &Value, path: &str, ctx: Context) -> Result<Cond, CondError> {
    let mut nodes = 0;
    compile_node(v, path, ctx, 0, &mut nodes)
}

fn compile_node(
    v: &Value,
    path: &str,
    ctx: Context,
    depth: usize,
    nodes: &mut usize,
) -> Result<Cond, CondError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(err(
            path,
            format!("condition has more than {MAX_NODES} nodes"),
        ));
    }
    if depth > MAX_DEPTH {
        return Err(err(
            path,
            format!("condition nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let Value::Object(o) = v else {
        return Err(err(path, "a condition must be an object: all, any, not, attr, since, event, campaign, page or prop"));
    };
    let list = |key: &str, nodes: &mut usize| -> Result<Vec<Cond>, CondError> {
        let p = format!("{path}.{key}");
        let Some(Value::Array(items)) = o.get(key) else {
            return Err(err(&p, "must be an array of conditions"));
        };
        if items.is_empty() {
            return Err(err(&p, "must not be empty"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, c)| compile_node(c, &format!("{p}[{i}]"), ctx, depth + 1, nodes))
            .collect()
    };
    if o.contains_key("all") {
        return Ok(Cond::All(list("all", nodes)?));
    }
    if o.contains_key("any") {
        return Ok(Cond::Any(list("any", nodes)?));
    }
    if let Some(inner) = o.get("not") {
        return Ok(Cond::Not(Box::new(compile_node(
            inner,
            &format!("{path}.not"),
            ctx,
            depth + 1,
            nodes,
        )?)));
    }
    if ctx == Context::Props && !o.contains_key("prop") {
        return Err(err(
            path,
            "an event `where` may only use prop conditions (with all, any, not)",
        ));
    }
    if let Some(prop) = o.get("prop") {
        if !matches!(ctx, Context::Trigger | Context::Props) {
            return Err(err(
                &format!("{path}.prop"),
                "prop conditions are only allowed in a trigger's or an event condition's `where`",
            ));
        }
        let prop = str_field(prop, &format!("{path}.prop"))?;
        let (op, value) = op_value(o, path)?;
        return Ok(Cond::Prop { prop, op, value });
    }
    if let Some(page) = o.get("page") {
        if !matches!(ctx, Context::Session | Context::Trigger) {
            return Err(err(&format!("{path}.page"), "page conditions need a session: use them in campaign audiences or trigger filters, not in segments"));
        }
        let Value::Object(po) = page else {
            return Err(err(
                &format!("{path}.page"),
                "must be an object {\"op\":…,\"value\":…}",
            ));
        };
        let (op, value) = op_value(po, &format!("{path}.page"))?;
        return Ok(Cond::Page { op, value });
    }
    if let Some(attr) = o.get("attr") {
        let attr = str_field(attr, &format!("{path}.attr"))?;
        let (op, value) = op_value(o, path)?;
        if attr == "$activity" {
            if !op.is_cmp() {
                return Err(err(
                    &format!("{path}.op"),
                    format!("$activity takes one of {CMPS}"),
                ));
            }
            let value = value
                .as_f64()
                .ok_or_else(|| err(&format!("{path}.value"), "$activity compares with a number"))?;
            return Ok(Cond::Activity { op, value });
        }
        if attr.starts_with('$') {
            return Err(err(
                &format!("{path}.attr"),
                "the only built-in attribute is $activity",
            ));
        }
        return Ok(Cond::Attr { attr, op, value });
    }
    if let Some(attr) = o.get("since") {
        let attr = str_field(attr, &format!("{path}.since"))?;
        let (op, dur) = cmp_duration(o, path)?;
        return Ok(Cond::Since { attr, op, dur });
    }
    if let Some(event) = o.get("event") {
        let event = str_field(event, &format!("{path}.event"))?;
        if event.is_empty() {
            return Err(err(&format!("{path}.event"), "must not be empty"));
        }
        let filter = match o.get("where") {
            None | Some(Value::Null) => None,
            Some(w) => {
                let c = compile_node(
                    w,
                    &format!("{path}.where"),
                    Context::Props,
                    depth + 1,
                    nodes,
                )?;
                let key = format!("{event}\u{1f}{}", canonical(w));
                Some((key, Box::new(c)))
            }
        };
        let within = match o.get("within") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                crate::duration::parse(s)
                    .map_err(|e| err(&format!("{path}.within"), e))?
                    .as_millis() as Millis,
            ),
            Some(_) => {
                return Err(err(
                    &format!("{path}.within"),
                    "must be a duration string such as \"30d\"",
                ))
            }
        };
        let measure = match (o.get("count"), o.get("last_seen")) {
            (Some(_), Some(_)) => return Err(err(path, "use either count or last_seen, not both")),
            (Some(c), None) => {
                let p = format!("{path}.count");
                let Value::Object(co) = c else {
                    return Err(err(&p, "must be {\"op\":…,\"value\":<number>}"));
                };
                let op = cmp_op(co, &p)?;
                let value = co
                    .get("value")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| err(&format!("{p}.value"), "must be a number"))?;
                Measure::Count { op, value, within }
            }
            (None, Some(ls)) => {
                if within.is_some() {
                    return Err(err(
                        &format!("{path}.within"),
                        "within applies to count, not last_seen",
                    ));
                }
                let p = format!("{path}.last_seen");
                let Value::Object(lo) = ls else {
                    return Err(err(&p, "must be {\"op\":…,\"value\":\"14d\"}"));
                };
                let (op, dur) = cmp_duration(lo, &p)?;
                Measure::LastSeen { op, dur }
            }
            // Without a measure: "did it at least once" (in the window, if any).
            (None, None) => Measure::Count {
                op: Op::Gte,
                value: 1.0,
                within,
            },
        };
        return Ok(Cond::Event {
            event,
            filter,
            measure,
        });
    }
    if let Some(campaign) = o.get("campaign") {
        let campaign = str_field(campaign, &format!("{path}.campaign"))?;
        let did_s = o.get("did").and_then(Value::as_str).ok_or_else(|| {
            err(
                &format!("{path}.did"),
                "required: one of delivered, impression, click, dismiss, convert",
            )
        })?;
        let did = Did::parse(did_s).ok_or_else(|| {
            err(
                &format!("{path}.did"),
                "one of delivered, impression, click, dismiss, convert",
            )
        })?;
        let (op, value) = match o.get("count") {
            None | Some(Value::Null) => (Op::Gte, 1.0),
            Some(Value::Object(co)) => {
                let p = format!("{path}.count");
                let op = cmp_op(co, &p)?;
                let value = co
                    .get("value")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| err(&format!("{p}.value"), "must be a number"))?;
                (op, value)
            }
            Some(_) => {
                return Err(err(
                    &format!("{path}.count"),
                    "must be {\"op\":…,\"value\":<number>}",
                ))
            }
        };
        return Ok(Cond::Engagement {
            campaign,
            did,
            op,
            value,
        });
    }
    Err(err(
        path,
        "unknown condition: expected all, any, not, attr, since, event, campaign, page or prop",
    ))
}

fn str_field(v: &Value, path: &str) -> Result<String, CondError> {
    match v {
        Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
        _ => Err(err(path, "must be a non-empty string (at most 256 bytes)")),
    }
}

fn op_value(o: &Map<String, Value>, path: &str) -> Result<(Op, Value), CondError> {
    let op_s = o
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| err(&format!("{path}.op"), format!("required: one of {OPS}")))?;
    let op = Op::parse(op_s).ok_or_else(|| {
        err(
            &format!("{path}.op"),
            format!("`{op_s}` is not one of {OPS}"),
        )
    })?;
    let value = o.get("value").cloned();
    match op {
        Op::Exists | Op::NotExists => {
            if value.is_some() {
                return Err(err(
                    &format!("{path}.value"),
                    "exists and not_exists take no value",
                ));
            }
            Ok((op, Value::Null))
        }
        Op::In | Op::NotIn => match value {
            Some(Value::Array(a)) => Ok((op, Value::Array(a))),
            _ => Err(err(&format!("{path}.value"), "in and not_in take an array")),
        },
        Op::StartsWith => match value {
            Some(Value::String(s)) => Ok((op, Value::String(s))),
            _ => Err(err(&format!("{path}.value"), "starts_with takes a string")),
        },
        _ => match value {
            Some(v) if !v.is_null() => Ok((op, v)),
            _ => Err(err(&format!("{path}.value"), "required")),
        },
    }
}

fn cmp_op(o: &Map<String, Value>, path: &str) -> Result<Op, CondError> {
    let s = o
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| err(&format!("{path}.op"), format!("required: one of {CMPS}")))?;
    Op::parse(s)
        .filter(|op| op.is_cmp())
        .ok_or_else(|| err(&format!("{path}.op"), format!("`{s}` is not one of {CMPS}")))
}

fn cmp_duration(o: &Map<String, Value>, path: &str) -> Result<(Op, Millis), CondError> {
    let op = cmp_op(o, path)?;
    let dur = match o.get("value") {
        Some(Value::String(s)) => crate::duration::parse(s)
            .map_err(|e| err(&format!("{path}.value"), e))?
            .as_millis() as Millis,
        _ => {
            return Err(err(
                &format!("{path}.value"),
                "must be a duration string such as \"5d\"",
            ))
        }
    };
    Ok((op, dur))
}

/// Canonical JSON (sorted keys), so equal filters share one derivation.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String((*k).clone()),
                        canonical(&m[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// What a condition reads from a user (for indexing what can change it).
#[derive(Debug, Default, Clone)]
pub struct Deps {
    /// Attributes read.
    pub attrs: Vec<String>,
    /// Event names read.
    pub events: Vec<String>,
    /// Campaigns whose engagement is read.
    pub campaigns: Vec<String>,
    /// Reads `$activity`.
    pub activity: bool,
    /// Can change with time alone.
    pub time: bool,
    /// Property filters (derivation key, event name, predicate).
    pub filters: Vec<(String, String, Cond)>,
}

impl Cond {
    /// Collects what this condition depends on.
    pub fn deps(&self, d: &mut Deps) {
        match self {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.deps(d)),
            Cond::Not(c) => c.deps(d),
            Cond::Attr { attr, .. } => d.attrs.push(attr.clone()),
            Cond::Activity { .. } => {
                d.activity = true;
                d.time = true;
            }
            Cond::Since { attr, .. } => {
                d.attrs.push(attr.clone());
                d.time = true;
            }
            Cond::Event {
                event,
                filter,
                measure,
            } => {
                d.events.push(event.clone());
                if let Some((key, pred)) = filter {
                    d.filters
                        .push((key.clone(), event.clone(), (**pred).clone()));
                }
                if matches!(
                    measure,
                    Measure::LastSeen { .. }
                        | Measure::Count {
                            within: Some(_),
                            ..
                        }
                ) {
                    d.time = true;
                }
            }
            Cond::Engagement { campaign, .. } => d.campaigns.push(campaign.clone()),
            Cond::Page { .. } | Cond::Prop { .. } => {}
        }
    }
}

/// What a condition is evaluated against.
pub struct Subject<'a> {
    /// Attributes.
    pub attributes: &'a Map<String, Value>,
    /// Aggregates by event name (engagement under [`engagement_key`]).
    pub aggregates: &'a crate::profile::Aggregates,
    /// The user's per-campaign cap state, where deliveries are counted (see
    /// [`Subject::engagement`]); none for a subject that is not a user.
    pub caps: Option<&'a super::state::Caps>,
    /// Filtered aggregates by derivation key.
    pub filtered: &'a HashMap<String, Aggregate>,
    /// `$activity` as `(score, at)`.
    pub activity: (f64, Millis),
    /// Activity half-life, ms.
    pub half_life: Millis,
    /// Now.
    pub now: Millis,
    /// Session page, when evaluated for a session.
    pub page: Option<&'a str>,
    /// Event properties, when evaluated for an event.
    pub props: Option<&'a Map<String, Value>>,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    if let (Value::String(x), Value::String(y)) = (a, b) {
        // Two RFC 3339 timestamps are equal as instants (`…T00:00:00+01:00` is
        // `…T23:00:00Z` the day before), as `lt`/`gte` compare them.
        return super::text::eq_str(x, y)
            || (looks_like_rfc3339(x)
                && looks_like_rfc3339(y)
                && matches!((parse_rfc3339(x), parse_rfc3339(y)), (Some(tx), Some(ty)) if tx == ty));
    }
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A cheap look before parsing: `YYYY-MM-DDT…`, at least 20 characters.
fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ')
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return x.partial_cmp(&y);
    }
    if let (Value::String(x), Value::String(y)) = (a, b) {
        if let (Some(tx), Some(ty)) = (parse_rfc3339(x), parse_rfc3339(y)) {
            return Some(tx.cmp(&ty));
        }
        return Some(x.cmp(y));
    }
    None
}

/// Applies an attribute-style operator to a possibly missing value.
pub fn apply_op(op: Op, actual: Option<&Value>, rhs: &Value) -> bool {
    let Some(a) = actual.filter(|v| !v.is_null()) else {
        return matches!(op, Op::NotExists | Op::Ne | Op::NotIn);
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Exists => true,
        Op::NotExists => false,
        Op::Eq => loose_eq(a, rhs),
        Op::Ne => !loose_eq(a, rhs),
        Op::In => rhs
            .as_array()
            .is_some_and(|l| l.iter().any(|x| loose_eq(a, x))),
        Op::NotIn => !rhs
            .as_array()
            .is_some_and(|l| l.iter().any(|x| loose_eq(a, x))),
        Op::Lt => order(a, rhs) == Some(Less),
        Op::Lte => matches!(order(a, rhs), Some(Less | Equal)),
        Op::Gt => order(a, rhs) == Some(Greater),
        Op::Gte => matches!(order(a, rhs), Some(Greater | Equal)),
        Op::Contains => match (a, rhs) {
            (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
            (Value::Array(items), x) => items.iter().any(|i| loose_eq(i, x)),
            _ => false,
        },
        Op::StartsWith => {
            matches!((a, rhs), (Value::String(s), Value::String(p)) if s.starts_with(p.as_str()))
        }
    }
}

fn cmp_f(op: Op, a: f64, b: f64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Lte => a <= b,
        Op::Gt => a > b,
        Op::Gte => a >= b,
        _ => false,
    }
}

/// Walks `a.b.c` into an object.
pub fn prop_path<'a>(props: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if !path.contains('.') {
        return map_get(props, path);
    }
    let mut parts = path.split('.');
    let mut cur = map_get(props, parts.next()?)?;
    for p in parts {
        cur = map_get(cur.as_object()?, p)?;
    }
    Some(cur)
}

/// `map.get(key)`, comparing keys in order for small maps (most event properties and
/// attribute sets): cheaper than hashing the key.
pub fn map_get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= 8 {
        map.iter()
            .find(|(k, _)| super::text::eq_str(k, key))
            .map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

impl Subject<'_> {
    fn aggregate(&self, event: &str, filter: &Option<(String, Box<Cond>)>) -> Option<&Aggregate> {
        match filter {
            Some((key, _)) => self.filtered.get(key),
            None => self.aggregates.get(event),
        }
    }

    /// The actual value a leaf compares (for explain).
    fn actual(&self, c: &Cond) -> Value {
        match c {
            Cond::Attr { attr, .. } => self.attributes.get(attr).cloned().unwrap_or(Value::Null),
            Cond::Activity { .. } => {
                json!(round2(activity_at(self.activity, self.now, self.half_life)))
            }
            Cond::Since { attr, .. } => match self
                .attributes
                .get(attr)
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
            {
                Some(t) => {
                    json!({"since": crate::duration::format(std::time::Duration::from_millis((self.now - t).max(0) as u64)), "at": crate::clock::rfc3339(t)})
                }
                None => Value::Null,
            },
            Cond::Event {
                event,
                filter,
                measure,
            } => {
                let agg = self.aggregate(event, filter);
                match measure {
                    Measure::Count {
                        within: Some(w), ..
                    } => json!(agg
                        .map(|a| crate::profile::count_within(a, *w, self.now))
                        .unwrap_or(0)),
                    Measure::Count { within: None, .. } => json!(agg.map(|a| a.count).unwrap_or(0)),
                    Measure::LastSeen { .. } => match agg.filter(|a| a.count > 0) {
                        Some(a) => {
                            json!({"last_seen": crate::clock::rfc3339(a.last), "ago": crate::duration::format(std::time::Duration::from_millis((self.now - a.last).max(0) as u64))})
                        }
                        None => Value::Null,
                    },
                }
            }
            Cond::Engagement { campaign, did, .. } => json!(self.engagement(campaign, *did)),
            Cond::Page { .. } => self.page.map(|p| json!(p)).unwrap_or(Value::Null),
            Cond::Prop { prop, .. } => self
                .props
                .and_then(|p| prop_path(p, prop))
                .cloned()
                .unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// How often the user did `did` with a campaign: the `$engage:<campaign>:<did>`
    /// aggregate, plus, for `delivered`, the deliveries counted in the cap state.
    pub fn engagement(&self, campaign: &str, did: Did) -> u64 {
        let counted = self
            .aggregates
            .get(&engagement_key(campaign, did))
            .map_or(0, |a| a.count);
        let delivered = match (did, self.caps) {
            (Did::Delivered, Some(caps)) => caps.get(campaign).map_or(0, |c| c.delivered),
            _ => 0,
        };
        counted + delivered
    }

    /// Evaluates a condition.
    pub fn eval(&self, c: &Cond) -> bool {
        match c {
            Cond::All(cs) => cs.iter().all(|c| self.eval(c)),
            Cond::Any(cs) => cs.iter().any(|c| self.eval(c)),
            Cond::Not(c) => !self.eval(c),
            Cond::Attr { attr, op, value } => apply_op(*op, map_get(self.attributes, attr), value),
            Cond::Activity { op, value } => cmp_f(
                *op,
                activity_at(self.activity, self.now, self.half_life),
                *value,
            ),
            Cond::Since { attr, op, dur } => {
                match self
                    .attributes
                    .get(attr)
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339)
                {
                    Some(t) => cmp_f(*op, (self.now - t) as f64, *dur as f64),
                    None => false,
                }
            }
            Cond::Event {
                event,
                filter,
                measure,
            } => {
                let agg = self.aggregate(event, filter);
                match measure {
                    Measure::Count { op, value, within } => {
                        let n = match (agg, within) {
                            (None, _) => 0,
                            (Some(a), Some(w)) => crate::profile::count_within(a, *w, self.now),
                            (Some(a), None) => a.count,
                        };
                        cmp_f(*op, n as f64, *value)
                    }
                    // Never seen: no "time since"; wrap in `not` to include such users.
                    Measure::LastSeen { op, dur } => match agg.filter(|a| a.count > 0) {
                        Some(a) => cmp_f(*op, (self.now - a.last) as f64, *dur as f64),
                        None => false,
                    },
                }
            }
            Cond::Engagement {
                campaign,
                did,
                op,
                value,
            } => cmp_f(*op, self.engagement(campaign, *did) as f64, *value),
            Cond::Page { op, value } => apply_op(
                *op,
                self.page.map(|p| Value::String(p.to_string())).as_ref(),
                value,
            ),
            Cond::Prop { prop, op, value } => {
                apply_op(*op, self.props.and_then(|p| prop_path(p, prop)), value)
            }
        }
    }

    /// Evaluates with a trace: every node with its actual value and verdict.
    pub fn explain(&self, c: &Cond, raw: &Value) -> Value {
        let verdict = self.eval(c);
        match c {
            Cond::All(cs) | Cond::Any(cs) => {
                let key = if matches!(c, Cond::All(_)) {
                    "all"
                } else {
                    "any"
                };
                let raws = raw
                    .get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let children: Vec<Value> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| self.explain(c, raws.get(i).unwrap_or(&Value::Null)))
                    .collect();
                json!({ key: children, "verdict": verdict })
            }
            Cond::Not(inner) => {
                json!({"not": self.explain(inner, raw.get("not").unwrap_or(&Value::Null)), "verdict": verdict})
            }
            leaf => json!({"condition": raw, "value": self.actual(leaf), "verdict": verdict}),
        }
    }

    /// The next instant after `now` at which time alone could change this condition.
    pub fn next_crossing(&self, c: &Cond) -> Option<Millis> {
        let now = self.now;
        let boundary = |op: Op, at: Millis| -> Option<Millis> {
            // `gt`/`lte` flip one millisecond after the boundary, the others at it.
            let t = if matches!(op, Op::Gt | Op::Lte) {
                at + 1
            } else {
                at
            };
            (t > now).then_some(t)
        };
        match c {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().filter_map(|c| self.next_crossing(c)).min(),
            Cond::Not(c) => self.next_crossing(c),
            Cond::Since { attr, op, dur } => {
                let t = self
                    .attributes
                    .get(attr)
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339)?;
                boundary(*op, t + dur)
            }
            Cond::Event {
                event,
                filter,
                measure,
            } => {
                let agg = self.aggregate(event, filter)?;
                match measure {
                    Measure::LastSeen { op, dur } if agg.count > 0 => boundary(*op, agg.last + dur),
                    Measure::Count {
                        within: Some(w), ..
                    } => crate::profile::window_leaves_at(agg, *w, now),
                    _ => None,
                }
            }
            Cond::Activity { value, .. } => {
                // The score only decays between events: it falls through `value` at
                // at + H·log2(score/value), if it is above it now.
                let (score, at) = self.activity;
                let cur = activity_at(self.activity, now, self.half_life);
                if *value <= 0.0 || cur <= *value || score <= 0.0 {
                    return None;
                }
                let t = at + (self.half_life as f64 * (score / value).log2()).ceil() as Millis;
                Some(t.max(now + 1))
            }
            _ => None,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY_MS: Millis = 86_400_000;

    fn subject<'a>(
        attrs: &'a Map<String, Value>,
        aggs: &'a std::collections::HashMap<String, Aggregate>,
        now: Millis,
    ) -> Subject<'a> {
        // The same aggregates serve as filtered ones (keys never collide in these tests).
        let as_aggregates: crate::profile::Aggregates =
            aggs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Subject {
            attributes: attrs,
            aggregates: Box::leak(Box::new(as_aggregates)),
            caps: None,
            filtered: aggs,
            activity: (0.0, now),
            half_life: 7 * DAY_MS,
            now,
            page: Some("/setup/step1"),
            props: None,
        }
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn attribute_operators_and_missing_values() {
        let a =
            attrs(json!({"plan":"professional","seats":5,"tags":["a","b"],"name":"Ada Lovelace"}));
        let aggs = Default::default();
        let s = subject(&a, &aggs, 0);
        let t = |c: Value| s.eval(&compile(&c, "c", Context::Session).unwrap());
        assert!(t(json!({"attr":"plan","op":"eq","value":"professional"})));
        assert!(t(json!({"attr":"seats","op":"eq","value":5.0})));
        assert!(t(json!({"attr":"seats","op":"gte","value":5})));
        assert!(!t(json!({"attr":"seats","op":"gt","value":5})));
        assert!(t(
            json!({"attr":"plan","op":"in","value":["free","professional"]})
        ));
        assert!(t(json!({"attr":"tags","op":"contains","value":"b"})));
        assert!(t(json!({"attr":"name","op":"contains","value":"Love"})));
        assert!(t(json!({"attr":"name","op":"starts_with","value":"Ada"})));
        assert!(t(json!({"attr":"plan","op":"exists"})));
        // Missing attribute: only not_exists, ne and not_in hold.
        for (op, want) in [
            ("eq", false),
            ("ne", true),
            ("in", false),
            ("not_in", true),
            ("lt", false),
            ("gte", false),
            ("exists", false),
            ("not_exists", true),
            ("contains", false),
            ("starts_with", false),
        ] {
            let value = match op {
                "in" | "not_in" => json!(["x"]),
                "exists" | "not_exists" => Value::Null,
                _ => json!("x"),
            };
            let mut c = json!({"attr":"missing","op":op});
            if !value.is_null() {
                c["value"] = value;
            }
            assert_eq!(t(c), want, "{op} on a missing attribute");
        }
        assert!(t(json!({"page":{"op":"starts_with","value":"/setup"}})));
    }

    #[test]
    fn timestamps_compare_as_instants_for_every_op() {
        let a = attrs(json!({"ts": "2026-11-01T00:00:00+01:00", "name": "2026-11-01"}));
        let aggs = std::collections::HashMap::new();
        let s = subject(&a, &aggs, 0);
        let t = |c: Value| s.eval(&compile(&c, "c", Context::User).unwrap());
        let same = "2026-10-31T23:00:00.000Z";
        assert!(t(json!({"attr":"ts","op":"eq","value":same})));
        assert!(!t(json!({"attr":"ts","op":"ne","value":same})));
        assert!(t(json!({"attr":"ts","op":"in","value":[same]})));
        assert!(t(json!({"attr":"ts","op":"gte","value":same})));
        assert!(!t(
            json!({"attr":"ts","op":"eq","value":"2026-10-31T23:00:01Z"})
        ));
        // Strings that are not timestamps compare as strings.
        assert!(!t(
            json!({"attr":"name","op":"eq","value":"2026-11-01T00:00:00Z"})
        ));
        assert!(t(json!({"attr":"name","op":"eq","value":"2026-11-01"})));
    }

    #[test]
    fn since_event_counts_windows_and_last_seen() {
        let now = 100 * DAY_MS;
        let a = attrs(json!({"signed_up_at": crate::clock::rfc3339(now - 5 * DAY_MS)}));
        let mut aggs = std::collections::HashMap::new();
        let mut agg = Aggregate::default();
        let store = crate::config::StoreConfig::default();
        crate::profile::record(&mut agg, now - 20 * DAY_MS, now, &store);
        crate::profile::record(&mut agg, now - 2 * DAY_MS, now, &store);
        aggs.insert("login".to_string(), agg);
        let s = subject(&a, &aggs, now);
        let t = |c: Value| s.eval(&compile(&c, "c", Context::User).unwrap());
        assert!(t(json!({"since":"signed_up_at","op":"gte","value":"5d"})));
        assert!(!t(json!({"since":"signed_up_at","op":"gt","value":"5d"})));
        assert!(t(json!({"event":"login","count":{"op":"eq","value":2}})));
        assert!(t(
            json!({"event":"login","count":{"op":"eq","value":1},"within":"7d"})
        ));
        assert!(t(
            json!({"event":"integration_connected","count":{"op":"eq","value":0}})
        ));
        assert!(t(
            json!({"event":"login","last_seen":{"op":"gte","value":"2d"}})
        ));
        assert!(!t(
            json!({"event":"login","last_seen":{"op":"gte","value":"3d"}})
        ));
        assert!(!t(
            json!({"event":"never","last_seen":{"op":"gte","value":"1d"}})
        ));
        // Time crossings: since ≥ 5d is now; a 7-day window loses the −2d event 7 days
        // after it happened (1 ms past: the window includes its start).
        let c = compile(
            &json!({"since":"signed_up_at","op":"gte","value":"6d"}),
            "c",
            Context::User,
        )
        .unwrap();
        assert_eq!(s.next_crossing(&c), Some(now + DAY_MS));
        let c = compile(
            &json!({"event":"login","count":{"op":"gte","value":1},"within":"7d"}),
            "c",
            Context::User,
        )
        .unwrap();
        assert_eq!(s.next_crossing(&c), Some(now - 2 * DAY_MS + 7 * DAY_MS + 1));
        let c = compile(
            &json!({"event":"login","last_seen":{"op":"gte","value":"14d"}}),
            "c",
            Context::User,
        )
        .unwrap();
        assert_eq!(s.next_crossing(&c), Some(now + 12 * DAY_MS));
    }

    #[test]
    fn compile_errors_point_at_the_field() {
        let e = |c: Value, ctx| compile(&c, "conditions", ctx).unwrap_err();
        assert_eq!(
            e(
                json!({"attr":"plan","op":"equals","value":1}),
                Context::User
            )
            .path,
            "conditions.op"
        );
        assert_eq!(
            e(json!({"all":[{"attr":"plan","op":"eq"}]}), Context::User).path,
            "conditions.all[0].value"
        );
        assert_eq!(
            e(
                json!({"since":"x","op":"gte","value":"5 days"}),
                Context::User
            )
            .path,
            "conditions.value"
        );
        assert_eq!(
            e(json!({"event":"x","count":{"op":"eq"}}), Context::User).path,
            "conditions.count.value"
        );
        assert_eq!(
            e(json!({"page":{"op":"eq","value":"/"}}), Context::User).path,
            "conditions.page"
        );
        assert_eq!(
            e(
                json!({"event":"x","where":{"attr":"a","op":"exists"}}),
                Context::User
            )
            .path,
            "conditions.where"
        );
        assert_eq!(
            e(json!({"campaign":"c","did":"stared"}), Context::User).path,
            "conditions.did"
        );
        assert_eq!(e(json!({"wat":1}), Context::User).path, "conditions");
        let mut deep = json!({"attr":"a","op":"exists"});
        for _ in 0..12 {
            deep = json!({"not": deep});
        }
        assert!(e(deep, Context::User).message.contains("deeper"));
    }

    #[test]
    fn activity_decays_and_crosses_exactly() {
        let a = Map::new();
        let aggs = Default::default();
        let mut s = subject(&a, &aggs, 0);
        s.activity = (80.0, 0);
        let c = compile(
            &json!({"attr":"$activity","op":"gte","value":40}),
            "c",
            Context::User,
        )
        .unwrap();
        assert!(s.eval(&c));
        let t = s.next_crossing(&c).unwrap();
        assert_eq!(t, 7 * DAY_MS, "80 halves to 40 after one half-life");
        s.now = t + 1;
        assert!(!s.eval(&c));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
            prop::collection::vec("[a-c]{0,2}".prop_map(Value::String), 0..3)
                .prop_map(Value::Array),
        ]
    }

    proptest! {
        #[test]
        fn negation_pairs_are_complements(v in arb_value(), rhs in "[a-c]{0,3}", n in -1000i64..1000) {
            let present = if v.is_null() { None } else { Some(&v) };
            let r = Value::String(rhs);
            prop_assert_eq!(apply_op(Op::Eq, present, &r), !apply_op(Op::Ne, present, &r));
            let list = json!([r.clone(), n]);
            prop_assert_eq!(apply_op(Op::In, present, &list), !apply_op(Op::NotIn, present, &list));
            prop_assert_eq!(apply_op(Op::Exists, present, &Value::Null), !apply_op(Op::NotExists, present, &Value::Null));
            // lt and gte never both hold.
            let num = json!(n);
            prop_assert!(!(apply_op(Op::Lt, present, &num) && apply_op(Op::Gte, present, &num)));
        }

        #[test]
        fn not_inverts_any_condition(v in arb_value(), op in prop::sample::select(vec!["eq","ne","lt","gte","contains","exists","not_exists"])) {
            let a: Map<String, Value> = [("x".to_string(), v)].into_iter().collect();
            let aggs = Default::default();
            let s = subject(&a, &aggs, 0);
            let mut c = json!({"attr":"x","op":op});
            if !matches!(op, "exists" | "not_exists") { c["value"] = json!("b"); }
            let cond = compile(&c, "c", Context::User).unwrap();
            let neg = compile(&json!({"not": c}), "c", Context::User).unwrap();
            prop_assert_eq!(s.eval(&cond), !s.eval(&neg));
            let all = compile(&json!({"all":[c.clone(), c.clone()]}), "c", Context::User).unwrap();
            let any = compile(&json!({"any":[c.clone(), c]}), "c", Context::User).unwrap();
            prop_assert_eq!(s.eval(&all), s.eval(&cond));
            prop_assert_eq!(s.eval(&any), s.eval(&cond));
        }

        #[test]
        fn compile_never_panics(s in "\\PC{0,120}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = compile(&v, "c", Context::Trigger);
            }
        }
    }
}
