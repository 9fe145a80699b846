//! What a reloaded configuration changes, key by key, and how each change can be applied while
//! the agent runs. Pure: two loaded configurations in, a list of changed keys out.
//!
//! The comparison is of the effective configurations (defaults, file, environment and flags
//! merged, `node_name` resolved), unmasked, so that a changed password counts and a file that
//! only moved a comment or wrote `5000ms` for `5s` does not. Values read from files the
//! configuration names (`password_file`, certificates) are not part of it: they are read when the
//! pipeline starts.

use serde_json::Value;

use super::Loaded;

/// How a changed key takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// The pipeline is drained and started again with it (almost every key).
    Pipeline,
    /// The HTTP endpoint moves to the new address; the pipeline runs on.
    Endpoint,
    /// The agent's log filter is replaced; the pipeline runs on.
    LogFilter,
    /// Only at the next start (the log output's format is fixed once installed). Said in a
    /// warning; the rest of the reload goes on.
    NextStart,
    /// Cannot change while the agent runs: the reload is refused. `data_dir` holds the positions
    /// the running pipeline continues from; moving it live would read everything again.
    Refused,
}

impl Applies {
    /// How a change of `key` (a dotted leaf key) takes effect.
    pub fn of(key: &str) -> Applies {
        match key {
            "data_dir" => Applies::Refused,
            "log.format" | "positions.import_from" => Applies::NextStart,
            "log.level" => Applies::LogFilter,
            "server.listen" => Applies::Endpoint,
            _ => Applies::Pipeline,
        }
    }
}

/// The keys whose effective value differs between two configurations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Dotted leaf keys (`tail.exclude`, `output.elasticsearch.auth.password`), sorted. A list
    /// is one leaf.
    keys: Vec<String>,
}

impl Changes {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every changed key.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The changed keys that take effect as `applies` says.
    pub fn applying(&self, applies: Applies) -> Vec<&str> {
        self.keys
            .iter()
            .map(String::as_str)
            .filter(|k| Applies::of(k) == applies)
            .collect()
    }

    /// Whether any changed key takes effect as `applies` says.
    pub fn any(&self, applies: Applies) -> bool {
        self.keys.iter().any(|k| Applies::of(k) == applies)
    }
}

/// What `new` changes relative to `old`.
pub fn compare(old: &Loaded, new: &Loaded) -> Changes {
    if old.effective == new.effective {
        return Changes::default();
    }
    // Serialised, every value is in its canonical form (sizes and durations included).
    let a = serde_json::to_value(&old.effective).expect("the configuration serialises");
    let b = serde_json::to_value(&new.effective).expect("the configuration serialises");
    let mut keys = Vec::new();
    differing_leaves("", &a, &b, &mut keys);
    keys.sort();
    Changes { keys }
}

fn differing_leaves(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let names = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for name in names {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                let null = Value::Null;
                differing_leaves(
                    &key,
                    x.get(name).unwrap_or(&null),
                    y.get(name).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{load, LoadOptions};

    fn loaded(text: &str, vars: &[(&str, &str)]) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logship.toml");
        std::fs::write(&path, text).unwrap();
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("NODE_NAME".into(), "node-1".into());
        load(&LoadOptions {
            path: Some(path),
            overrides: Vec::new(),
            env,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = r#"
        [tail]
        include = ["/var/log/containers/*.log"]
        poll_interval = "1s"
        [output.elasticsearch]
        hosts = ["http://es:9200"]
    "#;

    #[test]
    fn the_same_settings_written_differently_change_nothing() {
        let old = loaded(BASE, &[]);
        let new = loaded(
            r#"
            # A comment, another order, another unit.
            [output.elasticsearch]
            hosts = ["http://es:9200"]
            [tail]
            poll_interval = "1000ms"
            include = ["/var/log/containers/*.log"]
            "#,
            &[],
        );
        assert!(compare(&old, &new).is_empty(), "{:?}", compare(&old, &new));
    }

    #[test]
    fn changed_keys_are_named_and_classified() {
        let old = loaded(BASE, &[]);
        let new = loaded(
            r#"
            data_dir = "/srv/logship"
            [log]
            level = "debug"
            format = "json"
            [tail]
            include = ["/var/log/containers/*.log"]
            exclude = ["/var/log/containers/noisy*"]
            poll_interval = "1s"
            [server]
            listen = "127.0.0.1:2021"
            [output.elasticsearch]
            hosts = ["http://es:9200"]
            auth = { user = "elastic", password = "s3cret" }
            "#,
            &[],
        );
        let changes = compare(&old, &new);
        assert_eq!(
            changes.keys(),
            [
                "data_dir",
                "log.format",
                "log.level",
                "output.elasticsearch.auth.password",
                "output.elasticsearch.auth.user",
                "server.listen",
                "tail.exclude",
            ]
        );
        assert_eq!(changes.applying(Applies::Refused), ["data_dir"]);
        assert_eq!(changes.applying(Applies::NextStart), ["log.format"]);
        assert_eq!(changes.applying(Applies::LogFilter), ["log.level"]);
        assert_eq!(changes.applying(Applies::Endpoint), ["server.listen"]);
        assert_eq!(
            changes.applying(Applies::Pipeline),
            [
                "output.elasticsearch.auth.password",
                "output.elasticsearch.auth.user",
                "tail.exclude"
            ]
        );
        assert!(changes.any(Applies::Pipeline));
    }

    #[test]
    fn the_environment_is_part_of_the_configuration() {
        let old = loaded(BASE, &[]);
        let new = loaded(BASE, &[("LOGSHIP_BUFFER__MAX_BYTES", "64MiB")]);
        let changes = compare(&old, &new);
        assert_eq!(changes.keys(), ["buffer.max_bytes"]);
        assert!(changes.any(Applies::Pipeline));
        let only_level = compare(&old, &loaded(BASE, &[("LOGSHIP_LOG__LEVEL", "warn")]));
        assert!(!only_level.any(Applies::Pipeline));
        assert!(only_level.any(Applies::LogFilter));
    }
}
