//! `LOGSHIP_*` environment variables as configuration: `LOGSHIP_TAIL__READ_FROM=tail` sets
//! `tail.read_from` (prefix `LOGSHIP_`, `__` between levels, any case).
//!
//! A value is read as its key needs: `true`/`false` for booleans, numbers for numbers, and for
//! lists a JSON array (`["/a/*.log","/b/{x,y}.log"]`) or comma-separated text (a comma inside
//! `{...}` belongs to the pattern). Anything else stays text for the key's own parsing (sizes,
//! durations, enums); a JSON array may hold tables (`LOGSHIP_MULTILINE__RULES='[{"name":"ts",
//! "start":"^\\d{4}-"}]'`). A variable that names no key is an error, so a typo cannot leave a
//! default silently in force.
//!
//! This is not the `config` crate's `Environment` source: that one cannot tell which variables
//! named no key, types a value by how it looks rather than by its key (`node_name=1234` would
//! become a number), and has no JSON lists.

use std::collections::HashMap;

use serde_json::Value;

use super::error::ConfigError;
use super::schema::{Kind, Schema};

const PREFIX: &str = "LOGSHIP_";
const SEPARATOR: &str = "__";

/// One variable that set a key.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The variable, as the environment spells it.
    pub var: String,
    /// The dotted key it sets.
    pub key: String,
    pub value: Value,
}

/// The settings made by `LOGSHIP_*` variables, ordered by variable name, and every variable
/// that could not be used.
pub fn settings(
    env: &HashMap<String, String>,
    schema: &Schema,
) -> (Vec<Setting>, Vec<ConfigError>) {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| {
            name.get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        })
        .collect();
    vars.sort();
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    for (var, text) in vars {
        let key = key_of(var);
        let Some(kind) = schema.kind(&key) else {
            if !is_service_link(var) {
                errors.push(ConfigError::UnknownVariable {
                    var: var.clone(),
                    suggestion: schema.closest(&key, true).map(var_of),
                });
            }
            continue;
        };
        match read(text, kind) {
            Ok(value) => settings.push(Setting {
                var: var.clone(),
                key,
                value,
            }),
            Err(message) => errors.push(ConfigError::VariableValue {
                var: var.clone(),
                key,
                message,
            }),
        }
    }
    (settings, errors)
}

/// `LOGSHIP_TAIL__READ_FROM` -> `tail.read_from`.
fn key_of(var: &str) -> String {
    var[PREFIX.len()..]
        .to_ascii_lowercase()
        .split(SEPARATOR)
        .collect::<Vec<_>>()
        .join(".")
}

/// `tail.read_from` -> `LOGSHIP_TAIL__READ_FROM`.
pub fn var_of(key: &str) -> String {
    format!(
        "{PREFIX}{}",
        key.to_ascii_uppercase().replace('.', SEPARATOR)
    )
}

/// Whether a variable is one Kubernetes puts in every pod for each Service in the namespace
/// (`<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]`, `<NAME>_PORT[_<N>_<PROTO>[_...]]`).
/// A Service named `logship` or `logship-metrics` would otherwise stop every agent pod from
/// starting. Such names never contain the `__` that every nested key has.
fn is_service_link(var: &str) -> bool {
    let name = var.to_ascii_uppercase();
    if name.contains(SEPARATOR) {
        return false;
    }
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT")
    {
        return true;
    }
    // <NAME>_PORT_<number>_<TCP|UDP|SCTP>, then optionally _PROTO, _PORT or _ADDR.
    name.match_indices("_PORT_").any(|(at, _)| {
        let rest = &name[at + "_PORT_".len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let proto = rest[digits..].split('_').nth(1);
        digits > 0
            && rest[digits..].starts_with('_')
            && matches!(proto, Some("TCP" | "UDP" | "SCTP"))
    })
}

/// Reads a variable's text as a value of `kind`.
pub(super) fn read(text: &str, kind: Kind) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::String(text.to_string())),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, found {text:?}")),
        },
        Kind::Number => {
            let t = text.trim();
            t.parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<f64>().map(Value::from))
                .map_err(|_| format!("expected a number, found {text:?}"))
        }
        Kind::List => {
            let t = text.trim();
            if t.starts_with('[') {
                // Any items: a list of tables (`multiline.rules`) is written this way too, and
                // the key's own type is checked with the rest of the configuration.
                serde_json::from_str::<Vec<Value>>(t)
                    .map(Value::Array)
                    .map_err(|e| format!("not a JSON array: {e}"))
            } else {
                Ok(split_list(t).into_iter().map(Value::String).collect())
            }
        }
    }
}

