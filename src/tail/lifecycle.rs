//! A followed file's life after it was opened: polls (growth, truncation, rotation, deletion),
//! copytruncate, the deleted-file limits, and letting go of a file read to its end.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::ack::FileKey;
use crate::telemetry::{self, metrics};

use super::open::{Truncated, COPY_WINDOW};
use super::positions::{self, Resume};
use super::reader::{Attachment, TailedFile};
use super::rotation::{self, Change, Observation};
use super::stages::Origin;
use super::{fingerprint, Stopped, Tailer};

impl Tailer {
    /// Looks at every file that is not known to be readable: growth, truncation, rotation,
    /// deletion. `check_paths` also resolves each file's path (less often: it is a path lookup).
    pub(super) fn poll(&mut self, check_paths: bool) {
        self.advance_generations();
        let now = Instant::now();
        let (mut behind, mut oldest) = (0u64, Duration::ZERO);
        let mut i = 0;
        while i < self.files.len() {
            let f = &mut self.files[i];
            if f.readable && !check_paths {
                i += 1;
                continue;
            }
            let (size, links) = match f.file.metadata() {
                Ok(m) => (m.len(), m.nlink()),
                Err(e) => {
                    telemetry::add(&metrics().read_errors, 1);
                    tracing::warn!(path = %f.path.display(), error = %e, "Cannot inspect open log file.");
                    i += 1;
                    continue;
                }
            };
            if f.content.is_gzip() {
                // A gzipped generation never changes; its size on disk is not its content's.
                // It is read to its end in turns and then let go.
                f.deleted = links == 0;
                f.size = f.read_offset;
                i += 1;
                continue;
            }
            let open = (f.identity.dev, f.identity.inode);
            let path_target = if check_paths || f.attachment != Attachment::Live {
                match std::fs::metadata(&f.path) {
                    Ok(m) => Some((m.dev(), m.ino())),
                    Err(_) => None,
                }
            } else {
                Some(open)
            };
            let change = rotation::classify(Observation {
                size,
                read_offset: f.read_offset,
                path_target,
                open,
            });
            match change {
                Change::Idle => {}
                Change::Grew
                    if !fingerprint::matches(&f.file, f.identity.fingerprint).unwrap_or(true) =>
                {
                    // Truncated and written past the old offset between two polls: only the
                    // changed first bytes tell.
                    self.truncated(i);
                }
                Change::Grew => {
                    f.readable = true;
                    if let Ok(Some(longer)) =
                        fingerprint::extend(&f.file, f.identity.fingerprint, size)
                    {
                        f.identity.fingerprint = longer;
                        self.positions.update_fingerprint(f.key, longer);
                    }
                }
                Change::Truncated => {
                    self.truncated(i);
                }
                Change::Rotated | Change::Deleted => {
                    f.readable |= size > f.read_offset;
                    if f.attachment == Attachment::Live {
                        f.attachment = Attachment::Detached {
                            since: Instant::now(),
                        };
                        if self.by_path.get(&f.path) == Some(&f.key) {
                            self.by_path.remove(&f.path);
                        }
                        if change == Change::Rotated {
                            telemetry::add(&metrics().files_rotated, 1);
                            tracing::info!(path = %f.path.display(), "Log file rotated; reading the old file to its end.");
                            // The new file under this path is read from its head by the next scan.
                            self.discovery_now();
                        } else {
                            tracing::info!(path = %f.path.display(), "Log file deleted; reading it to its end.");
                        }
                    }
                }
            }
            // After a truncation this is the file's new generation.
            let f = &mut self.files[i];
            if f.held {
                // Its older generations are read first (see `advance_generations`).
                f.readable = false;
            }
            f.size = size;
            f.deleted = links == 0;
            if check_paths {
                self.positions.update_size(f.key, size);
            }
            if check_paths {
                let acked = self.positions.acked(f.key).unwrap_or(f.ack_start);
                let (bytes, age) = f.lag.sample(size, acked, now);
                behind += bytes;
                oldest = oldest.max(age);
            }
            i += 1;
        }
        if check_paths {
            telemetry::set_gauge(&metrics().bytes_behind, behind);
            telemetry::set_gauge(&metrics().oldest_unshipped_age, oldest.as_secs());
        }
    }

    /// Keeps the deleted files held open within `max_deleted_files` and `max_deleted_bytes`:
    /// past either, the file deleted first is let go, and what was not read of it is lost,
    /// counted and logged as such. Their disk space is the node's, and a full disk loses more.
    ///
    /// Letting go here ships nothing more of the file (this also runs while the reader waits
    /// for the sink, in the middle of a round): the loss is everything past the last batch sent.
    pub(super) fn limit_deleted(&mut self) {
        loop {
            let mut count = 0usize;
            let mut bytes = 0u64;
            let mut first: Option<(usize, Instant)> = None;
            for (i, f) in self.files.iter().enumerate() {
                let Attachment::Detached { since } = f.attachment else {
                    continue;
                };
                if !f.deleted {
                    continue;
                }
                count += 1;
                bytes += f.size;
                if first.is_none_or(|(_, t)| since < t) {
                    first = Some((i, since));
                }
            }
            telemetry::set_gauge(&metrics().deleted_files_open, count as u64);
            let over =
                count > self.settings.max_deleted_files || bytes > self.settings.max_deleted_bytes;
            let Some((i, _)) = first.filter(|_| over) else {
                return;
            };
            let f = self.remove_file(i);
            let unread = f.size.saturating_sub(f.ack_start);
            if unread > 0 {
                telemetry::add(&metrics().deleted_unread_bytes, unread);
                tracing::error!(
                    path = %f.path.display(),
                    unread_bytes = unread,
                    shipped_to = f.ack_start,
                    size = f.size,
                    deleted_files = count,
                    deleted_bytes = bytes,
                    max_deleted_files = self.settings.max_deleted_files,
                    max_deleted_bytes = self.settings.max_deleted_bytes,
                    "Data loss: letting go of a deleted log file before it was read to its end, to free the node's disk (tail.max_deleted_files, tail.max_deleted_bytes). Its unread bytes are lost."
                );
            }
            // Batches of it in flight still finish its range; nothing after them will come.
            self.positions.release(f.key, f.ack_start);
            telemetry::add(&metrics().files_released, 1);
            self.update_gauge();
        }
    }

