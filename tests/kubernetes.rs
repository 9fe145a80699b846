//! Enrichment against the test Kubernetes API server: records carry their pod's metadata from a
//! list+watch of the node's pods (a handful of requests, never one per pod), stay right when pods
//! change, start late, are deleted, or when the API resets the watch or goes away.

mod support;

use std::time::{Duration, Instant};

use support::agent::{append, cri, wait_until, AgentProcess, Fixture};
use support::kubernetes::{container_id, file_name, namespace, pod, TestKube};

const WAIT: Duration = Duration::from_secs(20);
const NODE: &str = "test-node";

fn spawn(fx: &Fixture, kube: &TestKube, extra: &[(&str, &str)]) -> AgentProcess {
    let url = kube.url();
    let mut env = vec![
        ("LOGSHIP_KUBERNETES__ENABLED", "true"),
        ("LOGSHIP_KUBERNETES__API_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    fx.spawn(&env)
}

#[test]
fn records_carry_their_pods_metadata_from_one_list_and_watch() {
    let kube = TestKube::start();
    kube.create_namespace(namespace("shop").label("team", "payments").build());
    kube.create_pod(
        pod("shop", "web-7d4b9-x2x9k", NODE)
            .replica_set("web-7d4b9")
            .annotation("example.com/owner", "payments")
            .build(),
    );
    // Pods of other nodes are not this agent's business.
    kube.create_pod(pod("shop", "api-5f6d8-aaaaa", "other-node").build());
    let fx = Fixture::new();
    let path = fx.log(&file_name("shop", "web-7d4b9-x2x9k", "web"));
    append(&path, cri("stdout", 'F', "hello").as_bytes());
    let mut agent = spawn(
        &fx,
        &kube,
        &[("LOGSHIP_KUBERNETES__ANNOTATIONS", "example.com/*")],
    );
    let r = fx.wait_record(&agent, "hello");
    let k = &r["kubernetes"];
    assert_eq!(k["namespace"], "shop");
    assert_eq!(
        k["namespace_labels"]["team"],
        "payments",
        "{r}\n{}",
        agent.logs()
    );
    assert_eq!(k["pod"]["name"], "web-7d4b9-x2x9k");
    assert!(
        k["pod"]["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{r}"
    );
    assert!(
        k["pod"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.244.")),
        "{r}"
    );
    assert_eq!(k["node"]["name"], NODE);
    assert_eq!(k["labels"]["app"], "web");
    assert_eq!(
        k["labels"]["app_kubernetes_io/name"], "web",
        "de-dotted: {r}"
    );
    assert_eq!(k["annotations"]["example_com/owner"], "payments");
    assert_eq!(k["deployment"]["name"], "web");
    assert_eq!(
        r["container"]["id"],
        container_id("shop", "web-7d4b9-x2x9k", "web")
    );
    assert_eq!(
        r["container"]["image"]["name"],
        "registry.example.com/web:1.4.2"
    );
    assert_eq!(r["container"]["runtime"], "containerd");

    // More lines and time cost no more requests: one list and one watch per resource.
    for i in 0..50 {
        append(&path, cri("stdout", 'F', &format!("line {i}")).as_bytes());
    }
    fx.wait_record(&agent, "line 49");
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.terminate().success());
    let pod_requests = kube.requests_for("/api/v1/pods");
    assert!(
        pod_requests.len() <= 3,
        "a list and a watch, not a request per line: {pod_requests:?}"
    );
    assert!(pod_requests
        .iter()
        .all(|r| r.param("fieldSelector").as_deref() == Some("spec.nodeName=test-node")));
    assert!(kube.get_requests().is_empty(), "never a GET per pod");
    for list in kube.list_requests() {
        assert_eq!(
            list.param("resourceVersion").as_deref(),
            Some("0"),
            "served from the API server's cache: {list:?}"
        );
        assert_eq!(list.param("limit"), None);
    }
}

#[test]
fn a_pod_the_watch_delivers_late_waits_briefly_and_an_unknown_one_ships_anyway() {
    let kube = TestKube::start();
    let fx = Fixture::new();
    let mut agent = spawn(
        &fx,
        &kube,
        &[("LOGSHIP_KUBERNETES__WAIT_FOR_METADATA", "3s")],
    );
    // The file appears before the watch has the pod (the kubelet starts containers quickly).
    let late = fx.log(&file_name("shop", "late-0", "late"));
    append(&late, cri("stdout", 'F', "early line").as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    kube.create_pod(pod("shop", "late-0", NODE).stateful_set("late").build());
    let r = fx.wait_record(&agent, "early line");
    assert_eq!(r["kubernetes"]["statefulset"]["name"], "late", "{r}");

    // A pod the API never tells about: after the wait, the file name's fields, and a counter.
    let started = Instant::now();
    append(
        &fx.log(&file_name("shop", "ghost-1", "ghost")),
        cri("stdout", 'F', "ghost line").as_bytes(),
    );
    let r = fx.wait_record(&agent, "ghost line");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "it waited"
    );
    assert_eq!(r["kubernetes"]["pod"]["name"], "ghost-1");
    assert!(r["kubernetes"].get("labels").is_none());
    assert!(agent
        .logs()
        .contains("No Kubernetes metadata for this pod yet"));
    assert!(agent.terminate().success());
}

#[test]
fn label_changes_deletions_and_api_resets_are_followed() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "cart-0", NODE).label("tier", "gold").build());
    let fx = Fixture::new();
    let path = fx.log(&file_name("shop", "cart-0", "cart"));
    let mut agent = spawn(&fx, &kube, &[]);
    append(&path, cri("stdout", 'F', "gold").as_bytes());
    assert_eq!(
        fx.wait_record(&agent, "gold")["kubernetes"]["labels"]["tier"],
        "gold"
    );

    kube.set_pod_label("shop", "cart-0", "tier", Some("silver"));
    std::thread::sleep(Duration::from_millis(300));
    append(&path, cri("stdout", 'F', "silver").as_bytes());
    assert_eq!(
        fx.wait_record(&agent, "silver")["kubernetes"]["labels"]["tier"],
        "silver"
    );

    // The API server compacts its history and drops every watch: the agent re-lists and a pod
    // created meanwhile is enriched.
    kube.compact();
    kube.close_watches();
    kube.create_pod(pod("shop", "after-0", NODE).build());
    append(
        &fx.log(&file_name("shop", "after-0", "after")),
        cri("stdout", 'F', "after reset").as_bytes(),
    );
    assert_eq!(
        fx.wait_record(&agent, "after reset")["kubernetes"]["labels"]["app"],
        "after"
    );

    // A deleted pod's last lines are still enriched (grace period).
    kube.delete_pod("shop", "cart-0");
    std::thread::sleep(Duration::from_millis(300));
    append(&path, cri("stdout", 'F', "last words").as_bytes());
    assert_eq!(
        fx.wait_record(&agent, "last words")["kubernetes"]["labels"]["tier"],
        "silver"
    );

    // The API goes away: lines keep shipping with what is cached.
    kube.down();
    append(&path, cri("stdout", 'F', "during outage").as_bytes());
    assert_eq!(
        fx.wait_record(&agent, "during outage")["kubernetes"]["labels"]["tier"],
        "silver"
    );
    // It comes back: pods created after the outage are enriched without a restart.
    kube.up();
    kube.create_pod(pod("shop", "back-0", NODE).build());
    append(
        &fx.log(&file_name("shop", "back-0", "back")),
        cri("stdout", 'F', "after outage").as_bytes(),
    );
    assert_eq!(
        fx.wait_record(&agent, "after outage")["kubernetes"]["labels"]["app"],
        "back",
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
}

#[test]
fn fluentd_schema_and_kubeconfig_access() {
    let kube = TestKube::start();
    kube.require_token("s3cret-token");
    kube.create_pod(
        pod("shop", "web-7d4b9-abcde", NODE)
            .replica_set("web-7d4b9")
            .build(),
    );
    let fx = Fixture::new();
    let kubeconfig = fx.dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, Some("s3cret-token"));
    let kubeconfig = kubeconfig.display().to_string();
    append(
        &fx.log(&file_name("shop", "web-7d4b9-abcde", "web")),
        cri("stderr", 'F', "fluent").as_bytes(),
    );
    let mut agent = fx.spawn(&[
        ("LOGSHIP_KUBERNETES__ENABLED", "auto"),
        ("LOGSHIP_KUBERNETES__KUBECONFIG", kubeconfig.as_str()),
        ("LOGSHIP_KUBERNETES__SCHEMA", "fluentd"),
    ]);
    assert!(
        wait_until(WAIT, || fx.records().iter().any(|r| r["log"] == "fluent")),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    let r = fx
        .records()
        .into_iter()
        .find(|r| r["log"] == "fluent")
        .unwrap();
    assert_eq!(r["stream"], "stderr");
    assert_eq!(r["kubernetes"]["pod_name"], "web-7d4b9-abcde");
    assert_eq!(r["kubernetes"]["namespace_name"], "shop");
    assert_eq!(r["kubernetes"]["container_name"], "web");
    assert_eq!(r["kubernetes"]["labels"]["app"], "web");
    assert_eq!(r["kubernetes"]["host"], NODE);
    assert_eq!(
        r["docker"]["container_id"],
        container_id("shop", "web-7d4b9-abcde", "web")
    );
    assert_eq!(r["time"], r["@timestamp"]);
    assert!(r.get("message").is_none());
}

/// Resident memory of a process in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn hundreds_of_pods_cost_little_memory() {
    let kube = TestKube::start();
    let fx = Fixture::new();
    let mut agent = spawn(&fx, &kube, &[]);
    assert!(kube.wait_for_open_watches(2, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(agent.child.id());
    for i in 0..500 {
        kube.create_pod(
            pod("shop", &format!("svc{i}-7d4b9-abcde"), NODE)
                .replica_set(&format!("svc{i}-7d4b9"))
                .annotation(
                    "kubectl.kubernetes.io/last-applied-configuration",
                    &"x".repeat(2000),
                )
                .build(),
        );
    }
    // Every pod reached the cache (the metric says so), then memory is measured.
    let addr = agent.server_addr();
    assert!(
        wait_until(WAIT, || support::agent::http_get(addr, "/metrics")
            .2
            .contains("logship_kubernetes_cached_pods 500")),
        "{}",
        agent.logs()
    );
    let after = rss_kib(agent.child.id());
    let growth = after.saturating_sub(before);
    println!("500 pods: RSS {before} KiB -> {after} KiB (+{growth} KiB)");
    assert!(
        growth < 8 * 1024,
        "500 trimmed pods must stay under 8 MiB, grew {growth} KiB"
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_pod_annotation_sets_its_rate_limit_and_can_change_while_it_runs() {
    let kube = TestKube::start();
    kube.create_pod(
        pod("shop", "chatty-0", NODE)
            .annotation("logship.io/rate-limit", "50/s")
            .build(),
    );
    let fx = Fixture::new();
    let path = fx.log(&file_name("shop", "chatty-0", "chatty"));
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&cri("stdout", 'F', &format!("chat-{i}")));
    }
    append(&path, body.as_bytes());
    let mut agent = spawn(
        &fx,
        &kube,
        &[
            ("LOGSHIP_RATE_LIMIT__ACTION", "drop"),
            ("LOGSHIP_RATE_LIMIT__SUMMARY_INTERVAL", "300ms"),
        ],
    );
    let summaries = |fx: &Fixture| -> Vec<String> {
        fx.messages()
            .into_iter()
            .filter(|m| m.starts_with("logship dropped"))
            .collect()
    };
    assert!(
        wait_until(WAIT, || !summaries(&fx).is_empty()),
        "{}",
        agent.logs()
    );
    assert!(summaries(&fx)[0].contains("50/s"), "{:?}", summaries(&fx));
    let kept = fx
        .messages()
        .iter()
        .filter(|m| m.starts_with("chat-"))
        .count();
    assert!(kept < 200, "about the burst of 50 passed: {kept}");

    // Lifted while the pod runs: the next lines all pass.
    kube.set_pod_annotation("shop", "chatty-0", "logship.io/rate-limit", Some("none"));
    std::thread::sleep(Duration::from_millis(500));
    let mut body = String::new();
    for i in 0..500 {
        body.push_str(&cri("stdout", 'F', &format!("free-{i}")));
    }
    append(&path, body.as_bytes());
    assert!(
        wait_until(WAIT, || fx
            .messages()
            .iter()
            .filter(|m| m.starts_with("free-"))
            .count()
            == 500),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_token_file_ending_in_a_newline_authenticates_and_its_rotations_are_followed() {
    let kube = TestKube::start();
    kube.require_token("s3cret-token");
    kube.create_pod(pod("shop", "cart-0", NODE).label("tier", "gold").build());
    let fx = Fixture::new();
    // Written the usual way: `echo "$TOKEN" > token`.
    let token = fx.dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let path = fx.log(&file_name("shop", "cart-0", "cart"));
    append(&path, cri("stdout", 'F', "gold").as_bytes());
    let token_env = token.display().to_string();
    let mut agent = spawn(
        &fx,
        &kube,
        &[("LOGSHIP_KUBERNETES__TOKEN_FILE", token_env.as_str())],
    );
    let r = fx.wait_record(&agent, "gold");
    assert_eq!(
        r["kubernetes"]["labels"]["tier"],
        "gold",
        "{r}\n{}",
        agent.logs()
    );
    let sent: Vec<_> = kube
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert!(!sent.is_empty());
    assert!(
        sent.iter()
            .all(|a| a.as_deref() == Some("Bearer s3cret-token")),
        "{sent:?}"
    );

    // A rotation written with CRLF and spaces, renamed over the old file: only the new token
    // is accepted from now on, and a pod created after it is still enriched.
    let next = fx.dir.path().join("token.new");
    std::fs::write(&next, "  n3w-token \r\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    kube.require_token("n3w-token");
    kube.compact();
    kube.close_watches();
    kube.create_pod(pod("shop", "after-0", NODE).label("tier", "silver").build());
    append(
        &fx.log(&file_name("shop", "after-0", "after")),
        cri("stdout", 'F', "silver").as_bytes(),
    );
    let r = fx.wait_record(&agent, "silver");
    assert_eq!(
        r["kubernetes"]["labels"]["tier"],
        "silver",
        "{r}\n{}",
        agent.logs()
    );
    assert!(
        !agent.logs().contains("refused"),
        "no request carried the old token after the rotation:\n{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_refused_token_is_logged_counted_and_named_by_readiness_and_status() {
    let kube = TestKube::start();
    kube.require_token("the-right-token");
    kube.create_pod(pod("shop", "cart-0", NODE).label("tier", "gold").build());
    let fx = Fixture::new();
    let token = fx.dir.path().join("token");
    std::fs::write(&token, "a-revoked-token\n").unwrap();
    let token_env = token.display().to_string();
    let path = fx.log(&file_name("shop", "cart-0", "cart"));
    append(&path, cri("stdout", 'F', "unlabelled").as_bytes());
    let mut agent = spawn(
        &fx,
        &kube,
        &[
            ("LOGSHIP_KUBERNETES__TOKEN_FILE", token_env.as_str()),
            ("LOGSHIP_KUBERNETES__WAIT_FOR_METADATA", "500ms"),
        ],
    );
    // Records still ship, with what the file name tells.
    let r = fx.wait_record(&agent, "unlabelled");
    assert_eq!(r["kubernetes"]["pod"]["name"], "cart-0");
    assert!(r["kubernetes"].get("labels").is_none(), "{r}");

    let said = format!("The API server refused the token from {token_env}: 401");
    assert!(
        wait_until(WAIT, || agent.logs().contains(&said)),
        "{said:?} not in:\n{}",
        agent.logs()
    );
    let addr = agent.server_addr();
    let metrics = support::agent::http_get(addr, "/metrics").2;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logship_kubernetes_refused_total{code=\"401\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{metrics}");
    assert!(
        metrics.contains("logship_kubernetes_refused_status 401"),
        "{metrics}"
    );
    let (code, _, ready) = support::agent::http_get(addr, "/readyz");
    assert_eq!(code, 200, "records still ship: {ready}");
    assert!(
        ready.contains("the Kubernetes API server refused the agent's token (401 Unauthorized)"),
        "{ready}"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_logship"))
        .args(["status", "--server", &addr.to_string()])
        .env("NODE_NAME", NODE)
        .output()
        .unwrap();
    let status = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        status.contains("refused the agent's token (401 Unauthorized)")
            && status.contains("kubernetes the API server refused the agent's credentials: 401"),
        "{status}"
    );

    // The right token is mounted: the refusal clears without a restart.
    let next = fx.dir.path().join("token.new");
    std::fs::write(&next, "the-right-token\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let ready = support::agent::http_get(addr, "/readyz").2;
            ready.contains("Kubernetes API reachable")
        }),
        "{}",
        agent.logs()
    );
    append(&path, cri("stdout", 'F', "labelled").as_bytes());
    let r = fx.wait_record(&agent, "labelled");
    assert_eq!(r["kubernetes"]["labels"]["tier"], "gold", "{r}");
    assert!(agent.terminate().success());
}

#[test]
fn a_pod_annotation_cannot_lift_the_operators_limit_unless_overrides_are_allowed() {
    let kube = TestKube::start();
    kube.create_pod(
        pod("shop", "greedy-0", NODE)
            .annotation("logship.io/rate-limit", "none")
            .build(),
    );
    let lines = |prefix: &str| -> String {
        (0..1000)
            .map(|i| cri("stdout", 'F', &format!("{prefix}-{i}")))
            .collect()
    };
    let count = |fx: &Fixture, prefix: &str| {
        fx.messages()
            .iter()
            .filter(|m| m.starts_with(&format!("{prefix}-")))
            .count()
    };
    let limited = [
        ("LOGSHIP_RATE_LIMIT__NAMESPACES", "shop=50/s"),
        ("LOGSHIP_RATE_LIMIT__ACTION", "drop"),
        ("LOGSHIP_RATE_LIMIT__SUMMARY_INTERVAL", "300ms"),
    ];

    // The default, "tighten": the operator's 50/s holds, and the attempt is said and counted.
    let fx = Fixture::new();
    append(
        &fx.log(&file_name("shop", "greedy-0", "greedy")),
        lines("greedy").as_bytes(),
    );
    let mut agent = spawn(&fx, &kube, &limited);
    assert!(
        wait_until(WAIT, || fx
            .messages()
            .iter()
            .any(|m| m.starts_with("logship dropped") && m.contains("50/s"))),
        "{}",
        agent.logs()
    );
    assert!(
        count(&fx, "greedy") < 200,
        "about the burst of 50 passed: {}",
        count(&fx, "greedy")
    );
    assert!(
        agent
            .logs()
            .contains("A pod annotation asked for a looser rate limit than the operator's"),
        "{}",
        agent.logs()
    );
    let metrics = support::agent::http_get(agent.server_addr(), "/metrics").2;
    assert!(
        metrics.contains("logship_rate_limit_annotations_refused_total 1"),
        "{metrics}"
    );
    assert!(agent.terminate().success());

    // The operator allows overrides: the same annotation lifts the limit.
    let fx = Fixture::new();
    append(
        &fx.log(&file_name("shop", "greedy-0", "greedy")),
        lines("free").as_bytes(),
    );
    let mut env = limited.to_vec();
    env.push(("LOGSHIP_RATE_LIMIT__ANNOTATIONS", "override"));
    let mut agent = spawn(&fx, &kube, &env);
    assert!(
        wait_until(WAIT, || count(&fx, "free") == 1000),
        "{} of 1000\n{}",
        count(&fx, "free"),
        agent.logs()
    );
    assert!(!fx
        .messages()
        .iter()
        .any(|m| m.starts_with("logship dropped")));
    assert!(agent.terminate().success());
}

/// After a short API outage on a quiet node (no pod changes, so the resumed watch brings no
/// event), the agent learns that the API answers again: `logship_kubernetes_reachable` and the
/// readiness reason come back without waiting for a pod to change.
#[test]
fn reachability_returns_after_an_outage_on_a_quiet_node() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "quiet-0", NODE).label("tier", "gold").build());
    let fx = Fixture::new();
    let path = fx.log(&file_name("shop", "quiet-0", "app"));
    append(&path, cri("stdout", 'F', "before").as_bytes());
    let mut agent = spawn(&fx, &kube, &[]);
    fx.wait_record(&agent, "before");
    let addr = agent.server_addr();
    let reachable = || {
        support::agent::http_get(addr, "/metrics")
            .2
            .lines()
            .find_map(|l| l.strip_prefix("logship_kubernetes_reachable "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(reachable(), Some(1.0));
    // The API server goes away for a while (its watches end with it).
    kube.down();
    assert!(
        wait_until(WAIT, || reachable() == Some(0.0)),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    kube.up();
    // It answers again; nothing changes on the node.
    assert!(
        wait_until(WAIT, || reachable() == Some(1.0)),
        "still unreachable long after the API server came back\n{}",
        agent.logs()
    );
    let ready = support::agent::http_get(addr, "/readyz").2;
    assert!(ready.contains("Kubernetes API reachable"), "{ready}");
    append(&path, cri("stdout", 'F', "after").as_bytes());
    let r = fx.wait_record(&agent, "after");
    assert_eq!(r["kubernetes"]["labels"]["tier"], "gold", "{r}");
    assert!(agent.terminate().success());
}

/// While the API server refuses the agent's token, files of containers that start one after
/// another are still found and opened at once (their descriptors held, so a rotation cannot
/// take them away), and their lines ship after `wait_for_metadata` with what the file name tells.
#[test]
fn files_are_opened_at_once_while_the_api_server_refuses() {
    let kube = TestKube::start();
    kube.require_token("the-right-token");
    let fx = Fixture::new();
    let token = fx.dir.path().join("token");
    std::fs::write(&token, "a-revoked-token\n").unwrap();
    let token_env = token.display().to_string();
    let mut agent = spawn(
        &fx,
        &kube,
        &[
            ("LOGSHIP_KUBERNETES__TOKEN_FILE", token_env.as_str()),
            ("LOGSHIP_KUBERNETES__WAIT_FOR_METADATA", "500ms"),
        ],
    );
    const FILES: usize = 8;
    let (mut opened, mut shipped) = (Vec::new(), Vec::new());
    for n in 0..FILES {
        let name = file_name("shop", &format!("web-{n}"), "app");
        let created = Instant::now();
        append(
            &fx.log(&name),
            cri("stdout", 'F', &format!("line of {n}")).as_bytes(),
        );
        assert!(
            wait_until(WAIT, || agent
                .logs()
                .lines()
                .any(|l| l.contains("Following log file") && l.contains(&name))),
            "{name} not opened\n{}",
            agent.logs()
        );
        opened.push(created.elapsed());
        fx.wait_record(&agent, &format!("line of {n}"));
        shipped.push(created.elapsed());
    }
    assert!(agent.terminate().success());
    opened.sort();
    shipped.sort();
    println!(
        "while the API server refuses: opened after p50 {:?} / max {:?}; first line shipped after p50 {:?} / max {:?}",
        opened[FILES / 2],
        opened[FILES - 1],
        shipped[FILES / 2],
        shipped[FILES - 1]
    );
    assert!(
        opened[FILES - 1] < Duration::from_secs(2),
        "a new file waited {:?} to be opened",
        opened[FILES - 1]
    );
}
