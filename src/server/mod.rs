//! The HTTP endpoint on `server.listen`: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! the kubelet, and what `logship status` reads.
//!
//! - `metrics`: the registry and its text encoding.
//! - `health`: liveness and readiness, decided from plain values.
//!
//! [`Server::start`] binds synchronously, so an address that cannot be bound is a start error
//! (exit 70) before any stage runs, then serves on a task of the agent's runtime. It is started
//! after the configuration is validated and the positions are loaded, and stopped last, after the
//! drain, so the probes and metrics keep answering while the agent shuts down. Answers are
//! computed at request time from the telemetry and the buffer; the endpoint never touches the
//! pipeline, so a scrape cannot slow or block it.

pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
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
use health::{BufferUse, Output};

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

/// The running endpoint.
pub struct Server {
    /// The address bound (with the port the system chose, for port 0).
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What the handlers read.
struct Shared {
    registry: Registry,
    budget: Budget,
    /// What one read asks of the budget: with less left, the buffer is full (readiness).
    headroom: usize,
    local_output: bool,
    /// Kubernetes enrichment is on (its API's state is part of the readiness answer).
    enrichment: bool,
    started: Instant,
}

impl Server {
    /// Binds `settings.server.listen` and serves on the current tokio runtime. `budget` is the
    /// agent's buffer, for its gauges and readiness.
    pub fn start(settings: &Settings, budget: &Budget) -> Result<Server, ServerError> {
        let addr = settings.server.listen;
        let bind_error = |source| ServerError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = std_listener.local_addr().map_err(bind_error)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_error)?;
        let shared = Arc::new(Shared {
            registry: metrics::registry(budget.clone()),
            budget: budget.clone(),
            headroom: settings.tail.read_budget.max(settings.tail.max_line_bytes),
            local_output: LocalOutput::of(&settings.output).is_ok(),
            enrichment: settings.kubernetes.is_some(),
            started: Instant::now(),
        });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, router(shared))
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "The HTTP endpoint failed; metrics and probes are unavailable.");
            }
        });
        tracing::info!(addr = %bound, "Serving /metrics, /healthz and /readyz.");
        Ok(Server {
            addr: bound,
            stop,
            task,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
    let output = if shared.local_output {
        Output::Local
    } else {
        Output::Elasticsearch {
            reachable: telemetry::get(&counters().es_cluster_reachable) == 1,
        }
    };
    let buffer = BufferUse {
        used: shared.budget.used(),
        capacity: shared.budget.capacity(),
        headroom: shared.headroom,
    };
    let kubernetes = shared
        .enrichment
        .then(|| telemetry::get(&counters().kubernetes_reachable) == 1);
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
