//! The administrative endpoints a shipper uses before it writes: composable index templates
//! (`/_index_template/{name}`), legacy templates (`/_template/{name}`) and ingest pipelines
//! (`/_ingest/pipeline/{id}`). Templates are validated as Elasticsearch validates them and decide
//! how the indices they match are created; pipelines are stored (their processors are not run) so
//! that a bulk request naming a missing pipeline fails as it would.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::errors::{self, EsError};
use super::http::content_type_rejection;
use super::json as js;
use super::render::{query_params, Render};
use super::{Flavor, Shared};

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

pub async fn put_index_template(
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

pub async fn get_index_template(
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
        .filter(|(n, _)| super::templates::simple_match(&name, n))
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

pub async fn delete_index_template(
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

pub async fn put_legacy_template(
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

pub async fn get_legacy_template(
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

pub async fn put_pipeline(
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

pub async fn get_pipeline(
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

/// `GET /{index}/_mapping/field/{fields}`: the mapping of each named field that the index maps,
/// keyed by concrete index (a data stream answers for its backing index), as the field mapping
/// API answers; an unknown index is a 404.
pub async fn get_field_mapping(
    State(shared): State<Arc<Shared>>,
    Path((index, fields)): Path<(String, String)>,
    req: Request,
) -> Response {
    let flavor = shared.flavor;
    let render = Render::of(flavor, &query_params(req.uri().query()), req.headers());
    let st = shared.lock();
    let Some(found) = st.cluster.index(&index) else {
        let e = EsError::new(
            404,
            "index_not_found_exception",
            format!("no such index [{index}]"),
        )
        .with("resource.type", "index_or_alias")
        .with("resource.id", index.as_str())
        .with("index_uuid", "_na_")
        .with("index", index.as_str());
        return render.error(&e);
    };
    let mut mappings = serde_json::Map::new();
    for field in fields.split(',') {
        let Some(kind) = found.mapping.type_of(field) else {
            continue;
        };
        if kind == "object" {
            continue;
        }
        let leaf = field.rsplit('.').next().unwrap_or(field);
        mappings.insert(
            field.to_string(),
            json!({ "full_name": field, "mapping": { leaf: { "type": kind } } }),
        );
    }
    render.json(
        200,
        &json!({ found.name.clone(): { "mappings": mappings } }),
    )
}
