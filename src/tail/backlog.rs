//! The backlog of rotated generations: which of a followed file's older generations hold
//! unread lines, and reading them oldest first before the live file (see [`super::generations`]
//! for finding and ordering them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::ack::FileKey;
use crate::source::FileIdentity;
use crate::telemetry::{self, metrics};

use super::open::Start;
use super::reader::{self, Attachment};
use super::{fingerprint, generations, gzip, positions, Tailer};

/// What looking at a followed file's rotated generations found.
#[derive(Default)]
pub(super) struct Backlog {
    /// The generations to read first, oldest first.
    pub(super) steps: Vec<generations::Step>,
    /// A generation of the file, or the file itself, was read before: the live file, if unknown,
    /// is newer and read from its start.
    pub(super) newer_than_known: bool,
}

impl Tailer {
    /// Looks at the rotated generations of the file followed as `path` (whose real path is
    /// `base`): the ones holding unread lines are returned oldest first, to be read before the
    /// live file's new lines. A generation matching a stored position (by inode, or by content
    /// once renamed or compressed) resumes there; one newer than the newest known position is
    /// read from its start; older unknown ones are not read (a first install, or entries
    /// collected long ago). Where nothing of the file is known: at start-up, generations written
    /// since the positions were last written (none on a first install); for a file found later,
    /// generations written since logship started.
    /// Stored positions of generations the kubelet deleted are forgotten, their unread bytes
    /// counted as lost.
    pub(super) fn plan_generations(
        &mut self,
        path: &Path,
        base: &Path,
        live: FileIdentity,
        live_known: bool,
        first_scan: bool,
    ) -> Backlog {
        let mut backlog = Backlog::default();
        let (Some(dir), Some(name)) = (base.parent(), base.file_name().and_then(|n| n.to_str()))
        else {
            return backlog;
        };
        if self.settings.rotated_patterns.is_empty() {
            return backlog;
        }
        let listing = self
            .listings
            .entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(generations::Listing::read(dir)))
            .clone();
        let found = generations::find(dir, &listing, name, &self.settings.rotated_patterns);
        let mut existing: std::collections::HashSet<(u64, u64)> =
            found.iter().map(|g| (g.dev, g.inode)).collect();
        existing.insert((live.dev, live.inode));
        // Identify every generation first: what is known decides what is new.
        let mut known = Vec::with_capacity(found.len());
        for g in &found {
            let stored = (!g.gzip)
                .then(|| self.positions.lookup(g.dev, g.inode))
                .flatten()
                .filter(|r| {
                    let len = r.fingerprint.len as usize;
                    len > 0
                        && fingerprint::guards(r.fingerprint, r.offset)
                        && len <= g.head.len()
                        && fingerprint::of_bytes(&g.head[..len]) == r.fingerprint
                })
                .map(|r| ((g.dev, g.inode), self.positions.born(g.dev, g.inode), r))
                .or_else(|| self.positions.lookup_content(path, &g.head));
            if let Some((at, _, _)) = stored {
                // Compressed into a new file: the position moves with the content, and stays
                // for as long as that file exists.
                self.positions.rekey(at, (g.dev, g.inode));
            }
            known.push(stored);
        }
        for (lost_path, bytes) in self.positions.prune_gone(path, &existing) {
            if bytes == 0 {
                continue;
            }
            telemetry::add(&metrics().rotated_unread_bytes, bytes);
            tracing::error!(path = %path.display(), generation = %lost_path.display(), unread_bytes = bytes, "Data loss: a rotated log file was deleted by the kubelet before logship read it (logship was stopped or behind longer than the kubelet keeps rotated files). Its unread bytes are lost.");
        }
        let newest_known = if live_known {
            Some(found.len())
        } else {
            known.iter().rposition(Option::is_some)
        };
        backlog.newer_than_known = newest_known.is_some();
        let started = self.started;
        // Whole seconds: a generation written in the second the table was written counts as
        // written since (it cannot have been read, nothing of its container being known).
        let last_written = self.positions.last_written();
        for (i, (g, stored)) in found.into_iter().zip(known).enumerate() {
            let dev_ino = (g.dev, g.inode);
            let followed = self
                .files
                .iter()
                .any(|f| (f.identity.dev, f.identity.inode) == dev_ino);
            if followed || self.chains.iter().any(|c| c.holds(dev_ino)) {
                continue;
            }
            let pending = match stored {
                Some((_, born, resume)) => {
                    let finished = if g.gzip {
                        g.trailer_size
                            .is_some_and(|t| resume.offset > 0 && t == resume.offset as u32)
                    } else {
                        resume.offset >= g.size
                    };
                    if finished {
                        continue;
                    }
                    generations::Pending {
                        offset: resume.offset,
                        truncations: resume.truncations,
                        born,
                        generation: g,
                    }
                }
                None => {
                    let new = match newest_known {
                        Some(newest) => i > newest,
                        // Nothing of the container is known: a first install, or a container
                        // that started while logship was stopped (written since the positions
                        // were), or one found while running (written since logship started).
                        None if first_scan => last_written.is_some_and(|w| g.modified >= w),
                        None => g.modified >= started,
                    };
                    if !new {
                        continue;
                    }
                    backlog.newer_than_known = true;
                    let born = if g.gzip {
                        0
                    } else {
                        g.file.metadata().map_or(0, |m| fingerprint::born(&m))
                    };
                    generations::Pending {
                        offset: 0,
                        truncations: 0,
                        born,
                        generation: g,
                    }
                }
            };
            // Known from now on: a stop before its turn comes resumes it all the same (it is
            // older than the live file, which is known as soon as it is followed).
            let g = &pending.generation;
            self.positions.remember(
                FileIdentity {
                    dev: g.dev,
                    inode: g.inode,
                    fingerprint: fingerprint::of_bytes(&g.head),
                },
                path,
                Some(base),
                positions::Origin {
                    offset: pending.offset,
                    truncations: pending.truncations,
                    born: pending.born,
                },
                if g.gzip { 0 } else { g.size },
            );
            backlog.steps.push(generations::Step::Open(pending));
        }
        backlog
    }

    /// Moves every container's backlog on: once the generation being read is read to its end
    /// (or let go), the next one is followed; after the last, the live file is read again.
    pub(super) fn advance_generations(&mut self) {
        let mut i = 0;
        while i < self.chains.len() {
            loop {
                let chain = &self.chains[i];
                let busy = chain
                    .active
                    .is_some_and(|key| self.files.iter().any(|f| f.key == key && !f.drained()));
                if busy {
                    break;
                }
                let Some(step) = self.chains[i].steps.pop_front() else {
                    self.chains[i].active = None;
                    break;
                };
                match step {
                    generations::Step::Open(pending) => {
                        let (path, target) =
                            (self.chains[i].path.clone(), self.chains[i].target.clone());
                        self.chains[i].active = self.follow_generation(pending, &path, target);
                    }
                    generations::Step::Release(key) => {
                        if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
                            f.held = false;
                            f.readable = true;
                        }
                        self.chains[i].active = None;
                    }
                }
            }
            if self.chains[i].steps.is_empty() && self.chains[i].active.is_none() {
                self.chains.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Follows a rotated generation of a container from its stored offset, under its live
    /// file's name (its records say where they come from as the live file's would).
    pub(super) fn follow_generation(
        &mut self,
        pending: generations::Pending,
        path: &Path,
        target: Option<PathBuf>,
    ) -> Option<FileKey> {
        let generations::Pending {
            generation: g,
            offset,
            truncations,
            born,
        } = pending;
        let dev_ino = (g.dev, g.inode);
        if self
            .files
            .iter()
            .any(|f| (f.identity.dev, f.identity.inode) == dev_ino)
        {
            return None;
        }
        let content = if g.gzip {
            match gzip::GzContent::open(&g.file) {
                Ok(gz) => reader::Content::Gzip(Box::new(gz)),
                Err(e) => {
                    telemetry::add(&metrics().read_errors, 1);
                    tracing::warn!(path = %g.path.display(), error = %e, "Cannot read a rotated generation.");
                    return None;
                }
            }
        } else {
            reader::Content::Plain
        };
        let identity = FileIdentity {
            dev: g.dev,
            inode: g.inode,
            fingerprint: fingerprint::of_bytes(&g.head),
        };
        telemetry::add(&metrics().generations_recovered, 1);
        tracing::info!(path = %path.display(), generation = %g.path.display(), offset, gzip = g.gzip, "Reading a rotated generation that holds unread lines.");
        let key = self.follow(
            path,
            target,
            g.file,
            identity,
            Start {
                offset,
                truncations,
                born,
                known: true,
            },
            Attachment::Detached {
                since: Instant::now(),
            },
        );
        if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
            f.content = content;
            f.size = offset;
        }
        Some(key)
    }
}
