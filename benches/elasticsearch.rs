//! End to end into Elasticsearch's wire format: pre-written CRI files -> the real `logship`
//! binary (a child process, default settings: gzip level 1, 5 MiB batches, 4 in flight) -> a
//! local `_bulk` endpoint that gunzips, counts the items and answers 201 for each.
//!
//! Prints, per run: lines/s, MB/s of input, the agent's CPU seconds per GB of input (from
//! /proc/<pid>/stat, so the counting server's work is not included) and its peak RSS (VmHWM).
//! Not a criterion bench: one run moves 200-300 MB, and the figures wanted are per process.
//!
//! Inputs: most scenarios write 200-byte lines, an id padded with 'x' (which gzip compresses far
//! better than real logs). `pods10_kubelet` writes what the kubelet writes for ten real pods
//! (300 MB, Kubernetes metadata on): CRI lines with increasing timestamps on stdout and stderr;
//! JSON application logs, ingress-nginx access logs, plain text (Spring Boot, klog, Python,
//! nginx errors) and Java stack traces, one CRI line per line of a trace; most lines 80-400
//! bytes, some of a few KB, and one record in 20,000 over 16 KiB, split by the runtime into
//! 16 KiB `P` chunks and an `F`. A seeded PRNG picks from vocabularies, skewed as real ones are,
//! so the input is the same on every run and gzip finds in it what it finds in real logs (the
//! bench prints the input's gzip ratio). Completion counts records (`P` chunks joined).
//!
//! Peer mode: with `LOGSHIP_BENCH_FLUENT_BIT=<fluent-bit binary>` (never needed: without it only
//! logship runs), every scenario with metadata on (`pods10_metadata`, `pods10_kubelet`) also runs
//! Fluent Bit, each run after logship's, on the same files, into the same kind of counting
//! endpoint, with metadata from the same test API server, configured as most clusters run it:
//! `tail` (CRI multiline parser, a DB, `Mem_Buf_Limit`) -> `kubernetes` filter (`Merge_Log`) ->
//! `es` (gzip, `Generate_ID`, `Replace_Dots`). Its figures are printed on the same line
//! labelled `fluent-bit`, then a line comparing the medians. A run that stalls (no item for
//! 2 minutes), exits or takes over 30 minutes is stopped and its log's path printed, as it is
//! when not every record arrived with the pod's metadata.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;

/// The `pods10_kubelet` input.
#[path = "input/kubelet.rs"]
mod kubelet;
use kubelet::{kubelet_file, CriFile};

/// The test Kubernetes API server of the integration tests, for the `pods10` scenarios.
#[path = "../tests/support/mod.rs"]
mod support;

/// The command line and the process figures, shared with the other end-to-end bench.
#[path = "shared/process.rs"]
mod process;
use process::usage;

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
    /// Items whose document has a `kubernetes` object (the pod's metadata).
    with_kubernetes: AtomicU64,
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
    let with_kubernetes = memchr::memmem::find_iter(&raw, b"\"kubernetes\":{").count();
    counter
        .with_kubernetes
        .fetch_add(with_kubernetes as u64, Ordering::Relaxed);
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

