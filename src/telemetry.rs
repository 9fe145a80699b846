//! The agent's own telemetry: counters, heartbeats and its own logs.
//!
//! Every event that loses, alters or delays data has one function here that logs it and counts
//! it, so that a log line and a counter can never disagree. Counters are process-wide atomics,
//! declared once in [`Metrics`] with the name they have on `/metrics` (`crate::server` exposes
//! them); their labels are fixed in the declaration, so they never grow with pods or files.
//! The loops of the pipeline tick a heartbeat ([`beat`]) that `/healthz` reads.
//! Warnings about bad input are rate-limited per kind, with the number suppressed in between, so a
//! file full of garbage cannot flood the agent's own log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a field of [`Metrics`] is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows; exposed with a `_total` suffix.
    Counter,
    /// A level that goes up and down.
    Gauge,
    /// Time spent, only ever growing: kept in microseconds, exposed in seconds with a `_total`
    /// suffix (the name ends in `_seconds`).
    Seconds,
}

/// One exposed series: a field of [`Metrics`], with its Prometheus family name and label.
#[derive(Debug)]
pub struct Series {
    /// The family name, without the `_total` a counter gets when exposed.
    pub name: &'static str,
    pub kind: Kind,
    /// The field's doc comment; the first field of a family gives the family's HELP text.
    pub help: &'static str,
    /// At most one label, with a value fixed here: label cardinality cannot grow with pods,
    /// files or anything else at run time.
    pub label: Option<(&'static str, &'static str)>,
    /// Reads the field.
    pub value: fn(&Metrics) -> u64,
}

/// Declares [`Metrics`] and its exposition table [`Metrics::SERIES`] from one list, so that a
/// new counter or gauge is one documented field with its `#[metric]` line, and is on `/metrics`
/// with nothing else to change. The fields of one labelled family must follow each other.
macro_rules! metrics {
    ($(
        $(#[doc = $doc:literal])*
        #[metric($kind:ident $name:literal $(, $key:ident = $value:literal)?)]
        pub $field:ident: AtomicU64,
    )*) => {
        /// Process-wide counters and gauges, exposed on `/metrics` as their `#[metric]` line says.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $field: AtomicU64, )*
        }

        impl Metrics {
            /// Every field as an exposed series, in declaration order.
            pub const SERIES: &'static [Series] = &[$(
                Series {
                    name: $name,
                    kind: Kind::$kind,
                    help: concat!($($doc),*),
                    label: metrics!(@label $($key = $value)?),
                    value: |m| get(&m.$field),
                },
            )*];
        }
    };
    (@label) => { None };
    (@label $key:ident = $value:literal) => { Some((stringify!($key), $value)) };
}

