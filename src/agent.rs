//! Wiring: builds the stages from validated settings, runs them, and drains them on shutdown.
//!
//! ```text
//!  tailer thread ──batches──► sink task ──acks──► positions ◄── flusher task ──► positions.json
//!  (discover, read, parse)    (encode, write)                   (interval, final)
//! ```
//!
//! Shutdown is a protocol: the stop token tells the tailer to stop reading;
//! the tailer drops its end of the batch channel; the sink writes and acknowledges what is still
//! queued and ends when the channel is empty; the flusher writes the positions one last time.
//! All of it under `shutdown_timeout`: whatever is not acknowledged by then is read again at the
//! next start, never lost.
//!
//! A reload (`crate::reload`) is the same drain followed by [`Agent::prepare_take_over`]: the new agent
//! starts from the drained agent's positions (from memory) and adopts the files it was still
//! finishing after rotation, so nothing is read twice (positions) and nothing is skipped (only
//! acknowledged bytes are behind a position). Everything that can fail is built before any
//! stage runs, so a failed start leaves nothing behind and the handover can be used again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobSet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::buffer::Budget;
use crate::config::Settings;
use crate::document::Encoder;
use crate::enrich;
use crate::journald::{Journald, JournaldParts};
use crate::sink::elasticsearch::{ElasticsearchSink, SinkError};
use crate::sink::LocalOutput;
use crate::tail::positions::{self, Positions, PositionsError, PositionsFile};
use crate::tail::{Orphan, StartPolicy, Tailer, TailerParts};
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
    /// Another agent's positions cannot be imported (`positions.import_from`).
    #[error("importing positions: {0}")]
    Import(#[from] crate::import::ImportError),
    /// The tailer's (or the journal reader's) thread cannot be started.
    #[error("starting a reader thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running agent: the pipeline from the files to the output, and its positions.
pub struct Agent {
    positions: Positions,
    /// The memory budget between reading and acknowledgement (the endpoint reports it).
    budget: Budget,
    stop_reading: CancellationToken,
    wake_tailer: std::sync::mpsc::SyncSender<()>,
    /// Taken once it completed (a finished receiver or handle must not be polled again). The
    /// tailer answers with the files it leaves unfinished.
    tailer_done: Option<oneshot::Receiver<Vec<Orphan>>>,
    sink: Option<JoinHandle<()>>,
    /// The journal reader, when the journal is read: completes when its thread ends.
    journald_done: Option<oneshot::Receiver<()>>,
    flusher_stop: CancellationToken,
    flusher: JoinHandle<()>,
    /// Stops the Kubernetes watch tasks, if enrichment is on.
    enrich_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// The patterns followed, for a successor (see [`StartPolicy::Reload`]).
    include: GlobSet,
    exclude: GlobSet,
}

/// What a drained agent leaves to the agent that replaces it at a reload: where every file
/// stands, and the files only an open descriptor still reaches.
pub struct Handover {
    /// The positions table as the drain left it: taken from memory, so that a final write to
    /// disk that failed does not send the successor back to older positions.
    positions: PositionsFile,
    orphans: Vec<Orphan>,
    include: GlobSet,
    exclude: GlobSet,
}

/// Where an agent starts from.
enum Origin {
    /// The positions file in `data_dir`: a process start.
    Disk,
    /// A drained predecessor: a reload.
    Handover(Handover),
}

/// An agent built and not running yet: everything that can fail is done (positions loaded,
/// clients and sink built, the tailer's thread started), nothing reads yet.
pub struct Prepared {
    settings: Settings,
    positions: Positions,
    start_policy: StartPolicy,
    orphans: Vec<Orphan>,
    kube_client: Option<enrich::watch::ApiClient>,
    es_sink: Option<ElasticsearchSink>,
    /// The tailer's thread waits on this for its work.
    tailer_tx: std::sync::mpsc::SyncSender<Tailer>,
    tailer_done: oneshot::Receiver<Vec<Orphan>>,
    /// The journal reader's thread, started when the journal is read, waits on this.
    journald: Option<(std::sync::mpsc::SyncSender<Journald>, oneshot::Receiver<()>)>,
    budget: Budget,
}

impl Agent {
    /// Loads positions from `data_dir` and starts every stage. Must be called inside a tokio
    /// runtime.
    pub async fn start(settings: Settings) -> Result<Agent, AgentError> {
        Ok(Agent::prepare(settings).await?.run())
    }

    /// Builds an agent that starts from the positions file in `data_dir` (a process start).
    pub async fn prepare(settings: Settings) -> Result<Prepared, AgentError> {
        Agent::build(settings, Origin::Disk)
            .await
            .map_err(|(e, _)| e)
    }

    /// Builds an agent that continues where a drained one stopped (a reload).
    /// `settings.data_dir` must be the predecessor's. On failure the handover comes back
    /// untouched, for another attempt.
    pub async fn prepare_take_over(
        settings: Settings,
        handover: Handover,
    ) -> Result<Prepared, (AgentError, Handover)> {
        match Agent::build(settings, Origin::Handover(handover)).await {
            Ok(prepared) => Ok(prepared),
            Err((e, Origin::Handover(handover))) => Err((e, handover)),
            Err((_, Origin::Disk)) => unreachable!("build returns the origin it was given"),
        }
    }

    /// Does everything that can fail, spawning no stage, so that a failure leaves nothing
    /// running and gives the origin back.
    async fn build(settings: Settings, origin: Origin) -> Result<Prepared, (AgentError, Origin)> {
        let data_dir = settings.data_dir.clone();
        if let Err(source) = std::fs::create_dir_all(&data_dir) {
            let path = data_dir.clone();
            return Err((AgentError::DataDir { path, source }, origin));
        }
        let kube_client = match &settings.kubernetes {
            None => None,
            Some(k) => match enrich::watch::client(&k.access).await {
                Ok(client) => Some(client),
                Err(e) => return Err((e.into(), origin)),
            },
        };
        let es_sink = match LocalOutput::of(&settings.output) {
            Ok(_) => None,
            Err(es) => match ElasticsearchSink::build(es.clone(), &settings.node_name) {
                Ok(sink) => Some(sink),
                Err(e) => return Err((e.into(), origin)),
            },
        };
        // The thread is started before it has work: if it cannot be, nothing was handed to it.
        // Dropping the sender (a later failure, a `Prepared` never run) ends it.
        let (tailer_tx, tailer_rx) = std::sync::mpsc::sync_channel::<Tailer>(1);
        let (done_tx, tailer_done) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("logship-tailer".into())
            .spawn(move || {
                if let Ok(tailer) = tailer_rx.recv() {
                    let _ = done_tx.send(tailer.run());
                }
            });
        if let Err(e) = spawned {
            return Err((AgentError::Thread(e), origin));
        }
        let journald = match &settings.journald {
            None => None,
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Journald>(1);
                let (done_tx, done) = oneshot::channel();
                let spawned = std::thread::Builder::new()
                    .name("logship-journald".into())
                    .spawn(move || {
                        if let Ok(reader) = rx.recv() {
                            reader.run();
                            let _ = done_tx.send(());
                        }
                    });
                if let Err(e) = spawned {
                    return Err((AgentError::Thread(e), origin));
                }
                Some((tx, done))
            }
        };
        let (positions, start_policy, orphans) = match origin {
            Origin::Disk => {
                match load_positions(&data_dir, &settings.positions.import_from, &settings.tail) {
                    Ok((positions, policy)) => (positions, policy, Vec::new()),
                    Err(e) => return Err((e, Origin::Disk)),
                }
            }
            Origin::Handover(h) => (
                Positions::from_file(h.positions),
                StartPolicy::Reload {
                    include: h.include,
                    exclude: h.exclude,
                },
                h.orphans,
            ),
        };
        let budget = Budget::new(settings.buffer.max_bytes);
        Ok(Prepared {
            settings,
            positions,
            start_policy,
            orphans,
            kube_client,
            es_sink,
            tailer_tx,
            tailer_done,
            journald,
            budget,
        })
    }
}