/// One input and one endpoint behaviour.
struct Scenario {
    name: &'static str,
    files: usize,
    input: Input,
    delay: Duration,
    runs: usize,
    /// Files named after pods of the test Kubernetes API server, and metadata on: each record
    /// carries its pod's (`pods10_metadata`, `pods10_kubelet`), as a DaemonSet's do.
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

/// What the files hold.
#[derive(Clone, Copy)]
enum Input {
    /// This many 200-byte CRI lines per file, an id and padding with 'x'.
    Padded { lines: usize },
    /// About this many bytes per file of what the kubelet writes for real pods: see
    /// [`kubelet_file`].
    Kubelet { bytes: usize },
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

/// What [`write_files`] wrote.
struct Written {
    bytes: u64,
    /// Records, as an agent counts them: `P` chunks joined to their `F` line.
    records: u64,
    /// Physical CRI lines.
    lines: u64,
    /// `P` lines among them.
    partial: u64,
    /// gzip (level 6) ratio of the first 4 MB of the first file: how repetitive the input is.
    gzip_ratio: f64,
}

/// Writes `files` kubelet-named CRI files of `input`.
fn write_files(dir: &Path, files: usize, input: Input, metadata: Metadata) -> Written {
    let mut written = Written {
        bytes: 0,
        records: 0,
        lines: 0,
        partial: 0,
        gzip_ratio: 0.0,
    };
    for f in 0..files {
        let name = match metadata {
            Metadata::Off => format!("web-{f}_shop_nginx-{:064x}.log", f + 1),
            Metadata::Pods | Metadata::On => {
                support::kubernetes::file_name("shop", &pod_name(f), &format!("web{f}"))
            }
        };
        let file = match input {
            Input::Padded { lines } => padded_file(lines),
            Input::Kubelet { bytes } => kubelet_file(f, bytes),
        };
        std::fs::write(dir.join(name), &file.out).unwrap();
        if f == 0 {
            written.gzip_ratio = gzip_ratio(&file.out[..file.out.len().min(4_000_000)]);
        }
        written.bytes += file.out.len() as u64;
        written.records += file.records;
        written.lines += file.lines;
        written.partial += file.partial;
    }
    written
}

fn gzip_ratio(data: &[u8]) -> f64 {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut gz, data).unwrap();
    data.len() as f64 / gz.finish().unwrap().len().max(1) as f64
}

/// `lines` lines of 200 bytes: a request line and padding with 'x'.
fn padded_file(lines: usize) -> CriFile {
    let mut file = CriFile::with_capacity(lines * LINE_BYTES);
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
        file.out.extend_from_slice(&line);
        file.records += 1;
        file.lines += 1;
    }
    file
}

// ---- running an agent ----

/// What one agent's run measured.
struct Figures {
    wall: Duration,
    /// CPU seconds (user + system).
    cpu: f64,
    /// Peak RSS, KiB.
    hwm: u64,
    items: u64,
    requests: u64,
    wire_bytes: u64,
    with_kubernetes: u64,
}