metrics! {
    /// Bytes read from log files.
    #[metric(Counter "logship_read_bytes")]
    pub bytes_read: AtomicU64,
    /// Records produced by the parsers.
    #[metric(Counter "logship_read_records")]
    pub records_read: AtomicU64,
    /// Lines that were not ordinary, by reason: malformed (did not parse in its file's format,
    /// kept as raw text), invalid_utf8 (replaced by U+FFFD), empty (skipped), oversize_split,
    /// oversize_truncated (longer than tail.max_line_bytes).
    #[metric(Counter "logship_irregular_lines", reason = "malformed")]
    pub malformed_lines: AtomicU64,
    /// Lines that had invalid UTF-8 replaced by U+FFFD.
    #[metric(Counter "logship_irregular_lines", reason = "invalid_utf8")]
    pub invalid_utf8_lines: AtomicU64,
    /// Empty lines, skipped (they carry no message; their bytes are still acknowledged).
    #[metric(Counter "logship_irregular_lines", reason = "empty")]
    pub empty_lines: AtomicU64,
    /// Lines longer than `max_line_bytes` that were split into several records.
    #[metric(Counter "logship_irregular_lines", reason = "oversize_split")]
    pub oversize_lines_split: AtomicU64,
    /// Lines longer than `max_line_bytes` whose excess was discarded.
    #[metric(Counter "logship_irregular_lines", reason = "oversize_truncated")]
    pub oversize_lines_truncated: AtomicU64,
    /// Bytes of input never shipped, by reason: oversize_truncated (the excess of lines longer
    /// than tail.max_line_bytes, with tail.oversize_lines = truncate), rate_limit (lines past
    /// their container's limit with rate_limit.action = drop).
    #[metric(Counter "logship_dropped_bytes", reason = "oversize_truncated")]
    pub oversize_bytes_discarded: AtomicU64,
    #[metric(Counter "logship_dropped_bytes", reason = "rate_limit")]
    pub rate_limit_dropped_bytes: AtomicU64,
    /// Records joined from several lines by a multiline rule (stack traces, tracebacks).
    #[metric(Counter "logship_multiline_records")]
    pub multiline_records: AtomicU64,
    /// Lines joined into multiline records.
    #[metric(Counter "logship_multiline_lines")]
    pub multiline_lines: AtomicU64,
    /// Journal entries read (`journald`), whatever the filters made of them.
    #[metric(Counter "logship_journald_entries_read")]
    pub journald_entries_read: AtomicU64,
    /// Journal entries left out by `journald.units`, `exclude_units`, `matches` or `kernel`.
    #[metric(Counter "logship_journald_entries_skipped")]
    pub journald_entries_skipped: AtomicU64,
    /// Journal entries that could not be read (a damaged object); skipped, and warned about.
    #[metric(Counter "logship_journald_entry_errors")]
    pub journald_entry_errors: AtomicU64,
    /// Journal files that could not be opened or followed (a damaged header or entry list,
    /// an unknown format flag); warned about, tried again.
    #[metric(Counter "logship_journald_file_errors")]
    pub journald_file_errors: AtomicU64,
    /// Journal entries deleted (vacuumed) before logship read them, as far as the positions
    /// file knew how many the deleted files held.
    #[metric(Counter "logship_journald_vacuumed_entries")]
    pub journald_vacuumed_entries: AtomicU64,
    /// Journal files being read.
    #[metric(Gauge "logship_journald_files")]
    pub journald_files: AtomicU64,
    /// Multiline records a rotation cut that went on in the new file (one record, not two).
    #[metric(Counter "logship_multiline_rotation_joined_records")]
    pub multiline_carried: AtomicU64,
    /// Multiline records closed by something other than the next line, by reason: timeout
    /// (multiline.flush_timeout without a new line), max_bytes, max_lines (cut: the rest of the
    /// event continues in the next record).
    #[metric(Counter "logship_multiline_closed_records", reason = "timeout")]
    pub multiline_closed_timeout: AtomicU64,
    #[metric(Counter "logship_multiline_closed_records", reason = "max_bytes")]
    pub multiline_closed_max_bytes: AtomicU64,
    #[metric(Counter "logship_multiline_closed_records", reason = "max_lines")]
    pub multiline_closed_max_lines: AtomicU64,
    /// Files followed, by event: opened, released (read to their end after rotation or
    /// deletion), rotated (renamed away while followed), truncated (shrank, read again from 0).
    #[metric(Counter "logship_file_events", event = "opened")]
    pub files_opened: AtomicU64,
    /// Files let go after rotation or deletion, read to their end.
    #[metric(Counter "logship_file_events", event = "released")]
    pub files_released: AtomicU64,
    /// Files that were renamed away (rotated) while followed.
    #[metric(Counter "logship_file_events", event = "rotated")]
    pub files_rotated: AtomicU64,
    /// Files that shrank while followed (copytruncate), restarted at offset 0.
    #[metric(Counter "logship_file_events", event = "truncated")]
    pub files_truncated: AtomicU64,
    /// Files followed right now.
    #[metric(Gauge "logship_files_watched")]
    pub files_current: AtomicU64,
    /// I/O errors reading, opening or inspecting log files.
    #[metric(Counter "logship_read_errors")]
    pub read_errors: AtomicU64,
    /// Records the output wrote and acknowledged (for Elasticsearch: created, or already there).
    #[metric(Counter "logship_sent_records")]
    pub records_sent: AtomicU64,
    /// Bytes (encoded documents) the output wrote.
    #[metric(Counter "logship_sent_bytes")]
    pub bytes_sent: AtomicU64,
    /// Errors writing to a local output (stdout, file), each one retried.
    #[metric(Counter "logship_output_errors")]
    pub sink_errors: AtomicU64,
    /// Bulk requests sent to Elasticsearch (first attempts).
    #[metric(Counter "logship_elasticsearch_requests")]
    pub es_requests: AtomicU64,
    /// Bulk requests sent again after a whole-request failure.
    #[metric(Counter "logship_elasticsearch_request_retries")]
    pub es_request_retries: AtomicU64,
    /// Records Elasticsearch refused for now (429, 5xx) and that were sent again alone.
    #[metric(Counter "logship_elasticsearch_items_retried")]
    pub es_items_retried: AtomicU64,
    /// Records Elasticsearch refused for a reason an operator must fix (401, 403, 404 for the
    /// item: a missing privilege or index), sent again with backoff instead of dead-lettered.
    #[metric(Counter "logship_elasticsearch_items_blocked")]
    pub es_items_blocked: AtomicU64,
    /// Records Elasticsearch already had (409 on create): delivered by an earlier attempt.
    #[metric(Counter "logship_elasticsearch_items_duplicate")]
    pub es_items_duplicate: AtomicU64,
    /// Bulk request attempts by answer class: 2xx, 4xx, 5xx, and none (connection error or
    /// timeout).
    #[metric(Counter "logship_elasticsearch_responses", class = "2xx")]
    pub es_responses_2xx: AtomicU64,
    #[metric(Counter "logship_elasticsearch_responses", class = "4xx")]
    pub es_responses_4xx: AtomicU64,
    #[metric(Counter "logship_elasticsearch_responses", class = "5xx")]
    pub es_responses_5xx: AtomicU64,
    #[metric(Counter "logship_elasticsearch_responses", class = "none")]
    pub es_transport_errors: AtomicU64,
    /// Answers from Elasticsearch larger than their bound (for a bulk answer: 1 MiB, 1 KiB per
    /// item and the request's size), not read further: the attempt counts as failed and is retried.
    #[metric(Counter "logship_elasticsearch_oversized_answers")]
    pub es_oversized_answers: AtomicU64,
    /// 1 while Elasticsearch answers: set by the start-up `GET /` and by every bulk attempt (an
    /// HTTP answer sets it; an attempt without one, a 401, 403 or 404 for the request, or one of
    /// those for any of its items clears it: records cannot leave).
    #[metric(Gauge "logship_elasticsearch_reachable")]
    pub es_cluster_reachable: AtomicU64,
    /// Documents sent again without their parsed fields (and, the second time, without the
    /// pod's labels) because the index's mapping refused them, by reason (README.md, mapping
    /// limits).
    #[metric(Counter "logship_elasticsearch_mapping_fallbacks", reason = "total_fields_limit")]
    pub es_fallback_total_fields: AtomicU64,
    #[metric(Counter "logship_elasticsearch_mapping_fallbacks", reason = "depth_limit")]
    pub es_fallback_depth: AtomicU64,
    #[metric(Counter "logship_elasticsearch_mapping_fallbacks", reason = "nested_limit")]
    pub es_fallback_nested: AtomicU64,
    #[metric(Counter "logship_elasticsearch_mapping_fallbacks", reason = "field_type")]
    pub es_fallback_field_type: AtomicU64,
    #[metric(Counter "logship_elasticsearch_mapping_fallbacks", reason = "mapping")]
    pub es_fallback_mapping: AtomicU64,
    /// Records written to the dead letters.
    #[metric(Counter "logship_dead_lettered_records")]
    pub dead_lettered: AtomicU64,
    /// Failures writing the dead letters (the record is kept and tried again).
    #[metric(Counter "logship_dead_letter_errors")]
    pub dead_letter_errors: AtomicU64,
    /// Records lost for good, by reason: dead_letter_evicted (the dead-letter store was full
    /// and its oldest file was removed), rate_limit (lines past their container's limit with
    /// rate_limit.action = drop, summarised in a record).
    #[metric(Counter "logship_dropped_records", reason = "dead_letter_evicted")]
    pub dead_letters_evicted: AtomicU64,
    #[metric(Counter "logship_dropped_records", reason = "rate_limit")]
    pub rate_limit_dropped_lines: AtomicU64,
    /// Pods whose metadata is cached (deleted ones in their grace period included).
    #[metric(Gauge "logship_kubernetes_cached_pods")]
    pub kubernetes_cached_pods: AtomicU64,
    /// Failed Kubernetes list or watch requests (each retried with backoff).
    #[metric(Counter "logship_kubernetes_watch_errors")]
    pub kubernetes_watch_errors: AtomicU64,
    /// Full re-lists of pods: at start, after 410 Gone or a watch that could not resume.
    #[metric(Counter "logship_kubernetes_relists")]
    pub kubernetes_relists: AtomicU64,
    /// 1 while the Kubernetes API answers (0 also when enrichment is off).
    #[metric(Gauge "logship_kubernetes_reachable")]
    pub kubernetes_reachable: AtomicU64,
    /// Requests the API server refused: 401 (the token is not valid) or 403 (its service
    /// account may not list or watch pods or namespaces).
    #[metric(Counter "logship_kubernetes_refused", code = "401")]
    pub kubernetes_refused_401: AtomicU64,
    #[metric(Counter "logship_kubernetes_refused", code = "403")]
    pub kubernetes_refused_403: AtomicU64,
    /// The status of the API server's last refusal (401, 403) while it lasts, else 0.
    #[metric(Gauge "logship_kubernetes_refused_status")]
    pub kubernetes_refused_status: AtomicU64,
    /// Files whose pod was not in the metadata cache within `kubernetes.wait_for_metadata`:
    /// shipped with what their name tells until the metadata arrives.
    #[metric(Counter "logship_enrich_timeouts")]
    pub enrich_timeouts: AtomicU64,
    /// Lines read past their container's rate limit that made its file wait (throttle).
    #[metric(Counter "logship_rate_limited_lines", action = "throttled")]
    pub rate_limit_throttled_lines: AtomicU64,
    /// Summary records shipped in place of dropped lines.
    #[metric(Counter "logship_rate_limit_summaries")]
    pub rate_limit_summaries: AtomicU64,
    /// Pod `logship.io/rate-limit` annotations that asked for more than the operator's limit
    /// and were held to it (`rate_limit.annotations = "tighten"`), once per container and value.
    #[metric(Counter "logship_rate_limit_annotations_refused")]
    pub rate_limit_annotations_refused: AtomicU64,
    /// Time the reader spent waiting for room in the buffer (`buffer.max_bytes`): the sink is
    /// behind, and the files are the buffer meanwhile.
    #[metric(Seconds "logship_reader_wait_seconds")]
    pub reader_wait: AtomicU64,
    /// Bytes in the followed files not acknowledged yet (read or not): how far the node is
    /// behind, for all files together.
    #[metric(Gauge "logship_bytes_behind")]
    pub bytes_behind: AtomicU64,
    /// Seconds since the oldest byte not acknowledged yet was first seen in its file (0 when
    /// everything is shipped): the worst delivery lag of the node.
    #[metric(Gauge "logship_oldest_unshipped_age_seconds")]
    pub oldest_unshipped_age: AtomicU64,
    /// Deleted files kept open to be read to their end (their disk space is not free yet).
    #[metric(Gauge "logship_deleted_files_open")]
    pub deleted_files_open: AtomicU64,
    /// Bytes of deleted files let go before they were read, past `tail.max_deleted_files` or
    /// `tail.max_deleted_bytes`: data lost to protect the node's disk.
    #[metric(Counter "logship_lost_bytes", reason = "deleted_unread")]
    pub deleted_unread_bytes: AtomicU64,
    /// Bytes a file held past the read offset when it was truncated (copytruncate while the
    /// agent was behind): gone with the old content, as far as the last look at its size tells.
    #[metric(Counter "logship_lost_bytes", reason = "truncated_unread")]
    pub truncated_unread_bytes: AtomicU64,
    /// Bytes of rotated generations the kubelet deleted before logship read them (found gone
    /// when their container's generations are looked at, after downtime or late discovery), as
    /// far as their last known size tells.
    #[metric(Counter "logship_lost_bytes", reason = "rotated_unread")]
    pub rotated_unread_bytes: AtomicU64,
    /// Rotated generations read from where they were when logship was not following them
    /// (after downtime, or found late), plain or gzipped.
    #[metric(Counter "logship_generations_recovered")]
    pub generations_recovered: AtomicU64,
    /// Gzipped generations found damaged (corrupt or truncated): what came before the damage
    /// was shipped, the rest could not be read.
    #[metric(Counter "logship_gzip_damaged_files")]
    pub gzip_damaged: AtomicU64,
    /// Bulk requests allowed at once now: `max_in_flight`, lowered while Elasticsearch answers
    /// 429 (`adaptive_concurrency`).
    #[metric(Gauge "logship_elasticsearch_concurrency")]
    pub es_concurrency: AtomicU64,
    /// The size (before compression) at which bulk requests are closed now: `batch.max_bytes`, or
    /// less after a 413 taught that the path to the cluster takes less.
    #[metric(Gauge "logship_elasticsearch_max_request_bytes")]
    pub es_max_request_bytes: AtomicU64,
    /// The number of items at which bulk requests are closed now: `batch.max_events`, or less
    /// while the cluster is slow, so that a request is answered within about 250 ms.
    #[metric(Gauge "logship_elasticsearch_max_request_items")]
    pub es_max_request_items: AtomicU64,
    /// Documents per second this agent sends while Elasticsearch refuses items with 429 (its
    /// share of a full cluster, learned); 0 while not limited.
    #[metric(Gauge "logship_elasticsearch_share_docs_per_second")]
    pub es_share_rate: AtomicU64,
    /// Times that rate was lowered after items were refused with 429.
    #[metric(Counter "logship_elasticsearch_share_decreases")]
    pub es_share_decreases: AtomicU64,
    /// Times the number of requests at once was halved after a 429.
    #[metric(Counter "logship_elasticsearch_concurrency_decreases")]
    pub es_concurrency_decreases: AtomicU64,
    /// Time bulk requests waited for the global send limit (`output.elasticsearch.rate_limit`).
    #[metric(Seconds "logship_elasticsearch_send_limit_wait_seconds")]
    pub es_send_limit_wait: AtomicU64,
    /// Messages parsed into fields (processing), by result: json, logfmt, and invalid (a message
    /// that looked like JSON, or any message of a container whose parser is json or logfmt,
    /// that did not parse: left as it was).
    #[metric(Counter "logship_structured_messages", result = "json")]
    pub structured_json: AtomicU64,
    #[metric(Counter "logship_structured_messages", result = "logfmt")]
    pub structured_logfmt: AtomicU64,
    #[metric(Counter "logship_structured_messages", result = "invalid")]
    pub structured_invalid: AtomicU64,
    /// Parsed messages a bound or a repair changed (their message is kept), by reason: depth
    /// (deeper than processing.max_depth, kept as text), fields (members past
    /// processing.max_fields left out), key_bytes (keys longer than processing.max_key_bytes left
    /// out), duplicate_keys (earlier duplicates left out), key_names (names Elasticsearch
    /// refuses, renamed).
    #[metric(Counter "logship_structured_adjusted", reason = "depth")]
    pub structured_depth: AtomicU64,
    #[metric(Counter "logship_structured_adjusted", reason = "fields")]
    pub structured_fields: AtomicU64,
    #[metric(Counter "logship_structured_adjusted", reason = "key_bytes")]
    pub structured_key_bytes: AtomicU64,
    #[metric(Counter "logship_structured_adjusted", reason = "duplicate_keys")]
    pub structured_duplicate_keys: AtomicU64,
    #[metric(Counter "logship_structured_adjusted", reason = "key_names")]
    pub structured_key_names: AtomicU64,
    /// Records dropped by processing filters, by filter: include (matched no include rule),
    /// exclude (matched an exclude rule). Their bytes are acknowledged like shipped ones.
    #[metric(Counter "logship_filtered_records", filter = "include")]
    pub filtered_not_included: AtomicU64,
    #[metric(Counter "logship_filtered_records", filter = "exclude")]
    pub filtered_excluded: AtomicU64,
    /// Positions files written.
    #[metric(Counter "logship_positions_writes")]
    pub positions_writes: AtomicU64,
    /// Failures writing the positions file.
    #[metric(Counter "logship_positions_write_errors")]
    pub positions_write_errors: AtomicU64,
    /// Configuration reloads (SIGHUP or a change of the file) that found a changed
    /// configuration, by result: success (applied), failure (invalid, or not applicable live:
    /// the agent runs on the previous configuration). A reload that finds nothing changed is
    /// not counted.
    #[metric(Counter "logship_config_reloads", result = "success")]
    pub config_reloads_succeeded: AtomicU64,
    #[metric(Counter "logship_config_reloads", result = "failure")]
    pub config_reloads_failed: AtomicU64,
    /// 1 when the last reload succeeded (or none was tried since the start), 0 after a failed
    /// one: the configuration on disk is not the one running.
    #[metric(Gauge "logship_config_last_reload_successful")]
    pub config_last_reload_ok: AtomicU64,
    /// When the running configuration was loaded (the start or the last successful reload), in
    /// seconds since the Unix epoch.
    #[metric(Gauge "logship_config_last_reload_success_timestamp_seconds")]
    pub config_loaded_at: AtomicU64,
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

/// Adds `elapsed` to a [`Kind::Seconds`] counter.
#[inline]
pub fn add_duration(counter: &AtomicU64, elapsed: Duration) {
    counter.fetch_add(
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
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

/// Upper bounds of the bulk latency histogram's buckets, in seconds: from a fast local cluster
/// (a few ms) to the default `request_timeout` (30 s) and beyond.
pub const BULK_LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A histogram of durations over fixed bucket bounds: a count per bucket, their sum and count.
/// Kept here rather than in a Prometheus type so that `/metrics` and the status document read
/// the same buckets.
#[derive(Debug)]
pub struct Latency {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is past every bound (`+Inf`).
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// What a [`Latency`] holds at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencySnapshot {
    /// Seconds, all observations together.
    pub sum: f64,
    pub count: u64,
    /// (upper bound in seconds, observations in this bucket only), the last bound infinite.
    pub buckets: Vec<(f64, u64)>,
}

impl Latency {
    pub fn new(bounds: &'static [f64]) -> Latency {
        Latency {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self.bounds.partition_point(|&bound| bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        LatencySnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
        }
    }
}

impl LatencySnapshot {
    /// The smallest bucket bound under which at least `q` of the observations fall: `None`
    /// without observations, infinity when they fall past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let mut cumulative = 0;
        self.buckets.iter().find_map(|&(bound, count)| {
            cumulative += count;
            (cumulative as f64 >= q * self.count as f64).then_some(bound)
        })
    }
}

/// How long bulk request attempts took, answered or not.
pub fn bulk_latency() -> &'static Latency {
    static LATENCY: OnceLock<Latency> = OnceLock::new();
    LATENCY.get_or_init(|| Latency::new(&BULK_LATENCY_BUCKETS))
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
    bulk_latency().observe(elapsed);
    // Any answer, even a 503, means the cluster is there; readiness only needs to know
    // whether records can leave at all. Refused credentials or privileges (401, 403) and a
    // missing index or path (404) mean they cannot, whatever else the cluster does: a rolling
    // update with a wrong password stops at the first nodes.
    set_cluster_reachable(!matches!(status, 0 | 401 | 403 | 404));
}

/// Sets a gauge.
pub fn set_gauge(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

/// Whether the Kubernetes API answers (readiness).
pub fn set_kubernetes_reachable(reachable: bool) {
    set_gauge(&metrics().kubernetes_reachable, u64::from(reachable));
}

/// The API server refused a request with `status` (401 or 403).
pub fn kubernetes_refused(status: u16) {
    let m = metrics();
    add(
        if status == 401 {
            &m.kubernetes_refused_401
        } else {
            &m.kubernetes_refused_403
        },
        1,
    );
}

/// The refusal that lasts (readiness, `logship status`), or `None` once requests are answered.
pub fn set_kubernetes_refused(status: Option<u16>) {
    set_gauge(
        &metrics().kubernetes_refused_status,
        status.map_or(0, u64::from),
    );
}

/// Whether the cluster answered (readiness).
pub fn set_cluster_reachable(reachable: bool) {
    metrics()
        .es_cluster_reachable
        .store(u64::from(reachable), Ordering::Relaxed);
}

/// The loops whose turning shows that the agent is alive (`/healthz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// The reader thread (discover, read, parse): it turns at least every
    /// `tail.poll_interval`, also while it waits for buffer space.
    Tailer,
    /// The sink task: it turns at least every [`HEARTBEAT_PERIOD`], idle or not.
    Sink,
    /// The journal reader thread (`journald`), when the journal is read: it turns at least
    /// every [`HEARTBEAT_PERIOD`], also while it waits for buffer space.
    Journald,
}

impl Loop {
    pub const ALL: [Loop; 3] = [Loop::Tailer, Loop::Sink, Loop::Journald];

    pub const fn name(self) -> &'static str {
        match self {
            Loop::Tailer => "tailer",
            Loop::Sink => "sink",
            Loop::Journald => "journald",
        }
    }
}

/// The longest a loop that waits for work sleeps before it turns anyway, to show it is alive.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// When each [`Loop`] last turned, in milliseconds since [`epoch`] plus one; 0 for never.
static HEARTBEATS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The process's reference instant for heartbeats.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `which` turned once more.
#[inline]
pub fn beat(which: Loop) {
    let ms = epoch().elapsed().as_millis() as u64 + 1;
    HEARTBEATS[which as usize].store(ms, Ordering::Relaxed);
}

/// How long ago `which` last turned; `None` if it never did.
pub fn since_beat(which: Loop) -> Option<Duration> {
    match HEARTBEATS[which as usize].load(Ordering::Relaxed) {
        0 => None,
        ms => Some(
            epoch()
                .elapsed()
                .saturating_sub(Duration::from_millis(ms - 1)),
        ),
    }
}

/// How often each kind of bad-input warning may be logged.
pub const WARN_PERIOD: Duration = Duration::from_secs(10);

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

/// The running configuration was loaded now: at the start, or by a successful reload.
pub fn config_loaded() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    set_gauge(&metrics().config_loaded_at, now);
    set_gauge(&metrics().config_last_reload_ok, 1);
}

