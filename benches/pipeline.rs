//! Variants: plain 200-byte lines, the same under the java multiline rule, a fifth of the lines in
//! stack traces with and without joining, and 300-byte JSON messages not parsed (`parser none`) and
//! parsed into `json.*` (`auto`, the default).
//!
//! End to end: pre-written CRI files of 200-byte lines -> agent (tail, parse, encode) -> a sink
//! that encodes and counts (`blackhole`). Reports lines/s and MB/s of input (criterion), and
//! prints CPU seconds, lines per CPU second and heap allocations per line for one run.
//!
//! Multiline variants: the same input with `multiline.default_rule = "java"` (ordinary lines
//! under a rule) and under the list `java+python+go+nodejs` (every line asked of four rules),
//! and an input where a fifth of the lines are 20-line Java stack traces, without a rule, with
//! `java` and with the list (joining against shipping every line).
//!
//! Allocations are counted by a wrapping global allocator: benches are the one place where that
//! needs `unsafe` (GlobalAlloc is an unsafe trait); it only forwards to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use logship::agent::Agent;
use logship::config::{self, LoadOptions};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FILES: usize = 4;
const LINES_PER_FILE: usize = 250_000;
const LINE_BYTES: usize = 200;

/// A trace every this many lines: lines 10 to 29 of every hundred, so that a file ends with
/// ordinary lines (a trace at the very end would wait for its flush_timeout).
const TRACE_EVERY: usize = 100;
const TRACE_FROM: usize = 10;
const TRACE_LINES: usize = 20;

