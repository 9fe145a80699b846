//! The server side of the handle: the state every request and the handle share, behind one lock,
//! the signals that reach open watches, and the accept loop on the server's own runtime.
//!
//! The accept loop can stop (refusing connections and closing every open one, watches included)
//! and start again on the same port, as an apiserver restarting behind a stable address does.
//! Handlers never hold the lock across an `await`.

use std::collections::{BTreeSet, VecDeque};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::status;
use super::store::Store;
use super::{http, KubeRequest};

/// Most requests remembered; older ones are forgotten.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// The resourceVersion of a fresh cluster: its bootstrap objects were written before it.
pub const FIRST_RESOURCE_VERSION: u64 = 1000;

/// Which requests a fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Any,
    Lists,
    Watches,
    Gets,
}

/// How long a fault lasts.
#[derive(Debug, Clone, Copy)]
pub enum Lasting {
    Times(u64),
    Until(Instant),
    UntilCleared,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    /// `Retry-After` seconds (429 always sends one; 1 when unset, as the flow-control filter).
    pub retry_after: Option<u32>,
    pub target: Target,
    pub lasting: Lasting,
}

/// Everything the server holds, behind one lock.
pub struct State {
    pub store: Store,
    /// Bearer tokens accepted; empty: authentication off (every request is let in).
    pub tokens: Vec<String>,
    /// The user RBAC messages name.
    pub user: String,
    /// Resources (`pods`, `namespaces`) every verb on which is refused with 403.
    pub forbidden: BTreeSet<&'static str>,
    pub faults: Vec<Fault>,
    /// Held before each request is handled (a watch's headers included).
    pub delay: Duration,
    /// Between periodic BOOKMARK events; the watch cache's is one minute.
    pub bookmark_interval: Duration,
    /// Whether `sendInitialEvents` is served (the WatchList feature gate); off, such a watch is
    /// refused with 422 as by an apiserver with the gate off.
    pub watch_list: bool,
    /// Each entry with its sequence number, so its status can be filled in once answered.
    pub requests: VecDeque<(u64, KubeRequest)>,
    pub next_request: u64,
}

impl State {
    pub fn take_fault(&mut self, target: Target) -> Option<Fault> {
        let now = Instant::now();
        self.faults.retain(|f| match f.lasting {
            Lasting::Times(n) => n > 0,
            Lasting::Until(t) => t > now,
            Lasting::UntilCleared => true,
        });
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.target == Target::Any || f.target == target)?;
        if let Lasting::Times(n) = &mut fault.lasting {
            *n -= 1;
        }
        Some(fault.clone())
    }

    pub fn record(&mut self, request: KubeRequest) -> u64 {
        let seq = self.next_request;
        self.next_request += 1;
        if self.requests.len() == REQUEST_LOG_CAPACITY {
            self.requests.pop_front();
        }
        self.requests.push_back((seq, request));
        seq
    }

    pub fn set_status(&mut self, seq: u64, status: u16) {
        if let Some((_, r)) = self.requests.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.status = Some(status);
        }
    }
}

/// Signals from the handle to every open watch.
pub struct Signals {
    /// The store's resourceVersion after each write: wakes watches to send what changed.
    pub changes: watch::Sender<u64>,
    /// Bumped to end every open watch cleanly (the terminating chunk is sent).
    pub close: watch::Sender<u64>,
    /// Bumped to cut every open watch's connection mid-stream.
    pub cut: watch::Sender<u64>,
    /// Bumped to send a BOOKMARK now on every watch that allows them.
    pub bookmark: watch::Sender<u64>,
}

/// What the handle and the server share.
pub struct Shared {
    pub state: Mutex<State>,
    pub signals: Signals,
    /// Watch streams now open.
    pub open_watches: AtomicUsize,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            state: Mutex::new(State {
                store: Store::new(FIRST_RESOURCE_VERSION),
                tokens: Vec::new(),
                user: "system:serviceaccount:kube-system:logship".into(),
                forbidden: BTreeSet::new(),
                faults: Vec::new(),
                delay: Duration::ZERO,
                bookmark_interval: Duration::from_secs(60),
                watch_list: true,
                requests: VecDeque::new(),
                next_request: 0,
            }),
            signals: Signals {
                changes: watch::channel(FIRST_RESOURCE_VERSION).0,
                close: watch::channel(0).0,
                cut: watch::channel(0).0,
                bookmark: watch::channel(0).0,
            },
            open_watches: AtomicUsize::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take every later request down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a write on the store and wakes the watches.
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut st = self.lock();
            let out = f(&mut st.store);
            (out, st.store.rv)
        };
        self.signals.changes.send_replace(rv);
        out
    }

    /// Waits (up to the cacher's 3 s) for the store to reach `rv`.
    pub async fn wait_for_rv(&self, rv: u64) -> Result<(), Value> {
        let mut changes = self.signals.changes.subscribe();
        let reached = tokio::time::timeout(
            Duration::from_secs(3),
            changes.wait_for(|current| *current >= rv),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let current = self.lock().store.rv;
                Err(status::too_large_resource_version(rv, current))
            }
        }
    }

    pub fn bump(sender: &watch::Sender<u64>) {
        sender.send_modify(|n| *n += 1);
    }
}

/// Counts an open watch for as long as it lives.
pub struct OpenWatch(Arc<Shared>);

impl OpenWatch {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
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
    // Refuse new connections first, then close the open ones, as a stopped apiserver does.
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
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    // Dropping the connection future closes the socket, mid-response or not.
    tokio::select! {
        _ = connection => {}
        _ = stop.changed() => {}
    }
}
