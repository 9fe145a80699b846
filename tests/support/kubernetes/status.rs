//! The `Status` objects kube-apiserver answers with, worded as its `apimachinery` errors word
//! them, and the one answer that is not a `Status`: the 429 of the flow-control filter, which is
//! plain text.
//!
//! Every function here returns the body; `http` turns it into a response with the status code in
//! its `code` field. A watch that fails after it has started carries the same object in an
//! `ERROR` event instead.

use serde_json::{json, Value};

/// A `Status` of `status: Failure`; `details` is left out when `None`, as Go's `omitempty` does.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s["code"] = json!(code);
    s
}

pub fn code_of(status: &Value) -> u16 {
    status["code"].as_u64().unwrap_or(500) as u16
}

/// Authentication failed: no token, or one the server does not know. The apiserver says no more
/// than this, whatever the cause.
pub fn unauthorized() -> Value {
    status(401, "Unauthorized", "Unauthorized", None)
}

/// RBAC refused `verb` on `resource` (in `namespace`, or cluster-wide).
pub fn forbidden(
    user: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Value {
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let subject = match name {
        Some(n) => format!("{resource} \"{n}\""),
        None => resource.to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"\" {scope}"
    );
    let mut details = json!({});
    if let Some(n) = name {
        details["name"] = json!(n);
    }
    details["kind"] = json!(resource);
    status(403, "Forbidden", &message, Some(details))
}

pub fn not_found(resource: &str, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        Some(json!({"name": name, "kind": resource})),
    )
}

/// A path under `/api/v1` that names no resource.
pub fn no_such_resource() -> Value {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

pub fn method_not_allowed() -> Value {
    status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

pub fn bad_request(message: &str) -> Value {
    status(400, "BadRequest", message, None)
}

/// The watch cache's answer to a watch from before its oldest retained event.
pub fn too_old_watch(requested: u64, oldest: u64) -> Value {
    status(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({oldest})"),
        None,
    )
}

/// etcd's answer to a list at a compacted revision.
pub fn too_old_list() -> Value {
    status(
        410,
        "Expired",
        "The resourceVersion for the provided list is too old.",
        None,
    )
}

/// A `continue` token from before the compaction. Like etcd3's store, the answer carries a token
/// that continues the list at the latest revision.
pub fn continue_expired(fresh_token: &str) -> Value {
    let mut s = status(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can \
         start a new list without the continue parameter, or use the continue token in this \
         response to retrieve the remainder of the results. Continuing with the provided token \
         results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list.",
        None,
    );
    s["metadata"] = json!({"continue": fresh_token});
    s
}

/// A resourceVersion the cache has not reached within its 3 s wait.
pub fn too_large_resource_version(requested: u64, current: u64) -> Value {
    status(
        504,
        "Timeout",
        &format!("Timeout: Too large resource version: {requested}, current: {current}"),
        Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        })),
    )
}

/// One field error of `ListOptions` validation.
pub struct FieldError {
    pub field: &'static str,
    /// `FieldValueForbidden`, `FieldValueNotSupported`, `FieldValueInvalid`.
    pub reason: &'static str,
    /// As `field.Error.ErrorBody()` renders it: `Forbidden: ...`, `Unsupported value: ...`.
    pub body: String,
}

impl FieldError {
    pub fn forbidden(field: &'static str, detail: &str) -> Self {
        FieldError {
            field,
            reason: "FieldValueForbidden",
            body: format!("Forbidden: {detail}"),
        }
    }

    pub fn not_supported(field: &'static str, value: &str, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            field,
            reason: "FieldValueNotSupported",
            body: format!("Unsupported value: \"{value}\": supported values: {list}"),
        }
    }
}

/// 422 for invalid list or watch options, as `errors.NewInvalid(ListOptions.meta.k8s.io, "", errs)`.
pub fn invalid_list_options(errors: &[FieldError]) -> Value {
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.body))
        .collect();
    let summary = if rendered.len() == 1 {
        rendered[0].clone()
    } else {
        format!("[{}]", rendered.join(", "))
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field}))
        .collect();
    status(
        422,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: {summary}"),
        Some(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes})),
    )
}

/// What an injected 500 says: etcd timing out under the apiserver.
pub fn internal_error() -> Value {
    status(
        500,
        "InternalError",
        "Internal error occurred: etcdserver: request timed out",
        Some(json!({"causes": [{"message": "etcdserver: request timed out"}]})),
    )
}

pub fn service_unavailable(retry_after: Option<u32>) -> Value {
    let details = match retry_after {
        Some(s) => json!({"retryAfterSeconds": s}),
        None => json!({}),
    };
    status(
        503,
        "ServiceUnavailable",
        "The server is currently unable to handle the request",
        Some(details),
    )
}

pub fn gateway_timeout() -> Value {
    status(
        504,
        "Timeout",
        "Timeout: request did not complete within the allotted timeout",
        Some(json!({})),
    )
}

/// Any other injected status, with the reason apimachinery gives that code.
pub fn generic(code: u16) -> Value {
    let (reason, message) = match code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => return unauthorized(),
        404 => return no_such_resource(),
        405 => return method_not_allowed(),
        409 => ("Conflict", "the server reported a conflict"),
        410 => ("Expired", "the server has expired the requested resource"),
        500 => return internal_error(),
        503 => return service_unavailable(None),
        504 => return gateway_timeout(),
        _ => (
            "",
            "an error on the server has prevented the request from succeeding",
        ),
    };
    status(code, reason, message, Some(json!({})))
}

/// The flow-control filter's rejection is `http.Error`: text, not a `Status`.
pub const TOO_MANY_REQUESTS_TEXT: &str = "Too many requests, please try again later.\n";
