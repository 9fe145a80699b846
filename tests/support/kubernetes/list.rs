//! LIST, as the watch cache and etcd3's store serve it between them.
//!
//! - `resourceVersion` unset: a consistent read of the latest state; `limit` pages it, each page
//!   read at the first page's version through the `continue` token.
//! - `resourceVersion=0`: the watch cache's latest state; `limit` is ignored (no `continue`).
//! - `resourceVersion=N` with `resourceVersionMatch=NotOlderThan`: the latest state (after waiting
//!   up to 3 s for N, then 504); with `Exact`, or with a `limit` and no match (the legacy rule),
//!   the state at exactly N, 410 when N is compacted.
//! - `continue`: etcd3's token (base64url of `{"v","rv","start"}`); once its version is compacted,
//!   410 with a fresh token (`rv: -1`) that continues at the latest version, as etcd3 answers.
//!
//! Items come in etcd key order, without their own `kind` and `apiVersion`; `remainingItemCount`
//! is only given when no selector filters the list, since only then is it known.

use std::sync::Arc;

use axum::response::Response;

use serde_json::{json, Value};

use super::http::{raw_json_response, render_item, status_response, ListOptions};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status;
use super::store::Kind;

/// A `continue` token as etcd3's store encodes it: base64url (no padding) of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key after the prefix>\u0000"}`.
fn encode_continue(rv: i64, start: &str) -> String {
    let json = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64url_encode(json.as_bytes())
}

fn decode_continue(token: &str) -> Result<(i64, String), Value> {
    let invalid = |why: &str| status::bad_request(&format!("continue key is not valid: {why}"));
    let bytes = base64url_decode(token).ok_or_else(|| invalid("illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v["rv"]
        .as_i64()
        .ok_or_else(|| invalid("incorrect encoded start resourceVersion"))?;
    if rv == 0 {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = v["start"]
        .as_str()
        .ok_or_else(|| invalid("no start key"))?
        .to_string();
    if start.is_empty() || start.starts_with('/') || start.split('/').any(|p| p == "..") {
        return Err(invalid("key is not valid"));
    }
    Ok((rv, start))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Which state a list reads, as the cacher and etcd3's store decide it.
enum Read {
    /// The latest state.
    Latest,
    /// The state at exactly this version.
    Exact(u64),
}

#[allow(clippy::too_many_arguments)]
pub async fn list(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    opts: ListOptions,
    metadata_only: bool,
) -> Response {
    // The key prefix a list reads under, and so what a continue token's start is relative to.
    let prefix = match (&namespace, kind) {
        (Some(ns), Kind::Pod) => format!("{ns}/"),
        _ => String::new(),
    };
    let mut start_after: Option<String> = None;
    let mut paginate = opts.limit > 0;
    let read = if let Some(token) = &opts.continue_token {
        if opts.resource_version.as_deref().is_some_and(|v| v != "0") {
            return status_response(&status::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = match decode_continue(token) {
            Ok(t) => t,
            Err(s) => return status_response(&s),
        };
        let floor = shared.lock().store.floor;
        start_after = Some(format!("{prefix}{}", start.trim_end_matches('\0')));
        if rv == -1 {
            Read::Latest
        } else if rv < 0 || (rv as u64) < floor {
            return status_response(&status::continue_expired(&encode_continue(-1, &start)));
        } else {
            Read::Exact(rv as u64)
        }
    } else {
        match opts.resource_version.as_deref() {
            None => Read::Latest,
            Some("0") => {
                // Served from the watch cache, which does not paginate.
                paginate = false;
                Read::Latest
            }
            Some(v) => {
                let Ok(n) = v.parse::<u64>() else {
                    return status_response(&status::bad_request(&format!(
                        "invalid resource version \"{v}\""
                    )));
                };
                if n > shared.lock().store.rv {
                    if let Err(s) = shared.wait_for_rv(n).await {
                        return status_response(&s);
                    }
                }
                match opts.resource_version_match.as_deref() {
                    Some("Exact") => Read::Exact(n),
                    Some(_) => Read::Latest,
                    // Legacy semantics: a limit makes a list at a version exact.
                    None if opts.limit > 0 => Read::Exact(n),
                    None => Read::Latest,
                }
            }
        }
    };
    let (objects, list_rv) = {
        let st = shared.lock();
        match read {
            Read::Latest => (st.store.current(kind), st.store.rv),
            Read::Exact(rv) => match st.store.at(kind, rv) {
                Some(o) => (o, rv),
                None if opts.continue_token.is_some() => {
                    let start = start_after.clone().unwrap_or_default();
                    let rel = start.strip_prefix(&prefix).unwrap_or(&start).to_string();
                    return status_response(&status::continue_expired(&encode_continue(
                        -1,
                        &format!("{rel}\0"),
                    )));
                }
                None => return status_response(&status::too_old_list()),
            },
        }
    };
    let selecting = !labels.is_empty() || !fields.is_empty();
    let in_scope = |key: &str, o: &Value| {
        key.starts_with(&prefix)
            && start_after.as_deref().is_none_or(|s| key > s)
            && labels.matches(o)
            && fields.matches(o)
    };
    let matching: Vec<(String, Arc<Value>)> = objects
        .into_iter()
        .filter(|(key, o)| in_scope(key, o))
        .collect();
    let mut metadata = format!("{{\"resourceVersion\":\"{list_rv}\"");
    let page: &[(String, Arc<Value>)] = if paginate && (matching.len() as i64) > opts.limit {
        let page = &matching[..opts.limit as usize];
        let last = &page[page.len() - 1].0;
        let rel = last.strip_prefix(&prefix).unwrap_or(last);
        metadata.push_str(&format!(
            ",\"continue\":\"{}\"",
            encode_continue(list_rv as i64, &format!("{rel}\0"))
        ));
        if !selecting {
            metadata.push_str(&format!(
                ",\"remainingItemCount\":{}",
                matching.len() - page.len()
            ));
        }
        page
    } else {
        &matching
    };
    metadata.push('}');
    let items: Vec<String> = page
        .iter()
        .map(|(_, o)| serde_json::to_string(&render_item(o, metadata_only)).expect("serialisable"))
        .collect();
    let (list_kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList", "meta.k8s.io/v1")
    } else {
        (kind.list_kind(), "v1")
    };
    raw_json_response(
        200,
        format!(
            "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{metadata},\"items\":[{}]}}\n",
            items.join(",")
        ),
    )
}