    /// The file shrank: copytruncate. Everything from offset 0 is new.
    pub(super) fn truncated(&mut self, i: usize) {
        let f = &self.files[i];
        // What the file held past the read offset at the last look is gone with the old content.
        let unread = f.size.saturating_sub(f.read_offset);
        tracing::warn!(path = %f.path.display(), read_offset = f.read_offset, unread_bytes = unread, "Log file truncated (copytruncate?); reading it again from the start. Bytes it held that were not read yet are lost.");
        telemetry::add(&metrics().files_truncated, 1);
        telemetry::add(&metrics().truncated_unread_bytes, unread);
        // Where a copy of the old content would be read from (see `copy_of`): once everything
        // sent is acknowledged the positions table forgets the generation, so ask it first.
        let acked = self.positions.acked(f.key).unwrap_or(f.ack_start);
        let now = Instant::now();
        self.truncated_lately
            .retain(|t| now.duration_since(t.when) < COPY_WINDOW);
        self.truncated_lately.push(Truncated::of(f, acked, now));
        let truncations = f.truncations.wrapping_add(1);
        self.new_generation(i, 0, truncations);
    }

    /// Follows file `i` on as a new generation of it that starts at `offset` with
    /// `truncations` (a truncation: from 0; a copy: from its original's acknowledged prefix).
    /// Batches of the old generation still in flight finish its ack range, not the new one's.
    pub(super) fn new_generation(&mut self, i: usize, offset: u64, truncations: u32) {
        let key = FileKey(self.next_key);
        self.next_key += 1;
        let parser = self.new_parser(&self.files[i].path.clone());
        let f = &mut self.files[i];
        self.positions.release(f.key, f.ack_start);
        let identity = fingerprint::identify(&f.file).unwrap_or(f.identity);
        f.restart(key, identity, parser);
        f.read_offset = offset;
        f.ack_start = offset;
        f.truncations = truncations;
        if self.by_path.contains_key(&f.path) {
            self.by_path.insert(f.path.clone(), key);
        }
        self.positions.register(
            key,
            identity,
            &f.path,
            f.target.as_deref(),
            positions::Origin {
                offset,
                truncations,
                born: f.born,
            },
        );
    }

    /// Lets go of detached files that are read to their end and quiet for `rotate_wait`.
    pub(super) fn release_finished(&mut self) -> Result<(), Stopped> {
        let wait = self.settings.rotate_wait;
        let mut i = 0;
        while i < self.files.len() {
            let f = &self.files[i];
            let done = match f.attachment {
                Attachment::Detached { since } => {
                    !f.readable && since.elapsed() >= wait && f.last_read.elapsed() >= wait
                }
                Attachment::Live => false,
            };
            if !done {
                i += 1;
                continue;
            }
            // File i goes: the next one to look at takes its place.
            self.cursor = Some(i);
            let let_go = self.let_go(i);
            i = self.cursor.take().unwrap_or(usize::MAX);
            let_go?;
        }
        // Remembered only while the file could still show up under another name.
        if self.released.len() > 4096 {
            self.released.clear();
        }
        Ok(())
    }

    /// Stops following file `i`: ships what its parser still holds and hands its range to the
    /// positions table, which forgets it once the batches in flight are acknowledged.
    pub(super) fn let_go(&mut self, i: usize) -> Result<(), Stopped> {
        let mut f = self.remove_file(i);
        let mut batch = f.finish(self.settings.max_line_bytes);
        // Past the batch's range when a record went on into the next generation: that record
        // acknowledges the rest.
        let end = f.release_end().max(batch.ack.end);
        self.released.insert(
            (f.identity.dev, f.identity.inode),
            Resume {
                fingerprint: f.identity.fingerprint,
                offset: f.read_offset,
                truncations: f.truncations,
            },
        );
        self.stages.prepare(&mut f, &mut batch, Origin::Held);
        self.send(batch, None)?;
        self.positions.release(f.key, end);
        telemetry::add(&metrics().files_released, 1);
        tracing::info!(path = %f.path.display(), offset = f.read_offset, "Finished reading rotated or deleted log file.");
        self.update_gauge();
        Ok(())
    }

    /// Takes file `j` out of the followed files, keeping the order of the others, and keeps the
    /// loop over them that may be running (`cursor`) on the file it was to look at next.
    pub(super) fn remove_file(&mut self, j: usize) -> TailedFile {
        let f = self.files.remove(j);
        if let Some(next) = self.cursor.as_mut() {
            if j < *next {
                *next -= 1;
            }
        }
        f
    }
}
