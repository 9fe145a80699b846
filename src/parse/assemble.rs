//! Assembling one record from several chunks: CRI partial lines (`P` ... `F`), docker lines split
//! at 16 KiB, and physical lines longer than `max_line_bytes` that the reader hands over in
//! pieces.
//!
//! An [`Assembly`] holds the message bytes of one record not yet emitted, and never more than
//! `max_line_bytes` of them. When a chunk would overflow that, [`Oversize::Split`] emits what it
//! holds as a record of its own and carries on, [`Oversize::Truncate`] keeps the first
//! `max_line_bytes` and counts the rest as discarded. Bytes are held as they came (file bytes,
//! or decoded JSON) and become UTF-8 text only when emitted, so a character that a runtime cut
//! in two between chunks is whole again in the record.
//!
//! Offsets become document ids, so every record emitted gets a distinct offset that the same
//! input always reproduces: the first record of a message has the offset of the line it began
//! in, each later piece of a split the file offset of its own first message byte. A split backs
//! off to a character boundary when the bytes before the cut are known to be contiguous in the
//! file (the bytes of one physical line: the usual case); across a chunk boundary it cuts where
//! `max_line_bytes` falls, because the file offset of an earlier chunk's bytes is no longer known.
//!
//! With multiline joining on, a complete message goes into its stream's join instead of straight
//! into the batch (the [`Joiner`] argument); a message that has to be split is never joined,
//! and the join's open record is closed before the first piece, so records stay in order.
//!
//! What is pending must be re-read after a crash, so [`Assembly::pending_start`] is always the
//! start of a physical line (never the middle of one, where the format's header would be
//! missing): the line the record began in or, after a split, the line holding the first byte
//! still held.

use crate::parse::json;
use crate::parse::multiline::{Closed, Joiner, Message};
use crate::parse::{emit, utf8, Oversize, Settings};
use crate::record::{Batch, Stream};
use crate::telemetry;
use crate::timestamp::Timestamp;

/// Above this capacity a buffer is given back when its record is done: thousands of files must
/// not each keep the memory of their one long line (the reader does the same with its tail).
pub(super) const RETAIN_BYTES: usize = 4096;

/// Where the bytes of a chunk are in the file, so that a split can name the offset of the byte
/// it starts at.
#[derive(Clone, Copy, Debug)]
pub(super) enum Locator<'a> {
    /// Byte `j` of the chunk is at file offset `start + j` (CRI messages, raw lines).
    Plain(u64),
    /// The chunk is the decoded JSON string `escaped`, which is at file offset `start`: byte `j`
    /// maps to the escape or character that produced it.
    Json { escaped: &'a [u8], start: u64 },
    /// Only the line is known (a docker line decoded by serde_json): decoded positions are
    /// spread proportionally over the `len` bytes from `start`, which are at least as many as
    /// the decoded bytes, so distinct positions get distinct offsets inside the line.
    Spread { start: u64, len: u64 },
}

impl Locator<'_> {
    /// The file offset of byte `j` of a chunk of `chunk_len` bytes.
    fn locate(self, j: usize, chunk_len: usize) -> u64 {
        match self {
            Locator::Plain(start) => start + j as u64,
            Locator::Json { escaped, start } => start + json::source_index(escaped, j) as u64,
            Locator::Spread { start, len } => {
                start + (j as u128 * u128::from(len) / chunk_len.max(1) as u128) as u64
            }
        }
    }
}

/// A run of held bytes that are contiguous in the file and from one physical line.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Position in `buf` where the run starts (it always extends to the end of `buf`).
    pos: usize,
    /// File offset of `buf[pos]`.
    offset: u64,
    /// Start of the physical line.
    line: u64,
}

/// The record being assembled for one stream.
#[derive(Debug)]
pub(super) struct Assembly {
    /// Message bytes not yet emitted; at most `max_line_bytes`, and its capacity too.
    buf: Vec<u8>,
    /// A record is being assembled (possibly with nothing held yet: an empty `P` chunk).
    open: bool,
    stream: Stream,
    /// The first chunk's timestamp, given to every record of the message.
    timestamp: Timestamp,
    /// Offset of the next record to emit.
    offset: u64,
    /// Offset of the message's first record, to name it in warnings.
    first_offset: u64,
    /// Start of the physical line to re-read from to rebuild what is held.
    resume: u64,
    /// End of the last chunk, for [`Assembly::close`] at flush.
    end: u64,
    /// Contiguous tail of `buf`, if the chunks that fill it were plain file bytes.
    run: Option<Run>,
    /// Records were already emitted for this message (split; counted once).
    split: bool,
    /// Bytes thrown away by truncation; once non-zero, every later byte is thrown away too.
    discarded: u64,
}

impl Assembly {
    pub(super) const fn new() -> Self {
        Assembly {
            buf: Vec::new(),
            open: false,
            stream: Stream::Unknown,
            timestamp: Timestamp(0),
            offset: 0,
            first_offset: 0,
            resume: 0,
            end: 0,
            run: None,
            split: false,
            discarded: 0,
        }
    }

    pub(super) const fn is_open(&self) -> bool {
        self.open
    }

    /// Where reading must restart to rebuild this record, if one is open.
    pub(super) fn pending_start(&self) -> Option<u64> {
        self.open.then_some(self.resume)
    }

