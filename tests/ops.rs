//! The HTTP endpoint and `logship status`, against the real binary: `/metrics` is Prometheus
//! text whose counters follow the lines written, the probes answer what the kubelet should
//! conclude (live while Elasticsearch is down; unready only once nothing can leave and the
//! buffer is full; ready again when it is back), `logship status` says the same to a person, and
//! an address that cannot be bound stops the start.
//!
//! Each agent listens on 127.0.0.1:0 (the Fixture's config) and the test reads the port it
//! logged, so tests never race for a port; the one test of the default address picks a free
//! port first.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::agent::{append, cri, wait_until, Fixture};
use support::elasticsearch::{Flavor, TestEs};
use support::prometheus::{self, Exposition};

const WAIT: Duration = Duration::from_secs(30);

/// One GET: the status code, the Content-Type and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    support::agent::http_get(addr, path)
}

fn scrape(addr: SocketAddr) -> Exposition {
    let (status, content_type, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn counter(e: &Exposition, name: &str) -> f64 {
    e.value(name, &[])
        .unwrap_or_else(|| panic!("no {name} in {:?}", e.families.keys()))
}

/// Writes `n` CRI lines `<prefix>-<i>`; returns the bytes written.
fn write_lines(path: &std::path::Path, prefix: &str, n: usize) -> usize {
    let body: String = (0..n)
        .map(|i| cri("stdout", 'F', &format!("{prefix}-{i}")))
        .collect();
    append(path, body.as_bytes());
    body.len()
}

fn status_command(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("status")
        .args(args)
        .envs(env.iter().copied())
        .env("NODE_NAME", "test-node")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_are_prometheus_text_and_count_the_lines_written() {
    let fx = Fixture::new();
    let agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    let log = fx.log("app.log");
    let mut bytes = write_lines(&log, "first", 500);
    assert!(fx.wait_for_records(500, WAIT), "{}", agent.logs());
    let sent_all = |n: f64| {
        wait_until(WAIT, || {
            counter(&scrape(addr), "logship_sent_records_total") == n
        })
    };
    assert!(sent_all(500.0));

    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_read_records_total"), 500.0);
    assert_eq!(counter(&m, "logship_read_bytes_total"), bytes as f64);
    assert_eq!(counter(&m, "logship_files_watched"), 1.0);
    assert_eq!(
        m.value("logship_file_events_total", &[("event", "opened")]),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "logship_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        counter(&m, "logship_buffer_capacity_bytes"),
        12.0 * 1024.0 * 1024.0
    );
    let latency = m
        .family("logship_elasticsearch_request_duration_seconds")
        .unwrap();
    assert_eq!(latency.kind, "histogram");
    assert_eq!(
        counter(&m, "logship_elasticsearch_request_duration_seconds_count"),
        0.0,
        "a file output sends no bulk requests"
    );
    for (name, family) in &m.families {
        assert!(name.starts_with("logship_"), "{name}");
        assert!(family.help.is_some(), "{name} has no HELP");
        assert_ne!(family.kind, "untyped", "{name} has no TYPE");
        // Bounded cardinality: no label carries a path, a pod or anything of the input.
        for s in &family.samples {
            for value in s.labels.values() {
                assert!(!value.contains('/') && value.len() < 24, "{name}: {value}");
            }
        }
    }

    // The counters move with the input, exactly.
    bytes += write_lines(&log, "second", 120);
    assert!(fx.wait_for_records(620, WAIT));
    assert!(sent_all(620.0));
    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_read_records_total"), 620.0);
    assert_eq!(counter(&m, "logship_read_bytes_total"), bytes as f64);
    assert!(counter(&m, "logship_positions_writes_total") >= 1.0);
}

#[test]
fn probes_answer_live_and_ready_with_a_local_output() {
    let fx = Fixture::new();
    let mut agent = fx.spawn(&[]);
    let addr = agent.server_addr();
    write_lines(&fx.log("a.log"), "x", 10);
    assert!(fx.wait_for_records(10, WAIT));

    let (status, content_type, body) = get(addr, "/healthz");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );
    assert!(body.starts_with("live: loops turning (tailer "), "{body}");
    assert!(body.contains("sink "), "{body}");
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready: configuration and positions loaded; local output; buffer "),
        "{body}"
    );
    let (status, _, body) = get(addr, "/nothing-here");
    assert_eq!(status, 404);
    assert!(
        body.contains("/metrics, /healthz, /readyz and /status"),
        "{body}"
    );

    // An idle agent stays live: its loops turn without input.
    std::thread::sleep(Duration::from_millis(2500));
    let m = scrape(addr);
    for which in ["tailer", "sink"] {
        let age = m
            .value("logship_heartbeat_age_seconds", &[("loop", which)])
            .unwrap();
        assert!(age < 2.0, "{which} idle for {age}s");
    }
    assert_eq!(get(addr, "/healthz").0, 200);

    // The endpoint is part of the agent's life: gone after a clean stop.
    assert!(agent.terminate().success());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

/// Elasticsearch at `url` with short batches and backoffs, and the smallest buffer the rules
/// allow, so that a little input fills it.
fn small_buffer_to(url: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__TIMEOUT", "50ms"),
        (
            "LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__INITIAL_BACKOFF",
            "10ms",
        ),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__MAX_BACKOFF", "200ms"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__REQUEST_TIMEOUT", "5s"),
        ("LOGSHIP_TAIL__READ_BUDGET", "4KiB"),
        ("LOGSHIP_TAIL__MAX_LINE_BYTES", "1KiB"),
        ("LOGSHIP_BUFFER__MAX_BYTES", "8KiB"),
    ]
}

