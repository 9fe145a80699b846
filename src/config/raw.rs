//! The configuration as a user writes it: the serde structs that every layer (defaults, file,
//! environment, flags) is read into, one doc comment per key as its documentation.
//!
//! Every key has a default here (a DaemonSet's), and that is what makes a key known: `schema`
//! takes the set of keys, and each key's type in the environment, from `RawConfig::default()`.
//! Types are what a user writes: sizes and durations as text, paths and globs as strings, enums
//! by name. Nothing here checks a range or a rule between keys; that is `validate`'s, which
//! turns a `RawConfig` into `Settings`.

use serde::{Deserialize, Serialize};

use super::units::{HumanDuration, Size};
use super::{LogFormat, ReadFrom};
use crate::parse::{FormatChoice, Oversize};
use crate::process::json::Bounds;

/// The whole file. Scalars first, then one table per concern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory for the positions file (and later the dead letters). It must survive restarts
    /// of the agent: on Kubernetes, a hostPath volume. A reload cannot change it.
    pub data_dir: String,
    /// `host.name` of every record. Empty: the `NODE_NAME` environment variable (set it from the
    /// downward API, `spec.nodeName`), else the machine's hostname.
    pub node_name: String,
    /// How long SIGTERM or SIGINT may take to drain (flush, wait for acknowledgements, write
    /// positions) before the agent exits anyway. Keep it below the pod's
    /// `terminationGracePeriodSeconds` (30s by default), or the kubelet kills the drain.
    pub shutdown_timeout: HumanDuration,
    /// The agent's own logs.
    pub log: RawLog,
    /// Which files are followed and how they are read.
    pub tail: RawTail,
    /// Joining the lines of one event (a stack trace) into one record.
    pub multiline: RawMultiline,
    /// The positions file.
    pub positions: RawPositions,
    /// The memory between reading and acknowledgement.
    pub buffer: RawBuffer,
    /// Where records go.
    pub output: RawOutput,
    /// Pod metadata from the Kubernetes API.
    pub kubernetes: RawKubernetes,
    /// Per-container rate limits.
    pub rate_limit: RawRateLimit,
    /// Structured messages, filters and per-pod hints.
    pub processing: RawProcessing,
    /// The HTTP endpoint: metrics, probes and `logship status`.
    pub server: RawServer,
    /// The systemd journal as a second source (the node's kubelet and runtime, a VM's services).
    pub journald: RawJournald,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: "/var/lib/logship".into(),
            node_name: String::new(),
            shutdown_timeout: HumanDuration::secs(25),
            log: RawLog::default(),
            tail: RawTail::default(),
            multiline: RawMultiline::default(),
            positions: RawPositions::default(),
            buffer: RawBuffer::default(),
            output: RawOutput::default(),
            kubernetes: RawKubernetes::default(),
            rate_limit: RawRateLimit::default(),
            processing: RawProcessing::default(),
            server: RawServer::default(),
            journald: RawJournald::default(),
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Which of the agent's own events are logged, as a tracing filter: a level (`error`,
    /// `warn`, `info`, `debug`, `trace`, `off`) or directives (`info,logship::tail=debug`).
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    /// `text` (one readable line per event) or `json` (one object per event).
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[tail]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTail {
    /// Absolute glob patterns of the files to follow: `*`, `?`, `[a-z]`, `{a,b}`, and `**` for
    /// any number of directories. `*` does not cross a `/`. At least one.
    pub include: Vec<String>,
    /// Absolute glob patterns of files not to follow even though an include pattern matches
    /// (the agent's own log, say). `/**/` matches in any directory.
    pub exclude: Vec<String>,
    /// Where files found at start-up with no stored position are read from: `head` (nothing
    /// already written is missed) or `tail` (only new lines). Files that appear later are always
    /// read from their head.
    pub read_from: ReadFrom,
    /// The format of the files: `auto` (detected per file from its first line), `cri`
    /// (containerd, CRI-O), `docker` (json-file) or `raw` (plain lines).
    pub format: FormatChoice,
    /// The longest line (or reassembled message) shipped as one record; also the most of one
    /// line ever held in memory. 1KiB to 64MiB.
    pub max_line_bytes: Size,
    /// What happens to a longer line: `split` into several records (nothing is lost) or
    /// `truncate` (the rest is discarded and counted).
    pub oversize_lines: Oversize,
    /// How much is read from one file before the next file gets its turn: a file with a large
    /// backlog delays another file's new line by at most this much. 4KiB to 64MiB.
    pub read_budget: Size,
    /// How often idle files are checked for new data (one `fstat` each). 10ms to 10s.
    pub poll_interval: HumanDuration,
    /// How often the include patterns are expanded again, as a safety net for file events the
    /// kernel dropped. At least 100ms.
    pub rescan_interval: HumanDuration,
    /// How long a rotated or deleted file stays open after its end was reached and it went
    /// quiet, for a writer that still had it open.
    pub rotate_wait: HumanDuration,
    /// Deleted files not read to their end yet (Elasticsearch was behind longer than the kubelet
    /// keeps rotated files) are kept open to be read later: their disk space is only freed when
    /// logship lets go. At most this many such files; past it, the one deleted first is let go
    /// unread and its unread bytes are counted as lost (`logship_lost_bytes_total`). 0: let go
    /// at once.
    pub max_deleted_files: u32,
    /// At most this many bytes of such deleted files, all together; past it, as above.
    pub max_deleted_bytes: Size,
    /// The names of a followed file's rotated generations, as glob patterns (`*`, `?`, `[0-9]`,
    /// `{a,b}`) in the directory of the file (the target of a symlink), where `{name}` stands for
    /// the file's name. At start and whenever a file is found, its generations that still hold
    /// unread lines (plain or gzipped) are read, oldest first, before its new lines. The default
    /// is kubelet's: `0.log.20261122-100000` and `0.log.20261122-100000.gz` next to `0.log`.
    /// Empty: rotated generations are not looked for.
    pub rotated_patterns: Vec<String>,
}

