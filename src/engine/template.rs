//! Message text templates: `{{ user.attr | default: "x" }}`, validated when a campaign is
//! saved and rendered at delivery as plain text (never HTML). A missing attribute
//! without a default renders empty; rendering never fails.

use serde_json::{Map, Value};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Attr {
        name: String,
        default: Option<String>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses a template; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or("a `{{` placeholder is not closed with `}}`")?;
            parts.push(parse_placeholder(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    /// Renders against the user's attributes.
    pub fn render(&self, attrs: &Map<String, Value>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                // As Liquid's `default`: a missing, null, false or empty value (string,
                // list, object) takes the default; 0 is a value.
                Part::Attr { name, default } => match attrs.get(name) {
                    Some(Value::String(s)) if !s.is_empty() => out.push_str(s),
                    None | Some(Value::Null | Value::Bool(false) | Value::String(_)) => {
                        out.push_str(default.as_deref().unwrap_or(""))
                    }
                    Some(Value::Array(a)) if a.is_empty() => {
                        out.push_str(default.as_deref().unwrap_or(""))
                    }
                    Some(Value::Object(o)) if o.is_empty() => {
                        out.push_str(default.as_deref().unwrap_or(""))
                    }
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        out
    }
}

fn parse_placeholder(inner: &str) -> Result<Part, String> {
    let (expr, filter) = match inner.split_once('|') {
        Some((e, f)) => (e.trim(), Some(f.trim())),
        None => (inner, None),
    };
    let name = expr
        .strip_prefix("user.")
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| format!("placeholder `{{{{ {inner} }}}}`: expected `user.<attribute>`"))?;
    let default = match filter {
        None => None,
        Some(f) => {
            let arg = f
                .strip_prefix("default:")
                .ok_or_else(|| {
                    format!("placeholder `{{{{ {inner} }}}}`: the only filter is `default: \"…\"`")
                })?
                .trim();
            let unquoted = arg
                .strip_prefix('"')
                .and_then(|a| a.strip_suffix('"'))
                .or_else(|| arg.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')))
                .ok_or_else(|| {
                    format!("placeholder `{{{{ {inner} }}}}`: the default must be a quoted string")
                })?;
            Some(unquoted.to_string())
        }
    };
    Ok(Part::Attr {
        name: name.to_string(),
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_with_defaults_and_missing_values() {
        let t = Template::parse(
            "Hi {{ user.first_name | default: \"there\" }}, {{user.seats}} seats{{ user.nope }}.",
        )
        .unwrap();
        let attrs = json!({"first_name":"Ada","seats":5})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(t.render(&attrs), "Hi Ada, 5 seats.");
        assert_eq!(t.render(&Map::new()), "Hi there,  seats.");
        let t = Template::parse("{{ user.v | default: \"-\" }}").unwrap();
        let with = |v: Value| t.render(json!({ "v": v }).as_object().unwrap());
        for empty in [json!(null), json!(false), json!(""), json!([]), json!({})] {
            assert_eq!(with(empty.clone()), "-", "{empty}");
        }
        assert_eq!(with(json!(0)), "0");
        assert_eq!(with(json!(true)), "true");
        assert_eq!(with(json!([1])), "[1]");
    }

    #[test]
    fn html_stays_text() {
        let t = Template::parse("{{ user.name }}").unwrap();
        let attrs = json!({"name":"<img src=x onerror=alert(1)>"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            t.render(&attrs),
            "<img src=x onerror=alert(1)>",
            "rendering does not interpret markup; clients insert text"
        );
    }

    #[test]
    fn rejects_malformed_placeholders() {
        for bad in [
            "{{ user.a ",
            "{{ account.a }}",
            "{{ user.a | upcase }}",
            "{{ user.a | default: x }}",
            "{{ }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
