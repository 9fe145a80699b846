//! The manifests in deploy/ are what an operator applies: their configuration must validate with
//! this logship, and the DaemonSet must keep the promises the README makes (a grace period above
//! the shutdown timeout, read-only logs, no capabilities, every node, probes on the endpoint the
//! configuration opens). The overlays must parse and fit the base.
//!
//! Layout: `deploy/kustomization.yaml` names `base/` (the manifests); `overlays/*` build on
//! `../../base` (kustomize refuses an overlay inside its base's directory).

use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// The first document of `deploy/<path>`.
fn load(path: &str) -> Yaml {
    let path = format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

/// A manifest of the base.
fn base(name: &str) -> Yaml {
    load(&format!("base/{name}"))
}

/// `logship check` on a ConfigMap's logship.toml, as the DaemonSet's environment would have it
/// (the node's name; the password is a file, not a variable): the exit status and the effective
/// configuration.
fn check(configmap: &Yaml) -> (bool, String, String) {
    check_with(configmap, &[])
}

/// [`check`] with more environment variables, as a DaemonSet patch would set them.
fn check_with(configmap: &Yaml, env: &[(&str, &str)]) -> (bool, String, String) {
    let toml = configmap["data"]["logship.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logship.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .env("NODE_NAME", "node-1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every resource a kustomization names: a file that parses with a kind, or a directory with
/// a kustomization of its own (checked in turn).
fn check_kustomization(dir: &str) {
    let k = load(&format!("{dir}/kustomization.yaml"));
    assert_eq!(
        k["kind"].as_str(),
        Some("Kustomization"),
        "{dir}/kustomization.yaml"
    );
    for resource in k["resources"].as_vec().unwrap() {
        let name = resource.as_str().unwrap();
        let path = format!("{dir}/{name}");
        let full = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(&path);
        if full.is_dir() {
            check_kustomization(&path);
        } else {
            assert!(!load(&path)["kind"].is_badvalue(), "{path} has a kind");
        }
    }
    for patch in k["patches"].as_vec().into_iter().flatten() {
        let path = format!("{dir}/{}", patch["path"].as_str().unwrap());
        assert!(!load(&path)["kind"].is_badvalue(), "{path} has a kind");
    }
}

#[test]
fn kustomizations_list_manifests_that_parse() {
    let top = load("kustomization.yaml");
    assert_eq!(top["resources"][0].as_str(), Some("base"));
    let k = base("kustomization.yaml");
    assert_eq!(k["namespace"].as_str(), Some("kube-system"));
    for dir in [
        ".",
        "overlays/prometheus",
        "overlays/example",
        "overlays/migrate-from-fluent-bit",
        "overlays/migrate-from-fluentd",
        "overlays/node-journal",
    ] {
        check_kustomization(dir);
    }
}

#[test]
fn the_configmap_validates_and_drains_within_the_grace_period() {
    let (ok, stdout, stderr) = check(&base("configmap.yaml"));
    assert!(ok, "{stderr}");

    let ds = base("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let shutdown: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_timeout = \""))
        .and_then(|v| v.trim_end_matches("s\"").parse().ok())
        .expect("shutdown_timeout in seconds");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(
        grace > shutdown,
        "grace {grace}s must exceed shutdown_timeout {shutdown}s"
    );
}

#[test]
fn the_daemonset_runs_everywhere_with_least_privilege() {
    let ds = base("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["operator"].as_str(), Some("Exists"));
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert!(
        sc["capabilities"]["add"].is_badvalue(),
        "no capability added"
    );
    let mounts = c["volumeMounts"].as_vec().unwrap();
    let varlog = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/log"))
        .unwrap();
    assert_eq!(varlog["readOnly"].as_bool(), Some(true));
    let env: Vec<&str> = c["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"NODE_NAME"));
}

/// The Elasticsearch password is the Secret's key `password`, mounted read-only where the
/// ConfigMap's `auth.password_file` looks, and no Secret reaches the environment.
#[test]
fn the_password_is_a_file_mounted_from_the_secret() {
    let (ok, stdout, stderr) = check(&base("configmap.yaml"));
    assert!(ok, "{stderr}");
    let file = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password_file = \""))
        .map(|v| v.trim_end_matches('"'))
        .expect("auth.password_file in the effective configuration");
    let (dir, key) = file.rsplit_once('/').unwrap();
    assert_eq!(key, "password");

    let ds = base("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("a volume mounted at {dir}"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("logship-elasticsearch")
    );
    assert_eq!(volume["secret"]["defaultMode"].as_i64(), Some(0o400));
    for env in c["env"].as_vec().unwrap() {
        assert!(
            env["valueFrom"]["secretKeyRef"].is_badvalue(),
            "a Secret in the environment: {env:?}"
        );
    }
}

/// The NetworkPolicy lets in only the agent's HTTP port, on the agent's pods.
#[test]
fn the_network_policy_admits_only_the_http_port() {
    let policy = base("networkpolicy.yaml");
    assert_eq!(policy["kind"].as_str(), Some("NetworkPolicy"));
    let ds = base("daemonset.yaml");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_hash()
        .unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&pod_labels[k.as_str().unwrap()], v, "selector {k:?}");
    }
    assert_eq!(policy["spec"]["policyTypes"][0].as_str(), Some("Ingress"));
    let rules = policy["spec"]["ingress"].as_vec().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0]["from"].is_badvalue(), "from anywhere: Prometheus");
    let ports = rules[0]["ports"].as_vec().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"].as_str(), Some("http"));
    assert_eq!(ports[0]["protocol"].as_str(), Some("TCP"));
    let container_ports = ds["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_vec()
        .unwrap();
    assert!(container_ports
        .iter()
        .any(|p| p["name"].as_str() == Some("http")));
}

