//! Where a followed file starts: opening what a scan found, resuming a stored position (or not
//! trusting it), `read_from`, logrotate's copies, orphans handed over by a reload, rotated files
//! recovered after a restart (docs/ARCHITECTURE.md, "Where a file starts").

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ack::FileKey;
use crate::parse::LineParser;
use crate::source::{FileIdentity, Fingerprint, KubeletName, Source};
use crate::telemetry::{self, metrics};

use super::reader::{self, Attachment, TailedFile};
use super::{fingerprint, generations, gzip, positions, ReadFrom, Tailer};

/// Where a file starts being read, and how many truncations its generation has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Start {
    pub(super) offset: u64,
    pub(super) truncations: u32,
    /// Birth time of the file its content was first read from (see [`fingerprint::id_prefix`]).
    pub(super) born: i64,
    /// It resumes a stored position (the file was read before).
    pub(super) known: bool,
}

/// A generation a copytruncate ended (the file was truncated under it), remembered for a while:
/// logrotate copied its content to another file first, and a pattern may follow that copy.
#[derive(Clone, Debug)]
pub(super) struct Truncated {
    /// The directory of the file it was read from: a copy is made next to it.
    pub(super) dir: Option<PathBuf>,
    pub(super) fingerprint: Fingerprint,
    /// The end of its acknowledged prefix: the copy is read from here. What was sent past it
    /// and is still in flight is read again from the copy under the same ids (a repeat
    /// Elasticsearch answers 409), so a stop before those acknowledgements loses nothing.
    pub(super) acked: u64,
    pub(super) truncations: u32,
    pub(super) id_prefix: Option<crate::record::IdPrefix>,
    pub(super) when: Instant,
}

impl Truncated {
    /// What a copy of `f`'s current generation needs to know of it.
    pub(super) fn of(f: &TailedFile, acked: u64, when: Instant) -> Truncated {
        Truncated {
            dir: dir_of(f),
            fingerprint: f.identity.fingerprint,
            acked,
            truncations: f.truncations,
            id_prefix: f.id_prefix(),
            when,
        }
    }
}

/// The directory of the file `f` reads (behind its symlink): a copy is made next to it.
fn dir_of(f: &TailedFile) -> Option<PathBuf> {
    f.target
        .as_deref()
        .unwrap_or(&f.path)
        .parent()
        .map(Path::to_path_buf)
}

/// How long a file found shorter than a fingerprint, next to a possible original, may stay that
/// short before it is taken for a new file rather than a copy being written.
pub(super) const COPY_DECISION: Duration = Duration::from_secs(1);

/// How long a truncated generation is remembered for its copy to be recognised.
pub(super) const COPY_WINDOW: Duration = Duration::from_secs(60);

/// Where `read_from = "tail"` starts: after the last newline, so the first record is whole.
pub(super) fn tail_offset(file: &File, size: u64, max_line: usize) -> io::Result<u64> {
    let window = (max_line as u64).min(size);
    let mut buf = vec![0u8; window as usize];
    file.read_exact_at(&mut buf, size - window)?;
    Ok(match memchr::memrchr(b'\n', &buf) {
        Some(i) => size - window + i as u64 + 1,
        None if window < size => size,
        None => 0,
    })
}

