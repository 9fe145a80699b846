//! Multiline joining through `LineParser`, as the reader drives it: real stack traces of each
//! language written to CRI files (and docker and raw ones), interleaved with other lines and
//! with the other stream; time through the `now` argument, never a sleep.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::parse::tests::{batch, collect, whole, Rec, NOW};
use crate::parse::{FormatChoice, LineParser, Oversize};
use crate::telemetry::{self, metrics};

const JAVA_SPRING: &[&str] = &[
    "java.lang.IllegalStateException: Failed to execute CommandLineRunner",
    "\tat org.springframework.boot.SpringApplication.callRunner(SpringApplication.java:798)",
    "\tat org.springframework.boot.SpringApplication.callRunners(SpringApplication.java:779)",
    "\tat org.springframework.boot.SpringApplication.run(SpringApplication.java:322)",
    "\tat com.example.shop.ShopApplication.main(ShopApplication.java:12)",
    "Caused by: org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC Connection",
    "\tat org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException(HibernateJpaDialect.java:275)",
    "\tat com.example.shop.OrderRepository.findAll(OrderRepository.java:31)",
    "\t... 12 more",
    "Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms.",
    "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
    "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
    "\t... 25 common frames omitted",
];

const JAVA_SUPPRESSED: &[&str] = &[
    "Exception in thread \"main\" java.lang.RuntimeException: request failed",
    "\tat com.example.Client.send(Client.java:54)",
    "\tat com.example.Main.main(Main.java:9)",
    "\tSuppressed: java.io.IOException: close failed",
    "\t\tat com.example.Conn.close(Conn.java:77)",
    "\t\tat com.example.Client.send(Client.java:50)",
    "\t\t... 1 more",
    "Caused by: java.net.SocketTimeoutException: Read timed out",
    "\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
    "\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:976)",
    "\t... 2 more",
];

const SCALA: &[&str] = &[
    "scala.MatchError: 5 (of class java.lang.Integer)",
    "\tat Main$.main(Main.scala:3)",
    "\tat Main.main(Main.scala)",
];

/// A logging framework's line before the trace it logged: a record of its own.
const LOGBACK: &str = "2026-11-22 10:00:01.123 ERROR 1 --- [nio-8080-exec-1] o.a.c.c.C.[.[.[/].[dispatcherServlet] : Servlet.service() for servlet [dispatcherServlet] threw exception";
const JAVA_NPE: &[&str] = &[
    "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"name\" is null",
    "\tat com.example.shop.Greeter.greet(Greeter.java:14)",
    "\tat jdk.internal.reflect.GeneratedMethodAccessor42.invoke(Unknown Source)",
    "\tat org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)",
    "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
];

const PYTHON_DURING: &[&str] = &[
    "Traceback (most recent call last):",
    "  File \"/app/worker.py\", line 12, in load",
    "    return json.loads(raw)",
    "           ^^^^^^^^^^^^^^^",
    "  File \"/usr/local/lib/python3.12/json/__init__.py\", line 346, in loads",
    "    return _default_decoder.decode(s)",
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    "  File \"/app/worker.py\", line 30, in <module>",
    "    main()",
    "  File \"/app/worker.py\", line 26, in main",
    "    load(payload)",
    "  File \"/app/worker.py\", line 14, in load",
    "    raise ValueError(\"bad payload\")",
    "ValueError: bad payload",
];

const PYTHON_CAUSE: &[&str] = &[
    "Traceback (most recent call last):",
    "  File \"/app/db.py\", line 8, in connect",
    "    sock = socket.create_connection((host, 5432), timeout=3)",
    "  File \"/usr/local/lib/python3.12/socket.py\", line 852, in create_connection",
    "    raise exceptions[0]",
    "ConnectionRefusedError: [Errno 111] Connection refused",
    "",
    "The above exception was the direct cause of the following exception:",
    "",
    "Traceback (most recent call last):",
    "  File \"/app/main.py\", line 5, in <module>",
    "    db.connect()",
    "  File \"/app/db.py\", line 10, in connect",
    "    raise DatabaseUnavailable(host) from exc",
    "db.DatabaseUnavailable: postgres.default.svc",
];

const PYTHON_GROUP: &[&str] = &[
    "  + Exception Group Traceback (most recent call last):",
    "  |   File \"/app/jobs.py\", line 9, in <module>",
    "  |     raise ExceptionGroup(\"jobs failed\", errors)",
    "  | ExceptionGroup: jobs failed (2 sub-exceptions)",
    "  +-+---------------- 1 ----------------",
    "    | ValueError: job 1",
    "    +---------------- 2 ----------------",
    "    | TimeoutError: job 2",
    "    +------------------------------------",
];

const GO_PANIC: &[&str] = &[
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x6b4a1c]",
    "",
    "goroutine 42 [running]:",
    "github.com/acme/shop/internal/orders.(*Service).Ship(0x0, {0x8f1e20, 0xc0001a4000}, 0x4d2)",
    "\t/src/internal/orders/service.go:88 +0x3c",
    "github.com/acme/shop/internal/api.(*Handler).postShip(0xc00012e0a0, {0x8f0d10, 0xc0002a81c0}, 0xc0002b2000)",
    "\t/src/internal/api/orders.go:41 +0x1d2",
    "net/http.HandlerFunc.ServeHTTP(0xc0001c6000?, {0x8f0d10?, 0xc0002a81c0?}, 0x0?)",
    "\t/usr/local/go/src/net/http/server.go:2171 +0x29",
    "created by net/http.(*Server).Serve in goroutine 1",
    "\t/usr/local/go/src/net/http/server.go:3285 +0x4b4",
    "",
    "goroutine 1 [IO wait]:",
    "internal/poll.runtime_pollWait(0x7f3c5c1e8e28, 0x72)",
    "\t/usr/local/go/src/runtime/netpoll.go:345 +0x85",
    "main.main()",
    "\t/src/cmd/shop/main.go:57 +0x2a5",
    "exit status 2",
];

