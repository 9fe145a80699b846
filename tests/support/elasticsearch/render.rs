//! How answers are rendered, as Elasticsearch's REST layer renders them: `filter_path` (with `*`,
//! `**` and `-` exclusions), `pretty`, the compatible-with media type, and the
//! `X-elastic-product` header Elasticsearch (not OpenSearch) puts on its own answers. Also the
//! query-string decoding every handler shares.

use axum::body::Body;
use axum::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use axum::response::Response;
use serde_json::{json, Value};

use super::errors::EsError;
use super::templates::simple_match;
use super::Flavor;

pub fn is_elasticsearch(flavor: Flavor) -> bool {
    flavor != Flavor::OpenSearch2
}

/// The query string, decoded as Elasticsearch decodes it (`+` is a space).
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the answer to this request is rendered: `filter_path`, `pretty`, and the media type
/// (the versioned one when the client asked for API compatibility).
pub struct Render {
    flavor: Flavor,
    filter: Vec<String>,
    pretty: bool,
    compatible: Option<String>,
}

impl Render {
    pub fn of(flavor: Flavor, params: &[(String, String)], headers: &HeaderMap) -> Self {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let compatible = [headers.get("accept"), headers.get(CONTENT_TYPE)]
            .into_iter()
            .flatten()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.split("compatible-with=")
                    .nth(1)
                    .map(|n| n.trim().to_string())
            });
        Render {
            flavor,
            filter: get("filter_path")
                .map(|f| f.split(',').map(str::trim).map(str::to_string).collect())
                .unwrap_or_default(),
            pretty: get("pretty").is_some_and(|v| v != "false"),
            compatible: compatible.filter(|_| flavor == Flavor::Elasticsearch8),
        }
    }

    pub fn json(&self, status: u16, value: &Value) -> Response {
        let value = if self.filter.is_empty() {
            value.clone()
        } else {
            filter_path(value, &self.filter).unwrap_or_else(|| json!({}))
        };
        let text = if self.pretty {
            serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
        } else {
            value.to_string()
        };
        let content_type = match &self.compatible {
            Some(v) => format!("application/vnd.elasticsearch+json;compatible-with={v}"),
            // 8.x dropped the charset parameter that 7.x (and OpenSearch) still send.
            None if self.flavor == Flavor::Elasticsearch8 => "application/json".to_string(),
            None => "application/json; charset=UTF-8".to_string(),
        };
        let mut resp = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(text))
            .expect("valid response");
        if is_elasticsearch(self.flavor) {
            resp.headers_mut().insert(
                "x-elastic-product",
                HeaderValue::from_static("Elasticsearch"),
            );
        }
        resp
    }

    pub fn error(&self, e: &EsError) -> Response {
        self.json(e.status, &e.body())
    }
}

/// `filter_path`: keeps what the dotted patterns name (`*` within a name, `**` across levels,
/// arrays traversed transparently); `None` when nothing is left.
fn filter_path(value: &Value, patterns: &[String]) -> Option<Value> {
    let (excludes, includes): (Vec<&String>, Vec<&String>) =
        patterns.iter().partition(|p| p.starts_with('-'));
    let mut value = value.clone();
    if !includes.is_empty() {
        let split: Vec<Vec<&str>> = includes.iter().map(|p| p.split('.').collect()).collect();
        let refs: Vec<&[&str]> = split.iter().map(Vec::as_slice).collect();
        value = include(&value, &refs)?;
    }
    for ex in excludes {
        let parts: Vec<&str> = ex[1..].split('.').collect();
        exclude(&mut value, &parts);
    }
    Some(value)
}

fn include(value: &Value, patterns: &[&[&str]]) -> Option<Value> {
    if patterns.iter().any(|p| p.is_empty()) {
        return Some(value.clone());
    }
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, child) in map {
                let mut next: Vec<&[&str]> = Vec::new();
                for p in patterns {
                    if p[0] == "**" {
                        next.push(p);
                        next.push(&p[1..]);
                        if p.len() > 1 && simple_match(p[1], k) {
                            next.push(&p[2..]);
                        }
                    } else if simple_match(p[0], k) {
                        next.push(&p[1..]);
                    }
                }
                if next.is_empty() {
                    continue;
                }
                if let Some(v) = include(child, &next) {
                    out.insert(k.clone(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(|i| include(i, patterns)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => None,
    }
}

fn exclude(value: &mut Value, parts: &[&str]) {
    match value {
        Value::Object(map) => {
            if parts.len() == 1 {
                map.retain(|k, _| !simple_match(parts[0], k));
            } else {
                for (k, child) in map.iter_mut() {
                    if simple_match(parts[0], k) {
                        exclude(child, &parts[1..]);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| exclude(i, parts)),
        _ => {}
    }
}
