//! The validated configuration: typed values only, built by `validate()` from the raw file.
//! Nothing here can be constructed from unchecked input except through validation (and tests).

use std::path::PathBuf;
use std::time::Duration;

pub use crate::sink::OutputSettings;
pub use crate::tail::settings::{ReadFrom, TailSettings};
pub use crate::telemetry::{LogFormat, LogSettings};

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
    /// The systemd journal; `None` when it is not read.
    pub journald: Option<crate::journald::JournaldSettings>,
}

#[derive(Clone, Debug)]
pub struct PositionsSettings {
    /// How often the positions file is written (also at shutdown).
    pub flush_interval: Duration,
    /// How long the position of a file that is gone is kept.
    pub gc_after: Duration,
    /// Other agents' positions imported at a start without a positions file.
    pub import_from: Vec<crate::import::Source>,
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
