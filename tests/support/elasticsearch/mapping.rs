//! Per-index mappings, as Elasticsearch's dynamic mapping grows them, and the mappings of index
//! templates.
//!
//! Every index remembers each field path's type: an object, or a concrete type chosen from the
//! first value seen (`text` for strings, `long`, `float`, `boolean`, `date` when date detection
//! recognises the string). Keys with dots are paths (`app.kubernetes.io/name` is `app` ->
//! `kubernetes` -> `io/name`). A document that contradicts the mapping is rejected with the text
//! of the flavour at hand (see `document`). The mapping is bounded by
//! `index.mapping.total_fields.limit`. Template mappings are validated here (unknown types are
//! refused at `PUT`, as Elasticsearch refuses them) and seed the mapping of the indices they create.

use std::collections::BTreeMap;

use serde_json::Value;

use super::errors::EsError;
use super::Flavor;

/// Concrete field types the test server knows. Template mappings naming any other type are
/// rejected at `PUT`, as Elasticsearch rejects unknown types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    MatchOnlyText,
    Keyword,
    Wildcard,
    ConstantKeyword,
    Long,
    Integer,
    Short,
    Byte,
    UnsignedLong,
    Double,
    Float,
    HalfFloat,
    ScaledFloat,
    Boolean,
    Date,
    DateNanos,
    Ip,
    Flattened,
    FlatObject,
}

const TYPES: &[(&str, FieldType)] = &[
    ("text", FieldType::Text),
    ("match_only_text", FieldType::MatchOnlyText),
    ("keyword", FieldType::Keyword),
    ("wildcard", FieldType::Wildcard),
    ("constant_keyword", FieldType::ConstantKeyword),
    ("long", FieldType::Long),
    ("integer", FieldType::Integer),
    ("short", FieldType::Short),
    ("byte", FieldType::Byte),
    ("unsigned_long", FieldType::UnsignedLong),
    ("double", FieldType::Double),
    ("float", FieldType::Float),
    ("half_float", FieldType::HalfFloat),
    ("scaled_float", FieldType::ScaledFloat),
    ("boolean", FieldType::Boolean),
    ("date", FieldType::Date),
    ("date_nanos", FieldType::DateNanos),
    ("ip", FieldType::Ip),
    ("flattened", FieldType::Flattened),
    ("flat_object", FieldType::FlatObject),
];

impl FieldType {
    pub fn name(self) -> &'static str {
        TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("?", |(n, _)| n)
    }

    fn parse(name: &str, flavor: Flavor) -> Option<Self> {
        let t = TYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)?;
        // flat_object is OpenSearch's; the other distributions have no handler for it.
        let known = match t {
            FieldType::FlatObject => flavor == Flavor::OpenSearch2,
            FieldType::Flattened => flavor != Flavor::OpenSearch2,
            _ => true,
        };
        known.then_some(t)
    }

    /// Whether the type takes a whole object as its value.
    pub(super) fn takes_objects(self) -> bool {
        matches!(self, FieldType::Flattened | FieldType::FlatObject)
    }

    pub(super) fn supports_ignore_malformed(self) -> bool {
        !matches!(
            self,
            FieldType::Text
                | FieldType::MatchOnlyText
                | FieldType::Keyword
                | FieldType::Wildcard
                | FieldType::ConstantKeyword
                | FieldType::Flattened
                | FieldType::FlatObject
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    True,
    False,
    Strict,
}

#[derive(Debug, Clone)]
pub enum Mapper {
    Object(ObjectMapping),
    Field(FieldType),
}

#[derive(Debug, Clone)]
pub struct ObjectMapping {
    pub fields: BTreeMap<String, Mapper>,
    /// `enabled: false`: anything below is kept in `_source` and not mapped.
    pub enabled: bool,
    /// `None` inherits the parent's setting.
    pub dynamic: Option<Dynamic>,
}

impl Default for ObjectMapping {
    fn default() -> Self {
        ObjectMapping {
            fields: BTreeMap::new(),
            enabled: true,
            dynamic: None,
        }
    }
}

/// One index's mapping and the index settings that change how documents are parsed.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub root: ObjectMapping,
    pub date_detection: bool,
    /// The `logs` data stream's dynamic template: new strings become `keyword`, `message` becomes
    /// `match_only_text`.
    pub logs_templates: bool,
    /// `index.mapping.ignore_malformed`.
    pub ignore_malformed: bool,
    /// `index.mapping.total_fields.limit`.
    pub total_fields_limit: usize,
    /// `index.mapping.depth.limit`: objects nest at most this deep (a root field is at depth 1).
    pub depth_limit: usize,
    /// `index.mapping.total_fields.ignore_dynamic_beyond_limit`.
    pub ignore_dynamic_beyond_limit: bool,
    /// A data stream's backing index: every document needs one `@timestamp`.
    pub data_stream: bool,
    /// Mapped fields, counted as Elasticsearch counts them for the limit (objects included).
    pub(super) fields: usize,
}