const GO_SIGQUIT: &[&str] = &[
    "SIGQUIT: quit",
    "PC=0x46d0a1 m=0 sigcode=0",
    "",
    "goroutine 0 gp=0x9b8e40 m=0 mp=0x9b9a60 [idle]:",
    "runtime.futex(0x9b9ba0, 0x80, 0x0, 0x0, 0x0, 0x0)",
    "\t/usr/local/go/src/runtime/sys_linux_amd64.s:557 +0x21 fp=0x7ffc0b5e1e08 sp=0x7ffc0b5e1e00 pc=0x46d0a1",
    "...additional frames elided...",
    "",
    "goroutine 1 gp=0xc000002380 m=nil [chan receive, 12 minutes]:",
    "main.main()",
    "\t/src/cmd/worker/main.go:40 +0x1a5 fp=0xc000073f50 sp=0xc000073ee0 pc=0x4a12c5",
    "",
    "rax    0xca",
    "rbx    0x0",
    "rip    0x46d0a1",
    "rflags 0x286",
    "cs     0x33",
];

const NODE_TYPE: &[&str] = &[
    "TypeError: Cannot read properties of undefined (reading 'id')",
    "    at getOrder (/app/src/orders.js:17:24)",
    "    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)",
    "    at next (/app/node_modules/express/lib/router/route.js:149:13)",
];

const NODE_PROPS: &[&str] = &[
    "Error: connect ECONNREFUSED 10.96.0.12:5432",
    "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16) {",
    "  errno: -111,",
    "  code: 'ECONNREFUSED',",
    "  syscall: 'connect',",
    "  address: '10.96.0.12',",
    "  port: 5432",
    "}",
];

const NODE_UNCAUGHT: &[&str] = &[
    "/app/src/server.js:42",
    "throw new Error('config missing: DATABASE_URL');",
    "^",
    "",
    "Error: config missing: DATABASE_URL",
    "    at Object.<anonymous> (/app/src/server.js:42:11)",
    "    at Module._compile (node:internal/modules/cjs/loader:1256:14)",
    "    at node:internal/main/run_main_module:23:47",
    "",
    "Node.js v18.19.0",
];

const NODE_CAUSE: &[&str] = &[
    "Error: payment failed",
    "    at charge (/app/src/pay.js:10:11) {",
    "  [cause]: Error: card declined",
    "      at gateway (/app/src/gateway.js:4:9)",
    "}",
];

/// The rule `name` with `limits`.
fn rule(name: &str, limits: Limits) -> Arc<MultilineRule> {
    let b = Builtin::ALL.into_iter().find(|b| b.name() == name).unwrap();
    Arc::new(MultilineRule::builtin(b, limits))
}

fn joining(format: FormatChoice, rule: Option<Arc<MultilineRule>>) -> LineParser {
    LineParser::new(
        format,
        1 << 20,
        Oversize::Split,
        Arc::from(Path::new("/var/log/pods/x/0.log")),
    )
    .with_multiline(rule)
}

/// A CRI line of `stream` at `ms` milliseconds after 10:00:00.
fn cri_at(stream: Stream, ms: u64, message: &str) -> String {
    let s = if stream == Stream::Stderr {
        "stderr"
    } else {
        "stdout"
    };
    let (secs, ms) = (ms / 1000, ms % 1000);
    format!(
        "2026-11-22T10:{:02}:{:02}.{ms:03}Z {s} F {message}",
        secs / 60,
        secs % 60
    )
}

/// A CRI file of `lines` written within one millisecond; returns the lines as the reader
/// hands them over.
fn cri_file(lines: &[(Stream, &str)]) -> Vec<String> {
    lines.iter().map(|(s, m)| cri_at(*s, 0, m)).collect()
}

/// Pushes `texts` (whole lines from offset 0), then flushes; the records.
fn run(p: &mut LineParser, texts: &[String]) -> Vec<Rec> {
    let mut b = batch();
    let mut at = 0;
    for t in texts {
        let l = whole(at, t);
        at = l.end;
        p.push(l, Timestamp(NOW), &mut b);
    }
    p.flush(Timestamp(NOW), &mut b);
    collect(&b)
}

fn messages(recs: &[Rec], stream: Stream) -> Vec<String> {
    recs.iter()
        .filter(|r| r.stream == stream)
        .map(|r| r.message.clone())
        .collect()
}

/// A trace's lines as one message: blank lines at its end belong to no message.
fn joined(lines: &[&str]) -> String {
    lines.join("\n").trim_end_matches('\n').to_string()
}

