//! The HTTP endpoint on `server.listen`: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! the kubelet, and `/status`, the JSON document `logship status` reads (`crate::status`).
//!
//! - `metrics`: the registry and its text encoding.
//! - `health`: liveness and readiness, decided from plain values.
//!
//! Binding ([`Listener::bind`]) is separate from serving, so that an address that cannot be bound
//! is a start error (exit 70) before any stage runs, and a reload that moves the endpoint fails
//! before it touches the pipeline. The endpoint is started after the configuration is validated
//! and the positions are loaded, outlives the pipelines that reloads replace (it is told which
//! one runs now: [`Server::show`]), and is stopped last, after the final drain, so the probes and
//! metrics keep answering while the agent reloads or shuts down. Answers are computed at request
//! time from the telemetry and the buffer; the endpoint never touches the pipeline, so a scrape
//! cannot slow or block it.

pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::buffer::Budget;
use crate::config::Settings;
use crate::sink::LocalOutput;
use crate::status::{self, Status};
use crate::telemetry::{self, metrics as counters, Loop};
use health::{BufferUse, Kubernetes, Output};

/// How long stopping waits for requests in progress.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is taken, not this machine's, or needs a privilege the agent lacks.
    #[error("binding the HTTP endpoint to server.listen = {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// An address bound, not served yet.
pub struct Listener {
    listener: tokio::net::TcpListener,
    /// With the port the system chose, for port 0.
    addr: SocketAddr,
}

impl Listener {
    /// Binds `addr`. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> Result<Listener, ServerError> {
        let bind_error = |source| ServerError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = std_listener.local_addr().map_err(bind_error)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_error)?;
        Ok(Listener {
            listener,
            addr: bound,
        })
    }
}

/// What the endpoint reports about the pipeline that runs now.
#[derive(Clone, Debug)]
pub struct Pipeline {
    budget: Budget,
    /// What one read asks of the budget: with less left, the buffer is full (readiness).
    headroom: usize,
    local_output: bool,
    /// Kubernetes enrichment is on (its API's state is part of the readiness answer).
    enrichment: bool,
}

impl Pipeline {
    /// The pipeline built from `settings`, with its buffer.
    pub fn of(settings: &Settings, budget: &Budget) -> Pipeline {
        Pipeline {
            budget: budget.clone(),
            headroom: settings.tail.read_budget.max(settings.tail.max_line_bytes),
            local_output: LocalOutput::of(&settings.output).is_ok(),
            enrichment: settings.kubernetes.is_some(),
        }
    }
}

/// The pipeline reported on, replaced at each reload; shared by the handlers and `/metrics`.
type Current = Arc<RwLock<Pipeline>>;

/// The running endpoint.
pub struct Server {
    /// The address bound.
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// What the handlers read.
struct Shared {
    registry: Registry,
    current: Current,
    started: Instant,
}

impl Shared {
    /// The pipeline running now.
    fn pipeline(&self) -> Pipeline {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Server {
    /// Serves on `listener`, on the current tokio runtime, reporting on `pipeline`.
    pub fn start(listener: Listener, pipeline: Pipeline) -> Server {
        let current = Arc::new(RwLock::new(pipeline));
        let shared = Arc::new(Shared {
            registry: metrics::registry(Arc::clone(&current)),
            current,
            started: Instant::now(),
        });
        Server::serve(listener, shared)
    }

    fn serve(listener: Listener, shared: Arc<Shared>) -> Server {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let addr = listener.addr;
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener.listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "The HTTP endpoint failed; metrics and probes are unavailable.");
            }
        });
        tracing::info!(%addr, "Serving /metrics, /healthz, /readyz and /status.");
        Server {
            addr,
            stop,
            task,
            shared,
        }
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, reports on `pipeline` (a reload replaced the pipeline).
    pub fn show(&self, pipeline: Pipeline) {
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = pipeline;
    }

    /// Serves on `listener` instead (a reload changed `server.listen`): the new address answers
    /// before the old one stops.
    pub async fn move_to(self, listener: Listener) -> Server {
        let moved = Server::serve(listener, Arc::clone(&self.shared));
        self.stop().await;
        moved
    }

    /// Stops accepting, lets requests in progress finish for a moment, then ends.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(status::PATH, get(status_document))
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "not found: this endpoint serves /metrics, /healthz, /readyz and /status".into(),
            )
        })
        .with_state(shared)
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    match metrics::encode(&shared.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed".into(),
        ),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    verdict(liveness(&shared))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    verdict(readiness(&shared))
}

