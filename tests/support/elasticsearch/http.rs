//! The HTTP face of the test cluster: routes, and the front layer every request passes through.
//!
//! The front layer does what happens before Elasticsearch's handlers run, in the same order: the
//! body is read and decompressed (`Content-Encoding: gzip` or `deflate`) and measured against
//! `http.max_content_length` after decompression (413, connection closed); then injected faults
//! (a delay, a dropped connection, a replacing status) and authentication (401). Handlers answer
//! with the real bodies and headers: `X-elastic-product: Elasticsearch` on Elasticsearch's own
//! answers, `filter_path` and `pretty` honoured, unknown URL parameters refused. Every request is
//! recorded, with what it carried and how it was answered.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, WWW_AUTHENTICATE,
};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::errors::{self, EsError};
use super::faults::Reply;
use super::{bulk, json as js, Credentials, Flavor, Shared};

/// Lets a handler close its own connection without answering.
#[derive(Clone)]
pub struct Conn {
    pub kill: Arc<Notify>,
}

/// Set by the bulk handler on its response so the front layer can record the item count.
#[derive(Clone, Copy)]
struct BulkItems(usize);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(banner))
        .route("/_bulk", post(bulk_all).put(bulk_all))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .route(
            "/_index_template/{name}",
            get(get_index_template)
                .put(put_index_template)
                .post(put_index_template)
                .delete(delete_index_template),
        )
        .route(
            "/_template/{name}",
            get(get_legacy_template)
                .put(put_legacy_template)
                .post(put_legacy_template),
        )
        .route(
            "/_ingest/pipeline/{id}",
            get(get_pipeline).put(put_pipeline),
        )
        .fallback(no_handler)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

fn is_elasticsearch(flavor: Flavor) -> bool {
    flavor != Flavor::OpenSearch2
}

/// The query string, decoded as Elasticsearch decodes it (`+` is a space).
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
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

pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// How the answer to this request is rendered: `filter_path`, `pretty`, and the media type
/// (the versioned one when the client asked for API compatibility).
struct Render {
    flavor: Flavor,
    filter: Vec<String>,
    pretty: bool,
    compatible: Option<String>,
}

