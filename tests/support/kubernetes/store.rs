//! The cluster's objects and their history, as etcd and the watch cache together hold them.
//!
//! One cluster-wide `resourceVersion` counts every write (an etcd revision), so pods and
//! namespaces share it and a watch on one kind sees versions skip. Every write appends a
//! [`Change`] carrying the object before and after it; a watch replays the changes after the
//! version it starts from, and a list at an older version rolls the current state back through
//! them. `floor` is the oldest version that can still be served: a watch or list from before it
//! gets 410 Gone. Compaction and a bounded history both raise it; nothing else does.
//!
//! Objects are kept by their etcd key (`<namespace>/<name>` for pods, `<name>` for namespaces) so
//! that lists come out in etcd's order and `continue` tokens carry etcd's keys.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

/// Most changes kept when no history limit is set: bounds memory in long soak tests.
pub const MAX_HISTORY: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
}

impl Kind {
    /// The resource name in URLs and messages.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
        }
    }

    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Namespace => "NamespaceList",
        }
    }

    /// What a BOOKMARK event carries: an empty object of the kind, as Go serialises one with
    /// only its resourceVersion set (`containers: null` included).
    pub fn empty_object(self, rv: u64) -> Value {
        let mut o = json!({
            "kind": self.kind(),
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null},
        });
        match self {
            Kind::Pod => {
                o["spec"] = json!({"containers": null});
                o["status"] = json!({});
            }
            Kind::Namespace => {
                o["spec"] = json!({});
                o["status"] = json!({});
            }
        }
        o
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as the watch cache records it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub key: String,
    pub change: ChangeType,
    /// After the write; for a deletion, the last state with the deletion's resourceVersion (what
    /// a DELETED event carries).
    pub object: Arc<Value>,
    /// Before the write; `None` for a creation. A watch needs it to tell that an object stopped
    /// (or started) matching its selector.
    pub prev: Option<Arc<Value>>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    AlreadyExists(String),
    NotFound(String),
}

pub struct Store {
    /// The latest resourceVersion (etcd's current revision).
    pub rv: u64,
    objects: BTreeMap<(Kind, String), Arc<Value>>,
    history: VecDeque<Change>,
    /// A watch from a version below this one gets 410; see the module documentation.
    pub floor: u64,
    /// The version of the last change dropped from memory (at most `floor`). Compaction only
    /// raises `floor`, so watches already open still get every change; a bounded history drops
    /// changes, and an open watch that had not sent them yet is closed.
    retained_after: u64,
    /// Most changes kept; older ones are dropped and raise the floor, as the watch cache's ring
    /// buffer does.
    pub history_limit: usize,
}

/// The etcd key of an object: `<namespace>/<name>` for pods, `<name>` for namespaces.
pub fn key_of(kind: Kind, object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    match kind {
        Kind::Pod => format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            name
        ),
        Kind::Namespace => name.to_string(),
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
}

impl Store {
    pub fn new(first_rv: u64) -> Self {
        Store {
            rv: first_rv,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: first_rv,
            retained_after: first_rv,
            history_limit: MAX_HISTORY,
        }
    }

    pub fn get(&self, kind: Kind, key: &str) -> Option<Arc<Value>> {
        self.objects.get(&(kind, key.to_string())).cloned()
    }

