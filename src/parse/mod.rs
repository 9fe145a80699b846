//! Parsing: physical lines of a log file -> records.
//!
//! Formats: CRI (containerd, CRI-O), docker json-file, and raw lines for plain VM logs. The
//! format is set in the config or detected from a file's first line.

use serde::{Deserialize, Serialize};

/// The `tail.format` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FormatChoice {
    /// Detect per file from its first line.
    #[default]
    Auto,
    Cri,
    Docker,
    Raw,
}

/// What to do with a line (or a reassembled message) longer than `max_line_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Ship it as several records of at most `max_line_bytes` each: nothing is lost.
    #[default]
    Split,
    /// Ship the first `max_line_bytes` and discard the rest, counted.
    Truncate,
}