impl Mapping {
    pub fn new(total_fields_limit: usize) -> Self {
        Mapping {
            root: ObjectMapping {
                dynamic: Some(Dynamic::True),
                ..ObjectMapping::default()
            },
            date_detection: true,
            logs_templates: false,
            ignore_malformed: false,
            total_fields_limit,
            depth_limit: 20,
            ignore_dynamic_beyond_limit: false,
            data_stream: false,
            fields: 0,
        }
    }

    /// The mapping of a `logs-*-*` data stream created by the built-in `logs` index template.
    pub fn builtin_logs(flavor: Flavor, total_fields_limit: usize) -> Self {
        let mut m = Mapping::new(total_fields_limit);
        m.date_detection = false;
        m.logs_templates = true;
        m.data_stream = true;
        if flavor == Flavor::Elasticsearch8 {
            // logs@settings of 8.x.
            m.ignore_malformed = true;
            m.ignore_dynamic_beyond_limit = true;
        }
        m.add_field(&["@timestamp"], FieldType::Date);
        for leaf in ["type", "dataset", "namespace"] {
            m.add_field(&["data_stream", leaf], FieldType::ConstantKeyword);
        }
        m
    }

    /// Makes `@timestamp` a date, as creating a data stream does when the template did not.
    pub fn make_data_stream(&mut self) {
        self.data_stream = true;
        if !self.root.fields.contains_key("@timestamp") {
            self.add_field(&["@timestamp"], FieldType::Date);
        }
    }

    /// The type mapped at a dotted path, if any (`"object"` for objects).
    pub fn type_of(&self, path: &str) -> Option<&'static str> {
        let mut cur = &self.root;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            match cur.fields.get(*part)? {
                Mapper::Object(o) if i + 1 < parts.len() => cur = o,
                Mapper::Object(_) => return Some("object"),
                Mapper::Field(t) if i + 1 == parts.len() => return Some(t.name()),
                Mapper::Field(_) => return None,
            }
        }
        None
    }

    pub fn field_count(&self) -> usize {
        self.fields
    }

    fn add_field(&mut self, path: &[&str], t: FieldType) {
        let mut cur = &mut self.root;
        for part in &path[..path.len() - 1] {
            if !cur.fields.contains_key(*part) {
                cur.fields
                    .insert(part.to_string(), Mapper::Object(ObjectMapping::default()));
                self.fields += 1;
            }
            cur = match cur.fields.get_mut(*part) {
                Some(Mapper::Object(o)) => o,
                _ => return,
            };
        }
        cur.fields
            .insert(path[path.len() - 1].to_string(), Mapper::Field(t));
        self.fields += 1;
    }

    /// Seeds the mapping from a template's `mappings` (already validated by [`parse_mappings`]).
    pub fn apply_template(&mut self, mappings: &Value, flavor: Flavor) {
        if let Ok(parsed) = parse_mappings(mappings, flavor) {
            if let Some(d) = parsed.date_detection {
                self.date_detection = d;
            }
            if let Some(d) = parsed.root.dynamic {
                self.root.dynamic = Some(d);
            }
            self.root.enabled = parsed.root.enabled;
            merge(&mut self.root, parsed.root.fields);
            self.fields = count_fields(&self.root);
        }
    }
}

fn merge(into: &mut ObjectMapping, fields: BTreeMap<String, Mapper>) {
    for (name, mapper) in fields {
        match (into.fields.get_mut(&name), mapper) {
            (Some(Mapper::Object(existing)), Mapper::Object(new)) => {
                existing.enabled = new.enabled;
                if new.dynamic.is_some() {
                    existing.dynamic = new.dynamic;
                }
                merge(existing, new.fields);
            }
            (_, mapper) => {
                into.fields.insert(name, mapper);
            }
        }
    }
}

