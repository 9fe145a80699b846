//! Multiline joining with the real binary: a stack trace written to a CRI log file arrives as one
//! record, stdout and stderr never mix, an idle record ships after `flush_timeout`, and records
//! cut by a rotation or held open across a restart (SIGTERM or kill -9) lose and double nothing
//! in the test Elasticsearch, where a document is what its id says.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use support::agent::{append, cri, kubelet_rotate, wait_until, AgentProcess, Fixture};
use support::elasticsearch::{DropPoint, Flavor, TestEs};

const WAIT: Duration = Duration::from_secs(30);
const INDEX: &str = "logs-logship-default";

const JAVA: &[&str] = &[
    "java.lang.IllegalStateException: Failed to execute CommandLineRunner",
    "\tat org.springframework.boot.SpringApplication.callRunner(SpringApplication.java:798)",
    "\tat org.springframework.boot.SpringApplication.run(SpringApplication.java:322)",
    "\tat com.example.shop.ShopApplication.main(ShopApplication.java:12)",
    "Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available",
    "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
    "\tSuppressed: java.io.IOException: close failed",
    "\t\tat com.example.shop.Db.close(Db.java:19)",
    "\t... 12 more",
];

const PYTHON: &[&str] = &[
    "Traceback (most recent call last):",
    "  File \"/app/worker.py\", line 12, in load",
    "    return json.loads(raw)",
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
];

/// `lines` as CRI lines of `stream`.
fn cri_lines(stream: &str, lines: &[&str]) -> String {
    lines.iter().map(|l| cri(stream, 'F', l)).collect()
}

/// `err` on stderr and `out` on stdout as CRI lines, written line by line in turn.
fn interleaved(err: &[&str], out: &[&str]) -> String {
    let mut body = String::new();
    for i in 0..err.len().max(out.len()) {
        if let Some(l) = err.get(i) {
            body.push_str(&cri("stderr", 'F', l));
        }
        if let Some(l) = out.get(i) {
            body.push_str(&cri("stdout", 'F', l));
        }
    }
    body
}

/// The messages of the fixture's records on `stream`, in order.
fn messages_of(fx: &Fixture, stream: &str) -> Vec<String> {
    fx.records()
        .iter()
        .filter(|r| r["stream"] == stream)
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect()
}

fn java_env() -> Vec<(&'static str, &'static str)> {
    vec![("LOGSHIP_MULTILINE__DEFAULT_RULE", "java")]
}

#[test]
fn a_java_stack_trace_written_to_a_cri_file_arrives_as_one_record() {
    let fx = Fixture::new();
    let path = fx.log("shop.log");
    let before = cri("stdout", 'F', "Starting ShopApplication v1.4.2");
    let mut body = before.clone();
    body.push_str(&cri_lines("stdout", JAVA));
    body.push_str(&cri("stdout", 'F', "Shutting down"));
    append(&path, body.as_bytes());
    let mut agent = fx.spawn(&java_env());
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    assert_eq!(
        fx.messages(),
        [
            "Starting ShopApplication v1.4.2".to_string(),
            JAVA.join("\n"),
            "Shutting down".into()
        ]
    );
    let trace = &fx.records()[1];
    assert_eq!(trace["log"]["offset"], before.len() as u64);
    assert_eq!(trace["stream"], "stdout");
    assert_eq!(trace["@timestamp"], "2026-11-22T10:00:00.123456789Z");
}