#[test]
fn readyz_fails_while_elasticsearch_is_down_and_the_buffer_full_and_recovers() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.down();
    let fx = Fixture::new();
    let url = es.url();
    let agent = fx.spawn(&small_buffer_to(&url));
    let addr = agent.server_addr();

    // Down, but nothing waiting: records could still be taken in, so ready.
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Elasticsearch not reachable, records wait in the buffer"),
        "{body}"
    );

    let n = 2000;
    write_lines(&fx.log("app.log"), "line", n);
    let unready = wait_until(WAIT, || get(addr, "/readyz").0 == 503);
    assert!(unready, "{}", agent.logs());
    let (_, _, body) = get(addr, "/readyz");
    assert!(
        body.starts_with(
            "not ready: Elasticsearch not reachable and the buffer is full, reading waits; buffer "
        ),
        "{body}"
    );
    // Held back, not stuck: restarting would not help, so it stays live.
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_elasticsearch_reachable"), 0.0);
    assert!(counter(&m, "logship_buffer_used_bytes") > 4096.0);

    // `logship status` says the same, and fails.
    let server = addr.to_string();
    let (code, stdout, stderr) = status_command(&["--server", &server], &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("\n  not ready: Elasticsearch not reachable and the buffer is full"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  live: loops turning"), "{stdout}");
    assert!(stdout.contains("\n  bulk      "), "{stdout}");

    // Back: ready again, and every line arrives once.
    es.up();
    assert!(
        wait_until(WAIT, || get(addr, "/readyz").0 == 200),
        "{}",
        agent.logs()
    );
    assert!(wait_until(Duration::from_secs(60), || es.doc_count() >= n));
    assert_eq!(es.doc_count(), n);
    assert!(wait_until(WAIT, || counter(
        &scrape(addr),
        "logship_sent_records_total"
    ) == n as f64));
    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_elasticsearch_reachable"), 1.0);
    assert!(
        m.value("logship_elasticsearch_responses_total", &[("class", "2xx")])
            .unwrap()
            >= 1.0
    );
    let attempts = counter(&m, "logship_elasticsearch_request_duration_seconds_count");
    let answered: f64 = ["2xx", "4xx", "5xx", "none"]
        .iter()
        .map(|c| {
            m.value("logship_elasticsearch_responses_total", &[("class", c)])
                .unwrap()
        })
        .sum();
    assert_eq!(attempts, answered, "one latency observation per attempt");
    let (code, stdout, _) = status_command(&["--server", &server], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("\n  ready: configuration and positions loaded; Elasticsearch reachable"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "\n  records   {n} read, {n} sent, 0 dead-lettered, 0 dropped\n"
        )),
        "{stdout}"
    );
}