impl Default for RawTail {
    fn default() -> Self {
        RawTail {
            include: vec!["/var/log/containers/*.log".into()],
            exclude: Vec::new(),
            read_from: ReadFrom::Head,
            format: FormatChoice::Auto,
            max_line_bytes: Size::kib(256),
            oversize_lines: Oversize::Split,
            read_budget: Size::kib(256),
            poll_interval: HumanDuration::millis(250),
            rescan_interval: HumanDuration::secs(10),
            rotate_wait: HumanDuration::secs(5),
            max_deleted_files: 256,
            max_deleted_bytes: Size::gib(2),
            rotated_patterns: crate::tail::generations::DEFAULT_PATTERNS
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `[multiline]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultiline {
    /// The rule every file's lines are joined by: `none` (no joining: one line, one record, the
    /// default, since joining changes what a record is), a built-in rule (`java` for JVM stack
    /// traces, `python` for tracebacks, `go` for panics and goroutine dumps, `nodejs` for
    /// Node.js errors) or the name of one of `rules`. Works per stream, on the message after CRI
    /// partials and docker splits are reassembled. A list (`["java", "python", "go"]`, or
    /// `"java+python+go"`) joins by all of them: a line that starts a record under one rule (the
    /// first in the list, where several would) opens it under that rule.
    #[serde(deserialize_with = "rule_names")]
    pub default_rule: String,
    /// A record that gets no new line for this long is shipped as it is. 10ms to 1m.
    pub flush_timeout: HumanDuration,
    /// Joining stops before a record passes this many bytes; the rest of the event is the next
    /// record (counted). 1KiB to 64MiB, and never more than tail.max_line_bytes (a larger value
    /// acts as tail.max_line_bytes).
    pub max_bytes: Size,
    /// Joining stops before a record passes this many lines; the rest of the event is the next
    /// record (counted). 2 to 100000.
    pub max_lines: u32,
    /// Rules of your own, each a table with a `name` (what `default_rule` and hints call it),
    /// a `start` regular expression (matches the first line of a record) and/or a
    /// `continuation` one (matches the lines that continue it). With only `start`, every other
    /// line continues the record; with only `continuation`, every other line starts one; with
    /// both, a line that matches neither is a record of its own.
    pub rules: Vec<RawMultilineRule>,
}

impl Default for RawMultiline {
    fn default() -> Self {
        RawMultiline {
            default_rule: "none".into(),
            flush_timeout: HumanDuration::secs(1),
            max_bytes: Size::kib(64),
            max_lines: 500,
            rules: Vec::new(),
        }
    }
}

/// `[[multiline.rules]]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMultilineRule {
    /// The rule's name; not `none` nor a built-in rule's.
    pub name: String,
    /// A regular expression (Rust regex syntax) matching the first line of a record; empty:
    /// none.
    pub start: String,
    /// A regular expression matching a line that continues the record; empty: none.
    pub continuation: String,
}

/// `[journald]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournald {
    /// true: read the systemd journal as well as the files.
    pub enabled: bool,
    /// A directory of journal files, read with its machine-id subdirectories; empty: the
    /// system journal (/var/log/journal and /run/log/journal).
    pub directory: String,
    /// Only entries whose `_SYSTEMD_UNIT` is one of these (`kubelet` means `kubelet.service`);
    /// empty: every entry.
    pub units: Vec<String>,
    /// Entries of these units are left out.
    pub exclude_units: Vec<String>,
    /// Only entries with these fields, each `FIELD=value`: any of the values of one field, and
    /// every field named (journalctl's matches). Empty: no condition.
    pub matches: Vec<String>,
    /// Kernel messages (`_TRANSPORT=kernel`): read, also when `units` names units.
    pub kernel: bool,
    /// Where a journal file starts when the positions file has no journal yet (the first
    /// start): "head" (everything the journal keeps) or "tail" (entries written from now on).
    pub read_from: ReadFrom,
    /// Every other field of an entry under `journald.*`, with lower-case names
    /// (`journald.code_file`); false: only the fields the README lists.
    pub all_fields: bool,
    /// How often the journal is looked at for new entries and new files (10ms to 10s).
    pub poll_interval: HumanDuration,
}

impl Default for RawJournald {
    fn default() -> Self {
        RawJournald {
            enabled: false,
            directory: String::new(),
            units: Vec::new(),
            exclude_units: Vec::new(),
            matches: Vec::new(),
            kernel: true,
            read_from: ReadFrom::Head,
            all_fields: false,
            poll_interval: HumanDuration::millis(250),
        }
    }
}

/// `[positions]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPositions {
    /// How often acknowledged positions are written to `<data_dir>/positions.json` (also at
    /// shutdown). After a crash, at most this much is shipped again. At least 10ms.
    pub flush_interval: HumanDuration,
    /// How long the position of a file that is no longer followed is kept, in case it comes back.
    pub gc_after: HumanDuration,
    /// Another agent's positions to start from when there is no positions file yet (a switch
    /// from it): `fluent-bit:PATH`, `fluentd:PATH`, `filebeat:DIR`, `vector:PATH`.
    pub import_from: Vec<String>,
}

impl Default for RawPositions {
    fn default() -> Self {
        RawPositions {
            flush_interval: HumanDuration::secs(1),
            gc_after: HumanDuration::secs(24 * 3600),
            import_from: Vec::new(),
        }
    }
}

/// `[buffer]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    /// Bytes of records held between reading and acknowledgement; when spent, reading waits.
    /// At least twice the larger of `tail.max_line_bytes` and `tail.read_budget`.
    pub max_bytes: Size,
}