impl Prepared {
    /// The memory budget the agent will use.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Spawns every stage. Cannot fail: what could was done when it was prepared.
    pub fn run(self) -> Agent {
        // The rest of `self` is used once each, below.
        let (settings, positions, budget) = (self.settings, self.positions, self.budget);
        let encoder = Arc::new(
            Encoder::with_schema(&settings.node_name, settings.schema).with_processing(
                settings.processing.names.target.as_deref(),
                &settings.processing.statics,
            ),
        );
        let (batch_tx, batch_rx) = mpsc::channel(CHANNEL_BATCHES);
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let stop_reading = CancellationToken::new();
        let enrich_stop = CancellationToken::new();
        let enricher = match (self.kube_client, &settings.kubernetes) {
            (Some(client), Some(k)) => {
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
            _ => None,
        };
        let journald_done = match (self.journald, &settings.journald) {
            (Some((tx, done)), Some(j)) => {
                let reader = Journald::new(JournaldParts {
                    settings: j.clone(),
                    cursors: Arc::new(JournalCursors(positions.clone())),
                    encoder: Arc::clone(&encoder),
                    budget: budget.clone(),
                    out: batch_tx.clone(),
                    stop: stop_reading.clone(),
                    node_name: settings.node_name.clone(),
                    processing: settings.processing.clone(),
                });
                let _ = tx.send(reader);
                Some(done)
            }
            _ => None,
        };
        let tailer = Tailer::new(TailerParts {
            settings: settings.tail.clone(),
            positions: positions.clone(),
            encoder: Arc::clone(&encoder),
            budget: budget.clone(),
            out: batch_tx,
            stop: stop_reading.clone(),
            wake: (wake_tx.clone(), wake_rx),
            start_policy: self.start_policy,
            node_name: settings.node_name.clone(),
            enricher,
            rate_limit: settings.rate_limit.clone(),
            orphans: self.orphans,
            multiline: settings.multiline.clone(),
            processing: settings.processing.clone(),
        });
        // The thread waits for exactly this message. Were it gone, `tailer_done` reports the
        // tailer stopped and the agent shuts down.
        let _ = self.tailer_tx.send(tailer);

        let acks: crate::ack::Acks = Arc::new(positions.clone());
        let sink = match self.es_sink {
            Some(sink) => tokio::spawn(sink.run(batch_rx, acks, encoder, budget.clone())),
            None => {
                let local = LocalOutput::of(&settings.output)
                    .expect("prepared without an Elasticsearch sink: the output is local");
                tokio::spawn(crate::sink::run_local(local, batch_rx, acks, encoder))
            }
        };
        let flusher_stop = CancellationToken::new();
        let flusher = tokio::spawn(flush_positions(
            positions.clone(),
            settings.data_dir.clone(),
            settings.positions.flush_interval,
            settings.positions.gc_after,
            flusher_stop.clone(),
        ));
        Agent {
            positions,
            budget,
            stop_reading,
            wake_tailer: wake_tx,
            tailer_done: Some(self.tailer_done),
            sink: Some(sink),
            journald_done,
            flusher_stop,
            flusher,
            enrich_stop,
            shutdown_timeout: settings.shutdown_timeout,
            include: settings.tail.include_set.clone(),
            exclude: settings.tail.exclude_set.clone(),
        }
    }
}

impl Agent {
    /// The positions table (for tests and status).
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// The memory budget between reading and acknowledgement.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Completes when a stage stops on its own, which only a bug or a panic does; the agent
    /// must then be shut down. Never completes otherwise (cancel-safe: call it again).
    pub async fn failed(&mut self) {
        let (Some(sink), Some(tailer_done)) = (self.sink.as_mut(), self.tailer_done.as_mut())
        else {
            return;
        };
        tokio::select! {
            _ = sink => {
                tracing::error!("The sink stopped unexpectedly; shutting down.");
                self.sink = None;
            }
            _ = tailer_done => {
                tracing::error!("The tailer stopped unexpectedly; shutting down.");
                self.tailer_done = None;
            }
            _ = async {
                match self.journald_done.as_mut() {
                    Some(done) => {
                        let _ = done.await;
                    }
                    None => std::future::pending().await,
                }
            } => {
                tracing::error!("The journal reader stopped unexpectedly; shutting down.");
                self.journald_done = None;
            }
        }
    }

