//! Pure decoding of client text frames into typed [`ClientFrame`]s, with shape checks and
//! value limits. Every failure is a typed [`DecodeError`] carrying its error code and,
//! where it can be read, the frame's `id`.

use serde_json::{Map, Value};

use super::codes::ErrorCode;
use super::frames::{ClientFrame, EngageAction, PageContext, Resume};
use super::limits::{EventNameError, ValueLimits};

/// Longest accepted client `id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// A rejected frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// Error frame code.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
    /// The frame's `id`, if it had a readable one.
    pub id: Option<String>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            id: None,
        }
    }
}

/// A decoded text frame: one frame or a batch of them (each decoded on its own).
#[derive(Debug)]
pub enum Decoded {
    /// A single JSON object.
    Single(Result<ClientFrame, DecodeError>),
    /// A JSON array of objects, in order.
    Batch(Vec<Result<ClientFrame, DecodeError>>),
}

/// Decodes one text frame.
pub fn decode_text(text: &str, limits: &ValueLimits) -> Decoded {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("recursion limit") => {
            return Decoded::Single(Err(DecodeError::new(
                ErrorCode::TooLarge,
                format!("nested deeper than {} levels", limits.max_depth),
            )))
        }
        Err(e) => {
            return Decoded::Single(Err(DecodeError::new(
                ErrorCode::InvalidJson,
                format!("not valid JSON: {e}"),
            )))
        }
    };
    match value {
        Value::Array(items) => {
            Decoded::Batch(items.into_iter().map(|v| decode_value(v, limits)).collect())
        }
        other => Decoded::Single(decode_value(other, limits)),
    }
}

/// Decodes one JSON value that should be a frame object.
pub fn decode_value(value: Value, limits: &ValueLimits) -> Result<ClientFrame, DecodeError> {
    let Value::Object(mut obj) = value else {
        return Err(DecodeError::new(
            ErrorCode::InvalidFrame,
            "a frame must be a JSON object with a `type` (or an array of such objects)",
        ));
    };
    // Read the id first so that every later error can name it.
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Some(s),
        Some(Value::String(_)) => {
            return Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("`id` must be a non-empty string of at most {MAX_ID_BYTES} bytes"),
            ))
        }
        Some(_) => {
            return Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                "`id` must be a string",
            ))
        }
    };
    let with_id = |mut e: DecodeError| {
        e.id = id.clone();
        e
    };
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(with_id(DecodeError::new(
                ErrorCode::InvalidFrame,
                "`type` must be a string",
            )))
        }
        None => {
            return Err(with_id(DecodeError::new(
                ErrorCode::InvalidFrame,
                "missing `type`",
            )))
        }
    };
    let mut f = Fields { obj: &mut obj };
    let frame = match kind.as_str() {
        "hello" => {
            let token = f.req_str("token")?;
            let resume = match f.opt_obj("resume")? {
                None => None,
                Some(mut r) => {
                    let mut rf = Fields { obj: &mut r };
                    Some(Resume {
                        session: rf.req_str("session").map_err(prefix("resume."))?,
                        last_seq: rf.opt_u64("last_seq").map_err(prefix("resume."))?.unwrap_or(0),
                    })
                }
            };
            let page = match f.opt_obj("page")? {
                None => None,
                Some(mut p) => Some(page_context(&mut Fields { obj: &mut p }, limits).map_err(prefix("page."))?),
            };
            let sdk = f.opt_str("sdk")?;
            ClientFrame::Hello { token, resume, page, sdk }
        }
        "track" => {
            let event = f.req_str("event").map_err(with_id)?;
            limits.check_event_name(&event, true).map_err(|e| with_id(name_error(e)))?;
            let properties = f.opt_obj("properties").map_err(with_id)?.unwrap_or_default();
            check_limits(limits, "properties", &properties).map_err(with_id)?;
            ClientFrame::Track { id, event, properties }
        }
        "page" => {
            let page = page_context(&mut f, limits).map_err(with_id)?;
            ClientFrame::Page { id, page }
        }
        "identify" => {
            let attributes = f.req_obj("attributes").map_err(with_id)?;
            check_limits(limits, "attributes", &attributes).map_err(with_id)?;
            ClientFrame::Identify { id, attributes }
        }
        "activity" => ClientFrame::Activity { id },
        "ack" => {
            let seq = f
                .opt_u64("seq")
                .map_err(with_id)?
                .ok_or_else(|| with_id(DecodeError::new(ErrorCode::InvalidFrame, "missing `seq`")))?;
            ClientFrame::Ack { id, seq }
        }
        "engage" => {
            let delivery = f.req_str("delivery").map_err(with_id)?;
            let action = match f.req_str("action").map_err(with_id)?.as_str() {
                "impression" => EngageAction::Impression,
                "click" => EngageAction::Click,
                "dismiss" => EngageAction::Dismiss,
                other => {
                    return Err(with_id(DecodeError::new(
                        ErrorCode::InvalidFrame,
                        format!("`action` `{other}` is not one of impression, click, dismiss"),
                    )))
                }
            };
            let button = f.opt_str("button").map_err(with_id)?;
            if action == EngageAction::Click && button.is_none() {
                return Err(with_id(DecodeError::new(
                    ErrorCode::InvalidFrame,
                    "`click` needs the `button` id",
                )));
            }
            ClientFrame::Engage { id, delivery, action, button }
        }
        "auth" => {
            let token = f.req_str("token").map_err(with_id)?;
            ClientFrame::Auth { id, token }
        }
        other => {
            return Err(with_id(DecodeError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown frame type `{}`; expected one of hello, track, page, identify, activity, ack, engage, auth",
                    truncate(other, 64)
                ),
            )))
        }
    };
    Ok(frame)
}

