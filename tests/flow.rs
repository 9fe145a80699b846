//! Flow control: per-container rate limits that throttle without loss or drop exactly what
//! exceeds them, a flooding container that does not delay quiet ones, bounded memory under a
//! slow Elasticsearch, and deleted files read to their end while the agent is behind.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::agent::{append, cri, wait_until, Fixture};

const WAIT: Duration = Duration::from_secs(30);

fn lines(prefix: &str, n: usize) -> (String, Vec<String>) {
    let mut body = String::new();
    let mut msgs = Vec::new();
    for i in 0..n {
        let m = format!("{prefix}-{i}");
        body.push_str(&cri("stdout", 'F', &m));
        msgs.push(m);
    }
    (body, msgs)
}

#[test]
fn throttle_slows_the_noisy_container_loses_nothing_and_spares_the_others() {
    let fx = Fixture::new();
    let (noisy, noisy_msgs) = lines("noisy", 6000);
    append(&fx.log("noisy.log"), noisy.as_bytes());
    let started = Instant::now();
    let mut agent = fx.spawn(&[("LOGSHIP_RATE_LIMIT__DEFAULT", "2000/s")]);
    // A quiet container's line, written while the noisy one is held back, arrives promptly.
    std::thread::sleep(Duration::from_millis(500));
    append(
        &fx.log("quiet.log"),
        cri("stdout", 'F', "quiet line").as_bytes(),
    );
    let quiet_written = Instant::now();
    assert!(
        wait_until(WAIT, || fx.messages().iter().any(|m| m == "quiet line")),
        "{}",
        agent.logs()
    );
    let quiet_latency = quiet_written.elapsed();
    assert!(fx.wait_for_records(6001, WAIT), "{}", agent.logs());
    let took = started.elapsed();
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    let unique: HashSet<&String> = msgs.iter().collect();
    assert_eq!(unique.len(), msgs.len(), "nothing twice");
    assert!(
        noisy_msgs.iter().all(|m| unique.contains(m)),
        "nothing lost"
    );
    // 6000 lines at 2000/s with a 1 s burst: 2 s, less one small turn read ahead of payment.
    assert!(
        took >= Duration::from_millis(1500),
        "the limit held: {took:?}"
    );
    assert!(
        quiet_latency < Duration::from_secs(2),
        "the quiet container waited {quiet_latency:?} behind the noisy one"
    );
}

#[test]
fn drop_drops_exactly_the_excess_and_says_so() {
    let fx = Fixture::new();
    let (body, _) = lines("flood", 3000);
    append(&fx.log("flood.log"), body.as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_RATE_LIMIT__DEFAULT", "100/s"),
        ("LOGSHIP_RATE_LIMIT__ACTION", "drop"),
        ("LOGSHIP_RATE_LIMIT__SUMMARY_INTERVAL", "500ms"),
    ]);
    let summary = |msgs: &[String]| {
        msgs.iter()
            .find(|m| m.starts_with("logship dropped"))
            .cloned()
    };
    assert!(
        wait_until(WAIT, || summary(&fx.messages()).is_some()),
        "{}",
        agent.logs()
    );
    // Everything read is acknowledged: the position is at the end even though lines were dropped.
    let size = std::fs::metadata(fx.log("flood.log")).unwrap().len();
    assert!(wait_until(WAIT, || fx.positions()["files"][0]["offset"] == size));
    let addr = agent.server_addr();
    let metrics = support::agent::http_get(addr, "/metrics").2;
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    let kept = msgs.iter().filter(|m| m.starts_with("flood-")).count();
    let text = summary(&msgs).unwrap();
    let dropped: usize = text
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(kept + dropped, 3000, "{text}");
    assert!(
        (100..400).contains(&kept),
        "about the burst of 100 passed: {kept}"
    );
    assert!(
        text.contains("flood.log") && text.contains("100/s"),
        "{text}"
    );
    let counted: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logship_dropped_records_total{reason=\"rate_limit\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(counted, dropped);
}

/// Peak resident memory of a process in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_slow_elasticsearch_and_a_large_backlog_keep_memory_within_the_budget() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.set_delay(Duration::from_millis(300));
    let fx = Fixture::new();
    // 4 files of 40 MB: five times the memory budget.
    let line = "x".repeat(150);
    for f in 0..4 {
        let mut body = String::with_capacity(40 << 20);
        for i in 0..200_000 {
            body.push_str(&cri("stdout", 'F', &format!("{f}-{i} {line}")));
        }
        append(&fx.log(&format!("backlog-{f}.log")), body.as_bytes());
    }
    let url = es.url();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
    ]);
    // Long enough for the buffer to fill and stay full while Elasticsearch crawls.
    assert!(
        wait_until(WAIT, || es.doc_count() > 100_000),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let peak = peak_rss_kib(agent.child.id());
    println!(
        "peak RSS with a 32 MiB budget and a slow Elasticsearch: {} MiB",
        peak / 1024
    );
    assert!(agent.terminate().success());
    assert!(
        peak < 64 * 1024,
        "peak RSS {} MiB: the 32 MiB budget plus a fixed overhead must stay under 64 MiB",
        peak / 1024
    );
}
