//! Reading one followed file: bytes -> physical lines -> the parser -> one batch per turn.
//!
//! A turn reads at most the read budget, so one file with a large backlog cannot hold the reader
//! (the tailer gives every file a turn in round-robin order). Reads use `pread` at an explicit
//! offset into the tailer's shared scratch buffer; the only per-file memory between turns is the
//! incomplete last line, which is bounded by `max_line_bytes`: a longer line is handed to the
//! parser in pieces.
//!
//! Acknowledgement ranges: every turn's batch covers `[ack_start, end)` where `end` is the start
//! of the first byte not yet final — the incomplete line, or the parser's pending partial or
//! multiline record (`LineParser::ack_end`). Consecutive batches are adjacent, so the ack path
//! sees every byte exactly once.
//!
//! Multiline records wait for time as well as for lines: a turn that reads to the end of the
//! file ships the ones that waited `flush_timeout` ([`TailedFile::expire`] does the same for a
//! file the tailer finds idle), and every turn ships a stream's record once the file's other
//! stream is `flush_timeout` further on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::ack::FileKey;
use crate::buffer::Holder;
use crate::parse::{Carry, Line, LineParser, Piece};
use crate::record::{Batch, IdPrefix};
use crate::source::{FileIdentity, Source};
use crate::tail::fingerprint;
use crate::tail::gzip::GzContent;
use crate::telemetry::{self, metrics};
use crate::timestamp::Timestamp;

/// How the file's content is read.
pub enum Content {
    /// The file is the content: `pread` at any offset.
    Plain,
    /// A gzipped rotated generation, read forward through its decoder; offsets are in the
    /// decompressed content.
    Gzip(Box<GzContent>),
    /// A gzipped generation found damaged: everything before the damage was read, nothing more
    /// will be.
    GzipDamaged,
}

impl Content {
    pub fn is_gzip(&self) -> bool {
        !matches!(self, Content::Plain)
    }

    fn read_at(&mut self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Content::Plain => file.read_at(buf, offset),
            Content::Gzip(gz) => gz.read_at(buf, offset),
            Content::GzipDamaged => Ok(0),
        }
    }
}

/// Whether the file is still the one its path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// The path names this file.
    Live,
    /// Renamed away or deleted at `since`: read to the end, then let go after `rotate_wait`.
    Detached { since: Instant },
}

/// One followed file generation.
pub struct TailedFile {
    pub key: FileKey,
    /// The path it was discovered under.
    pub path: PathBuf,
    /// What `path` resolved to when opened (the file behind a symlink), if different.
    pub target: Option<PathBuf>,
    pub file: File,
    /// Plain, or a gzipped generation.
    pub content: Content,
    pub identity: FileIdentity,
    /// Birth time of the file this content was first read from (see
    /// [`fingerprint::id_prefix`]).
    pub born: i64,
    /// Held back until the older generations of its container are read (see
    /// `tail::generations`): not read, whatever polls see.
    pub held: bool,
    /// Found shorter than a fingerprint next to a file it could be a copy of (copytruncate):
    /// since when it waits for its first bytes to tell (see `Tailer::settle_copy`).
    pub copy_pending: Option<Instant>,
    /// What its batches hold of the memory budget now (see `Tailer::over_fair_share`).
    pub holder: Holder,
    pub source: Arc<Source>,
    pub parser: LineParser,
    /// Offset of the next byte to read.
    pub read_offset: u64,
    /// Start of the next batch's ack range: the end of the previous one.
    pub ack_start: u64,
    /// The incomplete last line: file bytes `[read_offset - tail.len(), read_offset)`.
    tail: Vec<u8>,
    /// The incomplete line was already handed to the parser in pieces (it exceeded
    /// `max_line_bytes`); `tail` holds only its unhanded rest.
    in_piece: bool,
    /// Whether a read may find bytes (the last turn stopped at the budget, or a poll saw growth).
    pub readable: bool,
    pub attachment: Attachment,
    /// When bytes were last read, to know when a detached file has gone quiet.
    pub last_read: Instant,
    /// Truncations this file went through while followed (see [`IdPrefix`]).
    pub truncations: u32,
    /// This generation's document id prefix, computed when its first record is sent (only then
    /// is its first line complete).
    id_prefix: Option<IdPrefix>,
    /// The per-file document fragment batches carry: the source's, or the enriched one.
    pub fragment: Arc<str>,
    /// The enrichment cache version `fragment` was rendered at (`u64::MAX`: never).
    pub meta_version: u64,
    /// The pod's metadata was found (at least once).
    pub enriched: bool,
    /// When the file was opened: how long it has waited for its pod's metadata.
    pub opened: Instant,
    /// It waited `wait_for_metadata` in vain; it is read now, and counted once.
    pub waited_out: bool,
    /// Its container's rate limit and what it owes or dropped.
    pub limit: super::limits::FileLimit,
    /// How far behind it is (sampled about once a second).
    pub lag: super::lag::Lag,
    /// Its size at the last `fstat`.
    pub size: u64,
    /// It has no name left (its link count was 0 at the last `fstat`): only logship keeps its
    /// data on disk.
    pub deleted: bool,
    /// Its container's parser and multiline hints, and what filters need of its metadata.
    pub processing: crate::process::FileProcessing,
    /// Read from its first byte and not read yet: a multiline record the previous generation of
    /// its file ended in may go on here (see `Tailer::take_carry`).
    pub awaits_carry: bool,
    /// Told of a longer fingerprint as soon as a read passes the bytes the current one covers,
    /// before any of those bytes can be acknowledged: a stored offset is always guarded by a
    /// fingerprint at least as long (see [`fingerprint::guards`]).
    pub positions: Option<crate::tail::positions::Positions>,
}

