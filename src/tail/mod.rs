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
//!
//! The tailer's code, by role: this file holds its state and the loop (`run`, `housekeeping`,
//! `scan`); `open` where a file starts; `backlog` the rotated generations read before their live
//! file; `lifecycle` what happens to a followed file (polls, truncation, deleted-file limits,
//! letting go); `turns` the read turns and the sending of batches; `stages` the path every batch
//! takes. The per-file state is `reader::TailedFile`.

pub mod discovery;
pub mod fingerprint;
pub mod generations;
pub mod gzip;
pub mod lag;
pub mod limits;
pub mod positions;
pub mod reader;
pub mod rotation;
pub mod settings;
pub mod stages;

mod backlog;
mod lifecycle;
mod open;
mod turns;

pub use settings::{ReadFrom, TailSettings};

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::GlobSet;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::ack::FileKey;
use crate::buffer::Budget;
use crate::document::Encoder;
use crate::enrich::Enricher;
use crate::parse::multiline::Multiline;
use crate::process::Processor;
use crate::record::Batch;
use crate::telemetry::{self, metrics, Throttle};
use crate::timestamp::Timestamp;

use discovery::Discovery;
use limits::Limits;
use positions::{Positions, Resume};
use reader::{Attachment, TailedFile};
use stages::Stages;

use open::Truncated;

/// How often a file's path is checked for rotation or deletion, at most.
const ROTATION_CHECK: Duration = Duration::from_secs(1);

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
                let slept = Instant::now();
                match self
                    .wake
                    .recv_timeout(next_poll.max(Duration::from_millis(1)))
                {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(next_poll),
                }
                if round.held_back {
                    // Waiting for room, as in `send`, without blocking the other files.
                    telemetry::add_duration(&metrics().reader_wait, slept.elapsed());
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

    fn discovery_now(&self) {
        // Rescan at the top of the next loop.
        self.discovery.mark_dirty();
    }

    fn update_gauge(&self) {
        metrics().files_current.store(
            self.files.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
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