impl Default for RawBuffer {
    fn default() -> Self {
        RawBuffer {
            max_bytes: Size::mib(12),
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address and port of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), as `IP:PORT`:
    /// `0.0.0.0:2020` for every interface (the kubelet's probes and Prometheus reach the pod's
    /// IP), `127.0.0.1:2020` for this machine only. Port 0 takes a free port, logged at start.
    pub listen: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "0.0.0.0:2020".into(),
        }
    }
}

/// `[output]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// `elasticsearch` (bulk requests to `output.elasticsearch.hosts`), `stdout` (NDJSON on
    /// standard output), `file` (NDJSON appended to `output.file.path`) or `blackhole` (encoded,
    /// counted, discarded: for benchmarks and dry runs).
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// The `file` output; ignored by the others.
    pub file: RawOutputFile,
    /// The `elasticsearch` output; ignored by the others.
    pub elasticsearch: RawElasticsearch,
}

/// The `output.type` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    /// `_bulk` requests to Elasticsearch or OpenSearch (`output.elasticsearch`).
    #[default]
    Elasticsearch,
    Stdout,
    File,
    Blackhole,
}

/// `[output.file]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputFile {
    /// The file records are appended to, created (again) if missing. Required when
    /// `output.type = "file"`; empty means not set.
    pub path: String,
    /// Whether every flush is also fsync'ed before it is acknowledged: survives a power loss,
    /// costs a disk round trip per flush.
    pub fsync: bool,
}