/// What one turn did.
pub struct Turn {
    /// The records read, with their ack range; may have no records but a range to acknowledge
    /// (empty lines) or be empty altogether.
    pub batch: Batch,
    /// Bytes read from the file.
    pub bytes: usize,
    /// The read reached the end of the file.
    pub eof: bool,
    /// A read failed after the bytes above; they are still in the batch.
    pub error: Option<io::Error>,
}

impl TailedFile {
    pub fn new(
        key: FileKey,
        path: PathBuf,
        file: File,
        identity: FileIdentity,
        source: Arc<Source>,
        parser: LineParser,
        offset: u64,
    ) -> Self {
        let fragment = Arc::clone(&source.fragment);
        TailedFile {
            key,
            path,
            target: None,
            file,
            content: Content::Plain,
            identity,
            born: 0,
            held: false,
            copy_pending: None,
            holder: Holder::default(),
            source,
            parser,
            read_offset: offset,
            ack_start: offset,
            tail: Vec::new(),
            in_piece: false,
            readable: true,
            attachment: Attachment::Live,
            last_read: Instant::now(),
            truncations: 0,
            id_prefix: None,
            fragment,
            meta_version: u64::MAX,
            enriched: false,
            opened: Instant::now(),
            waited_out: false,
            limit: Default::default(),
            lag: Default::default(),
            size: offset,
            deleted: false,
            processing: Default::default(),
            awaits_carry: offset == 0,
            positions: None,
        }
    }

