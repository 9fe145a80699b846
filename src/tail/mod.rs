//! Tailing: discovering files, reading them fairly, following them through rotation.
//!
//! The tailer is one plain thread (file reads are blocking system calls that are fast from the
//! page cache; a dedicated thread is cheaper than bouncing each through a blocking pool). It
//! loops: rescan when notify or the rescan timer says so, poll idle files with `fstat` (idle
//! files cost no reads), give every readable file one turn of at most `read_budget` bytes, send
//! each turn's batch downstream once the memory budget has room for it, ship the multiline records
//! of idle files once they waited `multiline.flush_timeout` (it wakes up for that, and looks only
//! at files that hold one), and let go of rotated or deleted files once they are read to their
//! end and quiet for `rotate_wait`.
//!
//! It never moves a position: it registers files with [`positions::Positions`] and asks it where
//! to resume; only acknowledgements move positions.

pub mod discovery;
pub mod fingerprint;
pub mod generations;
pub mod gzip;
pub mod lag;
pub mod limits;
pub mod positions;
pub mod reader;
pub mod rotation;
pub mod stages;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::GlobSet;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::buffer::Budget;
use crate::config::{ReadFrom, TailSettings};
use crate::document::Encoder;
use crate::enrich::Enricher;
use crate::parse::multiline::Multiline;
use crate::parse::LineParser;
use crate::process::Processor;
use crate::record::{Batch, FileKey};
use crate::source::{FileIdentity, Fingerprint, KubeletName, Source};
use crate::telemetry::{self, metrics, Throttle};
use crate::timestamp::Timestamp;

use discovery::Discovery;
use limits::{Gate, Limits};
use positions::{Positions, Resume};
use reader::{Attachment, TailedFile};
use rotation::{Change, Observation};
use stages::{Origin, Stages};

/// How often a file's path is checked for rotation or deletion, at most.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// How long the tailer waits for budget before looking at the stop signal and its files again.
const BUDGET_WAIT: Duration = Duration::from_millis(100);
/// How long the tailer sleeps when the batch channel is full before trying again.
const CHANNEL_WAIT: Duration = Duration::from_millis(10);

/// Where files found at start-up resume when the positions table has nothing for them.
#[derive(Clone, Debug)]
pub enum StartPolicy {
    /// As configured (`tail.read_from`).
    Configured,
    /// From the head, whatever is configured: the positions table was unreadable, and reading
    /// from the tail would lose what was not shipped before.
    Head,
    /// After a reload: a file the previous pipeline's patterns (`include` minus `exclude`) match
    /// appeared while the pipeline restarted, and the previous pipeline would have read it from
    /// its head, so it is read from its head; a file only the new patterns match is one found at
    /// start-up (`tail.read_from`).
    Reload { include: GlobSet, exclude: GlobSet },
}

impl StartPolicy {
    /// Whether `tail.read_from` decides where `path`, found at the first scan with no stored
    /// position, is read from.
    fn read_from_applies(&self, path: &Path) -> bool {
        match self {
            StartPolicy::Configured => true,
            StartPolicy::Head => false,
            StartPolicy::Reload { include, exclude } => {
                let followed_before = include.is_match(path) && !exclude.is_match(path);
                !followed_before
            }
        }
    }
}

/// A file the tailer was still reading when it stopped, though no name leads to it any more
/// (renamed away by rotation, or deleted): only the open descriptor still reaches its unread
/// end. A reload hands it to the next tailer, which finishes it from its stored position.
#[derive(Debug)]
pub struct Orphan {
    /// The path it was followed under.
    pub path: PathBuf,
    /// What that path resolved to when it was opened.
    pub target: Option<PathBuf>,
    pub file: File,
}

