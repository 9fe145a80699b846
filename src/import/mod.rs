//! Importing another agent's positions (README, "Switching from Fluent Bit, Fluentd, Filebeat
//! or Vector"): the offsets Fluent Bit, Fluentd, Filebeat or Vector saved become logship
//! positions, so the switch neither ships again what they shipped nor skips what was written
//! in between.
//!
//! Each format module reads its agent's state into [`Entry`]s: what the agent knew of a file
//! (its inode, device, path or a content fingerprint) and the offset it saved. [`import`] then
//! matches every entry to a file that exists now, checks the offset against the file (not past
//! its end, and just after a newline), and writes each match as a logship position with
//! logship's own identity of the file (device, inode, fingerprint of its first bytes, birth
//! time). An entry that matches nothing, or whose offset the file contradicts, is reported with
//! its reason; its file, if any, is read as `tail.read_from` says.

mod filebeat;
mod fluent_bit;
mod fluentd;
mod vector;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tail::fingerprint;
use crate::tail::positions::{PositionsFile, StoredFingerprint, StoredPosition, FORMAT_VERSION};

/// The agents whose positions can be imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The tail input's SQLite database (`DB`).
    FluentBit,
    /// in_tail's `pos_file`.
    Fluentd,
    /// The registry directory (`registry/filebeat`).
    Filebeat,
    /// The file source's `checkpoints.json`.
    Vector,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::FluentBit => "fluent-bit",
            Kind::Fluentd => "fluentd",
            Kind::Filebeat => "filebeat",
            Kind::Vector => "vector",
        }
    }

    /// The agent's name as people write it.
    pub const fn product(self) -> &'static str {
        match self {
            Kind::FluentBit => "Fluent Bit",
            Kind::Fluentd => "Fluentd",
            Kind::Filebeat => "Filebeat",
            Kind::Vector => "Vector",
        }
    }
}

/// One place to import from: `KIND:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: Kind,
    pub path: PathBuf,
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            format!("{s:?} is not KIND:PATH (kinds: fluent-bit, fluentd, filebeat, vector)")
        })?;
        let kind = match kind {
            "fluent-bit" | "fluentbit" => Kind::FluentBit,
            "fluentd" => Kind::Fluentd,
            "filebeat" => Kind::Filebeat,
            "vector" => Kind::Vector,
            other => {
                return Err(format!(
                    "{other:?} is not a kind of source to import from: fluent-bit, fluentd, filebeat or vector"
                ))
            }
        };
        if path.is_empty() {
            return Err(format!("{s:?} names no path"));
        }
        Ok(Source {
            kind,
            path: PathBuf::from(path),
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.path.display())
    }
}

/// What an agent knew of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// Inode, with the device where the agent stored it.
    Inode { dev: Option<u64>, inode: u64 },
    /// Vector's `first_lines_checksum`: CRC-64 of the first line (see `vector`).
    FirstLineChecksum(u64),
    /// Filebeat's `fingerprint` file identity: SHA-256 of the first bytes (see `filebeat`).
    Fingerprint {
        hex: String,
        offset: u64,
        length: u64,
    },
    /// Filebeat's `path` file identity: the path alone.
    Path(PathBuf),
}

/// One saved position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path the agent followed the file under, where it stored it.
    pub path: Option<PathBuf>,
    pub key: Key,
    /// Every byte before it was read by the agent (and, for the agents that save on delivery,
    /// delivered).
    pub offset: u64,
    /// What the agent saw just before the offset, where it stored it: Fluent Bit's offset
    /// marker (5.0.3 and later), XXH3-64 of the `size` bytes before the offset.
    pub marker: Option<Marker>,
}

/// See [`Entry::marker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub xxh3: u64,
    pub size: u64,
}

/// What an agent's state held.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    /// Entries left out as they are, with why (Fluentd's unwatched files, say).
    pub skipped: Vec<(String, String)>,
    /// When the state was last written: what was written to the logs since, the old agent did
    /// not read.
    pub written: Option<SystemTime>,
}

