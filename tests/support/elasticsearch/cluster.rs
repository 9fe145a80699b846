//! The stored data of the test cluster: indices, data streams, documents, templates, pipelines;
//! and the execution of bulk operations against them.
//!
//! Semantics follow a single-node Elasticsearch with one primary shard per index and one
//! unassigned replica (so `_shards` reads `total: 2, successful: 1`): `_seq_no` grows per index,
//! `_version` per document (surviving deletes, as tombstones do), indices and data streams are
//! created on first write as the templates say (see `templates`), and an item's failure never
//! affects the others. Everything is kept in memory for the life of the server.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::bulk::{Action, Op};
use super::errors::{self, EsError};
use super::faults::{Faults, ItemView};
use super::mapping::Mapping;
use super::Flavor;

#[derive(Debug, Clone)]
pub struct Doc {
    /// The document as stored (`_source`).
    pub source: Value,
    /// `_version`: 1 when created, +1 on every write and delete of the id.
    pub version: u64,
    /// `_seq_no` of the write that stored it.
    pub seq_no: u64,
}

#[derive(Debug)]
pub struct Index {
    pub name: String,
    /// Reported in shard-level item errors (`index_uuid`).
    pub uuid: String,
    /// Stored documents by `_id`.
    pub docs: HashMap<String, Doc>,
    /// Versions of deleted documents: a later write continues from them.
    deleted: HashMap<String, u64>,
    /// The single shard's next `_seq_no`.
    next_seq_no: u64,
    pub mapping: Mapping,
    /// The data stream this is the backing index of.
    pub data_stream: Option<String>,
}

/// The outcome of one bulk item: its status and its entry in `items`.
pub struct ItemOutcome {
    pub status: u16,
    pub failed: bool,
    pub json: Value,
}

pub struct Cluster {
    pub flavor: Flavor,
    /// Concrete indices (backing indices included), by name.
    pub indices: BTreeMap<String, Index>,
    /// Data streams: name -> write (backing) index.
    pub data_streams: BTreeMap<String, String>,
    /// Composable index templates (`_index_template`), as sent.
    pub index_templates: BTreeMap<String, Value>,
    /// Legacy templates (`_template`), as sent.
    pub legacy_templates: BTreeMap<String, Value>,
    /// Ingest pipelines, as sent: only their existence matters (processors are not run).
    pub pipelines: BTreeMap<String, Value>,
    /// `index.mapping.total_fields.limit` of new indices, unless a template sets it.
    pub total_fields_limit: usize,
    /// xorshift state for uuids and ids.
    rng: u64,
    /// Ids generated so far, folded into each new id so none repeats.
    ids: u64,
}

/// Where an operation writes.
struct Target {
    /// The concrete index.
    index: String,
}