fn on(stream: Stream, lines: &[&'static str]) -> Vec<(Stream, &'static str)> {
    lines.iter().map(|l| (stream, *l)).collect()
}

#[test]
fn real_traces_of_each_language_become_one_record() {
    type Case = (&'static str, Vec<&'static str>, Vec<String>);
    let access = "10.1.2.3 - - [22/Nov/2026:10:00:00 +0000] \"GET /healthz HTTP/1.1\" 200 2";
    let cases: Vec<Case> = vec![
        (
            "java",
            [
                &["Starting ShopApplication v1.4.2"],
                JAVA_SPRING,
                &[access],
                JAVA_SUPPRESSED,
                SCALA,
            ]
            .concat(),
            vec![
                "Starting ShopApplication v1.4.2".into(),
                joined(JAVA_SPRING),
                access.into(),
                joined(JAVA_SUPPRESSED),
                joined(SCALA),
            ],
        ),
        (
            "java",
            [&[LOGBACK], JAVA_NPE, &[access]].concat(),
            vec![LOGBACK.into(), joined(JAVA_NPE), access.into()],
        ),
        (
            "python",
            [
                &["ERROR:root:job 42 failed"],
                PYTHON_DURING,
                PYTHON_CAUSE,
                &[access],
                PYTHON_GROUP,
            ]
            .concat(),
            vec![
                "ERROR:root:job 42 failed".into(),
                joined(PYTHON_DURING),
                joined(PYTHON_CAUSE),
                access.into(),
                joined(PYTHON_GROUP),
            ],
        ),
        (
            "go",
            [
                &["listening on :8080"],
                GO_PANIC,
                GO_SIGQUIT,
                &["{\"level\":\"info\",\"msg\":\"restarted\"}"],
            ]
            .concat(),
            vec![
                "listening on :8080".into(),
                joined(GO_PANIC),
                joined(GO_SIGQUIT),
                "{\"level\":\"info\",\"msg\":\"restarted\"}".into(),
            ],
        ),
        (
            "nodejs",
            [
                &["Server listening on :3000"],
                NODE_TYPE,
                NODE_PROPS,
                &[access],
                NODE_UNCAUGHT,
            ]
            .concat(),
            vec![
                "Server listening on :3000".into(),
                joined(NODE_TYPE),
                joined(NODE_PROPS),
                access.into(),
                joined(NODE_UNCAUGHT),
            ],
        ),
        (
            "nodejs",
            [NODE_CAUSE, NODE_TYPE].concat(),
            vec![joined(NODE_CAUSE), joined(NODE_TYPE)],
        ),
    ];
    for (name, lines, want) in cases {
        let mut p = joining(FormatChoice::Cri, Some(rule(name, Limits::default())));
        let got = run(&mut p, &cri_file(&on(Stream::Stderr, &lines)));
        assert_eq!(messages(&got, Stream::Stderr), want, "{name}");
        assert_eq!(p.pending_start(), None);
    }
}

#[test]
fn without_a_rule_every_line_is_a_record() {
    let mut p = joining(FormatChoice::Cri, None);
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, JAVA_SPRING)));
    assert_eq!(got.len(), JAVA_SPRING.len());
}

#[test]
fn interleaved_streams_are_joined_apart() {
    // A trace on stderr while stdout carries on: every stdout line is its own record, shipped
    // at once; the trace is one record with the offset of its first line and the end of its
    // last; the ack range stops at the trace's start while it is open.
    let mut lines = Vec::new();
    for (i, frame) in JAVA_SPRING.iter().enumerate() {
        lines.push(cri_at(Stream::Stderr, 0, frame));
        lines.push(cri_at(
            Stream::Stdout,
            0,
            &format!("GET /api/items/{i} 200"),
        ));
    }
    lines.push(cri_at(Stream::Stderr, 0, "INFO retrying in 5s"));
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let mut b = batch();
    let mut at = 0;
    let mut spans = Vec::new();
    for t in &lines {
        let l = whole(at, t);
        spans.push((l.offset, l.end));
        at = l.end;
        p.push(l, Timestamp(NOW), &mut b);
        if spans.len() < lines.len() {
            assert_eq!(
                p.pending_start(),
                Some(0),
                "held from the trace's first line"
            );
        }
    }
    assert_eq!(p.pending_start(), None);
    let got = collect(&b);
    let out = messages(&got, Stream::Stdout);
    assert_eq!(out.len(), JAVA_SPRING.len());
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, m)| *m == format!("GET /api/items/{i} 200")));
    let err: Vec<&Rec> = got.iter().filter(|r| r.stream == Stream::Stderr).collect();
    assert_eq!(err.len(), 2);
    assert_eq!(err[0].message, joined(JAVA_SPRING));
    assert_eq!(
        (err[0].offset, err[0].end),
        (0, spans[2 * JAVA_SPRING.len() - 2].1)
    );
    assert_eq!(err[1].message, "INFO retrying in 5s");
    // Stdout lines went out before the trace, which completed last.
    assert_eq!(got.last().unwrap().message, "INFO retrying in 5s");
}