fn count_fields(o: &ObjectMapping) -> usize {
    o.fields
        .values()
        .map(|m| match m {
            Mapper::Object(child) => 1 + count_fields(child),
            Mapper::Field(_) => 1,
        })
        .sum()
}

/// A template's `mappings`, parsed.
pub struct ParsedMappings {
    pub root: ObjectMapping,
    pub date_detection: Option<bool>,
}

/// Parses and validates the `mappings` of an index template, rejecting unknown field types with
/// Elasticsearch's `mapper_parsing_exception`.
pub fn parse_mappings(mappings: &Value, flavor: Flavor) -> Result<ParsedMappings, EsError> {
    let Some(obj) = mappings.as_object() else {
        return Err(EsError::new(
            400,
            "mapper_parsing_exception",
            "Failed to parse mapping: Expected map for property [mappings]",
        ));
    };
    // Typed mappings (`{"_doc": {...}}`) are still read by 7.x legacy templates.
    let obj = match obj.get("_doc").and_then(Value::as_object) {
        Some(inner) if obj.len() == 1 => inner,
        _ => obj,
    };
    let mut root = ObjectMapping::default();
    read_object_settings(&mut root, obj)?;
    if let Some(props) = obj.get("properties") {
        read_properties(&mut root, props, flavor)?;
    }
    Ok(ParsedMappings {
        root,
        date_detection: obj.get("date_detection").and_then(Value::as_bool),
    })
}

fn read_object_settings(
    o: &mut ObjectMapping,
    def: &serde_json::Map<String, Value>,
) -> Result<(), EsError> {
    if let Some(enabled) = def.get("enabled") {
        o.enabled = enabled.as_bool().unwrap_or(true);
    }
    if let Some(dynamic) = def.get("dynamic") {
        o.dynamic = Some(match dynamic {
            Value::Bool(true) => Dynamic::True,
            Value::Bool(false) => Dynamic::False,
            Value::String(s) if s == "true" || s == "runtime" => Dynamic::True,
            Value::String(s) if s == "false" => Dynamic::False,
            Value::String(s) if s == "strict" => Dynamic::Strict,
            other => {
                return Err(EsError::new(
                    400,
                    "mapper_parsing_exception",
                    format!(
                        "Failed to parse mapping: Could not convert [dynamic] to boolean: {other}"
                    ),
                ));
            }
        });
    }
    Ok(())
}

fn read_properties(o: &mut ObjectMapping, props: &Value, flavor: Flavor) -> Result<(), EsError> {
    let Some(props) = props.as_object() else {
        return Ok(());
    };
    for (name, def) in props {
        let Some(def) = def.as_object() else {
            return Err(EsError::new(
                400,
                "mapper_parsing_exception",
                format!(
                    "Expected map for property [fields] on field [{name}] but got a class java.lang.String"
                ),
            ));
        };
        // Dotted property names are paths, as in documents.
        let parts: Vec<&str> = name.split('.').collect();
        let mut cur = &mut *o;
        for part in &parts[..parts.len() - 1] {
            let entry = cur
                .fields
                .entry(part.to_string())
                .or_insert_with(|| Mapper::Object(ObjectMapping::default()));
            if let Mapper::Field(_) = entry {
                // A later, dotted definition below a concrete field makes it an object.
                *entry = Mapper::Object(ObjectMapping::default());
            }
            cur = match entry {
                Mapper::Object(child) => child,
                Mapper::Field(_) => unreachable!("replaced above"),
            };
        }
        let leaf = parts[parts.len() - 1].to_string();
        let kind = def.get("type").and_then(Value::as_str);
        match kind {
            None | Some("object") | Some("nested") => {
                let mut child = match cur.fields.remove(&leaf) {
                    Some(Mapper::Object(existing)) => existing,
                    _ => ObjectMapping::default(),
                };
                read_object_settings(&mut child, def)?;
                if let Some(p) = def.get("properties") {
                    read_properties(&mut child, p, flavor)?;
                }
                cur.fields.insert(leaf, Mapper::Object(child));
            }
            Some(t) => {
                let Some(t) = FieldType::parse(t, flavor) else {
                    return Err(EsError::new(
                        400,
                        "mapper_parsing_exception",
                        format!("No handler for type [{t}] declared on field [{name}]"),
                    ));
                };
                cur.fields.insert(leaf, Mapper::Field(t));
            }
        }
    }
    Ok(())
}