/// `[output.elasticsearch]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElasticsearch {
    /// Base URLs of the cluster's nodes (`https://es-0.example:9200`), used round-robin; a node
    /// that fails is left out for a while and probed before it is used again. A path is kept
    /// (`https://proxy/es`). Credentials belong in `auth`, not in the URL.
    pub hosts: Vec<String>,
    /// The index (or data stream) records go to: a template with strftime specifiers on the
    /// record's timestamp in UTC (`%Y %m %d %H %M %j %G %V %u`) and field references in braces
    /// (`{kubernetes.namespace}`, `{kubernetes.pod.name}`, `{kubernetes.container.name}`,
    /// `{host.name}`, `{stream}`). The default is a data stream on Elasticsearch 7.9+ (its
    /// built-in `logs-*-*` template) and a plain index on OpenSearch.
    pub index: String,
    /// Where records go whose template fields are missing (a file that is not a kubelet log has
    /// no namespace). A plain index name.
    pub index_fallback: String,
    /// `create` (a repeated record answers 409 and counts as delivered: restarts and retries
    /// never duplicate; required by data streams) or `index` (overwrites a document of the same
    /// id).
    pub op_type: String,
    /// An ingest pipeline every record goes through; empty for none.
    pub pipeline: String,
    /// `gzip` or `none`: compression of request bodies.
    pub compression: String,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// How long one request may take before it is abandoned and retried.
    pub request_timeout: HumanDuration,
    /// Requests sent at once at most, 1 to 64.
    pub max_in_flight: u32,
    /// Halve the requests sent at once when Elasticsearch answers 429 (too many requests) and add
    /// one back per round of requests answered without it, up to `max_in_flight` (AIMD), so
    /// that many agents back off together. `false`: always `max_in_flight`.
    pub adaptive_concurrency: bool,
    /// A limit on what this agent sends: requests per second and/or bytes per second (after
    /// compression), like `20/s`, `10MiB/s` or `20/s,10MiB/s`; `none` for no limit. Bodies
    /// wait for their turn; nothing is dropped.
    pub rate_limit: String,
    /// Install an index template (`logship`) with mappings that suit the documents
    /// (`@timestamp` as date_nanos, labels and annotations as keywords) at start.
    pub install_template: bool,
    /// When a bulk request is closed and sent.
    pub batch: RawBatch,
    /// How failures are retried.
    pub retry: RawRetry,
    /// How requests authenticate; at most one method.
    pub auth: RawAuth,
    /// TLS towards the cluster.
    pub tls: RawTls,
    /// Records the cluster refused for good, kept under `<data_dir>/dead-letter/`.
    pub dead_letter: RawDeadLetter,
}

impl Default for RawElasticsearch {
    fn default() -> Self {
        RawElasticsearch {
            hosts: vec!["http://localhost:9200".into()],
            index: "logs-logship-default".into(),
            index_fallback: "logs-logship-default".into(),
            op_type: "create".into(),
            pipeline: String::new(),
            compression: "gzip".into(),
            compression_level: 1,
            request_timeout: HumanDuration::secs(30),
            max_in_flight: 4,
            adaptive_concurrency: true,
            rate_limit: "none".into(),
            install_template: false,
            batch: RawBatch::default(),
            retry: RawRetry::default(),
            auth: RawAuth::default(),
            tls: RawTls::default(),
            dead_letter: RawDeadLetter::default(),
        }
    }
}

/// `[output.elasticsearch.batch]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// A request is sent once it holds this many bytes (before compression)…
    pub max_bytes: Size,
    /// …or this many records…
    pub max_events: u32,
    /// …or this long after its first record went in.
    pub timeout: HumanDuration,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_bytes: Size::mib(5),
            max_events: 10_000,
            timeout: HumanDuration::millis(250),
        }
    }
}

/// `[output.elasticsearch.retry]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// The first wait before a retry; it doubles with each attempt (with full jitter).
    pub initial_backoff: HumanDuration,
    /// The longest wait between two attempts.
    pub max_backoff: HumanDuration,
    /// Give up after this long and put the records in the dead letters. Empty: never give up
    /// (the default: while the cluster refuses, reading waits and nothing is lost).
    pub max_duration: String,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            initial_backoff: HumanDuration::millis(100),
            max_backoff: HumanDuration::secs(30),
            max_duration: String::new(),
        }
    }
}

