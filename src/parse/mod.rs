//! Parsing: physical lines of a log file -> records.
//!
//! Formats: CRI (containerd, CRI-O; `cri`), docker json-file (`docker`), and raw lines for plain
//! VM logs (`raw`). The format is set in the config or, with `auto`, decided per file generation
//! by its first non-empty line: CRI if it parses as CRI, docker if it parses as docker JSON,
//! raw otherwise; it does not change after that.
//!
//! A [`LineParser`] is fed the physical lines of one file generation in file order (by the
//! reader, `tail::reader`) and appends records to the reader's batch. Invariants:
//!
//! - nothing is dropped: a line that does not parse in its format is kept as raw text, invalid
//!   UTF-8 is replaced with U+FFFD, an oversize message is split (or truncated, counted); only
//!   empty lines are skipped, counted;
//! - no message is longer than `max_line_bytes` (in file bytes; replacements can lengthen the
//!   text), and no more than `max_line_bytes` per stream is held pending (`assemble`);
//! - [`LineParser::pending_start`] never lets the ack range pass a byte whose record is not
//!   emitted, and is always the start of a physical line, so what is re-read after a crash
//!   parses as it did the first time;
//! - records are pushed when their message is complete, in file order of that completion;
//! - the hot path (a whole line that is a whole record) does not allocate: text goes straight
//!   into [`Batch::text`], and the pending buffers are reused.
//!
//! Multiline joining (`multiline`), when a rule is set, takes the complete messages of each
//! stream (after partials and splits are reassembled) and joins the lines of one event into one
//! record; an ordinary line still goes straight into the batch. Its open records are pending
//! like partial ones, and [`LineParser::ack_end`] keeps the ack range out of the records it
//! joined across another stream's lines.

mod assemble;
mod cri;
mod docker;
mod json;
pub mod multiline;
mod raw;
mod utf8;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ack::FileKey;
use crate::record::{Batch, IdPrefix, Record, Stream};
use crate::telemetry;
use crate::timestamp::Timestamp;

use assemble::Assembly;
use multiline::{CarriedFrom, Closed, Join, Joiner, MultilineRule};

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

/// Which part of a physical line a [`Line`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A complete physical line.
    Whole,
    /// The first `max_line_bytes` of a longer line.
    First,
    /// The next `max_line_bytes` of it.
    Middle,
    /// The rest of it (possibly empty).
    Last,
}

/// A physical line, or a piece of one, as the reader hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The bytes, never including the newline.
    pub bytes: &'a [u8],
    pub piece: Piece,
    /// File offset of `bytes[0]`.
    pub offset: u64,
    /// File offset just past the piece; for `Whole` and `Last`, past the newline.
    pub end: u64,
}

/// The format a parser settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Cri,
    Docker,
    Raw,
}

/// What every part of the parser needs to know about its file and limits.
#[derive(Debug)]
struct Settings {
    max_line_bytes: usize,
    oversize: Oversize,
    /// For warnings.
    path: Arc<Path>,
}

/// Assembly slots: one per stream, and one for over-long lines kept as raw text.
const STDOUT: usize = 0;
const STDERR: usize = 1;
const RAW: usize = 2;

const fn slot_of(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => STDOUT,
        Stream::Stderr => STDERR,
        Stream::Unknown => RAW,
    }
}

/// Where the pieces of the physical line being handed over go.
#[derive(Clone, Copy, Debug)]
struct PieceTarget {
    slot: usize,
    /// Offset of the line's first piece.
    line: u64,
    /// The `Last` piece completes the record (CRI `F`, raw text); `false` for a CRI `P` line.
    closes: bool,
}

/// Turns the physical lines of one file generation into records.
#[derive(Debug)]
pub struct LineParser {
    /// `None` while `auto` has not seen a non-empty line yet.
    format: Option<Format>,
    settings: Settings,
    /// The record being assembled in each slot ([`STDOUT`], [`STDERR`], [`RAW`]).
    slots: [Assembly; 3],
    /// The physical line whose `Middle` and `Last` pieces are still to come.
    piece: Option<PieceTarget>,
    /// Decoded docker text on its way into an assembly or a join.
    scratch: Vec<u8>,
    /// The multiline rule in force; `None`: every message is a record of its own.
    multiline: Option<Arc<MultilineRule>>,
    /// A rule given by [`LineParser::set_multiline`], applied before the next line.
    switch: Option<Option<Arc<MultilineRule>>>,
    /// The multiline record being joined in each slot (the raw slot only in raw files).
    joins: [Join; 3],
    /// `(start, end)`: a record open at the end of this generation went on into the next one
    /// (see [`LineParser::carry_out`]). Its bytes here, from its start to the end of what was
    /// read, are acknowledged with it, never with this generation's batches.
    carried_away: Option<(u64, u64)>,
}