    /// Reads up to `budget` bytes and parses every complete line (and every full piece of an
    /// over-long one). `scratch` is the tailer's buffer, reused across files and turns.
    pub fn read_turn(&mut self, scratch: &mut Vec<u8>, budget: usize, max_line: usize) -> Turn {
        let now = Timestamp::now();
        let tail_len = self.tail.len();
        scratch.clear();
        scratch.extend_from_slice(&self.tail);
        self.tail.clear();
        scratch.resize(tail_len + budget, 0);
        let mut filled = tail_len;
        let mut eof = false;
        let error = loop {
            if filled == scratch.len() {
                break None;
            }
            match self
                .content
                .read_at(&self.file, &mut scratch[filled..], self.read_offset)
            {
                Ok(0) => {
                    eof = true;
                    break None;
                }
                Ok(n) => {
                    filled += n;
                    self.read_offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.content.is_gzip() => {
                    // Damage does not heal: ship what came before it, as if the content ended
                    // there, and never read this file again.
                    self.content = Content::GzipDamaged;
                    telemetry::add(&metrics().gzip_damaged, 1);
                    tracing::warn!(path = %self.path.display(), offset = self.read_offset, error = %e, "Gzipped rotated log file is damaged (corrupt or truncated); shipping what precedes the damage, the rest cannot be read.");
                    eof = true;
                    break None;
                }
                Err(e) => break Some(e),
            }
        };
        scratch.truncate(filled);
        self.extend_fingerprint();
        let bytes = filled - tail_len;
        if bytes > 0 {
            self.last_read = Instant::now();
        }
        telemetry::add(&metrics().bytes_read, bytes as u64);

        let base = self.read_offset - filled as u64;
        let mut batch = Batch::new(Arc::clone(&self.source), self.key, self.ack_start);
        batch.text.reserve(filled);
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &scratch[pos..]) {
            let line_end = pos + nl;
            self.emit_line(
                &scratch[pos..line_end],
                base + pos as u64,
                true,
                max_line,
                now,
                &mut batch,
            );
            pos = line_end + 1;
        }
        // The incomplete rest: hand over full pieces so no more than max_line bytes wait here.
        let rest = &scratch[pos..];
        let whole_pieces = rest.len() / max_line * max_line;
        if whole_pieces > 0 {
            self.emit_line(
                &rest[..whole_pieces],
                base + pos as u64,
                false,
                max_line,
                now,
                &mut batch,
            );
            pos += whole_pieces;
        }
        self.tail.extend_from_slice(&scratch[pos..]);
        if self.tail.is_empty() && self.tail.capacity() > 4096 {
            // Thousands of idle files must not each keep a line buffer.
            self.tail = Vec::new();
        }
        if eof {
            // Nothing more to read: a record that waited its flush_timeout is done.
            self.parser.expire(now, &mut batch);
        } else {
            self.parser.close_stale(&mut batch);
        }
        self.close_batch(&mut batch);
        // Bytes read before an error are delivered all the same.
        Turn {
            batch,
            bytes,
            eof,
            error,
        }
    }

    /// A young file's fingerprint covers more once the read passed it.
    fn extend_fingerprint(&mut self) {
        let current = self.identity.fingerprint;
        if current.len >= fingerprint::FINGERPRINT_BYTES
            || self.read_offset <= u64::from(current.len)
            || self.content.is_gzip()
        {
            return;
        }
        if let Ok(Some(longer)) = fingerprint::extend(&self.file, current, self.read_offset) {
            if longer.len as usize >= fingerprint::FINGERPRINT_BYTES as usize
                || u64::from(longer.len) >= self.read_offset
            {
                self.identity.fingerprint = longer;
                if let Some(positions) = &self.positions {
                    positions.update_fingerprint(self.key, longer);
                }
            }
        }
    }

    /// Hands a line (complete: its newline follows `bytes`) or the full pieces of an incomplete
    /// one to the parser, cutting anything longer than `max_line` into pieces.
    fn emit_line(
        &mut self,
        bytes: &[u8],
        offset: u64,
        complete: bool,
        max_line: usize,
        now: Timestamp,
        batch: &mut Batch,
    ) {
        let mut at = 0;
        // Pieces while more than max_line remains (or all of it, for an incomplete line's
        // whole pieces); the last piece of a complete line carries the newline.
        while bytes.len() - at > max_line || (!complete && at < bytes.len()) {
            let piece = if self.in_piece {
                Piece::Middle
            } else {
                Piece::First
            };
            let chunk = &bytes[at..at + max_line];
            let start = offset + at as u64;
            self.parser.push(
                Line {
                    bytes: chunk,
                    piece,
                    offset: start,
                    end: start + max_line as u64,
                },
                now,
                batch,
            );
            self.in_piece = true;
            at += max_line;
        }
        if complete {
            let piece = if self.in_piece {
                Piece::Last
            } else {
                Piece::Whole
            };
            let start = offset + at as u64;
            let end = offset + bytes.len() as u64 + 1;
            self.parser.push(
                Line {
                    bytes: &bytes[at..],
                    piece,
                    offset: start,
                    end,
                },
                now,
                batch,
            );
            self.in_piece = false;
        }
    }

