//! Filters: which records are kept (`include` and `exclude`, a regular expression on a field,
//! like grep), and which fields are dropped, renamed or added.
//!
//! Fields are named as documents have them, in the configured schema: `message` (`log` for
//! `fluentd`), `stream`, `log.level` (`level` for `fluentd`), the parsed fields under their
//! target (`json.user.id`; with fields merged at the top level, `user.id`), and the per-file
//! fields (`kubernetes.namespace`, `kubernetes.labels.app`, `container.image.name`,
//! `log.file.path`, `host.name`). What a filter may do with which field is decided here, when the
//! configuration is validated, so that nothing is looked up by name per record.

use std::borrow::Cow;

use regex::Regex;

use super::json::{render, set_path, Members, Node};
use crate::enrich::metadata::Schema;

/// A field a filter names, resolved against the schema and the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The message.
    Message,
    /// `stream`.
    Stream,
    /// The lifted level.
    Level,
    /// A parsed field, by its dotted path inside the parsed object.
    Parsed(String),
    /// A per-file field (Kubernetes metadata, the file path, the host), by its document path.
    Metadata(String),
    /// A top-level path outside the parsed fields: only a rename's destination.
    Outside(String),
}

/// Fields Elasticsearch keeps for itself: refused at the top level of a document.
pub(super) const ELASTICSEARCH_METADATA: [&str; 16] = [
    "_id",
    "_index",
    "_source",
    "_routing",
    "_type",
    "_version",
    "_seq_no",
    "_primary_term",
    "_ignored",
    "_ignored_source",
    "_field_names",
    "_tier",
    "_doc_count",
    "_data_stream_timestamp",
    "_nested_path",
    "_size",
];

/// The name of the object that takes parsed keys clashing with the document's own fields when
/// fields are merged at the top level.
pub const CLASH_OBJECT: &str = "json";

/// How fields are named in this configuration: the schema, where parsed fields go, and the
/// static fields' top-level names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub schema: Schema,
    /// `None`: parsed fields are merged at the top level.
    pub target: Option<String>,
    /// The first segments of `add_fields` keys.
    pub static_roots: Vec<String>,
}

impl Names {
    /// The message's name.
    pub fn message(&self) -> &'static str {
        match self.schema {
            Schema::Ecs => "message",
            Schema::Fluentd => "log",
        }
    }

    /// The lifted level's name.
    pub fn level(&self) -> &'static str {
        match self.schema {
            Schema::Ecs => "log.level",
            Schema::Fluentd => "level",
        }
    }

    /// Top-level names the document writes itself.
    pub fn own_roots(&self) -> &'static [&'static str] {
        match self.schema {
            Schema::Ecs => &[
                "@timestamp",
                "message",
                "stream",
                "log",
                "kubernetes",
                "container",
                "host",
            ],
            Schema::Fluentd => &[
                "log",
                "stream",
                "time",
                "offset",
                "kubernetes",
                "docker",
                "file",
                "host",
                "level",
            ],
        }
    }

    /// Per-file fields' top-level names (their values come from the file's fragment).
    fn metadata_roots(&self) -> &'static [&'static str] {
        match self.schema {
            Schema::Ecs => &["kubernetes", "container", "host", "log.file"],
            Schema::Fluentd => &["kubernetes", "docker", "file", "host"],
        }
    }

    /// Whether a parsed key merged at the top level may not stay there: the document's own
    /// names, Elasticsearch's metadata fields, the static fields, and the clash object.
    pub fn taken_at_top(&self, root: &str) -> bool {
        self.own_roots().contains(&root)
            || ELASTICSEARCH_METADATA.contains(&root)
            || self.static_roots.iter().any(|r| r == root)
            || root == CLASH_OBJECT
    }

    /// Resolves a field name as written in the configuration.
    pub fn field(&self, path: &str) -> Result<Field, String> {
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("{path:?} is not a field name"));
        }
        if path == self.message() {
            return Ok(Field::Message);
        }
        if path == "stream" {
            return Ok(Field::Stream);
        }
        if path == self.level() {
            return Ok(Field::Level);
        }
        if let Some(target) = &self.target {
            if path == target {
                return Err(format!(
                    "{path:?} is the whole parsed object; name a field inside it ({target}.<key>)"
                ));
            }
            if let Some(rest) = path
                .strip_prefix(target.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                return Ok(Field::Parsed(rest.to_string()));
            }
        }
        if self
            .metadata_roots()
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}.")))
        {
            return Ok(Field::Metadata(path.to_string()));
        }
        let root = path.split('.').next().unwrap_or(path);
        if self.own_roots().contains(&root) || ELASTICSEARCH_METADATA.contains(&root) {
            return Err(format!("{path:?} is one of the document's own fields"));
        }
        Ok(match self.target {
            None => Field::Parsed(path.to_string()),
            Some(_) => Field::Outside(path.to_string()),
        })
    }
}