fn page_context(f: &mut Fields<'_>, limits: &ValueLimits) -> Result<PageContext, DecodeError> {
    let path = f.req_str("path")?;
    let title = f.opt_str("title")?;
    let referrer = f.opt_str("referrer")?;
    for (name, v) in [
        ("path", Some(&path)),
        ("title", title.as_ref()),
        ("referrer", referrer.as_ref()),
    ] {
        if let Some(v) = v {
            if v.len() > limits.max_string_bytes {
                return Err(DecodeError::new(
                    ErrorCode::TooLarge,
                    format!("`{name}` longer than {} bytes", limits.max_string_bytes),
                ));
            }
        }
    }
    Ok(PageContext {
        path,
        title,
        referrer,
    })
}

fn check_limits(
    limits: &ValueLimits,
    field: &str,
    map: &Map<String, Value>,
) -> Result<(), DecodeError> {
    limits
        .check_object(field, map)
        .map_err(|e| DecodeError::new(ErrorCode::TooLarge, format!("`{}`: {}", e.path, e.message)))
}

fn name_error(e: EventNameError) -> DecodeError {
    match e {
        EventNameError::Invalid(m) => DecodeError::new(ErrorCode::InvalidFrame, m),
        EventNameError::TooLong(m) => DecodeError::new(ErrorCode::TooLarge, m),
    }
}