#[test]
fn flush_timeout_ships_an_idle_record_by_the_injected_clock() {
    let limits = Limits {
        flush_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let mut p = joining(FormatChoice::Cri, Some(rule("java", limits)));
    let mut b = batch();
    let mut at = 0;
    for frame in JAVA_NPE {
        let t = cri_at(Stream::Stderr, 0, frame);
        let l = whole(at, &t);
        at = l.end;
        p.push(l, Timestamp(NOW), &mut b);
    }
    assert!(b.records.is_empty());
    let second = 1_000_000_000;
    assert_eq!(p.deadline(), Some(Timestamp(NOW + second)));
    let timeouts = telemetry::get(&metrics().multiline_closed_timeout);
    p.expire(Timestamp(NOW + second - 1), &mut b);
    assert!(b.records.is_empty(), "not yet");
    assert_eq!(p.ack_end(at), 0);
    p.expire(Timestamp(NOW + second), &mut b);
    assert_eq!(collect(&b)[0].message, joined(JAVA_NPE));
    assert_eq!(p.deadline(), None);
    assert_eq!(p.ack_end(at), at);
    assert!(telemetry::get(&metrics().multiline_closed_timeout) > timeouts);
    // A clock that went back does not hold a record for as long.
    let t = cri_at(Stream::Stderr, 0, JAVA_NPE[0]);
    p.push(whole(at, &t), Timestamp(NOW), &mut b);
    p.expire(Timestamp(NOW - 3600 * second), &mut b);
    assert_eq!(b.records.len(), 2);
}

#[test]
fn a_line_written_after_the_flush_timeout_does_not_join() {
    // What the file says decides, not when it is read: re-read after a restart, the same.
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let lines = [
        cri_at(Stream::Stderr, 0, SCALA[0]),
        cri_at(Stream::Stderr, 10, SCALA[1]),
        cri_at(Stream::Stderr, 1500, SCALA[2]),
    ];
    let got = run(&mut p, &lines);
    assert_eq!(
        messages(&got, Stream::Stderr),
        [joined(&SCALA[..2]), SCALA[2].to_string()]
    );
}

#[test]
fn a_quiet_stream_does_not_hold_its_record_while_the_other_carries_on() {
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let mut b = batch();
    let mut at = 0;
    let mut push = |p: &mut LineParser, b: &mut Batch, line: String| {
        let l = whole(at, &line);
        at = l.end;
        p.push(l, Timestamp(NOW), b);
    };
    push(&mut p, &mut b, cri_at(Stream::Stderr, 0, SCALA[0]));
    push(&mut p, &mut b, cri_at(Stream::Stderr, 0, SCALA[1]));
    push(&mut p, &mut b, cri_at(Stream::Stdout, 900, "GET / 200"));
    p.close_stale(&mut b);
    assert_eq!(b.records.len(), 1, "the stdout line only");
    push(&mut p, &mut b, cri_at(Stream::Stdout, 1000, "GET / 200"));
    p.close_stale(&mut b);
    assert_eq!(collect(&b)[2].message, joined(&SCALA[..2]));
    assert_eq!(p.pending_start(), None);
}

#[test]
fn limits_cut_a_record_and_the_rest_follows() {
    let limits = Limits {
        max_lines: 4,
        ..Limits::default()
    };
    let cuts = telemetry::get(&metrics().multiline_closed_max_lines);
    let mut p = joining(FormatChoice::Cri, Some(rule("java", limits)));
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, JAVA_SPRING)));
    let want: Vec<String> = JAVA_SPRING.chunks(4).map(joined).collect();
    assert_eq!(messages(&got, Stream::Stderr), want);
    assert!(telemetry::get(&metrics().multiline_closed_max_lines) >= cuts + 3);

    // max_bytes: each record stays within it (the first three frames fit, the fourth not).
    let max = JAVA_SPRING[..3].iter().map(|l| l.len() + 1).sum::<usize>() - 1;
    let limits = Limits {
        max_bytes: max,
        ..Limits::default()
    };
    let mut p = joining(FormatChoice::Cri, Some(rule("java", limits)));
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, JAVA_SPRING)));
    assert_eq!(got[0].message, joined(&JAVA_SPRING[..3]));
    assert!(got.iter().all(|r| r.message.len() <= max));
    assert_eq!(
        got.iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        joined(JAVA_SPRING)
    );
    let mut offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    offsets.dedup();
    assert_eq!(offsets.len(), got.len());
}

#[test]
fn custom_rules() {
    let limits = Limits::default();
    let start = MultilineRule::custom("ts", r"^\d{4}-\d{2}-\d{2} ", "", limits).unwrap();
    let cont = MultilineRule::custom("indent", "", r"^\s", limits).unwrap();
    let both = MultilineRule::custom("both", r"^BEGIN", r"^\s", limits).unwrap();
    let lines = [
        "preamble",
        "2026-11-22 10:00:00 first",
        "detail a",
        "  indented b",
        "2026-11-22 10:00:01 second",
        "BEGIN block",
        "  inside",
        "",
        "  still inside",
        "other",
        "  orphan",
    ];
    let cases: [(MultilineRule, &[&str]); 3] = [
        (
            start,
            &[
                "preamble",
                "2026-11-22 10:00:00 first\ndetail a\n  indented b",
                "2026-11-22 10:00:01 second\nBEGIN block\n  inside\n\n  still inside\nother\n  orphan",
            ],
        ),
        (
            cont,
            &[
                "preamble",
                "2026-11-22 10:00:00 first",
                "detail a\n  indented b",
                "2026-11-22 10:00:01 second",
                "BEGIN block\n  inside",
                "",
                "  still inside",
                "other\n  orphan",
            ],
        ),
        (
            both,
            &[
                "preamble",
                "2026-11-22 10:00:00 first",
                "detail a",
                "  indented b",
                "2026-11-22 10:00:01 second",
                "BEGIN block\n  inside",
                "",
                "  still inside",
                "other",
                "  orphan",
            ],
        ),
    ];
    for (rule, want) in cases {
        let name = rule.name().to_string();
        let mut p = joining(FormatChoice::Cri, Some(Arc::new(rule)));
        let got = run(&mut p, &cri_file(&on(Stream::Stdout, &lines)));
        assert_eq!(messages(&got, Stream::Stdout), want, "{name}");
    }
}

