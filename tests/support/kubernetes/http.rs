//! The HTTP face of the test apiserver: routes, the filter chain every request passes through,
//! discovery, GET and LIST. Watches are handed to `watch`.
//!
//! The front layer runs in the apiserver's filter order: the request is recorded, an injected
//! delay is held, authentication answers 401, injected faults answer (the flow-control filter's
//! 429 is plain text with `Retry-After`; other statuses are `Status` objects), then the handler
//! checks RBAC (403) and serves. Every answer carries `Audit-Id`, `Cache-Control: no-cache,
//! private` and the priority-and-fairness UID headers; JSON bodies end with a newline, as Go's
//! `json.Encoder` writes them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::fixtures::uid_for;
use super::list;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Shared, Target};
use super::status::{self, FieldError};
use super::store::Kind;
use super::watch::{self, WatchRequest};
use super::{KubeRequest, Verb};

/// The version this server claims to be.
pub const GIT_VERSION: &str = "v1.34.2";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(api_resources))
        .route("/apis", get(api_groups))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/api/v1/pods", get(all_pods))
        .route("/api/v1/watch/pods", get(watch_all_pods))
        .route("/api/v1/namespaces", get(all_namespaces))
        .route("/api/v1/watch/namespaces", get(watch_all_namespaces))
        .route("/api/v1/namespaces/{ns}", get(one_namespace))
        .route("/api/v1/watch/namespaces/{ns}", get(watch_one_namespace))
        .route("/api/v1/namespaces/{ns}/pods", get(namespace_pods))
        .route(
            "/api/v1/watch/namespaces/{ns}/pods",
            get(watch_namespace_pods),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(one_pod))
        .route(
            "/api/v1/watch/namespaces/{ns}/pods/{name}",
            get(watch_one_pod),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

// ---- query parameters ----

fn percent_decode(s: &str) -> String {
    // `+` is a space in a query string, as Go's `url.ParseQuery` reads it.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// The last value of a parameter, as Go's `url.Values.Get` after the codec (which takes the
/// first; clients send each once).
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn parse_bool(name: &str, v: &str) -> Result<bool, Value> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(status::bad_request(&format!(
            "failed to parse \"{name}\": strconv.ParseBool: parsing \"{v}\": invalid syntax"
        ))),
    }
}

fn parse_int(name: &str, v: &str) -> Result<i64, Value> {
    v.parse::<i64>().map_err(|_| {
        status::bad_request(&format!(
            "failed to parse \"{name}\": strconv.ParseInt: parsing \"{v}\": invalid syntax"
        ))
    })
}

/// `ListOptions` as the parameter codec decodes them.
pub struct ListOptions {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: i64,
    pub continue_token: Option<String>,
    pub timeout_seconds: Option<i64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub label_selector: String,
    pub field_selector: String,
}