/// An `include` or `exclude` rule: `<field>=~<regex>`.
#[derive(Clone, Debug)]
pub struct Match {
    pub field: Field,
    pub regex: Regex,
}

impl PartialEq for Match {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.regex.as_str() == other.regex.as_str()
    }
}

impl Match {
    pub fn parse(names: &Names, text: &str) -> Result<Match, String> {
        let (field, regex) = text.split_once("=~").ok_or_else(|| {
            format!("{text:?} is not <field>=~<regex> (message=~ERROR, json.level=~^(warn|error)$)")
        })?;
        let field = names.field(field)?;
        if let Field::Outside(path) = &field {
            return Err(format!(
                "{path:?} is not a field of a record: parsed fields are under {}.",
                names.target.as_deref().unwrap_or_default()
            ));
        }
        let regex = Regex::new(regex).map_err(|e| format!("{regex:?} is not a regex: {e}"))?;
        Ok(Match { field, regex })
    }

    /// Whether this rule needs the message parsed first.
    pub fn after_parsing(&self) -> bool {
        matches!(self.field, Field::Level | Field::Parsed(_))
    }
}

/// A `drop_fields` entry: a parsed field or the level.
pub fn parse_drop(names: &Names, text: &str) -> Result<Field, String> {
    match names.field(text)? {
        f @ (Field::Level | Field::Parsed(_)) => Ok(f),
        Field::Message => Err(format!(
            "{text:?}: the message is dropped with processing.keep_message = false (once parsed)"
        )),
        _ => Err(format!(
            "{text:?}: only parsed fields and {} can be dropped",
            names.level()
        )),
    }
}

/// A `rename_fields` entry: `<from>=<to>`. `to` may be the message only when the parsed
/// message is not kept (`keep_message = false`).
pub fn parse_rename(
    names: &Names,
    text: &str,
    keep_message: bool,
) -> Result<(Field, Field), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not <from>=<to> (json.msg=message)"))?;
    let from = match names.field(from)? {
        f @ (Field::Level | Field::Parsed(_)) => f,
        _ => {
            return Err(format!(
                "{text:?}: only parsed fields and {} can be renamed",
                names.level()
            ))
        }
    };
    let to_field = names.field(to)?;
    match &to_field {
        Field::Message if keep_message => {
            return Err(format!(
                "{text:?}: renaming to {} needs processing.keep_message = false",
                names.message()
            ))
        }
        Field::Message | Field::Level | Field::Parsed(_) => {}
        Field::Outside(path) => {
            let root = path.split('.').next().unwrap_or(path);
            if names.static_roots.iter().any(|r| r == root) {
                return Err(format!("{text:?}: {to:?} is a static field (add_fields)"));
            }
        }
        Field::Stream | Field::Metadata(_) => {
            return Err(format!(
                "{text:?}: {to:?} is one of the document's own fields"
            ))
        }
    }
    if from == to_field {
        return Err(format!("{text:?} renames a field to itself"));
    }
    Ok((from, to_field))
}