/// An outage after the cluster had answered: the first failed request tells readiness, the
/// buffer fills, and the first answer after the outage makes the agent ready again.
#[test]
fn readyz_follows_an_outage_that_starts_while_running() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let url = es.url();
    let agent = fx.spawn(&small_buffer_to(&url));
    let addr = agent.server_addr();
    let log = fx.log("app.log");
    write_lines(&log, "before", 100);
    assert!(
        wait_until(WAIT, || es.doc_count() == 100),
        "{}",
        agent.logs()
    );
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("; Elasticsearch reachable; buffer "),
        "{body}"
    );

    es.down();
    write_lines(&log, "during", 2000);
    assert!(
        wait_until(WAIT, || get(addr, "/readyz").0 == 503),
        "{}",
        agent.logs()
    );
    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_elasticsearch_reachable"), 0.0);
    assert!(
        m.value(
            "logship_elasticsearch_responses_total",
            &[("class", "none")]
        )
        .unwrap()
            >= 1.0,
        "a failed attempt is what told"
    );
    assert_eq!(get(addr, "/healthz").0, 200);

    es.up();
    assert!(wait_until(WAIT, || get(addr, "/readyz").0 == 200));
    assert!(wait_until(Duration::from_secs(60), || es.doc_count() >= 2100));
    assert_eq!(es.doc_count(), 2100, "each line once");
}

#[test]
fn status_finds_the_agent_from_the_configuration() {
    // 0.0.0.0 in the configuration is asked on 127.0.0.1. The port is picked free first; the
    // system does not hand out a port just released at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("0.0.0.0:{port}");
    let env = [("LOGSHIP_SERVER__LISTEN", listen.as_str())];
    let fx = Fixture::new();
    let agent = fx.spawn(&env);
    assert_eq!(agent.server_addr().port(), port);
    write_lines(&fx.log("a.log"), "x", 42);
    assert!(fx.wait_for_records(42, WAIT));
    let config = fx.config.display().to_string();
    let mut last = String::new();
    let settled = wait_until(WAIT, || {
        let (code, stdout, stderr) = status_command(&["--config", &config], &env);
        last = format!("{code}\n{stdout}{stderr}");
        code == 0 && stdout.contains("records   42 read, 42 sent")
    });
    assert!(settled, "{last}");
    let expected_head = format!(
        "0\nlogship {} at http://127.0.0.1:{port}\n  ready: configuration and positions loaded; local output; buffer ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(last.starts_with(&expected_head), "{last}");
    for line in [
        "\n  live: loops turning (",
        "\n  files     1 followed\n",
        "\n  retries   0 requests, 0 records\n",
        "\n  buffer    0 B of 12.0 MiB (0%)\n",
        "\n  bulk      no requests\n",
    ] {
        assert!(last.contains(line), "{line:?} not in:\n{last}");
    }
    // The document behind it, as a monitoring script would read it.
    let (code, content_type, body) = get(agent.server_addr(), "/status");
    assert_eq!(
        (code, content_type.as_str()),
        (200, "application/json"),
        "{body}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["ready"]["ok"], true, "{doc}");
    assert_eq!(doc["live"]["ok"], true, "{doc}");
    assert_eq!(doc["records"]["read"], 42, "{doc}");
    assert_eq!(doc["records"]["sent"], 42, "{doc}");
    assert_eq!(doc["files_followed"], 1, "{doc}");
    assert_eq!(doc["bulk"]["attempts"], 0, "{doc}");
    assert!(doc["kubernetes"].is_null(), "enrichment is off: {doc}");
}

/// An endpoint that answers, but not with a status document (an older logship, another
/// server), is named as such: exit 69, not a summary of zeros.
#[test]
fn status_of_something_else_says_what_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for answer in [
            "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found",
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nhola",
        ] {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut request);
            std::io::Write::write_all(&mut stream, answer.as_bytes()).unwrap();
        }
    });
    let (code, _, stderr) = status_command(&["--server", &addr.to_string()], &[]);
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "asking http://{addr}/status: answered 404, not a status document"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = status_command(&["--server", &addr.to_string()], &[]);
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "asking http://{addr}/status: not a status document: "
        )),
        "{stderr}"
    );
    server.join().unwrap();
}

