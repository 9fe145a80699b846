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

const FILES: usize = 4;
const LINES_PER_FILE: usize = 250_000;
const LINE_BYTES: usize = 200;
const RUNS: usize = 3;

fn write_input(dir: &Path) -> u64 {
    let mut total = 0;
    for f in 0..FILES {
        let name = format!("web-{f}_shop_nginx-{:064x}.log", f + 1);
        let mut body = Vec::with_capacity(LINES_PER_FILE * LINE_BYTES);
        for i in 0..LINES_PER_FILE {
            let head = format!("2026-11-22T10:00:00.{i:09}Z stdout F GET /api/v1/items/{i} 200 ");
            body.extend_from_slice(head.as_bytes());
            body.resize(body.len() + LINE_BYTES - head.len() - 1, b'x');
            body.push(b'\n');
        }
        total += body.len() as u64;
        std::fs::write(dir.join(name), body).unwrap();
    }
    total
}

/// Items received, over all requests.
#[derive(Default)]
struct Counter {
    items: AtomicU64,
    requests: AtomicU64,
    wire_bytes: AtomicU64,
}

async fn bulk(
    State(counter): State<Arc<Counter>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
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

fn main() {
    // `cargo bench` passes filter arguments; `--bench` alone means run.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let total_bytes = write_input(&logs);
    let lines = (FILES * LINES_PER_FILE) as u64;
    for run in 0..RUNS {
        let counter = Arc::new(Counter::default());
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
            .env("LOGSHIP_KUBERNETES__ENABLED", "false")
            .env("LOGSHIP_SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = (0.0, 0);
        while counter.items.load(Ordering::Relaxed) < lines {
            std::thread::sleep(Duration::from_millis(5));
            peak = usage(pid);
            assert!(start.elapsed() < Duration::from_secs(600), "timed out");
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
            "elasticsearch run {run}: {lines} lines, {:.0} MB in {:.3} s: {:.0} lines/s, {:.1} MB/s of input; agent CPU {:.2} s = {:.1} CPU s/GB ({:.1} MB/s per core); peak RSS {:.1} MiB; {} requests, {:.1} MB on the wire (gzip ratio {:.1})",
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
