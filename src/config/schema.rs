//! The set of configuration keys, and checking a merged value tree against it.
//!
//! The keys are exactly the leaves of the defaults (`RawConfig::default()` as a tree), so a
//! field added to `raw.rs` is at once known, typed from the environment, checked and rendered;
//! there is no second list of keys to keep in step.
//!
//! serde stops at the first error and we report them all, so [`Schema::check`] walks the tree
//! itself: every key the defaults do not have is reported with its full dotted name and the
//! closest known key, and every known leaf is deserialized on its own (the defaults with only
//! that leaf replaced), so each wrong type is reported against its key. That relies on no
//! field's deserialization depending on another field; rules between keys belong in
//! `validate`, never in a serde attribute.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::ConfigError;
use super::raw::RawConfig;

/// How a key's value is written in the defaults, which decides how the text of an environment
/// variable is read for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Strings, and everything written as a string: sizes, durations, enums, paths.
    Text,
    Bool,
    Number,
    /// A list of strings.
    List,
}

/// The known keys, from the defaults.
#[derive(Debug)]
pub struct Schema {
    /// `RawConfig::default()` as a tree: the shape every layer must fit.
    defaults: Map<String, Value>,
    /// Every leaf key, dotted, with its kind.
    leaves: BTreeMap<String, Kind>,
    /// Every table key, dotted (`tail`, `output.file`): known too, and candidates for "did you mean".
    sections: Vec<String>,
}

/// The result of [`Schema::check`]: the typed configuration, with every leaf that was wrong
/// left at its default, and what was wrong.
#[derive(Debug)]
pub struct Checked {
    pub raw: RawConfig,
    pub errors: Vec<ConfigError>,
}

impl Schema {
    pub fn new() -> Self {
        let Value::Object(defaults) = defaults_tree() else {
            unreachable!("RawConfig serializes to a table")
        };
        let mut schema = Schema {
            defaults: Map::new(),
            leaves: BTreeMap::new(),
            sections: Vec::new(),
        };
        schema.index("", &defaults);
        schema.defaults = defaults;
        schema
    }

    fn index(&mut self, prefix: &str, table: &Map<String, Value>) {
        for (name, value) in table {
            let key = join(prefix, name);
            let kind = match value {
                Value::Object(inner) => {
                    self.index(&key, inner);
                    self.sections.push(key);
                    continue;
                }
                Value::Bool(_) => Kind::Bool,
                Value::Number(_) => Kind::Number,
                Value::Array(_) => Kind::List,
                Value::String(_) | Value::Null => Kind::Text,
            };
            self.leaves.insert(key, kind);
        }
    }

    /// The defaults as a tree: the lowest layer.
    pub fn defaults(&self) -> &Map<String, Value> {
        &self.defaults
    }

    /// The kind of a leaf key; `None` for sections and unknown keys.
    pub fn kind(&self, key: &str) -> Option<Kind> {
        self.leaves.get(key).copied()
    }

    /// Every leaf key, dotted, in order.
    #[cfg(test)]
    pub fn leaves(&self) -> impl Iterator<Item = &str> {
        self.leaves.keys().map(String::as_str)
    }

