//! A test Elasticsearch: a real HTTP server on 127.0.0.1 that speaks the `_bulk` API as
//! Elasticsearch 8, Elasticsearch 7 or OpenSearch 2 does, so that the agent under test cannot tell
//! it from the real thing.
//!
//! # Layout
//! - this file: [`TestEs`], the handle a synchronous test holds, and the types of its API. The
//!   server runs on its own tokio runtime (one worker thread) owned by the handle.
//! - `server`: the shared state behind one lock; the accept loop, which can stop listening and
//!   start again on the same port; per-connection serving that a fault can cut.
//! - `http`: routes, the front layer (body limit after gunzip, faults, authentication, recording),
//!   the banner and `_bulk`. `render`: `filter_path`, `pretty`, product header. `auth`: 401s.
//!   `admin`: index templates, legacy templates, ingest pipelines.
//! - `bulk`: reading NDJSON bulk bodies as Elasticsearch's `BulkRequestParser` does.
//! - `cluster`: indices, data streams, documents, and executing bulk operations on them.
//!   `templates`: which template a first write creates an index or data stream from.
//! - `mapping`: per-index mappings and template mappings. `document`: parsing a document against
//!   a mapping as dynamic mapping does, dotted keys and conflicts included.
//! - `json`: a JSON reader that keeps byte positions for Elasticsearch's `[line:column]` errors.
//! - `errors`: the error objects, worded per flavour.
//! - `faults`: what a test can inject, and when each fault fires.
//!
//! Everything is in memory and lives as long as the handle; the server stops when it is dropped.
//! Every method of the handle may be called at any time, from any thread, while the agent under
//! test is talking to the server.

mod admin;
mod auth;
mod bulk;
mod cluster;
mod document;
mod errors;
mod faults;
mod http;
mod json;
mod mapping;
mod render;
mod server;
mod templates;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::runtime::Runtime;

// Part of the handle's API; a test binary may use none of them.
#[allow(unused_imports)]
pub use self::faults::{DropPoint, ItemRule, ItemView};
use self::faults::{Lasting, Reply, RequestFault};
use self::server::{Serving, Shared, State, DEFAULT_MAX_CONTENT_LENGTH};

/// Which server to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Elasticsearch 8.15: `document_parsing_exception` with `[line:column]`, no `_type`.
    Elasticsearch8,
    /// Elasticsearch 7.17: `mapper_parsing_exception`, `_type: _doc` in items.
    Elasticsearch7,
    /// OpenSearch 2.17: `version.distribution: opensearch`, no built-in data streams.
    OpenSearch2,
}