/// An `add_fields` entry: `<key>=<value>`.
pub fn parse_add(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not <key>=<value> (cluster.name=prod)"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("{text:?}: {key:?} is not a field name"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Checks the static fields against the document's own names, the target and each other, and
/// renders them as document members, each followed by a comma.
pub fn render_static(names: &Names, fields: &[(String, String)]) -> Result<String, String> {
    for (i, (key, _)) in fields.iter().enumerate() {
        let root = key.split('.').next().unwrap_or(key);
        if names.own_roots().contains(&root) || ELASTICSEARCH_METADATA.contains(&root) {
            return Err(format!("{key:?} is one of the document's own fields"));
        }
        if names.target.as_deref() == Some(root) {
            return Err(format!(
                "{key:?} is under the parsed fields' target {root:?}"
            ));
        }
        for (other, _) in &fields[..i] {
            let nested = |a: &str, b: &str| a.starts_with(b) && a[b.len()..].starts_with('.');
            if other == key || nested(key, other) || nested(other, key) {
                return Err(format!("{key:?} and {other:?} are the same field"));
            }
        }
    }
    let mut members = Members::new();
    for (key, value) in fields {
        set_path(&mut members, key, Node::Text(Cow::Borrowed(value)));
    }
    let mut out = String::new();
    for (key, value) in &members {
        super::json::write_str(&mut out, key);
        out.push(':');
        render(value, &mut out);
        out.push(',');
    }
    Ok(out)
}

/// The value at a dotted `path` of a JSON document (a key may itself contain dots).
pub fn value_at<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let serde_json::Value::Object(map) = value else {
        return None;
    };
    let mut found = None;
    for (key, inner) in map {
        if let Some(rest) = path.strip_prefix(key.as_str()) {
            if rest.is_empty() {
                found = Some(inner);
            } else if let Some(rest) = rest.strip_prefix('.') {
                if let Some(v) = value_at(inner, rest) {
                    found = Some(v);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(schema: Schema, target: Option<&str>) -> Names {
        Names {
            schema,
            target: target.map(str::to_string),
            static_roots: vec!["cluster".into()],
        }
    }

    #[test]
    fn fields_resolve_by_schema_and_target() {
        let ecs = names(Schema::Ecs, Some("json"));
        assert_eq!(ecs.field("message"), Ok(Field::Message));
        assert_eq!(ecs.field("log.level"), Ok(Field::Level));
        assert_eq!(
            ecs.field("json.user.id"),
            Ok(Field::Parsed("user.id".into()))
        );
        assert_eq!(
            ecs.field("kubernetes.labels.app"),
            Ok(Field::Metadata("kubernetes.labels.app".into()))
        );
        assert_eq!(
            ecs.field("log.file.path"),
            Ok(Field::Metadata("log.file.path".into()))
        );
        assert_eq!(ecs.field("user.id"), Ok(Field::Outside("user.id".into())));
        assert!(ecs.field("json").is_err());
        assert!(ecs.field("log.offset").is_err());
        assert!(ecs.field("_id").is_err());
        assert!(ecs.field("a..b").is_err());
        let top = names(Schema::Ecs, None);
        assert_eq!(top.field("user.id"), Ok(Field::Parsed("user.id".into())));
        let fluentd = names(Schema::Fluentd, Some("json"));
        assert_eq!(fluentd.field("log"), Ok(Field::Message));
        assert_eq!(fluentd.field("level"), Ok(Field::Level));
        assert!(fluentd.field("time").is_err());
        assert!(top.taken_at_top("message") && top.taken_at_top("_id"));
        assert!(top.taken_at_top("cluster") && top.taken_at_top("json"));
        assert!(!top.taken_at_top("user"));
    }

    #[test]
    fn what_each_filter_may_name() {
        let n = names(Schema::Ecs, Some("json"));
        assert!(Match::parse(&n, "message=~^ERROR").is_ok());
        assert!(Match::parse(&n, "json.level=~warn|error")
            .unwrap()
            .after_parsing());
        assert!(!Match::parse(&n, "kubernetes.namespace=~^kube-")
            .unwrap()
            .after_parsing());
        assert!(Match::parse(&n, "message~x").is_err());
        assert!(Match::parse(&n, "message=~(").is_err());
        assert!(Match::parse(&n, "user=~x").is_err(), "not under json.");
        assert!(parse_drop(&n, "json.password").is_ok());
        assert!(parse_drop(&n, "message").is_err());
        assert!(parse_drop(&n, "kubernetes.labels").is_err());
        assert_eq!(
            parse_rename(&n, "json.msg=message", false),
            Ok((Field::Parsed("msg".into()), Field::Message))
        );
        assert!(parse_rename(&n, "json.msg=message", true).is_err());
        assert_eq!(
            parse_rename(&n, "json.uid=user.id", true),
            Ok((
                Field::Parsed("uid".into()),
                Field::Outside("user.id".into())
            ))
        );
        assert!(parse_rename(&n, "json.x=cluster.x", true).is_err());
        assert!(parse_rename(&n, "json.x=host.x", true).is_err());
        assert!(parse_rename(&n, "json.x=json.x", true).is_err());
    }

    #[test]
    fn static_fields_render_nested_and_refuse_clashes() {
        let n = names(Schema::Ecs, Some("json"));
        let fields = vec![
            parse_add("cluster.name=prod-eu").unwrap(),
            parse_add("cluster.region=eu-1").unwrap(),
            parse_add("env=a=b").unwrap(),
        ];
        let out = render_static(&n, &fields).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&format!("{{{out}\"x\":1}}")).unwrap();
        assert_eq!(doc["cluster"]["name"], "prod-eu");
        assert_eq!(doc["cluster"]["region"], "eu-1");
        assert_eq!(doc["env"], "a=b");
        for bad in [
            vec![parse_add("host.ip=1").unwrap()],
            vec![parse_add("json.x=1").unwrap()],
            vec![parse_add("a=1").unwrap(), parse_add("a.b=2").unwrap()],
            vec![parse_add("a=1").unwrap(), parse_add("a=2").unwrap()],
        ] {
            assert!(render_static(&n, &bad).is_err(), "{bad:?}");
        }
        assert!(parse_add("novalue").is_err());
    }
}