/// Everything the tailer thread needs.
pub struct TailerParts {
    pub settings: TailSettings,
    pub positions: Positions,
    pub encoder: Arc<Encoder>,
    pub budget: Budget,
    pub out: Sender<Batch>,
    pub stop: CancellationToken,
    pub wake: (std::sync::mpsc::SyncSender<()>, Receiver<()>),
    pub start_policy: StartPolicy,
    /// This node's name: part of every record's document id (see [`IdPrefix`]).
    pub node_name: String,
    /// Kubernetes metadata, when enrichment is on.
    pub enricher: Option<Enricher>,
    /// Per-container rate limits.
    pub rate_limit: crate::buffer::rate_limit::RateLimitSettings,
    /// Files the previous tailer left unfinished (a reload): followed from their stored
    /// positions at the first scan.
    pub orphans: Vec<Orphan>,
    /// The multiline rules; new files join with the default one.
    pub multiline: Multiline,
    /// Structured messages, filters and per-pod hints.
    pub processing: crate::process::ProcessingSettings,
}

/// What one round of reads found.
struct Round {
    /// Some file may have more to read right away.
    more: bool,
    /// The earliest time a file held back by its rate limit may be read again.
    next_due: Option<Instant>,
}

/// Where a file starts being read, and how many truncations its generation has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Start {
    offset: u64,
    truncations: u32,
    /// Birth time of the file its content was first read from (see [`fingerprint::id_prefix`]).
    born: i64,
    /// It resumes a stored position (the file was read before).
    known: bool,
}

/// A generation a copytruncate ended (the file was truncated under it), remembered for a while:
/// logrotate copied its content to another file first, and a pattern may follow that copy.
#[derive(Clone, Debug)]
struct Truncated {
    /// The directory of the file it was read from: a copy is made next to it.
    dir: Option<PathBuf>,
    fingerprint: Fingerprint,
    /// The end of its acknowledged prefix: the copy is read from here. What was sent past it
    /// and is still in flight is read again from the copy under the same ids (a repeat
    /// Elasticsearch answers 409), so a stop before those acknowledgements loses nothing.
    acked: u64,
    truncations: u32,
    id_prefix: Option<crate::record::IdPrefix>,
    when: Instant,
}

impl Truncated {
    /// What a copy of `f`'s current generation needs to know of it.
    fn of(f: &TailedFile, acked: u64, when: Instant) -> Truncated {
        Truncated {
            dir: f
                .target
                .as_deref()
                .unwrap_or(&f.path)
                .parent()
                .map(Path::to_path_buf),
            fingerprint: f.identity.fingerprint,
            acked,
            truncations: f.truncations,
            id_prefix: f.id_prefix(),
            when,
        }
    }
}

/// How long a truncated generation is remembered for its copy to be recognised.
const COPY_WINDOW: Duration = Duration::from_secs(60);

/// The tailer's state; run it with [`Tailer::run`] on its own thread.
pub struct Tailer {
    settings: TailSettings,
    positions: Positions,
    encoder: Arc<Encoder>,
    budget: Budget,
    out: Sender<Batch>,
    stop: CancellationToken,
    wake: Receiver<()>,
    discovery: Discovery,
    start_policy: StartPolicy,
    files: Vec<TailedFile>,
    /// Generations truncated lately, whose copies may still be found (see `copy_of`).
    truncated_lately: Vec<Truncated>,
    /// While a loop over `files` runs (a round of reads, of multiline timeouts, of releases):
    /// the index it looks at next. A file removed while that loop waits in `send` (the
    /// deleted-file limits) shifts the files after it, and this follows (see `remove_file`).
    cursor: Option<usize>,
    /// The least a batch is charged against the budget: the budget's share of one slot of the
    /// batch channel. The budget is then spent before the channel can fill, so the reader waits
    /// where it keeps turning (`send`), never in the channel.
    min_charge: usize,
    /// When the directories were last scanned, the files last polled and their paths last
    /// resolved: the reader's housekeeping, done between rounds and while it waits.
    last_scan: Option<Instant>,
    last_poll: Instant,
    last_rotation_check: Instant,
    /// Live files by the path they were found under, so a scan opens only what is new.
    by_path: HashMap<PathBuf, FileKey>,
    /// Files let go, with the fingerprint and offset they were read to: if a scan finds one again
    /// (its rotated name matches a pattern) it resumes there, not at a position still in flight.
    released: HashMap<(u64, u64), Resume>,
    enricher: Option<Enricher>,
    enrich_warnings: Throttle,
    /// Limits, processing and stamping: the path every batch takes (see `stages`).
    stages: Stages,
    multiline: Multiline,
    next_key: u64,
    /// The first scan applies `read_from`; files appearing later are always read from the head.
    first_scan: bool,
    /// Handed over by the previous tailer; adopted at the first scan.
    orphans: Vec<Orphan>,
    /// Rotated generations still to be read before their live file (see [`generations`]).
    chains: Vec<generations::Chain>,
    /// Directory listings taken during the current scan (see [`generations::Listing`]).
    listings: HashMap<PathBuf, Arc<generations::Listing>>,
    /// When this tailer started: generations of a file found later that were written since are
    /// read even if nothing of the file is known.
    started: std::time::SystemTime,
    scratch: Vec<u8>,
    open_warnings: Throttle,
}