#[test]
fn status_without_an_agent_exits_69() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, stdout, stderr) = status_command(&["--server", &closed.to_string()], &[]);
    assert_eq!(code, 69, "{stdout}{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "logship: cannot reach the agent: asking http://{closed}/status: "
        )),
        "{stderr}"
    );
    let (code, _, stderr) = status_command(&["--server", "not an address"], &[]);
    assert_eq!(code, 69);
    assert!(stderr.contains("is not an address (HOST:PORT)"), "{stderr}");
}

#[test]
fn an_address_in_use_stops_the_start_with_exit_70() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let fx = Fixture::new();
    write_lines(&fx.log("a.log"), "x", 5);
    let mut agent = fx.spawn(&[("LOGSHIP_SERVER__LISTEN", &addr)]);
    let status = agent.wait(WAIT).expect("the agent exits");
    assert_eq!(status.code(), Some(70), "{}", agent.logs());
    let logs = agent.logs();
    assert!(
        logs.contains(&format!(
            "binding the HTTP endpoint to server.listen = {addr}: Address already in use"
        )),
        "{logs}"
    );
    // Refused before any stage ran: nothing was read or shipped.
    assert!(!logs.contains("Initial scan done"), "{logs}");
    assert!(fx.records().is_empty());
}

#[test]
fn a_listen_address_that_is_not_one_is_a_configuration_error() {
    let fx = Fixture::new();
    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .args(["check", "--config"])
        .arg(&fx.config)
        .env("LOGSHIP_SERVER__LISTEN", "localhost:2020")
        .env("NODE_NAME", "n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen: \"localhost:2020\" is not an IP address and port"),
        "{stderr}"
    );
}

/// The reader the tests above rely on refuses what Prometheus refuses.
#[test]
fn the_prometheus_reader_is_strict() {
    let good = "# HELP a_total A \\\\ help.\n# TYPE a_total counter\na_total{x=\"q\\\"}\",y=\"\"} 1 1700000000\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let e = prometheus::parse(good).unwrap();
    assert_eq!(e.value("a_total", &[("x", "q\"}"), ("y", "")]), Some(1.0));
    assert_eq!(
        e.family("a_total").unwrap().help.as_deref(),
        Some("A \\ help.")
    );
    let bad = [
        "a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n",
        "a 1\na 2\n",
        "1a 1\n",
        "a{1x=\"1\"} 1\n",
        "a{x=1} 1\n",
        "a one\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a widget\n",
        "a 1\n# TYPE a gauge\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "a{x=\"1\",x=\"2\"} 1\n",
    ];
    for text in bad {
        assert!(prometheus::parse(text).is_err(), "accepted {text:?}");
    }
}

#[test]
fn refused_credentials_make_the_agent_unready_once_its_buffer_is_full() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.require(support::elasticsearch::Credentials::basic(
        "logship", "right",
    ));
    let fx = Fixture::new();
    let url = es.url();
    let mut env = small_buffer_to(&url);
    env.push(("LOGSHIP_OUTPUT__ELASTICSEARCH__AUTH__USER", "logship"));
    env.push(("LOGSHIP_OUTPUT__ELASTICSEARCH__AUTH__PASSWORD", "wrong"));
    let agent = fx.spawn(&env);
    let addr = agent.server_addr();
    write_lines(&fx.log("app.log"), "line", 2000);
    // Elasticsearch answers, but only 401: nothing can leave, so a rolling update must stop.
    assert!(
        wait_until(WAIT, || get(addr, "/readyz").0 == 503),
        "{}",
        agent.logs()
    );
    let m = scrape(addr);
    assert_eq!(counter(&m, "logship_elasticsearch_reachable"), 0.0);
    assert_eq!(counter(&m, "logship_sent_records_total"), 0.0);
    assert!(agent.logs().contains("HTTP 401"), "{}", agent.logs());
}