/// A multiline record open at the end of a rotated generation, on its way into the next
/// generation of the same file, where it goes on (README, Multiline: records cut by a
/// rotation). Made by [`LineParser::carry_out`], taken by [`LineParser::carry_in`].
#[derive(Debug)]
pub struct Carry {
    slot: usize,
    join: Box<Join>,
    from: CarriedFrom,
    rule: Arc<MultilineRule>,
}

/// The join of `slot` and the rule in force, if `slot` joins: stdout and stderr whenever a rule
/// is set, the raw slot only in raw files (a malformed line of another format is kept as it is).
fn joiner<'a>(
    rule: &'a Option<Arc<MultilineRule>>,
    joins: &'a mut [Join; 3],
    format: Option<Format>,
    slot: usize,
    now: Timestamp,
) -> Option<Joiner<'a>> {
    let rule = rule.as_deref()?;
    if slot == RAW && format != Some(Format::Raw) {
        return None;
    }
    Some(Joiner {
        join: &mut joins[slot],
        rule,
        now,
    })
}

impl LineParser {
    pub fn new(
        format: FormatChoice,
        max_line_bytes: usize,
        oversize: Oversize,
        path: Arc<Path>,
    ) -> Self {
        let format = match format {
            FormatChoice::Auto => None,
            FormatChoice::Cri => Some(Format::Cri),
            FormatChoice::Docker => Some(Format::Docker),
            FormatChoice::Raw => Some(Format::Raw),
        };
        LineParser {
            format,
            settings: Settings {
                // The reader cannot work with 0 either; 1 keeps every split making progress.
                max_line_bytes: max_line_bytes.max(1),
                oversize,
                path,
            },
            slots: [Assembly::new(), Assembly::new(), Assembly::new()],
            piece: None,
            scratch: Vec::new(),
            multiline: None,
            switch: None,
            joins: [Join::new(), Join::new(), Join::new()],
            carried_away: None,
        }
    }

    /// Takes the open multiline record of this generation, read to its end (`consumed`, with
    /// no incomplete line), to go on in the next generation: the one whose last line was
    /// written last, if its stream holds no partial message. `prefix` and `file` are this
    /// generation's id prefix and key. From now on the ack range of this generation stops at
    /// the record's start ([`LineParser::carried_away`]).
    pub fn carry_out(&mut self, prefix: IdPrefix, file: FileKey, consumed: u64) -> Option<Carry> {
        let rule = Arc::clone(self.multiline.as_ref()?);
        if self.switch.is_some() || self.piece.is_some() || self.carried_away.is_some() {
            return None;
        }
        let slot = [STDOUT, STDERR, RAW]
            .into_iter()
            .filter(|&s| self.joins[s].is_open() && !self.slots[s].is_open())
            .max_by_key(|&s| self.joins[s].last_written())?;
        let join = Box::new(self.joins[slot].take_open());
        let offset = join.pending_start()?;
        self.carried_away = Some((offset, consumed));
        Some(Carry {
            slot,
            join,
            from: CarriedFrom {
                prefix,
                file,
                offset,
                end: consumed,
            },
            rule,
        })
    }