/// Credentials the server accepts once any are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// `Authorization: ApiKey base64(id:key)`.
    ApiKey { id: String, key: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl Credentials {
    pub fn basic(user: &str, password: &str) -> Self {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn api_key(id: &str, key: &str) -> Self {
        Credentials::ApiKey {
            id: id.into(),
            key: key.into(),
        }
    }

    /// The `Authorization` header value a client sends with these credentials.
    pub fn header(&self) -> String {
        match self {
            Credentials::Basic { user, password } => {
                format!(
                    "Basic {}",
                    auth::base64_encode(format!("{user}:{password}").as_bytes())
                )
            }
            Credentials::ApiKey { id, key } => {
                format!(
                    "ApiKey {}",
                    auth::base64_encode(format!("{id}:{key}").as_bytes())
                )
            }
            Credentials::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    /// Sent with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// Body size on the wire.
    pub wire_bytes: usize,
    /// Body size after decompression (what `http.max_content_length` measures).
    pub body_bytes: usize,
    /// Items of a bulk request that was served.
    pub items: Option<usize>,
    /// The status answered; `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
}

impl RequestRecord {
    pub fn is_bulk(&self) -> bool {
        self.path.ends_with("/_bulk")
    }
}

/// The handle on a running test Elasticsearch. See the module documentation.
pub struct TestEs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    serving: Mutex<Option<Serving>>,
}

impl TestEs {
    /// Starts a server on 127.0.0.1 and an ephemeral port.
    pub fn start(flavor: Flavor) -> TestEs {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let shared = Arc::new(Shared::new(flavor, seed));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-elasticsearch")
            .enable_all()
            .build()
            .expect("test Elasticsearch runtime");
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let es = TestEs {
            addr,
            shared,
            runtime: Some(runtime),
            serving: Mutex::new(None),
        };
        let serving = server::serve(es.runtime.as_ref().expect("running"), &es.shared, listener);
        *es.serving.lock().unwrap() = Some(serving);
        es
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // ---- faults ----

    fn fail(&self, status: u16, body: Option<(String, Vec<u8>)>, lasting: Lasting) {
        self.state().faults.add_request_fault(RequestFault {
            reply: Reply { status, body },
            lasting,
        });
    }

    /// Answers the next `n` requests (of any kind) with `status` and the body the real server
    /// sends with it (429 `es_rejected_execution_exception`, 503 `cluster_block_exception`, 500;
    /// 502 and 504 as an nginx proxy in front of it).
    pub fn fail_next(&self, n: u64, status: u16) {
        self.fail(status, None, Lasting::Times(n));
    }

    /// Answers every request with `status` until [`TestEs::clear_faults`] (or
    /// [`TestEs::clear_request_faults`]).
    pub fn fail_until_cleared(&self, status: u16) {
        self.fail(status, None, Lasting::UntilCleared);
    }

    /// Answers every request with `status` for `duration` from now.
    pub fn fail_for(&self, duration: Duration, status: u16) {
        self.fail(status, None, Lasting::Until(Instant::now() + duration));
    }

    /// Answers the next `n` requests with exactly this status and body.
    pub fn fail_next_with(&self, n: u64, status: u16, content_type: &str, body: &[u8]) {
        self.fail(
            status,
            Some((content_type.to_string(), body.to_vec())),
            Lasting::Times(n),
        );
    }

    pub fn clear_request_faults(&self) {
        self.state().faults.clear_request_faults();
    }

    /// Rejects the bulk items `rule` picks with `status` (429: `es_rejected_execution_exception`;
    /// 503: `unavailable_shards_exception`; 401 and 403: `security_exception`, an unknown user or
    /// a missing write privilege; 404: `index_not_found_exception`, as with automatic index
    /// creation off; others: a generic failure), serving the rest.
    pub fn reject_items(&self, rule: ItemRule, status: u16) {
        self.state().faults.add_item_fault(rule, status);
    }

    pub fn clear_item_faults(&self) {
        self.state().faults.clear_item_faults();
    }

    /// A cluster that writes at most `per_sec` documents per second, over every connection (a
    /// second's worth may come at once): items past it are refused one by one with 429
    /// `es_rejected_execution_exception`, the request itself answered 200 with `errors: true`,
    /// as a cluster whose write queues are full answers. `None` lifts it.
    pub fn set_write_capacity(&self, per_sec: Option<u64>) {
        self.state().faults.set_write_capacity(per_sec);
    }

    /// Items the write capacity accepted and refused, by second since it was set.
    pub fn capacity_seconds(&self) -> Vec<(u64, u64)> {
        self.capacity_tenths()
            .chunks(10)
            .map(|c| c.iter().fold((0, 0), |(a, r), &(x, y)| (a + x, r + y)))
            .collect()
    }

    /// The same by tenth of a second.
    pub fn capacity_tenths(&self) -> Vec<(u64, u64)> {
        self.state().faults.capacity_tenths()
    }

    /// The next `n` requests get no answer: their connections are closed, before or after the
    /// request is served.
    pub fn drop_connections(&self, n: usize, point: DropPoint) {
        self.state().faults.drop_connections(n, point);
    }

    /// `http.max_content_length` (default 100 MiB), measured after decompression; larger bodies
    /// get 413 and a closed connection.
    pub fn set_max_content_length(&self, bytes: usize) {
        self.state().max_content_length = bytes;
    }

    /// Waits this long before handling each request.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Back to a healthy server: no faults, no delay, the default body limit. Data and
    /// credentials stay.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.faults.clear();
        st.delay = Duration::ZERO;
        st.max_content_length = DEFAULT_MAX_CONTENT_LENGTH;
    }

    /// Stops listening and closes every open connection: connecting is refused until
    /// [`TestEs::up`]. Stored data survives.
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
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
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

    // ---- security and settings ----

    /// Turns security on (if it was off) and accepts these credentials too.
    pub fn require(&self, credentials: Credentials) {
        self.state().credentials.push(credentials);
    }

    /// Turns security off.
    pub fn allow_anonymous(&self) {
        self.state().credentials.clear();
    }

    /// `index.mapping.total_fields.limit` of indices created from now on (default 1000).
    pub fn set_total_fields_limit(&self, limit: usize) {
        self.state().cluster.total_fields_limit = limit;
    }

    // ---- inspection ----

    /// The documents of an index or data stream, by `_id`.
    pub fn documents(&self, index: &str) -> BTreeMap<String, Value> {
        self.state().cluster.documents(index)
    }

    /// The documents of an index or data stream in the order they were written.
    pub fn documents_in_order(&self, index: &str) -> Vec<Value> {
        self.state().cluster.documents_in_order(index)
    }

    pub fn document(&self, index: &str, id: &str) -> Option<Value> {
        self.state().cluster.documents(index).remove(id)
    }

    /// Documents stored in all indices.
    pub fn doc_count(&self) -> usize {
        self.state().cluster.doc_count()
    }

    /// Concrete indices (data stream backing indices included).
    pub fn indices(&self) -> Vec<String> {
        self.state().cluster.indices.keys().cloned().collect()
    }

    /// Data streams and their write (backing) index.
    pub fn data_streams(&self) -> BTreeMap<String, String> {
        self.state().cluster.data_streams.clone()
    }

    /// The mapped type at a dotted path of an index or data stream (`"object"` for objects).
    pub fn field_type(&self, index: &str, path: &str) -> Option<String> {
        let st = self.state();
        st.cluster
            .index(index)?
            .mapping
            .type_of(path)
            .map(str::to_string)
    }

    /// Mapped fields of an index, as counted for `index.mapping.total_fields.limit`.
    pub fn field_count(&self, index: &str) -> Option<usize> {
        let st = self.state();
        st.cluster.index(index).map(|i| i.mapping.field_count())
    }

    /// Every request received, oldest first (the most recent 100,000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn bulk_requests(&self) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.is_bulk())
            .cloned()
            .collect()
    }

    /// Answers per HTTP status (dropped connections are not counted).
    pub fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.state().statuses.clone()
    }

    /// The answers of the bulk items refused with 400, in order (`{"create":{"_id":…,"error":…}}`).
    pub fn refused_items(&self) -> Vec<Value> {
        self.state().refused_items.clone()
    }

    /// Bulk items per status.
    pub fn item_status_counts(&self) -> BTreeMap<u16, u64> {
        self.state().item_statuses.clone()
    }

    pub fn index_template(&self, name: &str) -> Option<Value> {
        self.state().cluster.index_templates.get(name).cloned()
    }

    pub fn legacy_template(&self, name: &str) -> Option<Value> {
        self.state().cluster.legacy_templates.get(name).cloned()
    }

    /// Waits until at least `n` documents are stored; whether they were before `timeout`.
    pub fn wait_for_doc_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.doc_count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestEs {
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
