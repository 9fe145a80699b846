//! The read loop's turns: every readable file gets one turn of at most `read_budget` bytes, the
//! multiline records of idle files are shipped once due, and every batch goes down the stage
//! path (`stages`) and is sent once the memory budget has room, without ever blocking the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;

use crate::buffer::Holder;
use crate::enrich::Enricher;
use crate::parse::multiline::Multiline;
use crate::record::Batch;
use crate::telemetry::{self, metrics, Throttle};
use crate::timestamp::Timestamp;

use super::limits::Gate;
use super::reader::TailedFile;
use super::stages::Origin;
use super::{fingerprint, Stopped, Tailer};

/// How soon a file skipped for its share of the budget is looked at again.
const FAIR_SHARE_RETRY: Duration = Duration::from_millis(20);

/// What one round of reads found.
pub(super) struct Round {
    /// Some file may have more to read right away.
    pub(super) more: bool,
    /// A file was held back for its share of the budget (the reader waits for room).
    pub(super) held_back: bool,
    /// The earliest time a file held back by its rate limit may be read again.
    pub(super) next_due: Option<Instant>,
}

/// How long the tailer waits for budget before looking at the stop signal and its files again.
pub(super) const BUDGET_WAIT: Duration = Duration::from_millis(100);

/// How long the tailer sleeps when the batch channel is full before trying again.
pub(super) const CHANNEL_WAIT: Duration = Duration::from_millis(10);

/// Brings a file's document fragment up to date with the metadata cache. Returns whether the
/// file may be read now: not while its pod is unknown and it has waited less than
/// `wait_for_metadata` (the watch may not have delivered a pod that just started).
pub(super) fn enrich(f: &mut TailedFile, enricher: &Enricher, warnings: &Throttle) -> bool {
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
pub(super) fn apply_multiline_hint(
    f: &mut TailedFile,
    multiline: Option<Arc<str>>,
    rules: &Multiline,
) {
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

/// How long a new generation waits for the previous one to be read to its end before it reads
/// its first bytes (see `Tailer::take_carry`).
const CARRY_WAIT: Duration = Duration::from_secs(2);
/// How soon it looks again.
const CARRY_RETRY: Duration = Duration::from_millis(20);

impl Tailer {
    /// Gives every readable file one turn.
    pub(super) fn read_round(&mut self) -> Result<Round, Stopped> {
        let mut round = Round {
            more: false,
            held_back: false,
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
    pub(super) fn turn(
        &mut self,
        i: usize,
        now: Instant,
        round: &mut Round,
    ) -> Result<(), Stopped> {
        if !self.files[i].readable {
            return Ok(());
        }
        if let Some(until) = self.settle_copy(i) {
            // Maybe a copy still being written: not read until its first bytes tell.
            round.next_due = Some(round.next_due.map_or(until, |d| d.min(until)));
            return Ok(());
        }
        if self.over_fair_share(i) {
            // Holds plenty of the spent budget: waits for its next turn while others are read.
            self.budget.held_back();
            round.held_back = true;
            let retry = now + FAIR_SHARE_RETRY;
            round.next_due = Some(round.next_due.map_or(retry, |d| d.min(retry)));
            return Ok(());
        }
        let f = &mut self.files[i];
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
        if f.awaits_carry && !self.take_carry(i) {
            // Its previous generation is still being read to its end.
            let retry = now + CARRY_RETRY;
            round.next_due = Some(round.next_due.map_or(retry, |d| d.min(retry)));
            return Ok(());
        }
        let f = &mut self.files[i];
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
            // Only this generation's range: a record carried in from the previous generation
            // was in the turn thrown away, so that generation's rest stays unacknowledged and
            // is read again at the next start rather than skipped.
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
        let holder = f.holder.clone();
        self.send(batch, Some(&holder))
    }

    /// File `i` is about to read its first bytes. If the previous generation of its file (a
    /// file followed under the same path: the one a rotation renamed away, or an older
    /// generation read first after a restart) ends in an open multiline record, that record
    /// goes on here: a trace the kubelet's rotation cut is one record (README, Multiline).
    /// Returns `false` while that generation is not read to its end yet (for at most
    /// [`CARRY_WAIT`]): then file `i` waits, since its first lines may belong to the record.
    fn take_carry(&mut self, i: usize) -> bool {
        let f = &self.files[i];
        let previous = self
            .files
            .iter()
            .enumerate()
            .filter(|&(j, g)| {
                // The cheap tests first: without a rule nothing is ever carried.
                g.parser.multiline().is_some()
                    && g.parser.pending_start().is_some()
                    && g.parser.carried_away().is_none()
                    && j != i
                    && g.path == f.path
            })
            .max_by_key(|(_, g)| g.last_read)
            .map(|(j, _)| j);
        let Some(j) = previous else {
            self.files[i].awaits_carry = false;
            return true;
        };
        if !self.files[j].drained() && f.opened.elapsed() < CARRY_WAIT {
            return false;
        }
        self.files[i].awaits_carry = false;
        let Some(carry) = self.files[j].carry_out(&self.stages.node_name) else {
            return true;
        };
        let start = self.files[i].read_offset;
        match self.files[i].parser.carry_in(carry, start) {
            Ok(()) => {
                telemetry::add(&metrics().multiline_carried, 1);
                tracing::debug!(path = %self.files[i].path.display(), "A multiline record the rotation cut goes on in the new file.");
            }
            Err(carry) => {
                // Another rule here (a pod hint changed): the record stays in its generation,
                // which ships it when it is let go or its flush timeout passes.
                self.files[j].parser.carry_back(carry);
            }
        }
        true
    }

    /// Whether file `i` should not read now: the budget is nearly spent (less than an eighth of
    /// it free) and the file holds at least an eighth of it already. Its turn is skipped instead
    /// of waiting for room, so the room that frees up goes first to files that hold little, a
    /// quiet container's new line among them, rather than to the file that floods
    /// (docs/ARCHITECTURE.md, fair reading and delivery). A file alone still uses the whole
    /// budget: it reads again as soon as it holds less.
    fn over_fair_share(&self, i: usize) -> bool {
        let capacity = self.budget.capacity();
        let reserve = capacity / 8;
        self.files[i].holder.held() >= reserve && self.budget.used() + reserve > capacity
    }

    /// Ships the multiline records of idle files (read to their end, not grown since) that
    /// waited `flush_timeout` for their next line. Returns when the next one is due, for the
    /// loop's sleep. A file that is readable gets its turn instead, which does the same when it
    /// reaches the end; only files holding an open record are looked at twice.
    pub(super) fn expire_multiline(&mut self) -> Result<Option<Timestamp>, Stopped> {
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

    pub(super) fn expire_one(
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
        self.send(batch, None)
    }

    /// Drop mode: ships the summary of lines dropped from a file that went quiet since.
    pub(super) fn ship_drop_summaries(&mut self) -> Result<(), Stopped> {
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
            self.send(batch, None)?;
        }
        Ok(())
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
    /// `holder`: the file the batch's permit is counted for (see `over_fair_share`).
    pub(super) fn send(
        &mut self,
        mut batch: Batch,
        holder: Option<&Holder>,
    ) -> Result<(), Stopped> {
        if batch.records.is_empty() {
            if batch.ack.end > batch.ack.start || batch.carried.is_some() {
                batch.acknowledge(&self.positions);
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
        batch.permit = Some(match holder {
            Some(holder) => permit.held_by(holder),
            None => permit,
        });
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
}