/// Why an import cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{product} still holds {path}; stop it first ({why})")]
    InUse {
        product: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("cannot read {source_spec}: {reason}")]
    Unreadable { source_spec: String, reason: String },
}

impl ImportError {
    fn unreadable(source: &Source, reason: impl fmt::Display) -> Self {
        ImportError::Unreadable {
            source_spec: source.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Reads one source's entries.
pub fn read(source: &Source) -> Result<Loaded, ImportError> {
    let mut loaded = match source.kind {
        Kind::FluentBit => fluent_bit::read(source)?,
        Kind::Fluentd => fluentd::read(source)?,
        Kind::Filebeat => filebeat::read(source)?,
        Kind::Vector => vector::read(source)?,
    };
    if loaded.written.is_none() {
        loaded.written = std::fs::metadata(&source.path)
            .and_then(|m| m.modified())
            .ok();
    }
    Ok(loaded)
}

/// Reads every source and matches their entries to the files `tail` follows now. Nothing is
/// written: the caller stores the table (`positions::store`). Any source that cannot be read,
/// or whose agent still runs, fails the whole import: never half of one. A source that does not
/// exist is an error too, unless `missing_ok` (`positions.import_from`): then it is reported and
/// has nothing to import.
pub fn run(
    sources: &[Source],
    tail: &crate::tail::TailSettings,
    missing_ok: bool,
) -> Result<(PositionsFile, Report), ImportError> {
    let mut loaded = Vec::with_capacity(sources.len());
    for source in sources {
        let state = if source.path.exists() || !missing_ok {
            read(source)?
        } else {
            // A DaemonSet names the same sources on every node, and a node the old agent never
            // ran on (a new one) has nothing to import: not an error.
            Loaded {
                skipped: vec![(
                    source.path.display().to_string(),
                    "not on this node: nothing to import from it".into(),
                )],
                ..Loaded::default()
            }
        };
        loaded.push((source.clone(), state));
    }
    let (wake, _woken) = std::sync::mpsc::sync_channel(1);
    let followed = crate::tail::discovery::Discovery::new(tail, wake).scan();
    Ok(import(&loaded, &followed))
}

/// Why an entry was not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// No file that exists now has its identity.
    NoFile,
    /// Its file is shorter than the offset: not the file the agent read, or truncated since.
    PastEnd { size: u64 },
    /// The byte before the offset is not a newline: the offset is not where a line starts.
    NotAtLineStart,
    /// The bytes before the offset are not the ones the agent saw there (its offset marker):
    /// another file on a reused inode.
    MarkerDiffers,
    /// Left out by its format (Fluentd's unwatched entries, say).
    Skipped(String),
    /// Another source gave the same file a smaller offset, which is kept (re-shipping is safe).
    Superseded,
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmatched::NoFile => write!(f, "no file with its identity exists now"),
            Unmatched::PastEnd { size } => write!(f, "its offset is past the file's end ({size})"),
            Unmatched::NotAtLineStart => {
                write!(f, "the byte before its offset is not a newline")
            }
            Unmatched::MarkerDiffers => write!(
                f,
                "the bytes before its offset are not the ones the agent saw there (another file on a reused inode?)"
            ),
            Unmatched::Skipped(why) => write!(f, "{why}"),
            Unmatched::Superseded => write!(
                f,
                "another source gave the same file a smaller offset, which is kept"
            ),
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files that got a position: path, offset, the source.
    pub matched: Vec<(PathBuf, u64, String)>,
    /// Entries that did not: the source, what the entry named, why.
    pub unmatched: Vec<(String, String, Unmatched)>,
    /// Bytes the matched positions skip (the offsets' sum): what the old agent already read.
    pub bytes_skipped: u64,
}

impl Report {
    /// One line for the log or the terminal.
    pub fn summary(&self) -> String {
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for (_, _, why) in &self.unmatched {
            let key = match why {
                Unmatched::NoFile => "no file",
                Unmatched::PastEnd { .. } => "past the end",
                Unmatched::NotAtLineStart => "not at a line start",
                Unmatched::MarkerDiffers => "other content",
                Unmatched::Skipped(_) => "left out by the source",
                Unmatched::Superseded => "superseded",
            };
            *reasons.entry(key.to_string()).or_default() += 1;
        }
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort();
        let reasons = reasons
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} files matched, {} bytes skipped; {} entries not matched{}",
            self.matched.len(),
            self.bytes_skipped,
            self.unmatched.len(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({reasons})")
            }
        )
    }
}

