//! The durable position of every followed file.
//!
//! A position is the end of the longest acknowledged prefix of a file ([`crate::ack`]); only
//! acknowledgements move it. The reader registers the files it opens and asks here where to
//! resume; sinks acknowledge batches; a flusher task writes the table to
//! `<data_dir>/positions.json` at an interval and at shutdown.
//!
//! The file is written atomically: a temporary file, fsync, rename, fsync of the directory. On
//! load the temporary file is tried first, because a crash between its fsync and the rename leaves
//! the newest complete table there; a torn temporary file is ignored. The format is versioned
//! JSON, one entry per file identity, documented in the README.
//!
//! This module never reads log files and never decides offsets itself: it only stores what the
//! reader and the ack path tell it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ack::{AckRanges, AckToken, Acknowledge, FileKey};
use crate::source::{FileIdentity, Fingerprint};

/// The version written in the file; loading refuses any other but [`OLDEST_VERSION`] and later.
/// Version 2 added `born` and `size` (a version-1 file is a version-2 file without them; an older
/// logship, which refuses unknown fields, refuses version 2 as a version it does not know).
/// Version 3 added `journal` (the journal files read by `journald`).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version this logship reads.
pub const OLDEST_VERSION: u32 = 1;
const FILE_NAME: &str = "positions.json";
const TMP_NAME: &str = "positions.json.tmp";

/// Errors loading or writing the positions file.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// The file exists but cannot be read.
    #[error("reading positions file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a positions table this version understands.
    #[error("parsing positions file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer (or unknown) logship.
    #[error("positions file {path} has format version {found}, this logship reads versions {OLDEST_VERSION} to {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    /// Writing, syncing or renaming failed.
    #[error("writing positions file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The on-disk table.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PositionsFile {
    pub version: u32,
    /// When the table was written, in seconds since the Unix epoch: after a restart, what was
    /// written to log files since then was written while logship was not running. Absent in
    /// version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    pub files: Vec<StoredPosition>,
    /// The systemd journal files read (`journald`), one entry per file. Absent before version 3
    /// and when the journal is not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<StoredJournal>,
}

/// One journal file's entry on disk: the journal's cursor, per file. A journal file's entries
/// never move and only get appended, so "the first `acked` entries, in the file's order" is an
/// exact position; the file id survives journald's rename at rotation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredJournal {
    /// The file's id (its header's `file_id`, 32 hex digits).
    pub file_id: String,
    /// Where the file was last seen (informational: the id is what matches).
    pub path: PathBuf,
    /// Every entry before this index, in the file's order, was acknowledged.
    pub acked: u64,
    /// The sequence number of the last acknowledged entry (0: none); with `seqnum_id`, the
    /// `s=` and `i=` of its journal cursor.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seqnum: u64,
    /// The writer's sequence number id (32 hex digits).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seqnum_id: String,
    /// Entries the file held when last looked at: if it is gone when logship looks for it
    /// again (the journal was vacuumed), those past `acked` were deleted unread.
    pub entries: u64,
    /// When the entry last changed, in seconds since the Unix epoch (for garbage collection).
    pub updated: u64,
}

/// One file's entry on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredPosition {
    /// The path the file was last followed under (informational: identity is what matches).
    pub path: PathBuf,
    /// The file that path resolved to (kubelet's `/var/log/pods/...` file behind the
    /// `/var/log/containers` link). After a restart, a file that was renamed by rotation before it
    /// was read to its end is looked for next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    pub dev: u64,
    pub inode: u64,
    /// Length and CRC-32 of the first bytes, to tell a reused inode from the same file.
    pub fingerprint: StoredFingerprint,
    /// Every byte before this offset was acknowledged.
    pub offset: u64,
    /// How many times the file was truncated while followed (part of its records' ids, so that
    /// a file written again after a truncation never reuses the ids of what it held before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncations: u32,
    /// The birth time of the file this content was first read from (nanoseconds since the Unix
    /// epoch; 0 where unknown): part of its records' ids, kept when the file is renamed or
    /// compressed into another one. Absent in files written before it existed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub born: i64,
    /// The file's size (of its content, decompressed) when last looked at: if the file is gone
    /// when logship looks for it again, the bytes between `offset` and this were deleted unread.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    /// When the entry last changed, in seconds since the Unix epoch (for garbage collection).
    pub updated: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Where a registered generation starts, and what its records' ids are made of besides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The offset reading starts at (acknowledged up to it).
    pub offset: u64,
    /// Truncations the file went through (see [`StoredPosition::truncations`]).
    pub truncations: u32,
    /// See [`StoredPosition::born`].
    pub born: i64,
}

/// What the table remembers of a file, to resume it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The fingerprint the offset was stored with; the caller checks it against the file.
    pub fingerprint: Fingerprint,
    pub offset: u64,
    pub truncations: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredFingerprint {
    pub len: u32,
    pub crc32: u32,
}

