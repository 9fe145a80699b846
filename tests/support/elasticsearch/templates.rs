//! Index templates, as they decide what a first write creates: the highest-priority matching
//! composable template (the built-in `logs` template, priority 100, on Elasticsearch 7.9+ and 8.x)
//! says whether a name becomes a data stream and seeds its mapping and settings; without one, the
//! matching legacy templates apply in `order`. Storing a template runs Elasticsearch's checks
//! (patterns present, known field types, no equal-priority overlap).

use std::collections::BTreeMap;

use serde_json::Value;

use super::cluster::Cluster;
use super::errors::{self, EsError};
use super::mapping::{self, Mapping};
use super::Flavor;

impl Cluster {
    /// Whether a new index of this name is a data stream, and its initial mapping, from the
    /// templates that match it: the highest-priority composable template (built-in `logs` at
    /// priority 100 on Elasticsearch), else the legacy templates in `order`.
    pub(super) fn plan_new_index(&self, name: &str) -> (bool, Mapping) {
        let mut best: Option<(i64, Option<&Value>)> = None;
        if self.flavor != Flavor::OpenSearch2 && simple_match("logs-*-*", name) {
            best = Some((100, None));
        }
        for template in self.index_templates.values() {
            if patterns(template).iter().any(|p| simple_match(p, name)) {
                let priority = template
                    .get("priority")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if best.is_none_or(|(p, _)| priority > p) {
                    best = Some((priority, Some(template)));
                }
            }
        }
        match best {
            Some((_, None)) => (
                true,
                Mapping::builtin_logs(self.flavor, self.total_fields_limit),
            ),
            Some((_, Some(template))) => {
                let body = template.get("template");
                let mut m = Mapping::new(self.total_fields_limit);
                if let Some(settings) = body.and_then(|t| t.get("settings")) {
                    apply_settings(&mut m, settings);
                }
                if let Some(mappings) = body.and_then(|t| t.get("mappings")) {
                    m.apply_template(mappings, self.flavor);
                }
                let data_stream = template.get("data_stream").is_some();
                if data_stream {
                    m.make_data_stream();
                }
                (data_stream, m)
            }
            None => {
                let mut m = Mapping::new(self.total_fields_limit);
                let mut legacy: Vec<&Value> = self
                    .legacy_templates
                    .values()
                    .filter(|t| patterns(t).iter().any(|p| simple_match(p, name)))
                    .collect();
                legacy.sort_by_key(|t| t.get("order").and_then(Value::as_i64).unwrap_or(0));
                for t in legacy {
                    if let Some(settings) = t.get("settings") {
                        apply_settings(&mut m, settings);
                    }
                    if let Some(mappings) = t.get("mappings") {
                        m.apply_template(mappings, self.flavor);
                    }
                }
                (false, m)
            }
        }
    }

    /// Stores a composable index template after Elasticsearch's checks.
    pub fn put_index_template(&mut self, name: &str, body: Value) -> Result<(), EsError> {
        let pats = patterns(&body);
        if pats.is_empty() {
            return Err(errors::validation(&["index patterns are missing".into()]));
        }
        if let Some(mappings) = body.get("template").and_then(|t| t.get("mappings")) {
            mapping::parse_mappings(mappings, self.flavor)?;
        }
        let priority = body.get("priority").and_then(Value::as_i64).unwrap_or(0);
        let mut others: Vec<(String, Vec<String>, i64)> = self
            .index_templates
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, t)| {
                let p = t.get("priority").and_then(Value::as_i64).unwrap_or(0);
                (n.clone(), patterns(t), p)
            })
            .collect();
        if self.flavor != Flavor::OpenSearch2 {
            others.push(("logs".into(), vec!["logs-*-*".into()], 100));
        }
        for (other, other_pats, p) in others {
            let overlap = pats.iter().any(|a| {
                other_pats
                    .iter()
                    .any(|b| simple_match(a, b) || simple_match(b, a))
            });
            if overlap && p == priority {
                return Err(errors::illegal_argument(format!(
                    "index template [{name}] has index patterns {} matching patterns from existing templates [{other}] with patterns ({other} => {}) that have the same priority [{priority}], multiple index templates may not match during index creation, please use a different priority",
                    bracket(&pats),
                    bracket(&other_pats)
                )));
            }
        }
        self.index_templates.insert(name.to_string(), body);
        Ok(())
    }

    pub fn put_legacy_template(&mut self, name: &str, body: Value) -> Result<(), EsError> {
        if patterns(&body).is_empty() {
            return Err(errors::validation(&["index patterns are missing".into()]));
        }
        if let Some(mappings) = body.get("mappings") {
            mapping::parse_mappings(mappings, self.flavor)?;
        }
        self.legacy_templates.insert(name.to_string(), body);
        Ok(())
    }
}

fn bracket(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// `index_patterns` as a list (a single string is accepted, as Elasticsearch does).
fn patterns(template: &Value) -> Vec<String> {
    match template.get("index_patterns") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Index settings as dotted keys, whether written nested or flat.
fn flatten_settings(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_settings(&key, child, out);
            }
        }
        other => {
            let key = prefix.strip_prefix("index.").unwrap_or(prefix).to_string();
            out.insert(key, other.clone());
        }
    }
}

fn apply_settings(m: &mut Mapping, settings: &Value) {
    let mut flat = BTreeMap::new();
    flatten_settings("", settings, &mut flat);
    let as_bool = |v: &Value| v.as_bool().or_else(|| v.as_str().map(|s| s == "true"));
    let as_usize = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(|n| n as usize)
    };
    if let Some(n) = flat.get("mapping.total_fields.limit").and_then(as_usize) {
        m.total_fields_limit = n;
    }
    if let Some(b) = flat
        .get("mapping.total_fields.ignore_dynamic_beyond_limit")
        .and_then(as_bool)
    {
        m.ignore_dynamic_beyond_limit = b;
    }
    if let Some(b) = flat.get("mapping.ignore_malformed").and_then(as_bool) {
        m.ignore_malformed = b;
    }
}

/// Elasticsearch's `Regex.simpleMatch`: `*` matches any run of characters.
pub fn simple_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}