/// The probes and the port point at the endpoint the ConfigMap's configuration opens.
#[test]
fn the_probes_ask_the_endpoint_the_configuration_opens() {
    let (ok, stdout, stderr) = check(&base("configmap.yaml"));
    assert!(ok, "{stderr}");
    let listen = stdout
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .map(|v| v.trim_end_matches('"'))
        .expect("server.listen in the effective configuration");
    let (ip, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(ip, "0.0.0.0", "the kubelet probes the pod's IP");
    let port: i64 = port.parse().unwrap();

    let ds = base("daemonset.yaml");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let http = c["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("a port named http");
    assert_eq!(http["containerPort"].as_i64(), Some(port));
    assert_eq!(http["protocol"].as_str(), Some("TCP"));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("http"), "{probe}");
    }
    // A stuck agent is restarted, but not before the liveness bound (60s) has passed.
    let live = &c["livenessProbe"];
    let period = live["periodSeconds"].as_i64().unwrap();
    let failures = live["failureThreshold"].as_i64().unwrap();
    assert!(period * failures >= 30, "{period}s x {failures}");
}

#[test]
fn the_prometheus_overlay_scrapes_the_agents_http_port() {
    let ds = base("daemonset.yaml");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let service = load("overlays/prometheus/service.yaml");
    assert_eq!(service["kind"].as_str(), Some("Service"));
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    for (k, v) in service["spec"]["selector"].as_hash().unwrap() {
        assert_eq!(&pod_labels[k.as_str().unwrap()], v, "selector {k:?}");
    }
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["targetPort"].as_str(), Some("http"));
    assert_eq!(port["port"].as_i64(), Some(2020));

    let monitor = load("overlays/prometheus/podmonitor.yaml");
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(monitor["kind"].as_str(), Some("PodMonitor"));
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_hash()
        .unwrap()
    {
        assert_eq!(&pod_labels[k.as_str().unwrap()], v, "selector {k:?}");
    }
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("http"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
}

