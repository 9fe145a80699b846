//! One layer of configuration (the defaults, the file, one environment variable, one
//! command-line flag) as a source for the `config` crate, and the way back from the crate's
//! merged values to the JSON tree the rest of loading checks.
//!
//! The `config` crate does the merging: sources are applied in the order added, a table merges
//! into the table below it key by key, and any other value (a list included) replaces what was
//! there. Every value keeps the name of the layer it came from, so an error about a key can say
//! whether the file, a variable or a flag set it. Layers here are plain trees and never fail.

use std::collections::BTreeMap;

use config::{ConfigError, Map as ConfigMap, Source, Value as ConfigValue, ValueKind};
use serde_json::{Map, Number, Value};

/// A tree of values from one place.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Where the values came from, as an error message names it.
    origin: String,
    tree: Map<String, Value>,
}

impl Layer {
    pub fn new(origin: impl Into<String>, tree: Map<String, Value>) -> Self {
        Layer {
            origin: origin.into(),
            tree,
        }
    }

    /// A layer setting one dotted key (`tail.include`). `None` if the key has an empty segment.
    pub fn single(origin: impl Into<String>, key: &str, value: Value) -> Option<Self> {
        let mut value = value;
        for segment in key.rsplit('.') {
            if segment.is_empty() {
                return None;
            }
            let mut table = Map::new();
            table.insert(segment.to_string(), value);
            value = Value::Object(table);
        }
        let Value::Object(tree) = value else {
            unreachable!("a key has at least one segment")
        };
        Some(Layer::new(origin, tree))
    }
}

impl Source for Layer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<ConfigMap<String, ConfigValue>, ConfigError> {
        Ok(self
            .tree
            .iter()
            .map(|(k, v)| (k.clone(), to_config(v, &self.origin)))
            .collect())
    }
}

fn to_config(value: &Value, origin: &String) -> ConfigValue {
    let kind = match value {
        Value::Null => ValueKind::Nil,
        Value::Bool(b) => ValueKind::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ValueKind::I64(i),
            (None, Some(u)) => ValueKind::U64(u),
            _ => ValueKind::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ValueKind::String(s.clone()),
        Value::Array(items) => {
            ValueKind::Array(items.iter().map(|v| to_config(v, origin)).collect())
        }
        Value::Object(table) => ValueKind::Table(
            table
                .iter()
                .map(|(k, v)| (k.clone(), to_config(v, origin)))
                .collect(),
        ),
    };
    ConfigValue::new(Some(origin), kind)
}

/// A table of the `config` crate's values as JSON, and the origin of every key (tables
/// included) under its dotted name.
pub fn to_json(
    table: &ConfigMap<String, ConfigValue>,
) -> (Map<String, Value>, BTreeMap<String, String>) {
    let mut origins = BTreeMap::new();
    let tree = table_to_json("", table, &mut origins);
    (tree, origins)
}

fn table_to_json(
    prefix: &str,
    table: &ConfigMap<String, ConfigValue>,
    origins: &mut BTreeMap<String, String>,
) -> Map<String, Value> {
    table
        .iter()
        .map(|(name, value)| {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if let Some(origin) = value.origin() {
                origins.insert(key.clone(), origin.to_string());
            }
            (name.clone(), value_to_json(&key, value, origins))
        })
        .collect()
}

fn value_to_json(key: &str, value: &ConfigValue, origins: &mut BTreeMap<String, String>) -> Value {
    // Numbers JSON cannot hold (beyond 64 bits, NaN) become text, which no key accepts as a
    // number, so they are reported rather than changed.
    let big = |text: String| Value::String(text);
    match &value.kind {
        ValueKind::Nil => Value::Null,
        ValueKind::Boolean(b) => Value::Bool(*b),
        ValueKind::I64(i) => Value::from(*i),
        ValueKind::U64(u) => Value::from(*u),
        ValueKind::I128(i) => i64::try_from(*i).map_or_else(|_| big(i.to_string()), Value::from),
        ValueKind::U128(u) => u64::try_from(*u).map_or_else(|_| big(u.to_string()), Value::from),
        ValueKind::Float(f) => {
            Number::from_f64(*f).map_or_else(|| big(f.to_string()), Value::Number)
        }
        ValueKind::String(s) => Value::String(s.clone()),
        ValueKind::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| value_to_json(key, item, origins))
                .collect(),
        ),
        ValueKind::Table(table) => Value::Object(table_to_json(key, table, origins)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(layers: Vec<Layer>) -> (Value, BTreeMap<String, String>) {
        let mut builder = config::Config::builder();
        for layer in layers {
            builder = builder.add_source(layer);
        }
        let merged = builder.build().unwrap().collect().unwrap();
        let (tree, origins) = to_json(&merged);
        (Value::Object(tree), origins)
    }

    fn table(value: Value) -> Map<String, Value> {
        serde_json::from_value(value).expect("a table")
    }

    #[test]
    fn later_layers_merge_tables_and_replace_values() {
        let defaults = Layer::new(
            "default",
            table(json!({"a": 1, "t": {"x": [1, 2, 3], "y": "keep"}})),
        );
        let file = Layer::new("f.toml", table(json!({"t": {"x": [9]}})));
        let flag = Layer::single("command line", "t.y", json!("flag")).unwrap();
        let (tree, origins) = merge(vec![defaults, file, flag]);
        assert_eq!(tree, json!({"a": 1, "t": {"x": [9], "y": "flag"}}));
        assert_eq!(origins["a"], "default");
        assert_eq!(origins["t.x"], "f.toml");
        assert_eq!(origins["t.y"], "command line");
    }

    #[test]
    fn single_keys_nest_and_empty_segments_are_refused() {
        let layer = Layer::single("x", "output.file.path", json!("/p")).unwrap();
        assert_eq!(
            Value::Object(layer.tree),
            json!({"output": {"file": {"path": "/p"}}})
        );
        assert!(Layer::single("x", "tail..include", json!([])).is_none());
        assert!(Layer::single("x", "", json!(1)).is_none());
    }
}
