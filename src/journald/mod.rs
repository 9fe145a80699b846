//! The systemd journal as a source: the node's kubelet and container runtime, a VM's services.
//!
//! One plain thread (`journald`) reads the journal files in place (`file`: a reader of systemd's
//! documented file format, no libsystemd and no journalctl; docs/ARCHITECTURE.md, "The
//! journal", says why), makes a batch of records from each turn of each file (`render`), takes it
//! through processing and sends it to the sink over the same channel and memory budget as the
//! tailer's batches.
//!
//! **Positions.** A journal file only ever gets entries appended, and its header's file id stays
//! when journald renames it at rotation, so "the first N entries of file F" is an exact position:
//! each batch's ack token covers a range of entry indices of one file, exactly as a file batch
//! covers a range of bytes, and the positions table moves a file's count only when every entry
//! before it is acknowledged. Entries the filters leave out are inside the ranges. A record's
//! document id is made of the file's id and the entry's index, so a re-send is idempotent.
//!
//! **Files.** The directories are scanned every second: a new file is read from its first entry
//! (or, at the very first start, from `read_from`), a known one from its stored count. A file
//! deleted while followed (vacuumed) is read to its end through the descriptor held, then let
//! go. A file in the positions table that is gone at a scan was vacuumed before it was read to
//! its end: the entries lost are counted and warned about, and reading goes on with the files
//! that are there.

pub mod file;
mod render;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckToken, FileKey};
use crate::buffer::Budget;
use crate::document::Encoder;
use crate::process::{FileProcessing, ProcessingSettings, Processor};
use crate::record::{Batch, IdPrefix};
use crate::source::Source;
use crate::telemetry::{self, metrics, Loop};

use file::{Entry, JournalFile, State};
use render::Renderer;

/// Journal file keys start here, far from the tailer's (which count up from 1), so that the
/// acknowledgements of both go to one table without a clash.
const FIRST_KEY: u64 = 1 << 62;
/// Entries read from one file in one turn, at most: one file's backlog cannot hold back another.
const TURN_ENTRIES: u64 = 2048;
/// Bytes of records (messages and their own fields) read from one file in one turn, at most:
/// `tail.read_budget`'s default, so that two turns fit in the smallest memory budget.
const TURN_BYTES: usize = 256 * 1024;
/// How often the directories are looked at for new and deleted files.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long the reader waits for the memory budget before it beats and looks again.
const BUDGET_WAIT: Duration = Duration::from_millis(100);
/// How long it sleeps when the channel to the sink is full.
const CHANNEL_WAIT: Duration = Duration::from_millis(10);

/// `[journald]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournaldSettings {
    /// The directories read, each with its immediate subdirectories (machine ids).
    pub directories: Vec<PathBuf>,
    /// `_SYSTEMD_UNIT` values read; empty: every entry.
    pub units: Vec<String>,
    /// `_SYSTEMD_UNIT` values left out.
    pub exclude_units: Vec<String>,
    /// Every match must hold (one of its values).
    pub matches: Vec<Match>,
    /// Kernel messages are read (also when `units` names units).
    pub kernel: bool,
    /// At the first start (no journal file stored), files start at their end (`read_from =
    /// "tail"`) instead of their first entry.
    pub from_tail: bool,
    /// Every other field under `journald.*`.
    pub all_fields: bool,
    pub poll_interval: Duration,
    /// Longer messages are truncated (`tail.max_line_bytes`), counted as an oversize line.
    pub max_message_bytes: usize,
}

/// `FIELD=value` matches of one field: an entry holds if it has the field with one of the
/// values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub field: String,
    pub values: Vec<Vec<u8>>,
}

impl JournaldSettings {
    /// Whether `entry` is read (see README, "journald").
    fn selects(&self, entry: &Entry) -> bool {
        let unit = entry.get(b"_SYSTEMD_UNIT");
        let is = |names: &[String]| unit.is_some_and(|u| names.iter().any(|n| n.as_bytes() == u));
        let kernel = entry.get(b"_TRANSPORT") == Some(b"kernel".as_slice());
        if kernel && !self.kernel {
            return false;
        }
        if !self.units.is_empty() && !is(&self.units) && !kernel {
            return false;
        }
        if is(&self.exclude_units) {
            return false;
        }
        self.matches.iter().all(|m| {
            entry.fields().any(|(name, value)| {
                name == m.field.as_bytes() && m.values.iter().any(|v| v == value)
            })
        })
    }
}