    /// Ends the batch's ack range at the first byte that is not final yet.
    fn close_batch(&mut self, batch: &mut Batch) {
        let consumed = self.read_offset - self.tail.len() as u64;
        let end = self.parser.ack_end(consumed).max(self.ack_start);
        batch.ack.end = end;
        self.ack_start = end;
    }

    /// The file is idle (read to its end, not grown since): ships the multiline records that
    /// waited `flush_timeout` for a line at `now`, in a batch that acknowledges what they held
    /// back. The tailer calls it once the parser's deadline has passed.
    pub fn expire(&mut self, now: Timestamp) -> Batch {
        let mut batch = Batch::new(Arc::clone(&self.source), self.key, self.ack_start);
        self.parser.expire(now, &mut batch);
        self.close_batch(&mut batch);
        batch
    }

    /// The file is let go: its incomplete last line (no newline will come) and any pending
    /// partial record are emitted, and the batch acknowledges everything read.
    pub fn finish(&mut self, max_line: usize) -> Batch {
        let now = Timestamp::now();
        let mut batch = Batch::new(Arc::clone(&self.source), self.key, self.ack_start);
        if !self.tail.is_empty() || self.in_piece {
            let tail = std::mem::take(&mut self.tail);
            let offset = self.read_offset - tail.len() as u64;
            self.emit_line(&tail, offset, true, max_line, now, &mut batch);
        }
        self.parser.flush(now, &mut batch);
        // A record carried into the next generation acknowledges the rest of this one.
        let end = match self.parser.carried_away() {
            Some((start, _)) => start,
            None => self.read_offset,
        };
        batch.ack.end = end.max(self.ack_start);
        self.ack_start = batch.ack.end;
        batch
    }

    /// Where this generation's range ends once everything of it is acknowledged: what was
    /// read, or the end of the range a record carried into the next generation covers.
    pub fn release_end(&self) -> u64 {
        self.parser
            .carried_away()
            .map_or(self.read_offset, |(_, end)| end.max(self.read_offset))
    }

    /// Takes the multiline record this generation ends in, to go on in the next one (see
    /// `LineParser::carry_out`): only once it is read to its end, with no incomplete line.
    pub fn carry_out(&mut self, node_name: &str) -> Option<Carry> {
        if !self.drained() || !self.tail.is_empty() || self.in_piece {
            return None;
        }
        self.parser.pending_start()?;
        let prefix = self.prefix(node_name);
        self.parser.carry_out(prefix, self.key, self.read_offset)
    }

    /// Marks `batch` with this generation's document id prefix.
    pub fn stamp(&mut self, batch: &mut Batch, node_name: &str) {
        if batch.records.is_empty() {
            return;
        }
        batch.id_prefix = self.prefix(node_name);
        batch.fragment = Arc::clone(&self.fragment);
    }

    /// This generation's document id prefix, computed the first time it is asked for.
    fn prefix(&mut self, node_name: &str) -> IdPrefix {
        match self.id_prefix {
            Some(p) => p,
            None => {
                // An unreadable first line (an I/O error) still gets a stable prefix from the
                // other parts; the CRC only separates reused inodes.
                let crc =
                    fingerprint::first_line_crc(&self.file, self.content.is_gzip()).unwrap_or(0);
                let p =
                    fingerprint::id_prefix(node_name, &self.path, self.born, crc, self.truncations);
                self.id_prefix = Some(p);
                p
            }
        }
    }

    /// Read to its end and not held: the next generation of its container may start. A gzipped
    /// one ends where its content (or the damage) does; a plain one when it has no byte past
    /// the read offset at the last poll.
    pub fn drained(&self) -> bool {
        !self.held && !self.readable && (self.content.is_gzip() || self.size <= self.read_offset)
    }

    /// This generation's document id prefix, if a record of it was stamped.
    pub fn id_prefix(&self) -> Option<IdPrefix> {
        self.id_prefix
    }

    /// Takes the document id prefix of the generation this file is a copy of (logrotate's
    /// copytruncate), so a record read from both has one id.
    pub fn inherit_id_prefix(&mut self, prefix: IdPrefix) {
        self.id_prefix = Some(prefix);
    }

    /// Bytes of the incomplete last line held in memory.
    pub fn held_bytes(&self) -> usize {
        self.tail.capacity()
    }

