//! Wiring: builds the stages from validated settings, runs them, and drains them on shutdown.
//!
//! ```text
//!  tailer thread ──batches──► sink task ──acks──► positions ◄── flusher task ──► positions.json
//!  (discover, read, parse)    (encode, write)                   (interval, final)
//! ```
//!
//! Shutdown is a protocol (STYLE.md habit 6): the stop token tells the tailer to stop reading;
//! the tailer drops its end of the batch channel; the sink writes and acknowledges what is still
//! queued and ends when the channel is empty; the flusher writes the positions one last time.
//! All of it under `shutdown_timeout`: whatever is not acknowledged by then is read again at the
//! next start, never lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::buffer::Budget;
use crate::config::Settings;
use crate::document::Encoder;
use crate::enrich;
use crate::server::{Server, ServerError};
use crate::sink::elasticsearch::{ElasticsearchSink, SinkError};
use crate::sink::LocalOutput;
use crate::tail::positions::{self, Positions, PositionsError};
use crate::tail::{StartPolicy, Tailer, TailerParts};
use crate::telemetry::{self, metrics};

/// Batches queued between the tailer and the sink at most. The memory budget is the real bound;
/// this only caps the count of tiny batches.
const CHANNEL_BATCHES: usize = 1024;
/// How often positions of files that are gone are collected.
const GC_INTERVAL: Duration = Duration::from_secs(60);

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory cannot be created.
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The positions file cannot be used (and must not be overwritten).
    #[error(transparent)]
    Positions(#[from] PositionsError),
    /// The Elasticsearch sink cannot be built (certificates, credentials, dead-letter store).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The Kubernetes client cannot be configured (in-cluster files, kubeconfig, URL).
    #[error(transparent)]
    Kubernetes(#[from] enrich::watch::WatchError),
    /// The HTTP endpoint cannot listen on `server.listen`.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The tailer thread cannot be started.
    #[error("starting the tailer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running agent.
pub struct Agent {
    positions: Positions,
    stop_reading: CancellationToken,
    wake_tailer: std::sync::mpsc::SyncSender<()>,
    /// Taken once it completed (a finished receiver or handle must not be polled again).
    tailer_done: Option<oneshot::Receiver<()>>,
    sink: Option<JoinHandle<()>>,
    flusher_stop: CancellationToken,
    flusher: JoinHandle<()>,
    /// Stops the Kubernetes watch tasks, if enrichment is on.
    enrich_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// Metrics and probes; stopped after the drain, so that they answer during it.
    server: Server,
}

impl Agent {
    /// Loads positions and starts every stage. Must be called inside a tokio runtime.
    pub async fn start(settings: Settings) -> Result<Agent, AgentError> {
        let data_dir = settings.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let (positions, start_policy) = load_positions(&data_dir)?;
        let encoder = Arc::new(
            Encoder::with_schema(&settings.node_name, settings.schema).with_processing(
                settings.processing.names.target.as_deref(),
                &settings.processing.statics,
            ),
        );
        let budget = Budget::new(settings.buffer.max_bytes);
        let (batch_tx, batch_rx) = mpsc::channel(CHANNEL_BATCHES);
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let stop_reading = CancellationToken::new();
        let enrich_stop = CancellationToken::new();
        let enricher = match &settings.kubernetes {
            None => None,
            Some(k) => {
                let client = enrich::watch::client(&k.access).await?;
                let cache = Arc::new(enrich::Cache::new());
                tracing::info!(node = %k.node_name, access = ?k.access, "Watching this node's pods for Kubernetes metadata.");
                tokio::spawn(enrich::watch::run(
                    client,
                    k.clone(),
                    Arc::clone(&cache),
                    Some(wake_tx.clone()),
                    enrich_stop.clone(),
                ));
                Some(enrich::Enricher {
                    cache,
                    schema: k.schema,
                    wait_for_metadata: k.wait_for_metadata,
                })
            }
        };
        // Before any stage runs: an address that cannot be bound stops the start cleanly.
        let server = Server::start(&settings, &budget)?;

        let tailer = Tailer::new(TailerParts {
            settings: settings.tail.clone(),
            positions: positions.clone(),
            encoder: Arc::clone(&encoder),
            budget,
            out: batch_tx,
            stop: stop_reading.clone(),
            wake: (wake_tx.clone(), wake_rx),
            start_policy,
            node_name: settings.node_name.clone(),
            enricher,
            rate_limit: settings.rate_limit.clone(),
            processing: settings.processing.clone(),
        });
        let (done_tx, tailer_done) = oneshot::channel();
        std::thread::Builder::new()
            .name("logship-tailer".into())
            .spawn(move || {
                tailer.run();
                let _ = done_tx.send(());
            })
            .map_err(AgentError::Thread)?;

        let sink = match LocalOutput::of(&settings.output) {
            Ok(local) => tokio::spawn(crate::sink::run_local(
                local,
                batch_rx,
                positions.clone(),
                encoder,
            )),
            Err(es) => {
                let sink = ElasticsearchSink::build(es.clone(), &settings.node_name)?;
                tokio::spawn(sink.run(batch_rx, positions.clone(), encoder))
            }
        };
        let flusher_stop = CancellationToken::new();
        let flusher = tokio::spawn(flush_positions(
            positions.clone(),
            data_dir,
            settings.positions.flush_interval,
            settings.positions.gc_after,
            flusher_stop.clone(),
        ));
        Ok(Agent {
            positions,
            stop_reading,
            wake_tailer: wake_tx,
            tailer_done: Some(tailer_done),
            sink: Some(sink),
            flusher_stop,
            flusher,
            enrich_stop,
            shutdown_timeout: settings.shutdown_timeout,
            server,
        })
    }

    /// The positions table (for tests and status).
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Runs until `shutdown` is cancelled (or a stage dies), then drains.
    pub async fn run_until(mut self, shutdown: CancellationToken) {
        let (Some(sink), Some(tailer_done)) = (self.sink.as_mut(), self.tailer_done.as_mut())
        else {
            return self.shutdown().await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = sink => {
                tracing::error!("The sink stopped unexpectedly; shutting down.");
                self.sink = None;
            }
            _ = tailer_done => {
                tracing::error!("The tailer stopped unexpectedly; shutting down.");
                self.tailer_done = None;
            }
        }
        self.shutdown().await;
    }

    /// Stops reading, drains the sink, writes positions; gives up waiting after the timeout.
    pub async fn shutdown(self) {
        let Agent {
            stop_reading,
            wake_tailer,
            tailer_done,
            sink,
            flusher_stop,
            flusher,
            enrich_stop,
            shutdown_timeout,
            server,
            ..
        } = self;
        tracing::info!(timeout = ?shutdown_timeout, "Shutting down: draining records in flight.");
        stop_reading.cancel();
        let _ = wake_tailer.try_send(());
        // Keep a margin of the grace period for the final positions write.
        let drain_for = shutdown_timeout.saturating_sub(shutdown_timeout / 5);
        let drained = tokio::time::timeout(drain_for, async {
            if let Some(tailer_done) = tailer_done {
                let _ = tailer_done.await;
            }
            if let Some(sink) = sink {
                let _ = sink.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = ?drain_for, "Shutdown timeout reached before the sink drained; unacknowledged records will be read again at the next start.");
        }
        flusher_stop.cancel();
        enrich_stop.cancel();
        let _ = tokio::time::timeout(shutdown_timeout / 5, flusher).await;
        tracing::info!(
            records_sent = telemetry::get(&metrics().records_sent),
            "Stopped."
        );
        server.stop().await;
    }
}

/// Reads the positions table. An unreadable one is moved aside and every file found at start-up
/// is then read from its head: re-shipping is safe (document ids are idempotent), skipping is not.
fn load_positions(data_dir: &std::path::Path) -> Result<(Positions, StartPolicy), AgentError> {
    match positions::load(data_dir) {
        Ok(positions::Loaded::Missing) => Ok((Positions::new(), StartPolicy::Configured)),
        Ok(positions::Loaded::Table(table)) => {
            tracing::info!(files = table.files.len(), "Loaded positions.");
            Ok((Positions::from_file(table), StartPolicy::Configured))
        }
        Err(e @ PositionsError::Parse { .. }) => {
            let moved = positions::quarantine(data_dir).map_err(|source| PositionsError::Read {
                path: data_dir.join("positions.json"),
                source,
            })?;
            tracing::error!(error = %e, moved_to = %moved.display(), "Positions file unreadable; moved aside, reading every file from its head.");
            Ok((Positions::new(), StartPolicy::Head))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the positions table whenever it changed, every `interval`, and once more when stopped.
async fn flush_positions(
    positions: Positions,
    data_dir: PathBuf,
    interval: Duration,
    gc_after: Duration,
    stop: CancellationToken,
) {
    let mut written = u64::MAX;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc = tokio::time::interval_at(tokio::time::Instant::now() + GC_INTERVAL, GC_INTERVAL);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = ticker.tick() => false,
            _ = gc.tick() => {
                let removed = positions.collect_garbage(gc_after);
                if removed > 0 {
                    tracing::info!(removed, "Forgot the positions of files gone for longer than positions.gc_after.");
                }
                false
            }
        };
        let generation = positions.generation();
        if generation != written {
            let table = positions.snapshot();
            let dir = data_dir.clone();
            let result = tokio::task::spawn_blocking(move || positions::store(&dir, &table)).await;
            match result {
                Ok(Ok(())) => {
                    written = generation;
                    telemetry::add(&metrics().positions_writes, 1);
                }
                Ok(Err(e)) => {
                    telemetry::add(&metrics().positions_write_errors, 1);
                    tracing::error!(error = %e, "Writing positions failed; records may be shipped again after a restart.");
                }
                Err(e) => tracing::error!(error = %e, "Positions writer task failed."),
            }
        }
        if stopping {
            return;
        }
    }
}
