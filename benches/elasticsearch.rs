//! End to end into Elasticsearch's wire format: pre-written CRI files of 200-byte lines -> the
//! real `logship` binary (a child process, default settings: gzip level 1, 5 MiB batches, 4 in
//! flight) -> a local `_bulk` endpoint that gunzips, counts the items and answers 201 for each.
//!
//! Prints, per run: lines/s, MB/s of input, the agent's CPU seconds per GB of input (from
//! /proc/<pid>/stat, so the counting server's work is not included) and its peak RSS (VmHWM).
//! Not a criterion bench: one run moves 200 MB, and the figures wanted are per process.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;

/// The test Kubernetes API server of the integration tests, for the `pods10_metadata` scenario.
#[path = "../tests/support/mod.rs"]
mod support;

const FILES: usize = 4;
const LINES_PER_FILE: usize = 250_000;
const LINE_BYTES: usize = 200;
const RUNS: usize = 3;

/// Items received, over all requests.
#[derive(Default)]
struct Counter {
    /// How long the endpoint takes per request (a slow cluster).
    delay_ms: AtomicU64,
    /// And per item, in microseconds: a cluster that indexes at most 1e6 / this docs per second
    /// (per request in flight).
    delay_per_item_us: AtomicU64,
    /// Write-to-indexed latencies of the quiet lines (`fairness`), in microseconds.
    quiet: std::sync::Mutex<Vec<u64>>,
    items: AtomicU64,
    requests: AtomicU64,
    wire_bytes: AtomicU64,
}

async fn bulk(
    State(counter): State<Arc<Counter>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let delay = counter.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let raw = if gzip {
        let mut out = Vec::with_capacity(body.len() * 8);
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return (
                StatusCode::BAD_REQUEST,
                "{\"error\":\"bad gzip\",\"status\":400}".into(),
            );
        }
        out
    } else {
        body.to_vec()
    };
    let items = memchr::memchr_iter(b'\n', &raw).count() / 2;
    let per_item = counter.delay_per_item_us.load(Ordering::Relaxed);
    if per_item > 0 {
        tokio::time::sleep(Duration::from_micros(per_item * items as u64)).await;
    }
    record_quiet_latencies(&counter, &raw);
    counter.items.fetch_add(items as u64, Ordering::Relaxed);
    counter.requests.fetch_add(1, Ordering::Relaxed);
    counter
        .wire_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut answer = String::with_capacity(items * 30 + 32);
    answer.push_str("{\"errors\":false,\"items\":[");
    for i in 0..items {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str("{\"create\":{\"status\":201}}");
    }
    answer.push_str("]}");
    (StatusCode::OK, answer)
}

/// The quiet lines of the `fairness` scenario carry `QUIET@<unix micros when written>;`: their
/// latency is from then to now, when the cluster indexes them.
fn record_quiet_latencies(counter: &Counter, raw: &[u8]) {
    let now = unix_micros();
    let mut found = Vec::new();
    for at in memchr::memmem::find_iter(raw, QUIET_MARK) {
        let digits = &raw[at + QUIET_MARK.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(0);
        if let Some(written) = std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        {
            found.push(now.saturating_sub(written));
        }
    }
    if !found.is_empty() {
        counter.quiet.lock().unwrap().extend(found);
    }
}

const QUIET_MARK: &[u8] = b"QUIET@";

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn banner() -> &'static str {
    r#"{"name":"bench","cluster_name":"bench","version":{"number":"8.15.0"},"tagline":"You Know, for Search"}"#
}

fn start_server(counter: Arc<Counter>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/", get(banner))
                .route("/_bulk", post(bulk))
                .with_state(counter);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

/// (utime + stime in seconds, VmHWM in KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

/// One input and one endpoint behaviour.
struct Scenario {
    name: &'static str,
    files: usize,
    lines_per_file: usize,
    delay: Duration,
    runs: usize,
    /// Files named after pods of the test Kubernetes API server, and metadata on: each record
    /// carries its pod's (`pods10_metadata`), as a DaemonSet's do.
    metadata: Metadata,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Metadata {
    /// Files of made-up pods, metadata off.
    Off,
    /// Files of the test API server's pods, metadata off: the same input as `On`.
    Pods,
    /// Files of the test API server's pods, metadata on.
    On,
}

/// The name of pod `f` in the `pods10` scenarios: a Deployment's pod, whose one container is
/// named after its app (`web{f}`).
fn pod_name(f: usize) -> String {
    format!("web{f}-7d4b9-x2x9k")
}

/// The test Kubernetes API server with the `pods10` scenarios' pods on node `bench`: labels,
/// annotations and an owner as a Deployment's pods have, in a labelled namespace.
fn start_kube(pods: usize) -> support::kubernetes::TestKube {
    use support::kubernetes::{namespace, pod, TestKube};
    let kube = TestKube::start();
    kube.create_namespace(
        namespace("shop")
            .label("team", "payments")
            .label("environment", "production")
            .build(),
    );
    for f in 0..pods {
        let name = pod_name(f);
        kube.create_pod(
            pod("shop", &name, "bench")
                .replica_set(&format!("web{f}-7d4b9"))
                .label("pod-template-hash", "7d4b9")
                .label("tier", "frontend")
                .label("version", "1.4.2")
                .annotation("prometheus.io/scrape", "true")
                .annotation("prometheus.io/port", "9090")
                .build(),
        );
    }
    kube
}

/// Writes `files` kubelet-named CRI files of `lines` 200-byte lines each; returns the bytes.
fn write_files(dir: &Path, files: usize, lines: usize, metadata: Metadata) -> u64 {
    let mut total = 0;
    for f in 0..files {
        let name = match metadata {
            Metadata::Off => format!("web-{f}_shop_nginx-{:064x}.log", f + 1),
            Metadata::Pods | Metadata::On => {
                support::kubernetes::file_name("shop", &pod_name(f), &format!("web{f}"))
            }
        };
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(name)).unwrap(),
        );
        let mut line = Vec::with_capacity(LINE_BYTES);
        for i in 0..lines {
            line.clear();
            let head = format!(
                "2026-11-22T10:00:00.{:09}Z stdout F GET /api/v1/items/{i} 200 ",
                i % 1_000_000_000
            );
            line.extend_from_slice(head.as_bytes());
            line.resize(LINE_BYTES - 1, b'x');
            line.push(b'\n');
            std::io::Write::write_all(&mut out, &line).unwrap();
        }
        total += (lines * LINE_BYTES) as u64;
    }
    total
}