/// A file that exists now, as logship would follow it.
#[derive(Debug)]
struct Candidate {
    /// The path it is followed under (a discovered path, or a rotated generation's own).
    path: PathBuf,
    /// The file behind it, if `path` is a link.
    target: Option<PathBuf>,
    dev: u64,
    inode: u64,
    size: u64,
    born: i64,
}

/// The files an import matches entries against: `followed` (what `tail.include` finds now) and
/// the plain files next to what they resolve to (rotated generations the old agent may still
/// have been reading).
fn candidates(followed: &[PathBuf]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |path: &Path, out: &mut Vec<Candidate>| {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        let target = std::fs::canonicalize(path).ok().filter(|t| t != path);
        out.push(Candidate {
            path: path.to_path_buf(),
            target,
            dev: meta.dev(),
            inode: meta.ino(),
            size: meta.len(),
            born: fingerprint::born(&meta),
        });
    };
    for path in followed {
        add(path, &mut out);
    }
    let dirs: std::collections::BTreeSet<PathBuf> = out
        .iter()
        .filter_map(|c| c.target.as_ref().unwrap_or(&c.path).parent())
        .map(Path::to_path_buf)
        .collect();
    for dir in dirs {
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = list.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            if path.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            add(&path, &mut out);
        }
    }
    out
}

/// Up to `n` first bytes of `path`.
fn head(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether the `marker.size` bytes of `path` before `offset` hash to `marker.xxh3`.
fn marker_matches(path: &Path, offset: u64, marker: Marker) -> io::Result<bool> {
    let size = marker.size.min(offset);
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset - size))?;
    let mut buf = vec![0u8; size as usize];
    file.read_exact(&mut buf)?;
    Ok(xxhash_rust::xxh3::xxh3_64(&buf) == marker.xxh3)
}

/// Whether `offset` of `path` is where a line starts: 0, or just after a newline.
fn at_line_start(path: &Path, offset: u64) -> io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset - 1))?;
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte)?;
    Ok(byte[0] == b'\n')
}

/// What content-based keys need of each candidate, computed once per candidate (an import of
/// thousands of entries against thousands of files reads each file's head once).
#[derive(Default)]
struct Heads {
    checksums: HashMap<usize, Option<u64>>,
    fingerprints: HashMap<(usize, u64, u64), Option<String>>,
}

/// Whether `entry`'s key names candidate `i`.
fn names(entry: &Entry, i: usize, c: &Candidate, heads: &mut Heads) -> bool {
    let file = c.target.as_ref().unwrap_or(&c.path);
    match &entry.key {
        Key::Inode { dev, inode } => *inode == c.inode && dev.is_none_or(|d| d == c.dev),
        Key::FirstLineChecksum(sum) => {
            let got = heads
                .checksums
                .entry(i)
                .or_insert_with(|| vector::first_line_checksum(file).ok().flatten());
            *got == Some(*sum)
        }
        Key::Fingerprint {
            hex,
            offset,
            length,
        } => {
            let got = heads
                .fingerprints
                .entry((i, *offset, *length))
                .or_insert_with(|| filebeat::fingerprint(file, *offset, *length).ok().flatten());
            got.as_deref() == Some(hex.as_str())
        }
        Key::Path(path) => c.path == *path || c.target.as_deref() == Some(path.as_path()),
    }
}