/// What looking at a followed file's rotated generations found.
#[derive(Default)]
struct Backlog {
    /// The generations to read first, oldest first.
    steps: Vec<generations::Step>,
    /// A generation of the file, or the file itself, was read before: the live file, if unknown,
    /// is newer and read from its start.
    newer_than_known: bool,
}

/// The downstream side went away (shutdown), stop reading.
struct Stopped;

impl Tailer {
    pub fn new(parts: TailerParts) -> Self {
        let (wake_tx, wake_rx) = parts.wake;
        let discovery = Discovery::new(&parts.settings, wake_tx);
        let min_charge = parts.budget.capacity() / parts.out.max_capacity().max(1);
        Tailer {
            settings: parts.settings,
            positions: parts.positions,
            encoder: Arc::clone(&parts.encoder),
            min_charge,
            budget: parts.budget,
            out: parts.out,
            stop: parts.stop,
            wake: wake_rx,
            discovery,
            start_policy: parts.start_policy,
            stages: Stages {
                limits: {
                    let limits = Limits::new(parts.rate_limit);
                    limits.active(parts.enricher.is_some()).then_some(limits)
                },
                processor: parts
                    .processing
                    .active(parts.enricher.is_some())
                    .then(|| Processor::new(parts.processing)),
                encoder: parts.encoder,
                node_name: parts.node_name,
            },
            enricher: parts.enricher,
            multiline: parts.multiline,
            enrich_warnings: Throttle::new(Duration::from_secs(30)),
            files: Vec::new(),
            truncated_lately: Vec::new(),
            cursor: None,
            last_scan: None,
            last_poll: Instant::now(),
            last_rotation_check: Instant::now(),
            by_path: HashMap::new(),
            released: HashMap::new(),
            next_key: 1,
            first_scan: true,
            orphans: parts.orphans,
            chains: Vec::new(),
            listings: HashMap::new(),
            started: std::time::SystemTime::now(),
            scratch: Vec::new(),
            open_warnings: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Runs until the stop token is cancelled. Dropping the tailer closes the batch channel,
    /// which is how the sink learns that reading is over. Returns the files still being read
    /// that no name leads to any more, for a successor.
    pub fn run(mut self) -> Vec<Orphan> {
        while !self.stop.is_cancelled() {
            telemetry::beat(telemetry::Loop::Tailer);
            self.housekeeping();
            let round = match self.read_round() {
                Ok(round) => round,
                Err(Stopped) => break,
            };
            if self.release_finished().is_err() || self.ship_drop_summaries().is_err() {
                break;
            }
            let Ok(multiline_due) = self.expire_multiline() else {
                break;
            };
            if !round.more {
                let mut next_poll = self
                    .settings
                    .poll_interval
                    .saturating_sub(self.last_poll.elapsed());
                if let Some(due) = round.next_due {
                    next_poll = next_poll.min(due.saturating_duration_since(Instant::now()));
                }
                if let Some(due) = multiline_due {
                    let wait = due.0.saturating_sub(Timestamp::now().0).max(0);
                    next_poll = next_poll.min(Duration::from_nanos(wait as u64));
                }
                match self
                    .wake
                    .recv_timeout(next_poll.max(Duration::from_millis(1)))
                {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(next_poll),
                }
            }
        }
        tracing::debug!(files = self.files.len(), "Tailer stopped.");
        metrics()
            .files_current
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.files
            .into_iter()
            .filter(|f| matches!(f.attachment, Attachment::Detached { .. }))
            .map(|f| Orphan {
                path: f.path,
                target: f.target,
                file: f.file,
            })
            .collect()
    }

    /// What the reader does whatever else is going on, between rounds and while it waits for
    /// the sink: rescans (at once when notify saw a name change, else every `rescan_interval`),
    /// polls idle files, and every second resolves paths and keeps the deleted-file limits.
    /// Discovery waits for nothing: a new file is opened, and its descriptor held, within the
    /// poll interval of its creation even while Elasticsearch is away and the budget spent.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let names_changed = self.discovery.take_dirty();
        if names_changed {
            // A rename or removal in a watched directory: find out at once whether it was
            // one of ours being rotated, so its successor is opened within milliseconds.
            self.poll(true);
            self.last_rotation_check = now;
        }
        if names_changed
            || self
                .last_scan
                .is_none_or(|t| now - t >= self.settings.rescan_interval)
        {
            self.scan();
            self.last_scan = Some(now);
        }
        if now - self.last_poll >= self.settings.poll_interval {
            let check_paths = now - self.last_rotation_check >= ROTATION_CHECK;
            self.poll(check_paths);
            self.last_poll = now;
            if check_paths {
                self.last_rotation_check = now;
                // Deletions are seen by these polls, so their limits are kept here.
                self.limit_deleted();
            }
        }
    }

    /// Opens the files a scan finds that are not followed yet.
    fn scan(&mut self) {
        let found = self.discovery.scan();
        self.listings.clear();
        let first = std::mem::replace(&mut self.first_scan, false);
        for path in &found {
            let path = path.as_path();
            if self.by_path.contains_key(path) {
                continue;
            }
            if let Err(e) = self.open(path, first) {
                if e.kind() != io::ErrorKind::NotFound {
                    telemetry::add(&metrics().read_errors, 1);
                    if let Some(suppressed) = self.open_warnings.admit() {
                        tracing::warn!(path = %path.display(), error = %e, suppressed, "Cannot open log file; retrying at the next scan.");
                    }
                }
            }
        }
        self.listings.clear();
        if first {
            self.adopt_orphans();
            self.recover_rotated();
            tracing::info!(
                files = self.files.len(),
                "Initial scan done; following the files found."
            );
        }
        self.update_gauge();
    }

    fn open(&mut self, path: &Path, first_scan: bool) -> io::Result<()> {
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
            self.copy_of(&file, path)
        };
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
        if let Some(prefix) = copy.and_then(|c| c.id_prefix) {
            if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
                f.inherit_id_prefix(prefix);
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
    fn plan_generations(
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
    fn advance_generations(&mut self) {
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
    fn follow_generation(
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

    /// Starts following an open file from `offset`. `path` is the name its records carry,
    /// `target` the file it resolved to when opened.
    fn follow(
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
    fn adopt_orphans(&mut self) {
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
    fn recover_rotated(&mut self) {
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

    fn new_parser(&self, path: &Path) -> LineParser {
        LineParser::new(
            self.settings.format,
            self.settings.max_line_bytes,
            self.settings.oversize,
            Arc::from(path),
        )
        .with_multiline(self.multiline.default_rule())
    }

    /// Whether a newly found file is logrotate's copy (copytruncate) of a generation followed
    /// next to it: its first bytes are those of a file followed now, or of one truncated lately.
    /// A copy holds what the original held, so it is read from the end of the original's
    /// acknowledged prefix, with the original's document ids: what both sent is one document.
    fn copy_of(&self, file: &File, path: &Path) -> Option<Truncated> {
        let dir = std::fs::canonicalize(path)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf));
        let same_dir = |d: Option<&Path>| d.is_some() && d == dir.as_deref();
        let candidates = self
            .files
            .iter()
            .filter(|f| !f.content.is_gzip())
            .map(|f| Truncated::of(f, self.positions.acked(f.key).unwrap_or(0), Instant::now()))
            .chain(self.truncated_lately.iter().cloned());
        for c in candidates {
            // A young file's shorter fingerprint could match a different file that starts the
            // same way: then its first records would be taken for the original's.
            if c.fingerprint.len < fingerprint::FINGERPRINT_BYTES || !same_dir(c.dir.as_deref()) {
                continue;
            }
            if fingerprint::matches(file, c.fingerprint).unwrap_or(false) {
                return Some(c);
            }
        }
        None
    }

    /// Whether `file` was created after the positions file was last written, that is while
    /// logship was not running (a container started, or logrotate made a copy, meanwhile): all
    /// of it is new, not history. Unknown where the filesystem keeps no birth time.
    fn born_while_stopped(&self, file: &File) -> bool {
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
    fn resume_offset(
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

    /// Looks at every file that is not known to be readable: growth, truncation, rotation,
    /// deletion. `check_paths` also resolves each file's path (less often: it is a path lookup).
    fn poll(&mut self, check_paths: bool) {
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
    fn limit_deleted(&mut self) {
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
    fn truncated(&mut self, i: usize) {
        let key = FileKey(self.next_key);
        self.next_key += 1;
        let parser = self.new_parser(&self.files[i].path.clone());
        let f = &mut self.files[i];
        // What the file held past the read offset at the last look is gone with the old content.
        let unread = f.size.saturating_sub(f.read_offset);
        tracing::warn!(path = %f.path.display(), read_offset = f.read_offset, unread_bytes = unread, "Log file truncated (copytruncate?); reading it again from the start. Bytes it held that were not read yet are lost.");
        telemetry::add(&metrics().files_truncated, 1);
        telemetry::add(&metrics().truncated_unread_bytes, unread);
        // Where a copy of the old content would be read from (see `copy_of`): once everything
        // sent is acknowledged the positions table forgets the generation, so ask it first.
        let acked = self.positions.acked(f.key).unwrap_or(f.ack_start);
        // Batches of the old generation still in flight finish its ack range, not the new one.
        self.positions.release(f.key, f.ack_start);
        let now = Instant::now();
        self.truncated_lately
            .retain(|t| now.duration_since(t.when) < COPY_WINDOW);
        self.truncated_lately.push(Truncated::of(f, acked, now));
        let identity = fingerprint::identify(&f.file).unwrap_or(f.identity);
        f.restart(key, identity, parser);
        if self.by_path.contains_key(&f.path) {
            self.by_path.insert(f.path.clone(), key);
        }
        self.positions.register(
            key,
            identity,
            &f.path,
            f.target.as_deref(),
            positions::Origin {
                offset: 0,
                truncations: f.truncations,
                born: f.born,
            },
        );
    }

    fn discovery_now(&self) {
        // Rescan at the top of the next loop.
        self.discovery.mark_dirty();
    }

    /// Gives every readable file one turn.
    fn read_round(&mut self) -> Result<Round, Stopped> {
        let mut round = Round {
            more: false,
            next_due: None,
        };
        let now = Instant::now();
        let mut i = 0;
        while i < self.files.len() {
            if self.stop.is_cancelled() {
                self.cursor = None;
                return Err(Stopped);
            }
            self.cursor = Some(i + 1);
            let turned = self.turn(i, now, &mut round);
            // Files may be let go while a send waits (see `remove_file`).
            i = self.cursor.take().unwrap_or(usize::MAX);
            turned?;
        }
        if self.scratch.capacity() > 2 * (self.settings.read_budget + self.settings.max_line_bytes)
        {
            self.scratch = Vec::new();
        }
        Ok(round)
    }

    /// File `i`'s turn: unless it waits for its pod's metadata or its rate limit, read up to
    /// the read budget and send what was read down the stage path.
    fn turn(&mut self, i: usize, now: Instant, round: &mut Round) -> Result<(), Stopped> {
        let f = &mut self.files[i];
        if !f.readable {
            return Ok(());
        }
        if let Some(enricher) = &self.enricher {
            if !enrich(f, enricher, &self.enrich_warnings) {
                // Held back while its pod's metadata is on its way; other files go on.
                return Ok(());
            }
        }
        if let Some(limits) = self.stages.limits.as_mut() {
            if let Gate::Hold(until) = limits.gate(f, self.enricher.as_ref(), now) {
                // Its container is over its rate limit (throttle): other files go on.
                round.next_due = Some(round.next_due.map_or(until, |d| d.min(until)));
                return Ok(());
            }
        }
        if let Some(processor) = self.stages.processor.as_mut() {
            // Before the read: a multiline hint must reach the parser before its lines do.
            let kubelet = f.source.kubelet.as_ref();
            let path = f.source.path.as_path();
            if let Some(multiline) =
                processor.resolve(&mut f.processing, path, kubelet, self.enricher.as_ref())
            {
                apply_multiline_hint(f, multiline, &self.multiline);
            }
        }
        let budget = match &self.stages.limits {
            Some(limits) => limits.read_cap(f, self.settings.read_budget),
            None => self.settings.read_budget,
        };
        let offset_before = f.read_offset;
        let turn = f.read_turn(&mut self.scratch, budget, self.settings.max_line_bytes);
        // A gzipped generation never changes; a plain file can be truncated under the reader.
        if turn.bytes > 0
            && !f.content.is_gzip()
            && !fingerprint::matches(&f.file, f.identity.fingerprint).unwrap_or(true)
        {
            // Truncated (copytruncate) before or during the read: what it read at the old
            // offset is the new content's middle. It is not shipped; its range is
            // acknowledged, and the new content is read again from 0. Only a fingerprint
            // check after the read tells: a poll of a file being read comes once a second.
            if turn.batch.ack.end > turn.batch.ack.start {
                self.positions.ack(turn.batch.ack);
            }
            f.read_offset = offset_before;
            // Not sent: a copy of the old content (copytruncate) is read from here.
            f.ack_start = turn.batch.ack.start;
            self.truncated(i);
            round.more = true;
            return Ok(());
        }
        f.readable = !turn.eof && turn.error.is_none();
        round.more |= f.readable;
        if let Some(e) = &turn.error {
            telemetry::add(&metrics().read_errors, 1);
            tracing::warn!(path = %f.path.display(), offset = f.read_offset, error = %e, "Error reading log file; retrying at the next poll.");
        }
        let mut batch = turn.batch;
        self.stages
            .prepare(f, &mut batch, Origin::Read { bytes: turn.bytes });
        self.send(batch)
    }

    /// Ships the multiline records of idle files (read to their end, not grown since) that
    /// waited `flush_timeout` for their next line. Returns when the next one is due, for the
    /// loop's sleep. A file that is readable gets its turn instead, which does the same when it
    /// reaches the end; only files holding an open record are looked at twice.
    fn expire_multiline(&mut self) -> Result<Option<Timestamp>, Stopped> {
        let now = Timestamp::now();
        let mut next: Option<Timestamp> = None;
        let mut i = 0;
        while i < self.files.len() {
            self.cursor = Some(i + 1);
            let sent = self.expire_one(i, now, &mut next);
            // Files may be let go while a send waits (see `remove_file`).
            i = self.cursor.take().unwrap_or(usize::MAX);
            sent?;
        }
        Ok(next)
    }

    fn expire_one(
        &mut self,
        i: usize,
        now: Timestamp,
        next: &mut Option<Timestamp>,
    ) -> Result<(), Stopped> {
        let f = &mut self.files[i];
        let Some(due) = f.parser.deadline() else {
            return Ok(());
        };
        if f.readable {
            return Ok(());
        }
        if due > now {
            *next = Some(next.map_or(due, |n| n.min(due)));
            return Ok(());
        }
        let mut batch = f.expire(now);
        self.stages.prepare(f, &mut batch, Origin::Held);
        self.send(batch)
    }

    /// Drop mode: ships the summary of lines dropped from a file that went quiet since.
    fn ship_drop_summaries(&mut self) -> Result<(), Stopped> {
        let Some(limits) = self.stages.limits.as_ref() else {
            return Ok(());
        };
        if !self.files.iter().any(|f| limits.summary_pending(f)) {
            return Ok(());
        }
        let now = Instant::now();
        let mut summaries = Vec::new();
        for f in &mut self.files {
            let Some(limits) = self.stages.limits.as_ref() else {
                break;
            };
            if !limits.summary_pending(f) {
                continue;
            }
            // An empty range: the dropped lines were acknowledged with the batches they were in.
            let mut batch = Batch::new(Arc::clone(&f.source), f.key, f.ack_start);
            limits.summarise_if_due(f, &mut batch, now);
            if !batch.records.is_empty() {
                self.stages.prepare(f, &mut batch, Origin::Summary);
                summaries.push(batch);
            }
        }
        for batch in summaries {
            self.send(batch)?;
        }
        Ok(())
    }

    /// Lets go of detached files that are read to their end and quiet for `rotate_wait`.
    fn release_finished(&mut self) -> Result<(), Stopped> {
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
    fn let_go(&mut self, i: usize) -> Result<(), Stopped> {
        let mut f = self.remove_file(i);
        let mut batch = f.finish(self.settings.max_line_bytes);
        let end = batch.ack.end;
        self.released.insert(
            (f.identity.dev, f.identity.inode),
            Resume {
                fingerprint: f.identity.fingerprint,
                offset: f.read_offset,
                truncations: f.truncations,
            },
        );
        self.stages.prepare(&mut f, &mut batch, Origin::Held);
        self.send(batch)?;
        self.positions.release(f.key, end);
        telemetry::add(&metrics().files_released, 1);
        tracing::info!(path = %f.path.display(), offset = f.read_offset, "Finished reading rotated or deleted log file.");
        self.update_gauge();
        Ok(())
    }

    /// Takes file `j` out of the followed files, keeping the order of the others, and keeps the
    /// loop over them that may be running (`cursor`) on the file it was to look at next.
    fn remove_file(&mut self, j: usize) -> TailedFile {
        let f = self.files.remove(j);
        if let Some(next) = self.cursor.as_mut() {
            if j < *next {
                *next -= 1;
            }
        }
        f
    }

    /// Sends a batch downstream once the memory budget has room for it. A batch with no records
    /// only acknowledges its range (empty lines, truncated excess), without a trip through the
    /// sink.
    ///
    /// The reader never blocks without turning: it waits on the budget in short steps, and
    /// between them beats its heartbeat and does its housekeeping (discovery, polls, rotation,
    /// deleted-file limits), for as long as an outage lasts. Every batch is charged at least
    /// `min_charge`, so the budget is spent before the channel to the sink can fill; should the
    /// channel be full all the same, the reader waits for it the same way.
    fn send(&mut self, mut batch: Batch) -> Result<(), Stopped> {
        if batch.records.is_empty() {
            if batch.ack.end > batch.ack.start {
                self.positions.ack(batch.ack);
            }
            return Ok(());
        }
        let bytes = batch.memory_bytes().max(self.min_charge);
        let asked = Instant::now();
        let permit = loop {
            if self.stop.is_cancelled() {
                return Err(Stopped);
            }
            // Waiting for the sink is turning, not being stuck (liveness).
            telemetry::beat(telemetry::Loop::Tailer);
            if let Ok(p) = self.budget.acquire(bytes, BUDGET_WAIT) {
                break p;
            }
            self.housekeeping();
        };
        batch.permit = Some(permit);
        loop {
            match self.out.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Closed(_)) => return Err(Stopped),
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    if self.stop.is_cancelled() {
                        return Err(Stopped);
                    }
                    telemetry::beat(telemetry::Loop::Tailer);
                    std::thread::sleep(CHANNEL_WAIT);
                    self.housekeeping();
                }
            }
        }
        telemetry::add_duration(&metrics().reader_wait, asked.elapsed());
        Ok(())
    }

    fn update_gauge(&self) {
        metrics().files_current.store(
            self.files.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Brings a file's document fragment up to date with the metadata cache. Returns whether the
/// file may be read now: not while its pod is unknown and it has waited less than
/// `wait_for_metadata` (the watch may not have delivered a pod that just started).
fn enrich(f: &mut TailedFile, enricher: &Enricher, warnings: &Throttle) -> bool {
    let Some(kubelet) = f.source.kubelet.as_ref() else {
        return true;
    };
    // Read before the version: once the namespaces' initial list is seen complete, every
    // namespace it held is in the cache and counted in the version read next.
    let namespaces_ready = enricher.cache.namespaces_synced();
    let version = enricher.cache.version();
    if f.meta_version != version {
        f.meta_version = version;
        if let Some(found) = enricher.cache.lookup(&kubelet.namespace, &kubelet.pod) {
            let path = f.source.path.to_string_lossy();
            f.fragment = crate::enrich::metadata::render(
                enricher.schema,
                &path,
                Some(kubelet),
                Some(&found.pod),
                found.namespace.as_deref(),
            )
            .into();
            f.enriched = true;
        }
        // Not found: the pod was deleted longer ago than the grace period, or is not known
        // yet; the fragment keeps what it had (the file name's, or the last metadata).
    }
    // The namespace's labels belong to the first records too: wait for its list as well.
    if (f.enriched && namespaces_ready) || f.waited_out {
        return true;
    }
    if f.opened.elapsed() < enricher.wait_for_metadata {
        return false;
    }
    f.waited_out = true;
    telemetry::add(&metrics().enrich_timeouts, 1);
    if let Some(suppressed) = warnings.admit() {
        tracing::warn!(path = %f.path.display(), namespace = %kubelet.namespace, pod = %kubelet.pod, wait = ?enricher.wait_for_metadata, suppressed, "No Kubernetes metadata for this pod yet; shipping its lines with what the file name tells until it arrives.");
    }
    true
}

/// The one place a multiline hint (a pod's `logship.io/multiline` annotation or a
/// `processing.rules` entry, resolved by `process::hints`) reaches a file; `None`: no hint (any
/// more), the configured `multiline.default_rule` applies. The parser ships what it holds open
/// before the new rule applies. A name no rule has is warned about and leaves the default.
fn apply_multiline_hint(f: &mut TailedFile, multiline: Option<Arc<str>>, rules: &Multiline) {
    static UNKNOWN: Throttle = Throttle::new(Duration::from_secs(60));
    let rule = match multiline.as_deref() {
        None => rules.default_rule(),
        Some(name) => match rules.resolve(name) {
            Ok(rule) => rule,
            Err(e) => {
                if let Some(suppressed) = UNKNOWN.admit() {
                    tracing::warn!(path = %f.path.display(), error = %e, suppressed, "A multiline hint names no rule; the configured default rule applies.");
                }
                rules.default_rule()
            }
        },
    };
    tracing::debug!(path = %f.path.display(), multiline = multiline.as_deref().unwrap_or("(default)"), "Multiline rule for this container.");
    f.parser.set_multiline(rule);
}

/// Where `read_from = "tail"` starts: after the last newline, so the first record is whole.
fn tail_offset(file: &File, size: u64, max_line: usize) -> io::Result<u64> {
    let window = (max_line as u64).min(size);
    let mut buf = vec![0u8; window as usize];
    file.read_exact_at(&mut buf, size - window)?;
    Ok(match memchr::memrchr(b'\n', &buf) {
        Some(i) => size - window + i as u64 + 1,
        None if window < size => size,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> GlobSet {
        let mut set = globset::GlobSetBuilder::new();
        for p in patterns {
            set.add(globset::Glob::new(p).unwrap());
        }
        set.build().unwrap()
    }

    /// With `read_from = "tail"`, a file found at the first scan after a reload starts at its
    /// end only if the previous pipeline would not have followed it: one it would have followed
    /// appeared during the restart, and its lines are new.
    #[test]
    fn after_a_reload_read_from_applies_only_to_newly_included_files() {
        let reload = StartPolicy::Reload {
            include: set(&["/var/log/containers/*.log"]),
            exclude: set(&["/var/log/containers/noisy*"]),
        };
        let cases = [
            ("/var/log/containers/web.log", false),
            ("/var/log/containers/noisy-1.log", true),
            ("/var/log/other/app.log", true),
        ];
        for (path, applies) in cases {
            assert_eq!(reload.read_from_applies(Path::new(path)), applies, "{path}");
        }
        assert!(StartPolicy::Configured.read_from_applies(Path::new("/x.log")));
        assert!(!StartPolicy::Head.read_from_applies(Path::new("/x.log")));
    }
}
