//! The watch tasks: list and watch this node's pods and all namespaces into the [`Cache`].
//!
//! kube-runtime's watcher does the protocol: an initial list (here with `resourceVersion=0`
//! semantics, answered from the API server's watch cache), then a watch from the list's
//! resourceVersion, a re-list when the watch is too old (410 Gone) or drops, bookmarks to keep
//! the resourceVersion fresh. Errors are retried with exponential backoff and jitter
//! (`default_backoff`); each one is logged (rate-limited), counted, and marks the API
//! unreachable until the next success, which readiness reports. A 401 or 403 is not an outage:
//! the API server refused the credentials, and the log line, `logship_kubernetes_refused_total`
//! and readiness's reason say so, naming the token file.
//!
//! A bearer token file (in-cluster, `kubernetes.token_file`, a kubeconfig's `tokenFile`) is read
//! by `credentials`, as every credential file is: trimmed, and read again as it rotates. kube's
//! own token file reader is not used for it: it sends the file as it is, a final newline
//! included, which no HTTP header can carry.
//!
//! The tasks never block the pipeline: while they retry, the cache keeps what it had.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::metadata::{KeepOptions, NamespaceMeta, PodMeta};
use super::{ApiAccess, Cache, KubernetesSettings, Resource};
use crate::credentials::TokenFile;
use crate::telemetry::{self, metrics, Throttle};

/// How often deleted pods past their grace period are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);
/// How often the API server is asked whether it answers again, while it is taken as
/// unreachable after the cache was synced once.
const PROBE_EVERY: Duration = Duration::from_secs(5);

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

/// A client of the API server, and what it authenticates with.
pub struct ApiClient {
    pub client: Client,
    /// The credentials, as messages name them ("the token from /var/run/...").
    pub credentials: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Builds the client for `access`; no request is made yet.
pub async fn client(access: &ApiAccess) -> Result<ApiClient, WatchError> {
    crate::tls::install_crypto_provider();
    let mut config = match access {
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
    let credentials = describe_credentials(access, &config.auth_info);
    let auth = &mut config.auth_info;
    // kube prefers a provider, a user and password and an inline token to a token file: then
    // the file is not used, and kube is left to it.
    let token_file =
        (auth.auth_provider.is_none() && auth.username.is_none() && auth.token.is_none())
            .then(|| auth.token_file.take())
            .flatten();
    let builder = kube::client::ClientBuilder::try_from(config).map_err(WatchError::Client)?;
    let client = match token_file {
        Some(path) => builder
            .with_layer(&BearerLayer(Arc::new(TokenFile::new(path.into()))))
            .build(),
        None => builder.build(),
    };
    Ok(ApiClient {
        client,
        credentials,
    })
}

/// What messages call the credentials.
fn describe_credentials(access: &ApiAccess, auth: &kube::config::AuthInfo) -> String {
    if let Some(file) = &auth.token_file {
        if auth.token.is_none() && auth.username.is_none() {
            return format!("the token from {file}");
        }
    }
    match access {
        ApiAccess::Kubeconfig(path) => format!("the credentials of kubeconfig {}", path.display()),
        ApiAccess::InCluster => "the in-cluster credentials".to_owned(),
        ApiAccess::Explicit { .. } => "anonymous requests (no kubernetes.token_file)".to_owned(),
    }
}

/// Puts `Authorization: Bearer <token>` on every request, the token from [`TokenFile`].
#[derive(Clone)]
struct BearerLayer(Arc<TokenFile>);

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            token: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
struct Bearer<S> {
    inner: S,
    token: Arc<TokenFile>,
}

type Answer<R> = Pin<Box<dyn Future<Output = Result<R, tower::BoxError>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Answer<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.token.bearer() {
            Ok(value) => {
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
                let answer = self.inner.call(request);
                Box::pin(async move { answer.await.map_err(Into::into) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

/// Runs the pod and namespace watches until `stop`.
pub async fn run(
    client: ApiClient,
    settings: KubernetesSettings,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    stop: CancellationToken,
) {
    let keep = settings.keep.clone();
    let ApiClient {
        client,
        credentials,
    } = client;
    let probe = probe(
        Api::all(client.clone()),
        settings.node_name.clone(),
        Arc::clone(&cache),
    );
    let pods = watch_pods(
        Api::all(client.clone()),
        settings.node_name.clone(),
        keep.clone(),
        Arc::clone(&cache),
        wake.clone(),
        &credentials,
    );
    let namespaces = watch_namespaces(
        Api::all(client),
        keep,
        Arc::clone(&cache),
        wake,
        &credentials,
    );
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
        _ = probe => {}
    }
}

/// After an outage the watches resume from their resource version, and on a quiet node they
/// bring no event: nothing would tell that the API server answers again, and readiness would
/// say it is unreachable for as long as no pod changes. So while it is taken as unreachable,
/// this asks it (a list of this node's pods from its watch cache, `resourceVersion=0`) every
/// [`PROBE_EVERY`]; an answer is what the watches' events would have said.
async fn probe(api: Api<Pod>, node: String, cache: Arc<Cache>) {
    let params = kube::api::ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .match_any();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Before the first sync the watch's own list is the probe.
        if cache.reachable() || !cache.synced() {
            continue;
        }
        if api.list(&params).await.is_ok() {
            tracing::info!("The Kubernetes API server answers again.");
            cache.set_accepted(Resource::Pods);
        }
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

/// The HTTP status of an answer that refused the credentials (401) or their rights (403).
fn refusal(error: &watcher::Error) -> Option<u16> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => s.code,
        _ => return None,
    };
    matches!(status, 401 | 403).then_some(status)
}

/// One failure of a watch: logged (rate-limited), counted, readiness told.
fn watch_failed(
    cache: &Cache,
    what: Resource,
    error: &watcher::Error,
    throttle: &Throttle,
    credentials: &str,
) {
    telemetry::add(&metrics().kubernetes_watch_errors, 1);
    cache.set_reachable(false);
    if let Some(code) = refusal(error) {
        telemetry::kubernetes_refused(code);
        cache.set_refused(what, code);
        if let Some(suppressed) = throttle.admit() {
            tracing::error!(resource = what.name(), code, error = %error, suppressed, "The API server refused {credentials}: {code}. Records ship without the metadata of pods not cached before; retrying with backoff.");
        }
        return;
    }
    if let Some(suppressed) = throttle.admit() {
        tracing::warn!(resource = what.name(), error = %error, suppressed, "Kubernetes watch failed; retrying with backoff. Records keep shipping with the metadata already known.");
    }
}

async fn watch_pods(
    api: Api<Pod>,
    node: String,
    keep: KeepOptions,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    credentials: &str,
) {
    let config =
        list_from_cache(watcher::Config::default().fields(&format!("spec.nodeName={node}")));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let throttle = Throttle::new(Duration::from_secs(30));
    let mut listed: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                cache.set_accepted(Resource::Pods);
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
            Err(e) => watch_failed(&cache, Resource::Pods, &e, &throttle, credentials),
        }
    }
}

async fn watch_namespaces(
    api: Api<Namespace>,
    keep: KeepOptions,
    cache: Arc<Cache>,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    credentials: &str,
) {
    let config = list_from_cache(watcher::Config::default());
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let throttle = Throttle::new(Duration::from_secs(30));
    while let Some(event) = events.next().await {
        if event.is_ok() {
            cache.set_accepted(Resource::Namespaces);
        }
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
            Err(e) => watch_failed(&cache, Resource::Namespaces, &e, &throttle, credentials),
        }
    }
}
