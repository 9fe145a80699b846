//! Sinks: where batches go, and where acknowledgements come from.
//!
//! Every sink runs the same loop: take the batches that are waiting (up to a bound), encode their
//! records as NDJSON into one reused buffer, write it, and only once the write succeeded
//! acknowledge each batch's range to the positions table and drop the batch (returning its
//! memory budget). A failed write is retried with backoff and never acknowledged, so a sink that
//! cannot write makes the readers wait instead of losing records.
//!
//! The local sinks live here (`stdout`, `file`, `blackhole`); the Elasticsearch sink arrives with
//! its own module.

pub mod elasticsearch;
pub mod file;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::Receiver;

use crate::ack::Acks;
use crate::document::Encoder;
use crate::record::Batch;
use crate::telemetry::{self, metrics};

/// Where records go.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputSettings {
    /// NDJSON on standard output.
    Stdout,
    /// NDJSON appended to a file; acknowledged after each flush (and fsync if asked).
    File { path: PathBuf, fsync: bool },
    /// Encoded and counted, then discarded: for benchmarks and dry runs.
    Blackhole,
    /// Bulk requests to Elasticsearch or OpenSearch.
    Elasticsearch(Box<crate::sink::elasticsearch::ElasticsearchSettings>),
}

/// How many waiting batches one write takes at most: large enough to amortise the system call,
/// small enough that acknowledgements flow steadily.
const BATCHES_PER_WRITE: usize = 64;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The destination of one local sink.
enum Destination {
    Stdout(tokio::io::Stdout),
    File(file::FileOutput),
    Blackhole,
}

impl Destination {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::Stdout(out) => {
                out.write_all(bytes).await?;
                out.flush().await
            }
            Destination::File(out) => out.write(bytes).await,
            Destination::Blackhole => Ok(()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Destination::Stdout(_) => "stdout",
            Destination::File(_) => "file",
            Destination::Blackhole => "blackhole",
        }
    }
}

/// The local outputs, as [`run_local`] takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalOutput {
    Stdout,
    File {
        path: std::path::PathBuf,
        fsync: bool,
    },
    Blackhole,
}

impl LocalOutput {
    /// The local output `output` names, or the Elasticsearch settings if it names none.
    pub fn of(
        output: &OutputSettings,
    ) -> Result<LocalOutput, &elasticsearch::ElasticsearchSettings> {
        match output {
            OutputSettings::Stdout => Ok(LocalOutput::Stdout),
            OutputSettings::File { path, fsync } => Ok(LocalOutput::File {
                path: path.clone(),
                fsync: *fsync,
            }),
            OutputSettings::Blackhole => Ok(LocalOutput::Blackhole),
            OutputSettings::Elasticsearch(es) => Err(es),
        }
    }
}

/// Runs a local sink until the batch channel closes and every batch received is written and
/// acknowledged.
pub async fn run_local(
    output: LocalOutput,
    mut batches: Receiver<Batch>,
    acks: Acks,
    encoder: Arc<Encoder>,
) {
    let mut destination = match output {
        LocalOutput::Stdout => Destination::Stdout(tokio::io::stdout()),
        LocalOutput::File { path, fsync } => Destination::File(file::FileOutput::new(path, fsync)),
        LocalOutput::Blackhole => Destination::Blackhole,
    };
    let mut waiting = Vec::with_capacity(BATCHES_PER_WRITE);
    let mut buf = Vec::new();
    loop {
        telemetry::beat(telemetry::Loop::Sink);
        // Wake at least every heartbeat period, idle or not, to show the sink is alive.
        let received = tokio::time::timeout(
            telemetry::HEARTBEAT_PERIOD,
            batches.recv_many(&mut waiting, BATCHES_PER_WRITE),
        );
        match received.await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        buf.clear();
        let mut records = 0u64;
        for batch in &waiting {
            for index in 0..batch.records.len() {
                encoder.encode(batch, index, &mut buf);
                buf.push(b'\n');
            }
            records += batch.records.len() as u64;
        }
        let mut backoff = BACKOFF_START;
        while let Err(e) = destination.write(&buf).await {
            // Retrying is turning (liveness): a restart would not make the output writable.
            telemetry::beat(telemetry::Loop::Sink);
            telemetry::add(&metrics().sink_errors, 1);
            tracing::error!(sink = destination.name(), error = %e, retry_in = ?backoff, "Writing records failed; retrying, readers wait meanwhile.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        telemetry::add(&metrics().records_sent, records);
        telemetry::add(&metrics().bytes_sent, buf.len() as u64);
        for batch in waiting.drain(..) {
            batch.acknowledge(acks.as_ref());
        }
        if buf.capacity() > 16 << 20 {
            buf = Vec::new();
        }
    }
}
