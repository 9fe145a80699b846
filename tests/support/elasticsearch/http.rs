//! The HTTP face of the test cluster: routes, the front layer every request passes through, the
//! banner and the `_bulk` endpoint.
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
    CONTENT_TYPE,
};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;
use tokio::sync::Notify;

use super::admin::{
    delete_index_template, get_index_template, get_legacy_template, get_pipeline,
    put_index_template, put_legacy_template, put_pipeline,
};
use super::auth::{authenticate, unauthorized};
use super::errors::{self, EsError};
use super::faults::Reply;
use super::render::{query_params, Render};
use super::{bulk, Flavor, Shared};

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
            "/{index}/_mapping/field/{fields}",
            get(super::admin::get_field_mapping),
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
pub fn content_type_rejection(
    flavor: Flavor,
    headers: &HeaderMap,
    ndjson: bool,
) -> Option<Response> {
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
    // Elasticsearch's REST layer checks the media type before the handler sees the request, and
    // the handler checks its parameters before it reads the body.
    if !body.is_empty() {
        if let Some(resp) = content_type_rejection(flavor, &parts.headers, true) {
            return resp;
        }
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
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let refresh = match param("refresh") {
        None | Some("false") | Some("wait_for") => false,
        Some("" | "true") => true,
        Some(other) => {
            return render.error(&errors::illegal_argument(format!(
                "Unknown value for refresh: [{other}]."
            )));
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
            if outcome.status == 400 {
                st.refused_items.push(outcome.json.clone());
            }
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