fn run_scenario(s: &Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let total_bytes = write_files(&logs, s.files, s.lines_per_file, s.metadata);
    let lines = (s.files * s.lines_per_file) as u64;
    let kube = (s.metadata != Metadata::Off).then(|| start_kube(s.files));
    let kube_url = kube.as_ref().map(|k| k.url()).unwrap_or_default();
    let kubernetes = if s.metadata == Metadata::On {
        "true"
    } else {
        "false"
    };
    for run in 0..s.runs {
        let counter = Arc::new(Counter::default());
        counter
            .delay_ms
            .store(s.delay.as_millis() as u64, Ordering::Relaxed);
        let url = start_server(Arc::clone(&counter));
        let data = dir.path().join(format!("data-{run}"));
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_logship"))
            .arg("--include")
            .arg(format!("{}/*.log", logs.display()))
            .arg("--data-dir")
            .arg(&data)
            .env("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", &url)
            .env("LOGSHIP_NODE_NAME", "bench")
            .env("LOGSHIP_LOG__LEVEL", "warn")
            .env("LOGSHIP_KUBERNETES__ENABLED", kubernetes)
            .env("LOGSHIP_KUBERNETES__API_URL", &kube_url)
            .env("LOGSHIP_SERVER__LISTEN", "127.0.0.1:0")
            // The bench's own setting is not the agent's (it rejects unknown LOGSHIP_ names).
            .env_remove("LOGSHIP_BENCH_BACKLOG_GB")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = (0.0, 0);
        while counter.items.load(Ordering::Relaxed) < lines {
            std::thread::sleep(Duration::from_millis(5));
            peak = usage(pid);
            assert!(start.elapsed() < Duration::from_secs(3600), "timed out");
        }
        let wall = start.elapsed();
        let (cpu, hwm) = usage(pid);
        let hwm = hwm.max(peak.1);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait();
        let gb = total_bytes as f64 / 1e9;
        println!(
            "elasticsearch {} run {run}: {} files, {lines} lines, {:.0} MB in {:.3} s: {:.0} lines/s, {:.1} MB/s of input; agent CPU {:.2} s = {:.1} CPU s/GB ({:.1} MB/s per core); peak RSS {:.1} MiB; {} requests, {:.1} MB on the wire (gzip ratio {:.1})",
            s.name,
            s.files,
            total_bytes as f64 / 1e6,
            wall.as_secs_f64(),
            lines as f64 / wall.as_secs_f64(),
            total_bytes as f64 / 1e6 / wall.as_secs_f64(),
            cpu,
            cpu / gb,
            total_bytes as f64 / 1e6 / cpu,
            hwm as f64 / 1024.0,
            counter.requests.load(Ordering::Relaxed),
            counter.wire_bytes.load(Ordering::Relaxed) as f64 / 1e6,
            total_bytes as f64 / counter.wire_bytes.load(Ordering::Relaxed).max(1) as f64,
        );
    }
}

