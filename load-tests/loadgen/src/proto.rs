//! The slice of Beckon's wire protocol (contract §2) the generator speaks: HS256 tokens,
//! the frames it sends, and a lenient decoder for the frames it reads.

use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
}

/// Mints an HS256 token for `user`, valid for `ttl_s` seconds.
pub fn mint(secret: &[u8], user: &str, ttl_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = Claims {
        sub: user,
        iat: now,
        exp: now + ttl_s,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding cannot fail")
}

/// `hello`, optionally resuming `(session, last_seq)`.
pub fn hello(token: &str, resume: Option<(&str, u64)>) -> String {
    let mut v = serde_json::json!({
        "type": "hello",
        "token": token,
        "page": {"path": "/load-test", "title": "Load test"},
        "sdk": "beckon-loadgen/0.1.0",
    });
    if let Some((session, last_seq)) = resume {
        v["resume"] = serde_json::json!({"session": session, "last_seq": last_seq});
    }
    v.to_string()
}

/// `track` with id `e{n}`.
pub fn track(n: u64, event: &str) -> String {
    format!(
        "{{\"type\":\"track\",\"id\":\"e{n}\",\"event\":\"{event}\",\"properties\":{{\"n\":{n},\"plan\":\"pro\"}}}}"
    )
}

/// `ack` up to `seq`.
pub fn ack(seq: u64) -> String {
    format!("{{\"type\":\"ack\",\"seq\":{seq}}}")
}

/// Any server frame; fields absent in a kind stay `None`/empty. Unknown fields
/// (message bodies) are skipped without building values.
#[derive(Deserialize, Debug, Default)]
pub struct Incoming {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub resumed: Option<bool>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// Decodes a server text frame; `None` when it is not a JSON object with a `type`.
pub fn decode(text: &str) -> Option<Incoming> {
    serde_json::from_str(text).ok()
}

/// The number inside an `e{n}` id.
pub fn event_number(id: &str) -> Option<u64> {
    id.strip_prefix('e')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let t = track(7, "lt_event");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["id"], "e7");
        assert_eq!(event_number("e7"), Some(7));
        let h: serde_json::Value = serde_json::from_str(&hello("tok", Some(("s_1", 3)))).unwrap();
        assert_eq!(h["resume"]["last_seq"], 3);
        let m = decode(r#"{"type":"message","seq":4,"delivery":"d","message":{"kind":"modal","buttons":[{"id":"go"}]}}"#).unwrap();
        assert_eq!((m.kind.as_str(), m.seq), ("message", Some(4)));
        let ok = decode(r#"{"type":"ok","ids":["e1","e2"]}"#).unwrap();
        assert_eq!(ok.ids, vec!["e1", "e2"]);
    }

    #[test]
    fn tokens_verify() {
        let t = mint(b"s", "u1", 60);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims.clear();
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s"),
            &v,
        )
        .unwrap();
        assert_eq!(d.claims["sub"], "u1");
    }
}