#[test]
fn interleaved_stdout_and_stderr_are_not_mixed() {
    // A Java trace on stderr and a Python traceback on stdout, written line by line in turn, with
    // a custom rule joining both (a line at the margin that is not a frame starts a record).
    let fx = Fixture::new();
    let path = fx.log("both.log");
    let mut body = interleaved(JAVA, PYTHON);
    body.push_str(&cri("stdout", 'F', "next on stdout"));
    body.push_str(&cri("stderr", 'F', "next on stderr"));
    append(&path, body.as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "margin"),
        (
            "LOGSHIP_MULTILINE__RULES",
            r#"[{"name":"margin","continuation":"^(\\s|Caused by: |[\\w.]+(Error|Exception): )"}]"#,
        ),
    ]);
    assert!(fx.wait_for_records(4, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    let by_stream = |s: &str| messages_of(&fx, s);
    assert_eq!(
        by_stream("stderr"),
        [JAVA.join("\n"), "next on stderr".into()]
    );
    assert_eq!(
        by_stream("stdout"),
        [PYTHON.join("\n"), "next on stdout".into()]
    );
}

const GO: &[&str] = &[
    "panic: runtime error: index out of range [3] with length 3",
    "",
    "goroutine 1 [running]:",
    "main.main()",
    "\t/src/main.go:9 +0x1d",
    "exit status 2",
];

#[test]
fn a_list_of_rules_joins_java_python_and_go_traces_on_both_streams() {
    // Each stream carries all three languages' traces between ordinary lines, and the two
    // streams are written line by line in turn.
    let fx = Fixture::new();
    let path = fx.log("polyglot.log");
    let err: Vec<&str> = [&["starting"], JAVA, &["ready"], PYTHON, GO, &["done"]].concat();
    let out: Vec<&str> = [&["GET / 200"], GO, PYTHON, &["GET /x 404"], JAVA].concat();
    append(&path, interleaved(&err, &out).as_bytes());
    let mut agent = fx.spawn(&[("LOGSHIP_MULTILINE__DEFAULT_RULE", "java+python+go")]);
    assert!(fx.wait_for_records(11, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    let by_stream = |s: &str| messages_of(&fx, s);
    let (java, python, go) = (JAVA.join("\n"), PYTHON.join("\n"), GO.join("\n"));
    assert_eq!(
        by_stream("stderr"),
        [
            "starting".to_string(),
            java.clone(),
            "ready".into(),
            python.clone(),
            go.clone(),
            "done".into()
        ]
    );
    assert_eq!(
        by_stream("stdout"),
        [
            "GET / 200".to_string(),
            go,
            python,
            "GET /x 404".into(),
            java
        ]
    );
}

#[test]
fn a_trace_with_nothing_after_it_ships_after_flush_timeout() {
    let fx = Fixture::new();
    let path = fx.log("idle.log");
    append(&path, cri("stderr", 'F', "ready").as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "java"),
        ("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "200ms"),
    ]);
    assert!(fx.wait_for_records(1, WAIT), "{}", agent.logs());
    // The program died after its trace: no line will close it.
    append(&path, cri_lines("stderr", JAVA).as_bytes());
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    assert_eq!(fx.messages()[1], JAVA.join("\n"));
    let (_, _, metrics) = support::agent::http_get(agent.server_addr(), "/metrics");
    assert!(
        metrics.contains("logship_multiline_closed_records_total{reason=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("logship_multiline_lines_total {}", JAVA.len())),
        "{metrics}"
    );
    assert!(agent.terminate().success());
}

fn es_spawn(fx: &Fixture, es: &TestEs, extra: &[(&str, &str)]) -> AgentProcess {
    let mut env = vec![("LOGSHIP_MULTILINE__DEFAULT_RULE", "java")];
    env.extend_from_slice(extra);
    fx.spawn_to(&es.url(), &env)
}

/// The stored documents' messages.
fn messages(es: &TestEs) -> Vec<String> {
    es.documents(INDEX)
        .values()
        .map(|d| d["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every line of every stored document, with how often it is there.
fn stored_lines(es: &TestEs) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in messages(es) {
        for line in m.split('\n') {
            *counts.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn assert_each_line_once(es: &TestEs, expected: &[&str]) {
    let counts = stored_lines(es);
    for line in expected {
        assert_eq!(
            counts.get(*line).copied().unwrap_or(0),
            1,
            "{line:?} should be stored exactly once: {:#?}",
            messages(es)
        );
    }
    assert_eq!(
        counts.values().sum::<usize>(),
        expected.len(),
        "{counts:#?}"
    );
}

fn stored(es: &TestEs, message: &str) -> bool {
    messages(es).iter().any(|m| m == message)
}

/// Waits until `files` are acknowledged to their ends, stops the agent, and checks that the
/// trace is one document, at the offset where it starts in the old file (after `before`), and
/// that every line is stored once.
fn joined_once(
    fx: &Fixture,
    es: &TestEs,
    mut agent: AgentProcess,
    files: &[&std::path::Path],
    before: &str,
) {
    assert!(
        wait_until(WAIT, || acknowledged_to_the_end(&fx.positions_now(), files)),
        "{}\n{}",
        fx.positions_now(),
        agent.logs()
    );
    assert!(agent.terminate().success());
    let trace = document_with(es, &JAVA.join("\n")).unwrap();
    assert_eq!(trace["log"]["offset"], before.len() as u64, "{trace}");
    let mut expected = vec!["before", "after"];
    expected.extend(JAVA);
    assert_each_line_once(es, &expected);
}

/// Starts an agent (with `extra`), writes "before" and `head` of a trace on `stream` to `path`,
/// and waits until "before" is stored: the agent, and the "before" line as written.
fn trace_started(
    fx: &Fixture,
    es: &TestEs,
    path: &std::path::Path,
    stream: &str,
    head: &[&str],
    extra: &[(&str, &str)],
) -> (AgentProcess, String) {
    let agent = es_spawn(fx, es, extra);
    let before = cri(stream, 'F', "before");
    let mut body = before.clone();
    body.push_str(&cri_lines(stream, head));
    append(path, body.as_bytes());
    assert!(
        wait_until(WAIT, || stored(es, "before")),
        "{}",
        agent.logs()
    );
    (agent, before)
}

/// The stored document whose message is `message`.
fn document_with(es: &TestEs, message: &str) -> Option<Value> {
    es.documents(INDEX)
        .into_values()
        .find(|d| d["message"] == message)
}

#[test]
fn a_record_a_rotation_cuts_is_joined_across_the_two_files() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log(
        "shop-7d4b9_shop_app-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
    );
    // A loaded machine may take a while to see the rotation: the trace stays open meanwhile
    // (the next line closes it, not the timeout).
    let (head, rest) = JAVA.split_at(4);
    let (mut agent, before) = trace_started(
        &fx,
        &es,
        &path,
        "stderr",
        head,
        &[("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "10s")],
    );
    // The kubelet rotates in the middle of the trace: the rest goes to the new file.
    let rotated = kubelet_rotate(&path, "20261122-100001");
    let mut body = cri_lines("stderr", rest);
    body.push_str(&cri("stderr", 'F', "after"));
    append(&path, body.as_bytes());
    assert!(
        wait_until(WAIT, || stored(&es, "after")
            && stored(&es, &JAVA.join("\n"))),
        "{:#?}\n{}",
        messages(&es),
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, metrics) = support::agent::http_get(agent.server_addr(), "/metrics");
    assert!(
        metrics.contains("logship_multiline_rotation_joined_records_total 1"),
        "{metrics}"
    );
    assert!(agent.terminate().success());
    // One record, which starts where the trace starts in the old file.
    let trace = document_with(&es, &JAVA.join("\n")).unwrap();
    assert_eq!(trace["log"]["offset"], before.len() as u64, "{trace}");
    let mut expected = vec!["before", "after"];
    expected.extend(JAVA);
    assert_each_line_once(&es, &expected);
    // Both files (both under the live file's path) are acknowledged to their ends.
    let positions = fx.positions();
    assert!(
        acknowledged_to_the_end(&positions, &[&rotated, &path]),
        "{positions}"
    );
}

/// Whether the positions file holds each of `files` (by inode) acknowledged to its end.
fn acknowledged_to_the_end(positions: &Value, files: &[&std::path::Path]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let entries = positions["files"].as_array().cloned().unwrap_or_default();
    files.iter().all(|path| {
        let Ok(m) = std::fs::metadata(path) else {
            return false;
        };
        entries
            .iter()
            .any(|e| e["inode"].as_u64() == Some(m.ino()) && e["offset"].as_u64() == Some(m.len()))
    })
}

/// Rotation after rotation, each in the middle of a trace, on both streams in turn: every
/// trace arrives whole, every line once.
#[test]
fn every_trace_of_many_rotations_arrives_whole() {
    const ROTATIONS: usize = 12;
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log(
        "shop-7d4b9_shop_app-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
    );
    // A loaded machine may take a while to see the rotation: the trace stays open meanwhile
    // (the next line closes it, not the timeout).
    let mut agent = es_spawn(&fx, &es, &[("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "10s")]);
    // The file is followed before its first rotation: a file created and rotated within
    // milliseconds, on a loaded machine, is not what this test is about.
    append(&path, cri("stdout", 'F', "start").as_bytes());
    assert!(
        wait_until(WAIT, || fx.positions_now()["files"]
            .as_array()
            .is_some_and(|f| !f.is_empty())),
        "{}",
        agent.logs()
    );
    let mut expected: Vec<String> = vec!["start".to_string()];
    let mut traces: Vec<String> = Vec::new();
    for i in 0..ROTATIONS {
        let stream = if i % 2 == 0 { "stdout" } else { "stderr" };
        let trace: Vec<String> = JAVA.iter().map(|l| format!("{l} #{i}")).collect();
        let trace: Vec<&str> = trace.iter().map(String::as_str).collect();
        let (head, rest) = trace.split_at(1 + i % (JAVA.len() - 1));
        append(&path, cri_lines(stream, head).as_bytes());
        kubelet_rotate(&path, &format!("20261122-1100{i:02}"));
        let after = format!("after {i}");
        let mut body = cri_lines(stream, rest);
        body.push_str(&cri(stream, 'F', &after));
        append(&path, body.as_bytes());
        assert!(
            wait_until(WAIT, || stored(&es, &after)),
            "{:#?}\n{}",
            messages(&es),
            agent.logs()
        );
        expected.extend(trace.iter().map(|l| l.to_string()));
        expected.push(after);
        traces.push(trace.join("\n"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, metrics) = support::agent::http_get(agent.server_addr(), "/metrics");
    assert!(agent.terminate().success());
    let whole = traces.iter().filter(|t| stored(&es, t)).count();
    assert_eq!(whole, ROTATIONS, "{:#?}", messages(&es));
    assert!(
        metrics.contains(&format!(
            "logship_multiline_rotation_joined_records_total {ROTATIONS}"
        )),
        "{metrics}"
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_each_line_once(&es, &expected);
}

/// The agent is down (stopped or killed between the two files) when the kubelet rotates in the
/// middle of a trace: the old file is read again from where the trace starts, and the trace
/// goes on in the new file, as one record with the same id.
#[test]
fn a_trace_cut_by_a_rotation_while_the_agent_is_down_arrives_whole() {
    trace_cut_while_down(false);
}

#[test]
fn a_trace_cut_by_a_rotation_after_a_kill_9_between_the_files_arrives_whole() {
    trace_cut_while_down(true);
}

fn trace_cut_while_down(kill: bool) {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log(
        "shop-7d4b9_shop_app-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
    );
    let (head, rest) = JAVA.split_at(3);
    let (mut agent, before) = trace_started(&fx, &es, &path, "stdout", head, &[]);
    // Stopped before the trace's flush timeout: the record was never shipped.
    if kill {
        agent.kill9();
    } else {
        assert!(agent.terminate().success());
    }
    assert_eq!(messages(&es), ["before"]);
    let rotated = kubelet_rotate(&path, "20261122-100002");
    let mut body = cri_lines("stdout", rest);
    body.push_str(&cri("stdout", 'F', "after"));
    append(&path, body.as_bytes());
    let agent = es_spawn(&fx, &es, &[]);
    assert!(
        wait_until(WAIT, || stored(&es, "after")
            && stored(&es, &JAVA.join("\n"))),
        "{:#?}\n{}",
        messages(&es),
        agent.logs()
    );
    joined_once(&fx, &es, agent, &[&rotated, &path], &before);
}

/// The record joined across a rotation is stored, but its acknowledgement never comes back
/// (the answers are lost on the way) and the agent is killed: neither file's position passed
/// the record's start, both are read again from there, and the record is made again with the
/// same document id: one document.
#[test]
fn a_kill_9_before_a_joined_record_is_acknowledged_makes_the_same_document_again() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log(
        "shop-7d4b9_shop_app-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
    );
    // The record stays open while the test waits for the positions to be written.
    let slow = [("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "1m")];
    let (head, rest) = JAVA.split_at(5);
    let (mut agent, before) = trace_started(&fx, &es, &path, "stderr", head, &slow);
    // The position of "before" is written (positions.flush_interval, 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    es.drop_connections(100_000, DropPoint::AfterProcessing);
    let rotated = kubelet_rotate(&path, "20261122-100003");
    let mut body = cri_lines("stderr", rest);
    body.push_str(&cri("stderr", 'F', "after"));
    append(&path, body.as_bytes());
    assert!(
        wait_until(WAIT, || stored(&es, &JAVA.join("\n"))),
        "{:#?}\n{}",
        messages(&es),
        agent.logs()
    );
    agent.kill9();
    let positions = fx.positions();
    for f in positions["files"].as_array().unwrap() {
        let offset = f["offset"].as_u64().unwrap();
        assert!(
            offset == 0 || offset == before.len() as u64,
            "no position passed the record's start: {positions}"
        );
    }
    es.clear_faults();
    let agent = es_spawn(&fx, &es, &slow);
    joined_once(&fx, &es, agent, &[&rotated, &path], &before);
}

/// A copytruncate is not a rotation: the lines after the truncation are not joined to a
/// record the file held before it (that content is gone from the file).
#[test]
fn a_copytruncate_joins_nothing_across_the_truncation() {
    let fx = Fixture::new();
    let path = fx.log("shop.log");
    let slow = [
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "java"),
        ("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "1m"),
    ];
    let mut agent = fx.spawn(&slow);
    let (head, rest) = JAVA.split_at(4);
    let mut body = cri("stdout", 'F', "before");
    body.push_str(&cri_lines("stdout", head));
    append(&path, body.as_bytes());
    assert!(fx.wait_for_records(1, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::copy(&path, fx.dir.path().join("shop.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut body = cri_lines("stdout", rest);
    body.push_str(&cri("stdout", 'F', "after"));
    append(&path, body.as_bytes());
    assert!(
        wait_until(WAIT, || fx.messages().iter().any(|m| m == "after")),
        "{:#?}\n{}",
        fx.messages(),
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    let messages = fx.messages();
    assert!(
        messages
            .iter()
            .all(|m| !(m.contains(head[0]) && m.contains(rest[0]))),
        "{messages:#?}"
    );
    assert!(messages.contains(&rest.join("\n")), "{messages:#?}");
    assert!(agent.logs().contains("truncated"), "{}", agent.logs());
}

#[test]
fn a_restart_in_the_middle_of_a_record_loses_and_doubles_nothing() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log("app.log");
    // A long flush_timeout: the record is still open when the agent stops.
    let slow = [("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "1m")];
    let (head, rest) = JAVA.split_at(5);
    let (mut agent, before) = trace_started(&fx, &es, &path, "stdout", head, &slow);
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    // The position stops where the open record began.
    let positions = fx.positions();
    let offset = positions["files"][0]["offset"].as_u64().unwrap();
    assert_eq!(offset, before.len() as u64, "{positions}");
    assert_eq!(messages(&es), ["before"]);

    let mut body = cri_lines("stdout", rest);
    body.push_str(&cri("stdout", 'F', "after restart"));
    append(&path, body.as_bytes());
    let mut agent = es_spawn(&fx, &es, &slow);
    assert!(
        wait_until(WAIT, || stored(&es, "after restart")),
        "{}",
        agent.logs()
    );

    // Again, with a crash: a second trace is open when the agent is killed.
    let second = [
        "java.lang.OutOfMemoryError: Java heap space",
        "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)",
        "\tat com.example.shop.Cache.grow(Cache.java:88)",
    ];
    append(&path, cri_lines("stdout", &second[..2]).as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    agent.kill9();
    let mut body = cri_lines("stdout", &second[2..]);
    body.push_str(&cri("stdout", 'F', "after crash"));
    append(&path, body.as_bytes());
    let mut agent = es_spawn(&fx, &es, &slow);
    assert!(
        wait_until(WAIT, || stored(&es, "after crash")),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());

    let docs: Vec<Value> = es.documents(INDEX).into_values().collect();
    let trace = docs
        .iter()
        .find(|d| d["message"] == JAVA.join("\n"))
        .unwrap_or_else(|| panic!("the whole trace in one record: {docs:#?}"));
    assert_eq!(trace["log"]["offset"], before.len() as u64);
    assert!(
        docs.iter().any(|d| d["message"] == second.join("\n")),
        "{docs:#?}"
    );
    let mut expected = vec!["before", "after restart", "after crash"];
    expected.extend(JAVA);
    expected.extend(second);
    assert_each_line_once(&es, &expected);
}

/// A record let out by `flush_timeout` takes the same stages as one read a moment earlier: the
/// exclude filter drops it (it used to go around the processor and ship).
#[test]
fn a_record_shipped_by_flush_timeout_goes_through_the_filters() {
    let fx = Fixture::new();
    let path = fx.log("filtered.log");
    append(&path, cri("stderr", 'F', "ready").as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "java"),
        ("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "200ms"),
        (
            "LOGSHIP_PROCESSING__EXCLUDE",
            "message=~IllegalStateException",
        ),
    ]);
    assert!(fx.wait_for_records(1, WAIT), "{}", agent.logs());
    // A trace with nothing after it: only the timeout ships it, and the filter excludes it.
    append(&path, cri_lines("stderr", JAVA).as_bytes());
    std::thread::sleep(Duration::from_millis(1500));
    append(&path, cri("stderr", 'F', "after").as_bytes());
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fx.messages(), ["ready", "after"], "{}", agent.logs());
    assert!(agent.terminate().success());
}

/// A record let out by `flush_timeout` pays its container's rate limit like one read a moment
/// earlier: with the limit spent, drop mode drops it, counts it and says so.
#[test]
fn a_record_shipped_by_flush_timeout_pays_the_rate_limit() {
    let fx = Fixture::new();
    let path = fx.log("limited.log");
    append(&path, cri("stderr", 'F', "ready").as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "java"),
        ("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "200ms"),
        // One line a minute, a burst of one: "ready" spends it.
        ("LOGSHIP_RATE_LIMIT__DEFAULT", "1/m"),
        ("LOGSHIP_RATE_LIMIT__BURST", "1m"),
        ("LOGSHIP_RATE_LIMIT__ACTION", "drop"),
        ("LOGSHIP_RATE_LIMIT__SUMMARY_INTERVAL", "500ms"),
    ]);
    assert!(fx.wait_for_records(1, WAIT), "{}", agent.logs());
    // A trace with nothing after it: only the timeout lets it out, past the limit.
    append(&path, cri_lines("stderr", JAVA).as_bytes());
    let summary = || {
        fx.messages()
            .into_iter()
            .find(|m| m.starts_with("logship dropped"))
    };
    assert!(wait_until(WAIT, || summary().is_some()), "{}", agent.logs());
    let (_, _, metrics) = support::agent::http_get(agent.server_addr(), "/metrics");
    assert!(agent.terminate().success());
    assert!(
        !fx.messages()
            .iter()
            .any(|m| m.contains("IllegalStateException")),
        "{:?}",
        fx.messages()
    );
    assert!(
        summary().is_some_and(|s| s.starts_with("logship dropped 1 ")),
        "{:?}",
        summary()
    );
    assert!(
        metrics.contains("logship_dropped_records_total{reason=\"rate_limit\"} 1"),
        "{metrics}"
    );
}

/// Deleted files let go (past `tail.max_deleted_files`) while the reader waits to ship records
/// of idle files let out by `flush_timeout`: the loop over the files follows the removals (it
/// used to index past the end and abort), and every record of the files kept arrives once.
#[test]
fn files_let_go_while_timed_out_records_wait_for_room_do_not_crash_the_reader() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.down();
    let fx = Fixture::new();
    // Traces of about 15 KiB each: the buffer (32 KiB) holds two at most.
    let frames: Vec<String> = (0..180)
        .map(|i| {
            format!("\tat com.example.service.DeeplyNestedComponent.frame{i:03}(DeeplyNestedComponent.java:{i})")
        })
        .collect();
    let trace = |n: usize| {
        let mut lines = vec![format!("java.lang.IllegalStateException: trace {n}")];
        lines.extend(frames.iter().cloned());
        lines
    };
    for n in 0..8 {
        let lines = trace(n);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        append(
            &fx.log(&format!("f{n}.log")),
            cri_lines("stderr", &refs).as_bytes(),
        );
    }
    let mut agent = es_spawn(
        &fx,
        &es,
        &[
            ("LOGSHIP_MULTILINE__FLUSH_TIMEOUT", "300ms"),
            ("LOGSHIP_MULTILINE__MAX_BYTES", "16KiB"),
            ("LOGSHIP_MULTILINE__MAX_LINES", "1000"),
            ("LOGSHIP_TAIL__READ_BUDGET", "16KiB"),
            ("LOGSHIP_TAIL__MAX_LINE_BYTES", "16KiB"),
            ("LOGSHIP_BUFFER__MAX_BYTES", "32KiB"),
            ("LOGSHIP_TAIL__MAX_DELETED_FILES", "1"),
        ],
    );
    // The first traces timed out and hold the buffer; the next waits for room.
    std::thread::sleep(Duration::from_millis(1500));
    for n in 3..8 {
        std::fs::remove_file(fx.log(&format!("f{n}.log"))).unwrap();
    }
    // The deleted-file limits are kept while the reader waits.
    std::thread::sleep(Duration::from_millis(2500));
    es.up();
    assert!(es.wait_for_doc_count(3, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.running(), "the agent died:\n{}", agent.logs());
    assert!(agent.terminate().success(), "{}", agent.logs());
    let got = messages(&es);
    for n in 0..3 {
        let want = trace(n).join("\n");
        assert_eq!(
            got.iter().filter(|m| **m == want).count(),
            1,
            "trace {n} once\n{}",
            agent.logs()
        );
    }
}
