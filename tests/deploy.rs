//! The manifests in deploy/ are what an operator applies: their configuration must validate with
//! this logship, and the DaemonSet must keep the promises the README makes (a grace period above
//! the shutdown timeout, read-only logs, no capabilities, every node).

use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn load(name: &str) -> Yaml {
    let path = format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = load("kustomization.yaml");
    assert_eq!(k["namespace"].as_str(), Some("kube-system"));
    for resource in k["resources"].as_vec().unwrap() {
        let name = resource.as_str().unwrap();
        assert!(!load(name)["kind"].is_badvalue(), "{name} has a kind");
    }
}

#[test]
fn the_configmap_validates_and_drains_within_the_grace_period() {
    let cm = load("configmap.yaml");
    let toml = cm["data"]["logship.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logship.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .env("NODE_NAME", "node-1")
        .env("ES_PASSWORD", "from-the-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("from-the-secret"),
        "the password is masked"
    );
    assert!(stdout.contains("password = \"***\""), "{stdout}");

    let ds = load("daemonset.yaml");
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
    let ds = load("daemonset.yaml");
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