    /// End of the last chunk taken.
    pub(super) const fn end(&self) -> u64 {
        self.end
    }

    /// Starts a record in the physical line at `line`.
    pub(super) fn open(&mut self, stream: Stream, timestamp: Timestamp, line: u64, end: u64) {
        debug_assert!(!self.open && self.buf.is_empty());
        *self = Assembly {
            buf: std::mem::take(&mut self.buf),
            open: true,
            stream,
            timestamp,
            offset: line,
            first_offset: line,
            resume: line,
            end,
            run: None,
            split: false,
            discarded: 0,
        };
    }

    /// Adds `chunk`, message bytes from the physical line that starts at `line`; `end` is the
    /// end of the line (or piece) they came in. Emits records into `out` if it overflows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
        &mut self,
        chunk: &[u8],
        at: Locator<'_>,
        line: u64,
        end: u64,
        settings: &Settings,
        mut join: Option<&mut Joiner<'_>>,
        out: &mut Batch,
    ) {
        debug_assert!(self.open);
        self.end = end;
        if self.discarded > 0 {
            self.discarded += chunk.len() as u64;
            return;
        }
        let max = settings.max_line_bytes;
        let held = self.buf.len();
        self.run = match (at, self.run) {
            (Locator::Plain(offset), Some(run))
                if run.line == line && run.offset + (held - run.pos) as u64 == offset =>
            {
                Some(run)
            }
            (Locator::Plain(offset), _) => Some(Run {
                pos: held,
                offset,
                line,
            }),
            _ => None,
        };
        // Chunk byte `chunk_idx` is at `buf[chunk_pos]`; both move as splits drain `buf`.
        let mut chunk_pos = held;
        let mut chunk_idx = 0;
        let mut taken = 0;
        loop {
            let room = max - self.buf.len();
            let left = chunk.len() - taken;
            if left <= room {
                self.extend(&chunk[taken..], max);
                return;
            }
            self.extend(&chunk[taken..taken + room], max);
            taken += room;
            let full = self.buf.len();
            let backed_off = full - utf8::incomplete_suffix(&self.buf);

            if settings.oversize == Oversize::Truncate {
                self.discarded = (full - backed_off + left - room) as u64;
                self.buf.truncate(backed_off);
                return;
            }

            // Where the cut may go: only where the file offset of the next byte is known, and
            // never at 0, so that every record makes progress.
            let lowest = self.run.map_or(chunk_pos, |r| r.pos).max(1);
            let cut = if backed_off >= lowest {
                backed_off
            } else {
                full
            };
            let next = match self.run {
                Some(run) => run.offset + (cut - run.pos) as u64,
                None => at.locate(chunk_idx + (cut - chunk_pos), chunk.len()),
            };
            if !self.split {
                // A message in pieces is not joined; what its stream was joining came first.
                if let Some(j) = join.as_deref_mut() {
                    if j.join.is_open() {
                        j.join.close(Closed::Next, j.rule, settings, out);
                    }
                }
            }
            emit(
                out,
                &self.buf[..cut],
                self.timestamp,
                self.stream,
                self.offset,
                next,
                &settings.path,
            );
            if !self.split {
                self.split = true;
                telemetry::oversize_split(&settings.path, self.first_offset, max);
            }
            self.buf.drain(..cut);
            self.offset = next;
            // What is left came from this line: `lowest` keeps the cut inside it.
            self.resume = line;
            if let Some(run) = &mut self.run {
                *run = Run {
                    pos: 0,
                    offset: next,
                    line,
                };
            }
            chunk_idx += cut.saturating_sub(chunk_pos);
            chunk_pos = chunk_pos.saturating_sub(cut);
        }
    }

    /// Emits the record (it ends at `end`), or hands it to `join`, and forgets it. `strip_cr`
    /// drops a final `\r` (raw lines). A message whose last split piece was already emitted
    /// emits nothing more unless bytes are left.
    pub(super) fn close(
        &mut self,
        end: u64,
        strip_cr: bool,
        settings: &Settings,
        join: Option<&mut Joiner<'_>>,
        out: &mut Batch,
    ) {
        debug_assert!(self.open);
        if strip_cr && self.discarded == 0 && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        match join {
            Some(j) if !self.split => {
                let message = Message {
                    bytes: &self.buf,
                    timestamp: self.timestamp,
                    stream: self.stream,
                    offset: self.offset,
                    end,
                };
                j.join.take(j.rule, message, j.now, settings, out);
            }
            _ if !(self.split && self.buf.is_empty()) => emit(
                out,
                &self.buf,
                self.timestamp,
                self.stream,
                self.offset,
                end,
                &settings.path,
            ),
            _ => {}
        }
        if self.discarded > 0 {
            telemetry::oversize_truncated(
                &settings.path,
                self.first_offset,
                settings.max_line_bytes,
                self.discarded,
            );
        }
        self.open = false;
        self.buf.clear();
        if self.buf.capacity() > RETAIN_BYTES {
            self.buf = Vec::new();
        }
    }

    /// Appends to `buf`, growing its capacity geometrically but never past `max`.
    fn extend(&mut self, bytes: &[u8], max: usize) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = (self.buf.capacity() * 2).clamp(need, max.max(need));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
