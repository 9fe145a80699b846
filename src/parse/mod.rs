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

// TEMPORARY stand-in until the parse branch lands: raw lines only.
use crate::record::{Batch, Stream};
use crate::timestamp::Timestamp;
use std::path::Path;
use std::sync::Arc;
pub enum Piece {
    Whole,
    First,
    Middle,
    Last,
}
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub piece: Piece,
    pub offset: u64,
    pub end: u64,
}
pub struct LineParser {
    pending: Option<(u64, Vec<u8>)>,
}
impl LineParser {
    pub fn new(_c: FormatChoice, _m: usize, _o: Oversize, _p: Arc<Path>) -> Self {
        LineParser { pending: None }
    }
    pub fn push(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        match line.piece {
            Piece::Whole => {
                if !line.bytes.is_empty() {
                    out.push(
                        now,
                        Stream::Unknown,
                        &String::from_utf8_lossy(line.bytes),
                        line.offset,
                        line.end,
                    )
                }
            }
            Piece::First | Piece::Middle => {
                out.push(
                    now,
                    Stream::Unknown,
                    &String::from_utf8_lossy(line.bytes),
                    line.offset,
                    line.end,
                );
                let s = self.pending.get_or_insert((line.offset, vec![]));
                s.1.clear();
            }
            Piece::Last => {
                self.pending = None;
                if !line.bytes.is_empty() {
                    out.push(
                        now,
                        Stream::Unknown,
                        &String::from_utf8_lossy(line.bytes),
                        line.offset,
                        line.end,
                    )
                }
            }
        }
    }
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.0)
    }
    pub fn flush(&mut self, _now: Timestamp, _out: &mut Batch) {
        self.pending = None;
    }
}