/// A reload found the running configuration: nothing to do. Asked by SIGHUP, it is said at
/// INFO (someone is waiting for an answer); asked by a change in the directory, at DEBUG (other
/// files there change too).
pub fn config_unchanged(asked_by_signal: bool) {
    // The configuration on disk is the running one again, whatever failed before.
    set_gauge(&metrics().config_last_reload_ok, 1);
    if asked_by_signal {
        tracing::info!("Configuration unchanged; nothing to reload.");
    } else {
        tracing::debug!("Configuration unchanged; nothing to reload.");
    }
}

/// A reload applied a changed configuration (`keys`) in `took`, of which `drained` (if the
/// pipeline was restarted) waited for the records in flight.
pub fn config_reloaded(keys: &[String], drained: Option<Duration>, took: Duration) {
    add(&metrics().config_reloads_succeeded, 1);
    config_loaded();
    let drain_ms = drained.map(|d| d.as_millis() as u64);
    tracing::info!(changed = %keys.join(", "), took_ms = took.as_millis() as u64, drain_ms, "Configuration reloaded.");
}

/// A reload found a changed configuration and could not apply it; the previous one runs on.
/// What was wrong is logged before, one event per error.
pub fn config_reload_failed(reason: &str) {
    add(&metrics().config_reloads_failed, 1);
    set_gauge(&metrics().config_last_reload_ok, 0);
    tracing::error!(
        reason,
        "Configuration reload failed; still running on the previous configuration."
    );
}