impl Cluster {
    pub fn new(flavor: Flavor, seed: u64) -> Self {
        Cluster {
            flavor,
            indices: BTreeMap::new(),
            data_streams: BTreeMap::new(),
            index_templates: BTreeMap::new(),
            legacy_templates: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            total_fields_limit: 1000,
            rng: seed | 1,
            ids: 0,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: ids and uuids only need to look like Elasticsearch's and not collide.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Random characters of the URL-safe base64 alphabet, as Elasticsearch's UUIDs are written.
    pub fn random_id(&mut self, chars: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..chars)
            .map(|_| ALPHABET[(self.random() % 64) as usize] as char)
            .collect()
    }

    /// A 20-character id like Elasticsearch's time-based UUIDs, unique for this server.
    fn auto_id(&mut self) -> String {
        self.ids += 1;
        let mut id = self.random_id(12);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut n = self.ids;
        for _ in 0..8 {
            id.push(ALPHABET[(n % 64) as usize] as char);
            n /= 64;
        }
        id
    }

    /// The documents of an index, or of a data stream's backing indices, by `_id`.
    pub fn documents(&self, name: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for index in self.indices.values() {
            if index.name == name || index.data_stream.as_deref() == Some(name) {
                for (id, doc) in &index.docs {
                    out.insert(id.clone(), doc.source.clone());
                }
            }
        }
        out
    }

    /// The documents of an index or data stream in the order they were written (`_seq_no`).
    pub fn documents_in_order(&self, name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for index in self.indices.values() {
            if index.name == name || index.data_stream.as_deref() == Some(name) {
                out.extend(index.docs.values().map(|d| (d.seq_no, d.source.clone())));
            }
        }
        out.sort_by_key(|(seq_no, _)| *seq_no);
        out.into_iter().map(|(_, doc)| doc).collect()
    }

    pub fn doc_count(&self) -> usize {
        self.indices.values().map(|i| i.docs.len()).sum()
    }

    /// The index a name resolves to for reading (a data stream resolves to its write index).
    pub fn index(&self, name: &str) -> Option<&Index> {
        let concrete = self.data_streams.get(name).map_or(name, String::as_str);
        self.indices.get(concrete)
    }

    fn item(&self, action: Action, fields: Vec<(&str, Value)>) -> Value {
        let mut map = Map::new();
        for (k, v) in fields {
            map.insert(k.to_string(), v);
            if k == "_index" && self.flavor == Flavor::Elasticsearch7 {
                map.insert("_type".into(), json!("_doc"));
            }
        }
        json!({ action.name(): map })
    }

    fn failure(
        &self,
        action: Action,
        index: &str,
        id: Option<&str>,
        error: EsError,
    ) -> ItemOutcome {
        let json = self.item(
            action,
            vec![
                ("_index", json!(index)),
                ("_id", id.map_or(Value::Null, |i| json!(i))),
                ("status", json!(error.status)),
                ("error", error.item()),
            ],
        );
        ItemOutcome {
            status: error.status,
            failed: true,
            json,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn success(
        &self,
        action: Action,
        index: &str,
        id: &str,
        version: u64,
        result: &str,
        seq_no: u64,
        status: u16,
        refresh: bool,
    ) -> ItemOutcome {
        let noop = result == "noop";
        let mut fields = vec![
            ("_index", json!(index)),
            ("_id", json!(id)),
            ("_version", json!(version)),
            ("result", json!(result)),
        ];
        if refresh && !noop {
            fields.push(("forced_refresh", json!(true)));
        }
        let shards = if noop {
            json!({"total": 0, "successful": 0, "failed": 0})
        } else {
            json!({"total": 2, "successful": 1, "failed": 0})
        };
        fields.extend([
            ("_shards", shards),
            ("_seq_no", json!(seq_no)),
            ("_primary_term", json!(1)),
            ("status", json!(status)),
        ]);
        ItemOutcome {
            status,
            failed: false,
            json: self.item(action, fields),
        }
    }

    /// Executes one operation. `faults` may reject it (429 and the like) before it is applied.
    pub fn execute(&mut self, op: &Op<'_>, refresh: bool, faults: &mut Faults) -> ItemOutcome {
        let action = op.action;
        let name = op.index.clone().unwrap_or_default();
        let creates = action == Action::Create || (action == Action::Index && op.create);
        let target = match self.resolve(&name, action, creates, op.require_alias) {
            Ok(t) => t,
            Err(e) => return self.failure(action, &name, op.id.as_deref(), e),
        };
        let id = match &op.id {
            Some(id) => id.clone(),
            None => self.auto_id(),
        };
        if let Some(p) = op.pipeline.as_deref() {
            if p != "_none" && !self.pipelines.contains_key(p) {
                return self.failure(
                    action,
                    &target.index,
                    Some(&id),
                    errors::pipeline_missing(p),
                );
            }
        }
        let source_value = op
            .source
            .and_then(|s| serde_json::from_slice::<Value>(s).ok())
            .or_else(|| op.update.as_ref().and_then(|u| u.doc.clone()))
            .unwrap_or(Value::Null);
        let view = ItemView {
            action: action.name(),
            index: &name,
            id: op.id.as_deref().unwrap_or(""),
            source: &source_value,
        };
        if let Some(status) = faults.item_rejection(&view) {
            let bytes = op.source.map_or(64, <[u8]>::len) + 64;
            let error = match status {
                429 => errors::rejected_item(self.flavor, &target.index, bytes),
                503 => errors::unavailable_item(&target.index, 1),
                401 => errors::security(
                    self.flavor,
                    "unable to authenticate user [logship] for action [indices:data/write/bulk[s]]"
                        .into(),
                ),
                403 => errors::unauthorized_item(&name),
                404 => errors::index_missing_item(&name),
                s => {
                    let mut e = errors::internal("failed to execute bulk item");
                    e.status = s;
                    e
                }
            };
            return self.failure(action, &target.index, Some(&id), error);
        }
        match action {
            Action::Create | Action::Index => {
                let source = op.source.unwrap_or_default();
                self.write(
                    action, &target, &id, source, creates, op, refresh, "created",
                )
            }
            Action::Update => self.update(op, &target, &id, refresh),
            Action::Delete => self.delete(&target, &id, refresh),
        }
    }

    /// Parses `source` into the index's mapping and stores it under `id`.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        action: Action,
        target: &Target,
        id: &str,
        source: &[u8],
        creates: bool,
        op: &Op<'_>,
        refresh: bool,
        new_result: &str,
    ) -> ItemOutcome {
        let flavor = self.flavor;
        let index = self.indices.get_mut(&target.index).expect("resolved");
        let uuid = index.uuid.clone();
        let parsed = index.mapping.index_document(flavor, id, source);
        let value = match parsed {
            Ok(v) => v,
            Err(e) => return self.failure(action, &target.index, Some(id), e),
        };
        let index = self.indices.get_mut(&target.index).expect("resolved");
        let existing = index.docs.get(id).map(|d| (d.version, d.seq_no));
        if creates {
            if let Some((version, _)) = existing {
                let e = errors::version_conflict_exists(id, version, &target.index, &uuid);
                return self.failure(action, &target.index, Some(id), e);
            }
        }
        if let (Some(seq), Some(term)) = (op.if_seq_no, op.if_primary_term) {
            let matches = existing.is_some_and(|(_, s)| s as i64 == seq) && term == 1;
            if !matches {
                let current = existing.map(|(_, s)| (s, 1));
                let e =
                    errors::version_conflict_seq_no(id, (seq, term), current, &target.index, &uuid);
                return self.failure(action, &target.index, Some(id), e);
            }
        }
        let version = existing
            .map(|(v, _)| v)
            .or_else(|| index.deleted.get(id).copied())
            .unwrap_or(0)
            + 1;
        let seq_no = index.next_seq_no;
        index.next_seq_no += 1;
        index.deleted.remove(id);
        index.docs.insert(
            id.to_string(),
            Doc {
                source: value,
                version,
                seq_no,
            },
        );
        let (result, status) = if existing.is_some() {
            ("updated", 200)
        } else {
            (new_result, 201)
        };
        self.success(
            action,
            &target.index,
            id,
            version,
            result,
            seq_no,
            status,
            refresh,
        )
    }

    fn update(&mut self, op: &Op<'_>, target: &Target, id: &str, refresh: bool) -> ItemOutcome {
        let body = op.update.clone().unwrap_or_default();
        let flavor = self.flavor;
        let index = self.indices.get(&target.index).expect("resolved");
        let uuid = index.uuid.clone();
        if body.script {
            let e = errors::illegal_argument(
                "scripted updates are not supported by this server (it runs no scripts)",
            );
            return self.failure(Action::Update, &target.index, Some(id), e);
        }
        let merged = match (index.docs.get(id), &body.doc) {
            (Some(existing), Some(doc)) => {
                let mut merged = existing.source.clone();
                merge_docs(&mut merged, doc);
                if body.detect_noop && merged == existing.source {
                    let (version, seq_no) = (existing.version, existing.seq_no);
                    return self.success(
                        Action::Update,
                        &target.index,
                        id,
                        version,
                        "noop",
                        seq_no,
                        200,
                        false,
                    );
                }
                merged
            }
            (Some(existing), None) => existing.source.clone(),
            (None, doc) => match (&body.upsert, body.doc_as_upsert, doc) {
                (Some(upsert), _, _) => upsert.clone(),
                (None, true, Some(doc)) => doc.clone(),
                _ => {
                    let e = errors::document_missing(flavor, id, &target.index, &uuid);
                    return self.failure(Action::Update, &target.index, Some(id), e);
                }
            },
        };
        let source = serde_json::to_vec(&merged).unwrap_or_default();
        let plain = Op {
            if_seq_no: op.if_seq_no,
            if_primary_term: op.if_primary_term,
            ..op.clone()
        };
        self.write(
            Action::Update,
            target,
            id,
            &source,
            false,
            &plain,
            refresh,
            "created",
        )
    }

    fn delete(&mut self, target: &Target, id: &str, refresh: bool) -> ItemOutcome {
        let index = self.indices.get_mut(&target.index).expect("resolved");
        let seq_no = index.next_seq_no;
        index.next_seq_no += 1;
        match index.docs.remove(id) {
            Some(doc) => {
                index.deleted.insert(id.to_string(), doc.version + 1);
                let v = doc.version + 1;
                self.success(
                    Action::Delete,
                    &target.index,
                    id,
                    v,
                    "deleted",
                    seq_no,
                    200,
                    refresh,
                )
            }
            None => {
                let v = index.deleted.get(id).map_or(1, |v| v + 1);
                if index.deleted.contains_key(id) {
                    index.deleted.insert(id.to_string(), v);
                }
                self.success(
                    Action::Delete,
                    &target.index,
                    id,
                    v,
                    "not_found",
                    seq_no,
                    404,
                    refresh,
                )
            }
        }
    }

    /// Resolves the index or data stream an operation names, creating it when the operation may.
    fn resolve(
        &mut self,
        name: &str,
        action: Action,
        creates: bool,
        require_alias: bool,
    ) -> Result<Target, EsError> {
        if require_alias {
            return Err(EsError::new(
                404,
                "index_not_found_exception",
                format!("no such index [{name}] and [require_alias] request flag is [true] and [{name}] is not an alias"),
            )
            .with("index_uuid", "_na_")
            .with("index", name));
        }
        let only_create = || {
            errors::illegal_argument(
                "only write ops with an op_type of create are allowed in data streams",
            )
        };
        if let Some(backing) = self.data_streams.get(name) {
            if !creates {
                return Err(only_create());
            }
            return Ok(Target {
                index: backing.clone(),
            });
        }
        if self.indices.contains_key(name) {
            return Ok(Target {
                index: name.to_string(),
            });
        }
        validate_index_name(name)?;
        if action == Action::Delete {
            return Err(EsError::new(
                404,
                "index_not_found_exception",
                format!("no such index [{name}]"),
            )
            .with("resource.type", "index_expression")
            .with("resource.id", name)
            .with("index_uuid", "_na_")
            .with("index", name));
        }
        let (data_stream, mapping) = self.plan_new_index(name);
        if data_stream && !creates {
            return Err(only_create());
        }
        let uuid = self.random_id(22);
        let concrete = if data_stream {
            let date = chrono::Utc::now().format("%Y.%m.%d");
            let backing = format!(".ds-{name}-{date}-000001");
            self.data_streams.insert(name.to_string(), backing.clone());
            backing
        } else {
            name.to_string()
        };
        self.indices.insert(
            concrete.clone(),
            Index {
                name: concrete.clone(),
                uuid,
                docs: HashMap::new(),
                deleted: HashMap::new(),
                next_seq_no: 0,
                mapping,
                data_stream: data_stream.then(|| name.to_string()),
            },
        );
        Ok(Target { index: concrete })
    }
}

/// `MetadataCreateIndexService.validateIndexName`.
fn validate_index_name(name: &str) -> Result<(), EsError> {
    const INVALID: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ','];
    let why = if name.contains(INVALID) {
        Some(
            "must not contain the following characters ['\\','/','*','?','\"','<','>','|',' ',',']"
                .to_string(),
        )
    } else if name.contains('#') {
        Some("must not contain '#'".to_string())
    } else if name.contains(':') {
        Some("must not contain ':'".to_string())
    } else if name.starts_with(['_', '-', '+']) {
        Some("must not start with '_', '-', or '+'".to_string())
    } else if name.len() > 255 {
        Some(format!("index name is too long, ({} > 255)", name.len()))
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'".to_string())
    } else if name.to_lowercase() != name {
        Some("must be lowercase".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(errors::invalid_index_name(name, &why)),
        None => Ok(()),
    }
}

/// A partial update: objects merge recursively, anything else replaces.
fn merge_docs(into: &mut Value, doc: &Value) {
    match (into, doc) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_docs(existing, v)
                    }
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, doc) => *slot = doc.clone(),
    }
}