/// Writes the input once: FILES kubelet-named CRI files of 200-byte lines; with `traces`, lines
/// 10 to 29 of every hundred are a Java stack trace (a header, frames, a `Caused by:`).
fn write_input(dir: &Path, traces: bool) -> u64 {
    let mut total = 0;
    for f in 0..FILES {
        let name = format!("web-{f}_shop_nginx-{:064x}.log", f + 1);
        let mut body = Vec::with_capacity(LINES_PER_FILE * LINE_BYTES);
        for i in 0..LINES_PER_FILE {
            let at = i % TRACE_EVERY;
            let trace = traces && (TRACE_FROM..TRACE_FROM + TRACE_LINES).contains(&at);
            let message = match at.wrapping_sub(TRACE_FROM) {
                _ if !trace => format!("GET /api/v1/items/{i} 200 "),
                0 => format!("java.lang.IllegalStateException: item {i} cannot be shipped "),
                10 => "Caused by: java.sql.SQLTransientConnectionException: pool exhausted ".into(),
                n => format!("\tat com.example.shop.OrderService.step{n}(OrderService.java:{i}) "),
            };
            let head = format!("2026-11-22T10:00:00.{i:09}Z stdout F {message}");
            body.extend_from_slice(head.as_bytes());
            body.resize(body.len() + LINE_BYTES - head.len() - 1, b'x');
            body.push(b'\n');
        }
        total += body.len() as u64;
        std::fs::write(dir.join(name), body).unwrap();
    }
    total
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// One run of the whole agent over the input; returns (wall time, cpu seconds, allocations).
/// Writes FILES kubelet-named CRI files whose messages are JSON objects of 300 bytes, shaped
/// like a JSON logging library's (a level, a logger, a message, ids, a nested object).
fn write_json_input(dir: &Path) -> u64 {
    let mut total = 0;
    for f in 0..FILES {
        let name = format!("api-{f}_shop_app-{:064x}.log", f + 1);
        let mut body = Vec::with_capacity(LINES_PER_FILE * (JSON_MESSAGE_BYTES + 40));
        for i in 0..LINES_PER_FILE {
            let level = ["info", "debug", "warn", "error"][i % 4];
            let mut message = format!(
                r#"{{"ts":"2026-11-22T10:00:00.{i:09}Z","level":"{level}","logger":"com.example.api.OrderService","thread":"http-nio-8080-exec-7","msg":"GET /api/v1/items/{i} 200","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","duration_ms":12.5,"user":{{"id":{i},"role":"customer"}},"pad":""#
            );
            let pad = JSON_MESSAGE_BYTES - message.len() - 2;
            message.extend(std::iter::repeat_n('x', pad));
            message.push_str("\"}");
            assert_eq!(message.len(), JSON_MESSAGE_BYTES);
            body.extend_from_slice(
                format!("2026-11-22T10:00:00.{i:09}Z stdout F {message}\n").as_bytes(),
            );
        }
        total += body.len() as u64;
        std::fs::write(dir.join(name), body).unwrap();
    }
    total
}

/// The message bytes of the JSON variants.
const JSON_MESSAGE_BYTES: usize = 300;

fn run_once(
    runtime: &tokio::runtime::Runtime,
    logs: &Path,
    data: PathBuf,
    total_bytes: u64,
    rule: &str,
    parser: &str,
) -> (Duration, f64, u64) {
    let mut env = std::collections::HashMap::new();
    env.insert("LOGSHIP_LOG__LEVEL".to_string(), "warn".to_string());
    let options = LoadOptions {
        path: None,
        overrides: vec![
            (
                "tail.include".into(),
                serde_json::json!([format!("{}/*.log", logs.display())]),
            ),
            ("data_dir".into(), data.display().to_string().into()),
            ("output.type".into(), "blackhole".into()),
            ("server.listen".into(), "127.0.0.1:0".into()),
            ("multiline.default_rule".into(), rule.into()),
            ("processing.parser".into(), parser.into()),
        ],
        env,
    };
    let settings = config::load(&options).expect("bench config").settings;
    runtime.block_on(async move {
        let cpu0 = cpu_seconds();
        let alloc0 = ALLOCATIONS.load(Ordering::Relaxed);
        let start = Instant::now();
        let agent = Agent::start(settings).await.unwrap();
        let positions = agent.positions().clone();
        loop {
            let done: u64 = positions.snapshot().files.iter().map(|f| f.offset).sum();
            if done >= total_bytes {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let wall = start.elapsed();
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - alloc0;
        let cpu = cpu_seconds() - cpu0;
        agent.shutdown().await;
        (wall, cpu, allocs)
    })
}

fn pipeline(c: &mut Criterion) {
    let input = tempfile::tempdir().unwrap();
    let plain = input.path().join("plain");
    let traces = input.path().join("traces");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::create_dir_all(&traces).unwrap();
    let plain_bytes = write_input(&plain, false);
    let trace_bytes = write_input(&traces, true);
    let lines = (FILES * LINES_PER_FILE) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // (name, input, its size, multiline rule)
    let json = input.path().join("json");
    std::fs::create_dir_all(&json).unwrap();
    let json_bytes = write_json_input(&json);
    // (name, input, its size, multiline rule, message parser)
    let variants = [
        (
            "cri_200b_lines_to_blackhole",
            &plain,
            plain_bytes,
            "none",
            "auto",
        ),
        (
            "cri_200b_lines_multiline_java_to_blackhole",
            &plain,
            plain_bytes,
            "java",
            "auto",
        ),
        (
            "cri_200b_lines_multiline_4_rules_to_blackhole",
            &plain,
            plain_bytes,
            "java+python+go+nodejs",
            "auto",
        ),
        (
            "cri_200b_traces_to_blackhole",
            &traces,
            trace_bytes,
            "none",
            "auto",
        ),
        (
            "cri_200b_traces_multiline_java_to_blackhole",
            &traces,
            trace_bytes,
            "java",
            "auto",
        ),
        (
            "cri_200b_traces_multiline_4_rules_to_blackhole",
            &traces,
            trace_bytes,
            "java+python+go+nodejs",
            "auto",
        ),
        ("json_300b_parser_none", &json, json_bytes, "none", "none"),
        ("json_300b_parser_auto", &json, json_bytes, "none", "auto"),
    ];
    let mut run = 0;
    // One measured run each, for the figures criterion does not give.
    for (name, logs, total_bytes, rule, parser) in variants {
        run += 1;
        let data = input.path().join(format!("data-probe-{run}"));
        let (wall, cpu, allocs) = run_once(&runtime, logs, data, total_bytes, rule, parser);
        println!(
            "{name}: {lines} lines, {:.1} MB in {:.3} s wall, {:.3} s CPU: {:.0} lines/s, {:.1} MB/s, {:.0} lines per CPU second, {:.3} allocations per line",
            total_bytes as f64 / 1e6,
            wall.as_secs_f64(),
            cpu,
            lines as f64 / wall.as_secs_f64(),
            total_bytes as f64 / 1e6 / wall.as_secs_f64(),
            lines as f64 / cpu,
            allocs as f64 / lines as f64,
        );
    }

    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(lines));
    for (name, logs, total_bytes, rule, parser) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    total += run_once(
                        &runtime,
                        logs,
                        input.path().join(format!("data-{run}")),
                        total_bytes,
                        rule,
                        parser,
                    )
                    .0;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