/// The shared, in-memory positions table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Positions {
    inner: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    /// One entry per file identity (device, inode).
    entries: HashMap<(u64, u64), Entry>,
    /// The generations being followed, by key.
    keys: HashMap<FileKey, Generation>,
    /// Bumped on every change, so the flusher skips writes when nothing moved.
    generation: u64,
    /// When the loaded table was written (see [`PositionsFile::written`]).
    written: Option<SystemTime>,
    /// The journal files, by file id (see [`StoredJournal`]).
    journals: HashMap<String, JournalEntry>,
    /// The journal files being read, by key.
    journal_keys: HashMap<FileKey, JournalGeneration>,
}

#[derive(Debug)]
struct JournalEntry {
    path: PathBuf,
    acked: u64,
    seqnum: u64,
    seqnum_id: String,
    entries: u64,
    /// The key whose acks move this entry, while the file is read.
    current: Option<FileKey>,
    updated: SystemTime,
}

#[derive(Debug)]
struct JournalGeneration {
    file_id: String,
    ranges: AckRanges,
    /// The sequence number of the entry before each batch's end index, as the reader reported
    /// it (see [`Positions::journal_seqnum`]), until the prefix passes it.
    seqnums: std::collections::BTreeMap<u64, u64>,
    released: bool,
}

/// Where a journal file resumes, as the table remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalResume {
    pub acked: u64,
    pub seqnum: u64,
    pub entries: u64,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    target: Option<PathBuf>,
    fingerprint: Fingerprint,
    offset: u64,
    truncations: u32,
    born: i64,
    size: u64,
    /// The generation whose acks move this entry; a truncation replaces it with a new one.
    current: Option<FileKey>,
    updated: SystemTime,
}

impl Entry {
    /// The entry of a file read from `origin`, `size` bytes long, followed as `current`.
    fn new(
        identity: FileIdentity,
        path: &Path,
        target: Option<&Path>,
        origin: Origin,
        size: u64,
        current: Option<FileKey>,
    ) -> Entry {
        Entry {
            path: path.to_path_buf(),
            target: target.map(Path::to_path_buf),
            fingerprint: identity.fingerprint,
            offset: origin.offset,
            truncations: origin.truncations,
            born: origin.born,
            size,
            current,
            updated: SystemTime::now(),
        }
    }
}

#[derive(Debug)]
struct Generation {
    dev_ino: (u64, u64),
    ranges: AckRanges,
    /// The reader let the file go after reading up to this offset; the generation is finished
    /// (and its entry no longer current) once everything up to it is acknowledged.
    released_at: Option<u64>,
}

