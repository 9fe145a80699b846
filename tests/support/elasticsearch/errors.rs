//! Elasticsearch's error objects, as each flavour words them.
//!
//! An [`EsError`] is the `error` of a failed bulk item, or, wrapped by [`EsError::body`], the whole
//! body of a failed request (`{"error":{"root_cause":[..],..},"status":N}`). The constructors
//! here hold the exact texts the real servers send (taken from Elasticsearch's and OpenSearch's
//! sources and from real responses), so a test asserting on `error.type` or `error.reason` asserts
//! on what a user would see in production.

use serde_json::{json, Map, Value};

use super::Flavor;

#[derive(Debug, Clone)]
pub struct EsError {
    pub status: u16,
    pub kind: String,
    pub reason: Option<String>,
    /// Extra fields after `reason`, in order (`index_uuid`, `shard`, `index`, `header`, ...).
    pub extra: Vec<(String, Value)>,
    pub caused_by: Option<Box<EsError>>,
}

impl EsError {
    pub fn new(status: u16, kind: &str, reason: impl Into<String>) -> Self {
        EsError {
            status,
            kind: kind.to_string(),
            reason: Some(reason.into()),
            extra: Vec::new(),
            caused_by: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.push((key.to_string(), value.into()));
        self
    }

    pub fn caused_by(mut self, cause: EsError) -> Self {
        self.caused_by = Some(Box::new(cause));
        self
    }

    /// The object as a bulk item's `error` (or a `caused_by`).
    pub fn item(&self) -> Value {
        let mut map = self.head();
        if let Some(cause) = &self.caused_by {
            map.insert("caused_by".into(), cause.item());
        }
        Value::Object(map)
    }

    /// The whole body of a failed request.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("root_cause".into(), json!([Value::Object(self.head())]));
        error.extend(self.head());
        if let Some(cause) = &self.caused_by {
            error.insert("caused_by".into(), cause.item());
        }
        json!({ "error": error, "status": self.status })
    }

    fn head(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("type".into(), Value::String(self.kind.clone()));
        map.insert(
            "reason".into(),
            self.reason.clone().map_or(Value::Null, Value::String),
        );
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        map
    }
}

/// The body Elasticsearch's REST layer sends for errors raised before any handler runs
/// (`{"error":"...","status":N}`).
pub fn plain(status: u16, text: &str) -> Value {
    json!({ "error": text, "status": status })
}

/// Item error of a shard-level failure, which names the index and shard.
fn on_shard(error: EsError, index: &str, uuid: &str) -> EsError {
    error
        .with("index_uuid", uuid)
        .with("shard", "0")
        .with("index", index)
}

pub fn version_conflict_exists(id: &str, current: u64, index: &str, uuid: &str) -> EsError {
    on_shard(
        EsError::new(
            409,
            "version_conflict_engine_exception",
            format!(
                "[{id}]: version conflict, document already exists (current version [{current}])"
            ),
        ),
        index,
        uuid,
    )
}

pub fn version_conflict_seq_no(
    id: &str,
    wanted: (i64, i64),
    current: Option<(u64, u64)>,
    index: &str,
    uuid: &str,
) -> EsError {
    let reason = match current {
        Some((seq, term)) => format!(
            "[{id}]: version conflict, required seqNo [{}], primary term [{}]. current document has seqNo [{seq}] and primary term [{term}]",
            wanted.0, wanted.1
        ),
        None => format!(
            "[{id}]: version conflict, required seqNo [{}], primary term [{}]. but no document was found",
            wanted.0, wanted.1
        ),
    };
    on_shard(
        EsError::new(409, "version_conflict_engine_exception", reason),
        index,
        uuid,
    )
}

pub fn document_missing(flavor: Flavor, id: &str, index: &str, uuid: &str) -> EsError {
    let reason = match flavor {
        Flavor::Elasticsearch8 => format!("[{id}]: document missing"),
        Flavor::Elasticsearch7 | Flavor::OpenSearch2 => format!("[_doc][{id}]: document missing"),
    };
    on_shard(
        EsError::new(404, "document_missing_exception", reason),
        index,
        uuid,
    )
}

fn rejected_kind(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Elasticsearch8 | Flavor::Elasticsearch7 => "es_rejected_execution_exception",
        // OpenSearchException strips its "OpenSearch" class-name prefix.
        Flavor::OpenSearch2 => "rejected_execution_exception",
    }
}

/// 429 for one item: the shard's write pressure limit (Elasticsearch 7.9+, OpenSearch).
pub fn rejected_item(flavor: Flavor, index: &str, bytes: usize) -> EsError {
    const LIMIT: usize = 53_687_091;
    let reason = match flavor {
        Flavor::Elasticsearch8 | Flavor::Elasticsearch7 => format!(
            "rejected execution of primary operation [coordinating_and_primary_bytes={LIMIT}, replica_bytes=0, all_bytes={LIMIT}, primary_operation_bytes={bytes}, max_coordinating_and_primary_bytes={LIMIT}]"
        ),
        Flavor::OpenSearch2 => format!(
            "rejected execution of primary operation [shard_detail=[{index}][0][P], shard_coordinating_and_primary_bytes={LIMIT}, shard_operation_bytes={bytes}, shard_max_coordinating_and_primary_bytes={LIMIT}] OR [node_coordinating_and_primary_bytes={LIMIT}, node_replica_bytes=0, node_all_bytes={LIMIT}, node_operation_bytes={bytes}, node_max_coordinating_and_primary_bytes={LIMIT}]"
        ),
    };
    EsError::new(429, rejected_kind(flavor), reason)
}