/// Replaces the log filter of [`init_logging`]'s subscriber.
type SetFilter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Set by [`init_logging`] when `RUST_LOG` does not fix the filter.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// A multiline record of `lines` lines was shipped.
pub fn multiline_joined(lines: u64) {
    add(&metrics().multiline_records, 1);
    add(&metrics().multiline_lines, lines);
}

/// A multiline record was shipped after `multiline.flush_timeout` without a new line.
pub fn multiline_timeout() {
    add(&metrics().multiline_closed_timeout, 1);
}

/// The limit a multiline record reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultilineLimit {
    MaxBytes,
    MaxLines,
}

/// A multiline record was cut at `multiline.max_bytes` or `multiline.max_lines` (`value`): the
/// rest of the event continues in the next record.
pub fn multiline_cut(path: &std::path::Path, offset: u64, limit: MultilineLimit, value: usize) {
    let (counter, limit) = match limit {
        MultilineLimit::MaxBytes => (&metrics().multiline_closed_max_bytes, "max_bytes"),
        MultilineLimit::MaxLines => (&metrics().multiline_closed_max_lines, "max_lines"),
    };
    add(counter, 1);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, limit, value, suppressed, "Multiline record reached its limit; the rest of the event continues in the next record.");
    }
}

/// Which parser turned a message into fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructuredKind {
    Json,
    Logfmt,
}