    /// Objects of a kind in key order, at the current version.
    pub fn current(&self, kind: Kind) -> Vec<(String, Arc<Value>)> {
        self.objects
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|((_, key), v)| (key.clone(), v.clone()))
            .collect()
    }

    /// Objects of a kind in key order as they were at `rv`, rolled back through the history.
    /// `None` when `rv` is below the floor (compacted) or above the current version.
    pub fn at(&self, kind: Kind, rv: u64) -> Option<Vec<(String, Arc<Value>)>> {
        if rv < self.floor || rv > self.rv {
            return None;
        }
        let mut state: BTreeMap<String, Arc<Value>> = self.current(kind).into_iter().collect();
        for c in self.history.iter().rev() {
            if c.rv <= rv {
                break;
            }
            if c.kind != kind {
                continue;
            }
            match &c.prev {
                None => {
                    state.remove(&c.key);
                }
                Some(prev) => {
                    state.insert(c.key.clone(), prev.clone());
                }
            }
        }
        Some(state.into_iter().collect())
    }

    /// Changes after `rv` for a watch starting there, oldest first. `None` when `rv` is below
    /// the floor (410).
    pub fn changes_after(&self, rv: u64) -> Option<Vec<Change>> {
        if rv < self.floor {
            return None;
        }
        self.pending_after(rv)
    }

    /// Changes after `rv` for a watch already open and sent up to `rv`. `None` when some of them
    /// were dropped from memory before it could send them.
    pub fn pending_after(&self, rv: u64) -> Option<Vec<Change>> {
        if rv < self.retained_after {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        self.trim();
    }

    fn trim(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.retained_after = dropped.rv;
                self.floor = self.floor.max(dropped.rv);
            }
        }
    }

    /// Only versions from now on can be watched from or listed at, as after an etcd compaction
    /// at the current revision and a watch-cache re-initialisation. Watches already open are not
    /// affected, as real ones are not.
    pub fn compact(&mut self) {
        self.floor = self.rv;
    }

    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim();
    }

    pub fn create(&mut self, kind: Kind, mut object: Value) -> Result<Arc<Value>, WriteError> {
        let key = key_of(kind, &object);
        if self.objects.contains_key(&(kind, key.clone())) {
            return Err(WriteError::AlreadyExists(key));
        }
        self.rv += 1;
        set_rv(&mut object, self.rv);
        let object = Arc::new(object);
        self.objects.insert((kind, key.clone()), object.clone());
        self.record(Change {
            rv: self.rv,
            kind,
            key,
            change: ChangeType::Added,
            object: object.clone(),
            prev: None,
        });
        Ok(object)
    }

    /// Applies `edit` to a copy of the object and stores it as a new version. Like an update
    /// that changes nothing, an edit that changes nothing writes nothing and sends no event.
    pub fn update(
        &mut self,
        kind: Kind,
        key: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Arc<Value>, WriteError> {
        let prev = self
            .get(kind, key)
            .ok_or_else(|| WriteError::NotFound(key.to_string()))?;
        let mut next = (*prev).clone();
        edit(&mut next);
        // The key is the identity: an edit cannot rename or move an object.
        next["metadata"]["name"] = prev["metadata"]["name"].clone();
        if kind == Kind::Pod {
            next["metadata"]["namespace"] = prev["metadata"]["namespace"].clone();
        }
        next["metadata"]["resourceVersion"] = prev["metadata"]["resourceVersion"].clone();
        if next == *prev {
            return Ok(prev);
        }
        self.rv += 1;
        set_rv(&mut next, self.rv);
        let next = Arc::new(next);
        self.objects.insert((kind, key.to_string()), next.clone());
        self.record(Change {
            rv: self.rv,
            kind,
            key: key.to_string(),
            change: ChangeType::Modified,
            object: next.clone(),
            prev: Some(prev),
        });
        Ok(next)
    }

    pub fn delete(&mut self, kind: Kind, key: &str) -> Result<Arc<Value>, WriteError> {
        let prev = self
            .objects
            .remove(&(kind, key.to_string()))
            .ok_or_else(|| WriteError::NotFound(key.to_string()))?;
        self.rv += 1;
        let mut last = (*prev).clone();
        set_rv(&mut last, self.rv);
        let last = Arc::new(last);
        self.record(Change {
            rv: self.rv,
            kind,
            key: key.to_string(),
            change: ChangeType::Deleted,
            object: last.clone(),
            prev: Some(prev),
        });
        Ok(last)
    }
}
