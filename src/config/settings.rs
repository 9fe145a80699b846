//! The validated configuration: typed values only, built by `validate()` from the raw file.
//! Nothing here can be constructed from unchecked input except through validation (and tests).

use std::path::PathBuf;
use std::time::Duration;

use globset::GlobSet;
use serde::{Deserialize, Serialize};

use crate::parse::{FormatChoice, Oversize};

/// Everything the agent needs to run, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory for the positions file (and later the dead letters).
    pub data_dir: PathBuf,
    /// `host.name` of every record: the config, else `NODE_NAME`, else the hostname.
    pub node_name: String,
    /// How long SIGTERM/SIGINT may take to drain before the agent gives up and exits.
    pub shutdown_timeout: Duration,
    pub log: LogSettings,
    pub tail: TailSettings,
    /// The multiline rules, and the one files join with by default.
    pub multiline: crate::parse::multiline::Multiline,
    pub positions: PositionsSettings,
    pub buffer: BufferSettings,
    pub output: OutputSettings,
    /// Pod metadata from the Kubernetes API; `None` when enrichment is off.
    pub kubernetes: Option<crate::enrich::KubernetesSettings>,
    /// The documents' field names (`kubernetes.schema`), with or without enrichment.
    pub schema: crate::enrich::metadata::Schema,
    pub server: ServerSettings,
    /// Per-container rate limits.
    pub rate_limit: crate::buffer::rate_limit::RateLimitSettings,
    /// Structured messages, filters and per-pod hints.
    pub processing: crate::process::ProcessingSettings,
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    /// A tracing filter directive (`info`, `logship=debug`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

/// How the agent's own log lines are written (on standard error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for a log pipeline to parse.
    Json,
}

/// Where files at start-up with no stored position are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// From the first byte: nothing already written is missed.
    Head,
    /// From the end: only lines written after the agent started.
    Tail,
}

#[derive(Clone, Debug)]
pub struct TailSettings {
    /// Include patterns as written, for display and to find the directories to watch.
    pub include: Vec<String>,
    /// Exclude patterns as written.
    pub exclude: Vec<String>,
    /// `include` compiled.
    pub include_set: GlobSet,
    /// `exclude` compiled.
    pub exclude_set: GlobSet,
    pub read_from: ReadFrom,
    pub format: FormatChoice,
    /// Longest line (or reassembled message) shipped as one record.
    pub max_line_bytes: usize,
    pub oversize: Oversize,
    /// Bytes read from one file before the reader moves to the next (fairness).
    pub read_budget: usize,
    /// How often idle files are checked for new data.
    pub poll_interval: Duration,
    /// How often the include globs are expanded again, as a safety net for missed events.
    pub rescan_interval: Duration,
    /// How long a rotated or deleted file stays open after its end was reached.
    pub rotate_wait: Duration,
    /// Deleted files kept open to be read to their end, at most…
    pub max_deleted_files: usize,
    /// …and their bytes at most, all together; past either, the oldest is let go unread.
    pub max_deleted_bytes: u64,
    /// Names of a file's rotated generations, validated (see `tail::generations`).
    pub rotated_patterns: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct PositionsSettings {
    /// How often the positions file is written (also at shutdown).
    pub flush_interval: Duration,
    /// How long the position of a file that is gone is kept.
    pub gc_after: Duration,
}

#[derive(Clone, Debug)]
pub struct BufferSettings {
    /// Bytes of records held between reading and acknowledgement.
    pub max_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where the HTTP endpoint listens; port 0 lets the system choose.
    pub listen: std::net::SocketAddr,
}

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
