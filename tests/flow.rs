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
    assert!(wait_until(WAIT, || fx.positions_now()["files"][0]
        ["offset"]
        == size));
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
    // Long enough for the buffer to fill and stay full while Elasticsearch crawls; the memory
    // the agent holds for records (`logship_buffer_used_bytes`) is sampled all along.
    let addr = agent.server_addr();
    let mut most_used = 0.0f64;
    let mut capacity = 0.0f64;
    assert!(
        wait_until(WAIT * 4, || {
            let text = support::agent::http_get(addr, "/metrics").2;
            most_used = most_used.max(metric(&text, "logship_buffer_used_bytes"));
            capacity = metric(&text, "logship_buffer_capacity_bytes");
            es.doc_count() > 100_000
        }),
        "{}",
        agent.logs()
    );
    let text = support::agent::http_get(addr, "/metrics").2;
    let waited = metric(&text, "logship_reader_wait_seconds_total");
    // The raw figure, for a person: the release build's is measured in benches/elasticsearch.rs.
    println!(
        "peak RSS (debug build) with the default 12 MiB budget and a slow Elasticsearch: {} MiB; most buffer used {:.1} MiB",
        peak_rss_kib(agent.child.id()) / 1024,
        most_used / f64::from(1 << 20)
    );
    assert!(agent.terminate().success());
    assert_eq!(capacity, f64::from(12 << 20));
    // Records wait in their files, not in memory: the reader waited for room, and what the
    // agent held never went past the budget and the request bodies being sent (charged on top
    // of it, at most a few bodies of `batch.max_bytes`).
    assert!(waited > 1.0, "the reader never waited: {waited} s");
    assert!(
        most_used <= 2.0 * capacity,
        "{most_used} bytes held, budget {capacity}"
    );
}

/// The value of one sample on `/metrics`, by its exact name and labels.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

/// `n` CRI lines of one length each: `<prefix>-<zero-padded number> <filler>`.
fn fixed_lines(prefix: &str, n: usize) -> (String, usize) {
    let filler = "y".repeat(60);
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&cri("stdout", 'F', &format!("{prefix}-{i:06} {filler}")));
    }
    let line = body.len() / n;
    (body, line)
}

/// A small buffer, so that an unreachable Elasticsearch stops the reader early in a file.
const SMALL_BUFFER: [(&str, &str); 4] = [
    ("LOGSHIP_TAIL__READ_BUDGET", "16KiB"),
    ("LOGSHIP_TAIL__MAX_LINE_BYTES", "16KiB"),
    ("LOGSHIP_BUFFER__MAX_BYTES", "128KiB"),
    ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
];

/// The numbers of the documents of `prefix` in Elasticsearch.
fn delivered(es: &support::elasticsearch::TestEs, prefix: &str) -> Vec<usize> {
    let mut seen: Vec<usize> = es
        .documents("logs-logship-default")
        .values()
        .filter_map(|d| d["message"].as_str())
        .filter_map(|m| m.strip_prefix(prefix)?.strip_prefix('-'))
        .filter_map(|m| m.get(..6)?.parse().ok())
        .collect();
    seen.sort_unstable();
    seen
}

