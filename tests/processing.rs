//! Structured messages, filters and per-pod hints through the real binary: JSON lines become
//! fields of the documents Elasticsearch indexes (bounded, so one application cannot blow up the
//! mapping), filters drop what they are told to and positions still move past it, and pod
//! annotations choose a container's parser, also when they change while the pod runs.

mod support;

use std::time::Duration;

use serde_json::{json, Value};

use support::agent::{append, cri, http_get, wait_until, AgentProcess, Fixture};
use support::elasticsearch::{Flavor, TestEs};
use support::kubernetes::{file_name, pod, TestKube};

const WAIT: Duration = Duration::from_secs(30);
const INDEX: &str = "logs-logship-default";
const NODE: &str = "test-node";

fn metric(agent: &AgentProcess, series: &str) -> u64 {
    let body = http_get(agent.server_addr(), "/metrics").2;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

fn es_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__TIMEOUT", "50ms"),
    ];
    env.extend_from_slice(extra);
    env
}

/// The stored document whose message is `message`.
fn stored(es: &TestEs, message: &str) -> Option<Value> {
    es.documents(INDEX)
        .into_values()
        .find(|d| d["message"] == message)
}

#[test]
fn json_lines_become_fields_of_the_indexed_documents() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log("app.log");
    let good = r#"{"level":"error","msg":"payment failed","http":{"status":502,"path":"/pay"},"user":{"id":42}}"#;
    let invalid = r#"{"level":"info","msg":"cut short"#;
    let not_object = r#"["an","array"]"#;
    // An application that writes a new key on every line: bounded per document.
    let keys: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
    let flood = format!("{{{}}}", keys.join(","));
    let deep = format!("{{\"d\":{}0{}}}", "[".repeat(1000), "]".repeat(1000));
    for m in [good, invalid, not_object, &flood, &deep, "plain text"] {
        append(&path, cri("stdout", 'F', m).as_bytes());
    }
    let url = es.url();
    let mut agent = fx.spawn(&es_env(
        &url,
        &[(
            "LOGSHIP_PROCESSING__ADD_FIELDS",
            "cluster.name=test-cluster",
        )],
    ));
    assert!(es.wait_for_doc_count(6, WAIT), "{}", agent.logs());

    let d = stored(&es, good).expect("the JSON line");
    assert_eq!(d["log"]["level"], "error");
    assert_eq!(d["json"]["msg"], "payment failed");
    assert_eq!(d["json"]["http"]["status"], 502);
    assert_eq!(d["cluster"]["name"], "test-cluster");
    assert_eq!(
        es.field_type(INDEX, "json.http.status").as_deref(),
        Some("long")
    );
    for m in [invalid, not_object, "plain text"] {
        let d = stored(&es, m).unwrap_or_else(|| panic!("{m}"));
        assert!(d.get("json").is_none(), "{d}");
        assert_eq!(d["cluster"]["name"], "test-cluster");
    }
    let d = stored(&es, &flood).expect("the flood line");
    assert_eq!(d["json"].as_object().unwrap().len(), 200);
    let d = stored(&es, &deep).expect("the deep line");
    assert!(
        d["json"]["d"][0][0][0][0][0][0][0].is_string(),
        "{}",
        d["json"]
    );
    // The mapping holds the bounded fields, not a thousand.
    let fields = es.field_count(INDEX).unwrap();
    assert!(fields < 400, "{fields} mapped fields");

    assert_eq!(
        metric(
            &agent,
            "logship_structured_messages_total{result=\"invalid\"}"
        ),
        1
    );
    assert_eq!(
        metric(&agent, "logship_structured_messages_total{result=\"json\"}"),
        3
    );
    assert_eq!(
        metric(
            &agent,
            "logship_structured_adjusted_total{reason=\"fields\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &agent,
            "logship_structured_adjusted_total{reason=\"depth\"}"
        ),
        1
    );
    assert!(agent
        .logs()
        .contains("Message did not parse; shipped as it was."));
    assert!(agent.terminate().success());
}

#[test]
fn filters_drop_what_they_are_told_and_positions_move_past_it() {
    let fx = Fixture::new();
    let path = fx.log("app.log");
    let lines = [
        r#"{"level":"debug","msg":"noise"}"#,
        r#"{"level":"info","path":"/healthz","msg":"probe"}"#,
        r#"{"level":"warn","msg":"slow","password":"hunter2","uid":7}"#,
        "ERROR plain text",
        "INFO plain text",
    ];
    for m in lines {
        append(&path, cri("stdout", 'F', m).as_bytes());
    }
    let mut agent = fx.spawn(&[
        (
            "LOGSHIP_PROCESSING__INCLUDE",
            r#"["json.level=~^(info|warn|error)$","message=~^ERROR"]"#,
        ),
        ("LOGSHIP_PROCESSING__EXCLUDE", "json.path=~^/healthz"),
        ("LOGSHIP_PROCESSING__DROP_FIELDS", "json.password"),
        ("LOGSHIP_PROCESSING__RENAME_FIELDS", "json.uid=user.id"),
    ]);
    let size = std::fs::metadata(&path).unwrap().len();
    let offset = || {
        let text = std::fs::read(fx.data.join("positions.json")).unwrap_or_default();
        serde_json::from_slice::<Value>(&text)
            .map_or(Value::Null, |p| p["files"][0]["offset"].clone())
    };
    assert!(wait_until(WAIT, || offset() == size), "{}", agent.logs());
    let records = fx.records();
    let messages: Vec<&str> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, [lines[2], lines[3]]);
    assert_eq!(records[0]["json"], json!({"level":"warn","msg":"slow"}));
    assert_eq!(records[0]["user"]["id"], 7);
    assert_eq!(
        metric(&agent, "logship_filtered_records_total{filter=\"include\"}"),
        2
    );
    assert_eq!(
        metric(&agent, "logship_filtered_records_total{filter=\"exclude\"}"),
        1
    );
    assert!(agent.terminate().success());
}

