//! Loading end to end, through [`load`] as `main` calls it: real files in a temporary directory,
//! an environment passed in, and the errors a user would read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::schema::Schema;
use super::*;
use crate::parse::{FormatChoice, Oversize};

/// An environment with a node name, so that no test depends on the machine's hostname.
fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("NODE_NAME".into()).or_insert("node-1".into());
    env
}

fn options(path: Option<&Path>, vars: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        path: path.map(Path::to_path_buf),
        overrides: Vec::new(),
        env: env(vars),
    }
}

/// A file named `name` with `text` in a fresh directory (kept alive by the returned guard).
fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Every error's text, in order.
fn load_errors(options: &LoadOptions) -> Vec<String> {
    match load(options) {
        Ok(loaded) => panic!("loaded:\n{}", loaded.effective_toml()),
        Err(errors) => {
            // Display is one error per line, the same errors.
            let lines: Vec<String> = errors.to_string().lines().map(String::from).collect();
            let each: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
            assert_eq!(lines, each);
            each
        }
    }
}

fn assert_has(errors: &[String], needle: &str) {
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "no error contains {needle:?}:\n{}",
        errors.join("\n")
    );
}

const TOML: &str = r#"
data_dir = "/data"
shutdown_timeout = "10s"
[log]
format = "json"
[tail]
include = ["/logs/*.log", "/other/{a,b}/*.log"]
read_from = "tail"
format = "cri"
max_line_bytes = 1048576
oversize_lines = "truncate"
poll_interval = "1s"
[positions]
gc_after = "1h"
[buffer]
max_bytes = "64MiB"
[output]
type = "file"
[output.file]
path = "/out/records.ndjson"
fsync = true
"#;

const YAML: &str = r#"
data_dir: /data
shutdown_timeout: 10s
log:
  format: json
tail:
  include: ["/logs/*.log", "/other/{a,b}/*.log"]
  read_from: tail
  format: cri
  max_line_bytes: 1048576
  oversize_lines: truncate
  poll_interval: 1s
positions:
  gc_after: 1h
buffer:
  max_bytes: 64MiB
output:
  type: file
  file:
    path: /out/records.ndjson
    fsync: true
"#;

#[test]
fn no_file_is_the_defaults() {
    let loaded = load(&options(None, &[])).unwrap();
    let s = &loaded.settings;
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/logship"));
    assert_eq!(s.node_name, "node-1");
    assert_eq!(s.tail.include, ["/var/log/containers/*.log"]);
    assert_eq!(s.tail.read_from, ReadFrom::Head);
    assert!(matches!(s.output, OutputSettings::Elasticsearch(_)));
    assert!(loaded.effective_toml().contains("node_name = \"node-1\""));
}

#[test]
fn toml_and_yaml_files_say_the_same() {
    for (name, text) in [
        ("logship.toml", TOML),
        ("logship.yaml", YAML),
        ("l.yml", YAML),
    ] {
        let (_dir, path) = file(name, text);
        let loaded = load(&options(Some(&path), &[])).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.data_dir, PathBuf::from("/data"), "{name}");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level, "info", "untouched keys keep their defaults");
        assert_eq!(s.tail.include, ["/logs/*.log", "/other/{a,b}/*.log"]);
        assert!(s.tail.include_set.is_match("/other/b/x.log"));
        assert_eq!(s.tail.read_from, ReadFrom::Tail);
        assert_eq!(s.tail.format, FormatChoice::Cri);
        assert_eq!(s.tail.max_line_bytes, 1 << 20);
        assert_eq!(s.tail.oversize, Oversize::Truncate);
        assert_eq!(s.tail.poll_interval, Duration::from_secs(1));
        assert_eq!(s.positions.gc_after, Duration::from_secs(3600));
        assert_eq!(s.buffer.max_bytes, 64 << 20);
        assert_eq!(
            s.output,
            OutputSettings::File {
                path: "/out/records.ndjson".into(),
                fsync: true
            }
        );
        assert!(loaded
            .effective_toml()
            .contains("max_line_bytes = \"1MiB\""));
    }
}