fn decode_list_options(
    params: &[(String, String)],
    forced_watch: bool,
) -> Result<ListOptions, Value> {
    let non_empty = |n: &str| {
        param(params, n)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Ok(ListOptions {
        watch: forced_watch
            || param(params, "watch")
                .map(|v| parse_bool("watch", v))
                .transpose()?
                .unwrap_or(false),
        resource_version: non_empty("resourceVersion"),
        resource_version_match: non_empty("resourceVersionMatch"),
        limit: param(params, "limit")
            .filter(|v| !v.is_empty())
            .map(|v| parse_int("limit", v))
            .transpose()?
            .unwrap_or(0),
        continue_token: non_empty("continue"),
        timeout_seconds: param(params, "timeoutSeconds")
            .filter(|v| !v.is_empty())
            .map(|v| parse_int("timeoutSeconds", v))
            .transpose()?,
        allow_watch_bookmarks: param(params, "allowWatchBookmarks")
            .map(|v| parse_bool("allowWatchBookmarks", v))
            .transpose()?
            .unwrap_or(false),
        send_initial_events: param(params, "sendInitialEvents")
            .filter(|v| !v.is_empty())
            .map(|v| parse_bool("sendInitialEvents", v))
            .transpose()?,
        label_selector: param(params, "labelSelector").unwrap_or("").to_string(),
        field_selector: param(params, "fieldSelector").unwrap_or("").to_string(),
    })
}

/// `ValidateListOptions` of `apimachinery/pkg/apis/meta/internalversion/validation`.
fn validate(o: &ListOptions, watch_list: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let m = o.resource_version_match.as_deref();
    if o.watch {
        if o.send_initial_events.is_some() {
            if m != Some("NotOlderThan") {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !watch_list {
                errs.push(FieldError::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                ));
            }
        }
        if let Some(m) = m {
            if o.send_initial_events.is_none() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if m != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    m,
                    &["NotOlderThan"],
                ));
            }
            if o.continue_token.is_some() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        return errs;
    }
    if let Some(m) = m {
        if o.resource_version.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if o.continue_token.is_some() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        match m {
            "Exact" => {
                if o.resource_version.as_deref() == Some("0") {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            "NotOlderThan" => {}
            other => errs.push(FieldError::not_supported(
                "resourceVersionMatch",
                other,
                &["Exact", "NotOlderThan", ""],
            )),
        }
    }
    if o.send_initial_events.is_some() {
        errs.push(FieldError::forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    errs
}

// ---- responses ----

/// Whether the client asked for `PartialObjectMetadata` (`metadata_watcher`, `list_metadata`).
fn wants_metadata(req: &Request) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

pub fn json_response(code: u16, body: &Value) -> Response {
    let mut text = serde_json::to_vec(body).expect("serialisable");
    text.push(b'\n');
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(text))
        .expect("valid response")
}

pub fn raw_json_response(code: u16, text: String) -> Response {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(text))
        .expect("valid response")
}

pub fn status_response(s: &Value) -> Response {
    json_response(status::code_of(s), s)
}

/// An object as GET and watch events render it, or as `PartialObjectMetadata`.
pub fn render_object(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        })
    } else {
        object.clone()
    }
}

/// A list item: typed lists leave out each item's `kind` and `apiVersion`.
pub fn render_item(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        return render_object(object, true);
    }
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    o
}

// ---- the filter chain ----

fn classify(method: &Method, path: &str, params: &[(String, String)]) -> Verb {
    if method != Method::GET {
        return Verb::Other;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watch_param =
        param(params, "watch").is_some_and(|v| parse_bool("watch", v).unwrap_or(false));
    match segments.as_slice() {
        ["version"] | ["api"] | ["api", "v1"] | ["apis"] => Verb::Discovery,
        ["api", "v1", "watch", ..] => Verb::Watch,
        ["api", "v1", "pods"]
        | ["api", "v1", "namespaces"]
        | ["api", "v1", "namespaces", _, "pods"] => {
            if watch_param {
                Verb::Watch
            } else {
                Verb::List
            }
        }
        ["api", "v1", "namespaces", _] | ["api", "v1", "namespaces", _, "pods", _] => {
            if watch_param {
                Verb::Watch
            } else {
                Verb::Get
            }
        }
        _ => Verb::Other,
    }
}

fn audit_id() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    uid_for(&[
        "audit",
        &n.to_string(),
        &format!("{:?}", std::thread::current().id()),
    ])
}