    /// Goes on with `carry`, the record the previous generation of this file ended in, from
    /// `start` (this generation's first byte): its lines here join it as they would have in
    /// one file. Only before the first line, and under the same rule; else `carry` comes back.
    pub fn carry_in(&mut self, carry: Carry, start: u64) -> Result<(), Carry> {
        if self.pending_start().is_none() {
            // Nothing open: a rule change not applied yet applies now.
            if let Some(rule) = self.switch.take() {
                self.multiline = rule;
            }
        }
        let same_rule = self
            .multiline
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &carry.rule) || r.name() == carry.rule.name());
        let fresh = self.pending_start().is_none() && self.piece.is_none() && self.switch.is_none();
        if !same_rule || !fresh {
            return Err(carry);
        }
        self.joins[carry.slot].continue_carried(*carry.join, carry.from, start);
        Ok(())
    }

    /// Takes back a record [`LineParser::carry_out`] gave and the next generation did not take.
    pub fn carry_back(&mut self, carry: Carry) {
        self.joins[carry.slot].put_back(*carry.join);
        self.carried_away = None;
    }

    /// The range of this generation a record carried into the next one covers (see
    /// [`LineParser::carry_out`]): acknowledged with that record.
    pub fn carried_away(&self) -> Option<(u64, u64)> {
        self.carried_away
    }

    /// Joins multiline records with `rule` from the first line on (`None`: no joining).
    #[must_use]
    pub fn with_multiline(mut self, rule: Option<Arc<MultilineRule>>) -> Self {
        self.multiline = rule;
        self
    }

    /// Changes the multiline rule (`None`: no joining), as when a pod's hint changes. It takes
    /// effect at the next record boundary: before the next line (or at the next
    /// [`LineParser::expire`] or [`LineParser::flush`]) the records still open are shipped as
    /// they are, and the lines after them are joined by the new rule.
    pub fn set_multiline(&mut self, rule: Option<Arc<MultilineRule>>) {
        self.switch = Some(rule);
    }

    /// The multiline rule in force (not counting a change not applied yet).
    pub fn multiline(&self) -> Option<&Arc<MultilineRule>> {
        self.multiline.as_ref()
    }

    /// Applies a rule given by [`LineParser::set_multiline`], shipping what is open first.
    #[cold]
    fn apply_switch(&mut self, out: &mut Batch) {
        let Some(rule) = self.switch.take() else {
            return;
        };
        let same = match (&rule, &self.multiline) {
            (Some(new), Some(old)) => Arc::ptr_eq(new, old),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.close_joins(|_| true, Closed::Next, out);
            self.multiline = rule;
        }
    }

    /// Closes the open multiline records that `due` picks, oldest first.
    fn close_joins(&mut self, due: impl Fn(&Join) -> bool, why: Closed, out: &mut Batch) {
        let Some(rule) = self.multiline.as_deref() else {
            return;
        };
        let mut order = [STDOUT, STDERR, RAW];
        order.sort_by_key(|&s| self.joins[s].pending_start().unwrap_or(u64::MAX));
        for slot in order {
            let join = &mut self.joins[slot];
            if join.is_open() && due(join) {
                join.close(why, rule, &self.settings, out);
            }
        }
    }

    /// Ships the multiline records whose last line was read `flush_timeout` or more before
    /// `now`, or is that much older than the latest line of any stream (and applies a rule
    /// change). For a file read to its end, with nothing more to read: the reader calls it when
    /// a turn reached the end, and the tailer when an idle file's [`LineParser::deadline`] has
    /// passed.
    pub fn expire(&mut self, now: Timestamp, out: &mut Batch) {
        if self.switch.is_some() {
            self.apply_switch(out);
        }
        let Some(limits) = self.multiline.as_deref().map(MultilineRule::limits) else {
            return;
        };
        let latest = self.latest_seen();
        self.close_joins(
            |j| j.expired(&limits, now) || j.stale(&limits, latest),
            Closed::Timeout,
            out,
        );
    }

    /// Ships the multiline records of one stream whose last line was written `flush_timeout`
    /// or more before the latest line of another: a stream that went quiet does not hold its
    /// record (and the file's ack range) while the other one carries on. The reader calls it at
    /// the end of every turn; it goes by what the file says, not by when it is read.
    pub fn close_stale(&mut self, out: &mut Batch) {
        let Some(limits) = self.multiline.as_deref().map(MultilineRule::limits) else {
            return;
        };
        let latest = self.latest_seen();
        self.close_joins(|j| j.stale(&limits, latest), Closed::Timeout, out);
    }

    /// The latest message timestamp of any stream.
    fn latest_seen(&self) -> Timestamp {
        self.joins
            .iter()
            .map(Join::seen)
            .max()
            .unwrap_or(Timestamp(i64::MIN))
    }

    /// When [`LineParser::expire`] has something to do: the earliest `flush_timeout` of an open
    /// multiline record, or at once for a rule change not applied yet; `None` when nothing
    /// waits for time.
    pub fn deadline(&self) -> Option<Timestamp> {
        if self.switch.is_some() {
            return Some(Timestamp(i64::MIN));
        }
        let rule = self.multiline.as_deref()?;
        self.joins
            .iter()
            .filter_map(|j| j.deadline(&rule.limits()))
            .min()
    }

    /// Parses `line` (the reader's contract: see [`Line`] and [`Piece`]), appending every record
    /// it completes to `out`. `now` is the timestamp of raw text.
    #[inline]
    pub fn push(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        if self.switch.is_some() {
            self.apply_switch(out);
        }
        match line.piece {
            Piece::Whole => match self.format {
                Some(Format::Cri) => self.cri_whole(line, now, out),
                Some(Format::Docker) => self.docker_whole(line, now, out),
                Some(Format::Raw) => self.raw_whole(line, now, out),
                None => self.detect(line, now, out),
            },
            Piece::First => self.first(line, now, out),
            Piece::Middle | Piece::Last => self.next_piece(line, now, out),
        }
    }

    /// The file offset of the first byte belonging to a record not emitted yet, if any: the
    /// start of the earliest physical line that pending bytes came from. The reader ends each
    /// batch's ack range there.
    ///
    /// The one known subtlety: while a partial record is pending on one stream, the ack range
    /// stops at its start, so lines of the *other* stream after it, although already emitted,
    /// are acknowledged only once the partial completes. After a crash or restart in between they
    /// are read and shipped again: at least once, as everywhere; their ids (file identity and
    /// offset) make the second delivery idempotent.
    ///
    /// Likewise, when a joined message was split and its rest is pending, reading restarts at
    /// the line the rest begins in: after a crash, the part of that line already shipped in the
    /// previous piece is shipped again, as the start of a record with a new offset.
    ///
    /// An open multiline record is pending from its first line on, like a partial one.
    pub fn pending_start(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(Assembly::pending_start)
            .chain(self.joins.iter().filter_map(Join::pending_start))
            .chain(self.carried_away.map(|(start, _)| start))
            .min()
    }

    /// Where the reader ends a batch's ack range when every byte before `consumed` was handed
    /// over: [`LineParser::pending_start`] (or `consumed`), moved back to the start of any
    /// multiline record already emitted that it would otherwise fall inside. Such a record joined
    /// lines of one stream around another stream's open record; were the range to end inside
    /// it, a restart would read its last lines again without its first ones and ship them
    /// twice. The reader calls it once per batch: a record the range has passed is forgotten.
    pub fn ack_end(&mut self, consumed: u64) -> u64 {
        let mut end = self.pending_start().map_or(consumed, |p| p.min(consumed));
        // Moving back can land inside an earlier record of another stream: until none.
        while let Some(start) = self
            .joins
            .iter()
            .flat_map(Join::spans)
            .filter(|&&(start, stop)| start < end && end < stop)
            .map(|&(start, _)| start)
            .min()
        {
            end = start;
        }
        for join in &mut self.joins {
            join.acked(end);
        }
        end
    }

    /// Emits whatever is pending, oldest first, as if each record ended at the last byte it
    /// took: the file is being let go and no more lines will come. `now` is when, for the
    /// multiline records a last partial message may still join.
    pub fn flush(&mut self, now: Timestamp, out: &mut Batch) {
        if self.switch.is_some() {
            self.apply_switch(out);
        }
        self.piece = None;
        let mut order = [STDOUT, STDERR, RAW];
        order.sort_by_key(|&s| {
            let assembly = self.slots[s].pending_start();
            let join = self.joins[s].pending_start();
            assembly.into_iter().chain(join).min().unwrap_or(u64::MAX)
        });
        for slot in order {
            let assembly = &mut self.slots[slot];
            let mut join = joiner(&self.multiline, &mut self.joins, self.format, slot, now);
            if assembly.is_open() {
                let end = assembly.end();
                assembly.close(end, slot == RAW, &self.settings, join.as_mut(), out);
            }
            if let Some(j) = join {
                if j.join.is_open() {
                    j.join.close(Closed::Flush, j.rule, &self.settings, out);
                }
            }
        }
        for join in &mut self.joins {
            join.acked(u64::MAX);
        }
    }

    /// `auto`, first non-empty line: decides the format and parses the line in it.
    fn detect(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        if raw::strip_cr(line.bytes).is_empty() {
            raw::count_empty();
            return;
        }
        if let Ok(header) = cri::parse_header(line.bytes) {
            self.format = Some(Format::Cri);
            return self.cri_record(header, line, now, out);
        }
        if let Ok(parsed) = docker::parse(line.bytes, &mut out.text) {
            self.format = Some(Format::Docker);
            return self.docker_record(parsed, line, now, out);
        }
        self.format = Some(Format::Raw);
        self.raw_whole(line, now, out);
    }

    /// The first piece of a line longer than `max_line_bytes`. A CRI header fits in it and is
    /// parsed; a docker line cannot be decoded from a piece and is kept as raw text. With `auto`
    /// undecided, a piece that is not CRI is kept as raw text and the decision waits for the
    /// next whole line (a docker file's first line may simply be long).
    fn first(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        if let Some(previous) = self.piece.take() {
            // Only if the reader broke its contract (a First before the previous Last): the
            // unfinished line ends where its bytes did.
            let assembly = &mut self.slots[previous.slot];
            if previous.closes && assembly.is_open() {
                let end = assembly.end();
                let mut join = joiner(
                    &self.multiline,
                    &mut self.joins,
                    self.format,
                    previous.slot,
                    now,
                );
                assembly.close(
                    end,
                    previous.slot == RAW,
                    &self.settings,
                    join.as_mut(),
                    out,
                );
            }
        }
        match self.format {
            Some(Format::Cri) | None => match cri::parse_header(line.bytes) {
                Ok(header) => {
                    self.format = Some(Format::Cri);
                    self.cri_first(header, line, now, out);
                }
                Err(reason) => {
                    if self.format.is_some() {
                        telemetry::malformed_line(&self.settings.path, line.offset, "cri", reason);
                    }
                    self.raw_first(line, now, out);
                }
            },
            Some(Format::Docker) => {
                telemetry::malformed_line(
                    &self.settings.path,
                    line.offset,
                    "docker",
                    "line longer than max_line_bytes cannot be decoded",
                );
                self.raw_first(line, now, out);
            }
            Some(Format::Raw) => self.raw_first(line, now, out),
        }
    }

    /// A `Middle` or `Last` piece: more message bytes for the line's record.
    fn next_piece(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        let Some(target) = self.piece else {
            // Only if the reader broke its contract (no First before): take it as a line.
            let piece = match line.piece {
                Piece::Middle => Piece::First,
                _ => Piece::Whole,
            };
            return self.push(Line { piece, ..line }, now, out);
        };
        let last = line.piece == Piece::Last;
        let bytes = if last && target.slot == RAW {
            raw::strip_cr(line.bytes)
        } else {
            line.bytes
        };
        let assembly = &mut self.slots[target.slot];
        let mut join = joiner(
            &self.multiline,
            &mut self.joins,
            self.format,
            target.slot,
            now,
        );
        assembly.append(
            bytes,
            assemble::Locator::Plain(line.offset),
            target.line,
            line.end,
            &self.settings,
            join.as_mut(),
            out,
        );
        if last {
            self.piece = None;
            if target.closes {
                assembly.close(
                    line.end,
                    target.slot == RAW,
                    &self.settings,
                    join.as_mut(),
                    out,
                );
            }
        }
    }
}