/// One container writes flat out (up to `NOISY_RATE`) into a cluster much slower than it
/// (`delay_per_item`), while `QUIET_FILES` containers write a line every 100 ms. Prints the
/// quiet lines' write-to-indexed latency (p50, p99, max) and the cluster's pace. No limit is
/// configured.
fn run_fairness(seconds: u64, delay_per_item: Duration) {
    const QUIET_FILES: usize = 5;
    const NOISY_RATE: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let counter = Arc::new(Counter::default());
    counter
        .delay_per_item_us
        .store(delay_per_item.as_micros() as u64, Ordering::Relaxed);
    let url = start_server(Arc::clone(&counter));
    let file = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(name))
            .unwrap()
    };
    let noisy_name = format!("noisy-0_shop_flood-{:064x}.log", 1);
    let quiet_names: Vec<String> = (0..QUIET_FILES)
        .map(|q| format!("quiet-{q}_shop_app-{:064x}.log", q + 2))
        .collect();
    // The files exist before the agent starts: it follows them from their (empty) start.
    drop(file(&noisy_name));
    for name in &quiet_names {
        drop(file(name));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("--include")
        .arg(format!("{}/*.log", logs.display()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", &url)
        .env("LOGSHIP_NODE_NAME", "bench")
        .env("LOGSHIP_LOG__LEVEL", "warn")
        .env("LOGSHIP_KUBERNETES__ENABLED", "false")
        .env("LOGSHIP_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("LOGSHIP_BENCH_BACKLOG_GB")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy = {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, file(&noisy_name));
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut line = Vec::with_capacity(LINE_BYTES);
            let mut written = 0u64;
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // At most NOISY_RATE lines/s: far more than the cluster takes, without filling
                // the disk.
                let due = Duration::from_secs_f64(written as f64 / NOISY_RATE as f64);
                if let Some(ahead) = due.checked_sub(began.elapsed()) {
                    std::thread::sleep(ahead);
                }
                for _ in 0..1000 {
                    line.clear();
                    let head = format!("2026-11-22T10:00:00.000000000Z stdout F flood {written} ");
                    line.extend_from_slice(head.as_bytes());
                    line.resize(LINE_BYTES - 1, b'x');
                    line.push(b'\n');
                    std::io::Write::write_all(&mut out, &line).unwrap();
                    written += 1;
                }
                std::io::Write::flush(&mut out).unwrap();
            }
            written
        })
    };
    let mut quiet_files: Vec<std::fs::File> = quiet_names.iter().map(|n| file(n)).collect();
    let start = Instant::now();
    let mut quiet_written = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        for out in &mut quiet_files {
            let line = format!(
                "2026-11-22T10:00:00.000000000Z stdout F request done QUIET@{};\n",
                unix_micros()
            );
            std::io::Write::write_all(out, line.as_bytes()).unwrap();
            quiet_written += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let noisy_written = noisy.join().unwrap();
    let wall = start.elapsed();
    let indexed_during = counter.items.load(Ordering::Relaxed);
    // The quiet lines written last arrive once what is ahead of them is indexed.
    let deadline = Instant::now() + Duration::from_secs(600);
    while (counter.quiet.lock().unwrap().len() as u64) < quiet_written && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let mut quiet = counter.quiet.lock().unwrap().clone();
    quiet.sort_unstable();
    let pct = |p: f64| quiet[((quiet.len() as f64 * p) as usize).min(quiet.len() - 1)] as f64 / 1e6;
    println!(
        "elasticsearch fairness: {seconds} s, noisy wrote {noisy_written} lines ({:.0} lines/s), {indexed_during} indexed while it wrote ({:.0}/s, the cluster's pace); quiet lines {} of {quiet_written} indexed, write to indexed p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        noisy_written as f64 / wall.as_secs_f64(),
        indexed_during as f64 / wall.as_secs_f64(),
        quiet.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}

fn main() {
    // `cargo bench --bench elasticsearch -- NAME` runs the scenarios whose name contains NAME.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // The big backlog is written to disk first: LOGSHIP_BENCH_BACKLOG_GB (default 1) sizes it.
    let backlog_gb: usize = std::env::var("LOGSHIP_BENCH_BACKLOG_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let scenarios = [
        Scenario {
            name: "default",
            files: FILES,
            lines_per_file: LINES_PER_FILE,
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "slow_es_1s",
            files: FILES,
            lines_per_file: LINES_PER_FILE / 4,
            delay: Duration::from_secs(1),
            runs: 1,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "files_2000",
            files: 2000,
            lines_per_file: 500,
            delay: Duration::ZERO,
            runs: 1,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "backlog",
            files: 1,
            lines_per_file: backlog_gb * 5_000_000,
            delay: Duration::ZERO,
            runs: 1,
            metadata: Metadata::Off,
        },
        // Ten pods' files of 20 MB, the same input without and with Kubernetes metadata from
        // the test API server: `-- pods10` runs both, for the cost of the metadata.
        Scenario {
            name: "pods10_plain",
            files: 10,
            lines_per_file: 100_000,
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::Pods,
        },
        Scenario {
            name: "pods10_metadata",
            files: 10,
            lines_per_file: 100_000,
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::On,
        },
    ];
    for s in &scenarios {
        if args.is_empty() || args.iter().any(|a| s.name.contains(a.as_str())) {
            run_scenario(s);
        }
    }
    if args.is_empty() || args.iter().any(|a| "fairness".contains(a.as_str())) {
        // 200 µs per item: a cluster that indexes 5 k documents per second per request in
        // flight (20 k/s with the default 4 in flight), far slower than the flooding container.
        run_fairness(20, Duration::from_micros(200));
    }
}
