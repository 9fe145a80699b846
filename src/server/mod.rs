//! The HTTP endpoint on `server.listen`: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! the kubelet, and what `logship status` reads.
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
        tracing::info!(%addr, "Serving /metrics, /healthz and /readyz.");
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
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "not found: this endpoint serves /metrics, /healthz and /readyz".into(),
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
    let ages = Loop::ALL.map(|which| (which, telemetry::since_beat(which)));
    verdict(health::liveness(
        &ages,
        shared.started.elapsed(),
        health::LIVENESS_BOUND,
    ))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let pipeline = shared
        .current
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
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
    let kubernetes =
        pipeline.enrichment.then(
            || match telemetry::get(&counters().kubernetes_refused_status) {
                0 if telemetry::get(&counters().kubernetes_reachable) == 1 => Kubernetes::Reachable,
                0 => Kubernetes::Unreachable,
                status => Kubernetes::Refused {
                    status: u16::try_from(status).unwrap_or(u16::MAX),
                },
            },
        );
    verdict(health::readiness(output, buffer, kubernetes))
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
