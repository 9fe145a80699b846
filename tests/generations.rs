//! Agent downtime against kubelet rotation: the generations the kubelet rotated (and gzipped)
//! while the agent was stopped are read after the restart, oldest first, each line exactly once
//! in the test Elasticsearch, through crashes and damaged files.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agent::{
    append, cri, http_get, kubelet_compress, kubelet_rotate, wait_until, AgentProcess, Fixture,
};
use support::elasticsearch::{Flavor, TestEs};

const WAIT: Duration = Duration::from_secs(60);
const INDEX: &str = "logs-logship-default";
const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn spawn(fx: &Fixture, es: &TestEs, extra: &[(&str, &str)]) -> AgentProcess {
    let url = es.url();
    let mut env = vec![
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__TIMEOUT", "50ms"),
        (
            "LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__INITIAL_BACKOFF",
            "10ms",
        ),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__MAX_BACKOFF", "300ms"),
    ];
    env.extend_from_slice(extra);
    fx.spawn(&env)
}

/// kubelet's layout: `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`, followed through the
/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log` symlink. Returns the real file.
fn kubelet_container(fx: &Fixture) -> PathBuf {
    kubelet_pod(fx, "web-7d4b9")
}

fn kubelet_pod(fx: &Fixture, pod: &str) -> PathBuf {
    let dir = fx.dir.path().join(format!(
        "pods/shop_{pod}_6a1f0c3e-1111-2222-3333-444455556666/nginx"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::File::create(&live).unwrap();
    std::os::unix::fs::symlink(
        &live,
        fx.log(&format!("{pod}_shop_nginx-{CONTAINER_ID}.log")),
    )
    .unwrap();
    live
}

/// Writes `n` CRI lines `<prefix>-<i>` to `path`.
fn write_lines(path: &Path, prefix: &str, n: usize) -> Vec<String> {
    let mut body = String::new();
    let mut written = Vec::new();
    for i in 0..n {
        let m = format!("{prefix}-{i}");
        body.push_str(&cri("stdout", 'F', &m));
        written.push(m);
    }
    append(path, body.as_bytes());
    written
}

fn stored(es: &TestEs) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for doc in es.documents(INDEX).values() {
        let m = doc["message"].as_str().unwrap_or_default().to_string();
        *counts.entry(m).or_insert(0) += 1;
    }
    counts
}

fn assert_each_once(es: &TestEs, expected: &[String]) {
    let counts = stored(es);
    let missing: Vec<_> = expected
        .iter()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines never arrived, first: {:?}",
        missing.len(),
        expected.len(),
        missing.first()
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
    assert_eq!(counts.len(), expected.len(), "unexpected documents");
}

/// The value of a counter on the agent's /metrics, 0 if absent.
fn counter(agent: &AgentProcess, series: &str) -> f64 {
    let (_, _, body) = http_get(agent.server_addr(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The case: the agent is stopped (SIGTERM), the container writes on and the kubelet
/// rotates several times, gzipping every rotated file but the newest. After the restart every
/// line is in Elasticsearch exactly once; a further restart reads no generation again.
#[test]
fn generations_rotated_and_gzipped_during_downtime_arrive_exactly_once() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let live = kubelet_container(&fx);
    let mut agent = spawn(&fx, &es, &[]);
    let mut expected = write_lines(&live, "before", 100);
    assert!(es.wait_for_doc_count(100, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success(), "{}", agent.logs());

    // Downtime: three rotations; the kubelet keeps the newest rotated file plain.
    expected.extend(write_lines(&live, "down1", 300));
    let first = kubelet_rotate(&live, "20261122-100001");
    expected.extend(write_lines(&live, "down2", 300));
    let second = kubelet_rotate(&live, "20261122-100002");
    kubelet_compress(&first);
    expected.extend(write_lines(&live, "down3", 300));
    let _third = kubelet_rotate(&live, "20261122-100003");
    kubelet_compress(&second);
    expected.extend(write_lines(&live, "live", 50));

    // One request at a time: the order documents are written in is the order they were read.
    let mut agent = spawn(
        &fx,
        &es,
        &[("LOGSHIP_OUTPUT__ELASTICSEARCH__MAX_IN_FLIGHT", "1")],
    );
    let done = es.wait_for_doc_count(expected.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{}", agent.logs());
    assert_eq!(
        counter(&agent, "logship_generations_recovered_total"),
        3.0,
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success(), "{}", agent.logs());
    assert_each_once(&es, &expected);
    // Oldest first, and the live file's new lines after every generation's.
    let arrival: Vec<String> = es
        .documents_in_order(INDEX)
        .iter()
        .map(|d| d["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let index_of = |m: &str| arrival.iter().position(|a| a == m).unwrap();
    assert!(index_of("down1-299") < index_of("down2-0"));
    assert!(index_of("down2-299") < index_of("down3-0"));
    assert!(
        index_of("down3-299") < index_of("live-0"),
        "live lines wait"
    );

    // Everything is shipped: a restart reads no generation again and sends nothing.
    let requests = es.bulk_requests().len();
    let mut agent = spawn(&fx, &es, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        counter(&agent, "logship_generations_recovered_total"),
        0.0,
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    assert_eq!(es.bulk_requests().len(), requests, "nothing sent again");
    assert_each_once(&es, &expected);
}

/// kill -9 while a large gzipped generation is being read: the restart resumes it from its
/// stored (decompressed) offset under the same document ids. Nothing lost, nothing doubled.
#[test]
fn kill_9_while_reading_a_gzipped_generation_loses_and_doubles_nothing() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let live = kubelet_container(&fx);
    let mut agent = spawn(&fx, &es, &[]);
    let mut expected = write_lines(&live, "before", 10);
    assert!(es.wait_for_doc_count(10, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());

    expected.extend(write_lines(&live, "big", 20_000));
    let rotated = kubelet_rotate(&live, "20261122-100001");
    expected.extend(write_lines(&live, "next", 100));
    let newest = kubelet_rotate(&live, "20261122-100002");
    kubelet_compress(&rotated);
    let _ = newest;
    expected.extend(write_lines(&live, "live", 10));

    // Slow answers keep requests in flight when the agent is killed.
    es.set_delay(Duration::from_millis(50));
    // A small budget keeps the reader close behind delivery: the crash comes while the gzipped
    // generation is read and the next one waits its turn.
    let mut agent = spawn(
        &fx,
        &es,
        &[
            ("LOGSHIP_POSITIONS__FLUSH_INTERVAL", "200ms"),
            ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__MAX_EVENTS", "500"),
            ("LOGSHIP_TAIL__MAX_LINE_BYTES", "1KiB"),
            ("LOGSHIP_TAIL__READ_BUDGET", "4KiB"),
            ("LOGSHIP_BUFFER__MAX_BYTES", "64KiB"),
        ],
    );
    assert!(
        wait_until(WAIT, || es.doc_count() >= 3000),
        "{}",
        agent.logs()
    );
    agent.kill9();
    assert_eq!(
        agent.logs().matches("Reading a rotated generation").count(),
        1,
        "the crash came while the next generation waited:\n{}",
        agent.logs()
    );
    assert!(
        es.doc_count() < expected.len(),
        "killed before the generation was read"
    );
    es.set_delay(Duration::ZERO);
    let mut agent = spawn(&fx, &es, &[]);
    let done = es.wait_for_doc_count(expected.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_each_once(&es, &expected);
    assert!(
        es.item_status_counts().get(&409).copied().unwrap_or(0) > 0,
        "records of the gzipped generation in flight at the crash were sent again and answered \
         409: {:?}",
        es.item_status_counts()
    );
}

/// A truncated .gz (a disk that filled up while the kubelet compressed): counted, warned about,
/// what precedes the damage shipped, and the generations after it and the live file all the same.
#[test]
fn a_truncated_gzipped_generation_is_counted_and_its_readable_part_shipped() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let live = kubelet_container(&fx);
    let mut agent = spawn(&fx, &es, &[]);
    let mut expected = write_lines(&live, "before", 10);
    assert!(es.wait_for_doc_count(10, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());

    let damaged_lines = write_lines(&live, "damaged", 20_000);
    let rotated = kubelet_rotate(&live, "20261122-100001");
    expected.extend(write_lines(&live, "next", 100));
    kubelet_rotate(&live, "20261122-100002");
    kubelet_compress(&rotated);
    let gz = PathBuf::from(format!("{}.gz", rotated.display()));
    let len = std::fs::metadata(&gz).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&gz)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expected.extend(write_lines(&live, "live", 10));

    let mut agent = spawn(&fx, &es, &[]);
    assert!(
        wait_until(WAIT, || {
            let s = stored(&es);
            expected.iter().all(|m| s.contains_key(m))
        }),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counter(&agent, "logship_gzip_damaged_files_total"),
        1.0,
        "{}",
        agent.logs()
    );
    assert!(agent.logs().contains("is damaged"), "{}", agent.logs());
    assert!(agent.terminate().success());
    let counts = stored(&es);
    // What precedes the damage: a prefix of the generation's lines (the last one may be cut).
    let shipped = damaged_lines
        .iter()
        .take_while(|m| counts.contains_key(*m))
        .count();
    assert!(
        shipped > damaged_lines.len() / 4,
        "only {shipped} lines read before the damage"
    );
    assert!(shipped < damaged_lines.len(), "the damage cost lines");
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    for m in &expected {
        assert_eq!(counts.get(m), Some(&1), "{m}");
    }
}

/// A container that started, wrote and was rotated while the agent was stopped: nothing of it is
/// known, but its generations were written after the positions were, so they are read too.
#[test]
fn a_container_that_started_and_rotated_during_downtime_arrives_whole() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let old = kubelet_pod(&fx, "old-1");
    let mut agent = spawn(&fx, &es, &[]);
    let mut expected = write_lines(&old, "old", 10);
    assert!(es.wait_for_doc_count(10, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());

    std::thread::sleep(Duration::from_millis(1100));
    let live = kubelet_pod(&fx, "new-1");
    expected.extend(write_lines(&live, "new-a", 300));
    let first = kubelet_rotate(&live, "20261122-100001");
    expected.extend(write_lines(&live, "new-b", 300));
    kubelet_rotate(&live, "20261122-100002");
    kubelet_compress(&first);
    expected.extend(write_lines(&live, "new-c", 10));

    let mut agent = spawn(&fx, &es, &[]);
    let done = es.wait_for_doc_count(expected.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_each_once(&es, &expected);
}

/// Lines the agent had not shipped when it stopped, in a generation the kubelet deleted before
/// the restart, are lost: logged and counted with their size, not silently.
#[test]
fn a_generation_deleted_unread_during_downtime_is_counted_as_lost() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let live = kubelet_container(&fx);
    es.down();
    let mut agent = spawn(&fx, &es, &[("LOGSHIP_SHUTDOWN_TIMEOUT", "1s")]);
    let unread = write_lines(&live, "unread", 200);
    let size = std::fs::metadata(&live).unwrap().len();
    // Read, not delivered: the positions say offset 0 of `size` bytes.
    assert!(
        wait_until(WAIT, || {
            std::thread::sleep(Duration::from_millis(1500));
            fx.positions()["files"][0]["size"] == size
        }),
        "{}",
        agent.logs()
    );
    agent.terminate();
    let first = kubelet_rotate(&live, "20261122-100001");
    let mut expected = write_lines(&live, "kept", 100);
    kubelet_rotate(&live, "20261122-100002");
    std::fs::remove_file(&first).unwrap();
    expected.extend(write_lines(&live, "live", 10));

    es.up();
    let mut agent = spawn(&fx, &es, &[]);
    let done = es.wait_for_doc_count(expected.len(), WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{}", agent.logs());
    assert_eq!(
        counter(
            &agent,
            "logship_lost_bytes_total{reason=\"rotated_unread\"}"
        ),
        size as f64,
        "{}",
        agent.logs()
    );
    assert!(agent.logs().contains("Data loss"), "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_each_once(&es, &expected);
    assert!(!stored(&es).contains_key(&unread[0]));
}

/// The measurement, at its scale: ten containers write 200 lines/s each (~40 KB/s), the kubelet
/// rotates every 256 KiB and gzips all but the newest rotated file, the agent is stopped
/// (SIGTERM) for 25 s in the middle. Every line arrives exactly once. About a minute: run with
/// `cargo test --test generations -- --ignored`.
#[test]
#[ignore]
fn ten_containers_through_25_seconds_of_downtime() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let lives: Vec<PathBuf> = (0..10)
        .map(|c| kubelet_pod(&fx, &format!("web-{c}")))
        .collect();
    let mut agent = spawn(&fx, &es, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = lives
        .iter()
        .enumerate()
        .map(|(c, live)| {
            let live = live.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut written = Vec::new();
                let mut previous: Option<PathBuf> = None;
                let mut rotation = 0;
                let mut tick = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Lines of about 200 bytes: a rotation every 6 s or so, four or five
                    // during the downtime, so most generations are gzipped by the restart.
                    let prefix = format!("c{c}-t{tick}-{}", "x".repeat(150));
                    written.extend(write_lines(&live, &prefix, 20));
                    tick += 1;
                    if std::fs::metadata(&live).unwrap().len() >= 256 * 1024 {
                        rotation += 1;
                        let rotated = kubelet_rotate(&live, &format!("20261122-10{rotation:04}"));
                        if let Some(old) = previous.replace(rotated) {
                            kubelet_compress(&old);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                written
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.terminate().success(), "{}", agent.logs());
    std::thread::sleep(Duration::from_secs(25));
    let mut agent = spawn(&fx, &es, &[]);
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let expected: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let done = es.wait_for_doc_count(expected.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let counts = stored(&es);
    let lost = expected.iter().filter(|m| !counts.contains_key(*m)).count();
    let doubled: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "lines written {}, lost {lost}, duplicated {doubled}, generations recovered {}",
        expected.len(),
        counter(&agent, "logship_generations_recovered_total")
    );
    assert!(done, "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_each_once(&es, &expected);
}

/// A stored position taken while the file was empty (its fingerprint covers no byte) does not
/// make the file now at that inode a known one: a generation rotated while the agent was stopped
/// is still read. (The kubelet's new `0.log` can get the inode of a generation it deleted, and an
/// empty fingerprint matches any content.)
#[test]
fn an_empty_files_stored_position_does_not_hide_a_generation_rotated_during_downtime() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let live = kubelet_container(&fx);
    let mut agent = spawn(&fx, &es, &[("LOGSHIP_TAIL__READ_FROM", "tail")]);
    // The positions file holds the live file, empty.
    assert!(
        wait_until(WAIT, || fx.positions_now()["files"][0]["offset"] == 0),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    // While stopped: a generation with lines appears next to the live file, which stays as it
    // was (same inode, still empty).
    let rotated = live.with_file_name("0.log.20261122-100011");
    let lines = write_lines(&rotated, "rotated", 40);
    let mut agent = spawn(&fx, &es, &[("LOGSHIP_TAIL__READ_FROM", "tail")]);
    assert!(es.wait_for_doc_count(40, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    assert_each_once(&es, &lines);
}
