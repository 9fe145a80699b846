//! The watch tasks: list and watch this node's pods and all namespaces into the [`Cache`].
//!
//! kube-runtime's watcher does the protocol: an initial list (here with `resourceVersion=0`
//! semantics, answered from the API server's watch cache), then a watch from the list's
//! resourceVersion, a re-list when the watch is too old (410 Gone) or drops, bookmarks to keep
//! the resourceVersion fresh. Errors are retried with exponential backoff and jitter
//! (`default_backoff`); each one is logged (rate-limited), counted, and marks the API
//! unreachable until the next success, which readiness reports.
//!
//! The tasks never block the pipeline: while they retry, the cache keeps what it had.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::metadata::{KeepOptions, NamespaceMeta, PodMeta};
use super::{ApiAccess, Cache, KubernetesSettings};
use crate::telemetry::{self, metrics, Throttle};

/// How often deleted pods past their grace period are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// Errors connecting to the API server.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds the client for `access`; no request is made yet.
pub async fn client(access: &ApiAccess) -> Result<Client, WatchError> {
    crate::sink::elasticsearch::client::install_crypto_provider();
    let config = match access {
        ApiAccess::InCluster => kube::Config::incluster().map_err(WatchError::InCluster)?,
        ApiAccess::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                WatchError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| WatchError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        ApiAccess::Explicit {
            url,
            token_file,
            ca_file,
        } => {
            let uri: http::Uri =
                url.parse()
                    .map_err(|e: http::uri::InvalidUri| WatchError::Url {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            let mut config = kube::Config::new(uri);
            config.auth_info.token_file = token_file.as_ref().map(|p| p.display().to_string());
            config.root_cert_file = ca_file.clone();
            config
        }
    };
    Client::try_from(config).map_err(WatchError::Client)
}

/// Runs the pod and namespace watches until `stop`.
pub async fn run(
    client: Client,
    settings: KubernetesSettings,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    stop: CancellationToken,
) {
    let keep = settings.keep.clone();
    let pods = watch_pods(
        Api::all(client.clone()),
        settings.node_name.clone(),
        keep.clone(),
        Arc::clone(&cache),
        wake.clone(),
    );
    let namespaces = watch_namespaces(Api::all(client), keep, Arc::clone(&cache), wake);
    let expire = async {
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tick.tick().await;
            let gone = cache.expire(settings.delete_grace, Instant::now());
            if gone > 0 {
                tracing::debug!(
                    pods = gone,
                    "Forgot the metadata of pods deleted longer than kubernetes.delete_grace ago."
                );
            }
            telemetry::set_gauge(&metrics().kubernetes_cached_pods, cache.pods() as u64);
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = pods => {}
        _ = namespaces => {}
        _ = expire => {}
    }
}

/// Lists with `resourceVersion=0`: answered from the API server's watch cache instead of a
/// quorum read of etcd, which is what a thousand agents starting at once must not cause. kube
/// leaves `resourceVersion=0` out of paged lists (the API server would ignore the limit), so
/// paging is off: one node's pods are one response.
fn list_from_cache(config: watcher::Config) -> watcher::Config {
    let mut config = config.any_semantic();
    config.page_size = None;
    config
}

fn wake_up(wake: &Option<std::sync::mpsc::SyncSender<()>>) {
    if let Some(w) = wake {
        let _ = w.try_send(());
    }
}

/// One failure of a watch: logged (rate-limited), counted, readiness told.
fn watch_failed(cache: &Cache, what: &str, error: &watcher::Error, throttle: &Throttle) {
    telemetry::add(&metrics().kubernetes_watch_errors, 1);
    cache.set_reachable(false);
    if let Some(suppressed) = throttle.admit() {
        tracing::warn!(resource = what, error = %error, suppressed, "Kubernetes watch failed; retrying with backoff. Records keep shipping with the metadata already known.");
    }
}

async fn watch_pods(
    api: Api<Pod>,
    node: String,
    keep: KeepOptions,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
) {
    let config =
        list_from_cache(watcher::Config::default().fields(&format!("spec.nodeName={node}")));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let throttle = Throttle::new(Duration::from_secs(30));
    let mut listed: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                cache.set_reachable(true);
                match event {
                    Event::Init => {
                        telemetry::add(&metrics().kubernetes_relists, 1);
                        listed.clear();
                    }
                    Event::InitApply(pod) => {
                        if let Some(meta) = PodMeta::from_pod(&pod, &keep) {
                            listed.insert((meta.namespace.clone(), meta.name.clone()));
                            cache.upsert_pod(meta);
                        }
                    }
                    Event::InitDone => {
                        cache.retain_pods(&listed, Instant::now());
                        listed = HashSet::new();
                        cache.set_synced();
                        tracing::info!(pods = cache.pods(), node = %node, "Kubernetes pod metadata synced.");
                        wake_up(&wake);
                    }
                    Event::Apply(pod) => {
                        if let Some(meta) = PodMeta::from_pod(&pod, &keep) {
                            cache.upsert_pod(meta);
                            wake_up(&wake);
                        }
                    }
                    Event::Delete(pod) => {
                        if let (Some(ns), Some(name)) = (
                            pod.metadata.namespace.as_deref(),
                            pod.metadata.name.as_deref(),
                        ) {
                            cache.delete_pod(ns, name, Instant::now());
                        }
                    }
                }
                telemetry::set_gauge(&metrics().kubernetes_cached_pods, cache.pods() as u64);
            }
            Err(e) => watch_failed(&cache, "pods", &e, &throttle),
        }
    }
}

async fn watch_namespaces(
    api: Api<Namespace>,
    keep: KeepOptions,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
) {
    let config = list_from_cache(watcher::Config::default());
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let throttle = Throttle::new(Duration::from_secs(30));
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(ns)) | Ok(Event::InitApply(ns)) => {
                if let Some(meta) = NamespaceMeta::from_namespace(&ns, &keep) {
                    cache.upsert_namespace(meta);
                    wake_up(&wake);
                }
            }
            Ok(Event::Delete(ns)) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    cache.delete_namespace(name);
                }
            }
            Ok(Event::InitDone) => {
                cache.set_namespaces_synced();
                wake_up(&wake);
            }
            Ok(Event::Init) => {}
            Err(e) => watch_failed(&cache, "namespaces", &e, &throttle),
        }
    }
}