#[test]
fn a_file_of_another_format_is_an_error_naming_it() {
    let (_dir, path) = file("logship.json", "{}");
    let errors = load_errors(&options(Some(&path), &[]));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("logship.json: unknown format"),
        "{errors:?}"
    );
    let missing = options(Some(Path::new("/nonexistent/logship.toml")), &[]);
    assert_has(
        &load_errors(&missing),
        "reading configuration file /nonexistent/logship.toml",
    );
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let (_dir, path) = file("bad.toml", "data_dir = \"/x\"\n[tail]\ninclude = [\n");
    let errors = load_errors(&options(Some(&path), &[]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let prefix = format!(
        "parsing configuration file {}, line 3, column 12: unclosed array",
        path.display()
    );
    assert!(errors[0].starts_with(&prefix), "{errors:?}");

    let (_dir, path) = file("bad.yaml", "tail:\n  include: [/a\n  x: 1\n");
    let errors = load_errors(&options(Some(&path), &[]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("bad.yaml"), "{errors:?}");
    assert!(errors[0].contains("line 3"), "{errors:?}");
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let (_dir, path) = file("logship.toml", TOML);
    let mut options = options(
        Some(&path),
        &[
            ("LOGSHIP_TAIL__READ_FROM", "head"),
            ("LOGSHIP_TAIL__INCLUDE", r#"["/a/*.log","/b/{x,y}.log"]"#),
            ("LOGSHIP_TAIL__EXCLUDE", "/a/skip.log,/b/{p,q}.log"),
            ("logship_output__file__fsync", "false"),
            ("LOGSHIP_TAIL__MAX_LINE_BYTES", "2KiB"),
            ("LOGSHIP_DATA_DIR", "/from-env"),
        ],
    );
    let s = load(&options).unwrap().settings;
    assert_eq!(s.tail.read_from, ReadFrom::Head);
    assert_eq!(s.tail.include, ["/a/*.log", "/b/{x,y}.log"]);
    assert_eq!(s.tail.exclude, ["/a/skip.log", "/b/{p,q}.log"]);
    assert!(s.tail.exclude_set.is_match("/b/q.log"));
    assert_eq!(s.tail.max_line_bytes, 2048);
    assert_eq!(s.data_dir, PathBuf::from("/from-env"));
    assert_eq!(
        s.output,
        OutputSettings::File {
            path: "/out/records.ndjson".into(),
            fsync: false
        }
    );

    options.overrides = vec![
        ("tail.include".into(), json!(["/flag/*.log"])),
        ("data_dir".into(), json!("/from-flag")),
        ("output.type".into(), json!("blackhole")),
    ];
    let s = load(&options).unwrap().settings;
    assert_eq!(s.tail.include, ["/flag/*.log"]);
    assert_eq!(s.data_dir, PathBuf::from("/from-flag"));
    assert_eq!(s.output, OutputSettings::Blackhole);
}

#[test]
fn file_references_are_substituted_from_the_environment() {
    let text = r#"
# an example, not substituted: password = "${ES_PASSWORD}"
data_dir = "${DATA:-/var/lib/fallback}"
node_name = "${NODE}"
[output.file]
path = "/out/$${literal}.ndjson"
"#;
    let (_dir, path) = file("logship.toml", text);
    let loaded = load(&options(Some(&path), &[("NODE", "node-9")])).unwrap();
    assert_eq!(loaded.settings.data_dir, PathBuf::from("/var/lib/fallback"));
    assert_eq!(loaded.settings.node_name, "node-9");
    assert!(loaded
        .effective_toml()
        .contains("path = \"/out/${literal}.ndjson\""));

    let loaded = load(&options(Some(&path), &[("NODE", "n"), ("DATA", "/d")])).unwrap();
    assert_eq!(loaded.settings.data_dir, PathBuf::from("/d"));
}

/// The password of the Basic authentication the settings carry.
fn es_password(settings: &Settings) -> String {
    use crate::sink::elasticsearch::client::{Auth, SecretSource};
    let OutputSettings::Elasticsearch(es) = &settings.output else {
        panic!("not Elasticsearch: {:?}", settings.output)
    };
    match &es.client.auth {
        Auth::Basic {
            password: SecretSource::Value(secret),
            ..
        } => secret.expose().to_owned(),
        other => panic!("not a password: {other:?}"),
    }
}

#[test]
fn substituted_values_are_taken_exactly_as_they_are_in_toml_and_yaml() {
    let values = [
        r#"pa"ss"#,
        r"back\slash\",
        "two\nlines",
        "it's",
        "not # a comment",
        "\\u0041 \\\" '' \"\"\" ''' #x\n\r\t${HOST} $${HOST}",
        " spaced ",
        "- [a, {b: c}]: d",
    ];
    let head = "[output]\ntype = \"elasticsearch\"\n[output.elasticsearch]\nhosts = [\"http://es:9200\"]\n";
    let yaml = "output:\n  type: elasticsearch\n  elasticsearch:\n    hosts: [http://es:9200]\n";
    let files = [
        (
            "logship.toml",
            format!("{head}[output.elasticsearch.auth]\nuser = \"u\"\npassword = \"${{PASSWORD}}\"\n"),
        ),
        (
            "logship.toml",
            format!("{head}auth = {{ user = \"u\", password = '${{PASSWORD}}' }}\n"),
        ),
        (
            "logship.toml",
            format!("{head}[output.elasticsearch.auth]\nuser = \"u\"\npassword = \"\"\"\n${{PASSWORD}}\"\"\" # ${{HOST}}\n"),
        ),
        (
            "logship.yaml",
            format!("{yaml}    auth:\n      user: u\n      password: \"${{PASSWORD}}\"\n"),
        ),
        (
            "logship.yaml",
            format!("{yaml}    auth: {{user: u, password: '${{PASSWORD}}'}}\n"),
        ),
        (
            "logship.yaml",
            format!("{yaml}    auth:\n      user: u\n      password: ${{PASSWORD}}   # a plain scalar\n"),
        ),
    ];
    for value in values {
        for (name, text) in &files {
            let (_dir, path) = file(name, text);
            let loaded = load(&options(Some(&path), &[("PASSWORD", value), ("HOST", "h")]))
                .unwrap_or_else(|e| panic!("{name} with {value:?}:\n{text}\n{e}"));
            assert_eq!(es_password(&loaded.settings), value, "{name}:\n{text}");
        }
    }
}

#[test]
fn a_whole_reference_reads_as_a_number_or_boolean_where_the_key_takes_one() {
    let (_dir, path) = file(
        "logship.yaml",
        "tail:\n  max_deleted_files: ${FILES}\n  include: [${LOGS}/*.log, \"/b/${LOGS}.log\"]\noutput:\n  type: file\n  file:\n    path: /out.ndjson\n    fsync: ${SYNC}\n",
    );
    let vars = [("FILES", "77"), ("SYNC", "true"), ("LOGS", "/l")];
    let loaded = load(&options(Some(&path), &vars)).unwrap();
    assert_eq!(loaded.settings.tail.include, ["/l/*.log", "/b//l.log"]);
    let effective = loaded.effective_toml();
    assert!(effective.contains("max_deleted_files = 77"), "{effective}");
    assert!(effective.contains("fsync = true"), "{effective}");

    let (_dir, path) = file("logship.toml", "[tail]\nmax_deleted_files = \"${FILES}\"\n");
    let errors = load_errors(&options(Some(&path), &[("FILES", "many")]));
    assert_has(&errors, "tail.max_deleted_files");
    assert_has(&errors, "${FILES}: expected a number, found \"many\"");
}

#[test]
fn rate_limit_annotations_take_three_policies() {
    use crate::buffer::rate_limit::AnnotationPolicy;
    for (text, want) in [
        ("", AnnotationPolicy::Tighten),
        ("annotations = \"tighten\"", AnnotationPolicy::Tighten),
        ("annotations = \"override\"", AnnotationPolicy::Override),
        ("annotations = \"ignore\"", AnnotationPolicy::Ignore),
    ] {
        let (_dir, path) = file("logship.toml", &format!("[rate_limit]\n{text}\n"));
        let loaded = load(&options(Some(&path), &[])).unwrap();
        assert_eq!(loaded.settings.rate_limit.annotations, want, "{text}");
    }
    let (_dir, path) = file("logship.toml", "[rate_limit]\nannotations = \"loosen\"\n");
    let errors = load_errors(&options(Some(&path), &[]));
    assert_has(
        &errors,
        "rate_limit.annotations: must be \"tighten\", \"override\" or \"ignore\", is \"loosen\"",
    );
}

#[test]
fn unset_references_are_all_reported_with_their_lines() {
    let text = "data_dir = \"${DATA}\"\n[tail]\ninclude = [\"${LOGS}/*.log\"]\n";
    let (_dir, path) = file("logship.toml", text);
    let errors = load_errors(&options(Some(&path), &[("LOGSHIP_TAIL__READFROM", "tail")]));
    let at = |line: usize, var: &str| {
        format!(
            "configuration file {}, line {line}: ${{{var}}} is not set",
            path.display()
        )
    };
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with(&at(1, "DATA")), "{errors:#?}");
    assert!(errors[1].starts_with(&at(3, "LOGS")), "{errors:#?}");
    // The environment is still checked when the file cannot be used.
    assert!(errors[2].contains("LOGSHIP_TAIL__READFROM"), "{errors:#?}");
}

#[test]
fn every_mistake_is_reported_at_once_with_its_key() {
    let text = r#"
data_dir = 5
node_name = "n"
[log]
level = "inof"
[tial]
format = "cri"
[tail]
include = ["var/log/*.log"]
max_line_byte = "1MiB"
read_from = "middle"
poll_interval = "20s"
read_budget = "a lot"
[output]
type = "file"
[output.file]
fsync = "yes"
[output.file.extra]
x = 1
"#;
    let (_dir, path) = file("logship.toml", text);
    let mut options = options(
        Some(&path),
        &[
            ("LOGSHIP_TAIL__FORMATT", "raw"),
            ("LOGSHIP_POSITIONS__FLUSH_INTERVAL", "1ms"),
        ],
    );
    options.overrides = vec![("tail.rescan_intervall".into(), json!("1s"))];
    let errors = load_errors(&options);
    let file = path.display().to_string();
    let expected = [
        "environment variable LOGSHIP_TAIL__FORMATT: names no configuration key; did you mean LOGSHIP_TAIL__FORMAT?".to_string(),
        format!("data_dir: invalid type: integer `5`, expected a string (from {file})"),
        format!("output.file.extra: unknown key (from {file})"),
        format!("output.file.fsync: invalid type: string \"yes\", expected a boolean (from {file})"),
        format!("tail.max_line_byte: unknown key; did you mean tail.max_line_bytes? (from {file})"),
        "tail.read_budget: \"a lot\" is not a size".to_string(),
        format!("tail.read_from: unknown variant `middle`, expected `head` or `tail` (from {file})"),
        "tail.rescan_intervall: unknown key; did you mean tail.rescan_interval? (from the command line)".to_string(),
        format!("tial: unknown key; did you mean tail? (from {file})"),
        "log.level: \"inof\" is not a level".to_string(),
        "tail.include: \"var/log/*.log\" is not absolute".to_string(),
        format!("tail.poll_interval: must be between 10ms and 10s, is 20s (from {file})"),
        "positions.flush_interval: must be at least 10ms, is 1ms (from LOGSHIP_POSITIONS__FLUSH_INTERVAL)".to_string(),
        "output.file.path: is required when output.type = \"file\" (from the default)".to_string(),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(&expected) {
        assert!(
            error.starts_with(expected.as_str()),
            "\n{error}\n{expected}"
        );
    }
}

#[test]
fn a_list_of_multiline_rules_from_the_file_the_environment_and_with_mistakes() {
    let text = r#"
[multiline]
default_rule = ["java", "python", "timestamped"]
[[multiline.rules]]
name = "timestamped"
start = '^\d{4}-\d{2}-\d{2}'
"#;
    let (dir, path) = file("logship.toml", text);
    let loaded = load(&options(Some(&path), &[])).unwrap();
    assert_eq!(
        loaded.settings.multiline.default_rule().unwrap().name(),
        "java+python+timestamped"
    );
    // Written back as the `+` form, which loads to the same.
    let effective = loaded.effective_toml();
    assert!(
        effective.contains("default_rule = \"java+python+timestamped\""),
        "{effective}"
    );
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &effective).unwrap();
    assert_eq!(
        load(&options(Some(&again), &[])).unwrap().effective_toml(),
        effective
    );
    let env = [("LOGSHIP_MULTILINE__DEFAULT_RULE", "go+nodejs")];
    let loaded = load(&options(None, &env)).unwrap();
    assert_eq!(
        loaded.settings.multiline.default_rule().unwrap().name(),
        "go+nodejs"
    );
    for (value, expected) in [
        (
            "java+ruby+perl",
            "multiline.default_rule: \"ruby\", \"perl\" are not a rule: one of none, java, python, go, nodejs",
        ),
        (
            "java+none",
            "multiline.default_rule: \"java+none\": \"none\" joins nothing and cannot be in a list of rules",
        ),
    ] {
        let env = [("LOGSHIP_MULTILINE__DEFAULT_RULE", value)];
        let error = load(&options(None, &env)).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn multiline_rules_from_the_file_and_the_environment() {
    let text = r#"
[multiline]
default_rule = "timestamped"
flush_timeout = "500ms"
[[multiline.rules]]
name = "timestamped"
start = '^\d{4}-\d{2}-\d{2}'
[[multiline.rules]]
name = "indented"
continuation = '^\s'
"#;
    let (dir, path) = file("logship.toml", text);
    let loaded = load(&options(Some(&path), &[])).unwrap();
    let m = &loaded.settings.multiline;
    assert_eq!(m.default_rule().unwrap().name(), "timestamped");
    assert_eq!(m.limits().flush_timeout, Duration::from_millis(500));
    assert!(m.rule("indented").is_some() && m.rule("java").is_some());
    // The effective configuration writes the rules back as tables, and loads to itself.
    let effective = loaded.effective_toml();
    assert!(effective.contains("[[multiline.rules]]"), "{effective}");
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &effective).unwrap();
    assert_eq!(
        load(&options(Some(&again), &[])).unwrap().effective_toml(),
        effective
    );

    let env = [
        ("LOGSHIP_MULTILINE__DEFAULT_RULE", "spring"),
        (
            "LOGSHIP_MULTILINE__RULES",
            r#"[{"name":"spring","start":"^\\d{4}-"}]"#,
        ),
    ];
    let loaded = load(&options(None, &env)).unwrap();
    assert_eq!(
        loaded.settings.multiline.default_rule().unwrap().name(),
        "spring"
    );

    let bad = [(
        "LOGSHIP_MULTILINE__RULES",
        r#"[{"name":"x","start":"(unclosed"}, {"nam":"y"}]"#,
    )];
    let errors = load_errors(&options(None, &bad));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("multiline.rules: unknown field `nam`"),
        "{errors:#?}"
    );
    let bad = [(
        "LOGSHIP_MULTILINE__RULES",
        r#"[{"name":"x","start":"(unclosed"}]"#,
    )];
    let errors = load_errors(&options(None, &bad));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "multiline.rules[0].start: rule \"x\": \"(unclosed\" is not a regular expression: unclosed group"
        ),
        "{errors:#?}"
    );
}