/// Samples the agent's usage until the endpoint has counted `lines` items. Err(why) if the agent
/// exits, nothing arrives for `stall`, or it takes longer than `limit`.
fn wait_for_items(
    child: &mut Child,
    counter: &Counter,
    lines: u64,
    start: Instant,
    stall: Duration,
    limit: Duration,
) -> Result<Figures, String> {
    let pid = child.id();
    let mut peak = (0.0, 0);
    let (mut last_items, mut last_change) = (0, Instant::now());
    loop {
        let items = counter.items.load(Ordering::Relaxed);
        if items >= lines {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the agent exited ({status}) after {items} of {lines} items"
            ));
        }
        if items != last_items {
            (last_items, last_change) = (items, Instant::now());
        } else if last_change.elapsed() > stall {
            return Err(format!(
                "no item for {:?}: {items} of {lines} arrived",
                stall
            ));
        }
        if start.elapsed() > limit {
            return Err(format!(
                "timed out after {limit:?}: {items} of {lines} items"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
        if let Some(now) = usage(pid) {
            peak = now;
        }
    }
    let wall = start.elapsed();
    let (cpu, hwm) = usage(pid).unwrap_or(peak);
    Ok(Figures {
        wall,
        cpu,
        hwm: hwm.max(peak.1),
        items: 0,
        requests: 0,
        wire_bytes: 0,
        with_kubernetes: 0,
    })
}

/// SIGTERM, then SIGKILL if the agent is still there 15 s later.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What the endpoint counted, once the agent is stopped.
fn counted(mut figures: Figures, counter: &Counter) -> Figures {
    figures.items = counter.items.load(Ordering::Relaxed);
    figures.requests = counter.requests.load(Ordering::Relaxed);
    figures.wire_bytes = counter.wire_bytes.load(Ordering::Relaxed);
    figures.with_kubernetes = counter.with_kubernetes.load(Ordering::Relaxed);
    figures
}

fn print_figures(s: &Scenario, agent: &str, run: usize, input: &Written, f: &Figures) {
    let gb = input.bytes as f64 / 1e9;
    let lines = input.records;
    println!(
        "elasticsearch {}{agent} run {run}: {} files, {lines} lines, {:.0} MB in {:.3} s: {:.0} lines/s, {:.1} MB/s of input; agent CPU {:.2} s = {:.1} CPU s/GB ({:.1} MB/s per core); peak RSS {:.1} MiB; {} requests, {:.1} MB on the wire (gzip ratio {:.1})",
        s.name,
        s.files,
        input.bytes as f64 / 1e6,
        f.wall.as_secs_f64(),
        lines as f64 / f.wall.as_secs_f64(),
        input.bytes as f64 / 1e6 / f.wall.as_secs_f64(),
        f.cpu,
        f.cpu / gb,
        input.bytes as f64 / 1e6 / f.cpu,
        f.hwm as f64 / 1024.0,
        f.requests,
        f.wire_bytes as f64 / 1e6,
        input.bytes as f64 / f.wire_bytes.max(1) as f64,
    );
    // Every record once, with its pod's metadata when it is on.
    if f.items != lines {
        println!(
            "elasticsearch {}{agent} run {run}: {} items counted for {lines} records",
            s.name, f.items
        );
    }
    if s.metadata == Metadata::On && f.with_kubernetes < f.items {
        println!(
            "elasticsearch {}{agent} run {run}: only {} of {} items carry kubernetes metadata",
            s.name, f.with_kubernetes, f.items
        );
    }
}

fn run_scenario(s: &Scenario, peer: Option<&Path>) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let began = Instant::now();
    let input = write_files(&logs, s.files, s.input, s.metadata);
    if let Input::Kubelet { .. } = s.input {
        println!(
            "elasticsearch {} input: {} files, {:.0} MB, {} records in {} CRI lines ({} partial), written in {:.1} s; gzip -6 ratio of the first 4 MB: {:.1}",
            s.name,
            s.files,
            input.bytes as f64 / 1e6,
            input.records,
            input.lines,
            input.partial,
            began.elapsed().as_secs_f64(),
            input.gzip_ratio,
        );
    }
    let lines = input.records;
    let kube = (s.metadata != Metadata::Off).then(|| start_kube(s.files));
    let kube_url = kube.as_ref().map(|k| k.url()).unwrap_or_default();
    let kubernetes = if s.metadata == Metadata::On {
        "true"
    } else {
        "false"
    };
    // The peer runs on the scenarios with metadata, interleaved with logship's.
    let peer = peer.filter(|_| s.metadata == Metadata::On);
    let mut results: Vec<(Figures, Option<Figures>)> = Vec::new();
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
            // The bench's own settings are not the agent's (it rejects unknown LOGSHIP_ names).
            .env_remove("LOGSHIP_BENCH_BACKLOG_GB")
            .env_remove(FLUENT_BIT_VAR)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let figures = wait_for_items(
            &mut child,
            &counter,
            lines,
            start,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        stop(&mut child);
        let figures = counted(
            figures.unwrap_or_else(|why| panic!("logship: {why}")),
            &counter,
        );
        print_figures(s, "", run, &input, &figures);
        let peer_figures = peer.and_then(|bin| {
            let kube = kube.as_ref().expect("metadata on");
            run_fluent_bit(s, run, bin, dir.path(), &logs, kube, &input)
        });
        results.push((figures, peer_figures));
    }
    if let Some(bin) = peer {
        compare(s, &input, &results, bin);
    }
}

/// The environment variable that names a fluent-bit binary to run side by side.
const FLUENT_BIT_VAR: &str = "LOGSHIP_BENCH_FLUENT_BIT";

/// How long the peer may go without delivering an item before it is given up.
const PEER_STALL: Duration = Duration::from_secs(120);