/// The example overlay patches the base ConfigMap (same name and namespace) with a
/// configuration that validates and differs from the base only in the Elasticsearch hosts.
#[test]
fn the_example_overlay_changes_only_the_elasticsearch_url() {
    let base_cm = base("configmap.yaml");
    let patch = load("overlays/example/configmap.yaml");
    for key in ["kind", "apiVersion"] {
        assert_eq!(patch[key], base_cm[key], "{key}");
    }
    for key in ["name", "namespace"] {
        assert_eq!(patch["metadata"][key], base_cm["metadata"][key], "{key}");
    }
    let (ok, patched, stderr) = check(&patch);
    assert!(ok, "{stderr}");
    let (_, original, _) = check(&base_cm);
    let differ: Vec<(&str, &str)> = original
        .lines()
        .zip(patched.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(original.lines().count(), patched.lines().count());
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert!(differ[0].1.starts_with("hosts = [\"https://"), "{differ:?}");
}

/// The migration overlays set `positions.import_from` in the DaemonSet's environment, to sources
/// of their agent that the pod can read (under a read-only mount), and the base configuration
/// with it validates.
#[test]
fn the_migration_overlays_import_from_read_only_mounts() {
    let base_ds = base("daemonset.yaml");
    let base_mounts = base_ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_vec()
        .unwrap()
        .clone();
    for (overlay, kind) in [
        ("migrate-from-fluent-bit", "fluent-bit:"),
        ("migrate-from-fluentd", "fluentd:"),
    ] {
        let patch = load(&format!("overlays/{overlay}/daemonset.yaml"));
        let container = &patch["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["name"].as_str(), Some("logship"), "{overlay}");
        let env = &container["env"][0];
        assert_eq!(
            env["name"].as_str(),
            Some("LOGSHIP_POSITIONS__IMPORT_FROM"),
            "{overlay}"
        );
        let value = env["value"].as_str().unwrap();
        let sources: Vec<String> = serde_json::from_str(value).unwrap();
        let mut mounts = base_mounts.clone();
        if let Some(more) = container["volumeMounts"].as_vec() {
            mounts.extend(more.iter().cloned());
        }
        for source in &sources {
            let path = source
                .strip_prefix(kind)
                .unwrap_or_else(|| panic!("{source}"));
            let mount = mounts
                .iter()
                .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("{overlay}: {path} is not mounted"));
            assert_eq!(mount["readOnly"].as_bool(), Some(true), "{overlay}: {path}");
        }
        let (ok, stdout, stderr) = check_with(
            &base("configmap.yaml"),
            &[("LOGSHIP_POSITIONS__IMPORT_FROM", value)],
        );
        assert!(ok, "{overlay}: {stderr}");
        assert!(
            stdout.contains(&format!("import_from = [\"{kind}")),
            "{stdout}"
        );
    }
}

/// The node-journal overlay reads the kubelet's and containerd's journal entries: its
/// environment turns the journal on, the base configuration validates with it, and both journal
/// directories are mounted read-only.
#[test]
fn the_node_journal_overlay_reads_the_kubelet_and_containerd_from_read_only_journals() {
    let base_ds = base("daemonset.yaml");
    let mut mounts = base_ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_vec()
        .unwrap()
        .clone();
    let patch = load("overlays/node-journal/daemonset.yaml");
    let container = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"].as_str(), Some("logship"));
    mounts.extend(container["volumeMounts"].as_vec().unwrap().iter().cloned());
    for dir in ["/var/log/journal", "/run/log/journal"] {
        let mount = mounts
            .iter()
            .find(|m| dir.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{dir} is not mounted"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{dir}");
    }
    let env: Vec<(String, String)> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ok, stdout, stderr) = check_with(&base("configmap.yaml"), &pairs);
    assert!(ok, "{stderr}");
    for want in [
        "enabled = true",
        "units = [\"kubelet.service\", \"containerd.service\"]",
        "kernel = false",
    ] {
        assert!(stdout.contains(want), "{want} not in:\n{stdout}");
    }
}