/// Splits comma-separated text, except at commas inside `{...}` (glob alternatives); trims
/// each item and drops empty ones, so an empty variable is an empty list.
fn split_list(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_set_keys_typed_as_the_key_needs() {
        let (settings, errors) = settings(
            &env(&[
                ("LOGSHIP_TAIL__READ_FROM", "tail"),
                ("logship_output__file__fsync", "TRUE"),
                ("LOGSHIP_TAIL__INCLUDE", r#"["/a/*.log", "/b/{x,y}.log"]"#),
                ("LOGSHIP_TAIL__EXCLUDE", "/a/x.log, /b/{p,q}.log,"),
                ("LOGSHIP_NODE_NAME", "1234"),
                ("PATH", "/usr/bin"),
                ("NODE_NAME", "node-1"),
            ]),
            &Schema::new(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<(&str, &Value)> = settings
            .iter()
            .map(|s| (s.key.as_str(), &s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("node_name", &json!("1234")),
                ("tail.exclude", &json!(["/a/x.log", "/b/{p,q}.log"])),
                ("tail.include", &json!(["/a/*.log", "/b/{x,y}.log"])),
                ("tail.read_from", &json!("tail")),
                ("output.file.fsync", &json!(true)),
            ]
        );
    }

    #[test]
    fn variables_naming_no_key_or_with_bad_values_are_errors() {
        let (settings, errors) = settings(
            &env(&[
                ("LOGSHIP_TAIL__READFROM", "tail"),
                ("LOGSHIP_ELASTICSEARCH__URL", "http://es:9200"),
                ("LOGSHIP_TAIL", "x"),
                ("LOGSHIP_OUTPUT__FILE__FSYNC", "maybe"),
                ("LOGSHIP_TAIL__INCLUDE", "[\"/a/*.log\""),
            ]),
            &Schema::new(),
        );
        assert!(settings.is_empty(), "{settings:?}");
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 5, "{messages:#?}");
        assert_eq!(
            messages[0],
            "environment variable LOGSHIP_ELASTICSEARCH__URL: names no configuration key"
        );
        assert!(messages[1].starts_with(
            "environment variable LOGSHIP_OUTPUT__FILE__FSYNC (output.file.fsync): expected true or false"
        ));
        assert_eq!(
            messages[2],
            "environment variable LOGSHIP_TAIL: names no configuration key"
        );
        assert!(messages[3].starts_with(
            "environment variable LOGSHIP_TAIL__INCLUDE (tail.include): not a JSON array"
        ));
        assert_eq!(
            messages[4],
            "environment variable LOGSHIP_TAIL__READFROM: names no configuration key; \
             did you mean LOGSHIP_TAIL__READ_FROM?"
        );
    }

    #[test]
    fn kubernetes_service_links_are_not_configuration() {
        let (settings, errors) = settings(
            &env(&[
                ("LOGSHIP_SERVICE_HOST", "10.0.0.1"),
                ("LOGSHIP_SERVICE_PORT", "9090"),
                ("LOGSHIP_SERVICE_PORT_METRICS", "9090"),
                ("LOGSHIP_PORT", "tcp://10.0.0.1:9090"),
                ("LOGSHIP_PORT_9090_TCP", "tcp://10.0.0.1:9090"),
                ("LOGSHIP_PORT_9090_TCP_ADDR", "10.0.0.1"),
                ("LOGSHIP_METRICS_PORT_9090_TCP_PROTO", "tcp"),
            ]),
            &Schema::new(),
        );
        assert!(settings.is_empty() && errors.is_empty(), "{errors:?}");
        assert!(!is_service_link("LOGSHIP_METRICS__PORT"));
        assert!(!is_service_link("LOGSHIP_PORTS"));
    }

    #[test]
    fn lists_split_outside_braces() {
        assert_eq!(split_list("a,b"), ["a", "b"]);
        assert_eq!(
            split_list("/x/{a,b}.log,/y/*.log"),
            ["/x/{a,b}.log", "/y/*.log"]
        );
        assert_eq!(split_list(" a , ,b "), ["a", "b"]);
        assert!(split_list("").is_empty());
    }
}
