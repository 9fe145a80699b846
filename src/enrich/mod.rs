//! Enrichment: the pod's Kubernetes metadata on every record, from a watch of this node's pods.
//!
//! ```text
//!  API server ──list+watch (pods of this node, namespaces)──► watch tasks ──► Cache ◄── tailer
//!                                                                 (trimmed)     lookups, re-render
//!                                                                               when `version` moves
//! ```
//!
//! Cheap for the API server: one list and one long-lived watch per resource at start (lists with
//! `resourceVersion=0` semantics, answered from the API server's cache), never a request per pod
//! or per line; watches that drop or answer 410 Gone re-list with backoff.
//!
//! Cheap per line: the tailer renders a file's metadata into its document fragment once, and only
//! again when the cache's version moved (a pod of the node or a namespace changed). A line never
//! waits on the API server: a file whose pod the cache has not seen yet is held back at most
//! `wait_for_metadata` (while other files are read), then shipped with what its name tells, and
//! counted. A deleted pod's metadata is kept for `delete_grace`, so its last lines are still
//! enriched. While the API is unreachable, the cache keeps what it had.

pub mod metadata;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use metadata::{KeepOptions, NamespaceMeta, PodMeta, Schema};

/// Where the API server is and how to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiAccess {
    /// Inside a pod: the service account token (re-read as it rotates), its CA and
    /// `KUBERNETES_SERVICE_HOST`/`PORT`.
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// An explicit URL, with an optional token file (re-read as it rotates) and CA file.
    Explicit {
        url: String,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    },
}

/// Validated `[kubernetes]` settings, when enrichment is on.
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    pub access: ApiAccess,
    /// The node whose pods are watched.
    pub node_name: String,
    pub schema: Schema,
    pub keep: KeepOptions,
    /// How long a file whose pod is not in the cache yet is held back.
    pub wait_for_metadata: Duration,
    /// How long a deleted pod's metadata is kept.
    pub delete_grace: Duration,
}

/// The resources the agent watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Pods,
    Namespaces,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Namespaces => "namespaces",
        }
    }
}

/// A cached pod, and when it was deleted (kept for the grace period).
#[derive(Debug)]
struct CachedPod {
    meta: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

/// The metadata of this node's pods and of every namespace, shared by the watch tasks (writers)
/// and the tailer (reader).
#[derive(Debug, Default)]
pub struct Cache {
    pods: RwLock<HashMap<(String, String), CachedPod>>,
    namespaces: RwLock<HashMap<String, Arc<NamespaceMeta>>>,
    /// Bumped on every change: the tailer re-renders a file's fragment only when it moved.
    version: AtomicU64,
    /// The pods watch has delivered its initial list at least once.
    pods_synced: AtomicBool,
    /// The namespaces watch has delivered its initial list at least once.
    namespaces_synced: AtomicBool,
    /// The last request to the API server succeeded (readiness).
    reachable: AtomicBool,
    /// Per [`Resource`]: the status (401, 403) with which the API server refused the last
    /// request, 0 once one succeeds. Kept apart because RBAC can allow one and not the other.
    refused: [AtomicU16; 2],
}

/// What the cache knows of a pod.
#[derive(Clone, Debug)]
pub struct Found {
    pub pod: Arc<PodMeta>,
    pub namespace: Option<Arc<NamespaceMeta>>,
}

impl Cache {
    pub fn new() -> Self {
        Cache::default()
    }

    /// The cache's version: it moves whenever anything in it changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The pod `namespace/name`, if known (deleted ones within their grace period too).
    pub fn lookup(&self, namespace: &str, name: &str) -> Option<Found> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        let pod = pods.get(&(namespace.to_owned(), name.to_owned()))?;
        let namespace = self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned();
        Some(Found {
            pod: Arc::clone(&pod.meta),
            namespace,
        })
    }

    /// A pod was added or changed.
    pub fn upsert_pod(&self, meta: PodMeta) {
        let key = (meta.namespace.clone(), meta.name.clone());
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        let changed = pods
            .get(&key)
            .is_none_or(|p| *p.meta != meta || p.deleted_at.is_some());
        if changed {
            pods.insert(
                key,
                CachedPod {
                    meta: Arc::new(meta),
                    deleted_at: None,
                },
            );
            drop(pods);
            self.bump();
        }
    }

