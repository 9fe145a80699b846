//! The agent's own telemetry: counters and its own logs.
//!
//! Every event that loses, alters or delays data has one function here that logs it and counts
//! it, so that a log line and a counter can never disagree. Counters are process-wide atomics
//! (the "Operations" issue exposes them over HTTP); their labels never grow with pods or files.
//! Warnings about bad input are rate-limited per kind, with the number suppressed in between, so a
//! file full of garbage cannot flood the agent's own log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Process-wide counters. Gauges are the `*_current` fields.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes read from log files.
    pub bytes_read: AtomicU64,
    /// Records produced by the parsers.
    pub records_read: AtomicU64,
    /// Lines that did not parse in their file's format, kept as raw text.
    pub malformed_lines: AtomicU64,
    /// Lines that had invalid UTF-8 replaced by U+FFFD.
    pub invalid_utf8_lines: AtomicU64,
    /// Empty lines, skipped (they carry no message; their bytes are still acknowledged).
    pub empty_lines: AtomicU64,
    /// Lines longer than `max_line_bytes` that were split into several records.
    pub oversize_lines_split: AtomicU64,
    /// Lines longer than `max_line_bytes` whose excess was discarded.
    pub oversize_lines_truncated: AtomicU64,
    /// Bytes discarded by truncation of oversize lines.
    pub oversize_bytes_discarded: AtomicU64,
    /// Files opened for following.
    pub files_opened: AtomicU64,
    /// Files let go after rotation or deletion, read to their end.
    pub files_released: AtomicU64,
    /// Files that were renamed away (rotated) while followed.
    pub files_rotated: AtomicU64,
    /// Files that shrank while followed (copytruncate), restarted at offset 0.
    pub files_truncated: AtomicU64,
    /// Files followed right now.
    pub files_current: AtomicU64,
    /// I/O errors reading, opening or inspecting log files.
    pub read_errors: AtomicU64,
    /// Records a sink wrote and acknowledged.
    pub records_sent: AtomicU64,
    /// Bulk requests sent to Elasticsearch (first attempts).
    pub es_requests: AtomicU64,
    /// Bulk requests sent again after a whole-request failure.
    pub es_request_retries: AtomicU64,
    /// Records Elasticsearch refused for now (429, 5xx) and that were sent again alone.
    pub es_items_retried: AtomicU64,
    /// Records Elasticsearch already had (409 on create): delivered by an earlier attempt.
    pub es_items_duplicate: AtomicU64,
    /// Bulk answers by class: 2xx, 4xx, 5xx, and attempts without an answer.
    pub es_responses_2xx: AtomicU64,
    pub es_responses_4xx: AtomicU64,
    pub es_responses_5xx: AtomicU64,
    pub es_transport_errors: AtomicU64,
    /// Sum of bulk request latencies in microseconds, and how many (for the mean).
    pub es_latency_us_sum: AtomicU64,
    pub es_latency_count: AtomicU64,
    /// 1 once the cluster answered `GET /`.
    pub es_cluster_reachable: AtomicU64,
    /// Records written to the dead letters.
    pub dead_lettered: AtomicU64,
    /// Failures writing the dead letters (the record is kept and tried again).
    pub dead_letter_errors: AtomicU64,
    /// Dead letters lost because the store was full (oldest file removed).
    pub dead_letters_evicted: AtomicU64,
    /// Pods whose metadata is cached (deleted ones in their grace period included).
    pub kubernetes_cached_pods: AtomicU64,
    /// Failed Kubernetes list or watch requests (each retried with backoff).
    pub kubernetes_watch_errors: AtomicU64,
    /// Full re-lists of pods (at start, after 410 Gone or a dropped watch).
    pub kubernetes_relists: AtomicU64,
    /// 1 while the Kubernetes API answers.
    pub kubernetes_reachable: AtomicU64,
    /// Files whose pod was not in the metadata cache within `kubernetes.wait_for_metadata`:
    /// shipped with what their name tells until the metadata arrives.
    pub enrich_timeouts: AtomicU64,
    /// Bytes (encoded documents) a sink wrote.
    pub bytes_sent: AtomicU64,
    /// Errors writing to the sink (each one retried).
    pub sink_errors: AtomicU64,
    /// Positions files written.
    pub positions_writes: AtomicU64,
    /// Failures writing the positions file.
    pub positions_write_errors: AtomicU64,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// Adds `n` to a counter.
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Lets through one event per `period` and counts the ones it held back.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Throttle {
            period,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` if this event should be logged, with the number of events held back
    /// since the last one logged; `None` if it should be held back.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.period => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// One bulk request attempt ended with `status` (0: no answer) after `elapsed`.
pub fn observe_bulk(status: u16, elapsed: Duration) {
    let m = metrics();
    let class = match status {
        200..=299 => &m.es_responses_2xx,
        400..=499 => &m.es_responses_4xx,
        500..=599 => &m.es_responses_5xx,
        _ => &m.es_transport_errors,
    };
    add(class, 1);
    add(&m.es_latency_us_sum, elapsed.as_micros() as u64);
    add(&m.es_latency_count, 1);
}

/// Sets a gauge.
pub fn set_gauge(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

/// Whether the Kubernetes API answers (readiness).
pub fn set_kubernetes_reachable(reachable: bool) {
    set_gauge(&metrics().kubernetes_reachable, u64::from(reachable));
}

/// Whether the cluster answered (readiness).
pub fn set_cluster_reachable(reachable: bool) {
    metrics()
        .es_cluster_reachable
        .store(u64::from(reachable), Ordering::Relaxed);
}

/// How often each kind of bad-input warning may be logged.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// A line that did not parse in its file's format was kept as raw text.
pub fn malformed_line(path: &std::path::Path, offset: u64, format: &str, reason: &str) {
    add(&metrics().malformed_lines, 1);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, format, reason, suppressed, "Malformed line kept as raw text.");
    }
}

/// A line had invalid UTF-8, replaced by U+FFFD.
pub fn invalid_utf8(path: &std::path::Path, offset: u64) {
    add(&metrics().invalid_utf8_lines, 1);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, suppressed, "Invalid UTF-8 replaced with U+FFFD.");
    }
}

/// A line longer than `max_line_bytes` was split into several records.
pub fn oversize_split(path: &std::path::Path, offset: u64, max_line_bytes: usize) {
    add(&metrics().oversize_lines_split, 1);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, max_line_bytes, suppressed, "Line longer than max_line_bytes split into several records.");
    }
}

/// A line longer than `max_line_bytes` was truncated; `discarded` bytes were not shipped.
pub fn oversize_truncated(
    path: &std::path::Path,
    offset: u64,
    max_line_bytes: usize,
    discarded: u64,
) {
    add(&metrics().oversize_lines_truncated, 1);
    add(&metrics().oversize_bytes_discarded, discarded);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, max_line_bytes, discarded, suppressed, "Line longer than max_line_bytes truncated.");
    }
}

/// Installs the agent's own log output on standard error (standard output may carry records).
/// `RUST_LOG`, when set, overrides the configured level.
pub fn init_logging(settings: &crate::config::LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let result = match settings.format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
    // A second initialisation (tests run several agents in one process) keeps the first.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_first_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        let t0 = Throttle::new(Duration::ZERO);
        assert_eq!(t0.admit(), Some(0));
        assert_eq!(t0.admit(), Some(0));
    }
}
