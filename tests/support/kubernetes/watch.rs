//! Watch streams, served as the apiserver's watch cache serves them: HTTP 200 with headers sent
//! at once, then one JSON event per line over chunked transfer encoding, each flushed as written.
//!
//! Where a watch starts:
//! - `resourceVersion` unset or `0`: a synthetic ADDED for every object that matches, then the
//!   changes after the current version ("Get State and Start at Most Recent").
//! - `resourceVersion=N`: the retained changes after N, then live ones. N older than the retained
//!   history: a single ERROR event with a 410 `Expired` Status, and the stream ends (HTTP 200, as
//!   the cacher answers once the request has been authorised). N newer than the cluster: up to 3 s
//!   of waiting, then an ERROR event with a 504 `Timeout` Status.
//! - `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan`, as validated before):
//!   ADDED for every matching object, then a BOOKMARK annotated `k8s.io/initial-events-end` at the
//!   version they were read at, then live changes. `sendInitialEvents=false` with version 0 or
//!   unset starts at the current version without the synthetic events.
//!
//! Selectors are applied to both sides of each change, as the cacher does: an object that starts
//! matching arrives as ADDED, one that stops matching as DELETED (its previous content with the
//! change's version), so a `spec.nodeName` watch sees a pod bound to its node as ADDED.
//!
//! With `allowWatchBookmarks=true`, a BOOKMARK with the cluster's current version is sent every
//! bookmark interval and 2 s before the watch's deadline. At `timeoutSeconds` the stream ends
//! cleanly. A watch that falls behind the retained history is closed, as the cacher closes a
//! watcher that cannot keep up.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::http::render_object;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{OpenWatch, Shared};
use super::status;
use super::store::{Change, ChangeType, Kind};

/// Events buffered between the watch task and the connection.
const BUFFER: usize = 64;

/// Bookmarks stop this long before the deadline, as the cacher's pre-timeout bookmark.
const PRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct WatchRequest {
    pub kind: Kind,
    /// Pods of this namespace only.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None`: unset or `0`.
    pub resource_version: Option<u64>,
    pub send_initial_events: Option<bool>,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub metadata_only: bool,
}

impl WatchRequest {
    fn matches(&self, object: &Value) -> bool {
        let in_namespace = match &self.namespace {
            Some(ns) => object["metadata"]["namespace"].as_str() == Some(ns.as_str()),
            None => true,
        };
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }

    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let object = render_object(object, self.metadata_only);
        let mut text = format!(
            "{{\"type\":\"{kind}\",\"object\":{}}}",
            serde_json::to_string(&object).expect("serialisable")
        );
        text.push('\n');
        Bytes::from(text)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut object = self.kind.empty_object(rv);
        if initial_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut text = format!(
            "{{\"type\":\"BOOKMARK\",\"object\":{}}}",
            serde_json::to_string(&object).expect("serialisable")
        );
        text.push('\n');
        Bytes::from(text)
    }

    /// The event a change is to this watcher, if any.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if change.kind != self.kind {
            return None;
        }
        let now = change.change != ChangeType::Deleted && self.matches(&change.object);
        let before = change.prev.as_deref().is_some_and(|p| self.matches(p));
        match (now, before) {
            (true, false) => Some(self.line("ADDED", &change.object)),
            (true, true) => Some(self.line("MODIFIED", &change.object)),
            (false, true) => {
                let mut last = change.prev.as_deref().cloned().unwrap_or(Value::Null);
                last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                Some(self.line("DELETED", &last))
            }
            (false, false) => None,
        }
    }
}

fn error_line(status: &Value) -> Bytes {
    let mut text = format!(
        "{{\"type\":\"ERROR\",\"object\":{}}}",
        serde_json::to_string(status).expect("serialisable")
    );
    text.push('\n');
    Bytes::from(text)
}

type Chunk = Result<Bytes, io::Error>;