#[test]
fn deleted_files_are_read_to_their_end_after_an_outage() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.down();
    let fx = Fixture::new();
    let (body, _) = fixed_lines("gone", 20_000);
    let path = fx.log("gone.log");
    append(&path, body.as_bytes());
    let url = es.url();
    let mut env = SMALL_BUFFER.to_vec();
    env.push(("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()));
    let mut agent = fx.spawn(&env);
    std::thread::sleep(Duration::from_secs(1));
    // The kubelet removes the file while the agent is far behind: only the agent holds it now.
    std::fs::remove_file(&path).unwrap();
    let addr = agent.server_addr();
    assert!(
        wait_until(WAIT, || {
            metric(
                &support::agent::http_get(addr, "/metrics").2,
                "logship_deleted_files_open",
            ) == 1.0
        }),
        "{}",
        agent.logs()
    );
    let behind = metric(
        &support::agent::http_get(addr, "/metrics").2,
        "logship_bytes_behind",
    );
    assert!(behind > 1_000_000.0, "most of the file is behind: {behind}");
    es.up();
    assert!(
        es.wait_for_doc_count(20_000, WAIT),
        "{} documents\n{}\n{}",
        es.doc_count(),
        support::agent::http_get(addr, "/metrics").2,
        agent.logs()
    );
    let metrics = support::agent::http_get(addr, "/metrics").2;
    assert!(agent.terminate().success());
    assert_eq!(delivered(&es, "gone"), (0..20_000).collect::<Vec<_>>());
    assert_eq!(
        metric(
            &metrics,
            "logship_lost_bytes_total{reason=\"deleted_unread\"}"
        ),
        0.0
    );
    assert!(metric(&metrics, "logship_reader_wait_seconds_total") > 0.5);
}

#[test]
fn past_the_deleted_files_limit_the_first_deleted_is_let_go_and_its_loss_counted() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.down();
    let fx = Fixture::new();
    let (first, line) = fixed_lines("first", 20_000);
    let (second, _) = fixed_lines("second", 20_000);
    append(&fx.log("first.log"), first.as_bytes());
    append(&fx.log("second.log"), second.as_bytes());
    let url = es.url();
    let mut env = SMALL_BUFFER.to_vec();
    env.push(("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()));
    env.push(("LOGSHIP_TAIL__MAX_DELETED_FILES", "1"));
    let mut agent = fx.spawn(&env);
    std::thread::sleep(Duration::from_secs(1));
    let addr = agent.server_addr();
    let deleted_open = || {
        metric(
            &support::agent::http_get(addr, "/metrics").2,
            "logship_deleted_files_open",
        )
    };
    std::fs::remove_file(fx.log("first.log")).unwrap();
    // The agent saw the first deletion before the second happens: the order is the agent's.
    assert!(
        wait_until(WAIT, || deleted_open() >= 1.0),
        "{}",
        agent.logs()
    );
    std::fs::remove_file(fx.log("second.log")).unwrap();
    let lost_series = "logship_lost_bytes_total{reason=\"deleted_unread\"}";
    assert!(
        wait_until(WAIT, || {
            metric(&support::agent::http_get(addr, "/metrics").2, lost_series) > 0.0
        }),
        "{}",
        agent.logs()
    );
    assert!(agent
        .logs()
        .contains("Data loss: letting go of a deleted log file"));
    es.up();
    assert!(es.wait_for_doc_count(20_000, WAIT), "{}", agent.logs());
    // What was read of the first file before it was let go is delivered too.
    std::thread::sleep(Duration::from_secs(2));
    let lost = metric(&support::agent::http_get(addr, "/metrics").2, lost_series) as usize;
    assert!(agent.terminate().success());
    assert_eq!(delivered(&es, "second"), (0..20_000).collect::<Vec<_>>());
    let kept = delivered(&es, "first");
    assert!(kept.len() < 20_000, "the first file was let go unread");
    assert_eq!(
        kept,
        (0..kept.len()).collect::<Vec<_>>(),
        "a prefix, nothing twice"
    );
    // The loss counted is exactly what was not delivered.
    assert_eq!(lost, first.len() - kept.len() * line);
}

#[test]
fn a_429_storm_halves_the_requests_at_once_then_they_recover() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let (body, _) = fixed_lines("storm", 6000);
    append(&fx.log("storm.log"), body.as_bytes());
    es.fail_for(Duration::from_secs(3), 429);
    let url = es.url();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__MAX_EVENTS", "50"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__MAX_BACKOFF", "300ms"),
    ]);
    let addr = agent.server_addr();
    let concurrency = || {
        metric(
            &support::agent::http_get(addr, "/metrics").2,
            "logship_elasticsearch_concurrency",
        )
    };
    assert!(wait_until(WAIT, || concurrency() < 4.0), "{}", agent.logs());
    assert!(es.wait_for_doc_count(6000, WAIT), "{}", agent.logs());
    // More records, answered without 429: one more request at once per round.
    let (more, _) = fixed_lines("after", 6000);
    append(&fx.log("storm.log"), more.as_bytes());
    assert!(
        wait_until(WAIT, || concurrency() == 4.0),
        "{}",
        agent.logs()
    );
    let metrics = support::agent::http_get(addr, "/metrics").2;
    assert!(es.wait_for_doc_count(12_000, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    assert!(
        metric(
            &metrics,
            "logship_elasticsearch_concurrency_decreases_total"
        ) >= 1.0
    );
    assert_eq!(delivered(&es, "storm").len(), 6000);
}

#[test]
fn the_global_send_limit_paces_bulk_requests() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let (body, _) = fixed_lines("paced", 2000);
    append(&fx.log("paced.log"), body.as_bytes());
    let url = es.url();
    let started = Instant::now();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__MAX_EVENTS", "100"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__RATE_LIMIT", "4/s"),
    ]);
    assert!(es.wait_for_doc_count(2000, WAIT), "{}", agent.logs());
    let took = started.elapsed();
    let metrics = support::agent::http_get(agent.server_addr(), "/metrics").2;
    assert!(agent.terminate().success());
    let requests = es.bulk_requests().len();
    assert!(requests >= 20, "{requests} requests");
    // A burst of 4, then 4 per second: at least (requests - 4) / 4 seconds.
    let least = Duration::from_secs_f64((requests - 4) as f64 / 4.0 * 0.9);
    assert!(took >= least, "{requests} requests in {took:?}");
    assert!(
        metric(
            &metrics,
            "logship_elasticsearch_send_limit_wait_seconds_total"
        ) > 1.0
    );
}