/// Matches the entries of every source to the files that exist now (`followed`: what
/// `tail.include` finds), and makes the positions table.
pub fn import(sources: &[(Source, Loaded)], followed: &[PathBuf]) -> (PositionsFile, Report) {
    let candidates = candidates(followed);
    let mut heads = Heads::default();
    let mut report = Report::default();
    // (candidate index) -> (offset, source)
    let mut chosen: HashMap<usize, (u64, String)> = HashMap::new();
    for (source, loaded) in sources {
        let spec = source.to_string();
        for (what, why) in &loaded.skipped {
            report
                .unmatched
                .push((spec.clone(), what.clone(), Unmatched::Skipped(why.clone())));
        }
        for entry in &loaded.entries {
            let what = describe(entry);
            let mut found: Vec<usize> = Vec::new();
            for (i, c) in candidates.iter().enumerate() {
                if names(entry, i, c, &mut heads) {
                    found.push(i);
                }
            }
            // Several files with the entry's identity (an inode without its device on two
            // filesystems): the one under the entry's path, if any.
            let pick = match found.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => many
                    .iter()
                    .copied()
                    .find(|&i| {
                        entry.path.as_deref().is_some_and(|p| {
                            candidates[i].path == p || candidates[i].target.as_deref() == Some(p)
                        })
                    })
                    .or(Some(many[0])),
            };
            let Some(i) = pick else {
                report
                    .unmatched
                    .push((spec.clone(), what, Unmatched::NoFile));
                continue;
            };
            let c = &candidates[i];
            if entry.offset > c.size {
                report
                    .unmatched
                    .push((spec.clone(), what, Unmatched::PastEnd { size: c.size }));
                continue;
            }
            let file = c.target.as_ref().unwrap_or(&c.path);
            if !at_line_start(file, entry.offset).unwrap_or(false) {
                report
                    .unmatched
                    .push((spec.clone(), what, Unmatched::NotAtLineStart));
                continue;
            }
            if let Some(marker) = entry.marker.filter(|m| m.size > 0) {
                if !marker_matches(file, entry.offset, marker).unwrap_or(false) {
                    report
                        .unmatched
                        .push((spec.clone(), what, Unmatched::MarkerDiffers));
                    continue;
                }
            }
            match chosen.get(&i) {
                Some((offset, _)) if *offset <= entry.offset => {
                    report
                        .unmatched
                        .push((spec.clone(), what, Unmatched::Superseded));
                }
                Some((_, other)) => {
                    let replaced = format!("{} at {}", c.path.display(), chosen[&i].0);
                    report
                        .unmatched
                        .push((other.clone(), replaced, Unmatched::Superseded));
                    chosen.insert(i, (entry.offset, spec.clone()));
                }
                None => {
                    chosen.insert(i, (entry.offset, spec.clone()));
                }
            }
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut files = Vec::new();
    let mut order: Vec<_> = chosen.into_iter().collect();
    order.sort_by_key(|(i, _)| *i);
    for (i, (offset, spec)) in order {
        let c = &candidates[i];
        let file = c.target.as_ref().unwrap_or(&c.path);
        let Ok(head) = head(file, fingerprint::FINGERPRINT_BYTES as usize) else {
            continue;
        };
        let fp = fingerprint::of_bytes(&head);
        files.push(StoredPosition {
            path: c.path.clone(),
            target: c.target.clone(),
            dev: c.dev,
            inode: c.inode,
            fingerprint: StoredFingerprint {
                len: fp.len,
                crc32: fp.crc32,
            },
            offset,
            truncations: 0,
            born: c.born,
            size: c.size,
            updated: now,
        });
        report.bytes_skipped += offset;
        report.matched.push((c.path.clone(), offset, spec));
    }
    // What was written since the oldest source was saved was not read by its agent: rotated
    // generations written since are read from their start (see `tail::backlog`).
    let written = sources
        .iter()
        .filter_map(|(_, l)| l.written)
        .min()
        .and_then(|w| w.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    (
        PositionsFile {
            version: FORMAT_VERSION,
            written,
            files,
            journal: Vec::new(),
        },
        report,
    )
}

/// How a report names an entry.
fn describe(entry: &Entry) -> String {
    let key = match &entry.key {
        Key::Inode {
            dev: Some(dev),
            inode,
        } => format!("inode {inode} on device {dev}"),
        Key::Inode { dev: None, inode } => format!("inode {inode}"),
        Key::FirstLineChecksum(sum) => format!("first line checksum {sum}"),
        Key::Fingerprint { hex, .. } => format!("fingerprint {hex}"),
        Key::Path(path) => format!("path {}", path.display()),
    };
    match &entry.path {
        Some(p) => format!("{} ({key}) at {}", p.display(), entry.offset),
        None => format!("{key} at {}", entry.offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str =
        "2024-05-01T12:00:00Z INFO service started\n2024-05-01T12:00:01Z INFO listening on :8080\n";

    fn entry(path: &Path, offset: u64, marker: Option<Marker>) -> Entry {
        Entry {
            path: Some(path.to_path_buf()),
            key: Key::Inode {
                dev: None,
                inode: std::fs::metadata(path).unwrap().ino(),
            },
            offset,
            marker,
        }
    }

    #[test]
    fn fluent_bits_offset_marker_is_xxh3_of_the_bytes_before_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, CONTENT).unwrap();
        // Fluent Bit's own values for this content (XXH3-64 of the 32 bytes before 87 and 42).
        let at_87 = Marker {
            xxh3: 0x9e46_a4b3_2d4c_7cd5,
            size: 32,
        };
        let at_42 = Marker {
            xxh3: 8_994_121_318_352_883_819,
            size: 32,
        };
        assert!(marker_matches(&path, 87, at_87).unwrap());
        assert!(marker_matches(&path, 42, at_42).unwrap());
        assert!(!marker_matches(&path, 42, at_87).unwrap());
        let source = Source {
            kind: Kind::FluentBit,
            path: dir.path().join("db"),
        };
        let loaded = Loaded {
            entries: vec![entry(&path, 87, Some(at_42))],
            ..Loaded::default()
        };
        let (table, report) = import(&[(source.clone(), loaded)], std::slice::from_ref(&path));
        assert!(table.files.is_empty());
        assert_eq!(report.unmatched[0].2, Unmatched::MarkerDiffers);
        let loaded = Loaded {
            entries: vec![entry(&path, 87, Some(at_87))],
            ..Loaded::default()
        };
        let (table, report) = import(&[(source, loaded)], &[path]);
        assert_eq!(table.files[0].offset, 87);
        assert_eq!(report.bytes_skipped, 87);
    }

    #[test]
    fn two_sources_for_one_file_keep_the_smaller_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, CONTENT).unwrap();
        let source = |name: &str| Source {
            kind: Kind::Fluentd,
            path: dir.path().join(name),
        };
        let one = Loaded {
            entries: vec![entry(&path, 87, None)],
            ..Loaded::default()
        };
        let two = Loaded {
            entries: vec![entry(&path, 42, None)],
            ..Loaded::default()
        };
        let (table, report) = import(&[(source("a"), one), (source("b"), two)], &[path]);
        assert_eq!(table.files.len(), 1);
        assert_eq!(table.files[0].offset, 42);
        assert_eq!(report.unmatched.len(), 1);
        assert_eq!(report.unmatched[0].2, Unmatched::Superseded);
        assert!(
            report.summary().contains("1 superseded"),
            "{}",
            report.summary()
        );
    }
}