/// Answers a watch: finds where it starts (waiting up to 3 s for a future version), then sends
/// the headers and streams events as they come, as the cacher registers a watcher before the
/// response starts.
pub async fn start(shared: Arc<Shared>, request: WatchRequest) -> Response {
    let (tx, mut rx) = mpsc::channel::<Chunk>(BUFFER);
    // Subscribed before the store is read, so no write after that read goes unnoticed, and
    // before the watch counts as open, so a signal sent once a test sees it open reaches it.
    let signals = Subscriptions {
        changes: shared.signals.changes.subscribe(),
        close: shared.signals.close.subscribe(),
        cut: shared.signals.cut.subscribe(),
        bookmark: shared.signals.bookmark.subscribe(),
    };
    let begin = begin(&shared, &request).await;
    let guard = OpenWatch::new(shared.clone());
    tokio::spawn(async move {
        let _guard = guard;
        run(shared, request, signals, begin, tx).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// Sends one event. A closed channel means the connection is gone; the loop's next `select!`
/// sees that and ends the watch.
async fn send(tx: &mpsc::Sender<Chunk>, chunk: Bytes) {
    let _ = tx.send(Ok(chunk)).await;
}

enum Begin {
    /// Synthetic ADDED events for these objects, read at this version.
    State(Vec<Arc<Value>>, u64),
    /// Replay of these changes, up to this version.
    Replay(Vec<Change>, u64),
    /// Nothing to send first; start at this version.
    At(u64),
    /// One ERROR event and the end.
    Fail(Value),
}

struct Subscriptions {
    changes: watch::Receiver<u64>,
    close: watch::Receiver<u64>,
    cut: watch::Receiver<u64>,
    bookmark: watch::Receiver<u64>,
}

/// Where a watch starts; see the module documentation.
async fn begin(shared: &Shared, w: &WatchRequest) -> Begin {
    if let Some(n) = w.resource_version {
        if n > shared.lock().store.rv {
            if let Err(s) = shared.wait_for_rv(n).await {
                return Begin::Fail(s);
            }
        }
    }
    let initial = w.send_initial_events == Some(true);
    {
        let st = shared.lock();
        let store = &st.store;
        let current_state = || {
            let objects = store
                .current(w.kind)
                .into_iter()
                .map(|(_, o)| o)
                .filter(|o| w.matches(o))
                .collect();
            Begin::State(objects, store.rv)
        };
        if initial {
            current_state()
        } else {
            match w.resource_version {
                None if w.send_initial_events == Some(false) => Begin::At(store.rv),
                None => current_state(),
                Some(n) => match store.changes_after(n) {
                    Some(c) => Begin::Replay(c, store.rv),
                    None => Begin::Fail(status::too_old_watch(n, store.floor)),
                },
            }
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    w: WatchRequest,
    signals: Subscriptions,
    begin: Begin,
    tx: mpsc::Sender<Chunk>,
) {
    let deadline = Instant::now() + w.timeout;
    let Subscriptions {
        mut changes,
        mut close,
        mut cut,
        bookmark: mut bookmark_now,
    } = signals;

    let mut position = match begin {
        Begin::Fail(s) => {
            send(&tx, error_line(&s)).await;
            return;
        }
        Begin::At(rv) => rv,
        Begin::State(objects, rv) => {
            for o in objects {
                send(&tx, w.line("ADDED", &o)).await;
            }
            if w.send_initial_events == Some(true) && w.bookmarks {
                send(&tx, w.bookmark(rv, true)).await;
            }
            rv
        }
        Begin::Replay(list, rv) => {
            for c in &list {
                if let Some(line) = w.event(c) {
                    send(&tx, line).await;
                }
            }
            rv
        }
    };

    let interval = shared.lock().bookmark_interval;
    let next_bookmark = |now: Instant| -> Option<Instant> {
        let mut at = now + interval;
        if let Some(pre) = deadline.checked_sub(PRE_TIMEOUT) {
            at = at.min(pre);
        }
        (w.bookmarks && at > now).then_some(at)
    };
    let mut bookmark_at = next_bookmark(Instant::now());
    loop {
        let bookmark_sleep = async {
            match bookmark_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        // Biased: a close or cut the test asked for before a write is acted on before that
        // write is sent, so the order a test does things in is the order a client sees.
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            r = close.changed() => {
                if r.is_ok() {
                    return;
                }
            }
            r = cut.changed() => {
                if r.is_ok() {
                    // An error from the body makes hyper drop the connection without the final
                    // chunk: the client sees the stream cut mid-way.
                    let _ = tx.send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "watch cut by the test"))).await;
                    return;
                }
            }
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                match drain(&shared, &w, position) {
                    Some((lines, rv)) => {
                        for line in lines {
                            send(&tx, line).await;
                        }
                        position = rv;
                    }
                    None => return,
                }
            }
            r = bookmark_now.changed() => {
                if r.is_ok() && w.bookmarks {
                    match drain(&shared, &w, position) {
                        Some((lines, rv)) => {
                            for line in lines {
                                send(&tx, line).await;
                            }
                            position = rv;
                            send(&tx, w.bookmark(rv, false)).await;
                        }
                        None => return,
                    }
                }
            }
            _ = bookmark_sleep => {
                match drain(&shared, &w, position) {
                    Some((lines, rv)) => {
                        for line in lines {
                            send(&tx, line).await;
                        }
                        position = rv;
                        send(&tx, w.bookmark(rv, false)).await;
                    }
                    None => return,
                }
                bookmark_at = next_bookmark(Instant::now());
            }
        }
    }
}

/// The events after `position` and the version they bring the watch to; `None` when the history
/// no longer holds them (the watcher fell behind and is closed).
fn drain(shared: &Shared, w: &WatchRequest, position: u64) -> Option<(Vec<Bytes>, u64)> {
    let st = shared.lock();
    let changes = st.store.pending_after(position)?;
    let lines = changes.iter().filter_map(|c| w.event(c)).collect();
    Some((lines, st.store.rv.max(position)))
}
