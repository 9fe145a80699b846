//! Label and field selectors, parsed and matched as `k8s.io/apimachinery`'s `labels.Parse` and
//! `fields.ParseSelector` do, and the field labels each resource supports (`spec.nodeName` for
//! pods; anything else a pod does not index is refused with 400, as the real conversion does).
//!
//! Label selectors: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`,
//! `k<n`, comma-separated (all must hold). Field selectors: `f=v`, `f==v`, `f!=v`, with `\,`,
//! `\=` and `\\` escapes in values.

use std::collections::BTreeSet;

use serde_json::Value;

use super::store::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err("unable to parse requirement: found '', expected: identifier".into());
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key).and_then(Value::as_str);
            match &r.op {
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
                LabelOp::Equals(v) => value == Some(v.as_str()),
                LabelOp::NotEquals(v) => value != Some(v.as_str()),
                LabelOp::In(set) => value.is_some_and(|v| set.contains(v)),
                LabelOp::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
                LabelOp::GreaterThan(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::LessThan(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(LabelRequirement {
            key: key.into(),
            op: LabelOp::NotExists,
        });
    }
    for (token, make) in [
        ("!=", LabelOp::NotEquals as fn(String) -> LabelOp),
        ("==", LabelOp::Equals),
        ("=", LabelOp::Equals),
    ] {
        if let Some(i) = part.find(token) {
            let key = part[..i].trim();
            let value = part[i + token.len()..].trim();
            check_key(key)?;
            check_value(value)?;
            return Ok(LabelRequirement {
                key: key.into(),
                op: make(value.into()),
            });
        }
    }
    for (token, greater) in [(">", true), ("<", false)] {
        if let Some(i) = part.find(token) {
            let key = part[..i].trim();
            check_key(key)?;
            let raw = part[i + 1..].trim();
            let n = raw.parse::<i64>().map_err(|_| {
                format!(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {raw}"
                )
            })?;
            return Ok(LabelRequirement {
                key: key.into(),
                op: if greater {
                    LabelOp::GreaterThan(n)
                } else {
                    LabelOp::LessThan(n)
                },
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (negate, set) = if let Some(s) = rest.strip_prefix("notin") {
            (true, s)
        } else if let Some(s) = rest.strip_prefix("in") {
            (false, s)
        } else {
            return Err(format!(
                "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
            ));
        };
        check_key(key)?;
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("unable to parse requirement: found '{set}', expected: '('"))?;
        let mut values = BTreeSet::new();
        for v in inner.split(',') {
            let v = v.trim();
            check_value(v)?;
            values.insert(v.to_string());
        }
        return Ok(LabelRequirement {
            key: key.into(),
            op: if negate {
                LabelOp::NotIn(values)
            } else {
                LabelOp::In(values)
            },
        });
    }
    check_key(part)?;
    Ok(LabelRequirement {
        key: part.into(),
        op: LabelOp::Exists,
    })
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then 1-63 characters of
/// `[A-Za-z0-9._-]` starting and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !prefix_ok {
                return Err(format!(
                    "unable to parse requirement: <nil>: Invalid value: \"{key}\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("unable to parse requirement: found '', expected: identifier".into());
    }
    if !label_like(name) {
        return Err(format!(
            "unable to parse requirement: <nil>: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_like(value) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: values[0][value]: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ))
    }
}

fn label_like(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the selector and checks every field against those `kind` supports. Errors are the
    /// messages of the 400 the real server answers.
    pub fn parse(text: &str, kind: Kind) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if text.is_empty() {
            return Ok(FieldSelector::default());
        }
        for term in split_unescaped(text, ',') {
            let (field, value, equal) = if let Some(i) = find_unescaped(&term, "!=") {
                (&term[..i], &term[i + 2..], false)
            } else if let Some(i) = find_unescaped(&term, "==") {
                (&term[..i], &term[i + 2..], true)
            } else if let Some(i) = find_unescaped(&term, "=") {
                (&term[..i], &term[i + 1..], true)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: unescape(value),
                equal,
            });
        }
        for r in &requirements {
            if !supported_fields(kind).contains(&r.field.as_str()) {
                return Err(format!("field label not supported: {}", r.field));
            }
        }
        Ok(FieldSelector { requirements })
    }

    /// Adds `field=value` (a GET-by-name watch is a watch with `metadata.name=<name>`).
    pub fn and_equals(mut self, field: &str, value: &str) -> Self {
        self.requirements.push(FieldRequirement {
            field: field.into(),
            value: value.into(),
            equal: true,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(object, &r.field);
            (actual == r.value) == r.equal
        })
    }
}

fn supported_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        // As `pkg/apis/core/v1/conversion.go` and the pod registry's `ToSelectableFields`.
        Kind::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        Kind::Namespace => &["metadata.name", "metadata.namespace", "status.phase"],
    }
}

/// The value a field label has on an object, as the registry's selectable fields render it
/// (missing strings are empty; `spec.hostNetwork` is `"true"` or `"false"`).
fn field_value(object: &Value, field: &str) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match field {
        "metadata.name" => s(&object["metadata"]["name"]),
        "metadata.namespace" => s(&object["metadata"]["namespace"]),
        "spec.nodeName" => s(&object["spec"]["nodeName"]),
        "spec.restartPolicy" => s(&object["spec"]["restartPolicy"]),
        "spec.schedulerName" => s(&object["spec"]["schedulerName"]),
        "spec.serviceAccountName" => s(&object["spec"]["serviceAccountName"]),
        "spec.hostNetwork" => object["spec"]["hostNetwork"]
            .as_bool()
            .unwrap_or(false)
            .to_string(),
        "status.phase" => s(&object["status"]["phase"]),
        "status.podIP" => s(&object["status"]["podIP"]),
        // The registry indexes only the first IP under this label.
        "status.podIPs" => s(&object["status"]["podIPs"][0]["ip"]),
        "status.nominatedNodeName" => s(&object["status"]["nominatedNodeName"]),
        _ => String::new(),
    }
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn find_unescaped(text: &str, token: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if text[i..].starts_with(token) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}