#[test]
fn cross_key_errors_name_both_keys() {
    let options = options(
        None,
        &[
            ("LOGSHIP_TAIL__MAX_LINE_BYTES", "64MiB"),
            ("LOGSHIP_TAIL__READ_BUDGET", "1MiB"),
        ],
    );
    let errors = load_errors(&options);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(
        "buffer.max_bytes: must be at least 2 x max(tail.max_line_bytes, tail.read_budget) = 128MiB"
    ));
    assert!(
        errors[0].ends_with("is 12MiB (from the default)"),
        "{errors:?}"
    );
}

#[test]
fn bad_override_keys_are_errors() {
    let mut options = options(None, &[]);
    options.overrides = vec![
        ("tail..include".into(), json!([])),
        ("tail.include".into(), json!("/not/a/list")),
    ];
    let errors = load_errors(&options);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        errors[0],
        "tail..include: is not a key (set on the command line)"
    );
    assert!(errors[1].starts_with("tail.include: invalid type: string"));
    assert!(errors[1].ends_with("(from the command line)"));
}

#[test]
fn node_name_comes_from_the_file_then_node_name_then_the_hostname() {
    let (_dir, path) = file("logship.toml", "node_name = \"from-file\"\n");
    let loaded = load(&options(Some(&path), &[("NODE_NAME", "from-env")])).unwrap();
    assert_eq!(loaded.settings.node_name, "from-file");
    let loaded = load(&options(None, &[("NODE_NAME", "from-env")])).unwrap();
    assert_eq!(loaded.settings.node_name, "from-env");
    // Without NODE_NAME: the hostname, where this machine has one.
    let no_env = LoadOptions::default();
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(load(&no_env).unwrap().settings.node_name, hostname.trim());
    }
}