impl Render {
    fn of(flavor: Flavor, params: &[(String, String)], headers: &HeaderMap) -> Self {
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

    fn json(&self, status: u16, value: &Value) -> Response {
        let value = if self.filter.is_empty() {
            value.clone()
        } else {
            filter_path(value, &self.filter).unwrap_or_else(|| json!({}))
        };
        let mut text = if self.pretty {
            serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
        } else {
            value.to_string()
        };
        if status == 404 && value == json!({}) && self.filter.is_empty() {
            text = "{}".into();
        }
        let content_type = match &self.compatible {
            Some(v) => format!("application/vnd.elasticsearch+json;compatible-with={v}"),
            None => "application/json".to_string(),
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

    fn error(&self, e: &EsError) -> Response {
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
                        if p.len() > 1 && super::cluster::simple_match(p[1], k) {
                            next.push(&p[2..]);
                        }
                    } else if super::cluster::simple_match(p[0], k) {
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
                map.retain(|k, _| !super::cluster::simple_match(parts[0], k));
            } else {
                for (k, child) in map.iter_mut() {
                    if super::cluster::simple_match(parts[0], k) {
                        exclude(child, &parts[1..]);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| exclude(i, parts)),
        _ => {}
    }
}

enum Decoded {
    Body(Vec<u8>),
    TooLarge,
    Corrupt(String),
}

fn decode(raw: &[u8], encoding: Option<&str>, limit: usize) -> Decoded {
    let mut out = Vec::new();
    let result = match encoding {
        Some("gzip" | "x-gzip") => flate2::read::MultiGzDecoder::new(raw)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(raw)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        _ => {
            out.extend_from_slice(raw);
            Ok(out.len())
        }
    };
    match result {
        Err(e) => Decoded::Corrupt(e.to_string()),
        Ok(_) if out.len() > limit => Decoded::TooLarge,
        Ok(_) => Decoded::Body(out),
    }
}

fn too_large() -> Response {
    // Netty's aggregator answers before Elasticsearch sees the request, and closes the connection.
    Response::builder()
        .status(413)
        .header(CONTENT_LENGTH, "0")
        .header(CONNECTION, "close")
        .body(Body::empty())
        .expect("valid response")
}

/// The answer an injected status fault gives: the body the real server (or, for 502 and 504, a
/// proxy in front of it) sends.
fn fault_reply(flavor: Flavor, reply: &Reply, render: &Render) -> Response {
    if let Some((content_type, body)) = &reply.body {
        return Response::builder()
            .status(reply.status)
            .header(CONTENT_TYPE, content_type.as_str())
            .body(Body::from(body.clone()))
            .expect("valid response");
    }
    let status = reply.status;
    match status {
        413 => too_large(),
        502 | 504 => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let html = format!(
                "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            Response::builder()
                .status(status)
                .header(CONTENT_TYPE, "text/html")
                .body(Body::from(html))
                .expect("valid response")
        }
        401 => unauthorized(
            flavor,
            "missing authentication credentials for REST request [/]".into(),
        ),
        _ => {
            let e = match status {
                429 => errors::rejected_request(flavor, 1024),
                503 => errors::no_master(flavor),
                500 => errors::internal("failed to execute action"),
                s => EsError::new(
                    s,
                    "status_exception",
                    StatusCode::from_u16(s)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("error"),
                ),
            };
            render.error(&e)
        }
    }
}

fn unauthorized(flavor: Flavor, reason: String) -> Response {
    let mut builder = Response::builder().status(401);
    for challenge in errors::challenges(flavor) {
        builder = builder.header(WWW_AUTHENTICATE, challenge);
    }
    match flavor {
        // The security plugin answers in plain text.
        Flavor::OpenSearch2 => builder
            .header(CONTENT_TYPE, "text/plain; charset=UTF-8")
            .body(Body::from("Unauthorized")),
        _ => builder
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(
                errors::security(flavor, reason).body().to_string(),
            )),
    }
    .expect("valid response")
}

/// Checks the `Authorization` header against the accepted credentials: the 401 when it fails.
fn authenticate(
    flavor: Flavor,
    accepted: &[Credentials],
    header: Option<&str>,
    uri: &str,
) -> Option<Response> {
    if accepted.is_empty() {
        return None;
    }
    let generic = "unable to authenticate with provided credentials and anonymous access is not allowed for this request";
    let Some(header) = header else {
        return Some(unauthorized(
            flavor,
            format!("missing authentication credentials for REST request [{uri}]"),
        ));
    };
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    let value = value.trim();
    let decoded = || base64_decode(value).and_then(|b| String::from_utf8(b).ok());
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let Some((user, password)) = decoded().and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            }) else {
                return Some(unauthorized(
                    flavor,
                    "invalid basic authentication header value".into(),
                ));
            };
            let ok = accepted.iter().any(|c| {
                matches!(c, Credentials::Basic { user: u, password: p } if *u == user && *p == password)
            });
            if ok {
                None
            } else {
                Some(unauthorized(
                    flavor,
                    format!("unable to authenticate user [{user}] for REST request [{uri}]"),
                ))
            }
        }
        "apikey" => {
            let ok = decoded().is_some_and(|s| {
                accepted.iter().any(
                    |c| matches!(c, Credentials::ApiKey { id, key } if s == format!("{id}:{key}")),
                )
            });
            if ok {
                None
            } else {
                Some(unauthorized(flavor, generic.into()))
            }
        }
        "bearer" => {
            let ok = accepted
                .iter()
                .any(|c| matches!(c, Credentials::Bearer(t) if t == value));
            if ok {
                None
            } else {
                Some(unauthorized(flavor, generic.into()))
            }
        }
        _ => Some(unauthorized(
            flavor,
            format!("missing authentication credentials for REST request [{uri}]"),
        )),
    }
}