async fn front(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let params = query_params(req.uri().query());
    let verb = classify(req.method(), req.uri().path(), &params);
    let record = {
        let header = |name: axum::http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        KubeRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            verb,
            authorization: header(AUTHORIZATION),
            user_agent: header(USER_AGENT),
            accept: header(ACCEPT),
            status: None,
        }
    };
    let (seq, delay) = {
        let mut st = shared.lock();
        let delay = st.delay;
        (st.record(record), delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (authenticated, fault) = {
        let mut st = shared.lock();
        let authenticated = st.tokens.is_empty()
            || req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| st.tokens.iter().any(|k| k == t.trim()));
        let target = match verb {
            Verb::List => Target::Lists,
            Verb::Watch => Target::Watches,
            Verb::Get => Target::Gets,
            _ => Target::Any,
        };
        let fault = if authenticated {
            st.take_fault(target)
        } else {
            None
        };
        (authenticated, fault)
    };
    let mut resp = if !authenticated {
        status_response(&status::unauthorized())
    } else if let Some(f) = fault {
        fault_response(f.status, f.retry_after)
    } else {
        next.run(req).await
    };
    let headers = resp.headers_mut();
    headers.insert(
        "audit-id",
        HeaderValue::from_str(&audit_id()).expect("ascii"),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    headers.insert(
        "x-kubernetes-pf-flowschema-uid",
        HeaderValue::from_static("8b3e8d68-2a8f-4c6e-9d1e-5f0a4c2b7e11"),
    );
    headers.insert(
        "x-kubernetes-pf-prioritylevel-uid",
        HeaderValue::from_static("d1f0c9a2-7b3e-4e55-8a6c-2c9e0b4f6a33"),
    );
    shared.lock().set_status(seq, resp.status().as_u16());
    resp
}

/// What an injected status answers with.
fn fault_response(code: u16, retry_after: Option<u32>) -> Response {
    if code == 429 {
        let secs = retry_after.unwrap_or(1);
        return Response::builder()
            .status(429)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-content-type-options", "nosniff")
            .header(RETRY_AFTER, secs.to_string())
            .body(Body::from(status::TOO_MANY_REQUESTS_TEXT))
            .expect("valid response");
    }
    let body = match code {
        503 => status::service_unavailable(retry_after),
        c => status::generic(c),
    };
    let mut resp = status_response(&body);
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

// ---- discovery ----

async fn version() -> Response {
    json_response(
        200,
        &json!({
            "major": "1",
            "minor": "34",
            "emulationMajor": "1",
            "emulationMinor": "34",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "33",
            "gitVersion": GIT_VERSION,
            "gitCommit": "d9a0d0a4b2c7e5f3a1b8c6d4e2f0a9b7c5d3e1f2",
            "gitTreeState": "clean",
            "buildDate": "2025-11-11T19:33:21Z",
            "goVersion": "go1.24.9",
            "compiler": "gc",
            "platform": "linux/amd64"
        }),
    )
}

async fn api_versions(req: Request) -> Response {
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]
        }),
    )
}

async fn api_groups() -> Response {
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
    )
}

async fn health() -> Response {
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Body::from("ok"))
        .expect("valid response")
}

async fn api_resources() -> Response {
    let rw = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    json_response(
        200,
        &json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                 "shortNames": ["ns"], "storageVersionHash": "Q3oi5N2YM8M="},
                {"name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"]},
                {"name": "namespaces/status", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["get", "patch", "update"]},
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": rw,
                 "shortNames": ["po"], "categories": ["all"], "storageVersionHash": "xPOwRZ+Yhw8="},
                {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
                {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]}
            ]
        }),
    )
}

async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        return status_response(&status::no_such_resource());
    }
    Response::builder()
        .status(404)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Body::from("404 page not found\n"))
        .expect("valid response")
}

async fn wrong_method() -> Response {
    status_response(&status::method_not_allowed())
}

// ---- resources ----

async fn all_pods(State(s): State<Arc<Shared>>, req: Request) -> Response {
    collection(s, Kind::Pod, None, req, false).await
}

async fn watch_all_pods(State(s): State<Arc<Shared>>, req: Request) -> Response {
    collection(s, Kind::Pod, None, req, true).await
}

async fn all_namespaces(State(s): State<Arc<Shared>>, req: Request) -> Response {
    collection(s, Kind::Namespace, None, req, false).await
}

async fn watch_all_namespaces(State(s): State<Arc<Shared>>, req: Request) -> Response {
    collection(s, Kind::Namespace, None, req, true).await
}

async fn namespace_pods(
    State(s): State<Arc<Shared>>,
    Path(ns): Path<String>,
    req: Request,
) -> Response {
    collection(s, Kind::Pod, Some(ns), req, false).await
}