#[test]
fn cri_partials_are_joined_before_lines_are() {
    // containerd cut a long frame line in two; the trace is still one record, whose text has the
    // frame whole.
    let frame =
        "\tat com.example.shop.VeryLongClassName.veryLongMethodName(VeryLongClassName.java:123)";
    let (a, b) = frame.split_at(30);
    let lines = vec![
        cri_at(Stream::Stderr, 0, SCALA[0]),
        format!("2026-11-22T10:00:00.000Z stderr P {a}"),
        cri_at(Stream::Stdout, 0, "GET / 200"),
        format!("2026-11-22T10:00:00.000Z stderr F {b}"),
        cri_at(Stream::Stderr, 0, SCALA[1]),
    ];
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let got = run(&mut p, &lines);
    assert_eq!(
        messages(&got, Stream::Stderr),
        [format!("{}\n{frame}\n{}", SCALA[0], SCALA[1])]
    );
}

#[test]
fn docker_and_raw_files_join_too() {
    let docker: Vec<String> = JAVA_NPE
        .iter()
        .chain(&["done"])
        .map(|l| {
            format!(
                r#"{{"log":{},"stream":"stderr","time":"2026-11-22T10:00:00.5Z"}}"#,
                serde_json::to_string(&format!("{l}\n")).unwrap()
            )
        })
        .collect();
    let mut p = joining(FormatChoice::Docker, Some(rule("java", Limits::default())));
    let got = run(&mut p, &docker);
    assert_eq!(
        messages(&got, Stream::Stderr),
        [joined(JAVA_NPE), "done".into()]
    );

    let raw: Vec<String> = [&["plain start"], PYTHON_CAUSE, &["next"]]
        .concat()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut p = joining(FormatChoice::Raw, Some(rule("python", Limits::default())));
    let got = run(&mut p, &raw);
    // A raw file's blank lines are skipped, inside a record too.
    let cause: Vec<&str> = PYTHON_CAUSE
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        messages(&got, Stream::Unknown),
        ["plain start".to_string(), cause.join("\n"), "next".into()]
    );

    // A malformed line in a CRI file is kept as it is, never joined.
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let got = run(&mut p, &["java.lang.Error: x".into(), "\tat y".into()]);
    assert_eq!(got.len(), 2);
}

#[test]
fn a_line_longer_than_max_line_bytes_is_never_joined() {
    let long = format!("\tat {}", "x".repeat(100));
    let lines = [
        cri_at(Stream::Stderr, 0, SCALA[0]),
        cri_at(Stream::Stderr, 0, &long),
    ];
    let mut p = LineParser::new(
        FormatChoice::Cri,
        64,
        Oversize::Split,
        Arc::from(Path::new("/x.log")),
    )
    .with_multiline(Some(rule("java", Limits::default())));
    let mut b = batch();
    let mut at = 0;
    for t in &lines {
        for piece in crate::parse::tests::pieces(at, t.as_bytes(), 64) {
            p.push(piece, Timestamp(NOW), &mut b);
        }
        at += t.len() as u64 + 1;
    }
    p.flush(Timestamp(NOW), &mut b);
    let got = collect(&b);
    assert_eq!(got[0].message, SCALA[0], "closed before the pieces");
    assert_eq!(
        got[1..]
            .iter()
            .map(|r| r.message.as_str())
            .collect::<String>(),
        long
    );
}

#[test]
fn the_rule_switches_at_the_next_record_boundary() {
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let mut b = batch();
    let mut at = 0;
    let mut push = |p: &mut LineParser, b: &mut Batch, m: &str| {
        let t = cri_at(Stream::Stderr, 0, m);
        let l = whole(at, &t);
        at = l.end;
        p.push(l, Timestamp(NOW), b);
    };
    push(&mut p, &mut b, SCALA[0]);
    push(&mut p, &mut b, SCALA[1]);
    // A hint changed: python from now on. What java was joining is shipped as it is.
    p.set_multiline(Some(rule("python", Limits::default())));
    assert_eq!(
        p.multiline().unwrap().name(),
        "java",
        "not before the next line"
    );
    assert_eq!(p.deadline(), Some(Timestamp(i64::MIN)), "due at once");
    push(&mut p, &mut b, PYTHON_CAUSE[0]);
    assert_eq!(p.multiline().unwrap().name(), "python");
    assert_eq!(collect(&b)[0].message, joined(&SCALA[..2]));
    for line in &PYTHON_CAUSE[1..] {
        push(&mut p, &mut b, line);
    }
    // Off: the traceback is shipped, then lines are records of their own.
    p.set_multiline(None);
    p.expire(Timestamp(NOW), &mut b);
    assert_eq!(collect(&b)[1].message, joined(PYTHON_CAUSE));
    push(&mut p, &mut b, SCALA[0]);
    push(&mut p, &mut b, SCALA[1]);
    assert_eq!(b.records.len(), 4);
    assert_eq!(p.pending_start(), None);
    // The same rule again changes nothing and closes nothing.
    let java = rule("java", Limits::default());
    p.set_multiline(Some(Arc::clone(&java)));
    push(&mut p, &mut b, SCALA[0]);
    p.set_multiline(Some(java));
    push(&mut p, &mut b, SCALA[1]);
    p.flush(Timestamp(NOW), &mut b);
    assert_eq!(collect(&b)[4].message, joined(&SCALA[..2]));
}

