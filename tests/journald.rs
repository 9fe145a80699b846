//! The systemd journal as a source, with the real binary and real journal files (written by
//! systemd's own `systemd-journal-remote`, see tests/support/journal.rs): every field of an
//! entry in its document, unit selection, restarts (SIGTERM and kill -9) that lose and repeat
//! nothing, a second file appearing, journald's rotation, a file vacuumed before it was read, and
//! an Elasticsearch outage that holds the position.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{wait_until, AgentProcess, Fixture};
use support::elasticsearch::{Flavor, TestEs};
use support::journal::{write_journal, ExportEntry};

const WAIT: Duration = Duration::from_secs(30);
const INDEX: &str = "logs-logship-default";
/// 2026-11-22T10:00:00Z, in microseconds.
const T0: u64 = 1_795_341_600_000_000;

/// The journal directory of a fixture: one machine directory, as under /var/log/journal.
fn journal_dir(fx: &Fixture) -> PathBuf {
    fx.dir.path().join("journal")
}

fn journal(fx: &Fixture, name: &str) -> PathBuf {
    journal_dir(fx)
        .join("4b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d")
        .join(name)
}

/// Starts the agent (file output) with the journal on for `fx`'s journal directory, and `extra`
/// settings.
fn spawn(fx: &Fixture, extra: &[(&str, &str)]) -> AgentProcess {
    let dir = journal_dir(fx).display().to_string();
    fx.spawn(&env(&dir, extra))
}

/// [`spawn`], shipping to `es`.
fn spawn_to(fx: &Fixture, es: &TestEs, extra: &[(&str, &str)]) -> AgentProcess {
    let dir = journal_dir(fx).display().to_string();
    fx.spawn_to(&es.url(), &env(&dir, extra))
}

