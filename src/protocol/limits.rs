//! Limits on values inside frames and API bodies (properties, attributes), checked by a
//! pure function so WebSocket, REST and Segment-compatible doors enforce the same rules.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bounds on user-supplied JSON values. Defaults follow contract §2.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ValueLimits {
    /// Most keys in a `properties` / `attributes` object (top level).
    pub max_properties: usize,
    /// Deepest nesting of objects/arrays inside properties (the properties object is depth 1).
    pub max_depth: usize,
    /// Longest string value or object key, in bytes.
    pub max_string_bytes: usize,
    /// Longest event name, in characters.
    pub max_event_name_chars: usize,
}

impl Default for ValueLimits {
    fn default() -> Self {
        ValueLimits {
            max_properties: 50,
            max_depth: 5,
            max_string_bytes: 1024,
            max_event_name_chars: 128,
        }
    }
}

/// Why a value broke a limit; `path` is a dotted path below the checked field.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitError {
    /// Where the offending value sits (e.g. `properties.a.b`).
    pub path: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl ValueLimits {
    /// Checks a properties/attributes object: key count, depth, string and key lengths.
    pub fn check_object(
        &self,
        field: &str,
        map: &serde_json::Map<String, Value>,
    ) -> Result<(), LimitError> {
        if map.len() > self.max_properties {
            return Err(LimitError {
                path: field.to_string(),
                message: format!(
                    "{} keys; at most {} are allowed",
                    map.len(),
                    self.max_properties
                ),
            });
        }
        for (k, v) in map {
            self.check_value(&format!("{field}.{k}"), k, v, 1)?;
        }
        Ok(())
    }

    fn check_value(
        &self,
        path: &str,
        key: &str,
        v: &Value,
        depth: usize,
    ) -> Result<(), LimitError> {
        if key.len() > self.max_string_bytes {
            return Err(LimitError {
                path: path.to_string(),
                message: format!("key longer than {} bytes", self.max_string_bytes),
            });
        }
        match v {
            Value::String(s) if s.len() > self.max_string_bytes => Err(LimitError {
                path: path.to_string(),
                message: format!(
                    "string of {} bytes; at most {} are allowed",
                    s.len(),
                    self.max_string_bytes
                ),
            }),
            Value::Array(items) => {
                self.check_depth(path, depth + 1)?;
                if items.len() > self.max_properties {
                    return Err(LimitError {
                        path: path.to_string(),
                        message: format!(
                            "array of {} items; at most {} are allowed",
                            items.len(),
                            self.max_properties
                        ),
                    });
                }
                for (i, item) in items.iter().enumerate() {
                    self.check_value(&format!("{path}[{i}]"), "", item, depth + 1)?;
                }
                Ok(())
            }
            Value::Object(map) => {
                self.check_depth(path, depth + 1)?;
                if map.len() > self.max_properties {
                    return Err(LimitError {
                        path: path.to_string(),
                        message: format!(
                            "{} keys; at most {} are allowed",
                            map.len(),
                            self.max_properties
                        ),
                    });
                }
                for (k, item) in map {
                    self.check_value(&format!("{path}.{k}"), k, item, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_depth(&self, path: &str, depth: usize) -> Result<(), LimitError> {
        if depth > self.max_depth {
            Err(LimitError {
                path: path.to_string(),
                message: format!("nested deeper than {} levels", self.max_depth),
            })
        } else {
            Ok(())
        }
    }

    /// Checks an event name: non-empty, not too long, and `$` names only where allowed.
    pub fn check_event_name(&self, name: &str, client: bool) -> Result<(), EventNameError> {
        if name.trim().is_empty() {
            return Err(EventNameError::Invalid(
                "event name must not be empty".into(),
            ));
        }
        if name.chars().count() > self.max_event_name_chars {
            return Err(EventNameError::TooLong(format!(
                "event name longer than {} characters",
                self.max_event_name_chars
            )));
        }
        if let Some(reserved) = name.strip_prefix('$') {
            let allowed = match reserved {
                "page_view" | "form_submit" => true,
                // Session boundaries are the gateway's own to record; a backend may
                // replay them through the REST door, a client may not claim them.
                "session_start" | "session_end" => !client,
                _ => false,
            };
            if !allowed {
                return Err(EventNameError::Invalid(format!(
                    "`{name}`: names starting with `$` are reserved; allowed here: {}",
                    if client {
                        "$page_view, $form_submit"
                    } else {
                        "$page_view, $form_submit, $session_start, $session_end"
                    }
                )));
            }
        }
        Ok(())
    }
}

/// Why an event name was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum EventNameError {
    /// Empty or reserved misuse.
    Invalid(String),
    /// Over the length limit.
    TooLong(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn accepts_within_limits() {
        let l = ValueLimits::default();
        assert!(l
            .check_object(
                "properties",
                &obj(json!({"a": 1, "b": {"c": [1, 2, {"d": "x"}]}}))
            )
            .is_ok());
    }

    #[test]
    fn depth_counts_from_properties_object() {
        let l = ValueLimits::default();
        // properties(1) -> a's object(2) -> b's(3) -> c's(4) -> d's(5): allowed
        let ok = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        assert!(l.check_object("properties", &obj(ok)).is_ok());
        let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
        let err = l.check_object("properties", &obj(deep)).unwrap_err();
        assert!(err.path.starts_with("properties.a.b.c.d.e"), "{}", err.path);
    }

    #[test]
    fn too_many_keys_and_long_strings() {
        let l = ValueLimits::default();
        let mut m = serde_json::Map::new();
        for i in 0..51 {
            m.insert(format!("k{i}"), json!(i));
        }
        assert!(l.check_object("properties", &m).is_err());
        let long = obj(json!({"s": "x".repeat(1025)}));
        assert_eq!(
            l.check_object("properties", &long).unwrap_err().path,
            "properties.s"
        );
    }

    #[test]
    fn event_names() {
        let l = ValueLimits::default();
        assert!(l.check_event_name("export_completed", true).is_ok());
        assert!(l.check_event_name("$form_submit", true).is_ok());
        assert!(l.check_event_name("", true).is_err());
        assert!(l.check_event_name("$session_start", true).is_err());
        assert!(l.check_event_name("$session_start", false).is_ok());
        assert!(l.check_event_name("$whatever", false).is_err());
        assert!(matches!(
            l.check_event_name(&"e".repeat(129), true),
            Err(EventNameError::TooLong(_))
        ));
    }
}