#[test]
fn pod_annotations_choose_the_parser_per_container_and_can_change_while_it_runs() {
    let kube = TestKube::start();
    kube.create_pod(
        pod("shop", "web-0", NODE)
            .label("app", "web")
            .annotation("logship.io/parser", "app=logfmt,sidecar=none")
            .annotation("logship.io/multiline", "java+python")
            .build(),
    );
    kube.create_pod(pod("batch", "job-0", NODE).build());
    let fx = Fixture::new();
    let app = fx.log(&file_name("shop", "web-0", "app"));
    let sidecar = fx.log(&file_name("shop", "web-0", "sidecar"));
    let job = fx.log(&file_name("batch", "job-0", "job"));
    append(
        &app,
        cri("stdout", 'F', "level=info msg=\"from app\"").as_bytes(),
    );
    append(
        &sidecar,
        cri("stdout", 'F', r#"{"msg":"sidecar json"}"#).as_bytes(),
    );
    append(&job, cri("stdout", 'F', r#"{"msg":"job json"}"#).as_bytes());
    let url = kube.url();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_KUBERNETES__ENABLED", "true"),
        ("LOGSHIP_KUBERNETES__API_URL", url.as_str()),
        ("LOGSHIP_LOG__LEVEL", "info,logship::tail=debug"),
        // A rule for the namespace: the job's JSON is not parsed.
        ("LOGSHIP_PROCESSING__RULES", "namespace=batch parser=none"),
    ]);
    let r = fx.wait_record(&agent, "level=info msg=\"from app\"");
    assert_eq!(r["json"], json!({"level":"info","msg":"from app"}), "{r}");
    assert_eq!(r["log"]["level"], "info");
    let r = fx.wait_record(&agent, r#"{"msg":"sidecar json"}"#);
    assert!(r.get("json").is_none(), "the sidecar's parser is none: {r}");
    let r = fx.wait_record(&agent, r#"{"msg":"job json"}"#);
    assert!(r.get("json").is_none(), "the namespace rule: {r}");
    // The multiline hint (for the whole pod): its containers' stack traces are one record each;
    // the job's pod has no hint (the default rule none), its trace stays three records.
    let trace = [
        "java.lang.IllegalStateException: boom",
        "\tat com.example.Orders.place(Orders.java:42)",
        "\tat com.example.Api.post(Api.java:7)",
    ];
    for file in [&app, &sidecar, &job] {
        let body: String = trace.iter().map(|l| cri("stdout", 'F', l)).collect();
        append(file, body.as_bytes());
    }
    let joined = trace.join("\n");
    fx.wait_record(&agent, &joined);
    fx.wait_record(&agent, trace[1]);
    assert!(
        wait_until(WAIT, || fx
            .records()
            .iter()
            .filter(|r| r["message"] == joined)
            .count()
            == 2),
        "the app and the sidecar join"
    );
    // The hint is a list: the app's Python traceback is one record too.
    let traceback = [
        "Traceback (most recent call last):",
        "  File \"/app/orders.py\", line 42, in place",
        "ValueError: boom",
    ];
    let body: String = traceback.iter().map(|l| cri("stdout", 'F', l)).collect();
    append(&app, body.as_bytes());
    fx.wait_record(&agent, &traceback.join("\n"));
    let job_path = job.display().to_string();
    assert!(fx
        .records()
        .iter()
        .any(|r| r["message"] == trace[2] && r["log"]["file"]["path"] == job_path.as_str()));

    // Edited while the pod runs: the app's lines are JSON now, the sidecar's too.
    kube.set_pod_annotation("shop", "web-0", "logship.io/parser", Some("json"));
    std::thread::sleep(Duration::from_millis(500));
    append(
        &app,
        cri("stdout", 'F', r#"{"msg":"app json now"}"#).as_bytes(),
    );
    append(
        &sidecar,
        cri("stdout", 'F', r#"{"msg":"sidecar parsed now"}"#).as_bytes(),
    );
    let r = fx.wait_record(&agent, r#"{"msg":"app json now"}"#);
    assert_eq!(r["json"]["msg"], "app json now", "{r}");
    let r = fx.wait_record(&agent, r#"{"msg":"sidecar parsed now"}"#);
    assert_eq!(r["json"]["msg"], "sidecar parsed now", "{r}");
    // Removed: the default (auto) applies again; a logfmt line stays text.
    kube.set_pod_annotation("shop", "web-0", "logship.io/parser", None);
    std::thread::sleep(Duration::from_millis(500));
    append(
        &app,
        cri("stdout", 'F', "level=warn msg=\"text again\"").as_bytes(),
    );
    let r = fx.wait_record(&agent, "level=warn msg=\"text again\"");
    assert!(r.get("json").is_none(), "{r}");
    // A bad value is warned about and ignored.
    kube.set_pod_annotation("shop", "web-0", "logship.io/parser", Some("xml"));
    std::thread::sleep(Duration::from_millis(500));
    append(
        &app,
        cri("stdout", 'F', r#"{"msg":"auto again"}"#).as_bytes(),
    );
    let r = fx.wait_record(&agent, r#"{"msg":"auto again"}"#);
    assert_eq!(r["json"]["msg"], "auto again");
    assert!(agent
        .logs()
        .contains("Ignoring a pod annotation that does not parse"));
    assert!(agent.terminate().success());
}
