//! Live reload, against the real binary: a ConfigMap update (the kubelet's `..data` symlink
//! swap) or SIGHUP applies a changed configuration while lines are being written, and every
//! line is shipped exactly once across it; an invalid configuration, one that cannot start, or
//! a setting that cannot change live, is refused and the running pipeline goes on untouched;
//! the endpoint moves without a drain; a file only an open descriptor still reaches is finished
//! by the new pipeline.
//!
//! "Exactly once" is checked on the file sink's output (the messages of a file are its lines, in
//! order, each once) and in the test Elasticsearch (each line stored once, none answered 409).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::agent::{append, cri, read_records, wait_until, AgentProcess, Fixture};
use support::elasticsearch::{Flavor, TestEs};
use support::prometheus::{self, Exposition};

const WAIT: Duration = Duration::from_secs(30);

fn scrape(addr: SocketAddr) -> Exposition {
    let (status, _, body) = support::agent::http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// `logship_config_reloads_total{result}`.
fn reloads(addr: SocketAddr, result: &str) -> f64 {
    scrape(addr)
        .value("logship_config_reloads_total", &[("result", result)])
        .expect("logship_config_reloads_total")
}

/// Waits until the reload counters are `success` and `failure`.
fn wait_reloads(agent: &AgentProcess, addr: SocketAddr, success: f64, failure: f64) {
    let done = wait_until(WAIT, || {
        reloads(addr, "success") == success && reloads(addr, "failure") == failure
    });
    assert!(
        done,
        "reloads: {} succeeded, {} failed; expected {success}, {failure}\n{}",
        reloads(addr, "success"),
        reloads(addr, "failure"),
        agent.logs()
    );
}

/// Writes `n` CRI lines `<prefix>-<i>`.
fn write_lines(path: &Path, prefix: &str, n: usize) {
    let body: String = (0..n)
        .map(|i| cri("stdout", 'F', &format!("{prefix}-{i}")))
        .collect();
    append(path, body.as_bytes());
}

/// The messages from `path` that start with `prefix`, in the order shipped.
fn shipped(out: &Path, prefix: &str) -> Vec<String> {
    read_records(out)
        .iter()
        .filter_map(|r| r["message"].as_str())
        .filter(|m| m.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn expected(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Writes `a-<i>` lines to `path` without pause until stopped; returns how many.
fn steady_writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            write_lines_from(&path, "a", n, 20);
            n += 20;
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    })
}

fn write_lines_from(path: &Path, prefix: &str, from: usize, n: usize) {
    let body: String = (from..from + n)
        .map(|i| cri("stdout", 'F', &format!("{prefix}-{i}")))
        .collect();
    append(path, body.as_bytes());
}

/// The agent's "Configuration reloaded." line, with how long the reload took (`took_ms`) and
/// waited for the drain (`drain_ms`).
fn reloaded_line(logs: &str) -> String {
    let line = logs
        .lines()
        .find(|l| l.contains("Configuration reloaded."))
        .unwrap_or_else(|| panic!("no reload in:\n{logs}"));
    assert!(
        line.contains("took_ms=") && line.contains("drain_ms="),
        "{line}"
    );
    line.split("Configuration reloaded. ")
        .nth(1)
        .unwrap()
        .to_string()
}

/// `text` with `line` added to the `[tail]` table.
fn in_tail(text: &str, line: &str) -> String {
    text.replacen("[tail]\n", &format!("[tail]\n{line}\n"), 1)
}

#[test]
fn a_configmap_update_applies_a_new_exclude_without_losing_or_repeating_a_line() {
    let fx = Fixture::with_configmap();
    let mut agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let (a, b) = (fx.log("a.log"), fx.log("b.log"));
    write_lines(&b, "b-before", 100);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writer(a.clone(), Arc::clone(&stop));
    assert!(fx.wait_for_records(1000, WAIT), "{}", agent.logs());

    // Lines flow into a.log all through the update.
    let exclude_b = in_tail(
        &fx.config_text(),
        &format!("exclude = [\"{}\"]", b.display()),
    );
    fx.update_configmap(&exclude_b);
    wait_reloads(&agent, addr, 1.0, 0.0);
    let logs = agent.logs();
    assert!(
        logs.contains("The configuration changed; applying it. changed=tail.exclude cause=File"),
        "{logs}"
    );
    write_lines(&b, "b-after", 100);
    let at_reload = fx.records().len();
    assert!(fx.wait_for_records(at_reload + 1000, WAIT));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(
        wait_until(WAIT, || shipped(&fx.out, "a-").len() >= written),
        "{} of {written}",
        shipped(&fx.out, "a-").len()
    );
    assert!(agent.terminate().success());

    assert_eq!(shipped(&fx.out, "a-"), expected("a", 0..written));
    // b.log: everything written before the update, nothing after.
    assert_eq!(shipped(&fx.out, "b-"), expected("b-before", 0..100));
    eprintln!(
        "reload to the file sink with {written} lines written meanwhile: {}",
        reloaded_line(&agent.logs())
    );
}

#[test]
fn an_invalid_configuration_is_refused_and_the_old_one_keeps_running() {
    let fx = Fixture::with_configmap();
    let agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let (a, b) = (fx.log("a.log"), fx.log("b.log"));
    write_lines(&a, "a", 50);
    write_lines(&b, "b", 50);
    assert!(fx.wait_for_records(100, WAIT));
    let good = fx.config_text();

    // Two errors; had it applied, b.log would no longer be followed.
    let invalid = in_tail(
        &in_tail(&good, &format!("exlcude = [\"{}\"]", b.display())),
        "max_line_bytes = \"1B\"",
    );
    fx.update_configmap(&invalid);
    wait_reloads(&agent, addr, 0.0, 1.0);
    let logs = agent.logs();
    for error in [
        "tail.exlcude: unknown key; did you mean tail.exclude?",
        "tail.max_line_bytes:",
        "Configuration reload failed; still running on the previous configuration.",
    ] {
        assert!(logs.contains(error), "{error:?} not in:\n{logs}");
    }
    assert!(
        !logs.contains("Draining"),
        "the pipeline was not touched:\n{logs}"
    );
    let m = scrape(addr);
    assert_eq!(
        m.value("logship_config_last_reload_successful", &[]),
        Some(0.0)
    );

    // The old configuration runs on: b.log is still followed.
    write_lines(&a, "a", 50);
    write_lines(&b, "b", 50);
    assert!(fx.wait_for_records(200, WAIT), "{}", agent.logs());

    // Fixed: applied, and the gauge says the file on disk is what runs.
    let fixed = in_tail(&good, &format!("exclude = [\"{}\"]", b.display()));
    fx.update_configmap(&fixed);
    wait_reloads(&agent, addr, 1.0, 1.0);
    let m = scrape(addr);
    assert_eq!(
        m.value("logship_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let loaded_at = m
        .value("logship_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - loaded_at).abs() < 600.0, "{loaded_at} vs {now}");
    write_lines(&b, "b-excluded", 10);
    write_lines(&a, "a-last", 10);
    assert!(fx.wait_for_records(210, WAIT));
    assert_eq!(shipped(&fx.out, "b-excluded").len(), 0);
    assert_eq!(fx.records().len(), 210);
}

#[test]
fn sighup_reloads_a_file_the_watch_cannot_see() {
    // The file is a link into another directory: editing it there changes nothing the watch of
    // the link's directory sees, so only SIGHUP applies it.
    let mut fx = Fixture::new();
    let real = fx.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::rename(&fx.config, real.join("logship.toml")).unwrap();
    let etc = fx.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::os::unix::fs::symlink(real.join("logship.toml"), etc.join("logship.toml")).unwrap();
    fx.config = etc.join("logship.toml");

    let mut agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let a = fx.log("a.log");
    write_lines(&a, "a", 300);
    assert!(fx.wait_for_records(300, WAIT));

    // Unchanged: answered, not counted, still running.
    agent.hangup();
    assert!(wait_until(WAIT, || agent
        .logs()
        .contains("Configuration unchanged; nothing to reload.")));
    assert!(agent.running());
    assert_eq!(reloads(addr, "success") + reloads(addr, "failure"), 0.0);

    // Another output file.
    let second = fx.dir.path().join("second.ndjson");
    let text = fx
        .config_text()
        .replace(&fx.out.display().to_string(), &second.display().to_string());
    std::fs::write(real.join("logship.toml"), text).unwrap();
    agent.hangup();
    wait_reloads(&agent, addr, 1.0, 0.0);
    assert!(agent
        .logs()
        .contains("changed=output.file.path cause=Signal"));
    let body: String = (300..600)
        .map(|i| cri("stdout", 'F', &format!("a-{i}")))
        .collect();
    append(&a, body.as_bytes());
    assert!(
        wait_until(WAIT, || read_records(&second).len() >= 300),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    let mut all = shipped(&fx.out, "a-");
    assert_eq!(all, expected("a", 0..300), "before the reload");
    all.extend(shipped(&second, "a-"));
    assert_eq!(
        all,
        expected("a", 0..600),
        "each line once, across both files"
    );
}

#[test]
fn a_new_configuration_that_cannot_start_falls_back_to_the_old_one() {
    let fx = Fixture::with_configmap();
    let agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let a = fx.log("a.log");
    write_lines_from(&a, "a", 0, 200);
    assert!(fx.wait_for_records(200, WAIT));

    // Valid, but the sink cannot be built: its CA file does not exist.
    let missing = fx.dir.path().join("missing-ca.pem");
    let text = fx
        .config_text()
        .replace("type = \"file\"", "type = \"elasticsearch\"")
        + &format!(
            "[output.elasticsearch]\nhosts = [\"https://127.0.0.1:9\"]\ntls = {{ ca_file = \"{}\" }}\n",
            missing.display()
        );
    fx.update_configmap(&text);
    wait_reloads(&agent, addr, 0.0, 1.0);
    let logs = agent.logs();
    for line in [
        "Cannot start the pipeline with the new configuration; starting it again with the previous one.",
        "missing-ca.pem",
        "reason=\"the new pipeline cannot start\"",
    ] {
        assert!(logs.contains(line), "{line:?} not in:\n{logs}");
    }
    write_lines_from(&a, "a", 200, 200);
    assert!(fx.wait_for_records(400, WAIT), "{}", agent.logs());
    assert_eq!(shipped(&fx.out, "a-"), expected("a", 0..400));
    let (status, _, body) = support::agent::http_get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("local output"), "{body}");
}

#[test]
fn the_endpoint_moves_and_the_log_level_changes_without_a_drain_and_data_dir_is_refused() {
    let fx = Fixture::with_configmap();
    let agent = fx.spawn(&[]);
    let old_addr = agent.server_addr();
    let good = fx.config_text();

    let moved_dir = good.replace(
        &format!("data_dir = \"{}\"", fx.data.display()),
        &format!("data_dir = \"{}-elsewhere\"", fx.data.display()),
    );
    fx.update_configmap(&moved_dir);
    wait_reloads(&agent, old_addr, 0.0, 1.0);
    assert!(agent
        .logs()
        .contains("This setting cannot change while the agent runs; restart the agent to apply it. key=\"data_dir\""));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let new_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let moved = good
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{new_addr}\""),
        )
        .replace("level = \"info\"", "level = \"debug\"");
    fx.update_configmap(&moved);
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect(new_addr).is_ok()),
        "{}",
        agent.logs()
    );
    wait_reloads(&agent, new_addr, 1.0, 1.0);
    assert!(
        std::net::TcpStream::connect(old_addr).is_err(),
        "the old address is closed"
    );
    let (status, _, body) = support::agent::http_get(new_addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    // The log filter is the new one: a spurious trigger is now said at DEBUG.
    std::fs::write(fx.config.parent().unwrap().join("..touched"), "").unwrap();
    assert!(
        wait_until(WAIT, || agent
            .logs()
            .contains("DEBUG logship::telemetry: Configuration unchanged")),
        "{}",
        agent.logs()
    );
    assert!(!agent.logs().contains("Draining"), "{}", agent.logs());
}

#[test]
fn a_deleted_file_still_being_written_is_finished_across_a_reload() {
    let fx = Fixture::with_configmap();
    // Keep a deleted file open long enough for the reload to happen in between.
    let agent = fx.spawn(&[("LOGSHIP_TAIL__ROTATE_WAIT", "60s")]);
    let addr = agent.server_addr();
    let path = fx.log("c.log");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut write = |from: usize, n: usize| {
        use std::io::Write;
        let body: String = (from..from + n)
            .map(|i| cri("stdout", 'F', &format!("c-{i}")))
            .collect();
        writer.write_all(body.as_bytes()).unwrap();
    };
    write(0, 100);
    assert!(fx.wait_for_records(100, WAIT));
    std::fs::remove_file(&path).unwrap();
    assert!(wait_until(WAIT, || agent
        .logs()
        .contains("Log file deleted; reading it to its end.")));

    let text = in_tail(&fx.config_text(), "exclude = [\"/nowhere/*.log\"]");
    fx.update_configmap(&text);
    wait_reloads(&agent, addr, 1.0, 0.0);
    assert!(
        agent
            .logs()
            .contains("Continuing a rotated or deleted log file across the reload."),
        "{}",
        agent.logs()
    );
    // Written after the reload, to a file no name leads to: only the handed-over descriptor
    // reaches these lines.
    write(100, 100);
    assert!(fx.wait_for_records(200, WAIT), "{}", agent.logs());
    assert_eq!(shipped(&fx.out, "c-"), expected("c", 0..200));
}

/// The fixture's configuration shipping to Elasticsearch at `url`, with short batches and
/// backoffs, and a short drain.
fn to_elasticsearch(text: &str, url: &str, max_events: u32) -> String {
    text.replace("type = \"file\"", "type = \"elasticsearch\"")
        .replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"2s\"")
        + &format!(
            r#"[output.elasticsearch]
hosts = ["{url}"]
request_timeout = "5s"
batch = {{ timeout = "50ms", max_events = {max_events} }}
retry = {{ initial_backoff = "10ms", max_backoff = "300ms" }}
"#
        )
}