fn env<'a>(dir: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("LOGSHIP_JOURNALD__ENABLED", "true"),
        ("LOGSHIP_JOURNALD__DIRECTORY", dir),
        ("LOGSHIP_JOURNALD__POLL_INTERVAL", "20ms"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Waits until the agent's counter `name` reads `value`.
fn wait_metric(agent: &AgentProcess, name: &str, value: f64) {
    assert!(
        wait_until(WAIT, || agent.metric(name, &[]) == value),
        "{name} is {}, not {value}:\n{}",
        agent.metric(name, &[]),
        agent.logs()
    );
}

/// Entry `i` of `unit`: message `"<unit> <i>"`, the trusted fields journald adds.
fn entry(i: u64, unit: &str) -> ExportEntry {
    ExportEntry::new(T0 + i * 1000, 1_000_000 + i * 1000)
        .field("MESSAGE", format!("{unit} {i}"))
        .field("PRIORITY", "6")
        .field("_TRANSPORT", "journal")
        .field("_SYSTEMD_UNIT", format!("{unit}.service"))
        .field("_PID", "100")
        .field("SYSLOG_IDENTIFIER", unit)
        .field("_HOSTNAME", "test-node")
}

fn entries(range: std::ops::Range<u64>, unit: &str) -> Vec<ExportEntry> {
    range.map(|i| entry(i, unit)).collect()
}

fn messages(range: std::ops::Range<u64>, unit: &str) -> BTreeSet<String> {
    range.map(|i| format!("{unit} {i}")).collect()
}

/// The journal entries of the positions file, by path's file name.
fn journal_positions(fx: &Fixture) -> Vec<Value> {
    fx.positions_now()["journal"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `acked` of the one journal file of the positions file named `name`.
fn acked(fx: &Fixture, name: &str) -> Option<u64> {
    journal_positions(fx)
        .iter()
        .find(|j| j["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .and_then(|j| j["acked"].as_u64())
}

/// The messages stored in the test Elasticsearch, each once (a message stored twice under two
/// ids fails).
fn stored(es: &TestEs) -> BTreeSet<String> {
    let docs = es.documents(INDEX);
    let mut set = BTreeSet::new();
    for doc in docs.values() {
        let m = doc["message"].as_str().unwrap().to_string();
        assert!(set.insert(m.clone()), "{m} stored twice, under two ids");
    }
    set
}

fn wait_stored(es: &TestEs, n: usize, agent: &AgentProcess) {
    assert!(
        wait_until(WAIT, || es.documents(INDEX).len() >= n),
        "{} of {n} stored:\n{}",
        es.documents(INDEX).len(),
        agent.logs()
    );
}

#[test]
fn an_entry_becomes_a_record_with_every_field() {
    let fx = Fixture::new();
    let full = ExportEntry::new(T0 + 123_456, 5_000_000)
        .field("MESSAGE", "Started kubelet.\n")
        .field("PRIORITY", "6")
        .field("_TRANSPORT", "journal")
        .field("_SYSTEMD_UNIT", "kubelet.service")
        .field("_PID", "1234")
        .field("SYSLOG_IDENTIFIER", "kubelet")
        .field("_COMM", "kubelet-bin")
        .field("_HOSTNAME", "node-a")
        .field("CODE_FILE", "main.go")
        .field("TAG", "a")
        .field("TAG", "b");
    let binary = ExportEntry::new(T0 + 200_000, 5_100_000)
        .field("MESSAGE", b"bin\x00\x01\xff\nline2".as_slice())
        .field("PRIORITY", "3")
        .field("_COMM", "dockerd");
    let json_message = ExportEntry::new(T0 + 300_000, 5_200_000)
        .field("MESSAGE", r#"{"level":"warn","msg":"disk almost full"}"#)
        .field("PRIORITY", "6")
        .field("_SYSTEMD_UNIT", "containerd.service");
    write_journal(
        &journal(&fx, "system.journal"),
        &[full, binary, json_message],
    );
    let agent = spawn(&fx, &[("LOGSHIP_JOURNALD__ALL_FIELDS", "true")]);
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    let records = fx.records();
    assert_eq!(
        records[0],
        json!({
            "@timestamp": "2026-11-22T10:00:00.123456000Z",
            "message": "Started kubelet.",
            "log": { "offset": 0, "level": "info", "syslog": { "priority": 6 } },
            "systemd": { "unit": "kubelet.service" },
            "process": { "pid": 1234, "name": "kubelet" },
            "journald": {
                "_boot_id": support::journal::BOOT_ID,
                "_comm": "kubelet-bin",
                "_transport": "journal",
                "code_file": "main.go",
                "tag": ["a", "b"]
            },
            "host": { "name": "node-a" }
        })
    );
    assert_eq!(records[1]["message"], "bin\u{0}\u{1}\u{fffd}\nline2");
    assert_eq!(records[1]["log"]["level"], "err");
    assert_eq!(records[1]["log"]["syslog"]["priority"], 3);
    assert_eq!(records[1]["process"], json!({ "name": "dockerd" }));
    assert_eq!(
        records[1]["host"]["name"], "test-node",
        "no _HOSTNAME: the node"
    );
    assert!(records[1].get("systemd").is_none());
    assert_eq!(
        records[2]["log"]["level"], "warn",
        "the message's own level wins"
    );
    assert_eq!(records[2]["json"]["msg"], "disk almost full");
    assert_eq!(records[2]["log"]["syslog"]["priority"], 6);
    // The journal reader's loop is judged by the liveness probe.
    let (status, _, body) = support::agent::http_get(agent.server_addr(), "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("journald"), "{body}");
}

#[test]
fn units_exclusions_matches_and_kernel_select_entries() {
    let all: Vec<ExportEntry> = vec![
        entry(0, "kubelet"),
        entry(1, "containerd"),
        entry(2, "sshd"),
        ExportEntry::new(T0 + 3000, 1_003_000)
            .field("MESSAGE", "kernel 3")
            .field("PRIORITY", "4")
            .field("_TRANSPORT", "kernel")
            .field("SYSLOG_IDENTIFIER", "kernel"),
        entry(4, "cron").field("_TRANSPORT", "syslog"),
        entry(5, "kubelet"),
    ];
    // (settings, the messages shipped)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            &[
                (
                    "LOGSHIP_JOURNALD__UNITS",
                    r#"["kubelet", "containerd.service"]"#,
                ),
                ("LOGSHIP_JOURNALD__KERNEL", "false"),
            ],
            &["kubelet 0", "containerd 1", "kubelet 5"],
        ),
        (
            &[("LOGSHIP_JOURNALD__UNITS", r#"["kubelet"]"#)],
            &["kubelet 0", "kernel 3", "kubelet 5"],
        ),
        (
            &[
                ("LOGSHIP_JOURNALD__EXCLUDE_UNITS", r#"["sshd"]"#),
                // `cron` was logged through syslog: the second _TRANSPORT of the entry.
                (
                    "LOGSHIP_JOURNALD__MATCHES",
                    r#"["_TRANSPORT=kernel", "_TRANSPORT=syslog"]"#,
                ),
            ],
            &["kernel 3", "cron 4"],
        ),
    ];
    for (settings, want) in cases {
        let fx = Fixture::new();
        write_journal(&journal(&fx, "system.journal"), &all);
        let mut agent = spawn(&fx, settings);
        assert!(
            wait_until(WAIT, || acked(&fx, "system.journal") == Some(6)),
            "{settings:?}: every entry, selected or not, is acknowledged: {:?}\n{}",
            journal_positions(&fx),
            agent.logs()
        );
        assert_eq!(fx.messages(), want, "{settings:?}");
        assert_eq!(
            agent.metric("logship_journald_entries_skipped_total", &[]) as usize,
            6 - want.len()
        );
        assert!(agent.terminate().success());
    }
}

#[test]
fn restarts_by_sigterm_and_kill_9_lose_and_repeat_nothing() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let file = journal(&fx, "system.journal");
    write_journal(&file, &entries(0..3000, "app"));
    let settings: &[(&str, &str)] = &[];

    let mut agent = spawn_to(&fx, &es, settings);
    wait_stored(&es, 500, &agent);
    agent.kill9();
    write_journal(&file, &entries(3000..4000, "app"));
    let mut agent = spawn_to(&fx, &es, settings);
    wait_stored(&es, 4000, &agent);
    assert_eq!(stored(&es), messages(0..4000, "app"));
    assert!(
        wait_until(WAIT, || acked(&fx, "system.journal") == Some(4000)),
        "{:?}",
        journal_positions(&fx)
    );
    assert!(agent.terminate().success());
    let at = journal_positions(&fx);
    assert_eq!(at[0]["acked"], 4000, "{at:?}");
    assert_eq!(at[0]["entries"], 4000, "{at:?}");
    assert_eq!(at[0]["seqnum"], 4000, "{at:?}");

    // After a drain, nothing is sent again: the new entries only.
    write_journal(&file, &entries(4000..4100, "app"));
    let mut agent = spawn_to(&fx, &es, settings);
    wait_stored(&es, 4100, &agent);
    assert!(wait_until(WAIT, || acked(&fx, "system.journal") == Some(4100)));
    assert_eq!(
        agent.metric("logship_elasticsearch_items_duplicate_total", &[]),
        0.0,
        "an entry acknowledged before the SIGTERM was sent again"
    );
    assert_eq!(
        agent.metric("logship_journald_entries_read_total", &[]),
        100.0
    );
    assert!(agent.terminate().success());
    assert_eq!(stored(&es), messages(0..4100, "app"));
}

#[test]
fn a_second_file_and_a_rotation_while_running_are_read_once_each() {
    let fx = Fixture::new();
    let system = journal(&fx, "system.journal");
    write_journal(&system, &entries(0..10, "a"));
    let settings: &[(&str, &str)] = &[];
    let mut agent = spawn(&fx, settings);
    assert!(fx.wait_for_records(10, WAIT), "{}", agent.logs());

    // Another writer's file (its own sequence number id) appears.
    write_journal(&journal(&fx, "user-1000.journal"), &entries(0..10, "b"));
    assert!(fx.wait_for_records(20, WAIT), "{}", agent.logs());

    // journald's rotation: the file is renamed, appended to no more, and a new one started.
    write_journal(&system, &entries(10..15, "a"));
    let archived = journal(
        &fx,
        "system@706ce4440000000000000000000000aa-0000000000000001-0005f0a1b2c3d4e5.journal",
    );
    std::fs::rename(&system, &archived).unwrap();
    write_journal(&system, &entries(15..20, "a"));
    assert!(
        fx.wait_for_records(30, WAIT),
        "{:?}\n{}",
        fx.messages(),
        agent.logs()
    );
    assert!(agent.terminate().success());

    let mut agent = spawn(&fx, settings);
    write_journal(&system, &entries(20..25, "a"));
    assert!(fx.wait_for_records(35, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.terminate().success());
    let got = fx.messages();
    let mut want: Vec<String> = messages(0..25, "a").into_iter().collect();
    want.extend(messages(0..10, "b"));
    let mut sorted = got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "every entry once: {got:?}");
    let paths: BTreeSet<String> = journal_positions(&fx)
        .iter()
        .map(|j| {
            Path::new(j["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(paths.len(), 3, "three files: {paths:?}");
    assert!(paths.contains(archived.file_name().unwrap().to_str().unwrap()));
}

#[test]
fn an_outage_holds_the_position_and_a_vacuumed_file_is_counted() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.fail_until_cleared(503);
    let fx = Fixture::new();
    let old = journal(&fx, "system@old.journal");
    write_journal(&old, &entries(0..50, "old"));
    let settings: &[(&str, &str)] = &[];
    let mut agent = spawn_to(&fx, &es, settings);
    wait_metric(&agent, "logship_journald_entries_read_total", 50.0);
    // Read, not acknowledged: the position stays where it was while Elasticsearch is down.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        acked(&fx, "system@old.journal"),
        Some(0),
        "{:?}",
        journal_positions(&fx)
    );
    assert!(agent.terminate().success());
    let at = journal_positions(&fx);
    assert_eq!(
        (at[0]["acked"].as_u64(), at[0]["entries"].as_u64()),
        (Some(0), Some(50))
    );
    assert!(es.documents(INDEX).is_empty());

    // journald vacuums the file while logship is stopped; a new one holds new entries.
    std::fs::remove_file(&old).unwrap();
    write_journal(&journal(&fx, "system.journal"), &entries(0..5, "new"));
    es.clear_request_faults();
    let mut agent = spawn_to(&fx, &es, settings);
    wait_stored(&es, 5, &agent);
    assert!(wait_until(WAIT, || acked(&fx, "system.journal") == Some(5)));
    assert_eq!(stored(&es), messages(0..5, "new"));
    assert_eq!(
        agent.metric("logship_journald_vacuumed_entries_total", &[]),
        50.0
    );
    let logs = agent.logs();
    assert!(
        logs.contains("deleted (vacuumed) before logship read it") && logs.contains("entries=50"),
        "{logs}"
    );
    assert!(agent.terminate().success());
    assert!(
        acked(&fx, "system@old.journal").is_none(),
        "forgotten once counted"
    );
}

#[test]
fn read_from_tail_starts_at_the_end_only_at_the_first_start() {
    let fx = Fixture::new();
    let system = journal(&fx, "system.journal");
    write_journal(&system, &entries(0..20, "history"));
    let settings: &[(&str, &str)] = &[("LOGSHIP_JOURNALD__READ_FROM", "tail")];
    let mut agent = spawn(&fx, settings);
    assert!(wait_until(WAIT, || acked(&fx, "system.journal") == Some(20)));
    write_journal(&system, &entries(0..3, "new"));
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    // A file that appears while logship is stopped is new: read from its first entry.
    write_journal(&journal(&fx, "user-1000.journal"), &entries(0..2, "user"));
    let mut agent = spawn(&fx, settings);
    assert!(fx.wait_for_records(5, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    assert_eq!(
        fx.messages(),
        ["new 0", "new 1", "new 2", "user 0", "user 1"]
    );
}

#[test]
fn a_file_vacuumed_while_it_is_read_is_read_to_its_end() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.fail_until_cleared(503);
    let fx = Fixture::new();
    let file = journal(&fx, "system@1.journal");
    // 3,000 entries of 1 KB: three times what the smallest budget holds, so most are still in
    // the file, not in memory, when it is deleted.
    let pad = "x".repeat(1000);
    let big: Vec<ExportEntry> = (0..3000)
        .map(|i| entry(i, "big").field("PAD", &pad))
        .collect();
    write_journal(&file, &big);
    let settings = [
        ("LOGSHIP_BUFFER__MAX_BYTES", "512KiB"),
        ("LOGSHIP_JOURNALD__ALL_FIELDS", "true"),
    ];
    let mut agent = spawn_to(&fx, &es, &settings);
    assert!(
        wait_until(WAIT, || agent
            .metric("logship_journald_entries_read_total", &[])
            > 0.0),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let read = agent.metric("logship_journald_entries_read_total", &[]);
    assert!(
        read < 3000.0,
        "the budget holds the reader back: {read} read"
    );
    std::fs::remove_file(&file).unwrap();
    es.clear_request_faults();
    wait_stored(&es, 3000, &agent);
    assert_eq!(stored(&es), messages(0..3000, "big"));
    assert_eq!(
        agent.metric("logship_journald_vacuumed_entries_total", &[]),
        0.0
    );
    // Read to its end and acknowledged, then forgotten (its file is gone).
    assert!(
        wait_until(WAIT, || journal_positions(&fx).is_empty()),
        "{:?}",
        journal_positions(&fx)
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_reload_that_changes_the_units_goes_on_where_the_journal_was() {
    let fx = Fixture::new();
    let system = journal(&fx, "system.journal");
    write_journal(
        &system,
        &[entries(0..5, "kubelet"), entries(5..10, "sshd")].concat(),
    );
    let base = std::fs::read_to_string(&fx.config).unwrap();
    let table = |units: &str| {
        format!(
            "{base}\n[journald]\nenabled = true\ndirectory = \"{}\"\npoll_interval = \"20ms\"\nunits = {units}\n",
            journal_dir(&fx).display()
        )
    };
    std::fs::write(&fx.config, table("[]")).unwrap();
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(10, WAIT), "{}", agent.logs());
    std::fs::write(&fx.config, table("[\"kubelet\"]")).unwrap();
    agent.hangup();
    assert!(
        wait_until(WAIT, || agent.logs().contains("Configuration reloaded")),
        "{}",
        agent.logs()
    );
    write_journal(
        &system,
        &[entries(10..15, "kubelet"), entries(15..20, "sshd")].concat(),
    );
    assert!(wait_until(WAIT, || acked(&fx, "system.journal") == Some(20)));
    assert!(agent.terminate().success());
    let mut want: Vec<String> = messages(0..5, "kubelet").into_iter().collect();
    want.extend(messages(5..10, "sshd"));
    want.extend(messages(10..15, "kubelet"));
    let mut got = fx.messages();
    got.sort();
    want.sort();
    assert_eq!(got, want, "nothing again, the new units after the reload");
}

#[test]
fn a_file_that_is_not_a_journal_is_warned_about_and_the_others_are_read() {
    let fx = Fixture::new();
    write_journal(&journal(&fx, "system.journal"), &entries(0..3, "good"));
    // A file named like a journal that is not one, and one cut short in its header.
    std::fs::write(journal(&fx, "garbage.journal"), b"not a journal at all").unwrap();
    let whole = std::fs::read(journal(&fx, "system.journal")).unwrap();
    std::fs::write(journal(&fx, "cut.journal~"), &whole[..100]).unwrap();
    let mut agent = spawn(&fx, &[]);
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    assert_eq!(fx.messages(), ["good 0", "good 1", "good 2"]);
    // Warned about at the second look (a file being created has no header yet), once.
    wait_metric(&agent, "logship_journald_file_errors_total", 2.0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        agent.metric("logship_journald_file_errors_total", &[]),
        2.0,
        "each warned about once:\n{}",
        agent.logs()
    );
    let logs = agent.logs();
    assert!(
        logs.contains("Cannot read this journal file") && logs.contains("garbage.journal"),
        "{logs}"
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_message_longer_than_max_line_bytes_is_cut_and_counted() {
    let fx = Fixture::new();
    let long = "é".repeat(1500); // 3,000 bytes
    let entries = vec![
        ExportEntry::new(T0, 1_000_000)
            .field("MESSAGE", &long)
            .field("_SYSTEMD_UNIT", "app.service"),
        entry(1, "app"),
    ];
    write_journal(&journal(&fx, "system.journal"), &entries);
    let mut agent = spawn(&fx, &[("LOGSHIP_TAIL__MAX_LINE_BYTES", "1KiB")]);
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    let messages = fx.messages();
    assert_eq!(
        messages[0],
        "é".repeat(512),
        "cut at 1,024 bytes, between characters"
    );
    assert_eq!(messages[1], "app 1");
    assert_eq!(
        agent.metric(
            "logship_irregular_lines_total",
            &[("reason", "oversize_truncated")]
        ),
        1.0
    );
    assert!(agent.terminate().success());
}
