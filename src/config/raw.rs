//! The configuration as a user writes it: the serde structs that every layer (defaults, file,
//! environment, flags) is read into, one doc comment per key as its documentation.
//!
//! Every key has a default here (a DaemonSet's), and that is what makes a key known: `schema`
//! takes the set of keys, and each key's type in the environment, from `RawConfig::default()`.
//! Types are what a user writes: sizes and durations as text, paths and globs as strings, enums
//! by name. Nothing here checks a range or a rule between keys; that is `validate`'s, which
//! turns a `RawConfig` into `Settings`.

use serde::{Deserialize, Serialize};

use super::units::{HumanDuration, Size};
use super::{LogFormat, ReadFrom};
use crate::parse::{FormatChoice, Oversize};

/// The whole file. Scalars first, then one table per concern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory for the positions file (and later the dead letters). It must survive restarts
    /// of the agent: on Kubernetes, a hostPath volume.
    pub data_dir: String,
    /// `host.name` of every record. Empty: the `NODE_NAME` environment variable (set it from the
    /// downward API, `spec.nodeName`), else the machine's hostname.
    pub node_name: String,
    /// How long SIGTERM or SIGINT may take to drain (flush, wait for acknowledgements, write
    /// positions) before the agent exits anyway. Keep it below the pod's
    /// `terminationGracePeriodSeconds` (30s by default), or the kubelet kills the drain.
    pub shutdown_timeout: HumanDuration,
    /// The agent's own logs.
    pub log: RawLog,
    /// Which files are followed and how they are read.
    pub tail: RawTail,
    /// The positions file.
    pub positions: RawPositions,
    /// The memory between reading and acknowledgement.
    pub buffer: RawBuffer,
    /// Where records go.
    pub output: RawOutput,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: "/var/lib/logship".into(),
            node_name: String::new(),
            shutdown_timeout: HumanDuration::secs(25),
            log: RawLog::default(),
            tail: RawTail::default(),
            positions: RawPositions::default(),
            buffer: RawBuffer::default(),
            output: RawOutput::default(),
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Which of the agent's own events are logged, as a tracing filter: a level (`error`,
    /// `warn`, `info`, `debug`, `trace`, `off`) or directives (`info,logship::tail=debug`).
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    /// `text` (one readable line per event) or `json` (one object per event).
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[tail]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTail {
    /// Absolute glob patterns of the files to follow: `*`, `?`, `[a-z]`, `{a,b}`, and `**` for
    /// any number of directories. `*` does not cross a `/`. At least one.
    pub include: Vec<String>,
    /// Absolute glob patterns of files not to follow even though an include pattern matches
    /// (the agent's own log, say). `/**/` matches in any directory.
    pub exclude: Vec<String>,
    /// Where files found at start-up with no stored position are read from: `head` (nothing
    /// already written is missed) or `tail` (only new lines). Files that appear later are always
    /// read from their head.
    pub read_from: ReadFrom,
    /// The format of the files: `auto` (detected per file from its first line), `cri`
    /// (containerd, CRI-O), `docker` (json-file) or `raw` (plain lines).
    pub format: FormatChoice,
    /// The longest line (or reassembled message) shipped as one record; also the most of one
    /// line ever held in memory. 1KiB to 64MiB.
    pub max_line_bytes: Size,
    /// What happens to a longer line: `split` into several records (nothing is lost) or
    /// `truncate` (the rest is discarded and counted).
    pub oversize_lines: Oversize,
    /// How much is read from one file before the next file gets its turn: a file with a large
    /// backlog delays another file's new line by at most this much. 4KiB to 64MiB.
    pub read_budget: Size,
    /// How often idle files are checked for new data (one `fstat` each). 10ms to 10s.
    pub poll_interval: HumanDuration,
    /// How often the include patterns are expanded again, as a safety net for file events the
    /// kernel dropped. At least 100ms.
    pub rescan_interval: HumanDuration,
    /// How long a rotated or deleted file stays open after its end was reached and it went
    /// quiet, for a writer that still had it open.
    pub rotate_wait: HumanDuration,
}

impl Default for RawTail {
    fn default() -> Self {
        RawTail {
            include: vec!["/var/log/containers/*.log".into()],
            exclude: Vec::new(),
            read_from: ReadFrom::Head,
            format: FormatChoice::Auto,
            max_line_bytes: Size::kib(256),
            oversize_lines: Oversize::Split,
            read_budget: Size::kib(256),
            poll_interval: HumanDuration::millis(250),
            rescan_interval: HumanDuration::secs(10),
            rotate_wait: HumanDuration::secs(5),
        }
    }
}

/// `[positions]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPositions {
    /// How often acknowledged positions are written to `<data_dir>/positions.json` (also at
    /// shutdown). After a crash, at most this much is shipped again. At least 10ms.
    pub flush_interval: HumanDuration,
    /// How long the position of a file that is no longer followed is kept, in case it comes back.
    pub gc_after: HumanDuration,
}

impl Default for RawPositions {
    fn default() -> Self {
        RawPositions {
            flush_interval: HumanDuration::secs(1),
            gc_after: HumanDuration::secs(24 * 3600),
        }
    }
}

/// `[buffer]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    /// Bytes of records held between reading and acknowledgement; when spent, reading waits.
    /// At least twice the larger of `tail.max_line_bytes` and `tail.read_budget`.
    pub max_bytes: Size,
}

impl Default for RawBuffer {
    fn default() -> Self {
        RawBuffer {
            max_bytes: Size::mib(32),
        }
    }
}

/// `[output]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// `stdout` (NDJSON on standard output), `file` (NDJSON appended to `output.file.path`) or
    /// `blackhole` (encoded, counted, discarded: for benchmarks and dry runs).
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// The `file` output; ignored by the others.
    pub file: RawOutputFile,
}

/// The `output.type` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    #[default]
    Stdout,
    File,
    Blackhole,
}

/// `[output.file]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputFile {
    /// The file records are appended to, created (again) if missing. Required when
    /// `output.type = "file"`; empty means not set.
    pub path: String,
    /// Whether every flush is also fsync'ed before it is acknowledged: survives a power loss,
    /// costs a disk round trip per flush.
    pub fsync: bool,
}