impl Positions {
    /// An empty table.
    pub fn new() -> Self {
        Positions {
            inner: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// A table holding the entries of a loaded file.
    pub fn from_file(file: PositionsFile) -> Self {
        let positions = Positions::new();
        {
            let mut table = positions.lock();
            // The grace period of an entry whose file is not found again counts from this start,
            // not from its last change: an idle file keeps its position across a long restart.
            let updated = SystemTime::now();
            table.written = file
                .written
                .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
            for j in file.journal {
                table.journals.insert(
                    j.file_id,
                    JournalEntry {
                        path: j.path,
                        acked: j.acked,
                        seqnum: j.seqnum,
                        seqnum_id: j.seqnum_id,
                        entries: j.entries,
                        current: None,
                        updated,
                    },
                );
            }
            for p in file.files {
                table.entries.insert(
                    (p.dev, p.inode),
                    Entry {
                        path: p.path,
                        target: p.target,
                        fingerprint: Fingerprint {
                            len: p.fingerprint.len,
                            crc32: p.fingerprint.crc32,
                        },
                        offset: p.offset,
                        truncations: p.truncations,
                        born: p.born,
                        size: p.size,
                        current: None,
                        updated,
                    },
                );
            }
        }
        positions
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the table this one was loaded from was written: logship has not been reading since.
    /// `None` for a new table (a first start) or one written before this was recorded.
    pub fn last_written(&self) -> Option<SystemTime> {
        self.lock().written
    }

    /// The stored position of the file at (dev, inode), with the fingerprint it was stored with.
    /// The caller checks the fingerprint against the file before trusting the offset.
    pub fn lookup(&self, dev: u64, inode: u64) -> Option<Resume> {
        self.lock().entries.get(&(dev, inode)).map(|e| Resume {
            fingerprint: e.fingerprint,
            offset: e.offset,
            truncations: e.truncations,
        })
    }

    /// Whether a file was ever followed under `path` (an entry names it): a new file there is
    /// a new generation of something logship reads, not history.
    pub fn knows_path(&self, path: &Path) -> bool {
        self.lock().entries.values().any(|e| e.path == path)
    }

    /// Starts tracking generation `key` of the file `identity`, read from `start`. Replaces any
    /// entry of the same (dev, inode): either it is this file (resumed), or the inode was reused
    /// (the old file is gone), or the file was truncated and restarts at 0.
    pub fn register(
        &self,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        target: Option<&Path>,
        origin: Origin,
    ) {
        let start = origin.offset;
        let mut table = self.lock();
        let dev_ino = (identity.dev, identity.inode);
        table.keys.insert(
            key,
            Generation {
                dev_ino,
                ranges: AckRanges::new(start),
                released_at: None,
            },
        );
        let entry = Entry::new(identity, path, target, origin, start, Some(key));
        table.entries.insert(dev_ino, entry);
        table.generation += 1;
    }

    /// Remembers a file that will be read from `origin` but is not followed yet (a rotated
    /// generation waiting behind older ones): if logship stops first, the next start knows it
    /// and where it starts, as it would a followed one. An entry being followed is left alone.
    pub fn remember(
        &self,
        identity: FileIdentity,
        path: &Path,
        target: Option<&Path>,
        origin: Origin,
        size: u64,
    ) {
        let mut table = self.lock();
        let dev_ino = (identity.dev, identity.inode);
        if table
            .entries
            .get(&dev_ino)
            .is_some_and(|e| e.current.is_some())
        {
            return;
        }
        let entry = Entry::new(identity, path, target, origin, size, None);
        table.entries.insert(dev_ino, entry);
        table.generation += 1;
    }

    /// The birth time stored with the file at (dev, inode), 0 if unknown.
    pub fn born(&self, dev: u64, inode: u64) -> i64 {
        self.lock().entries.get(&(dev, inode)).map_or(0, |e| e.born)
    }

    /// The stored position of a file known under `path` whose content starts with `head` (its
    /// first bytes, decompressed), whatever file holds that content now: a generation that was
    /// compressed into a new file, or renamed. Only fingerprints that guard their offset are
    /// trusted (covering at least `min(offset, 256)` bytes, and at least one byte); the longest
    /// match wins. Returns the (device, inode) the entry is stored under, its birth time and
    /// where it resumes.
    pub fn lookup_content(&self, path: &Path, head: &[u8]) -> Option<((u64, u64), i64, Resume)> {
        let table = self.lock();
        table
            .entries
            .iter()
            .filter(|(_, e)| e.path == path)
            .filter(|(_, e)| {
                let len = e.fingerprint.len as usize;
                let guarded = u64::from(e.fingerprint.len)
                    >= e.offset
                        .min(u64::from(crate::tail::fingerprint::FINGERPRINT_BYTES));
                len > 0 && guarded && head.len() >= len && {
                    let mut crc = flate2::Crc::new();
                    crc.update(&head[..len]);
                    crc.sum() == e.fingerprint.crc32
                }
            })
            .max_by_key(|(_, e)| e.fingerprint.len)
            .map(|(&dev_ino, e)| {
                (
                    dev_ino,
                    e.born,
                    Resume {
                        fingerprint: e.fingerprint,
                        offset: e.offset,
                        truncations: e.truncations,
                    },
                )
            })
    }

    /// The content stored under `from` is now in the file at `to` (it was compressed into a new
    /// file): the entry moves, so it is remembered for as long as that file exists. An entry
    /// being followed is left alone.
    pub fn rekey(&self, from: (u64, u64), to: (u64, u64)) {
        if from == to {
            return;
        }
        let mut table = self.lock();
        if table
            .entries
            .get(&from)
            .is_some_and(|e| e.current.is_none())
        {
            if let Some(entry) = table.entries.remove(&from) {
                table.entries.insert(to, entry);
                table.generation += 1;
            }
        }
    }

    /// The size of generation `key`'s file when last looked at (see [`StoredPosition::size`]).
    /// The reader reports it about once a second; it is written with the next flush.
    pub fn update_size(&self, key: FileKey, size: u64) {
        let mut table = self.lock();
        let Some(dev_ino) = table.keys.get(&key).map(|g| g.dev_ino) else {
            return;
        };
        if let Some(entry) = table.entries.get_mut(&dev_ino) {
            if entry.current == Some(key) && entry.size != size {
                entry.size = size;
                table.generation += 1;
            }
        }
    }

    /// Forgets the entries known under `path` whose file is gone (no longer among `existing`)
    /// and that no generation follows: the kubelet deleted them. Returns the bytes each held
    /// unread, as far as its stored size tells, with the path it was last seen at.
    pub fn prune_gone(
        &self,
        path: &Path,
        existing: &std::collections::HashSet<(u64, u64)>,
    ) -> Vec<(PathBuf, u64)> {
        let mut table = self.lock();
        let gone: Vec<(u64, u64)> = table
            .entries
            .iter()
            .filter(|(k, e)| e.path == path && e.current.is_none() && !existing.contains(k))
            .map(|(k, _)| *k)
            .collect();
        let mut lost = Vec::new();
        for k in gone {
            if let Some(e) = table.entries.remove(&k) {
                lost.push((e.target.unwrap_or(e.path), e.size.saturating_sub(e.offset)));
            }
            table.generation += 1;
        }
        lost
    }

    /// A young file grew and its fingerprint now covers more bytes.
    pub fn update_fingerprint(&self, key: FileKey, fingerprint: Fingerprint) {
        let mut table = self.lock();
        let Some(dev_ino) = table.keys.get(&key).map(|g| g.dev_ino) else {
            return;
        };
        if let Some(entry) = table.entries.get_mut(&dev_ino) {
            if entry.current == Some(key) {
                entry.fingerprint = fingerprint;
                table.generation += 1;
            }
        }
    }

    /// The followed file is now known under `path` (it was renamed, or found under a new link).
    pub fn update_path(&self, key: FileKey, path: &Path) {
        let mut table = self.lock();
        let Some(dev_ino) = table.keys.get(&key).map(|g| g.dev_ino) else {
            return;
        };
        if let Some(entry) = table.entries.get_mut(&dev_ino) {
            if entry.current == Some(key) && entry.path != path {
                entry.path = path.to_path_buf();
                table.generation += 1;
            }
        }
    }

    /// Acknowledges the bytes of `token`. The only way a position moves forward.
    pub fn ack(&self, token: AckToken) {
        self.lock().ack(token);
    }

    /// Acknowledges several tokens under one lock: the positions file is never written with
    /// some of them and not the others (a record a rotation cut covers two files).
    pub fn ack_all(&self, tokens: &[AckToken]) {
        let mut table = self.lock();
        for &token in tokens {
            table.ack(token);
        }
    }

    /// The reader let generation `key` go (rotated or deleted) after reading it up to `end`.
    /// Batches still in flight keep moving its position; once all is acknowledged the entry is
    /// no longer current and garbage collection may remove it. It stays until then, so a restart
    /// does not read the file again if it is still on disk.
    pub fn release(&self, key: FileKey, end: u64) {
        let mut table = self.lock();
        if let Some(gen) = table.keys.get_mut(&key) {
            gen.released_at = Some(end);
        }
        table.finish_if_done(key);
        table.generation += 1;
    }

    /// The acknowledged offset of generation `key`, if it is tracked.
    pub fn acked(&self, key: FileKey) -> Option<u64> {
        self.lock().keys.get(&key).map(|g| g.ranges.acked())
    }

    /// Removes the entries of files that are no longer followed and have not changed for
    /// `older_than`. Returns how many were removed.
    pub fn collect_garbage(&self, older_than: Duration) -> usize {
        let mut table = self.lock();
        let now = SystemTime::now();
        let before = table.entries.len();
        table.entries.retain(|_, e| {
            e.current.is_some()
                || now
                    .duration_since(e.updated)
                    .map_or(true, |age| age < older_than)
        });
        let journals_before = table.journals.len();
        table.journals.retain(|_, e| {
            e.current.is_some()
                || now
                    .duration_since(e.updated)
                    .map_or(true, |age| age < older_than)
        });
        let removed = before - table.entries.len() + journals_before - table.journals.len();
        if removed > 0 {
            table.generation += 1;
        }
        removed
    }

    /// Entries no generation is following (files not found since the start), with where their
    /// file was: candidates for recovering a rotated file after a restart.
    pub fn unfollowed(&self) -> Vec<StoredPosition> {
        let followed: std::collections::HashSet<(u64, u64)> =
            self.lock().keys.values().map(|g| g.dev_ino).collect();
        self.snapshot()
            .files
            .into_iter()
            .filter(|p| !followed.contains(&(p.dev, p.inode)))
            .collect()
    }

    /// The stored position of the journal file `file_id`, if any.
    pub fn journal_lookup(&self, file_id: &str) -> Option<JournalResume> {
        self.lock().journals.get(file_id).map(|e| JournalResume {
            acked: e.acked,
            seqnum: e.seqnum,
            entries: e.entries,
        })
    }

    /// Whether the table holds any journal file: a journal file not in it, found at a start, is
    /// new (written since), not history.
    pub fn journal_known(&self) -> bool {
        !self.lock().journals.is_empty()
    }

    /// Starts tracking the journal file `file_id` under `key`, read from entry `acked`.
    pub fn journal_register(
        &self,
        key: FileKey,
        file_id: &str,
        path: &Path,
        seqnum_id: &str,
        resume: JournalResume,
    ) {
        let mut table = self.lock();
        table.journal_keys.insert(
            key,
            JournalGeneration {
                file_id: file_id.to_owned(),
                ranges: AckRanges::new(resume.acked),
                seqnums: std::collections::BTreeMap::new(),
                released: false,
            },
        );
        table.journals.insert(
            file_id.to_owned(),
            JournalEntry {
                path: path.to_path_buf(),
                acked: resume.acked,
                seqnum: resume.seqnum,
                seqnum_id: seqnum_id.to_owned(),
                entries: resume.entries,
                current: Some(key),
                updated: SystemTime::now(),
            },
        );
        table.generation += 1;
    }

    /// The journal file read under `key` holds `entries` entries now, under `path`.
    pub fn journal_seen(&self, key: FileKey, path: &Path, entries: u64) {
        let mut table = self.lock();
        let Some(file_id) = table.journal_keys.get(&key).map(|g| g.file_id.clone()) else {
            return;
        };
        if let Some(e) = table.journals.get_mut(&file_id) {
            if e.entries != entries || e.path != path {
                e.entries = entries;
                e.path = path.to_path_buf();
                table.generation += 1;
            }
        }
    }

    /// The entry before index `end` of the journal file read under `key` has sequence number
    /// `seqnum`: recorded when a batch ending there is sent, written once it is acknowledged.
    pub fn journal_seqnum(&self, key: FileKey, end: u64, seqnum: u64) {
        if let Some(g) = self.lock().journal_keys.get_mut(&key) {
            g.seqnums.insert(end, seqnum);
        }
    }

    /// The reader let the journal file under `key` go (deleted, read to its end): its entry is
    /// no longer current once all it read is acknowledged.
    pub fn journal_release(&self, key: FileKey) {
        let mut table = self.lock();
        let Some(g) = table.journal_keys.get_mut(&key) else {
            return;
        };
        g.released = true;
        let (file_id, acked) = (g.file_id.clone(), g.ranges.acked());
        if let Some(e) = table.journals.get_mut(&file_id) {
            if acked >= e.entries {
                e.current = None;
                table.journal_keys.remove(&key);
            }
        }
        table.generation += 1;
    }

    /// Forgets the journal files not among `existing` (file ids) that no key reads: vacuumed.
    /// Returns each one's path and the entries it held unread, as far as the table knows.
    pub fn journal_prune(
        &self,
        existing: &std::collections::HashSet<String>,
    ) -> Vec<(PathBuf, u64)> {
        let mut table = self.lock();
        let gone: Vec<String> = table
            .journals
            .iter()
            .filter(|(id, e)| e.current.is_none() && !existing.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut lost = Vec::new();
        for id in gone {
            if let Some(e) = table.journals.remove(&id) {
                lost.push((e.path, e.entries.saturating_sub(e.acked)));
            }
            table.generation += 1;
        }
        lost
    }

    /// A counter that changes whenever the table does.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The table as it would be written now, sorted by path for readability.
    pub fn snapshot(&self) -> PositionsFile {
        let table = self.lock();
        let mut files: Vec<StoredPosition> = table
            .entries
            .iter()
            .map(|(&(dev, inode), e)| StoredPosition {
                path: e.path.clone(),
                target: e.target.clone(),
                dev,
                inode,
                fingerprint: StoredFingerprint {
                    len: e.fingerprint.len,
                    crc32: e.fingerprint.crc32,
                },
                offset: e.offset,
                truncations: e.truncations,
                born: e.born,
                size: e.size,
                updated: e
                    .updated
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path).then(a.inode.cmp(&b.inode)));
        let mut journal: Vec<StoredJournal> = table
            .journals
            .iter()
            .map(|(id, e)| StoredJournal {
                file_id: id.clone(),
                path: e.path.clone(),
                acked: e.acked,
                seqnum: e.seqnum,
                seqnum_id: e.seqnum_id.clone(),
                entries: e.entries,
                updated: e
                    .updated
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
            .collect();
        journal.sort_by(|a, b| a.path.cmp(&b.path).then(a.file_id.cmp(&b.file_id)));
        PositionsFile {
            version: FORMAT_VERSION,
            written: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            files,
            journal,
        }
    }
}

impl Table {
    /// Acknowledges the bytes of `token` (see [`Positions::ack`]).
    fn ack(&mut self, token: AckToken) {
        let Some(gen) = self.keys.get_mut(&token.file) else {
            self.ack_journal(token);
            return;
        };
        if !gen.ranges.ack(token.start, token.end) {
            return;
        }
        let (dev_ino, acked) = (gen.dev_ino, gen.ranges.acked());
        if let Some(entry) = self.entries.get_mut(&dev_ino) {
            // A stale generation (the file was truncated since) must not move the new one.
            if entry.current == Some(token.file) {
                entry.offset = acked;
                entry.updated = SystemTime::now();
            }
        }
        self.finish_if_done(token.file);
        self.generation += 1;
    }

    /// Acknowledges the entries `[start, end)` of a journal file (see [`Positions::ack`]).
    fn ack_journal(&mut self, token: AckToken) {
        let Some(gen) = self.journal_keys.get_mut(&token.file) else {
            return;
        };
        if !gen.ranges.ack(token.start, token.end) {
            return;
        }
        let acked = gen.ranges.acked();
        // The seqnum of the last entry of the acknowledged prefix, as the reader reported it.
        let seqnum = gen.seqnums.range(..=acked).next_back().map(|(_, &s)| s);
        gen.seqnums = gen.seqnums.split_off(&(acked + 1));
        let (file_id, released) = (gen.file_id.clone(), gen.released);
        if let Some(entry) = self.journals.get_mut(&file_id) {
            if entry.current == Some(token.file) {
                entry.acked = acked;
                if let Some(seqnum) = seqnum {
                    entry.seqnum = seqnum;
                }
                entry.updated = SystemTime::now();
                if released && acked >= entry.entries {
                    entry.current = None;
                    self.journal_keys.remove(&token.file);
                }
            }
        }
        self.generation += 1;
    }

    /// Forgets a released generation whose last byte is acknowledged.
    fn finish_if_done(&mut self, key: FileKey) {
        let Some(gen) = self.keys.get(&key) else {
            return;
        };
        if gen.released_at.is_some_and(|end| gen.ranges.acked() >= end) {
            let dev_ino = gen.dev_ino;
            self.keys.remove(&key);
            if let Some(entry) = self.entries.get_mut(&dev_ino) {
                if entry.current == Some(key) {
                    entry.current = None;
                    entry.updated = SystemTime::now();
                }
            }
        }
    }
}

/// Sinks acknowledge through [`crate::ack::Acks`]; this is where their tokens land.
impl Acknowledge for Positions {
    fn ack(&self, token: AckToken) {
        Positions::ack(self, token);
    }

    fn ack_all(&self, tokens: &[AckToken]) {
        Positions::ack_all(self, tokens);
    }
}

impl Default for Positions {
    fn default() -> Self {
        Positions::new()
    }
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No positions file: a first start.
    Missing,
    /// A table, from `positions.json` or its newer temporary file.
    Table(PositionsFile),
}

/// Reads the positions table from `data_dir`, preferring a complete temporary file.
pub fn load(data_dir: &Path) -> Result<Loaded, PositionsError> {
    let tmp = data_dir.join(TMP_NAME);
    if let Ok(Loaded::Table(table)) = load_one(&tmp) {
        return Ok(Loaded::Table(table));
    }
    load_one(&data_dir.join(FILE_NAME))
}

fn load_one(path: &Path) -> Result<Loaded, PositionsError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(PositionsError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let version: VersionOnly =
        serde_json::from_slice(&bytes).map_err(|source| PositionsError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version.version) {
        return Err(PositionsError::Version {
            path: path.to_path_buf(),
            found: version.version,
        });
    }
    let table = serde_json::from_slice(&bytes).map_err(|source| PositionsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded::Table(table))
}

/// Moves an unreadable positions file aside (`positions.json.corrupt-<unix seconds>`) so that the
/// agent can start, and returns where it went.
pub fn quarantine(data_dir: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = data_dir.join(format!("{FILE_NAME}.corrupt-{secs}"));
    fs::rename(data_dir.join(FILE_NAME), &to)?;
    let _ = fs::remove_file(data_dir.join(TMP_NAME));
    Ok(to)
}

/// Writes the table atomically: temporary file, fsync, rename over the old one, fsync the
/// directory (so the rename itself survives a power loss).
pub fn store(data_dir: &Path, table: &PositionsFile) -> Result<(), PositionsError> {
    let tmp = data_dir.join(TMP_NAME);
    let path = data_dir.join(FILE_NAME);
    let write = || -> io::Result<()> {
        let mut body = serde_json::to_vec_pretty(table).map_err(io::Error::other)?;
        body.push(b'\n');
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|source| PositionsError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn id(dev: u64, inode: u64, crc32: u32) -> FileIdentity {
        FileIdentity {
            dev,
            inode,
            fingerprint: Fingerprint { len: 256, crc32 },
        }
    }

    /// Registers generation `key` of `path`, read from its start.
    fn follow(p: &Positions, key: u64, identity: FileIdentity, path: &str) {
        follow_from(p, key, identity, path, Origin::default());
    }

    fn follow_from(p: &Positions, key: u64, identity: FileIdentity, path: &str, origin: Origin) {
        p.register(FileKey(key), identity, Path::new(path), None, origin);
    }

    fn ack(p: &Positions, key: u64, start: u64, end: u64) {
        p.ack(AckToken {
            file: FileKey(key),
            start,
            end,
        });
    }

    #[test]
    fn a_journal_files_count_moves_only_through_the_acknowledged_prefix_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = Positions::new();
        assert!(!p.journal_known());
        let key = FileKey(1 << 62);
        let from = JournalResume {
            acked: 10,
            seqnum: 0,
            entries: 40,
        };
        p.journal_register(key, "f1", Path::new("/j/system.journal"), "s1", from);
        assert!(p.journal_known());
        p.journal_seqnum(key, 20, 120);
        p.journal_seqnum(key, 30, 130);
        ack(&p, 1 << 62, 20, 30);
        let at = p.journal_lookup("f1").unwrap();
        assert_eq!(
            (at.acked, at.seqnum),
            (10, 0),
            "a gap before it: nothing moves"
        );
        ack(&p, 1 << 62, 10, 20);
        let at = p.journal_lookup("f1").unwrap();
        assert_eq!((at.acked, at.seqnum, at.entries), (30, 130, 40));
        p.journal_seen(key, Path::new("/j/system@x.journal"), 50);

        store(dir.path(), &p.snapshot()).unwrap();
        let Loaded::Table(t) = load(dir.path()).unwrap() else {
            panic!()
        };
        assert_eq!(t.version, 3);
        assert_eq!(
            t.journal,
            [StoredJournal {
                file_id: "f1".into(),
                path: "/j/system@x.journal".into(),
                acked: 30,
                seqnum: 130,
                seqnum_id: "s1".into(),
                entries: 50,
                updated: t.journal[0].updated,
            }]
        );
        let again = Positions::from_file(t);
        assert_eq!(again.journal_lookup("f1").unwrap().acked, 30);

        // Released and acknowledged to its end: no longer current, so pruned once gone, with
        // nothing lost; a file gone with entries not acknowledged reports them.
        p.journal_release(key);
        ack(&p, 1 << 62, 30, 50);
        assert_eq!(
            p.journal_prune(&HashSet::new()),
            [(PathBuf::from("/j/system@x.journal"), 0)]
        );
        let lost = again.journal_prune(&HashSet::new());
        assert_eq!(lost, [(PathBuf::from("/j/system@x.journal"), 20)]);
        assert!(again.journal_lookup("f1").is_none());
    }

    #[test]
    fn a_journal_file_being_read_is_never_pruned() {
        let p = Positions::new();
        let from = JournalResume {
            acked: 0,
            seqnum: 0,
            entries: 5,
        };
        p.journal_register(FileKey(7), "f", Path::new("/j/a.journal"), "s", from);
        assert!(p.journal_prune(&HashSet::new()).is_empty());
        p.journal_release(FileKey(7));
        assert!(
            p.journal_prune(&HashSet::new()).is_empty(),
            "not acknowledged yet"
        );
        ack(&p, 7, 0, 5);
        assert_eq!(p.journal_prune(&HashSet::new()).len(), 1);
    }

    #[test]
    fn acks_move_positions_only_through_contiguous_prefix() {
        let p = Positions::new();
        follow(&p, 1, id(1, 10, 7), "/a.log");
        ack(&p, 1, 100, 200);
        assert_eq!(
            p.lookup(1, 10),
            Some(Resume {
                fingerprint: Fingerprint { len: 256, crc32: 7 },
                offset: 0,
                truncations: 0
            })
        );
        ack(&p, 1, 0, 100);
        assert_eq!(p.lookup(1, 10).unwrap().offset, 200);
    }

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = Positions::new();
        follow(&p, 1, id(3, 10, 7), "/var/log/containers/a.log");
        ack(&p, 1, 0, 1234);
        let table = p.snapshot();
        store(dir.path(), &table).unwrap();
        let Loaded::Table(loaded) = load(dir.path()).unwrap() else {
            panic!("missing")
        };
        assert_eq!(loaded, table);
        assert!(Positions::from_file(loaded).last_written().is_some());
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"offset\": 1234"), "human-readable: {text}");
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn stale_generation_does_not_move_truncated_file() {
        let p = Positions::new();
        follow(&p, 1, id(1, 10, 7), "/a.log");
        // Truncated: a new generation starts at 0 while the old one still has acks in flight.
        follow(&p, 2, id(1, 10, 8), "/a.log");
        ack(&p, 1, 0, 5000);
        assert_eq!(p.lookup(1, 10).unwrap().offset, 0);
        ack(&p, 2, 0, 30);
        assert_eq!(p.lookup(1, 10).unwrap().offset, 30);
    }

    #[test]
    fn torn_temporary_file_is_ignored_and_complete_one_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = PositionsFile {
            version: 1,
            written: None,
            files: vec![],
            journal: vec![],
        };
        store(dir.path(), &table).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"{\"version\":1,\"fil").unwrap();
        let Loaded::Table(t) = load(dir.path()).unwrap() else {
            panic!()
        };
        assert!(t.files.is_empty());
        table.files.push(StoredPosition {
            path: "/x".into(),
            target: None,
            dev: 1,
            inode: 2,
            fingerprint: StoredFingerprint { len: 0, crc32: 0 },
            offset: 9,
            truncations: 0,
            born: 0,
            size: 0,
            updated: 0,
        });
        fs::write(
            dir.path().join(TMP_NAME),
            serde_json::to_vec(&table).unwrap(),
        )
        .unwrap();
        let Loaded::Table(t) = load(dir.path()).unwrap() else {
            panic!()
        };
        assert_eq!(
            t.files.len(),
            1,
            "a complete temporary file is newer than the main one"
        );
    }

    #[test]
    fn released_files_are_collected_after_grace() {
        let p = Positions::new();
        follow(&p, 1, id(1, 10, 7), "/a.log");
        follow(&p, 2, id(1, 11, 7), "/b.log");
        p.release(FileKey(1), 0);
        assert_eq!(p.collect_garbage(Duration::from_secs(3600)), 0);
        assert_eq!(
            p.collect_garbage(Duration::ZERO),
            1,
            "only the released file goes"
        );
        assert!(p.lookup(1, 10).is_none());
        assert!(p.lookup(1, 11).is_some());
    }

    #[test]
    fn files_written_before_birth_times_and_sizes_still_load() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version":1,"files":[{"path":"/a.log","dev":1,"inode":2,"fingerprint":{"len":4,"crc32":5},"offset":6,"updated":7}]}"#,
        )
        .unwrap();
        let Loaded::Table(t) = load(dir.path()).unwrap() else {
            panic!("missing")
        };
        assert_eq!(
            (t.files[0].offset, t.files[0].born, t.files[0].size),
            (6, 0, 0)
        );
    }

