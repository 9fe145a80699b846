//! Applying the per-container rate limits (`buffer::rate_limit`) to the files being read.
//!
//! The tailer asks [`Limits::gate`] before a file's turn and calls [`Limits::after_read`] with
//! what the turn read. With `throttle`, a file whose container owes the limiter waits (other files
//! go on) and nothing is lost: the file is the buffer. With `drop`, lines past the limit leave the
//! batch (their bytes are still acknowledged: dropping was asked for, and it is counted), and a
//! summary record takes their place at most once per `summary_interval`.
//!
//! Limits are resolved per container (every generation of its file shares one limiter) from a
//! namespace rule or the default, tightened (or, if the operator allows, replaced) by the pod's
//! `logship.io/rate-limit` annotation, and resolved again when the Kubernetes metadata changes
//! (an annotation can be edited while the pod runs). An annotation held to the operator's limit
//! is warned about (throttled) and counted once per container and value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffer::rate_limit::{
    Action, Dropped, LimitSource, LimitSpec, Limiter, Owed, RateLimitSettings, Resolved, ANNOTATION,
};
use crate::enrich::Enricher;
use crate::record::{Batch, Stream};
use crate::telemetry::{self, metrics, Throttle};
use crate::timestamp::Timestamp;

use super::reader::TailedFile;

/// The most a throttled file reads per turn.
const SMALL_TURN: usize = 16 * 1024;

/// Whether a file may be read now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Read,
    /// Not before this instant.
    Hold(Instant),
}

/// A file's rate-limit state, kept with the file.
#[derive(Debug, Default)]
pub struct FileLimit {
    /// `None`: unlimited.
    limiter: Option<Arc<Limiter>>,
    /// The enrichment cache version the limit was resolved at (`u64::MAX` before the first).
    version: Option<u64>,
    owed: Owed,
    held_until: Option<Instant>,
    dropped: Dropped,
}

/// The limits of every container being read.
#[derive(Debug)]
pub struct Limits {
    settings: RateLimitSettings,
    /// One limiter per container (`namespace/pod/container`, or the path of a file that is not
    /// a kubelet log).
    limiters: HashMap<String, Arc<Limiter>>,
    /// Per container, the annotation last refused for asking more than the operator's limit:
    /// a refusal is counted once per container and value, not at every re-resolution.
    refused: HashMap<String, LimitSpec>,
    warnings: Throttle,
}

impl Limits {
    pub fn new(settings: RateLimitSettings) -> Self {
        Limits {
            settings,
            limiters: HashMap::new(),
            refused: HashMap::new(),
            warnings: Throttle::new(Duration::from_secs(30)),
        }
    }

    /// Whether limits may apply at all; when not, the tailer never calls in here. A pod
    /// annotation can set a limit even without a default, so enrichment counts too.
    pub fn active(&self, enrichment: bool) -> bool {
        self.settings.enabled() || enrichment
    }

    /// Resolves the file's limit if it may have changed, and says whether it may be read.
    pub fn gate(&mut self, f: &mut TailedFile, enricher: Option<&Enricher>, now: Instant) -> Gate {
        let version = enricher.map_or(0, |e| e.cache.version());
        if f.limit.version != Some(version) {
            f.limit.version = Some(version);
            self.resolve(f, enricher);
        }
        if self.settings.action != Action::Throttle {
            return Gate::Read;
        }
        let Some(limiter) = f.limit.limiter.clone() else {
            return Gate::Read;
        };
        if let Some(until) = f.limit.held_until {
            if now < until {
                return Gate::Hold(until);
            }
            f.limit.held_until = None;
        }
        match limiter.pay(&mut f.limit.owed) {
            Ok(()) => Gate::Read,
            Err(wait) => {
                let until = now + wait;
                f.limit.held_until = Some(until);
                Gate::Hold(until)
            }
        }
    }