#[test]
fn the_ack_range_never_ends_inside_a_record_joined_around_another_streams() {
    // stderr joins lines 0, 2, 4 around stdout's lines 1, 3; stdout's trace starting at line 3
    // is still open when stderr's record closes. Ending the range at line 3 would make a restart
    // read stderr's line 4 without its first lines: it ends at line 0 instead.
    let lines = [
        cri_at(Stream::Stderr, 0, SCALA[0]),
        cri_at(Stream::Stdout, 0, "GET / 200"),
        cri_at(Stream::Stderr, 0, SCALA[1]),
        cri_at(Stream::Stdout, 0, JAVA_NPE[0]),
        cri_at(Stream::Stderr, 0, SCALA[2]),
        cri_at(Stream::Stderr, 0, "INFO next"),
    ];
    let mut p = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let mut b = batch();
    let mut at = 0;
    for t in &lines {
        let l = whole(at, t);
        at = l.end;
        p.push(l, Timestamp(NOW), &mut b);
    }
    let third = whole(0, &lines[0]).end + whole(0, &lines[1]).end + whole(0, &lines[2]).end;
    assert_eq!(p.pending_start(), Some(third));
    assert_eq!(p.ack_end(at), 0);
    // Once stdout's record is done, the next batch acknowledges everything.
    let t = cri_at(Stream::Stdout, 0, "GET / 200");
    p.push(whole(at, &t), Timestamp(NOW), &mut b);
    assert_eq!(p.ack_end(at + t.len() as u64 + 1), at + t.len() as u64 + 1);
}

mod model {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// The events a generated file is made of, each on a stream.
    fn events() -> Vec<Vec<&'static str>> {
        vec![
            JAVA_SPRING.to_vec(),
            JAVA_SUPPRESSED.to_vec(),
            PYTHON_DURING.to_vec(),
            GO_PANIC.to_vec(),
            NODE_UNCAUGHT.to_vec(),
            NODE_PROPS.to_vec(),
            vec!["GET /api 200"],
            vec!["INFO plain line"],
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random files of traces from both streams, interleaved line by line, read in turns of
        /// random sizes; at a random turn the agent crashes and a new parser reads again from
        /// where the ack range ended. Every line of the file is in exactly one record of what
        /// was shipped (records with one offset are one document: the first one written
        /// stays), and a record shipped twice is the same both times.
        #[test]
        fn no_line_lost_or_doubled_across_a_restart(
            picks in vec((0usize..8, any::<bool>()), 1..12),
            interleave in vec(any::<bool>(), 0..400),
            turns in vec(1usize..6, 1..200),
            crash_turn in 0usize..60,
            rule_index in 0usize..4,
            max_lines in 3usize..40,
        ) {
            let all = events();
            // Two queues, one per stream.
            let mut queues: [Vec<&str>; 2] = Default::default();
            for (event, stderr) in &picks {
                queues[usize::from(*stderr)].extend(&all[*event]);
            }
            let mut file: Vec<String> = Vec::new();
            let (mut i, mut j, mut k) = (0, 0, 0);
            while i < queues[0].len() || j < queues[1].len() {
                let take_err = j < queues[1].len()
                    && (i >= queues[0].len() || interleave.get(k).copied().unwrap_or(false));
                k += 1;
                if take_err {
                    file.push(cri_at(Stream::Stderr, 0, queues[1][j]));
                    j += 1;
                } else {
                    file.push(cri_at(Stream::Stdout, 0, queues[0][i]));
                    i += 1;
                }
            }
            let mut offsets = Vec::new();
            let mut at = 0u64;
            for t in &file {
                offsets.push(at);
                at += t.len() as u64 + 1;
            }
            let limits = Limits { max_lines, ..Limits::default() };
            let name = Builtin::ALL[rule_index].name();

            // The first run, in turns, until the crash.
            let mut p = joining(FormatChoice::Cri, Some(rule(name, limits)));
            let mut shipped = batch();
            let mut ack = 0u64;
            let mut line = 0;
            for (t, &size) in turns.iter().enumerate() {
                if t == crash_turn || line == file.len() {
                    break;
                }
                let before = shipped.records.len();
                for text in file.iter().skip(line).take(size) {
                    p.push(whole(offsets[line], text), Timestamp(NOW), &mut shipped);
                    line += 1;
                }
                let consumed = offsets.get(line).copied().unwrap_or(at);
                let end = p.ack_end(consumed).max(ack);
                for r in &shipped.records[before..] {
                    prop_assert!(r.offset >= ack, "a record before the ack range");
                }
                prop_assert!(end >= ack);
                prop_assert!(offsets.contains(&end) || end == at, "ack inside a line");
                ack = end;
            }
            // The restart: a new parser from the ack position, to the end.
            let resume = offsets.iter().position(|&o| o == ack).unwrap_or(file.len());
            let mut q = joining(FormatChoice::Cri, Some(rule(name, limits)));
            let mut again = batch();
            for (idx, text) in file.iter().enumerate().skip(resume) {
                q.push(whole(offsets[idx], text), Timestamp(NOW), &mut again);
            }
            q.flush(Timestamp(NOW), &mut again);

            // What is stored: one document per offset, the first written.
            let mut stored: BTreeMap<u64, Rec> = BTreeMap::new();
            for r in collect(&shipped).into_iter().chain(collect(&again)) {
                match stored.get(&r.offset) {
                    Some(first) => prop_assert_eq!(first, &r, "a record changed when read again"),
                    None => { stored.insert(r.offset, r); }
                }
            }
            // Every line of the file, as often as it is there (blank ones belong to no message).
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for r in stored.values() {
                for l in r.message.split('\n').filter(|l| !l.is_empty()) {
                    *seen.entry(l).or_default() += 1;
                }
            }
            let mut written: HashMap<&str, usize> = HashMap::new();
            for l in queues.iter().flatten().filter(|l| !l.is_empty()) {
                *written.entry(l).or_default() += 1;
            }
            prop_assert_eq!(seen, written);
        }
    }
}