/// The layer in front of every route: body, faults, authentication, recording.
async fn front(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let flavor = shared.flavor;
    let conn = req.extensions().get::<Conn>().cloned();
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.to_string();
    let encoding = parts
        .headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let (seq, delay, limit) = {
        let mut st = shared.lock();
        let seq = st.begin_request(
            &parts.method,
            &parts.uri,
            &parts.headers,
            encoding.as_deref(),
        );
        (seq, st.delay, st.max_content_length)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        shared.lock().end_request(seq, Some(413), None);
        return too_large();
    }
    let raw = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            shared.lock().end_request(seq, Some(413), None);
            return too_large();
        }
    };
    let render = Render::of(flavor, &query_params(parts.uri.query()), &parts.headers);
    let decoded = match decode(&raw, encoding.as_deref(), limit) {
        Decoded::Body(b) => b,
        Decoded::TooLarge => {
            shared.lock().end_request(seq, Some(413), Some(raw.len()));
            return too_large();
        }
        Decoded::Corrupt(reason) => {
            shared.lock().end_request(seq, Some(400), None);
            return render.error(&EsError::new(400, "decoder_exception", reason));
        }
    };
    let (drop, fault, auth) = {
        let mut st = shared.lock();
        st.set_body_size(seq, raw.len(), decoded.len());
        let drop = st.faults.take_drop();
        let fault = if drop.is_none() {
            st.faults.take_request_fault(Instant::now())
        } else {
            None
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let auth = authenticate(flavor, &st.credentials, header, &uri);
        (drop, fault, auth)
    };
    if drop == Some(super::DropPoint::BeforeProcessing) {
        shared.lock().end_request(seq, None, None);
        return hang_up(conn).await;
    }
    if let Some(reply) = fault {
        shared.lock().end_request(seq, Some(reply.status), None);
        return fault_reply(flavor, &reply, &render);
    }
    if let Some(resp) = auth {
        shared.lock().end_request(seq, Some(401), None);
        return resp;
    }
    parts.headers.remove(CONTENT_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(decoded.len()));
    let resp = next
        .run(Request::from_parts(parts, Body::from(decoded)))
        .await;
    let items = resp.extensions().get::<BulkItems>().map(|b| b.0);
    if drop == Some(super::DropPoint::AfterProcessing) {
        shared.lock().end_request(seq, None, items);
        return hang_up(conn).await;
    }
    shared
        .lock()
        .end_request(seq, Some(resp.status().as_u16()), items);
    resp
}

/// Closes this request's connection without answering: the connection task drops the socket
/// when told, and this future never completes.
async fn hang_up(conn: Option<Conn>) -> Response {
    match conn {
        Some(conn) => {
            conn.kill.notify_one();
            std::future::pending::<Response>().await
        }
        None => too_large(),
    }
}

async fn banner(State(shared): State<Arc<Shared>>) -> Response {
    let flavor = shared.flavor;
    let body = match flavor {
        Flavor::Elasticsearch8 => json!({
            "name": "es-node-1",
            "cluster_name": "logship-test",
            "cluster_uuid": shared.cluster_uuid,
            "version": {
                "number": "8.15.3",
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "f97532e680b555c3a05e73a74c28afb666923018",
                "build_date": "2024-10-09T22:08:00.328917561Z",
                "build_snapshot": false,
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0"
            },
            "tagline": "You Know, for Search"
        }),
        Flavor::Elasticsearch7 => json!({
            "name": "es-node-1",
            "cluster_name": "logship-test",
            "cluster_uuid": shared.cluster_uuid,
            "version": {
                "number": "7.17.24",
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "fcf25fff740db6ab3ed5d145c58d70e4c3528ec8",
                "build_date": "2024-09-05T07:57:07.326893186Z",
                "build_snapshot": false,
                "lucene_version": "8.11.3",
                "minimum_wire_compatibility_version": "6.8.0",
                "minimum_index_compatibility_version": "6.0.0-beta1"
            },
            "tagline": "You Know, for Search"
        }),
        Flavor::OpenSearch2 => json!({
            "name": "opensearch-node1",
            "cluster_name": "logship-test",
            "cluster_uuid": shared.cluster_uuid,
            "version": {
                "distribution": "opensearch",
                "number": "2.17.1",
                "build_type": "tar",
                "build_hash": "1893d20797e30110e5877170e44d42275ce5951e",
                "build_date": "2024-09-26T21:59:32.078798875Z",
                "build_snapshot": false,
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.10.0",
                "minimum_index_compatibility_version": "7.0.0"
            },
            "tagline": "The OpenSearch Project: https://opensearch.org/"
        }),
    };
    Render::of(flavor, &[], &HeaderMap::new()).json(200, &body)
}

/// Elasticsearch refuses a body whose media type it cannot read.
fn content_type_rejection(flavor: Flavor, headers: &HeaderMap, ndjson: bool) -> Option<Response> {
    let raw = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut accepted = vec!["application/json"];
    if ndjson {
        accepted.push("application/x-ndjson");
    }
    if flavor == Flavor::Elasticsearch8 {
        accepted.push("application/vnd.elasticsearch+json");
        if ndjson {
            accepted.push("application/vnd.elasticsearch+x-ndjson");
        }
    }
    if accepted.contains(&media.as_str()) {
        return None;
    }
    let mut resp = Render::of(flavor, &[], headers).json(
        406,
        &errors::plain(
            406,
            &format!("Content-Type header [{raw}] is not supported"),
        ),
    );
    *resp.status_mut() = StatusCode::NOT_ACCEPTABLE;
    Some(resp)
}

