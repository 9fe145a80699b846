//! The `logship` binary's command line, run for real: `check` on a good and a bad
//! configuration, and `--version`. The environment is cleared, so only what a test sets counts.

use std::path::Path;
use std::process::{Command, Output};

fn logship(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logship"));
    cmd.args(args).env_clear().env("NODE_NAME", "test-node");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run logship")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_prints_the_effective_configuration_of_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "good.toml",
        r#"
data_dir = "${DATA}"
[tail]
include = ["/var/log/pods/*/*/*.log"]
max_line_bytes = 1048576
[output]
type = "file"
[output.file]
path = "/tmp/out.ndjson"
"#,
    );
    let out = logship(
        &[
            "check",
            "--config",
            &config,
            "--include",
            "/a/*.log",
            "--include",
            "/b/{x,y}.log",
        ],
        &[
            ("DATA", "/srv/logship"),
            ("LOGSHIP_TAIL__READ_FROM", "tail"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");

    // The whole configuration, as TOML in the file's shape: file, environment and flags merged.
    let effective: toml::Table = toml::from_str(&stdout).expect("stdout is TOML");
    assert_eq!(effective["data_dir"].as_str(), Some("/srv/logship"));
    assert_eq!(effective["node_name"].as_str(), Some("test-node"));
    let tail = effective["tail"].as_table().unwrap();
    let include: Vec<&str> = tail["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(include, ["/a/*.log", "/b/{x,y}.log"]);
    assert_eq!(tail["read_from"].as_str(), Some("tail"));
    assert_eq!(tail["max_line_bytes"].as_str(), Some("1MiB"));
    assert_eq!(tail["poll_interval"].as_str(), Some("250ms"));
    assert_eq!(effective["output"]["type"].as_str(), Some("file"));
    assert_eq!(
        effective["output"]["file"]["path"].as_str(),
        Some("/tmp/out.ndjson")
    );
    for section in ["log", "tail", "positions", "buffer", "output"] {
        assert!(effective.contains_key(section), "{section} in\n{stdout}");
    }
}

#[test]
fn check_without_a_file_prints_the_defaults() {
    let out = logship(&["check"], &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("include = [\"/var/log/containers/*.log\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("max_bytes = \"12MiB\""), "{stdout}");
}

#[test]
fn a_bad_configuration_exits_64_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.yaml",
        r#"
data_dir: /srv/logship
tial:
  format: cri
tail:
  include: ["relative/*.log"]
  max_line_bytes: 100MiB
  poll_interval: soon
output:
  type: file
"#,
    );
    let out = logship(
        &["check", "--config", &config, "--output", "sideways"],
        &[("LOGSHIP_TAIL__READFROM", "tail")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let expected = [
        "environment variable LOGSHIP_TAIL__READFROM: names no configuration key; did you mean LOGSHIP_TAIL__READ_FROM?",
        "output.type: unknown variant `sideways`",
        "tail.poll_interval: \"soon\" is not a duration",
        "tial: unknown key; did you mean tail?",
        "tail.include: \"relative/*.log\" is not absolute",
        "tail.max_line_bytes: must be between 1KiB and 64MiB, is 100MiB",
    ];
    for error in expected {
        assert!(
            stderr.lines().any(|line| line.starts_with(error)),
            "missing {error:?} in\n{stderr}"
        );
    }
    // One line per error, after the heading.
    assert_eq!(stderr.lines().count(), 1 + expected.len(), "{stderr}");
}

#[test]
fn a_file_that_does_not_parse_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "broken.toml", "[tail]\nformat = cri\n");
    let out = logship(&["check", "--config", &config], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("parsing configuration file {config}, line 2")),
        "{stderr}"
    );
}

#[test]
fn version_prints_the_version() {
    let out = logship(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("logship {}", env!("CARGO_PKG_VERSION"))
    );
}