/// A message was parsed into fields.
#[inline]
pub fn structured(kind: StructuredKind) {
    let m = metrics();
    add(
        match kind {
            StructuredKind::Json => &m.structured_json,
            StructuredKind::Logfmt => &m.structured_logfmt,
        },
        1,
    );
}

/// A message did not parse with its container's parser; it ships as it was.
pub fn structured_invalid(path: &std::path::Path, offset: u64, parser: &str, reason: &str) {
    add(&metrics().structured_invalid, 1);
    static T: Throttle = Throttle::new(WARN_PERIOD);
    if let Some(suppressed) = T.admit() {
        tracing::warn!(path = %path.display(), offset, parser, reason, suppressed, "Message did not parse; shipped as it was.");
    }
}

/// Why a filter dropped a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    /// It matched no `include` rule.
    NotIncluded,
    /// It matched an `exclude` rule.
    Excluded,
}

/// A filter dropped a record, as configured: counted, not warned about.
#[inline]
pub fn filtered(verdict: FilterVerdict) {
    let m = metrics();
    add(
        match verdict {
            FilterVerdict::NotIncluded => &m.filtered_not_included,
            FilterVerdict::Excluded => &m.filtered_excluded,
        },
        1,
    );
}

/// The `log` section of the configuration, validated by `config`.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// A tracing filter directive (`info`, `logship=debug`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