    /// A pod was deleted at `now`: kept for the grace period.
    pub fn delete_pod(&self, namespace: &str, name: &str, now: Instant) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get_mut(&(namespace.to_owned(), name.to_owned())) {
            p.deleted_at.get_or_insert(now);
        }
    }

    /// After a re-list: pods not in it were deleted while the watch was down.
    pub fn retain_pods(&self, listed: &std::collections::HashSet<(String, String)>, now: Instant) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        for (key, pod) in pods.iter_mut() {
            if !listed.contains(key) {
                pod.deleted_at.get_or_insert(now);
            }
        }
    }

    /// Forgets pods deleted longer than `grace` ago; returns how many.
    pub fn expire(&self, grace: Duration, now: Instant) -> usize {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        let before = pods.len();
        pods.retain(|_, p| p.deleted_at.is_none_or(|t| now.duration_since(t) < grace));
        before - pods.len()
    }

    pub fn upsert_namespace(&self, meta: NamespaceMeta) {
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        if namespaces.get(&meta.name).is_none_or(|n| **n != meta) {
            namespaces.insert(meta.name.clone(), Arc::new(meta));
            drop(namespaces);
            self.bump();
        }
    }

    pub fn delete_namespace(&self, name: &str) {
        let removed = self
            .namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some();
        if removed {
            self.bump();
        }
    }

    /// Pods cached (deleted ones in their grace period included).
    pub fn pods(&self) -> usize {
        self.pods.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn set_synced(&self) {
        if !self.pods_synced.swap(true, Ordering::AcqRel) {
            self.bump();
        }
    }

    /// Whether the initial list of pods has arrived.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire)
    }

    pub fn set_namespaces_synced(&self) {
        if !self.namespaces_synced.swap(true, Ordering::AcqRel) {
            self.bump();
        }
    }

    /// Whether the initial list of namespaces has arrived (their labels are known).
    pub fn namespaces_synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire)
    }

    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Release);
        crate::telemetry::set_kubernetes_reachable(reachable);
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// The API server answered a request for `resource`.
    pub fn set_accepted(&self, resource: Resource) {
        if resource == Resource::Pods {
            self.set_reachable(true);
        }
        if self.refused[resource as usize].swap(0, Ordering::AcqRel) != 0 {
            crate::telemetry::set_kubernetes_refused(self.refused());
        }
    }

    /// The API server refused a request for `resource` with `status` (401, 403).
    pub fn set_refused(&self, resource: Resource, status: u16) {
        self.refused[resource as usize].store(status, Ordering::Release);
        crate::telemetry::set_kubernetes_refused(self.refused());
    }

    /// The status of a refusal not followed by a success yet (401 first, for any resource).
    pub fn refused(&self) -> Option<u16> {
        let codes = self.refused.each_ref().map(|c| c.load(Ordering::Acquire));
        codes.into_iter().filter(|&c| c != 0).min()
    }
}

/// What the tailer holds: the cache, and how to render.
#[derive(Clone, Debug)]
pub struct Enricher {
    pub cache: Arc<Cache>,
    pub schema: Schema,
    pub wait_for_metadata: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, label: &str) -> PodMeta {
        PodMeta {
            namespace: "shop".into(),
            name: name.into(),
            uid: None,
            ip: None,
            node: None,
            labels: BTreeMap::from([("app".to_string(), label.to_string())]),
            annotations: BTreeMap::new(),
            hints: BTreeMap::new(),
            workload: None,
            containers: Vec::new(),
        }
    }

    #[test]
    fn versions_move_only_on_changes_and_deleted_pods_linger() {
        let cache = Cache::new();
        let v0 = cache.version();
        cache.upsert_pod(pod("a", "x"));
        let v1 = cache.version();
        assert!(v1 > v0);
        cache.upsert_pod(pod("a", "x"));
        assert_eq!(cache.version(), v1, "the same pod again changes nothing");
        cache.upsert_pod(pod("a", "y"));
        assert!(cache.version() > v1);
        assert_eq!(cache.lookup("shop", "a").unwrap().pod.labels["app"], "y");

        let t0 = Instant::now();
        cache.delete_pod("shop", "a", t0);
        assert!(
            cache.lookup("shop", "a").is_some(),
            "kept for the grace period"
        );
        assert_eq!(
            cache.expire(Duration::from_secs(300), t0 + Duration::from_secs(10)),
            0
        );
        assert_eq!(
            cache.expire(Duration::from_secs(300), t0 + Duration::from_secs(301)),
            1
        );
        assert!(cache.lookup("shop", "a").is_none());

        cache.upsert_pod(pod("b", "x"));
        cache.upsert_pod(pod("c", "x"));
        let listed = [("shop".to_string(), "b".to_string())]
            .into_iter()
            .collect();
        cache.retain_pods(&listed, t0);
        assert_eq!(
            cache.expire(Duration::ZERO, t0),
            1,
            "c was gone from the re-list"
        );
    }

    #[test]
    fn a_refusal_lasts_until_that_resource_is_answered() {
        let cache = Cache::new();
        assert_eq!(cache.refused(), None);
        cache.set_refused(Resource::Namespaces, 403);
        cache.set_accepted(Resource::Pods);
        assert_eq!(cache.refused(), Some(403), "pods allowed, namespaces not");
        cache.set_refused(Resource::Pods, 401);
        assert_eq!(cache.refused(), Some(401));
        cache.set_accepted(Resource::Pods);
        cache.set_accepted(Resource::Namespaces);
        assert_eq!(cache.refused(), None);
    }
}