/// Elasticsearch refuses URL parameters a handler does not consume.
fn check_params(path: &str, params: &[(String, String)], allowed: &[&str]) -> Result<(), EsError> {
    const GLOBAL: &[&str] = &[
        "pretty",
        "human",
        "error_trace",
        "filter_path",
        "source",
        "source_content_type",
    ];
    let unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k) && !GLOBAL.contains(k))
        .collect();
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => Err(errors::illegal_argument(format!(
            "request [{path}] contains unrecognized parameter: [{one}]"
        ))),
        many => Err(errors::illegal_argument(format!(
            "request [{path}] contains unrecognized parameters: {}",
            many.iter()
                .map(|k| format!("[{k}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn bulk_all(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    bulk(shared, None, req).await
}

async fn bulk_index(
    State(shared): State<Arc<Shared>>,
    Path(index): Path<String>,
    req: Request,
) -> Response {
    bulk(shared, Some(index), req).await
}

async fn bulk(shared: Arc<Shared>, index: Option<String>, req: Request) -> Response {
    let flavor = shared.flavor;
    let (parts, body) = req.into_parts();
    let params = query_params(parts.uri.query());
    let render = Render::of(flavor, &params, &parts.headers);
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut allowed = vec![
        "pipeline",
        "refresh",
        "routing",
        "timeout",
        "wait_for_active_shards",
        "_source",
        "_source_excludes",
        "_source_includes",
        "require_alias",
    ];
    match flavor {
        Flavor::Elasticsearch8 => allowed.extend([
            "require_data_stream",
            "list_executed_pipelines",
            "include_source_on_error",
        ]),
        Flavor::Elasticsearch7 => allowed.push("type"),
        Flavor::OpenSearch2 => {}
    }
    if let Err(e) = check_params(parts.uri.path(), &params, &allowed) {
        return render.error(&e);
    }
    if body.is_empty() {
        return render.error(&EsError::new(
            400,
            "parse_exception",
            "request body is required",
        ));
    }
    if let Some(resp) = content_type_rejection(flavor, &parts.headers, true) {
        return resp;
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let refresh = match param("refresh") {
        None | Some("false") | Some("wait_for") => false,
        Some("" | "true") => true,
        Some(other) => {
            return render.error(&errors::illegal_argument(format!(
                "Unknown value for refresh: [{other}]."
            )))
        }
    };
    let started = Instant::now();
    let ops = match bulk::parse(&body, flavor, index.as_deref(), param("pipeline"))
        .and_then(|ops| bulk::validate(&ops).map(|()| ops))
    {
        Ok(ops) => ops,
        Err(e) => return render.error(&e),
    };
    let (items, errors) = {
        let mut st = shared.lock();
        let st = &mut *st;
        let mut items = Vec::with_capacity(ops.len());
        let mut errors = false;
        for op in &ops {
            let outcome = st.cluster.execute(op, refresh, &mut st.faults);
            *st.item_statuses.entry(outcome.status).or_insert(0) += 1;
            errors |= outcome.failed;
            items.push(outcome.json);
        }
        (items, errors)
    };
    let count = items.len();
    let body = json!({
        "errors": errors,
        "took": started.elapsed().as_millis() as u64,
        "items": items,
    });
    let mut resp = render.json(200, &body);
    resp.extensions_mut().insert(BulkItems(count));
    resp
}

/// A JSON request body, or the 400 Elasticsearch answers for it.
fn json_body(flavor: Flavor, body: &[u8]) -> Result<Value, EsError> {
    if body.is_empty() {
        return Err(EsError::new(
            400,
            "parse_exception",
            "request body is required",
        ));
    }
    match js::parse_first(body) {
        Ok(Some((node, _))) if matches!(node.value, js::Kind::Object(_)) => Ok(node.to_value()),
        Ok(_) => Err(EsError::new(
            400,
            "parse_exception",
            "request body is required",
        )),
        Err(e) => Err(errors::x_content(
            flavor,
            &js::location(body, e.at),
            &e.message,
        )),
    }
}

async fn read_json(flavor: Flavor, req: Request) -> Result<(Value, Render), Response> {
    let (parts, body) = req.into_parts();
    let render = Render::of(flavor, &query_params(parts.uri.query()), &parts.headers);
    if let Some(resp) = content_type_rejection(flavor, &parts.headers, false) {
        return Err(resp);
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    match json_body(flavor, &body) {
        Ok(v) => Ok((v, render)),
        Err(e) => Err(render.error(&e)),
    }
}

const INDEX_TEMPLATE_FIELDS: &[&str] = &[
    "index_patterns",
    "template",
    "composed_of",
    "priority",
    "version",
    "_meta",
    "data_stream",
    "allow_auto_create",
    "ignore_missing_component_templates",
    "deprecated",
];

async fn put_index_template(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let flavor = shared.flavor;
    let (body, render) = match read_json(flavor, req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Some(unknown) = body.as_object().and_then(|o| {
        o.keys()
            .find(|k| !INDEX_TEMPLATE_FIELDS.contains(&k.as_str()))
    }) {
        return render.error(&errors::x_content(
            flavor,
            "1:2",
            &format!("[index_template] unknown field [{unknown}]"),
        ));
    }
    match shared.lock().cluster.put_index_template(&name, body) {
        Ok(()) => render.json(200, &json!({"acknowledged": true})),
        Err(e) => render.error(&e),
    }
}

async fn get_index_template(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let flavor = shared.flavor;
    let render = Render::of(flavor, &query_params(req.uri().query()), req.headers());
    let st = shared.lock();
    let found: Vec<Value> = st
        .cluster
        .index_templates
        .iter()
        .filter(|(n, _)| super::cluster::simple_match(&name, n))
        .map(|(n, t)| json!({"name": n, "index_template": t}))
        .collect();
    if found.is_empty() {
        let e = EsError::new(
            404,
            "resource_not_found_exception",
            format!("index template matching [{name}] not found"),
        );
        return render.error(&e);
    }
    render.json(200, &json!({ "index_templates": found }))
}

async fn delete_index_template(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let render = Render::of(
        shared.flavor,
        &query_params(req.uri().query()),
        req.headers(),
    );
    match shared.lock().cluster.index_templates.remove(&name) {
        Some(_) => render.json(200, &json!({"acknowledged": true})),
        None => render.error(&EsError::new(
            404,
            "resource_not_found_exception",
            format!("index_template [{name}] missing"),
        )),
    }
}

async fn put_legacy_template(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (body, render) = match read_json(shared.flavor, req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match shared.lock().cluster.put_legacy_template(&name, body) {
        Ok(()) => render.json(200, &json!({"acknowledged": true})),
        Err(e) => render.error(&e),
    }
}

async fn get_legacy_template(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let render = Render::of(
        shared.flavor,
        &query_params(req.uri().query()),
        req.headers(),
    );
    match shared.lock().cluster.legacy_templates.get(&name) {
        Some(t) => render.json(200, &json!({ name: t })),
        None => render.json(404, &json!({})),
    }
}

async fn put_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (body, render) = match read_json(shared.flavor, req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if !body.get("processors").is_some_and(Value::is_array) {
        return render.error(
            &EsError::new(
                400,
                "parse_exception",
                "[processors] required property is missing",
            )
            .with("property_name", "processors"),
        );
    }
    shared.lock().cluster.pipelines.insert(id, body);
    render.json(200, &json!({"acknowledged": true}))
}

async fn get_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let render = Render::of(
        shared.flavor,
        &query_params(req.uri().query()),
        req.headers(),
    );
    match shared.lock().cluster.pipelines.get(&id) {
        Some(p) => render.json(200, &json!({ id: p })),
        None => render.json(404, &json!({})),
    }
}

async fn no_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let text = format!(
        "no handler found for uri [{}] and method [{}]",
        req.uri(),
        req.method()
    );
    Render::of(shared.flavor, &[], req.headers()).json(400, &errors::plain(400, &text))
}

async fn wrong_method(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let allowed = if path == "/" {
        "HEAD, GET"
    } else if path.ends_with("/_bulk") {
        "POST, PUT"
    } else if path.starts_with("/_ingest/") {
        "GET, PUT, DELETE"
    } else {
        "HEAD, GET, POST, PUT, DELETE"
    };
    let method = if req.method() == Method::HEAD {
        "HEAD".to_string()
    } else {
        req.method().to_string()
    };
    let text = format!(
        "Incorrect HTTP method for uri [{}] and method [{method}], allowed: [{allowed}]",
        req.uri()
    );
    let mut resp =
        Render::of(shared.flavor, &[], req.headers()).json(405, &errors::plain(405, &text));
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_str(allowed).expect("ascii"));
    resp
}

/// Adds the per-connection control the front layer uses to hang up.
pub fn with_conn(router: Router, conn: Conn) -> Router {
    router.layer(Extension(conn))
}