/// Messages stored in `es`, with how often each is there.
fn stored(es: &TestEs) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for doc in es.documents(INDEX).values() {
        let m = doc["message"].as_str().unwrap_or_default().to_string();
        *counts.entry(m).or_insert(0) += 1;
    }
    counts
}

fn assert_each_once(es: &TestEs, expected: &[String]) {
    let counts = stored(es);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    let repeated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
    assert_eq!(counts.len(), expected.len(), "unexpected documents");
}

const INDEX: &str = "logs-logship-default";

#[test]
fn a_reload_while_shipping_to_elasticsearch_sends_nothing_twice() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::with_configmap();
    let base = fx.config_text();
    // A drain long enough for a loaded machine: this test is about a drain that completes.
    let config = |max_events| {
        to_elasticsearch(&base, &es.url(), max_events)
            .replace("shutdown_timeout = \"2s\"", "shutdown_timeout = \"10s\"")
    };
    fx.update_configmap(&config(1000));
    let agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let a = fx.log("a.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writer(a, Arc::clone(&stop));
    assert!(es.wait_for_doc_count(2000, WAIT), "{}", agent.logs());

    fx.update_configmap(&config(200));
    wait_reloads(&agent, addr, 1.0, 0.0);
    let at_reload = es.doc_count();
    assert!(es.wait_for_doc_count(at_reload + 2000, WAIT));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(es.wait_for_doc_count(written, WAIT), "{}", agent.logs());
    assert_each_once(&es, &expected("a", 0..written));
    // The drain delivered everything in flight: nothing had to be sent again.
    assert_eq!(
        scrape(addr).value("logship_elasticsearch_items_duplicate_total", &[]),
        Some(0.0),
        "{}",
        agent.logs()
    );
    assert_eq!(
        es.item_status_counts().get(&409).copied().unwrap_or(0),
        0,
        "no create was answered 409"
    );
    eprintln!(
        "reload shipping to Elasticsearch with {written} lines written meanwhile: {}",
        reloaded_line(&agent.logs())
    );
}