#[test]
fn the_effective_configuration_loads_to_itself() {
    let (dir, path) = file("logship.toml", TOML);
    let loaded = load(&options(
        Some(&path),
        &[("LOGSHIP_TAIL__EXCLUDE", "/x/*.gz")],
    ))
    .unwrap();
    let effective = loaded.effective_toml();
    let again = dir.path().join("effective.toml");
    std::fs::write(&again, &effective).unwrap();
    let reloaded = load(&options(Some(&again), &[("NODE_NAME", "other")])).unwrap();
    assert_eq!(reloaded.effective_toml(), effective);
    assert_eq!(reloaded.settings.node_name, "node-1", "resolved, then kept");
}

/// The shipped, commented file is the defaults, and names every key (so that it documents
/// every key rather than matching by leaving keys out).
#[test]
fn the_shipped_config_file_is_the_defaults_and_names_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/logship.toml");
    let shipped = load(&options(Some(&path), &[])).unwrap();
    let defaults = load(&options(None, &[])).unwrap();
    assert_eq!(shipped.effective_toml(), defaults.effective_toml());

    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let mut written = Vec::new();
    leaves("", &serde_json::to_value(&table).unwrap(), &mut written);
    let mut known: Vec<String> = Schema::new().leaves().map(String::from).collect();
    written.sort();
    known.sort();
    assert_eq!(written, known);
}