/// What a journal file's position says, as the positions table keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Entries acknowledged, from the file's first.
    pub acked: u64,
    /// The sequence number of the last entry acknowledged (0: none).
    pub seqnum: u64,
    /// Entries the file held when last seen.
    pub entries: u64,
}

/// What the reader needs of the positions table. The agent wires `tail::positions` in.
pub trait Cursors: Send + Sync {
    /// The stored position of the file `file_id` (32 hex digits).
    fn lookup(&self, file_id: &str) -> Option<Stored>;
    /// Whether any journal file is stored (a file not stored is then new, not history).
    fn known(&self) -> bool;
    /// Starts tracking the file `file_id` under `key`, read from entry `from.acked`.
    fn register(&self, key: FileKey, file_id: &str, path: &Path, seqnum_id: &str, from: Stored);
    /// The file read under `key` holds `entries` entries now, under `path`.
    fn seen(&self, key: FileKey, path: &Path, entries: u64);
    /// The entry before index `end` of the file read under `key` has sequence number `seqnum`.
    fn seqnum(&self, key: FileKey, end: u64, seqnum: u64);
    /// The file under `key` is let go: forgotten as current once all of it is acknowledged.
    fn release(&self, key: FileKey);
    /// Forgets stored files whose id is not among `existing` and that no key reads; returns
    /// each one's path and the entries it held unread.
    fn prune(&self, existing: &HashSet<String>) -> Vec<(PathBuf, u64)>;
    /// Acknowledges a range no record of which is sent (every entry filtered out).
    fn ack(&self, token: AckToken);
}

/// Everything the reader is built from.
pub struct JournaldParts {
    pub settings: JournaldSettings,
    pub cursors: Arc<dyn Cursors>,
    pub encoder: Arc<Encoder>,
    pub budget: Budget,
    pub out: Sender<Batch>,
    pub stop: CancellationToken,
    pub node_name: String,
    pub processing: ProcessingSettings,
}

/// A journal file being read.
struct Followed {
    key: FileKey,
    file: JournalFile,
    path: PathBuf,
    dev_ino: (u64, u64),
    /// The index of the next entry to read.
    next: u64,
    /// Where the entry list is walked from: at `next`.
    cursor: file::Cursor,
    prefix: IdPrefix,
    source: Arc<Source>,
    /// Not found at the last scan: read to its end, then let go.
    deleted: bool,
    /// The last read error, so that a broken file warns once, not every poll.
    failing: bool,
    /// An entry that could not be read at the last try: tried once more before it is skipped.
    retry: Option<u64>,
}

/// The reader thread's state.
pub struct Journald {
    settings: JournaldSettings,
    cursors: Arc<dyn Cursors>,
    encoder: Arc<Encoder>,
    budget: Budget,
    out: Sender<Batch>,
    stop: CancellationToken,
    node_name: String,
    processor: Processor,
    processing: FileProcessing,
    files: Vec<Followed>,
    next_key: u64,
    entry: Entry,
    renderer: Renderer,
    /// Paths that could not be opened: why, and at how many scans in a row.
    unreadable: HashMap<PathBuf, (String, u32)>,
}

impl Journald {
    pub fn new(parts: JournaldParts) -> Self {
        let mut processor = Processor::new(parts.processing);
        let mut processing = FileProcessing::default();
        // No pod, no hints: the configured parser, once.
        processor.resolve(&mut processing, Path::new("journald"), None, None);
        Journald {
            settings: parts.settings,
            cursors: parts.cursors,
            encoder: parts.encoder,
            budget: parts.budget,
            out: parts.out,
            stop: parts.stop,
            node_name: parts.node_name,
            processor,
            processing,
            files: Vec::new(),
            next_key: FIRST_KEY,
            entry: Entry::new(),
            renderer: Renderer::default(),
            unreadable: HashMap::new(),
        }
    }