    /// The known key closest to `key`, if close enough to be a likely typo. The last segment
    /// counts (so a key put in the wrong table finds its home), then the whole key breaks ties.
    pub fn closest(&self, key: &str, leaves_only: bool) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        let last = last_segment(&key);
        let limit = (last.chars().count() / 3).max(1);
        let sections = self.sections.iter().filter(|_| !leaves_only);
        self.leaves
            .keys()
            .chain(sections)
            .map(|known| {
                let near = distance(last, last_segment(known));
                (near, distance(&key, known), known.as_str())
            })
            .filter(|(near, _, _)| *near <= limit)
            .min()
            .map(|(_, _, known)| known)
    }

    /// Checks a merged tree: unknown keys, tables where values belong and the reverse, and each
    /// leaf's type. Returns the typed configuration with every bad leaf at its default, so that
    /// `validate` can still report the rest.
    pub fn check(&self, tree: &Map<String, Value>) -> Checked {
        let mut errors = Vec::new();
        let mut clean = self.defaults.clone();
        self.walk("", tree, &self.defaults, &mut clean, &mut errors);
        let raw = match serde_json::from_value(Value::Object(clean)) {
            Ok(raw) => raw,
            Err(e) => {
                // Every leaf deserialized alone; together they must too, unless a serde
                // attribute ties two fields together (see the module comment).
                errors.push(ConfigError::invalid("", format!("internal: {e}")));
                RawConfig::default()
            }
        };
        Checked { raw, errors }
    }

    fn walk(
        &self,
        prefix: &str,
        given: &Map<String, Value>,
        defaults: &Map<String, Value>,
        clean: &mut Map<String, Value>,
        errors: &mut Vec<ConfigError>,
    ) {
        for (name, value) in given {
            let key = join(prefix, name);
            match (defaults.get(name), value) {
                (None, _) => errors.push(ConfigError::UnknownKey {
                    suggestion: self.closest(&key, false).map(str::to_string),
                    key,
                    origin: None,
                }),
                (Some(Value::Object(inner)), Value::Object(given)) => {
                    let Some(Value::Object(clean)) = clean.get_mut(name) else {
                        unreachable!("clean starts as a copy of the defaults")
                    };
                    self.walk(&key, given, inner, clean, errors);
                }
                // YAML writes a section with nothing under it as null.
                (Some(Value::Object(_)), Value::Null) => {}
                (Some(Value::Object(_)), other) => errors.push(ConfigError::invalid(
                    key,
                    format!("expected a table of keys, found {}", describe(other)),
                )),
                (Some(_), value) => match self.try_leaf(&key, value) {
                    Ok(()) => {
                        clean.insert(name.clone(), value.clone());
                    }
                    Err(message) => errors.push(ConfigError::invalid(key, message)),
                },
            }
        }
    }

    /// Deserializes the defaults with only `key` set to `value`: an error is this leaf's.
    fn try_leaf(&self, key: &str, value: &Value) -> Result<(), String> {
        let mut trial = self.defaults.clone();
        let (name, parents) = key.rsplit_once('.').map_or((key, ""), |(p, n)| (n, p));
        let mut table = &mut trial;
        for segment in parents.split('.').filter(|s| !s.is_empty()) {
            table = match table.get_mut(segment) {
                Some(Value::Object(inner)) => inner,
                _ => unreachable!("the parents of a known leaf are tables in the defaults"),
            };
        }
        table.insert(name.to_string(), value.clone());
        serde_json::from_value::<RawConfig>(Value::Object(trial))
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// `RawConfig::default()` as a JSON tree.
pub fn defaults_tree() -> Value {
    serde_json::to_value(RawConfig::default()).expect("RawConfig serializes to JSON")
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// What a value is, for a message: "a string \"x\"", "a number 5".
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean {b}"),
        Value::Number(n) => format!("a number {n}"),
        Value::String(s) => format!("a string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment):
/// `tial` is one edit from `tail`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(value: Value) -> Map<String, Value> {
        serde_json::from_value(value).expect("a table")
    }

    #[test]
    fn keys_come_from_the_defaults() {
        let schema = Schema::new();
        let leaves: Vec<&str> = schema.leaves().collect();
        assert!(leaves.contains(&"tail.max_line_bytes"));
        assert!(leaves.contains(&"output.file.fsync"));
        assert!(leaves.contains(&"output.type"));
        assert_eq!(schema.kind("tail.include"), Some(Kind::List));
        assert_eq!(schema.kind("output.file.fsync"), Some(Kind::Bool));
        assert_eq!(schema.kind("tail.read_budget"), Some(Kind::Text));
        assert_eq!(schema.kind("tail"), None);
    }

    #[test]
    fn typos_find_the_key_meant() {
        let schema = Schema::new();
        let cases = [
            ("tail.max_line_byte", Some("tail.max_line_bytes")),
            ("tail.readfrom", Some("tail.read_from")),
            ("tial", Some("tail")),
            ("tail.fromat", Some("tail.format")),
            ("tail.data_dir", Some("data_dir")),
            ("output.file.fsnyc", Some("output.file.fsync")),
            ("Data_Dir", Some("data_dir")),
            ("elasticsearch", Some("output.elasticsearch")),
            ("kafka", None),
            ("tail.zzz", None),
        ];
        for (typo, meant) in cases {
            assert_eq!(schema.closest(typo, false), meant, "{typo}");
        }
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported() {
        let schema = Schema::new();
        let given = tree(json!({
            "data_dir": 5,
            "tial": { "format": "cri" },
            "tail": {
                "max_line_byte": "1MiB",
                "read_from": "middle",
                "poll_interval": "soon",
                "include": "/a/*.log",
                "format": "cri",
            },
            "buffer": "big",
            "output": { "file": { "fsync": "yes", "mode": 420 } },
        }));
        let checked = schema.check(&given);
        let mut found: Vec<String> = checked.errors.iter().map(|e| e.to_string()).collect();
        found.sort();
        let expected = [
            "buffer: expected a table of keys, found a string \"big\"",
            "data_dir: invalid type: integer `5`, expected a string",
            "output.file.fsync: invalid type: string \"yes\", expected a boolean",
            "output.file.mode: unknown key",
            "tail.include: invalid type: string \"/a/*.log\", expected a sequence",
            "tail.max_line_byte: unknown key; did you mean tail.max_line_bytes?",
            "tail.poll_interval: \"soon\" is not a duration",
            "tail.read_from: unknown variant `middle`, expected `head` or `tail`",
            "tial: unknown key; did you mean tail?",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found:?} vs {expected:?}");
        }
        // The good leaf among the bad ones is kept; the bad ones are at their defaults.
        assert_eq!(checked.raw.tail.format, crate::parse::FormatChoice::Cri);
        assert_eq!(checked.raw.data_dir, RawConfig::default().data_dir);
    }

    #[test]
    fn an_empty_yaml_section_is_no_error() {
        let checked = Schema::new().check(&tree(json!({ "tail": null })));
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert_eq!(checked.raw, RawConfig::default());
    }
}