    /// Starts over at offset 0 as generation `key` (the file was truncated).
    pub fn restart(&mut self, key: FileKey, identity: FileIdentity, parser: LineParser) {
        self.key = key;
        self.identity = identity;
        self.parser = parser;
        self.read_offset = 0;
        self.ack_start = 0;
        self.tail = Vec::new();
        self.in_piece = false;
        self.readable = true;
        self.truncations = self.truncations.wrapping_add(1);
        self.id_prefix = None;
        // What was before the truncation is gone: nothing goes on from it.
        self.awaits_carry = false;
        self.lag = Default::default();
        // A new line parser: it gets the multiline hint again.
        self.processing.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{FormatChoice, Oversize};
    use crate::tail::positions::{Origin, Positions};
    use std::io::Write;
    use std::path::Path;

    fn tailed(path: &Path, gzip: bool, positions: &Positions) -> TailedFile {
        let file = File::open(path).unwrap();
        let identity = fingerprint::identify_content(&file, gzip).unwrap();
        let source = Arc::new(Source {
            path: path.to_path_buf(),
            kubelet: None,
            fragment: Arc::from("{}"),
        });
        let parser = LineParser::new(FormatChoice::Raw, 1024, Oversize::Split, Arc::from(path));
        positions.register(FileKey(1), identity, path, None, Origin::default());
        let mut f = TailedFile::new(
            FileKey(1),
            path.to_path_buf(),
            file,
            identity,
            source,
            parser,
            0,
        );
        if gzip {
            f.content = Content::Gzip(Box::new(GzContent::open(&f.file).unwrap()));
        }
        f.positions = Some(positions.clone());
        f
    }

    fn messages(batch: &Batch) -> Vec<&str> {
        batch
            .records
            .iter()
            .map(|r| &batch.text[r.message.clone()])
            .collect()
    }

    /// A file opened empty and read at once after its first write: the read itself extends the
    /// fingerprint (and the stored one), so the position it leads to is guarded by it.
    #[test]
    fn a_read_past_the_fingerprint_extends_it_before_anything_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("young.log");
        std::fs::write(&path, b"").unwrap();
        let positions = Positions::new();
        let mut f = tailed(&path, false, &positions);
        assert_eq!(f.identity.fingerprint.len, 0);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        for i in 0..40 {
            writeln!(w, "line number {i}").unwrap();
        }
        let turn = f.read_turn(&mut Vec::new(), 64 * 1024, 1024);
        assert_eq!(turn.batch.records.len(), 40);
        assert_eq!(f.identity.fingerprint.len, fingerprint::FINGERPRINT_BYTES);
        let stored = positions.lookup(f.identity.dev, f.identity.inode).unwrap();
        assert_eq!(stored.fingerprint, f.identity.fingerprint);
        assert!(fingerprint::guards(stored.fingerprint, turn.batch.ack.end));
    }

    /// The same lines, plain or gzipped, are the same records at the same offsets: same ids.
    #[test]
    fn a_gzipped_generation_reads_as_the_plain_one_did() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("0.log.1");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("0.log.1.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let read_all = |path: &Path, gzip: bool| {
            let mut f = tailed(path, gzip, &Positions::new());
            let mut got = Vec::new();
            loop {
                let turn = f.read_turn(&mut Vec::new(), 4096, 1024);
                got.extend(
                    messages(&turn.batch)
                        .iter()
                        .zip(&turn.batch.records)
                        .map(|(m, r)| (m.to_string(), r.offset, r.end)),
                );
                if turn.eof {
                    break;
                }
            }
            f.stamp(&mut Batch::new(Arc::clone(&f.source), f.key, 0), "n");
            (got, f.identity.fingerprint)
        };
        let (plain_records, plain_fp) = read_all(&plain, false);
        let (gz_records, gz_fp) = read_all(&gz, true);
        assert_eq!(plain_records.len(), 5000);
        assert_eq!(plain_records, gz_records);
        assert_eq!(plain_fp, gz_fp, "identity comes from content");
        assert_eq!(
            fingerprint::first_line_crc(&File::open(&plain).unwrap(), false).unwrap(),
            fingerprint::first_line_crc(&File::open(&gz).unwrap(), true).unwrap()
        );
    }
}