fn prefix(p: &'static str) -> impl Fn(DecodeError) -> DecodeError {
    move |mut e| {
        e.message = e.message.replacen('`', &format!("`{p}"), 1);
        e
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Field extraction with precise messages.
struct Fields<'a> {
    obj: &'a mut Map<String, Value>,
}

impl Fields<'_> {
    fn req_str(&mut self, name: &str) -> Result<String, DecodeError> {
        match self.obj.remove(name) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("missing `{name}`"),
            )),
            Some(_) => Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("`{name}` must be a string"),
            )),
        }
    }

    fn opt_str(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.obj.remove(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("`{name}` must be a string"),
            )),
        }
    }

    fn opt_obj(&mut self, name: &str) -> Result<Option<Map<String, Value>>, DecodeError> {
        match self.obj.remove(name) {
            Some(Value::Object(m)) => Ok(Some(m)),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("`{name}` must be an object"),
            )),
        }
    }

    fn req_obj(&mut self, name: &str) -> Result<Map<String, Value>, DecodeError> {
        self.opt_obj(name)?
            .ok_or_else(|| DecodeError::new(ErrorCode::InvalidFrame, format!("missing `{name}`")))
    }

    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, DecodeError> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                DecodeError::new(
                    ErrorCode::InvalidFrame,
                    format!("`{name}` must be a non-negative integer"),
                )
            }),
            Some(_) => Err(DecodeError::new(
                ErrorCode::InvalidFrame,
                format!("`{name}` must be a non-negative integer"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<ClientFrame, DecodeError> {
        match decode_text(text, &ValueLimits::default()) {
            Decoded::Single(r) => r,
            Decoded::Batch(_) => panic!("expected a single frame"),
        }
    }

    #[test]
    fn decodes_every_client_frame() {
        assert!(matches!(
            one(r#"{"type":"hello","token":"t"}"#),
            Ok(ClientFrame::Hello { .. })
        ));
        assert_eq!(
            one(r#"{"type":"hello","token":"t","resume":{"session":"s_1","last_seq":12},"page":{"path":"/setup","title":"Setup"},"sdk":"x"}"#).unwrap(),
            ClientFrame::Hello {
                token: "t".into(),
                resume: Some(Resume { session: "s_1".into(), last_seq: 12 }),
                page: Some(PageContext { path: "/setup".into(), title: Some("Setup".into()), referrer: None }),
                sdk: Some("x".into()),
            }
        );
        assert!(matches!(
            one(r#"{"type":"track","id":"e1","event":"x","properties":{"a":1}}"#),
            Ok(ClientFrame::Track { .. })
        ));
        assert!(matches!(
            one(r#"{"type":"page","id":"e2","path":"/s"}"#),
            Ok(ClientFrame::Page { .. })
        ));
        assert!(matches!(
            one(r#"{"type":"identify","id":"e3","attributes":{"a":1}}"#),
            Ok(ClientFrame::Identify { .. })
        ));
        assert_eq!(
            one(r#"{"type":"activity"}"#).unwrap(),
            ClientFrame::Activity { id: None }
        );
        assert_eq!(
            one(r#"{"type":"ack","seq":7}"#).unwrap(),
            ClientFrame::Ack { id: None, seq: 7 }
        );
        assert!(matches!(
            one(r#"{"type":"engage","delivery":"d","action":"click","button":"go"}"#),
            Ok(ClientFrame::Engage { .. })
        ));
        assert!(matches!(
            one(r#"{"type":"auth","token":"t"}"#),
            Ok(ClientFrame::Auth { .. })
        ));
    }

    #[test]
    fn error_codes() {
        assert_eq!(one("nope").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(one("42").unwrap_err().code, ErrorCode::InvalidFrame);
        assert_eq!(
            one(r#"{"id":"x"}"#).unwrap_err().code,
            ErrorCode::InvalidFrame
        );
        let e = one(r#"{"type":"teleport","id":"e9"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::UnknownType, Some("e9"))
        );
        let e = one(r#"{"type":"track","id":"e1","event":5}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::InvalidFrame, Some("e1"))
        );
        assert_eq!(
            one(r#"{"type":"track","event":""}"#).unwrap_err().code,
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            one(r#"{"type":"track","event":"$nope"}"#).unwrap_err().code,
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            one(r#"{"type":"ack","seq":-1}"#).unwrap_err().code,
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            one(r#"{"type":"engage","delivery":"d","action":"click"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidFrame
        );
        let deep = format!(
            r#"{{"type":"track","event":"x","properties":{}1{}}}"#,
            "{\"a\":".repeat(200),
            "}".repeat(200)
        );
        assert_eq!(one(&deep).unwrap_err().code, ErrorCode::TooLarge);
        let big = format!(
            r#"{{"type":"track","event":"x","properties":{{"s":"{}"}}}}"#,
            "x".repeat(2000)
        );
        assert_eq!(one(&big).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn batches_decode_each_element() {
        match decode_text(
            r#"[{"type":"activity"},{"type":"nope"},3]"#,
            &ValueLimits::default(),
        ) {
            Decoded::Batch(items) => {
                assert!(items[0].is_ok());
                assert_eq!(items[1].as_ref().unwrap_err().code, ErrorCode::UnknownType);
                assert_eq!(items[2].as_ref().unwrap_err().code, ErrorCode::InvalidFrame);
            }
            Decoded::Single(_) => panic!("expected a batch"),
        }
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(s in ".{0,200}") {
            let _ = decode_text(&s, &ValueLimits::default());
        }

        #[test]
        fn track_round_trips(event in "[a-z_]{1,40}", id in "[a-zA-Z0-9]{1,20}", n in 0i64..1000) {
            let text = serde_json::json!({"type":"track","id":id,"event":event,"properties":{"n":n}}).to_string();
            let frame = one(&text).unwrap();
            match frame {
                ClientFrame::Track { id: got_id, event: got, properties } => {
                    proptest::prop_assert_eq!(got_id.as_deref(), Some(id.as_str()));
                    proptest::prop_assert_eq!(got, event);
                    proptest::prop_assert_eq!(properties.get("n").and_then(|v| v.as_i64()), Some(n));
                }
                _ => proptest::prop_assert!(false),
            }
        }
    }
}