/// 429 for a whole request: the coordinating node's indexing pressure limit.
pub fn rejected_request(flavor: Flavor, bytes: usize) -> EsError {
    const LIMIT: usize = 53_687_091;
    EsError::new(
        429,
        rejected_kind(flavor),
        format!(
            "rejected execution of coordinating operation [coordinating_and_primary_bytes={LIMIT}, replica_bytes=0, all_bytes={LIMIT}, coordinating_operation_bytes={bytes}, max_coordinating_and_primary_bytes={LIMIT}]"
        ),
    )
}

/// 503 for one item: the primary shard is not available.
pub fn unavailable_item(index: &str, items: usize) -> EsError {
    EsError::new(
        503,
        "unavailable_shards_exception",
        format!(
            "[{index}][0] primary shard is not active Timeout: [1m], request: [BulkShardRequest [[{index}][0]] containing [{items}] requests]"
        ),
    )
}

/// 503 for a whole request: the cluster has no elected master.
pub fn no_master(flavor: Flavor) -> EsError {
    let block = match flavor {
        Flavor::Elasticsearch8 | Flavor::Elasticsearch7 => "no master",
        Flavor::OpenSearch2 => "no cluster-manager",
    };
    EsError::new(
        503,
        "cluster_block_exception",
        format!("blocked by: [SERVICE_UNAVAILABLE/2/{block}];"),
    )
}

/// 403 for one item: the user may write to some indices but not this one (a role without
/// `create_doc` on it).
pub fn unauthorized_item(flavor: Flavor, index: &str) -> EsError {
    let (user, roles) = match flavor {
        Flavor::Elasticsearch8 | Flavor::Elasticsearch7 => {
            ("with effective roles", "[logship_writer]")
        }
        Flavor::OpenSearch2 => ("with roles", "[logship_writer]"),
    };
    EsError::new(
        403,
        "security_exception",
        format!(
            "action [indices:data/write/bulk[s]] is unauthorized for user [logship] {user} {roles} on indices [{index}], this action is granted by the index privileges [create_doc,create,index,write,all]"
        ),
    )
}

/// 404 for one item: the index does not exist and may not be created automatically.
pub fn index_not_found(index: &str) -> EsError {
    EsError::new(
        404,
        "index_not_found_exception",
        format!("no such index [{index}]"),
    )
}

pub fn internal(reason: &str) -> EsError {
    EsError::new(500, "illegal_state_exception", reason)
}

pub fn illegal_argument(reason: impl Into<String>) -> EsError {
    EsError::new(400, "illegal_argument_exception", reason)
}

/// `ActionRequestValidationException`: every problem numbered in one reason.
pub fn validation(problems: &[String]) -> EsError {
    let mut reason = String::from("Validation Failed: ");
    for (i, p) in problems.iter().enumerate() {
        reason.push_str(&format!("{}: {p};", i + 1));
    }
    EsError::new(400, "action_request_validation_exception", reason)
}

pub fn invalid_index_name(name: &str, why: &str) -> EsError {
    EsError::new(
        400,
        "invalid_index_name_exception",
        format!("Invalid index name [{name}], {why}"),
    )
    .with("index_uuid", "_na_")
    .with("index", name)
}

pub fn pipeline_missing(id: &str) -> EsError {
    illegal_argument(format!("pipeline with id [{id}] does not exist"))
}

/// A JSON syntax error while reading a request body (action lines, templates).
pub fn x_content(flavor: Flavor, location: &str, message: &str) -> EsError {
    match flavor {
        Flavor::Elasticsearch8 => EsError::new(
            400,
            "x_content_parse_exception",
            format!("[{location}] {message}"),
        ),
        Flavor::Elasticsearch7 | Flavor::OpenSearch2 => {
            let (line, column) = location.split_once(':').unwrap_or(("1", "1"));
            EsError::new(
                400,
                "json_parse_exception",
                format!("{message}\n at [Source: (byte[])\"...\"; line: {line}, column: {column}]"),
            )
        }
    }
}

/// `WWW-Authenticate` challenges of a secured cluster.
pub fn challenges(flavor: Flavor) -> Vec<&'static str> {
    match flavor {
        Flavor::Elasticsearch8 => vec![
            "Basic realm=\"security\", charset=\"UTF-8\"",
            "Bearer realm=\"security\"",
            "ApiKey",
        ],
        Flavor::Elasticsearch7 => vec!["Basic realm=\"security\" charset=\"UTF-8\"", "ApiKey"],
        Flavor::OpenSearch2 => vec!["Basic realm=\"OpenSearch Security\""],
    }
}

/// 401 from Elasticsearch's security: `reason` says which credentials failed.
pub fn security(flavor: Flavor, reason: String) -> EsError {
    let header = match challenges(flavor).as_slice() {
        [one] => json!({ "WWW-Authenticate": one }),
        many => json!({ "WWW-Authenticate": many }),
    };
    EsError::new(401, "security_exception", reason).with("header", header)
}
