//! The server side of the handle: the state every request and the handle share, behind one
//! lock, and the accept loop that serves connections on the server's own tokio runtime.
//!
//! Each connection is served by hyper with the axum router, and can be closed from inside a
//! request (a dropped-connection fault) or from outside (the server going down): dropping the
//! connection's future closes its socket, answered or not. Stopping the accept loop closes the
//! listener first, so new connections are refused, then every open connection.

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener as StdListener;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Notify};

use super::cluster::Cluster;
use super::faults::Faults;
use super::{http, Credentials, Flavor, RequestRecord};

/// `http.max_content_length` of Elasticsearch, 100 MiB.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 100 * 1024 * 1024;

/// Most requests the server remembers; older ones are forgotten (and counted).
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// Everything the server holds, behind one lock. Handlers never hold it across an `await`.
pub struct State {
    pub cluster: Cluster,
    pub faults: Faults,
    /// Empty: security disabled.
    pub credentials: Vec<Credentials>,
    /// The request log, each entry with its sequence number so the front layer can complete it
    /// once answered; bounded by [`REQUEST_LOG_CAPACITY`].
    pub requests: VecDeque<(u64, RequestRecord)>,
    /// Entries dropped from the front of the log.
    pub requests_forgotten: u64,
    pub next_request: u64,
    /// Answers per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Bulk items per status.
    pub item_statuses: BTreeMap<u16, u64>,
    /// The answers of items refused with 400 (the document itself was refused), in order.
    pub refused_items: Vec<serde_json::Value>,
    /// `http.max_content_length`, measured after decompression.
    pub max_content_length: usize,
    /// Held before each request is handled.
    pub delay: Duration,
}

impl State {
    pub fn begin_request(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        encoding: Option<&str>,
    ) -> u64 {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let seq = self.next_request;
        self.next_request += 1;
        if self.requests.len() == REQUEST_LOG_CAPACITY {
            self.requests.pop_front();
            self.requests_forgotten += 1;
        }
        self.requests.push_back((
            seq,
            RequestRecord {
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                content_type: header("content-type"),
                authorization: header("authorization"),
                gzip: matches!(encoding, Some("gzip" | "x-gzip")),
                wire_bytes: 0,
                body_bytes: 0,
                items: None,
                status: None,
            },
        ));
        seq
    }

    pub fn record(&mut self, seq: u64) -> Option<&mut RequestRecord> {
        self.requests
            .iter_mut()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, r)| r)
    }

    pub fn set_body_size(&mut self, seq: u64, wire: usize, decoded: usize) {
        if let Some(r) = self.record(seq) {
            r.wire_bytes = wire;
            r.body_bytes = decoded;
        }
    }

    pub fn end_request(&mut self, seq: u64, status: Option<u16>, items: Option<usize>) {
        if let Some(s) = status {
            *self.statuses.entry(s).or_insert(0) += 1;
        }
        if let Some(r) = self.record(seq) {
            r.status = status;
            r.items = items;
        }
    }
}

/// What the handle and the server share.
pub struct Shared {
    pub flavor: Flavor,
    pub cluster_uuid: String,
    pub state: Mutex<State>,
}

impl Shared {
    pub fn new(flavor: Flavor, seed: u64) -> Self {
        let mut cluster = Cluster::new(flavor, seed);
        Shared {
            flavor,
            cluster_uuid: cluster.random_id(22),
            state: Mutex::new(State {
                cluster,
                faults: Faults::default(),
                credentials: Vec::new(),
                requests: VecDeque::new(),
                requests_forgotten: 0,
                next_request: 0,
                statuses: BTreeMap::new(),
                item_statuses: BTreeMap::new(),
                refused_items: Vec::new(),
                max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
                delay: Duration::ZERO,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take every later request down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The accept loop now running.
pub struct Serving {
    pub stop: watch::Sender<bool>,
    /// Disconnects when the accept loop has closed the listener and every connection.
    pub stopped: mpsc::Receiver<()>,
}

/// Starts an accept loop on `listener`.
pub fn serve(runtime: &Runtime, shared: &Arc<Shared>, listener: StdListener) -> Serving {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let (stop, stop_rx) = watch::channel(false);
    let (stopped_tx, stopped) = mpsc::channel();
    let router = http::router(shared.clone());
    runtime.spawn(accept_loop(listener, router, stop_rx, stopped_tx));
    Serving { stop, stopped }
}

async fn accept_loop(
    listener: StdListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    stopped: mpsc::Sender<()>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, router.clone(), stop.clone()));
                }
            }
        }
    }
    // Refuse new connections first, then close the open ones, as a stopped node does.
    drop(listener);
    connections.shutdown().await;
    drop(stopped);
}

async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let service = http::with_conn(router, http::Conn { kill: kill.clone() });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    // Dropping the connection future closes the socket, answered or not.
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {}
        _ = stop.changed() => {}
    }
}