/// `[output.elasticsearch.auth]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Basic authentication: the user…
    pub user: String,
    /// …and its password (better: `${ES_PASSWORD}` from a Secret, or `password_file`).
    pub password: String,
    /// A file holding the password (a mounted Secret).
    pub password_file: String,
    /// An API key, as the `encoded` value Elasticsearch's create API key call returns.
    pub api_key: String,
    /// A file holding the API key.
    pub api_key_file: String,
    /// A file holding a bearer token, read again whenever it changes.
    pub bearer_token_file: String,
}

/// `[output.elasticsearch.tls]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of CA certificates trusted in addition to the system's.
    pub ca_file: String,
    /// PEM client certificate for mutual TLS (with `key_file`).
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// Accept any server certificate. Defeats TLS; logged as a warning at start.
    pub insecure_skip_verify: bool,
}

/// `[output.elasticsearch.dead_letter]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// All dead-letter files together at most this big; beyond it the oldest file is removed
    /// (logged as an error and counted: that is data loss).
    pub max_bytes: Size,
    /// One file at most this big before the next one is started.
    pub max_file_bytes: Size,
    /// Send refused records to this index instead (as `{"error", "index", "id", "document":
    /// "<the record as a string>"}`), keeping the files as the fallback; empty: files only.
    pub index: String,
}

impl Default for RawDeadLetter {
    fn default() -> Self {
        RawDeadLetter {
            max_bytes: Size::mib(1024),
            max_file_bytes: Size::mib(64),
            index: String::new(),
        }
    }
}

/// `[kubernetes]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    /// `auto` (on inside a cluster, that is when `KUBERNETES_SERVICE_HOST` is set, or when
    /// `api_url` or `kubeconfig` is given; off elsewhere), `true` or `false`.
    pub enabled: String,
    /// The API server's URL, for running outside a pod (a VM, a test); empty: in-cluster
    /// configuration or `kubeconfig`.
    pub api_url: String,
    /// A file holding the bearer token for `api_url`, re-read as it rotates.
    pub token_file: String,
    /// The CA certificate (PEM) of `api_url`.
    pub ca_file: String,
    /// A kubeconfig file (its current context) instead of `api_url`.
    pub kubeconfig: String,
    /// Field names: `ecs` (`kubernetes.pod.name`, `container.id`, ...) or `fluentd` (the names
    /// fluent-plugin-kubernetes_metadata_filter writes: `kubernetes.pod_name`,
    /// `kubernetes.namespace_name`, `docker.container_id`, the message in `log`).
    pub schema: String,
    /// Pod labels in `kubernetes.labels`.
    pub labels: bool,
    /// Namespace labels in `kubernetes.namespace_labels`.
    pub namespace_labels: bool,
    /// Annotation keys to copy into `kubernetes.annotations`, as globs
    /// (`["example.com/*", "owner"]`); empty: none (annotations can be large).
    pub annotations: Vec<String>,
    /// Replaces `.` in label and annotation keys (`app.kubernetes.io/name` ->
    /// `app_kubernetes_io/name`), so that `app` and `app.kubernetes.io/name` never conflict in
    /// Elasticsearch's mappings. Empty: keep the dots.
    pub dedot_separator: String,
    /// How long a new file waits for its pod's metadata before it is shipped with what its name
    /// tells (the watch may not have delivered a pod that just started). Other files go on.
    pub wait_for_metadata: HumanDuration,
    /// How long a deleted pod's metadata is kept, so that its last lines are still enriched.
    pub delete_grace: HumanDuration,
}

impl Default for RawKubernetes {
    fn default() -> Self {
        RawKubernetes {
            enabled: "auto".into(),
            api_url: String::new(),
            token_file: String::new(),
            ca_file: String::new(),
            kubeconfig: String::new(),
            schema: "ecs".into(),
            labels: true,
            namespace_labels: true,
            annotations: Vec::new(),
            dedot_separator: "_".into(),
            wait_for_metadata: HumanDuration::secs(2),
            delete_grace: HumanDuration::secs(300),
        }
    }
}

