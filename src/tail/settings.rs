//! What the tailer is built from: the `tail` section of the configuration, validated by `config`.

use std::time::Duration;

use globset::GlobSet;
use serde::{Deserialize, Serialize};

use crate::parse::{FormatChoice, Oversize};

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