/// How the agent's own log lines are written (on standard error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for a log pipeline to parse.
    Json,
}

/// Installs the agent's own log output on standard error (standard output may carry records).
/// `RUST_LOG`, when set, overrides the configured level, also at reloads.
pub fn init_logging(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // The handle's type depends on the format: each is boxed behind one signature.
    let (set, result): (SetFilter, _) = match settings.format {
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            (set, builder.try_init())
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
            (set, builder.try_init())
        }
    };
    // A second initialisation (tests run several agents in one process) keeps the first.
    if result.is_ok() && !fixed {
        let _ = SET_FILTER.set(set);
    }
}

/// Applies a new `log.level`. Returns false when `RUST_LOG` fixes the filter (or logging is not
/// this module's), in which case nothing changes.
pub fn set_log_level(level: &str) -> bool {
    let Some(set) = SET_FILTER.get() else {
        return false;
    };
    match set(tracing_subscriber::EnvFilter::new(level)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, level, "Cannot replace the log filter; the previous one stays.");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_include_their_bound_and_quantiles_read_them() {
        static BOUNDS: [f64; 3] = [0.01, 0.1, 1.0];
        let latency = Latency::new(&BOUNDS);
        assert_eq!(
            latency.snapshot().quantile_bound(0.99),
            None,
            "no observations"
        );
        for ms in [5, 10, 10, 50, 2000] {
            latency.observe(Duration::from_millis(ms));
        }
        let snap = latency.snapshot();
        assert_eq!(
            snap.buckets,
            [(0.01, 3), (0.1, 1), (1.0, 0), (f64::INFINITY, 1)],
            "10 ms falls in the bucket whose bound it equals"
        );
        assert_eq!(snap.count, 5);
        assert!((snap.sum - 2.075).abs() < 1e-9, "{}", snap.sum);
        assert_eq!(snap.quantile_bound(0.5), Some(0.01));
        assert_eq!(snap.quantile_bound(0.8), Some(0.1));
        assert_eq!(snap.quantile_bound(0.99), Some(f64::INFINITY));
    }

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

    /// Prometheus needs a family's samples together, under one TYPE and HELP; the declaration
    /// order is the exposition order, so each family's fields must follow each other.
    #[test]
    fn every_family_is_contiguous_typed_once_and_documented() {
        let valid_name = |n: &str| {
            n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut previous: Option<&Series> = None;
        for s in Metrics::SERIES {
            assert!(valid_name(s.name), "{}", s.name);
            assert!(s.name.starts_with("logship_"), "{}", s.name);
            assert!(
                !s.name.ends_with("_total"),
                "{}: the encoder adds _total",
                s.name
            );
            match previous {
                Some(p) if p.name == s.name => {
                    assert_eq!(p.kind, s.kind, "{}", s.name);
                    let (Some((pk, pv)), Some((k, v))) = (p.label, s.label) else {
                        panic!("{}: every member of a family has the label", s.name)
                    };
                    assert_eq!(pk, k, "{}", s.name);
                    assert_ne!(pv, v, "{}: two fields for one series", s.name);
                }
                _ => {
                    assert!(!seen.contains(&s.name), "{} is split", s.name);
                    assert!(!s.help.trim().is_empty(), "{} has no help", s.name);
                    seen.push(s.name);
                }
            }
            if let Some((key, value)) = s.label {
                assert!(valid_name(key) && !value.is_empty(), "{}", s.name);
            }
            previous = Some(s);
        }
    }

    #[test]
    fn series_read_their_own_field() {
        let m = Metrics::default();
        add(&m.es_responses_4xx, 7);
        type Read<'a> = (&'a str, Option<(&'a str, &'a str)>, u64);
        let read: Vec<Read> = Metrics::SERIES
            .iter()
            .filter(|s| (s.value)(&m) != 0)
            .map(|s| (s.name, s.label, (s.value)(&m)))
            .collect();
        assert_eq!(
            read,
            [("logship_elasticsearch_responses", Some(("class", "4xx")), 7)]
        );
    }

    #[test]
    fn heartbeats_tell_how_long_ago() {
        // Process-wide: other tests may beat too, so only "recent" is certain.
        beat(Loop::Sink);
        let age = since_beat(Loop::Sink).expect("beaten");
        assert!(age < Duration::from_secs(5), "{age:?}");
        assert_eq!(Loop::ALL.map(Loop::name), ["tailer", "sink", "journald"]);
    }
}