    /// Stops reading, drains the sink, writes positions; gives up waiting after the timeout.
    /// Returns what a successor needs to continue exactly where this agent stopped: once this
    /// returns, no stage of this agent reads, writes or acknowledges anything any more.
    pub async fn shutdown(self) -> Handover {
        let Agent {
            positions,
            stop_reading,
            wake_tailer,
            mut tailer_done,
            mut sink,
            flusher_stop,
            mut flusher,
            enrich_stop,
            shutdown_timeout,
            include,
            exclude,
            ..
        } = self;
        tracing::info!(timeout = ?shutdown_timeout, "Draining records in flight.");
        stop_reading.cancel();
        let _ = wake_tailer.try_send(());
        // Keep a margin of the grace period for the final positions write.
        let drain_for = shutdown_timeout.saturating_sub(shutdown_timeout / 5);
        let mut orphans = Vec::new();
        let drained = tokio::time::timeout(drain_for, async {
            if let Some(done) = tailer_done.as_mut() {
                orphans = done.await.unwrap_or_default();
                tailer_done = None;
            }
            if let Some(handle) = sink.as_mut() {
                let _ = handle.await;
                sink = None;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = ?drain_for, "Drain timeout reached before the sink drained; unacknowledged records will be read again.");
            // Nothing may acknowledge behind the successor's back: the sink ends now, and with
            // its channel closed the tailer ends at its next send.
            if let Some(handle) = sink {
                handle.abort();
                let _ = handle.await;
            }
            if let Some(done) = tailer_done {
                match tokio::time::timeout(Duration::from_secs(1), done).await {
                    Ok(Ok(left)) => orphans = left,
                    _ => tracing::warn!("The tailer did not stop (a read hangs?); files it was finishing after rotation are read again only if found by name."),
                }
            }
        }
        flusher_stop.cancel();
        enrich_stop.cancel();
        if tokio::time::timeout(shutdown_timeout / 5, &mut flusher)
            .await
            .is_err()
        {
            flusher.abort();
        }
        tracing::info!(
            records_sent = telemetry::get(&metrics().records_sent),
            "Stopped."
        );
        Handover {
            positions: positions.snapshot(),
            orphans,
            include,
            exclude,
        }
    }
}

/// Reads the positions table. An unreadable one is moved aside and every file found at start-up
/// is then read from its head: re-shipping is safe (document ids are idempotent), skipping is not.
fn load_positions(
    data_dir: &std::path::Path,
    import_from: &[crate::import::Source],
    tail: &crate::tail::TailSettings,
) -> Result<(Positions, StartPolicy), AgentError> {
    match positions::load(data_dir) {
        Ok(positions::Loaded::Missing) if !import_from.is_empty() => {
            // A switch from another agent: its positions, once (README, "Switching from ...").
            let (table, report) = crate::import::run(import_from, tail, true)?;
            for (source, what, why) in &report.unmatched {
                tracing::warn!(source = %source, entry = %what, reason = %why, "Imported position not used; its file, if any, is read as tail.read_from says.");
            }
            tracing::info!(
                sources = %import_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                files_matched = report.matched.len(),
                bytes_skipped = report.bytes_skipped,
                entries_not_matched = report.unmatched.len(),
                "Imported positions: {}.",
                report.summary()
            );
            Ok((Positions::from_file(table), StartPolicy::Configured))
        }
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

/// The journal reader's positions are entries of the one positions table (`tail::positions`).
struct JournalCursors(Positions);

impl crate::journald::Cursors for JournalCursors {
    fn lookup(&self, file_id: &str) -> Option<crate::journald::Stored> {
        self.0
            .journal_lookup(file_id)
            .map(|r| crate::journald::Stored {
                acked: r.acked,
                seqnum: r.seqnum,
                entries: r.entries,
            })
    }

    fn known(&self) -> bool {
        self.0.journal_known()
    }

    fn register(
        &self,
        key: crate::ack::FileKey,
        file_id: &str,
        path: &std::path::Path,
        seqnum_id: &str,
        from: crate::journald::Stored,
    ) {
        self.0.journal_register(
            key,
            file_id,
            path,
            seqnum_id,
            positions::JournalResume {
                acked: from.acked,
                seqnum: from.seqnum,
                entries: from.entries,
            },
        );
    }

    fn seen(&self, key: crate::ack::FileKey, path: &std::path::Path, entries: u64) {
        self.0.journal_seen(key, path, entries);
    }

    fn seqnum(&self, key: crate::ack::FileKey, end: u64, seqnum: u64) {
        self.0.journal_seqnum(key, end, seqnum);
    }

    fn release(&self, key: crate::ack::FileKey) {
        self.0.journal_release(key);
    }

    fn prune(
        &self,
        existing: &std::collections::HashSet<String>,
    ) -> Vec<(std::path::PathBuf, u64)> {
        self.0.journal_prune(existing)
    }

    fn ack(&self, token: crate::ack::AckToken) {
        self.0.ack(token);
    }
}