    #[test]
    fn acks_after_release_still_count() {
        let p = Positions::new();
        follow(&p, 1, id(1, 10, 7), "/a.log");
        p.release(FileKey(1), 42);
        assert_eq!(
            p.collect_garbage(Duration::ZERO),
            0,
            "in flight: not collectable"
        );
        ack(&p, 1, 0, 42);
        assert_eq!(
            p.lookup(1, 10).unwrap().offset,
            42,
            "batches in flight at release still move it"
        );
        assert_eq!(
            p.acked(FileKey(1)),
            None,
            "the finished generation is forgotten"
        );
        assert_eq!(p.collect_garbage(Duration::ZERO), 1);
    }

    #[test]
    fn a_generation_is_found_by_content_moved_with_it_and_forgotten_once_gone() {
        let p = Positions::new();
        let content = b"2026-11-22T10:00:00.000000001Z stdout F first line of the generation\n";
        let mut crc = flate2::Crc::new();
        crc.update(content);
        let identity = FileIdentity {
            dev: 1,
            inode: 10,
            fingerprint: Fingerprint {
                len: content.len() as u32,
                crc32: crc.sum(),
            },
        };
        let live = Path::new("/var/log/containers/a.log");
        let born = Origin {
            born: 77,
            ..Origin::default()
        };
        follow_from(&p, 1, identity, "/var/log/containers/a.log", born);
        ack(&p, 1, 0, 40);
        p.update_size(FileKey(1), 100);
        p.release(FileKey(1), 40);
        let (at, born, resume) = p.lookup_content(live, content).unwrap();
        assert_eq!((at, born, resume.offset), ((1, 10), 77, 40));
        assert!(p.lookup_content(Path::new("/other.log"), content).is_none());
        assert!(
            p.lookup_content(live, &content[..10]).is_none(),
            "a shorter content is another file"
        );
        // Compressed into a new file: the entry follows it.
        p.rekey((1, 10), (1, 11));
        assert_eq!(p.born(1, 11), 77);
        assert!(p.lookup(1, 10).is_none());
        let existing = [(1, 11)].into_iter().collect();
        assert!(p.prune_gone(live, &existing).is_empty(), "still there");
        let lost = p.prune_gone(live, &Default::default());
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].1, 60, "deleted with 60 bytes unread");
        assert!(p.lookup(1, 11).is_none());
    }

    #[test]
    fn a_fingerprint_shorter_than_its_offset_is_not_trusted_by_content() {
        let p = Positions::new();
        let identity = FileIdentity {
            dev: 1,
            inode: 10,
            fingerprint: Fingerprint { len: 0, crc32: 0 },
        };
        let live = Path::new("/a.log");
        let at_500 = Origin {
            offset: 500,
            ..Origin::default()
        };
        follow_from(&p, 1, identity, "/a.log", at_500);
        assert!(p.lookup_content(live, b"anything").is_none());
    }

    #[test]
    fn unknown_version_and_garbage_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Missing));
        fs::write(dir.path().join(FILE_NAME), b"{\"version\":9,\"files\":[]}").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(PositionsError::Version { found: 9, .. })
        ));
        fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("positions.json"), "{err}");
        let moved = quarantine(dir.path()).unwrap();
        assert!(moved.exists());
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Missing));
    }
}