/// Appends a record whose message is `bytes`, made valid UTF-8 on the way into the batch text.
#[inline]
fn emit(
    out: &mut Batch,
    bytes: &[u8],
    timestamp: Timestamp,
    stream: Stream,
    offset: u64,
    end: u64,
    path: &Path,
) {
    let start = out.text.len();
    if utf8::push_lossy(&mut out.text, bytes) {
        telemetry::invalid_utf8(path, offset);
    }
    // Not `Batch::push`: that takes a `&str`, which would need the text somewhere first.
    out.records.push(Record {
        timestamp,
        stream,
        message: start..out.text.len(),
        offset,
        end,
        carried: false,
    });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ack::FileKey;
    use crate::source::Source;
    use crate::telemetry::metrics;

    /// The read time given to raw records.
    pub const NOW: i64 = 1_800_000_000_000_000_000;

    /// A record as a test states it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Rec {
        pub message: String,
        pub stream: Stream,
        pub timestamp: i64,
        pub offset: u64,
        pub end: u64,
    }

    impl Rec {
        pub fn new(message: &str, stream: Stream, timestamp: i64, offset: u64, end: u64) -> Rec {
            Rec {
                message: message.to_owned(),
                stream,
                timestamp,
                offset,
                end,
            }
        }
    }

    pub fn parser(format: FormatChoice, max: usize, oversize: Oversize) -> LineParser {
        LineParser::new(
            format,
            max,
            oversize,
            Arc::from(Path::new("/var/log/pods/x/0.log")),
        )
    }

    /// A CRI parser (1 MiB lines, split) and an empty batch.
    pub fn cri() -> (LineParser, Batch) {
        (parser(FormatChoice::Cri, 1 << 20, Oversize::Split), batch())
    }

    pub fn batch() -> Batch {
        let source = Arc::new(Source {
            path: "/var/log/pods/x/0.log".into(),
            kubelet: None,
            fragment: "".into(),
        });
        Batch::new(source, FileKey(1), 0)
    }

    /// A complete line at `offset`, followed by its newline.
    pub fn whole(offset: u64, line: &str) -> Line<'_> {
        raw_line(offset, line.as_bytes())
    }

    pub fn raw_line(offset: u64, bytes: &[u8]) -> Line<'_> {
        Line {
            bytes,
            piece: Piece::Whole,
            offset,
            end: offset + bytes.len() as u64 + 1,
        }
    }

    /// A complete line at `offset` cut as the reader cuts it (`TailedFile::emit_line`).
    pub fn pieces(offset: u64, bytes: &[u8], max: usize) -> Vec<Line<'_>> {
        if bytes.len() <= max {
            return vec![raw_line(offset, bytes)];
        }
        let mut out = Vec::new();
        let mut at = 0;
        while bytes.len() - at > max {
            let start = offset + at as u64;
            out.push(Line {
                bytes: &bytes[at..at + max],
                piece: if at == 0 { Piece::First } else { Piece::Middle },
                offset: start,
                end: start + max as u64,
            });
            at += max;
        }
        out.push(Line {
            bytes: &bytes[at..],
            piece: Piece::Last,
            offset: offset + at as u64,
            end: offset + bytes.len() as u64 + 1,
        });
        out
    }

    pub fn push(p: &mut LineParser, line: Line<'_>, out: &mut Batch) {
        p.push(line, Timestamp(NOW), out);
    }

    /// Pushes `lines` as whole lines, back to back from offset 0, calling `after` with the
    /// parser after each; returns each line's (offset, end).
    pub fn push_lines_observed<'a>(
        p: &mut LineParser,
        lines: impl IntoIterator<Item = &'a str>,
        out: &mut Batch,
        mut after: impl FnMut(&LineParser),
    ) -> Vec<(u64, u64)> {
        let mut spans = Vec::new();
        let mut at = 0;
        for line in lines {
            let l = whole(at, line);
            spans.push((l.offset, l.end));
            at = l.end;
            push(p, l, out);
            after(p);
        }
        spans
    }

    /// Pushes `lines` as whole lines, back to back from offset 0; returns each line's
    /// (offset, end).
    pub fn push_lines<'a>(
        p: &mut LineParser,
        lines: impl IntoIterator<Item = &'a str>,
        out: &mut Batch,
    ) -> Vec<(u64, u64)> {
        push_lines_observed(p, lines, out, |_| {})
    }

    pub fn collect(b: &Batch) -> Vec<Rec> {
        b.records
            .iter()
            .map(|r| Rec::new(b.message(r), r.stream, r.timestamp.0, r.offset, r.end))
            .collect()
    }

    /// Pushes `lines` into a new batch and returns its records.
    pub fn records(p: &mut LineParser, lines: &[Line<'_>]) -> Vec<Rec> {
        let mut b = batch();
        for line in lines {
            push(p, *line, &mut b);
        }
        collect(&b)
    }

    /// `n` letters, a to z over and over.
    pub fn letters(n: usize) -> String {
        (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
    }

    const T1: i64 = 1_795_341_601_000_000_000; // 2026-11-22T10:00:01Z

    #[test]
    fn auto_detects_from_the_first_non_empty_line() {
        let cri = "2026-11-22T10:00:01Z stdout F hello";
        let docker = r#"{"log":"hello\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}"#;
        let raw = "Nov 22 10:00:01 node-1 sshd[1]: hello";
        type Expected<'a> = &'a [(&'a str, Stream, i64)];
        let cases: &[(&[&str], Expected)] = &[
            // CRI decided: a later docker-looking line is malformed CRI, kept raw.
            (
                &[cri, docker],
                &[
                    ("hello", Stream::Stdout, T1),
                    (docker, Stream::Unknown, NOW),
                ],
            ),
            (
                &[docker, cri],
                &[("hello", Stream::Stdout, T1), (cri, Stream::Unknown, NOW)],
            ),
            // Raw decided: CRI lines after it stay raw.
            (
                &[raw, cri],
                &[(raw, Stream::Unknown, NOW), (cri, Stream::Unknown, NOW)],
            ),
            // Empty lines do not decide.
            (&["", "\r", cri], &[("hello", Stream::Stdout, T1)]),
            // Almost docker (not JSON) is raw.
            (
                &["{\"log\":", cri],
                &[
                    ("{\"log\":", Stream::Unknown, NOW),
                    (cri, Stream::Unknown, NOW),
                ],
            ),
        ];
        for (lines, want) in cases {
            let mut p = parser(FormatChoice::Auto, 1 << 20, Oversize::Split);
            let mut b = batch();
            push_lines(&mut p, lines.iter().copied(), &mut b);
            let got: Vec<(String, Stream, i64)> = collect(&b)
                .into_iter()
                .map(|r| (r.message, r.stream, r.timestamp))
                .collect();
            let want: Vec<(String, Stream, i64)> = want
                .iter()
                .map(|(m, s, t)| (m.to_string(), *s, *t))
                .collect();
            assert_eq!(got, want, "{lines:?}");
        }
    }

    #[test]
    fn auto_waits_past_a_long_first_line_that_is_not_cri() {
        // A docker file whose first line is longer than max: kept raw, docker decided after.
        let long = format!(
            r#"{{"log":"{}\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}}"#,
            letters(80)
        );
        let next = r#"{"log":"short\n","stream":"stderr","time":"2026-11-22T10:00:01Z"}"#;
        let mut p = parser(FormatChoice::Auto, 64, Oversize::Split);
        let mut lines = pieces(0, long.as_bytes(), 64);
        let n = whole(lines.last().unwrap().end, next);
        let (n_off, n_end) = (n.offset, n.end);
        lines.push(n);
        let got = records(&mut p, &lines);
        assert_eq!(
            got,
            vec![
                Rec::new(&long[..64], Stream::Unknown, NOW, 0, 64),
                Rec::new(&long[64..128], Stream::Unknown, NOW, 64, 128),
                Rec::new(&long[128..], Stream::Unknown, NOW, 128, n_off),
                Rec::new("short", Stream::Stderr, T1, n_off, n_end),
            ]
        );
        assert_eq!(p.format, Some(Format::Docker));
    }

    #[test]
    fn docker_lines_in_pieces_are_raw_text() {
        let long = format!(
            r#"{{"log":"{}\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}}"#,
            letters(80)
        );
        let mut p = parser(FormatChoice::Docker, 64, Oversize::Split);
        let malformed = telemetry::get(&metrics().malformed_lines);
        let got = records(&mut p, &pieces(10, long.as_bytes(), 64));
        assert_eq!(
            got,
            vec![
                Rec::new(&long[..64], Stream::Unknown, NOW, 10, 74),
                Rec::new(&long[64..128], Stream::Unknown, NOW, 74, 138),
                Rec::new(
                    &long[128..],
                    Stream::Unknown,
                    NOW,
                    138,
                    11 + long.len() as u64
                ),
            ]
        );
        assert!(telemetry::get(&metrics().malformed_lines) > malformed);
    }

    #[test]
    fn cri_lines_in_pieces_without_a_header_are_malformed_raw_text() {
        let long = format!("no header here {}", letters(70));
        let mut p = parser(FormatChoice::Cri, 64, Oversize::Truncate);
        let got = records(&mut p, &pieces(0, long.as_bytes(), 64));
        assert_eq!(
            got,
            vec![Rec::new(
                &long[..64],
                Stream::Unknown,
                NOW,
                0,
                long.len() as u64 + 1
            )]
        );
    }

    #[test]
    fn flush_emits_pending_records_oldest_first() {
        let lines = [
            "2026-11-22T10:00:01Z stderr P err part",
            "2026-11-22T10:00:01Z stdout P out part",
            "2026-11-22T10:00:01Z stdout P  more",
        ];
        let (mut p, mut b) = cri();
        let spans = push_lines(&mut p, lines, &mut b);
        assert!(b.records.is_empty());
        assert_eq!(p.pending_start(), Some(0));
        p.flush(Timestamp(NOW), &mut b);
        assert_eq!(p.pending_start(), None);
        assert_eq!(
            collect(&b),
            vec![
                Rec::new("err part", Stream::Stderr, T1, 0, spans[0].1),
                Rec::new("out part more", Stream::Stdout, T1, spans[1].0, spans[2].1),
            ]
        );
        // Nothing is left to flush twice.
        p.flush(Timestamp(NOW), &mut b);
        assert_eq!(b.records.len(), 2);
    }

    #[test]
    fn flush_emits_a_line_cut_short_in_pieces() {
        // The reader's `finish` hands over a Last for an unfinished line; if it did not, flush
        // still emits what the pieces brought.
        let mut p = parser(FormatChoice::Raw, 10, Oversize::Split);
        let mut b = batch();
        let ps = pieces(0, b"0123456789abcde", 10);
        push(&mut p, ps[0], &mut b);
        assert_eq!(p.pending_start(), Some(0));
        p.flush(Timestamp(NOW), &mut b);
        assert_eq!(
            collect(&b),
            vec![Rec::new("0123456789", Stream::Unknown, NOW, 0, 10)]
        );
        assert_eq!(p.pending_start(), None);
    }

    #[test]
    fn pending_buffers_stay_within_max_line_bytes() {
        // Many partials of one stream, with max 100: never more than 100 bytes held.
        let mut p = parser(FormatChoice::Cri, 100, Oversize::Split);
        let mut b = batch();
        let mut at = 0;
        for i in 0..50 {
            let line = format!("2026-11-22T10:00:01Z stdout P {}", letters(7 + i % 13));
            let l = whole(at, &line);
            at = l.end;
            push(&mut p, l, &mut b);
            assert!(p.slots[STDOUT].capacity() <= 100);
        }
        // Every record but the pending one is exactly 100 bytes, at distinct offsets.
        let recs = collect(&b);
        assert!(recs.iter().all(|r| r.message.len() == 100));
        let mut offsets: Vec<u64> = recs.iter().map(|r| r.offset).collect();
        offsets.dedup();
        assert_eq!(offsets.len(), recs.len());
    }

    mod model {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::collections::HashSet;

        /// A line of a generated CRI file.
        #[derive(Clone, Debug)]
        enum Entry {
            Cri {
                stderr: bool,
                full: bool,
                message: String,
            },
            Garbage(String),
            Empty,
        }

        fn entry() -> impl Strategy<Value = Entry> {
            prop_oneof![
                6 => (any::<bool>(), any::<bool>(), "[a-z0-9 \u{e9}\u{20ac}\u{1f600}]{0,90}")
                    .prop_map(|(stderr, full, message)| Entry::Cri { stderr, full, message }),
                1 => "[a-z ]{1,100}".prop_map(|s| Entry::Garbage(format!("garbage {s}"))),
                1 => Just(Entry::Empty),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Random CRI files, read as the reader cuts them (pieces past `max`): every
            /// message arrives, in order per stream, split into records of at most `max` bytes
            /// (or truncated to a prefix), at distinct offsets, and no record is emitted before
            /// a byte the ack range has already passed.
            #[test]
            fn cri_files_against_a_model(
                entries in vec(entry(), 0..40),
                max in 41usize..160,
                truncate in any::<bool>(),
            ) {
                let mut file = Vec::new();
                let mut spans = Vec::new();
                for (i, e) in entries.iter().enumerate() {
                    let text = match e {
                        Entry::Cri { stderr, full, message } => format!(
                            "2026-11-22T10:00:00.{i:09}Z {} {} {message}",
                            if *stderr { "stderr" } else { "stdout" },
                            if *full { "F" } else { "P" },
                        ),
                        Entry::Garbage(g) => g.clone(),
                        Entry::Empty => String::new(),
                    };
                    spans.push((file.len(), text.len()));
                    file.extend_from_slice(text.as_bytes());
                    file.push(b'\n');
                }
                let line_starts: HashSet<u64> = spans.iter().map(|&(s, _)| s as u64).collect();

                // The model: whole messages per slot, in file order; what is pending at the end
                // is flushed as it is.
                let mut want: [Vec<String>; 3] = Default::default();
                let mut partial: [Option<String>; 2] = Default::default();
                for e in &entries {
                    match e {
                        Entry::Cri { stderr, full, message } => {
                            let s = usize::from(*stderr);
                            partial[s].get_or_insert_with(String::new).push_str(message);
                            if *full {
                                want[s].push(partial[s].take().unwrap());
                            }
                        }
                        Entry::Garbage(g) => want[RAW].push(g.clone()),
                        Entry::Empty => {}
                    }
                }
                for s in [STDOUT, STDERR] {
                    want[s].extend(partial[s].take());
                }

                let oversize = if truncate { Oversize::Truncate } else { Oversize::Split };
                let mut p = parser(FormatChoice::Cri, max, oversize);
                let mut b = batch();
                let mut ack = 0;
                for &(start, len) in &spans {
                    for piece in pieces(start as u64, &file[start..start + len], max) {
                        let before = b.records.len();
                        push(&mut p, piece, &mut b);
                        for r in &b.records[before..] {
                            prop_assert!(r.offset >= ack, "record at {} before ack {}", r.offset, ack);
                        }
                        // What the reader's close_batch computes.
                        let end = p.pending_start().map_or(piece.end, |s| s.min(piece.end));
                        prop_assert!(end >= ack);
                        ack = end;
                        if let Some(s) = p.pending_start() {
                            prop_assert!(line_starts.contains(&s), "pending_start {} inside a line", s);
                        }
                    }
                }
                let before = b.records.len();
                p.flush(Timestamp(NOW), &mut b);
                for r in &b.records[before..] {
                    prop_assert!(r.offset >= ack);
                }
                prop_assert_eq!(p.pending_start(), None);

                let got = collect(&b);
                let mut offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
                offsets.sort_unstable();
                offsets.dedup();
                prop_assert_eq!(offsets.len(), got.len(), "offsets not distinct");
                for r in &got {
                    prop_assert!(r.message.len() <= max);
                    prop_assert!(r.end > r.offset);
                }
                for (slot, stream) in [(STDOUT, Stream::Stdout), (STDERR, Stream::Stderr), (RAW, Stream::Unknown)] {
                    let messages: Vec<&str> = got
                        .iter()
                        .filter(|r| r.stream == stream)
                        .map(|r| r.message.as_str())
                        .collect();
                    if truncate {
                        prop_assert_eq!(messages.len(), want[slot].len());
                        for (m, w) in messages.iter().zip(&want[slot]) {
                            prop_assert!(w.starts_with(m));
                            prop_assert!(m.len() >= w.len().min(max - 3));
                        }
                    } else {
                        prop_assert_eq!(messages.concat(), want[slot].concat());
                    }
                }
            }
        }
    }

    #[test]
    fn whole_lines_do_not_reallocate_a_reused_batch() {
        let line = "2026-11-22T10:00:01Z stdout F GET /api/v1/items 200";
        let (mut p, mut b) = cri();
        b.text.reserve(64 * 1024);
        b.records.reserve(1024);
        let (text, records) = (b.text.as_ptr(), b.records.as_ptr());
        for i in 0..1000 {
            push(&mut p, whole(i * 52, line), &mut b);
        }
        assert_eq!(b.records.len(), 1000);
        assert_eq!((b.text.as_ptr(), b.records.as_ptr()), (text, records));
    }
}