impl Tailer {
    pub(super) fn open(&mut self, path: &Path, first_scan: bool) -> io::Result<()> {
        let file = File::open(path)?;
        let identity = fingerprint::identify(&file)?;
        let dev_ino = (identity.dev, identity.inode);
        if let Some(other) = self
            .files
            .iter_mut()
            .find(|f| (f.identity.dev, f.identity.inode) == dev_ino)
        {
            // Already followed under another name (a second link, or its rotated name). If the
            // followed copy is detached, this path is how the file is known now.
            if let Attachment::Detached { .. } = other.attachment {
                other.attachment = Attachment::Live;
                other.path = path.to_path_buf();
                self.positions.update_path(other.key, path);
                self.by_path.insert(path.to_path_buf(), other.key);
            }
            return Ok(());
        }
        let meta = file.metadata()?;
        let size = meta.len();
        let mut start = self.resume_offset(&file, path, identity, size, first_scan)?;
        start.born = fingerprint::born(&meta);
        let copy = if start.known {
            None
        } else {
            self.copy_of(&file, path, None)
        };
        // Too short yet to tell whether it is a copy in the making (logrotate creates the copy,
        // then writes into it): decided at its first turn (see `settle_copy`).
        let undecided = !start.known
            && copy.is_none()
            && size < u64::from(fingerprint::FINGERPRINT_BYTES)
            && !self.copy_candidates(path, None).is_empty();
        let target = std::fs::canonicalize(path).ok().filter(|t| t != path);
        let base = target.clone().unwrap_or_else(|| path.to_path_buf());
        let backlog = self.plan_generations(path, &base, identity, start.known, first_scan);
        if backlog.newer_than_known && !start.known {
            // Its older generations were read before: everything in this one is new, whatever
            // `read_from` says.
            start.offset = 0;
        }
        if let Some(copy) = &copy {
            tracing::info!(path = %path.display(), offset = copy.acked, "A copy of a followed log file (copytruncate); reading it from where the original was acknowledged, with the original's document ids.");
            start.offset = copy.acked;
            start.truncations = copy.truncations;
        }
        let key = self.follow(
            path,
            target.clone(),
            file,
            identity,
            start,
            Attachment::Live,
        );
        if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
            if let Some(prefix) = copy.and_then(|c| c.id_prefix) {
                f.inherit_id_prefix(prefix);
            }
            if undecided {
                f.copy_pending = Some(Instant::now());
            }
        }
        let chain = self.chains.iter_mut().position(|c| c.base == base);
        if backlog.steps.is_empty() && chain.is_none() {
            return Ok(());
        }
        // Held back until the older generations (those planned now, or those of a recovery
        // still going on for the same container) are read.
        if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
            f.held = true;
            f.readable = false;
        }
        let chain = match chain {
            Some(i) => &mut self.chains[i],
            None => {
                self.chains.push(generations::Chain {
                    base,
                    path: path.to_path_buf(),
                    target,
                    active: None,
                    steps: Default::default(),
                });
                self.chains.last_mut().expect("just pushed")
            }
        };
        chain.steps.extend(backlog.steps);
        chain.steps.push_back(generations::Step::Release(key));
        self.advance_generations();
        Ok(())
    }

    /// Starts following an open file from `offset`. `path` is the name its records carry,
    /// `target` the file it resolved to when opened.
    pub(super) fn follow(
        &mut self,
        path: &Path,
        target: Option<PathBuf>,
        file: File,
        identity: FileIdentity,
        start: Start,
        attachment: Attachment,
    ) -> FileKey {
        let offset = start.offset;
        let key = FileKey(self.next_key);
        self.next_key += 1;
        let kubelet = KubeletName::from_path(path);
        let fragment = self.encoder.source_fragment(path, kubelet.as_ref());
        let source = Arc::new(Source {
            path: path.to_path_buf(),
            kubelet,
            fragment,
        });
        let parser = self.new_parser(path);
        self.positions.register(
            key,
            identity,
            path,
            target.as_deref(),
            positions::Origin {
                offset,
                truncations: start.truncations,
                born: start.born,
            },
        );
        tracing::info!(path = %path.display(), offset, inode = identity.inode, "Following log file.");
        telemetry::add(&metrics().files_opened, 1);
        if attachment == Attachment::Live {
            self.by_path.insert(path.to_path_buf(), key);
        }
        let mut tailed = TailedFile::new(
            key,
            path.to_path_buf(),
            file,
            identity,
            source,
            parser,
            offset,
        );
        tailed.target = target;
        tailed.attachment = attachment;
        tailed.truncations = start.truncations;
        tailed.size = tailed.file.metadata().map_or(offset, |m| m.len());
        tailed.born = start.born;
        tailed.positions = Some(self.positions.clone());
        self.files.push(tailed);
        key
    }

    /// After a reload: follows the files the previous tailer was still reading though no name
    /// leads to them, from their stored (acknowledged) positions. They are finished whatever the
    /// new patterns say: the previous configuration chose them, and their end is near.
    pub(super) fn adopt_orphans(&mut self) {
        for orphan in std::mem::take(&mut self.orphans) {
            // A gzipped generation the previous tailer was reading goes on as one.
            let gzip = gzip::is_gzip(&orphan.file).unwrap_or(false);
            let Ok(identity) = fingerprint::identify_content(&orphan.file, gzip) else {
                continue;
            };
            let dev_ino = (identity.dev, identity.inode);
            if self
                .files
                .iter()
                .any(|f| (f.identity.dev, f.identity.inode) == dev_ino)
            {
                // The new patterns found it under another name (its rotated one): followed.
                continue;
            }
            let Some(resume) = self.positions.lookup(dev_ino.0, dev_ino.1) else {
                continue;
            };
            if !fingerprint::matches_content(&orphan.file, gzip, resume.fingerprint)
                .unwrap_or(false)
            {
                continue;
            }
            let content = if gzip {
                match gzip::GzContent::open(&orphan.file) {
                    Ok(gz) => reader::Content::Gzip(Box::new(gz)),
                    Err(_) => continue,
                }
            } else {
                reader::Content::Plain
            };
            tracing::info!(path = %orphan.path.display(), offset = resume.offset, "Continuing a rotated or deleted log file across the reload.");
            let key = self.follow(
                &orphan.path,
                orphan.target,
                orphan.file,
                identity,
                Start {
                    offset: resume.offset,
                    truncations: resume.truncations,
                    born: self.positions.born(dev_ino.0, dev_ino.1),
                    known: true,
                },
                Attachment::Detached {
                    since: Instant::now(),
                },
            );
            if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
                if gzip {
                    f.size = f.read_offset;
                }
                f.content = content;
            }
        }
    }

    /// After a restart: files with a stored position that no pattern found any more may have been
    /// renamed by rotation before they were read to their end (kubelet's `0.log.<timestamp>`).
    /// Such a file is looked for next to where it was, by identity, and read to its end.
    pub(super) fn recover_rotated(&mut self) {
        for entry in self.positions.unfollowed() {
            let was = entry.target.clone().unwrap_or_else(|| entry.path.clone());
            let (Some(dir), Some(name)) = (was.parent(), was.file_name()) else {
                continue;
            };
            let prefix = format!("{}.", name.to_string_lossy());
            let Ok(siblings) = std::fs::read_dir(dir) else {
                continue;
            };
            for sibling in siblings.flatten() {
                let candidate_name = sibling.file_name().to_string_lossy().into_owned();
                if !candidate_name.starts_with(&prefix) || candidate_name.ends_with(".gz") {
                    continue;
                }
                let candidate = sibling.path();
                let Ok(meta) = std::fs::metadata(&candidate) else {
                    continue;
                };
                if (meta.dev(), meta.ino()) != (entry.dev, entry.inode)
                    || meta.len() <= entry.offset
                    || self
                        .chains
                        .iter()
                        .any(|c| c.holds((entry.dev, entry.inode)))
                {
                    continue;
                }
                let stored = Fingerprint {
                    len: entry.fingerprint.len,
                    crc32: entry.fingerprint.crc32,
                };
                let Ok(file) = File::open(&candidate) else {
                    continue;
                };
                if !fingerprint::matches(&file, stored).unwrap_or(false) {
                    continue;
                }
                let Ok(identity) = fingerprint::identify(&file) else {
                    continue;
                };
                tracing::info!(path = %entry.path.display(), rotated = %candidate.display(), offset = entry.offset, "Recovering a rotated log file that was not read to its end before the restart.");
                let target = std::fs::canonicalize(&entry.path)
                    .ok()
                    .filter(|t| *t != entry.path);
                self.follow(
                    &entry.path,
                    target,
                    file,
                    identity,
                    Start {
                        offset: entry.offset,
                        truncations: entry.truncations,
                        born: entry.born,
                        known: true,
                    },
                    Attachment::Detached {
                        since: Instant::now(),
                    },
                );
                break;
            }
        }
    }

    pub(super) fn new_parser(&self, path: &Path) -> LineParser {
        LineParser::new(
            self.settings.format,
            self.settings.max_line_bytes,
            self.settings.oversize,
            Arc::from(path),
        )
        .with_multiline(self.multiline.default_rule())
    }

    /// The generations a file found at `path` could be logrotate's copy (copytruncate) of: in
    /// the same directory, files followed under their own name now (an original not truncated
    /// yet) and generations truncated lately, with a whole fingerprint (a young file's shorter
    /// one could match a different file that starts the same way: then its first records would
    /// be taken for the original's). `except`: the file asking, if it is followed already.
    pub(super) fn copy_candidates(&self, path: &Path, except: Option<FileKey>) -> Vec<Truncated> {
        let dir = std::fs::canonicalize(path)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf));
        if dir.is_none() {
            return Vec::new();
        }
        let now = Instant::now();
        // Files elsewhere are passed over before their acknowledged prefix is asked for: with
        // thousands of files followed, opening one asks about its neighbours only.
        self.files
            .iter()
            .filter(|f| {
                f.attachment == Attachment::Live
                    && !f.content.is_gzip()
                    && f.copy_pending.is_none()
                    && Some(f.key) != except
                    && f.identity.fingerprint.len >= fingerprint::FINGERPRINT_BYTES
                    && dir_of(f) == dir
            })
            .map(|f| Truncated::of(f, self.positions.acked(f.key).unwrap_or(0), now))
            .chain(self.truncated_lately.iter().cloned())
            .filter(|c| {
                c.fingerprint.len >= fingerprint::FINGERPRINT_BYTES && dir.is_some() && c.dir == dir
            })
            .collect()
    }

    /// Whether `file`, found at `path`, is logrotate's copy (copytruncate) of a generation
    /// followed next to it: its first bytes are those of one of its [`Self::copy_candidates`].
    /// A copy holds what the original held, so it is read from the end of the original's
    /// acknowledged prefix, with the original's document ids: what both sent is one document.
    pub(super) fn copy_of(
        &self,
        file: &File,
        path: &Path,
        except: Option<FileKey>,
    ) -> Option<Truncated> {
        self.copy_candidates(path, except)
            .into_iter()
            .find(|c| fingerprint::matches(file, c.fingerprint).unwrap_or(false))
    }

    /// File `i` was found too short to tell whether it is a copy in the making. It is read as
    /// the copy it is once its first bytes match an original's fingerprint (from the original's
    /// acknowledged prefix, with its ids), and as a new file once they are not the start of any
    /// file followed next to it, or it stayed shorter than a fingerprint for [`COPY_DECISION`].
    /// Returns when to look again while it cannot tell yet.
    pub(super) fn settle_copy(&mut self, i: usize) -> Option<Instant> {
        let f = &self.files[i];
        let since = f.copy_pending?;
        if let Some(copy) = self.copy_of(&f.file, &f.path, Some(f.key)) {
            self.adopt_copy(i, copy);
            return None;
        }
        let head =
            gzip::head(&f.file, false, fingerprint::FINGERPRINT_BYTES as usize).unwrap_or_default();
        let now = Instant::now();
        if head.is_empty() {
            // Nothing written yet: the wait for the first bytes starts when they come.
            let f = &mut self.files[i];
            f.copy_pending = Some(now);
            f.readable = false;
            return Some(now + COPY_DECISION);
        }
        let short = head.len() < fingerprint::FINGERPRINT_BYTES as usize;
        if short && now < since + COPY_DECISION && self.starts_a_followed_file(i, &head) {
            return Some(since + COPY_DECISION);
        }
        self.files[i].copy_pending = None;
        None
    }

    /// Whether `head` is how a file followed under its own name next to file `i` starts (a copy
    /// of it being written).
    fn starts_a_followed_file(&self, i: usize, head: &[u8]) -> bool {
        let f = &self.files[i];
        let dir = std::fs::canonicalize(&f.path)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf));
        let mut theirs = vec![0u8; head.len()];
        self.files.iter().any(|o| {
            o.key != f.key
                && o.attachment == Attachment::Live
                && !o.content.is_gzip()
                && o.copy_pending.is_none()
                && o.identity.fingerprint.len >= fingerprint::FINGERPRINT_BYTES
                && dir.is_some()
                && dir_of(o) == dir
                && o.file.read_exact_at(&mut theirs, 0).is_ok()
                && theirs == head
        })
    }

    /// Reads file `i`, found before its content was written, as the copy of `copy`'s
    /// generation: a new generation of it that starts where the original was acknowledged.
    fn adopt_copy(&mut self, i: usize, copy: Truncated) {
        let f = &mut self.files[i];
        tracing::info!(path = %f.path.display(), offset = copy.acked, "A copy of a followed log file (copytruncate); reading it from where the original was acknowledged, with the original's document ids.");
        f.copy_pending = None;
        // Nothing of it was read or sent: its first generation ends where it started.
        self.new_generation(i, copy.acked, copy.truncations);
        if let Some(prefix) = copy.id_prefix {
            self.files[i].inherit_id_prefix(prefix);
        }
    }

    /// Whether `file` was created after the positions file was last written, that is while
    /// logship was not running (a container started, or logrotate made a copy, meanwhile): all
    /// of it is new, not history. Unknown where the filesystem keeps no birth time.
    pub(super) fn born_while_stopped(&self, file: &File) -> bool {
        let Some(written) = self.positions.last_written() else {
            return false;
        };
        let born = file.metadata().map_or(0, |m| fingerprint::born(&m));
        let written = written
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        born > 0 && born >= written
    }

    /// Where to start reading a newly opened file.
    pub(super) fn resume_offset(
        &mut self,
        file: &File,
        path: &Path,
        identity: FileIdentity,
        size: u64,
        first_scan: bool,
    ) -> io::Result<Start> {
        let dev_ino = (identity.dev, identity.inode);
        let remembered = self
            .released
            .remove(&dev_ino)
            .or_else(|| self.positions.lookup(dev_ino.0, dev_ino.1));
        if let Some(resume) = remembered {
            // An empty fingerprint (the file was empty when stored) tells nothing about which
            // file this is: a new file on the reused inode would pass for the known one.
            if resume.fingerprint.len == 0
                || !fingerprint::guards(resume.fingerprint, resume.offset)
            {
                // Its fingerprint cannot tell this file from another on the same inode: reading
                // it again from the start loses nothing (and the same file's records repeat under
                // the same ids).
                tracing::info!(path = %path.display(), offset = resume.offset, fingerprint_bytes = resume.fingerprint.len, "Stored position has too short a fingerprint to be trusted; reading the file from the start.");
                return Ok(Start {
                    offset: 0,
                    truncations: resume.truncations,
                    born: 0,
                    known: false,
                });
            }
            if fingerprint::matches(file, resume.fingerprint)? {
                let offset = resume.offset;
                if offset > size {
                    tracing::warn!(path = %path.display(), offset, size, "Log file is shorter than its stored position (truncated while logship was not running); reading it from the start.");
                    telemetry::add(&metrics().files_truncated, 1);
                    return Ok(Start {
                        offset: 0,
                        truncations: resume.truncations.wrapping_add(1),
                        born: 0,
                        known: true,
                    });
                }
                return Ok(Start {
                    offset,
                    truncations: resume.truncations,
                    born: 0,
                    known: true,
                });
            }
            // Known, but its first bytes changed: truncated and written again while logship was
            // not running, or a new file on a reused inode. Either way all of it is new since
            // logship last looked, so it is read from the start whatever `read_from` says, as
            // a new generation (new document ids).
            tracing::info!(path = %path.display(), inode = identity.inode, "Log file changed since logship last saw it (truncated, or a new file on a reused inode); reading it from the start.");
            return Ok(Start {
                offset: 0,
                truncations: resume.truncations.wrapping_add(1),
                born: 0,
                known: false,
            });
        }
        // `read_from` is for history: a file at a path logship followed before (the kubelet's
        // new generation of a container it reads, written while logship was stopped) is new.
        let offset = if first_scan
            && self.settings.read_from == ReadFrom::Tail
            && self.start_policy.read_from_applies(path)
            && !self.positions.knows_path(path)
            && !self.born_while_stopped(file)
        {
            tail_offset(file, size, self.settings.max_line_bytes)?
        } else {
            0
        };
        Ok(Start {
            offset,
            truncations: 0,
            born: 0,
            known: false,
        })
    }
}