    /// Reads until the stop token is cancelled. Dropping the reader closes its end of the
    /// batch channel.
    pub fn run(mut self) {
        let dirs: Vec<String> = self
            .settings
            .directories
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        tracing::info!(directories = ?dirs, units = ?self.settings.units, "Reading the systemd journal.");
        let present: Vec<&PathBuf> = self
            .settings
            .directories
            .iter()
            .filter(|d| d.is_dir())
            .collect();
        if present.is_empty() {
            tracing::warn!(directories = ?dirs, "No journal directory exists (yet); journal files are read once one appears. On Kubernetes, mount the node's /var/log/journal and /run/log/journal (deploy/overlays/node-journal).");
        }
        // At the first start (no journal file stored yet), files found now follow `read_from`.
        let mut first = !self.cursors.known();
        let mut last_scan: Option<Instant> = None;
        while !self.stop.is_cancelled() {
            telemetry::beat(Loop::Journald);
            if last_scan.is_none_or(|t| t.elapsed() >= SCAN_INTERVAL) {
                self.scan(first);
                first = false;
                last_scan = Some(Instant::now());
            }
            match self.round() {
                Ok(true) => {}
                Ok(false) => self.idle(),
                Err(Stopped) => break,
            }
        }
    }

    /// Sleeps one poll interval, in steps that keep the heartbeat and see the stop token.
    fn idle(&self) {
        let until = Instant::now() + self.settings.poll_interval;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.is_cancelled() {
                return;
            }
            std::thread::sleep(left.min(telemetry::HEARTBEAT_PERIOD));
            telemetry::beat(Loop::Journald);
        }
    }

    /// Looks at the directories: opens new files, notices deleted ones, counts what was
    /// vacuumed unread.
    fn scan(&mut self, first: bool) {
        let mut found: Vec<(PathBuf, (u64, u64))> = Vec::new();
        for dir in &self.settings.directories {
            journal_files(dir, &mut found);
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        journal_files(&entry.path(), &mut found);
                    }
                }
            }
        }
        let seen: HashSet<(u64, u64)> = found.iter().map(|(_, k)| *k).collect();
        let paths: HashSet<PathBuf> = found.iter().map(|(p, _)| p.clone()).collect();
        self.unreadable.retain(|p, _| paths.contains(p));
        let mut unopened = 0;
        for f in &mut self.files {
            f.deleted = !seen.contains(&f.dev_ino);
        }
        let mut ids: HashSet<String> = self
            .files
            .iter()
            .map(|f| hex(&f.file.header().file_id))
            .collect();
        for (path, dev_ino) in found {
            if let Some(f) = self.files.iter_mut().find(|f| f.dev_ino == dev_ino) {
                if f.path != path {
                    // journald renamed it at rotation (`system@….journal`).
                    f.path = path;
                }
                continue;
            }
            match JournalFile::open(&path) {
                Ok(file) => {
                    self.unreadable.remove(&path);
                    let id = hex(&file.header().file_id);
                    if !ids.insert(id.clone()) {
                        continue;
                    }
                    self.follow(file, path, dev_ino, &id, first);
                }
                Err(e) => {
                    unopened += 1;
                    // A file journald is creating this moment has no header yet: the same
                    // error at the next scan too is what is warned about, once.
                    let why = e.to_string();
                    let (last, times) = self.unreadable.entry(path.clone()).or_default();
                    if *last != why {
                        *last = why;
                        *times = 0;
                    }
                    *times += 1;
                    if *times == 2 {
                        tracing::warn!(path = %path.display(), error = %last, "Cannot read this journal file; it is skipped until it can be.");
                        telemetry::add(&metrics().journald_file_errors, 1);
                    }
                }
            }
        }
        // A file that cannot be opened may be one the table knows: nothing is taken for
        // vacuumed while one cannot be told from the other.
        let pruned = if unopened == 0 {
            self.cursors.prune(&ids)
        } else {
            Vec::new()
        };
        for (path, lost) in pruned {
            if lost > 0 {
                tracing::warn!(path = %path.display(), entries = lost, "A journal file was deleted (vacuumed) before logship read it to its end; its unread entries are lost. Reading goes on from the oldest file there is.");
                telemetry::add(&metrics().journald_vacuumed_entries, lost);
            }
        }
        telemetry::set_gauge(&metrics().journald_files, self.files.len() as u64);
    }

    /// Starts reading `file`, found at `path`.
    fn follow(
        &mut self,
        file: JournalFile,
        path: PathBuf,
        dev_ino: (u64, u64),
        id: &str,
        first: bool,
    ) {
        let header = file.header();
        let entries = header.n_entries;
        let stored = self.cursors.lookup(id);
        let from = match stored {
            Some(stored) if stored.acked <= entries => stored.acked,
            Some(stored) => {
                tracing::warn!(path = %path.display(), acked = stored.acked, entries, "A journal file holds fewer entries than its stored position; it is read again from its first entry (the documents keep their ids).");
                0
            }
            None if first && self.settings.from_tail => entries,
            None => 0,
        };
        let seqnum = stored.filter(|s| s.acked == from).map_or(0, |s| s.seqnum);
        let key = FileKey(self.next_key);
        self.next_key += 1;
        self.cursors.register(
            key,
            id,
            &path,
            &hex(&header.seqnum_id),
            Stored {
                acked: from,
                seqnum,
                entries,
            },
        );
        let prefix = id_prefix(&self.node_name, &header.file_id);
        let source = Arc::new(Source {
            path: path.clone(),
            kubelet: None,
            fragment: "".into(),
        });
        tracing::debug!(path = %path.display(), from, entries, "Following a journal file.");
        self.files.push(Followed {
            key,
            file,
            path,
            dev_ino,
            next: from,
            cursor: file::Cursor::new(from),
            prefix,
            source,
            deleted: false,
            failing: false,
            retry: None,
        });
    }

    /// One turn of every file. `Ok(true)` if any entry was read.
    fn round(&mut self) -> Result<bool, Stopped> {
        let mut any = false;
        let mut i = 0;
        while i < self.files.len() {
            if self.stop.is_cancelled() {
                return Err(Stopped);
            }
            let header = self.files[i].file.header();
            // An archived file read to its end never changes again: no need to look.
            let settled = header.state == State::Archived && self.files[i].next >= header.n_entries;
            if settled {
                if self.files[i].deleted {
                    let f = self.files.remove(i);
                    tracing::debug!(path = %f.path.display(), "A deleted journal file was read to its end.");
                    self.cursors.release(f.key);
                    continue;
                }
                i += 1;
                continue;
            }
            if let Err(e) = self.files[i].file.refresh() {
                let f = &mut self.files[i];
                if !f.failing {
                    tracing::warn!(path = %f.path.display(), error = %e, "Cannot read a journal file's header; trying again at the next poll.");
                    telemetry::add(&metrics().journald_file_errors, 1);
                    f.failing = true;
                }
                i += 1;
                continue;
            }
            let batch = self.turn(i);
            let f = &mut self.files[i];
            // Each file's cached pages serve its turn; between turns they are given back, so
            // that many files with a backlog cost no more memory than one.
            f.file.trim();
            self.cursors.seen(f.key, &f.path, f.file.header().n_entries);
            if let Some((batch, seqnum)) = batch {
                any = true;
                self.send(batch, seqnum)?;
            } else if f.deleted && f.next >= f.file.header().n_entries {
                // Read to its end and gone from the directory: let it go.
                let f = self.files.remove(i);
                tracing::debug!(path = %f.path.display(), "A deleted journal file was read to its end.");
                self.cursors.release(f.key);
                continue;
            }
            i += 1;
        }
        Ok(any)
    }

    /// Reads one turn of file `i` into a batch, with the seqnum of its last entry; `None` if it
    /// has no new entry.
    fn turn(&mut self, i: usize) -> Option<(Batch, u64)> {
        let f = &mut self.files[i];
        if f.next >= f.file.header().n_entries {
            return None;
        }
        let start = f.next;
        let mut batch = Batch::new(Arc::clone(&f.source), f.key, start);
        batch.id_prefix = f.prefix;
        let mut seqnum = 0;
        let mut read = 0u64;
        while read < TURN_ENTRIES && batch.text.len() + batch.own.len() < TURN_BYTES {
            let index = f.cursor.index();
            let offset = match f.file.next_entry(&mut f.cursor) {
                Ok(Some(offset)) => offset,
                Ok(None) => break,
                Err(e) => {
                    if !f.failing {
                        tracing::warn!(path = %f.path.display(), index, error = %e, "Cannot follow a journal file's entry list; trying again at the next poll.");
                        telemetry::add(&metrics().journald_file_errors, 1);
                        f.failing = true;
                    }
                    break;
                }
            };
            read += 1;
            match f.file.read_entry(offset, &mut self.entry) {
                Ok(()) => {
                    f.failing = false;
                    f.retry = None;
                    seqnum = self.entry.seqnum;
                    if self.settings.selects(&self.entry) {
                        let cut = self.renderer.push(
                            &mut batch,
                            &self.entry,
                            index,
                            &self.node_name,
                            &self.settings,
                        );
                        if cut > 0 {
                            telemetry::oversize_truncated(
                                &f.path,
                                index,
                                self.settings.max_message_bytes,
                                cut as u64,
                            );
                        }
                    } else {
                        telemetry::add(&metrics().journald_entries_skipped, 1);
                    }
                }
                Err(e) if f.retry != Some(index) => {
                    // Perhaps a header read while the writer was still at work: the turn ends
                    // before the entry, which is read again after the next look at the header.
                    tracing::debug!(path = %f.path.display(), index, error = %e, "A journal entry cannot be read; trying again at the next poll.");
                    f.retry = Some(index);
                    f.cursor = file::Cursor::new(index);
                    read -= 1;
                    break;
                }
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), index, error = %e, "A journal entry cannot be read, also after a second look; it is skipped.");
                    telemetry::add(&metrics().journald_entry_errors, 1);
                    f.retry = None;
                }
            }
            batch.ack.end = index + 1;
        }
        if batch.ack.end == start {
            return None;
        }
        f.next = batch.ack.end;
        telemetry::add(&metrics().journald_entries_read, read);
        telemetry::add(&metrics().records_read, batch.records.len() as u64);
        let fragment = Arc::clone(&batch.fragment);
        self.processor
            .process(&mut self.processing, &fragment, &self.encoder, &mut batch);
        Some((batch, seqnum))
    }

    /// Sends a batch once the memory budget has room for it, beating while it waits. A batch
    /// with no record only acknowledges its range.
    fn send(&mut self, mut batch: Batch, seqnum: u64) -> Result<(), Stopped> {
        if seqnum > 0 {
            self.cursors.seqnum(batch.ack.file, batch.ack.end, seqnum);
        }
        if batch.records.is_empty() {
            self.cursors.ack(batch.ack);
            return Ok(());
        }
        let bytes = batch.memory_bytes();
        let permit = loop {
            if self.stop.is_cancelled() {
                return Err(Stopped);
            }
            telemetry::beat(Loop::Journald);
            if let Ok(p) = self.budget.acquire(bytes, BUDGET_WAIT) {
                break p;
            }
        };
        batch.permit = Some(permit);
        loop {
            match self.out.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Stopped),
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    if self.stop.is_cancelled() {
                        return Err(Stopped);
                    }
                    telemetry::beat(Loop::Journald);
                    std::thread::sleep(CHANNEL_WAIT);
                }
            }
        }
    }
}

/// The reader was told to stop (or the sink is gone).
#[derive(Debug)]
struct Stopped;

/// The `*.journal` and `*.journal~` files directly in `dir`, with their (device, inode).
fn journal_files(dir: &Path, out: &mut Vec<(PathBuf, (u64, u64))>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.ends_with(".journal") || name.ends_with(".journal~")) {
            continue;
        }
        let path = entry.path();
        // Not following links: journald writes plain files.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.is_file() {
                out.push((path, (meta.dev(), meta.ino())));
            }
        }
    }
}

/// The document id part of a journal file's records: the node name and the file's id.
fn id_prefix(node: &str, file_id: &[u8; 16]) -> IdPrefix {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    let mut h = SipHasher13::new_with_keys(0x6c6f_6773_6869_7031, 0x6a6f_7572_6e61_6c21);
    h.write(node.as_bytes());
    h.write(&[0xff]);
    h.write(b"journald");
    h.write(file_id);
    let hash = h.finish128().as_bytes();
    let mut prefix = [0u8; 12];
    prefix.copy_from_slice(&hash[..12]);
    IdPrefix(prefix)
}

/// 32 lower-case hex digits.
fn hex(id: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    id.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
