//! A test Kubernetes API server: a real HTTP server on 127.0.0.1 that answers the calls a node
//! agent makes (list and watch of pods and namespaces, GET of one, discovery, `/version`) as
//! kube-apiserver v1.34 with its watch cache does, so that kube-rs cannot tell it from the real
//! thing. Plain HTTP: point a client at [`TestKube::url`] or a kubeconfig from
//! [`TestKube::write_kubeconfig`].
//!
//! # Layout
//! - this file: [`TestKube`], the handle a synchronous test holds, and the request log's types.
//!   The server runs on its own tokio runtime (one worker thread) owned by the handle.
//! - `server`: the state shared by the handle and the handlers, the signals that reach open
//!   watches, and the accept loop, which can stop listening and start again on the same port.
//! - `store`: objects, the cluster-wide resourceVersion and the history a watch replays and an
//!   exact list rolls back through; compaction.
//! - `http`: routes, the filter chain (recording, delay, 401, injected faults, 403), discovery,
//!   GET; `list`: LIST with `resourceVersion`/`resourceVersionMatch`/`limit`/`continue` semantics.
//! - `watch`: watch streams: where they start, selectors on both sides of a change, bookmarks,
//!   `sendInitialEvents`, timeouts, 410 and 504 as ERROR events.
//! - `selectors`: label and field selectors. `status`: the `Status` bodies. `fixtures`:
//!   real-shaped Pod and Namespace objects.
//!
//! A fresh server holds the namespaces every cluster has (`default`, `kube-system`,
//! `kube-public`, `kube-node-lease`) and no pods. Everything is in memory and lives as long as the
//! handle; the server stops when it is dropped. Every method may be called at any time, from any
//! thread, while the agent under test is talking to the server.
//!
//! Not served: writes over HTTP (405; the test writes through the handle), protobuf, Table output,
//! gzip responses, HTTP/2, resources other than pods and namespaces (404 `Status`).

mod fixtures;
mod http;
mod list;
mod selectors;
mod server;
mod status;
mod store;
mod watch;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::runtime::Runtime;

// Part of the handle's API; a test binary may use none of them.
#[allow(unused_imports)]
pub use self::fixtures::{
    container_id, file_name, namespace, pod, NamespaceBuilder, Owner, PodBuilder,
};
#[allow(unused_imports)]
pub use self::server::Target;
use self::server::{Fault, Lasting, Serving, Shared, State};
use self::store::{Kind, WriteError};

/// What a request asked for, as the apiserver's request-info resolver names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// One object by name.
    Get,
    /// A collection, without `watch`.
    List,
    /// `?watch=true` or the legacy `/watch/` path.
    Watch,
    /// `/version`, `/api`, `/api/v1`, `/apis`.
    Discovery,
    /// Anything else (writes, health checks, unknown paths).
    Other,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    pub verb: Verb,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    /// The status answered (200 for a watch once its stream started); `None` while in flight.
    pub status: Option<u16>,
}

impl KubeRequest {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        http::query_params(self.query.as_deref())
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn is_watch(&self) -> bool {
        self.verb == Verb::Watch
    }

    pub fn is_list(&self) -> bool {
        self.verb == Verb::List
    }

    pub fn is_get(&self) -> bool {
        self.verb == Verb::Get
    }
}

/// The handle on a running test apiserver. See the module documentation.
pub struct TestKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    serving: Mutex<Option<Serving>>,
}

impl TestKube {
    /// Starts a server on 127.0.0.1 and an ephemeral port, authentication off.
    pub fn start() -> TestKube {
        let shared = Arc::new(Shared::new());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-kube-apiserver")
            .enable_all()
            .build()
            .expect("test apiserver runtime");
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let kube = TestKube {
            addr,
            shared,
            runtime: Some(runtime),
            serving: Mutex::new(None),
        };
        for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            kube.create_namespace(namespace(ns).build());
        }
        let serving = server::serve(
            kube.runtime.as_ref().expect("running"),
            &kube.shared,
            listener,
        );
        *kube.serving.lock().unwrap() = Some(serving);
        kube
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // ---- authentication and authorisation ----