    fn resolve(&mut self, f: &mut TailedFile, enricher: Option<&Enricher>) {
        let kubelet = f.source.kubelet.as_ref();
        let found = match (enricher, kubelet) {
            (Some(e), Some(k)) => e.cache.lookup(&k.namespace, &k.pod),
            _ => None,
        };
        let annotation = found
            .as_ref()
            .and_then(|found| found.pod.hints.get(ANNOTATION))
            .map(String::as_str);
        let Resolved {
            spec,
            source,
            invalid,
            refused,
        } = self.settings.limit_for(kubelet, annotation);
        if let Some(why) = invalid {
            if let Some(suppressed) = self.warnings.admit() {
                tracing::warn!(path = %f.path.display(), annotation = ANNOTATION, reason = %why, suppressed, "Ignoring a rate limit annotation that does not parse; the configured limit applies.");
            }
        }
        let key = match kubelet {
            Some(k) => format!("{}/{}/{}", k.namespace, k.pod, k.container),
            None => f.path.display().to_string(),
        };
        match refused {
            Some(wanted) if self.refused.get(&key) != Some(&wanted) => {
                telemetry::add(&metrics().rate_limit_annotations_refused, 1);
                if let Some(suppressed) = self.warnings.admit() {
                    tracing::warn!(container = %key, annotation = ANNOTATION, asked = %wanted, limit = %spec, suppressed, "A pod annotation asked for a looser rate limit than the operator's; annotations may only tighten it (rate_limit.annotations = \"tighten\"), so the stricter limit applies.");
                }
                self.refused.insert(key.clone(), wanted);
            }
            Some(_) => {}
            None => {
                self.refused.remove(&key);
            }
        }
        if spec.is_unlimited() {
            f.limit.limiter = None;
            self.limiters.remove(&key);
            return;
        }
        let limiter = match self.limiters.get(&key) {
            Some(l) if l.spec == spec => Arc::clone(l),
            _ => {
                let l = Arc::new(Limiter::new(spec, self.settings.burst));
                if source != LimitSource::Default {
                    tracing::info!(container = %key, limit = %spec, from = ?source, action = ?self.settings.action, "Rate limit for this container.");
                }
                self.limiters.insert(key, Arc::clone(&l));
                l
            }
        };
        f.limit.limiter = Some(limiter);
    }

    /// How much a turn of `f` may read: a limited file reads in small turns, so that what it
    /// owes after a turn (a turn is read before it is paid for) stays a small part of its rate.
    pub fn read_cap(&self, f: &TailedFile, budget: usize) -> usize {
        match (&f.limit.limiter, self.settings.action) {
            (Some(limiter), Action::Throttle) => {
                let mut cap = budget.min(SMALL_TURN);
                if let Some(bytes) = limiter.spec.bytes {
                    let burst = bytes.per_second * self.settings.burst.as_secs_f64();
                    cap = cap.min((burst as usize).max(1024));
                }
                cap
            }
            _ => budget,
        }
    }

    /// What the turn read is paid for (throttle) or trimmed to the limit (drop).
    pub fn after_read(
        &mut self,
        f: &mut TailedFile,
        batch: &mut Batch,
        bytes: usize,
        now: Instant,
    ) {
        let Some(limiter) = f.limit.limiter.clone() else {
            return;
        };
        match self.settings.action {
            Action::Throttle => {
                f.limit.owed.lines += batch.records.len() as u64;
                f.limit.owed.bytes += bytes as u64;
                if let Err(wait) = limiter.pay(&mut f.limit.owed) {
                    f.limit.held_until = Some(now + wait);
                    telemetry::add(
                        &metrics().rate_limit_throttled_lines,
                        batch.records.len() as u64,
                    );
                }
            }
            Action::Drop => {
                let dropped = &mut f.limit.dropped;
                let before = batch.records.len();
                let mut dropped_bytes = 0u64;
                batch.records.retain(|r| {
                    let len = r.message.len();
                    if limiter.admit(u32::try_from(len).unwrap_or(u32::MAX)) {
                        return true;
                    }
                    dropped_bytes += len as u64;
                    dropped.first_offset.get_or_insert(r.offset);
                    false
                });
                let lines = (before - batch.records.len()) as u64;
                if lines > 0 {
                    dropped.lines += lines;
                    dropped.bytes += dropped_bytes;
                    dropped.since.get_or_insert(now);
                    telemetry::add(&metrics().rate_limit_dropped_lines, lines);
                    telemetry::add(&metrics().rate_limit_dropped_bytes, dropped_bytes);
                }
                self.summarise_if_due(f, batch, now);
            }
        }
    }

    /// Drop mode: appends the summary of the lines dropped since the last one, if it is due.
    pub fn summarise_if_due(&self, f: &mut TailedFile, batch: &mut Batch, now: Instant) {
        let d = f.limit.dropped;
        let (Some(since), Some(offset)) = (d.since, d.first_offset) else {
            return;
        };
        if d.lines == 0 || now.duration_since(since) < self.settings.summary_interval {
            return;
        }
        let who = match &f.source.kubelet {
            Some(k) => format!("{}/{}/{}", k.namespace, k.pod, k.container),
            None => f.path.display().to_string(),
        };
        let limit = f
            .limit
            .limiter
            .as_ref()
            .map_or_else(|| "a rate limit".to_string(), |l| l.spec.to_string());
        let message = format!(
            "logship dropped {} lines ({} bytes) from {who} in the last {}s: over the rate limit {limit} (rate_limit.action = drop)",
            d.lines,
            d.bytes,
            now.duration_since(since).as_secs()
        );
        // The offset of the first line dropped: never shipped, so the summary's id is unique.
        batch.push(Timestamp::now(), Stream::Unknown, &message, offset, offset);
        telemetry::add(&metrics().rate_limit_summaries, 1);
        f.limit.dropped = Dropped::default();
    }

    /// Drop mode: whether `f` has dropped lines whose summary has not been shipped.
    pub fn summary_pending(&self, f: &TailedFile) -> bool {
        self.settings.action == Action::Drop && f.limit.dropped.lines > 0
    }
}
