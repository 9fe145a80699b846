//! The journal as a source, end to end: real journal files (written by systemd's
//! `systemd-journal-remote`, as in the tests) -> the real `logship` binary with
//! `journald.enabled` -> the `blackhole` output. Not a criterion bench: one run reads half a
//! million entries, and the figures wanted are per process.
//!
//! Prints, per run: entries/s (from the start to the last record acknowledged), the agent's CPU
//! seconds per million entries (/proc/<pid>/stat) and its peak RSS (VmHWM).
//!
//! The entries look like a node's: 12 fields each (the trusted ones journald adds, a unit of 8,
//! a priority, a pid), messages of 60-300 bytes, one in 50 over 512 bytes (journald compresses
//! those with zstd), one in 100 a kernel message. Scenarios: `all` (every entry) and `units`
//! (`journald.units` selects two of the eight units: the rest is read and skipped).
//!
//! `cargo bench --bench journald [-- NAME]`; LOGSHIP_BENCH_JOURNAL_ENTRIES sizes the input
//! (default 500,000).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

/// The command line and the process figures, shared with the other end-to-end bench.
#[path = "shared/process.rs"]
mod process;
use process::usage;

use support::journal::{write_journal, ExportEntry};

const RUNS: usize = 3;
const UNITS: [&str; 8] = [
    "kubelet",
    "containerd",
    "sshd",
    "cron",
    "systemd-networkd",
    "chronyd",
    "dbus",
    "nginx",
];

/// A deterministic generator (xorshift), so every run reads the same journal.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn entry(i: u64, rng: &mut Rng) -> ExportEntry {
    const WORDS: [&str; 12] = [
        "Started",
        "pod",
        "volume",
        "mounted",
        "sync",
        "failed",
        "retrying",
        "connection",
        "established",
        "session",
        "opened",
        "for user",
    ];
    let unit = UNITS[(rng.next() % UNITS.len() as u64) as usize];
    let long = rng.next().is_multiple_of(50);
    let words = if long { 120 } else { 8 + rng.next() % 40 };
    let mut message = format!("{unit}[{i}]:");
    for _ in 0..words {
        message.push(' ');
        message.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
    }
    let e = ExportEntry::new(1_795_341_600_000_000 + i * 100, 1_000_000 + i * 100)
        .field("MESSAGE", message)
        .field("PRIORITY", format!("{}", 3 + rng.next() % 5))
        .field("_HOSTNAME", "bench-node")
        .field("_MACHINE_ID", "4b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d");
    if rng.next().is_multiple_of(100) {
        return e
            .field("_TRANSPORT", "kernel")
            .field("SYSLOG_IDENTIFIER", "kernel");
    }
    e.field("_TRANSPORT", "journal")
        .field("_SYSTEMD_UNIT", format!("{unit}.service"))
        .field("_SYSTEMD_SLICE", "system.slice")
        .field("_PID", format!("{}", 1000 + unit.len()))
        .field("_UID", "0")
        .field("_GID", "0")
        .field("_COMM", unit)
        .field("SYSLOG_IDENTIFIER", unit)
}

fn write_input(dir: &Path, n: u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let file = dir.join("4b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d/system.journal");
    let chunk = 50_000;
    let mut at = 0;
    while at < n {
        let end = (at + chunk).min(n);
        let entries: Vec<ExportEntry> = (at..end).map(|i| entry(i, &mut rng)).collect();
        write_journal(&file, &entries);
        at = end;
    }
}

/// A counter of the agent's /metrics, 0 while it is not there.
fn metric(addr: &str, name: &str) -> f64 {
    let text = support::agent::http_get(addr.parse().expect("address"), "/metrics").2;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn spawn(bin: &Path, dir: &Path, journal: &Path, units: &str) -> (Child, String) {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let err = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(bin)
        .arg("run")
        .env("LOGSHIP_DATA_DIR", &data)
        .env("LOGSHIP_NODE_NAME", "bench-node")
        .env(
            "LOGSHIP_TAIL__INCLUDE",
            format!("[\"{}/*.log\"]", logs.display()),
        )
        .env("LOGSHIP_KUBERNETES__ENABLED", "false")
        .env("LOGSHIP_OUTPUT__TYPE", "blackhole")
        .env("LOGSHIP_SERVER__LISTEN", "127.0.0.1:0")
        .env("LOGSHIP_JOURNALD__ENABLED", "true")
        .env("LOGSHIP_JOURNALD__DIRECTORY", journal)
        .env("LOGSHIP_JOURNALD__UNITS", units)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn logship");
    let log = dir.join("agent.log");
    let start = Instant::now();
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter(|l| l.contains("Serving /metrics"))
            .find_map(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
        {
            break addr.trim_matches('"').to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (child, addr)
}

fn main() {
    let Some(args) = process::scenario_args() else {
        return;
    };
    let n: u64 = std::env::var("LOGSHIP_BENCH_JOURNAL_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let bin = Path::new(env!("CARGO_BIN_EXE_logship"));
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let written = Instant::now();
    write_input(&journal, n);
    let bytes: u64 = walk_size(&journal);
    println!(
        "input: {n} entries, {:.0} MB of journal files, written in {:.1} s",
        bytes as f64 / 1e6,
        written.elapsed().as_secs_f64()
    );
    let scenarios: [(&str, &str); 2] = [("all", "[]"), ("units", "[\"kubelet\", \"containerd\"]")];
    for (name, units) in scenarios {
        if !args.is_empty() && !args.iter().any(|a| name.contains(a.as_str())) {
            continue;
        }
        for run in 1..=RUNS {
            let (mut child, addr) = spawn(bin, dir.path(), &journal, units);
            let start = Instant::now();
            let mut last = (0.0, 0);
            loop {
                if let Some(u) = usage(child.id()) {
                    last = u;
                }
                let read = metric(&addr, "logship_journald_entries_read_total");
                let skipped = metric(&addr, "logship_journald_entries_skipped_total");
                let sent = metric(&addr, "logship_sent_records_total");
                if read as u64 >= n && (sent + skipped) as u64 >= n {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(600),
                    "stalled: read {read}, sent {sent}, skipped {skipped}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let took = start.elapsed().as_secs_f64();
            let sent = metric(&addr, "logship_sent_records_total");
            if let Some(u) = usage(child.id()) {
                last = u;
            }
            let _ = child.kill();
            let _ = child.wait();
            println!(
                "{name} run {run}: {:.0} entries/s ({sent} records), {:.2} CPU-s per million entries, peak RSS {:.1} MiB",
                n as f64 / took,
                last.0 / (n as f64 / 1e6),
                last.1 as f64 / 1024.0
            );
        }
    }
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