/// The list `names` (`java+python`), as configuration and hints name it.
fn list(names: &str) -> Arc<MultilineRule> {
    Multiline::default()
        .resolve(names)
        .unwrap()
        .expect("a list is a rule")
}

#[test]
fn a_list_of_rules_joins_each_languages_traces_with_streams_kept_apart() {
    let access = "10.1.2.3 - - [22/Nov/2026:10:00:00 +0000] \"GET /healthz HTTP/1.1\" 200 2";
    // stderr: Java, Python and Go traces between ordinary lines; stdout: Python and Node.js
    // traces and ordinary lines, interleaved line by line with stderr.
    let err: Vec<&str> = [
        &["Starting ShopApplication v1.4.2"],
        JAVA_SPRING,
        &[access],
        PYTHON_DURING,
        GO_PANIC,
        &["ERROR:root:job 42 failed"],
        JAVA_NPE,
        PYTHON_CAUSE,
    ]
    .concat();
    let out: Vec<&str> = [
        &["Server listening on :3000"],
        NODE_TYPE,
        &[access],
        GO_SIGQUIT,
        &["{\"level\":\"info\",\"msg\":\"restarted\"}"],
        // (Last: the first line at the margin after a group is taken for its exception, as
        // with the Python rule alone.)
        PYTHON_GROUP,
    ]
    .concat();
    let mut lines = Vec::new();
    for i in 0..err.len().max(out.len()) {
        if let Some(l) = err.get(i) {
            lines.push((Stream::Stderr, *l));
        }
        if let Some(l) = out.get(i) {
            lines.push((Stream::Stdout, *l));
        }
    }
    let mut p = joining(FormatChoice::Cri, Some(list("java+python+go+nodejs")));
    let got = run(&mut p, &cri_file(&lines));
    assert_eq!(
        messages(&got, Stream::Stderr),
        vec![
            "Starting ShopApplication v1.4.2".to_string(),
            joined(JAVA_SPRING),
            access.into(),
            joined(PYTHON_DURING),
            joined(GO_PANIC),
            "ERROR:root:job 42 failed".into(),
            joined(JAVA_NPE),
            joined(PYTHON_CAUSE),
        ]
    );
    assert_eq!(
        messages(&got, Stream::Stdout),
        vec![
            "Server listening on :3000".to_string(),
            joined(NODE_TYPE),
            access.into(),
            joined(GO_SIGQUIT),
            "{\"level\":\"info\",\"msg\":\"restarted\"}".into(),
            joined(PYTHON_GROUP),
        ]
    );
    assert_eq!(p.pending_start(), None);
}

#[test]
fn in_a_list_the_first_rule_whose_start_matches_wins() {
    // `Error: ...` starts a record under both the Java and the Node.js rule. Under Java first,
    // the record ends at the first line Java does not continue: the `}` closing Node's
    // inspected properties is a record of its own.
    let mut p = joining(FormatChoice::Cri, Some(list("java+nodejs")));
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, NODE_PROPS)));
    let (frames, brace) = NODE_PROPS.split_at(NODE_PROPS.len() - 1);
    assert_eq!(
        messages(&got, Stream::Stderr),
        vec![joined(frames), brace[0].to_string()]
    );
    // Under Node.js first, the whole error is one record...
    let mut p = joining(FormatChoice::Cri, Some(list("nodejs+java")));
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, NODE_PROPS)));
    assert_eq!(messages(&got, Stream::Stderr), vec![joined(NODE_PROPS)]);
    // ...and a JVM trace's header starts a Node.js record too: its `Caused by:` line, which
    // Node does not continue, begins the next record, which Java then owns.
    let mut p = joining(FormatChoice::Cri, Some(list("nodejs+java")));
    let got = run(&mut p, &cri_file(&on(Stream::Stderr, JAVA_SPRING)));
    let cause = JAVA_SPRING
        .iter()
        .position(|l| l.starts_with("Caused by:"))
        .unwrap();
    assert_eq!(
        messages(&got, Stream::Stderr),
        vec![joined(&JAVA_SPRING[..cause]), joined(&JAVA_SPRING[cause..])]
    );
    // Node's frames alone (`TypeError` and `    at` lines) are joined whichever comes first.
    for names in ["java+nodejs", "nodejs+java"] {
        let mut p = joining(FormatChoice::Cri, Some(list(names)));
        let got = run(&mut p, &cri_file(&on(Stream::Stderr, NODE_TYPE)));
        assert_eq!(
            messages(&got, Stream::Stderr),
            vec![joined(NODE_TYPE)],
            "{names}"
        );
    }
}