async fn watch_namespace_pods(
    State(s): State<Arc<Shared>>,
    Path(ns): Path<String>,
    req: Request,
) -> Response {
    collection(s, Kind::Pod, Some(ns), req, true).await
}

async fn one_namespace(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    object(s, Kind::Namespace, None, name, req, false).await
}

async fn watch_one_namespace(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    object(s, Kind::Namespace, None, name, req, true).await
}

async fn one_pod(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    object(s, Kind::Pod, Some(ns), name, req, false).await
}

async fn watch_one_pod(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    object(s, Kind::Pod, Some(ns), name, req, true).await
}

/// RBAC: 403 when the test has forbidden this resource.
fn authorize(
    shared: &Shared,
    kind: Kind,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Option<Response> {
    let st = shared.lock();
    st.forbidden.contains(kind.resource()).then(|| {
        status_response(&status::forbidden(
            &st.user,
            verb,
            kind.resource(),
            namespace,
            name,
        ))
    })
}

/// GET of one object; `?watch=true` (or the legacy `/watch/` path) watches it instead.
async fn object(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    name: String,
    req: Request,
    forced_watch: bool,
) -> Response {
    let params = query_params(req.uri().query());
    let watching = forced_watch
        || param(&params, "watch").is_some_and(|v| parse_bool("watch", v).unwrap_or(false));
    if watching {
        return collection_with(shared, kind, namespace, Some(name), req, true).await;
    }
    if let Some(r) = authorize(&shared, kind, "get", namespace.as_deref(), Some(&name)) {
        return r;
    }
    let key = match &namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.clone(),
    };
    let found = shared.lock().store.get(kind, &key);
    match found {
        Some(o) => json_response(200, &render_object(&o, wants_metadata(&req))),
        None => status_response(&status::not_found(kind.resource(), &name)),
    }
}

async fn collection(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    req: Request,
    forced_watch: bool,
) -> Response {
    collection_with(shared, kind, namespace, None, req, forced_watch).await
}

async fn collection_with(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    req: Request,
    forced_watch: bool,
) -> Response {
    let params = query_params(req.uri().query());
    let opts = match decode_list_options(&params, forced_watch) {
        Ok(o) => o,
        Err(s) => return status_response(&s),
    };
    let verb = if opts.watch { "watch" } else { "list" };
    if let Some(r) = authorize(&shared, kind, verb, namespace.as_deref(), name.as_deref()) {
        return r;
    }
    let labels = match LabelSelector::parse(&opts.label_selector) {
        Ok(l) => l,
        Err(e) => return status_response(&status::bad_request(&e)),
    };
    let watch_list = shared.lock().watch_list;
    let errs = validate(&opts, watch_list);
    if !errs.is_empty() {
        return status_response(&status::invalid_list_options(&errs));
    }
    let mut fields = match FieldSelector::parse(&opts.field_selector, kind) {
        Ok(f) => f,
        Err(e) => return status_response(&status::bad_request(&e)),
    };
    if let Some(n) = &name {
        fields = fields.and_equals("metadata.name", n);
    }
    let metadata_only = wants_metadata(&req);
    if opts.watch {
        let rv = match opts.resource_version.as_deref() {
            None | Some("0") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return status_response(&status::bad_request(&format!(
                        "invalid resource version \"{v}\""
                    )));
                }
            },
        };
        return watch::start(
            shared,
            WatchRequest {
                kind,
                namespace,
                labels,
                fields,
                resource_version: rv,
                send_initial_events: opts.send_initial_events,
                bookmarks: opts.allow_watch_bookmarks,
                timeout: match opts.timeout_seconds {
                    Some(t) if t > 0 => Duration::from_secs(t as u64),
                    // The apiserver's --min-request-timeout (1800 s), spread over [1x, 2x).
                    _ => Duration::from_secs(1800 + fastrand::u64(0..1800)),
                },
                metadata_only,
            },
        )
        .await;
    }
    list::list(shared, kind, namespace, labels, fields, opts, metadata_only).await
}