/// The tailer's heartbeat age on `/metrics`, in seconds.
fn tailer_heartbeat_age(addr: std::net::SocketAddr) -> f64 {
    metric(
        &support::agent::http_get(addr, "/metrics").2,
        "logship_heartbeat_age_seconds{loop=\"tailer\"}",
    )
}

/// An Elasticsearch outage with many files writing a line now and then: far more small batches
/// than the batch channel holds. The reader waits on the memory budget, which every batch is
/// charged against, so it keeps turning (a liveness probe would otherwise restart it for as long
/// as the outage lasts), and once Elasticsearch is back every line arrives exactly once.
///
/// `TEST_OUTAGE_FILES` and `TEST_OUTAGE_SECS` (default 300 files, 6 s: 1,800 batches) size
/// it; `TEST_OUTAGE_FILES=400 TEST_OUTAGE_SECS=90` is a 90 s outage with 400 containers
/// writing a line a second each.
#[test]
fn many_small_batches_in_an_outage_keep_the_reader_turning() {
    use support::elasticsearch::{Flavor, TestEs};
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let files = setting("TEST_OUTAGE_FILES", 300);
    let secs = setting("TEST_OUTAGE_SECS", 6);
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.fail_until_cleared(503);
    let fx = Fixture::new();
    let url = es.url();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__MAX_BACKOFF", "500ms"),
        // Small requests, so that the requests waiting to be retried hold few of the batches.
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__MAX_EVENTS", "20"),
    ]);
    let addr = agent.server_addr();
    // Every second gives every file one line, read in a turn (a batch) of its own.
    let (mut oldest_beat, mut probes, mut failed) = (0.0f64, 0, 0);
    let started = Instant::now();
    for second in 0..secs {
        for f in 0..files {
            let line = cri("stdout", 'F', &format!("small-{f:03}-{second}"));
            append(&fx.log(&format!("small-{f:03}.log")), line.as_bytes());
        }
        let next = started + Duration::from_secs(second as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        oldest_beat = oldest_beat.max(tailer_heartbeat_age(addr));
        probes += 1;
        if support::agent::http_get(addr, "/healthz").0 != 200 {
            failed += 1;
        }
    }
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        oldest_beat = oldest_beat.max(tailer_heartbeat_age(addr));
    }
    println!(
        "{files} files, {secs} s outage: /healthz failed {failed} of {probes} probes; the reader's heartbeat was at most {oldest_beat:.2} s old"
    );
    assert_eq!(es.doc_count(), 0, "Elasticsearch is answering 503");
    assert!(
        oldest_beat < 3.0,
        "the reader stopped turning during the outage: its heartbeat was {oldest_beat} s old\n{}",
        agent.logs()
    );
    assert_eq!(failed, 0, "/healthz failed during the outage");
    es.clear_request_faults();
    let total = files * secs;
    assert!(
        es.wait_for_doc_count(total, WAIT * 2),
        "{} of {total} documents\n{}",
        es.doc_count(),
        agent.logs()
    );
    assert!(agent.terminate().success());
    let messages: Vec<String> = es
        .documents("logs-logship-default")
        .values()
        .filter_map(|d| d["message"].as_str().map(str::to_owned))
        .collect();
    let unique: HashSet<&String> = messages.iter().collect();
    assert_eq!(unique.len(), total, "each line exactly once");
    assert_eq!(messages.len(), total, "each line exactly once");
}

/// While the reader waits for room (Elasticsearch is away and the buffer is full), new files are
/// still found and opened: a file created then rotated away before the outage ends is read to its
/// end from the descriptor held since it appeared.
#[test]
fn a_file_created_while_the_reader_waits_is_opened_and_nothing_is_lost() {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.down();
    let fx = Fixture::new();
    let (body, _) = fixed_lines("backlog", 20_000);
    append(&fx.log("backlog.log"), body.as_bytes());
    let url = es.url();
    let mut env = SMALL_BUFFER.to_vec();
    env.push(("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()));
    let mut agent = fx.spawn(&env);
    // The buffer is full and the reader waits for room.
    std::thread::sleep(Duration::from_millis(1500));
    let (late, _) = fixed_lines("late", 500);
    let path = fx.log("late.log");
    append(&path, late.as_bytes());
    // Found within a second of its creation, whatever Elasticsearch is doing...
    assert!(
        wait_until(Duration::from_secs(3), || agent.logs().contains("late.log")),
        "the new file was not opened while the reader waited\n{}",
        agent.logs()
    );
    // ...so a rotation (a name no pattern matches) does not lose it.
    std::fs::rename(&path, fx.log("late.log.1")).unwrap();
    es.up();
    assert!(
        es.wait_for_doc_count(20_500, WAIT * 2),
        "{} documents\n{}",
        es.doc_count(),
        agent.logs()
    );
    assert!(agent.terminate().success());
    assert_eq!(delivered(&es, "late"), (0..500).collect::<Vec<_>>());
    assert_eq!(delivered(&es, "backlog"), (0..20_000).collect::<Vec<_>>());
}