#[test]
fn a_new_elasticsearch_url_takes_over_what_the_unreachable_one_never_got() {
    let gone = TestEs::start(Flavor::Elasticsearch8);
    gone.down();
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::with_configmap();
    let base = fx.config_text();
    fx.update_configmap(&to_elasticsearch(&base, &gone.url(), 1000));
    let agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let a = fx.log("a.log");
    write_lines_from(&a, "a", 0, 300);
    assert!(wait_until(WAIT, || {
        scrape(addr)
            .value(
                "logship_elasticsearch_responses_total",
                &[("class", "none")],
            )
            .is_some_and(|n| n > 0.0)
    }));

    // The drain cannot deliver to the old cluster: it gives up after the drain timeout, and the
    // new pipeline reads from the positions, which never moved.
    fx.update_configmap(&to_elasticsearch(&base, &es.url(), 1000));
    wait_reloads(&agent, addr, 1.0, 0.0);
    assert!(
        agent.logs().contains("Drain timeout reached"),
        "{}",
        agent.logs()
    );
    write_lines_from(&a, "a", 300, 300);
    assert!(es.wait_for_doc_count(600, WAIT), "{}", agent.logs());
    assert_each_once(&es, &expected("a", 0..600));
    assert_eq!(gone.doc_count(), 0);
}