/// Runs Fluent Bit as most clusters do (tail with the CRI multiline parser and a DB, the
/// kubernetes filter, es with gzip) over the same files, into a fresh counting endpoint, with
/// metadata from the same API server. None (and says why) if it fails.
fn run_fluent_bit(
    s: &Scenario,
    run: usize,
    bin: &Path,
    dir: &Path,
    logs: &Path,
    kube: &support::kubernetes::TestKube,
    input: &Written,
) -> Option<Figures> {
    let lines = input.records;
    let work = dir.join(format!("fluent-bit-{run}"));
    std::fs::create_dir_all(&work).unwrap();
    let counter = Arc::new(Counter::default());
    let url = start_server(Arc::clone(&counter));
    let port = url.rsplit(':').next().unwrap();
    let log = work.join("fluent-bit.log");
    // The test API server takes any token while authentication is off; the filter reads one
    // from a file and will not ask without it.
    let token = work.join("token");
    std::fs::write(&token, "bench-token\n").unwrap();
    let config = format!(
        "[SERVICE]
    Flush        1
    Grace        1
    Log_Level    info
    Log_File     {log}
    HTTP_Server  Off

[INPUT]
    Name              tail
    Path              {logs}/*.log
    Tag               kube.*
    multiline.parser  cri
    DB                {db}
    Mem_Buf_Limit     50MB
    Buffer_Max_Size   64k
    Read_from_Head    On
    Refresh_Interval  1

[FILTER]
    Name             kubernetes
    Match            kube.*
    Kube_URL         {kube_url}
    Kube_Tag_Prefix  {prefix}
    Kube_Token_File  {token}
    Merge_Log        On

[OUTPUT]
    Name               es
    Match              kube.*
    Host               127.0.0.1
    Port               {port}
    Generate_ID        On
    Suppress_Type_Name On
    Replace_Dots       On
    Compress           gzip
    Retry_Limit        False
",
        log = log.display(),
        logs = logs.display(),
        db = work.join("flb.db").display(),
        kube_url = kube.url(),
        prefix = fluent_bit_tag_prefix(logs),
        token = token.display(),
    );
    let config_path = work.join("fluent-bit.conf");
    std::fs::write(&config_path, config).unwrap();
    kube.clear_requests();
    let start = Instant::now();
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("fluent-bit.stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let figures = wait_for_items(
        &mut child,
        &counter,
        lines,
        start,
        PEER_STALL,
        Duration::from_secs(1800),
    );
    stop(&mut child);
    let agent = " fluent-bit";
    let figures = match figures {
        Ok(f) => counted(f, &counter),
        Err(why) => {
            println!(
                "elasticsearch {}{agent} run {run}: stopped: {why}; its log: {}",
                s.name,
                keep_log(s, run, &log).display()
            );
            return None;
        }
    };
    print_figures(s, agent, run, input, &figures);
    let pod_gets = kube
        .get_requests()
        .iter()
        .filter(|r| r.path.contains("/pods/"))
        .count();
    let errors = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("[error]"))
        .count();
    if pod_gets == 0 || figures.with_kubernetes < lines || figures.items != lines || errors > 0 {
        println!(
            "elasticsearch {}{agent} run {run}: {pod_gets} pod GETs from the API server, {} of {} items with metadata, {errors} errors logged; its log: {}",
            s.name,
            figures.with_kubernetes,
            figures.items,
            keep_log(s, run, &log).display()
        );
    }
    Some(figures)
}

/// in_tail's tag for a file: `kube.*` with `*` the file's path, `/` made `.` and runs of `.`
/// made one. The kubernetes filter strips this prefix before it reads the kubelet's file name.
fn fluent_bit_tag_prefix(logs: &Path) -> String {
    let mut prefix = String::new();
    for c in format!("kube.{}/", logs.display()).chars() {
        let c = if matches!(c, '/' | '\\' | ':') {
            '.'
        } else {
            c
        };
        if c == '*' || (c == '.' && prefix.ends_with('.')) {
            continue;
        }
        prefix.push(c);
    }
    prefix
}

/// Copies the peer's log out of the temporary directory, which goes with the scenario.
fn keep_log(s: &Scenario, run: usize, log: &Path) -> PathBuf {
    let kept =
        std::env::temp_dir().join(format!("logship-bench-fluent-bit-{}-run{run}.log", s.name));
    if std::fs::copy(log, &kept).is_err() {
        return log.to_path_buf();
    }
    kept
}

/// The peer against logship: medians over the runs that both finished.
fn compare(s: &Scenario, input: &Written, results: &[(Figures, Option<Figures>)], bin: &Path) {
    let both: Vec<(&Figures, &Figures)> = results
        .iter()
        .filter_map(|(ours, peer)| peer.as_ref().map(|p| (ours, p)))
        .collect();
    if both.is_empty() {
        println!(
            "elasticsearch {} fluent-bit: no run finished ({})",
            s.name,
            bin.display()
        );
        return;
    }
    let gb = input.bytes as f64 / 1e9;
    let median = |f: &dyn Fn(&Figures) -> f64, peer: bool| {
        let mut v: Vec<f64> = both
            .iter()
            .map(|(o, p)| f(if peer { p } else { o }))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cpu = |f: &Figures| f.cpu / gb;
    let rate = |f: &Figures| input.records as f64 / f.wall.as_secs_f64();
    let rss = |f: &Figures| f.hwm as f64 / 1024.0;
    println!(
        "elasticsearch {} fluent-bit vs logship ({} runs, medians): CPU s/GB {:.1} vs {:.1} = {:.1}x; lines/s {:.0} vs {:.0} = {:.2}x; peak RSS {:.1} MiB vs {:.1} MiB",
        s.name,
        both.len(),
        median(&cpu, true),
        median(&cpu, false),
        median(&cpu, true) / median(&cpu, false),
        median(&rate, true),
        median(&rate, false),
        median(&rate, true) / median(&rate, false),
        median(&rss, true),
        median(&rss, false),
    );
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
        .env_remove(FLUENT_BIT_VAR)
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
    let Some(args) = process::scenario_args() else {
        return;
    };
    // The big backlog is written to disk first: LOGSHIP_BENCH_BACKLOG_GB (default 1) sizes it.
    let backlog_gb: usize = std::env::var("LOGSHIP_BENCH_BACKLOG_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let scenarios = [
        Scenario {
            name: "default",
            files: FILES,
            input: Input::Padded {
                lines: LINES_PER_FILE,
            },
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "slow_es_1s",
            files: FILES,
            input: Input::Padded {
                lines: LINES_PER_FILE / 4,
            },
            delay: Duration::from_secs(1),
            runs: 1,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "files_2000",
            files: 2000,
            input: Input::Padded { lines: 500 },
            delay: Duration::ZERO,
            runs: 1,
            metadata: Metadata::Off,
        },
        Scenario {
            name: "backlog",
            files: 1,
            input: Input::Padded {
                lines: backlog_gb * 5_000_000,
            },
            delay: Duration::ZERO,
            runs: 1,
            metadata: Metadata::Off,
        },
        // Ten pods' files of 20 MB, the same input without and with Kubernetes metadata from
        // the test API server: `-- pods10` runs both, for the cost of the metadata.
        Scenario {
            name: "pods10_plain",
            files: 10,
            input: Input::Padded { lines: 100_000 },
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::Pods,
        },
        Scenario {
            name: "pods10_metadata",
            files: 10,
            input: Input::Padded { lines: 100_000 },
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::On,
        },
        // The same pods writing what real applications do, as the kubelet writes it: 300 MB.
        Scenario {
            name: "pods10_kubelet",
            files: 10,
            input: Input::Kubelet { bytes: 30_000_000 },
            delay: Duration::ZERO,
            runs: RUNS,
            metadata: Metadata::On,
        },
    ];
    // LOGSHIP_BENCH_FLUENT_BIT=<fluent-bit binary>: the scenarios with metadata run it too.
    let peer = std::env::var_os(FLUENT_BIT_VAR).map(PathBuf::from);
    if let Some(bin) = &peer {
        match Command::new(bin).arg("--version").output() {
            Ok(out) => println!(
                "peer: {} ({})",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("?"),
                bin.display()
            ),
            Err(e) => panic!("{FLUENT_BIT_VAR}={}: {e}", bin.display()),
        }
    }
    for s in &scenarios {
        if args.is_empty() || args.iter().any(|a| s.name.contains(a.as_str())) {
            run_scenario(s, peer.as_deref());
        }
    }
    if args.is_empty() || args.iter().any(|a| "fairness".contains(a.as_str())) {
        // 200 µs per item: a cluster that indexes 5 k documents per second per request in
        // flight (20 k/s with the default 4 in flight), far slower than the flooding container.
        run_fairness(20, Duration::from_micros(200));
    }
}