fn liveness(shared: &Shared) -> health::Verdict {
    // The journal reader is judged once it has turned: it runs only when the journal is read.
    let ages: Vec<_> = Loop::ALL
        .into_iter()
        .map(|which| (which, telemetry::since_beat(which)))
        .filter(|(which, age)| *which != Loop::Journald || age.is_some())
        .collect();
    health::liveness(&ages, shared.started.elapsed(), health::LIVENESS_BOUND)
}

fn readiness(shared: &Shared) -> health::Verdict {
    let pipeline = shared.pipeline();
    let output = if pipeline.local_output {
        Output::Local
    } else {
        Output::Elasticsearch {
            reachable: telemetry::get(&counters().es_cluster_reachable) == 1,
        }
    };
    let buffer = BufferUse {
        used: pipeline.budget.used(),
        capacity: pipeline.budget.capacity(),
        headroom: pipeline.headroom,
    };
    let kubernetes = pipeline.enrichment.then(|| match refused_status() {
        None if telemetry::get(&counters().kubernetes_reachable) == 1 => Kubernetes::Reachable,
        None => Kubernetes::Unreachable,
        Some(status) => Kubernetes::Refused { status },
    });
    health::readiness(output, buffer, kubernetes)
}

/// The status with which the API server refuses the agent's credentials now, if it does.
fn refused_status() -> Option<u16> {
    match telemetry::get(&counters().kubernetes_refused_status) {
        0 => None,
        status => Some(u16::try_from(status).unwrap_or(u16::MAX)),
    }
}

/// The sum of every series of the family `name` (all its label values).
fn family_sum(m: &telemetry::Metrics, name: &str) -> u64 {
    telemetry::Metrics::SERIES
        .iter()
        .filter(|series| series.name == name)
        .map(|series| (series.value)(m))
        .sum()
}

/// `GET /status`: the document `logship status` reads, from the same values as the probes and
/// `/metrics`.
async fn status_document(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_string(&status_of(&shared)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the status failed: {e}"),
        ),
    }
}

fn status_of(shared: &Shared) -> Status {
    let m = counters();
    let n = |counter: &std::sync::atomic::AtomicU64| telemetry::get(counter);
    let probe = |v: health::Verdict| status::Probe {
        ok: v.ok,
        reason: v.reason,
    };
    let pipeline = shared.pipeline();
    let latency = telemetry::bulk_latency().snapshot();
    let p99 = latency.quantile_bound(0.99);
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        ready: probe(readiness(shared)),
        live: probe(liveness(shared)),
        files_followed: n(&m.files_current),
        records: status::Records {
            read: n(&m.records_read),
            sent: n(&m.records_sent),
            dead_lettered: n(&m.dead_lettered),
            dropped: family_sum(m, "logship_dropped_records"),
        },
        retries: status::Retries {
            requests: n(&m.es_request_retries),
            records: n(&m.es_items_retried),
        },
        buffer: status::Buffer {
            used_bytes: pipeline.budget.used() as u64,
            capacity_bytes: pipeline.budget.capacity() as u64,
        },
        bulk: status::Bulk {
            attempts: latency.count,
            mean_seconds: (latency.count > 0).then(|| latency.sum / latency.count as f64),
            p99_under_seconds: p99.filter(|b| b.is_finite()),
            p99_beyond_last_bucket: p99.is_some_and(|b| b.is_infinite()),
            answers: status::Answers {
                success: n(&m.es_responses_2xx),
                client_error: n(&m.es_responses_4xx),
                server_error: n(&m.es_responses_5xx),
                none: n(&m.es_transport_errors),
            },
        },
        kubernetes: pipeline.enrichment.then(|| status::Kubernetes {
            reachable: n(&m.kubernetes_reachable) == 1,
            refused_status: refused_status(),
            cached_pods: n(&m.kubernetes_cached_pods),
            failed_requests: n(&m.kubernetes_watch_errors),
            refused: family_sum(m, "logship_kubernetes_refused"),
        }),
    }
}

fn verdict(v: health::Verdict) -> Response {
    let status = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    plain(status, v.reason)
}

fn plain(status: StatusCode, mut text: String) -> Response {
    text.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}