/// `[rate_limit]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Every container's limit: `500/s` (lines), `1MiB/s` (bytes), both (`500/s,1MiB/s`), per
    /// minute (`30000/m`), or empty for none. A namespace rule replaces it; a pod's
    /// `logship.io/rate-limit` annotation tightens it (see `annotations`).
    pub default: String,
    /// Per-namespace limits, as `<namespace>=<limit>` (`["batch=200/s", "noisy=512KiB/s"]`).
    pub namespaces: Vec<String>,
    /// How far above its rate a container may go at once, as time at that rate.
    pub burst: HumanDuration,
    /// `throttle`: read the container's file more slowly, nothing is lost (the file is the
    /// buffer). `drop`: drop the lines past the limit, count them, and ship a summary record.
    pub action: String,
    /// With `drop`: at most one summary record per container this often.
    pub summary_interval: HumanDuration,
    /// What a pod's `logship.io/rate-limit` annotation may do: `tighten` (per dimension, the
    /// stricter of it and the operator's limit applies), `override` (it replaces the operator's
    /// limit, so a tenant can lift it), `ignore`.
    pub annotations: String,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            default: String::new(),
            namespaces: Vec::new(),
            burst: HumanDuration::secs(1),
            action: "throttle".into(),
            summary_interval: HumanDuration::secs(10),
            annotations: "tighten".into(),
        }
    }
}

/// `[processing]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessing {
    /// How messages are parsed into fields unless a pod's `logship.io/parser` annotation or a
    /// rule says otherwise: `auto` (a message that is a JSON object is parsed, others are left
    /// alone), `json` (every message should be a JSON object; one that is not is counted as
    /// invalid), `logfmt` (`key=value` pairs), `none`.
    pub parser: String,
    /// Where parsed fields go: under this name (`json` puts them at `json.*`), or `""` merged at
    /// the top level of the document, where the document's own fields win and a clashing parsed
    /// key moves under `json.`.
    pub target: String,
    /// Keep the message when it was parsed into fields. `false` leaves it out (a parsed
    /// `message` key, or a field renamed to `message`, takes its place); a message whose fields
    /// hit a bound is always kept.
    pub keep_message: bool,
    /// Top-level keys whose value becomes `log.level` (`level` with the fluentd schema), the
    /// first present wins; numbers are pino's and bunyan's levels (30 is `info`).
    pub level_keys: Vec<String>,
    /// Objects and arrays nested deeper than this (the message's object is level 1) are kept as
    /// one string of their JSON. 1 to 32.
    pub max_depth: u32,
    /// Members (keys at any level) kept per message; the rest are left out, counted. 1 to 10000.
    pub max_fields: u32,
    /// A member whose key is longer than this is left out, counted. 1 to 4096.
    pub max_key_bytes: u32,
    /// Keep only records that match one of these, as `<field>=~<regex>`
    /// (`["message=~ERROR|WARN", "json.level=~^(warn|error)$"]`); empty keeps every record.
    pub include: Vec<String>,
    /// Drop records that match any of these, as `<field>=~<regex>`
    /// (`["kubernetes.namespace=~^kube-", "json.path=~^/healthz"]`).
    pub exclude: Vec<String>,
    /// Parsed fields to leave out (`["json.password", "log.level"]`).
    pub drop_fields: Vec<String>,
    /// Parsed fields to rename, as `<from>=<to>` (`["json.msg=message", "json.uid=user.id"]`).
    pub rename_fields: Vec<String>,
    /// Fields added to every record, as `<key>=<value>` (`["cluster.name=${CLUSTER_NAME}"]`);
    /// dotted keys are nested objects. `${VAR}` is substituted in the file when it is loaded.
    pub add_fields: Vec<String>,
    /// Parser and multiline hints per namespace, label selector and container, the first match
    /// wins, below a pod's annotations: `"namespace=shop,payments selector=app=web
    /// container=app parser=json multiline=java"`.
    pub rules: Vec<String>,
}

impl Default for RawProcessing {
    fn default() -> Self {
        RawProcessing {
            parser: "auto".into(),
            target: "json".into(),
            keep_message: true,
            level_keys: crate::process::DEFAULT_LEVEL_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            max_depth: Bounds::DEFAULT.max_depth as u32,
            max_fields: Bounds::DEFAULT.max_fields as u32,
            max_key_bytes: Bounds::DEFAULT.max_key_bytes as u32,
            include: Vec::new(),
            exclude: Vec::new(),
            drop_fields: Vec::new(),
            rename_fields: Vec::new(),
            add_fields: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// A multiline rule name, or a list of them (an array, or names joined by `+`), as one string
/// joined by `+`.
fn rule_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a rule name or a list of rule names")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut names: Vec<String> = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                names.push(name);
            }
            if names.is_empty() {
                return Err(serde::de::Error::invalid_length(
                    0,
                    &"at least one rule name",
                ));
            }
            Ok(names.join("+"))
        }
    }
    d.deserialize_any(Names)
}