    /// Turns authentication on and accepts only `Authorization: Bearer <token>` with this token
    /// (a rotation: the tokens accepted before are refused from now on). Others get 401.
    pub fn require_token(&self, token: &str) {
        self.state().tokens = vec![token.to_string()];
    }

    /// Accepts this token as well as those already accepted (both sides of a rotation).
    pub fn accept_token(&self, token: &str) {
        self.state().tokens.push(token.to_string());
    }

    /// Turns authentication off.
    pub fn allow_anonymous(&self) {
        self.state().tokens.clear();
    }

    /// The user 403 messages name (default `system:serviceaccount:kube-system:logship`).
    pub fn set_user(&self, user: &str) {
        self.state().user = user.to_string();
    }

    /// Refuses every verb on `pods` or `namespaces` with 403, as RBAC without that rule does.
    pub fn forbid(&self, resource: &str) {
        let r = match resource {
            "pods" => "pods",
            "namespaces" => "namespaces",
            other => panic!("the test apiserver serves pods and namespaces, not {other}"),
        };
        self.state().forbidden.insert(r);
    }

    /// Undoes [`TestKube::forbid`].
    pub fn permit(&self, resource: &str) {
        self.state().forbidden.retain(|r| *r != resource);
    }

    /// Writes a kubeconfig whose current context points at this server, with this bearer token
    /// (or no credentials).
    pub fn write_kubeconfig(&self, path: &Path, token: Option<&str>) {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: logship-test\n  cluster:\n    server: {url}\ncontexts:\n- name: logship-test\n  context:\n    cluster: logship-test\n    namespace: default\n    user: logship\ncurrent-context: logship-test\npreferences: {{}}\nusers:\n- name: logship\n  user:\n{user}",
            url = self.url()
        );
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("writing kubeconfig {}: {e}", path.display()));
    }

    // ---- objects ----

    fn create(&self, kind: Kind, mut object: Value) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let meta = &mut object["metadata"];
        if meta["uid"].is_null() {
            let name = meta["name"].as_str().unwrap_or("").to_string();
            let ns = meta["namespace"].as_str().unwrap_or("").to_string();
            meta["uid"] = json!(fixtures::uid_for(&[kind.kind(), &ns, &name, &now]));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(now);
        }
        if kind == Kind::Namespace {
            let name = meta["name"].clone();
            meta["labels"]["kubernetes.io/metadata.name"] = name;
        }
        match self.shared.write(|s| s.create(kind, object)) {
            Ok(o) => (*o).clone(),
            Err(e) => panic!("creating a {}: {e:?}", kind.kind()),
        }
    }

    fn update(&self, kind: Kind, key: &str, edit: impl FnOnce(&mut Value)) -> Value {
        match self.shared.write(|s| s.update(kind, key, edit)) {
            Ok(o) => (*o).clone(),
            Err(WriteError::NotFound(k)) => panic!("no {} {k} to update", kind.kind()),
            Err(e) => panic!("updating {} {key}: {e:?}", kind.kind()),
        }
    }

    /// Stores a new pod (from [`pod`]`(..).build()` or any Pod JSON) and sends ADDED to the
    /// watches it matches. Returns it as stored, with its resourceVersion.
    pub fn create_pod(&self, pod: Value) -> Value {
        self.create(Kind::Pod, pod)
    }

    /// Edits a pod (labels, annotations, status...) as one write: one MODIFIED event, or ADDED /
    /// DELETED to watches it starts or stops matching.
    pub fn update_pod(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
        self.update(Kind::Pod, &format!("{namespace}/{name}"), edit)
    }

    /// Sets (`Some`) or removes (`None`) one label of a pod.
    pub fn set_pod_label(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Value {
        self.update_pod(namespace, name, |p| set_entry(p, "labels", key, value))
    }

    /// Sets (`Some`) or removes (`None`) one annotation of a pod.
    pub fn set_pod_annotation(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Value {
        self.update_pod(namespace, name, |p| set_entry(p, "annotations", key, value))
    }

    /// What a graceful delete does first: `deletionTimestamp` 30 s ahead and
    /// `deletionGracePeriodSeconds` (one MODIFIED). [`TestKube::delete_pod`] finishes it.
    pub fn terminate_pod(&self, namespace: &str, name: &str) -> Value {
        let at = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.update_pod(namespace, name, |p| {
            p["metadata"]["deletionTimestamp"] = json!(at);
            p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        })
    }

    /// Removes a pod: DELETED, carrying its last state and the deletion's resourceVersion.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Value {
        match self
            .shared
            .write(|s| s.delete(Kind::Pod, &format!("{namespace}/{name}")))
        {
            Ok(o) => (*o).clone(),
            Err(e) => panic!("deleting pod {namespace}/{name}: {e:?}"),
        }
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .store
            .get(Kind::Pod, &format!("{namespace}/{name}"))
            .map(|o| (*o).clone())
    }

    /// Every pod, in etcd's key order.
    pub fn pods(&self) -> Vec<Value> {
        self.state()
            .store
            .current(Kind::Pod)
            .into_iter()
            .map(|(_, o)| (*o).clone())
            .collect()
    }

    /// Stores a new namespace (from [`namespace`]`(..).build()`); the apiserver's
    /// `kubernetes.io/metadata.name` label is always set.
    pub fn create_namespace(&self, namespace: Value) -> Value {
        self.create(Kind::Namespace, namespace)
    }

    pub fn update_namespace(&self, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
        self.update(Kind::Namespace, name, edit)
    }

    /// Sets (`Some`) or removes (`None`) one label of a namespace.
    pub fn set_namespace_label(&self, name: &str, key: &str, value: Option<&str>) -> Value {
        self.update_namespace(name, |n| set_entry(n, "labels", key, value))
    }

    /// Deletes a namespace as the namespace controller does: it turns `Terminating`, its pods
    /// are deleted, then it is.
    pub fn delete_namespace(&self, name: &str) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.update_namespace(name, |n| {
            n["metadata"]["deletionTimestamp"] = json!(now);
            n["status"]["phase"] = json!("Terminating");
        });
        let prefix = format!("{name}/");
        let pods: Vec<String> = self
            .state()
            .store
            .current(Kind::Pod)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&prefix))
            .collect();
        for key in pods {
            let _ = self.shared.write(|s| s.delete(Kind::Pod, &key));
        }
        match self.shared.write(|s| s.delete(Kind::Namespace, name)) {
            Ok(o) => (*o).clone(),
            Err(e) => panic!("deleting namespace {name}: {e:?}"),
        }
    }

    pub fn get_namespace(&self, name: &str) -> Option<Value> {
        self.state()
            .store
            .get(Kind::Namespace, name)
            .map(|o| (*o).clone())
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().store.rv
    }

    // ---- history and watches ----

    /// Compacts: a watch, exact list or `continue` from any version before now gets 410 Gone.
    /// Open watches go on.
    pub fn compact(&self) {
        self.state().store.compact();
    }

    /// Keeps only the last `n` changes, as a watch cache of that size: a watch from before them
    /// gets 410.
    pub fn set_history_limit(&self, n: usize) {
        self.state().store.set_history_limit(n);
    }

    /// The oldest resourceVersion a watch can start from without 410.
    pub fn oldest_resource_version(&self) -> u64 {
        self.state().store.floor
    }

    /// Ends every open watch cleanly (terminating chunk), as at a watch timeout or when the
    /// watch cache re-initialises; the client has to watch again.
    pub fn close_watches(&self) {
        Shared::bump(&self.shared.signals.close);
    }

    /// Cuts every open watch's connection mid-stream, without the terminating chunk.
    pub fn cut_watches(&self) {
        Shared::bump(&self.shared.signals.cut);
    }

    /// Sends a BOOKMARK now on every open watch that allows them.
    pub fn send_bookmarks(&self) {
        Shared::bump(&self.shared.signals.bookmark);
    }

    /// Between periodic bookmarks (default one minute, the watch cache's), for watches opened
    /// from now on.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.state().bookmark_interval = interval;
    }

    /// Serve `sendInitialEvents` (the default) or refuse it with 422, as an apiserver with the
    /// WatchList feature gate off.
    pub fn set_watch_list(&self, enabled: bool) {
        self.state().watch_list = enabled;
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Waits until exactly `n` watches are open; whether that happened before `timeout`.
    pub fn wait_for_open_watches(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.open_watches() == n)
    }

    // ---- faults ----

    fn add_fault(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Answers the next `n` requests (of any kind) with `status`: 429 as the flow-control filter
    /// (text, `Retry-After: 1`), 500 `InternalError`, 503 `ServiceUnavailable`, 504 `Timeout`,
    /// others with the `Status` apimachinery gives the code.
    pub fn fail_next(&self, n: u64, status: u16) {
        self.fail_next_for(Target::Any, n, status, None);
    }

    /// Answers the next `n` requests of `target` with `status` and this `Retry-After`.
    pub fn fail_next_for(&self, target: Target, n: u64, status: u16, retry_after: Option<u32>) {
        self.add_fault(Fault {
            status,
            retry_after,
            target,
            lasting: Lasting::Times(n),
        });
    }

    /// Answers every request with `status` for `duration` from now.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.add_fault(Fault {
            status,
            retry_after: None,
            target: Target::Any,
            lasting: Lasting::Until(Instant::now() + duration),
        });
    }

    /// Answers every request with `status` until [`TestKube::clear_faults`].
    pub fn fail_until_cleared(&self, status: u16) {
        self.add_fault(Fault {
            status,
            retry_after: None,
            target: Target::Any,
            lasting: Lasting::UntilCleared,
        });
    }

    /// Holds every request this long before handling it (a watch's headers included).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// No injected statuses, no delay, nothing forbidden. Objects, tokens and history stay.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.faults.clear();
        st.delay = Duration::ZERO;
        st.forbidden.clear();
    }

    /// Stops listening and closes every connection, open watches included: connecting is
    /// refused until [`TestKube::up`]. Objects and history survive.
    pub fn down(&self) {
        let serving = self.serving.lock().unwrap().take();
        if let Some(serving) = serving {
            let _ = serving.stop.send(true);
            let _ = serving.stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let mut serving = self.serving.lock().unwrap();
        if serving.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match StdListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        *serving = Some(server::serve(
            self.runtime.as_ref().expect("running"),
            &self.shared,
            listener,
        ));
    }

    pub fn is_up(&self) -> bool {
        self.serving.lock().unwrap().is_some()
    }

    // ---- inspection ----

    /// Every request received, oldest first (the most recent 100,000).
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    fn with_verb(&self, verb: Verb) -> Vec<KubeRequest> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.verb == verb)
            .cloned()
            .collect()
    }

    pub fn list_requests(&self) -> Vec<KubeRequest> {
        self.with_verb(Verb::List)
    }

    pub fn watch_requests(&self) -> Vec<KubeRequest> {
        self.with_verb(Verb::Watch)
    }

    /// GETs of single objects: an agent that watches makes none.
    pub fn get_requests(&self) -> Vec<KubeRequest> {
        self.with_verb(Verb::Get)
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_for(&self, prefix: &str) -> Vec<KubeRequest> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Waits until `count` requests satisfy `pred`; whether that happened before `timeout`.
    pub fn wait_for_requests(
        &self,
        count: usize,
        timeout: Duration,
        pred: impl Fn(&KubeRequest) -> bool,
    ) -> bool {
        wait_until(timeout, || {
            self.state()
                .requests
                .iter()
                .filter(|(_, r)| pred(r))
                .count()
                >= count
        })
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_entry(object: &mut Value, map: &str, key: &str, value: Option<&str>) {
    let meta = &mut object["metadata"];
    match value {
        Some(v) => meta[map][key] = json!(v),
        None => {
            if let Some(m) = meta[map].as_object_mut() {
                m.remove(key);
            }
        }
    }
}

impl Drop for TestKube {
    fn drop(&mut self) {
        if let Some(serving) = self
            .serving
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = serving.stop.send(true);
        }
        if let Some(runtime) = self.runtime.take() {
            // Never blocks, even if the handle is dropped inside another runtime.
            runtime.shutdown_background();
        }
    }
}