#[test]
fn a_list_is_named_by_its_members_and_built_once() {
    let m = Multiline::default();
    let a = m.resolve("java+python").unwrap().unwrap();
    let b = m.resolve(" java + python ").unwrap().unwrap();
    assert_eq!(a.name(), "java+python");
    assert!(Arc::ptr_eq(&a, &b), "the same list is the same rule");
    // A repeated member counts once; one member is that rule.
    let one = m.resolve("go+go").unwrap().unwrap();
    assert!(Arc::ptr_eq(&one, &m.rule("go").unwrap()));
    assert_eq!(
        m.resolve("java+ruby").unwrap_err().to_string(),
        "no multiline rule is named \"ruby\" (known: none, java, python, go, nodejs)"
    );
    assert_eq!(
        m.resolve("java+none").unwrap_err().to_string(),
        "\"java+none\" is not a list of rules: `none` joins nothing and cannot be one of them"
    );
}

/// Pushes `texts` as whole lines from offset 0 into `b`, without flushing; the end offset.
fn feed(p: &mut LineParser, texts: &[String], b: &mut Batch) -> u64 {
    let mut at = 0;
    for t in texts {
        let l = whole(at, t);
        at = l.end;
        p.push(l, Timestamp(NOW), b);
    }
    at
}

#[test]
fn a_record_a_rotation_cut_goes_on_in_the_next_generation_with_the_first_ones_id() {
    use crate::ack::{AckToken, FileKey};
    use crate::record::{Carried, IdPrefix};
    let java = rule("java", Limits::default());
    let old_lines = cri_file(&[
        (Stream::Stderr, "before"),
        (Stream::Stderr, SCALA[0]),
        (Stream::Stderr, SCALA[1]),
    ]);
    let mut old = joining(FormatChoice::Cri, Some(Arc::clone(&java)));
    let mut b = batch();
    let old_end = feed(&mut old, &old_lines, &mut b);
    let start = old_lines[0].len() as u64 + 1;
    let prefix = IdPrefix([3; 12]);
    let carry = old.carry_out(prefix, FileKey(7), old_end).unwrap();
    // The old generation acknowledges up to the trace's start, and ships nothing more.
    assert_eq!(old.ack_end(old_end), start);
    old.flush(Timestamp(NOW), &mut b);
    assert_eq!(collect(&b).len(), 1, "only \"before\"");
    assert_eq!(old.carried_away(), Some((start, old_end)));
    assert_eq!(old.pending_start(), Some(start));

    let mut new = joining(FormatChoice::Cri, Some(Arc::clone(&java)));
    new.carry_in(carry, 0).unwrap();
    assert_eq!(
        new.pending_start(),
        Some(0),
        "held from the new file's start"
    );
    let new_lines = cri_file(&[(Stream::Stderr, SCALA[2]), (Stream::Stderr, "after")]);
    let mut nb = batch();
    feed(&mut new, &new_lines, &mut nb);
    let got = collect(&nb);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].message, SCALA[..3].join("\n"));
    assert_eq!(got[1].message, "after");
    assert!(!nb.records[1].carried);
    let third = new_lines[0].len() as u64 + 1;
    // Its offset is in the old file; its length covers both parts.
    assert_eq!(got[0].offset, start);
    assert_eq!(got[0].end, old_end + third);
    assert!(nb.records[0].carried);
    assert_eq!(
        nb.carried,
        Some(Carried {
            prefix,
            ack: AckToken {
                file: FileKey(7),
                start,
                end: old_end,
            },
        })
    );
    assert_eq!(nb.id_prefix_of(&nb.records[0]), prefix);
    assert_eq!(
        new.ack_end(third),
        third,
        "the new file's range passes it now"
    );
}

#[test]
fn a_carried_record_under_another_rule_stays_in_its_generation() {
    use crate::ack::FileKey;
    use crate::record::IdPrefix;
    let old_lines = cri_file(&[(Stream::Stdout, SCALA[0]), (Stream::Stdout, SCALA[1])]);
    let mut old = joining(FormatChoice::Cri, Some(rule("java", Limits::default())));
    let mut b = batch();
    let end = feed(&mut old, &old_lines, &mut b);
    let carry = old.carry_out(IdPrefix([1; 12]), FileKey(2), end).unwrap();
    let mut new = joining(FormatChoice::Cri, Some(rule("python", Limits::default())));
    let carry = new.carry_in(carry, 0).unwrap_err();
    assert_eq!(new.pending_start(), None);
    old.carry_back(carry);
    assert_eq!(old.carried_away(), None);
    old.flush(Timestamp(NOW), &mut b);
    assert_eq!(collect(&b)[0].message, SCALA[..2].join("\n"));
    // Nothing open, or no rule: nothing to carry.
    assert!(old.carry_out(IdPrefix([1; 12]), FileKey(2), end).is_none());
    let mut plain = joining(FormatChoice::Cri, None);
    feed(&mut plain, &old_lines, &mut batch());
    assert!(plain
        .carry_out(IdPrefix([1; 12]), FileKey(2), end)
        .is_none());
}