/// The README's configuration table has a row for every key, and no other.
#[test]
fn the_readme_documents_every_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section");
    let mut rows: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(String::from)
        .collect();
    let mut known: Vec<String> = Schema::new().leaves().map(String::from).collect();
    rows.sort();
    known.sort();
    assert_eq!(rows, known);
}

fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(table) => {
            for (name, v) in table {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                leaves(&key, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn static_fields_take_environment_references_and_processing_keys_their_variables() {
    let text = r#"
[processing]
add_fields = ["cluster.name=${CLUSTER_NAME}", "env=${ENVIRONMENT:-dev}"]
rules = ["namespace=shop parser=logfmt"]
"#;
    let (_dir, path) = file("logship.toml", text);
    let loaded = load(&options(Some(&path), &[("CLUSTER_NAME", "prod-eu-1")])).unwrap();
    let p = &loaded.settings.processing;
    assert_eq!(
        p.add_fields,
        [
            ("cluster.name".to_string(), "prod-eu-1".to_string()),
            ("env".to_string(), "dev".to_string())
        ]
    );
    assert_eq!(
        p.statics,
        "\"cluster\":{\"name\":\"prod-eu-1\"},\"env\":\"dev\","
    );
    assert_has(
        &load_errors(&options(Some(&path), &[])),
        "${CLUSTER_NAME} is not set",
    );
    // Rules with commas come from the environment as a JSON array.
    let loaded = load(&options(
        None,
        &[
            (
                "LOGSHIP_PROCESSING__RULES",
                r#"["namespace=a,b parser=json", "selector=app=web multiline=java"]"#,
            ),
            ("LOGSHIP_PROCESSING__TARGET", ""),
            ("LOGSHIP_PROCESSING__MAX_FIELDS", "50"),
        ],
    ))
    .unwrap();
    let p = &loaded.settings.processing;
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.names.target, None);
    assert_eq!(p.bounds.max_fields, 50);
}