/// `deploy/<path>` as text.
fn text(path: &str) -> String {
    let path = format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `key=value` settings of a systemd unit, in order (a key may repeat).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The VM configuration validates, and the unit that runs it drains within its stop timeout,
/// may write the data directory and nothing else, reads the logs and the journal as a non-root
/// user, and reloads with SIGHUP.
#[test]
fn the_vm_configuration_and_its_systemd_unit_agree() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logship.toml");
    std::fs::write(&file, text("vm/logship.toml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .args(["check", "--config"])
        .arg(&file)
        .env_clear()
        .env("NODE_NAME", "vm-1")
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Table = toml::from_str(&effective).unwrap();
    let value = |path: &str| {
        let mut v = &effective[path.split('.').next().unwrap()];
        for part in path.split('.').skip(1) {
            v = &v[part];
        }
        v.as_str().unwrap_or_else(|| panic!("{path}")).to_string()
    };
    assert_eq!(value("tail.format"), "raw");
    assert_eq!(value("output.type"), "elasticsearch");
    let data_dir = value("data_dir");
    let shutdown: u64 = value("shutdown_timeout")
        .trim_end_matches('s')
        .parse()
        .unwrap();

    let settings = unit_settings(&text("systemd/logship.service"));
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        let values = get(key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0]
    };
    let stop: u64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(
        stop > shutdown,
        "TimeoutStopSec {stop}s vs shutdown_timeout {shutdown}s"
    );
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ReadWritePaths"), data_dir);
    assert_eq!(format!("/var/lib/{}", one("StateDirectory")), data_dir);
    assert_eq!(one("User"), "logship");
    // adm reads the system's text logs, systemd-journal the journal the VM configuration reads.
    for group in ["adm", "systemd-journal"] {
        assert!(
            one("SupplementaryGroups")
                .split_whitespace()
                .any(|g| g == group),
            "{group}"
        );
    }
    assert_eq!(effective["journald"]["enabled"].as_bool(), Some(true));
    assert_eq!(
        effective["journald"]["exclude_units"][0].as_str(),
        Some("logship.service"),
        "the agent's own log is not read back"
    );
    assert_eq!(one("CapabilityBoundingSet"), "", "no capability");
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/logship run --config /etc/logship/logship.toml"
    );
    // `systemctl reload` is SIGHUP to the agent, which reloads its configuration.
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
}

/// The image: built locked in release, the agent as its entry point with the config path the
/// DaemonSet mounts, the endpoint's port exposed, a non-root default the DaemonSet overrides.
#[test]
fn the_dockerfile_builds_and_runs_what_the_daemonset_expects() {
    let dockerfile = text("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let has = |prefix: &str| instructions.iter().any(|l| l.starts_with(prefix));
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(
        froms[1].starts_with("FROM gcr.io/distroless/cc-debian12"),
        "{froms:?}"
    );
    assert!(
        froms[0].contains("-bookworm"),
        "the builder matches the runtime's glibc"
    );
    assert!(joined.contains("cargo build --release --locked"));
    assert!(has(r#"ENTRYPOINT ["/usr/local/bin/logship"]"#));
    assert!(has(r#"CMD ["--config", "/etc/logship/logship.toml"]"#));
    assert!(has("EXPOSE 2020"));
    assert!(has("USER 65532:65532"));
    for label in ["title", "version", "revision", "source", "licenses"] {
        assert!(
            joined.contains(&format!("org.opencontainers.image.{label}=")),
            "{label}"
        );
    }
    // The DaemonSet passes the same config path and runs the image as root.
    let ds = base("daemonset.yaml");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["--config", "/etc/logship/logship.toml"]);
    assert_eq!(c["securityContext"]["runAsUser"].as_i64(), Some(0));
    // Every file the image copies from the repository is there.
    for line in instructions
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(path.exists(), "{line}: {source}");
        }
    }
}
