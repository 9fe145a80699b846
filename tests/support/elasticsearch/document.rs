//! Parsing one document against an index's mapping, as Elasticsearch's `DocumentParser` does.
//!
//! The document is read with positions ([`json`]), then walked: known fields are checked against
//! their type with Elasticsearch's coercion rules, unknown ones are added as dynamic mapping adds
//! them, and dotted keys walk (and create) the objects they name. A failure is worded as the
//! flavour words it: Elasticsearch 8's `document_parsing_exception` with a `[line:column]` prefix,
//! or Elasticsearch 7's and OpenSearch's `mapper_parsing_exception` (which reports a dotted key
//! under a concrete field as "Could not dynamically add mapping ..."). A rejected document leaves
//! the mapping as it was: what it added is undone.

use std::net::IpAddr;

use serde_json::Value;

use super::errors::{self, EsError};
use super::json::{self, Kind, Member, Node};
use super::mapping::{Dynamic, FieldType, Mapper, Mapping, ObjectMapping};
use super::Flavor;

impl Mapping {
    /// Parses one document into this mapping. On success the mapping holds any new fields and the
    /// stored `_source` is returned; on failure the mapping is unchanged.
    pub fn index_document(
        &mut self,
        flavor: Flavor,
        id: &str,
        source: &[u8],
    ) -> Result<Value, EsError> {
        let mut parser = DocParser {
            flavor,
            id,
            input: source,
            date_detection: self.date_detection,
            logs_templates: self.logs_templates,
            ignore_malformed: self.ignore_malformed,
            room: if self.ignore_dynamic_beyond_limit {
                Some(self.total_fields_limit.saturating_sub(self.fields))
            } else {
                None
            },
            added: Vec::new(),
        };
        let result = parser.document(&mut self.root, self.data_stream);
        let added_fields: usize = parser.added.iter().map(|(_, n)| n).sum();
        let result = result.and_then(|value| {
            if self.fields + added_fields > self.total_fields_limit {
                return Err(self.limit_error(flavor, added_fields));
            }
            // As `MappingLookup.checkDepthLimit`: an object at `a.b` holds fields at depth 3.
            let too_deep = parser.added.iter().find(|(path, _)| {
                path.len() + 1 > self.depth_limit && self.type_of(&path.join(".")) == Some("object")
            });
            match too_deep {
                Some((path, _)) => Err(errors::illegal_argument(format!(
                    "Limit of mapping depth [{}] has been exceeded due to object field [{}]",
                    self.depth_limit,
                    path.join(".")
                ))),
                None => Ok(value),
            }
        });
        match result {
            Ok(value) => {
                self.fields += added_fields;
                Ok(value)
            }
            Err(e) => {
                for (path, _) in parser.added.iter().rev() {
                    remove(&mut self.root, path);
                }
                Err(e)
            }
        }
    }

    fn limit_error(&self, flavor: Flavor, added: usize) -> EsError {
        let limit = self.total_fields_limit;
        errors::illegal_argument(match flavor {
            Flavor::Elasticsearch8 => format!(
                "Limit of total fields [{limit}] has been exceeded while adding new fields [{added}]"
            ),
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => {
                format!("Limit of total fields [{limit}] has been exceeded")
            }
        })
    }
}

fn remove(root: &mut ObjectMapping, path: &[String]) {
    let mut cur = root;
    for part in &path[..path.len() - 1] {
        cur = match cur.fields.get_mut(part) {
            Some(Mapper::Object(o)) => o,
            _ => return,
        };
    }
    cur.fields.remove(&path[path.len() - 1]);
}

/// Elasticsearch's metadata fields, which a document may not carry at its root.
const METADATA_FIELDS: &[&str] = &[
    "_id",
    "_index",
    "_routing",
    "_source",
    "_version",
    "_seq_no",
    "_primary_term",
    "_ignored",
    "_field_names",
    "_nested_path",
    "_data_stream_timestamp",
    "_doc_count",
    "_tier",
];

/// Walks one document against the mapping, recording what it adds so a failure can undo it.
struct DocParser<'a> {
    flavor: Flavor,
    id: &'a str,
    input: &'a [u8],
    date_detection: bool,
    logs_templates: bool,
    ignore_malformed: bool,
    /// With `ignore_dynamic_beyond_limit`, how many more fields may be mapped.
    room: Option<usize>,
    /// Paths added, with the number of fields each counts for.
    added: Vec<(Vec<String>, usize)>,
}

impl DocParser<'_> {
    fn loc(&self, at: usize) -> String {
        json::location(self.input, at)
    }

    /// A failure of the document as a whole: `document_parsing_exception` with a location on 8.x,
    /// `mapper_parsing_exception` without one elsewhere.
    fn doc_error(&self, at: usize, reason: String) -> EsError {
        match self.flavor {
            Flavor::Elasticsearch8 => EsError::new(
                400,
                "document_parsing_exception",
                format!("[{}] {reason}", self.loc(at)),
            ),
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => {
                EsError::new(400, "mapper_parsing_exception", reason)
            }
        }
    }

    /// "failed to parse" wrapping a cause, as `wrapInDocumentParsingException` does.
    fn wrapped(&self, at: usize, cause: EsError) -> EsError {
        let reason = match self.flavor {
            Flavor::Elasticsearch8 => {
                format!(
                    "failed to parse: {}",
                    cause.reason.clone().unwrap_or_default()
                )
            }
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => "failed to parse".to_string(),
        };
        self.doc_error(at, reason).caused_by(cause)
    }

    fn document(&mut self, root: &mut ObjectMapping, data_stream: bool) -> Result<Value, EsError> {
        if self.input.is_empty() {
            return Err(self.doc_error(0, "failed to parse, document is empty".into()));
        }
        let (node, after) = match json::parse_first(self.input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                return Err(self.doc_error(
                    self.input.len(),
                    "Malformed content, must start with an object".into(),
                ));
            }
            Err(e) => {
                let cause = errors::x_content(self.flavor, &self.loc(e.at), &e.message);
                return Err(self.wrapped(e.at, cause));
            }
        };
        let Kind::Object(members) = &node.value else {
            return Err(self.doc_error(
                node.start,
                "Malformed content, must start with an object".into(),
            ));
        };
        match json::next_token(self.input, after) {
            Ok(None) => {}
            Ok(Some(token)) => {
                let cause = errors::illegal_argument(format!(
                    "Malformed content, found extra data after parsing: {token}"
                ));
                return Err(self.wrapped(after, cause));
            }
            Err(e) => {
                let cause = errors::x_content(self.flavor, &self.loc(e.at), &e.message);
                return Err(self.wrapped(e.at, cause));
            }
        }
        self.object(root, &[], members, Dynamic::True, true)?;
        if data_stream {
            self.check_timestamp(&node, members)?;
        }
        Ok(node.to_value())
    }

    fn check_timestamp(&self, node: &Node, members: &[Member]) -> Result<(), EsError> {
        let values = match members.iter().find(|m| m.key == "@timestamp") {
            None => 0,
            Some(m) => match &m.value.value {
                Kind::Null => 0,
                Kind::Array(items) => items
                    .iter()
                    .filter(|i| !matches!(i.value, Kind::Null))
                    .count(),
                _ => 1,
            },
        };
        let problem = match values {
            0 => "data stream timestamp field [@timestamp] is missing",
            1 => return Ok(()),
            _ => "data stream timestamp field [@timestamp] encountered multiple values",
        };
        Err(self.wrapped(node.end, errors::illegal_argument(problem)))
    }

    fn check_name(&self, m: &Member) -> Result<Vec<String>, EsError> {
        let key = &m.key;
        let problem = if key.is_empty() {
            Some("field name cannot be an empty string".to_string())
        } else if key.trim().is_empty() {
            Some(format!(
                "field name cannot contain only whitespace: ['{key}']"
            ))
        } else if key.contains('.') {
            let parts: Vec<&str> = key.split('.').collect();
            if parts.iter().any(|p| p.is_empty()) {
                Some(format!(
                    "object field starting or ending with a [.] makes object resolution ambiguous: [{key}]"
                ))
            } else if parts.iter().any(|p| p.trim().is_empty()) {
                Some(format!(
                    "object field cannot contain only whitespace: ['{key}']"
                ))
            } else {
                None
            }
        } else {
            None
        };
        match problem {
            Some(p) => Err(self.wrapped(m.key_at, errors::illegal_argument(p))),
            None => Ok(key.split('.').map(str::to_string).collect()),
        }
    }

    fn metadata_error(&self, m: &Member) -> EsError {
        let cause = EsError::new(
            400,
            "mapper_parsing_exception",
            format!(
                "Field [{}] is a metadata field and cannot be added inside a document. Use the index API request parameters.",
                m.key
            ),
        );
        match self.flavor {
            Flavor::Elasticsearch8 => self
                .doc_error(
                    m.value.start,
                    format!(
                        "failed to parse field [{k}] of type [{k}] in document with id '{id}'. Preview of field's value: '{p}'",
                        k = m.key,
                        id = self.id,
                        p = m.value.java_preview()
                    ),
                )
                .caused_by(cause),
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => cause,
        }
    }

    fn object(
        &mut self,
        mapping: &mut ObjectMapping,
        path: &[String],
        members: &[Member],
        inherited: Dynamic,
        root: bool,
    ) -> Result<(), EsError> {
        let dynamic = mapping.dynamic.unwrap_or(inherited);
        for m in members {
            if root && METADATA_FIELDS.contains(&m.key.as_str()) {
                return Err(self.metadata_error(m));
            }
            let parts = self.check_name(m)?;
            self.member(mapping, path, m, &parts, dynamic)?;
        }
        Ok(())
    }

    /// One key of an object; a dotted key walks (and creates) the objects it names.
    fn member(
        &mut self,
        mapping: &mut ObjectMapping,
        path: &[String],
        m: &Member,
        parts: &[String],
        mut dynamic: Dynamic,
    ) -> Result<(), EsError> {
        let mut cur = mapping;
        let mut cur_path = path.to_vec();
        for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
            dynamic = cur.dynamic.unwrap_or(dynamic);
            match cur.fields.get(part) {
                Some(Mapper::Object(_)) => {}
                Some(Mapper::Field(t)) if t.takes_objects() => return Ok(()),
                Some(Mapper::Field(t)) => {
                    let t = *t;
                    cur_path.push(part.clone());
                    return Err(self.dotted_under_field(m, &parts[i + 1..], &cur_path, t));
                }
                None => match dynamic {
                    Dynamic::False => return Ok(()),
                    Dynamic::Strict => return Err(self.strict(part, &cur_path, m.key_at)),
                    Dynamic::True => {
                        if !self.make_room(1) {
                            return Ok(());
                        }
                        cur.fields
                            .insert(part.clone(), Mapper::Object(ObjectMapping::default()));
                        let mut added = cur_path.clone();
                        added.push(part.clone());
                        self.added.push((added, 1));
                    }
                },
            }
            cur = match cur.fields.get_mut(part) {
                Some(Mapper::Object(o)) => o,
                _ => unreachable!("checked above"),
            };
            cur_path.push(part.clone());
            if !cur.enabled {
                return Ok(());
            }
        }
        let dynamic = cur.dynamic.unwrap_or(dynamic);
        let leaf = &parts[parts.len() - 1];
        self.value(cur, &cur_path, leaf, &m.key, &m.value, dynamic)
    }

    /// `a.b.c` where `a` is a concrete field.
    fn dotted_under_field(
        &self,
        m: &Member,
        rest: &[String],
        field_path: &[String],
        t: FieldType,
    ) -> EsError {
        match self.flavor {
            Flavor::Elasticsearch8 => {
                // 8.x expands the dots into objects, so the field is handed an object that starts
                // at the key and ends where the value does.
                let mut preview = m.value.java_preview();
                for part in rest.iter().rev() {
                    preview = format!("{{{part}={preview}}}");
                }
                let end = if matches!(m.value.value, Kind::Object(_) | Kind::Array(_)) {
                    m.value.end
                } else {
                    m.value.start
                };
                self.field_error(field_path, t, &preview, end, Some(self.no_text(m.key_at)))
            }
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => EsError::new(
                400,
                "mapper_parsing_exception",
                format!(
                    "Could not dynamically add mapping for field [{}]. Existing mapping for [{}] must be of type object but found [{}].",
                    m.key,
                    field_path.join("."),
                    t.name()
                ),
            ),
        }
    }

    fn no_text(&self, at: usize) -> EsError {
        EsError::new(
            400,
            "illegal_state_exception",
            format!("Can't get text on a START_OBJECT at {}", self.loc(at)),
        )
    }

    fn field_error(
        &self,
        path: &[String],
        t: FieldType,
        preview: &str,
        at: usize,
        cause: Option<EsError>,
    ) -> EsError {
        let e = self.doc_error(
            at,
            format!(
                "failed to parse field [{}] of type [{}] in document with id '{}'. Preview of field's value: '{preview}'",
                path.join("."),
                t.name(),
                self.id
            ),
        );
        match cause {
            Some(c) => e.caused_by(c),
            None => e,
        }
    }

    fn strict(&self, name: &str, parent: &[String], at: usize) -> EsError {
        let within = if parent.is_empty() {
            "_doc".to_string()
        } else {
            parent.join(".")
        };
        let reason = format!(
            "mapping set to strict, dynamic introduction of [{name}] within [{within}] is not allowed"
        );
        let mut e = self.doc_error(at, reason);
        e.kind = "strict_dynamic_mapping_exception".into();
        e
    }

    /// Whether `n` more fields may be mapped; past the limit with `ignore_dynamic_beyond_limit`
    /// new fields are left unmapped instead.
    fn make_room(&mut self, n: usize) -> bool {
        match &mut self.room {
            None => true,
            Some(room) if *room >= n => {
                *room -= n;
                true
            }
            Some(_) => false,
        }
    }

    /// The value of field `name` under `parent` (mapped at `parent_path`).
    fn value(
        &mut self,
        parent: &mut ObjectMapping,
        parent_path: &[String],
        name: &str,
        key_as_written: &str,
        node: &Node,
        dynamic: Dynamic,
    ) -> Result<(), EsError> {
        let mut path = parent_path.to_vec();
        path.push(name.to_string());
        match parent.fields.get_mut(name) {
            Some(Mapper::Object(o)) => self.object_value(o, &path, key_as_written, node, dynamic),
            Some(Mapper::Field(t)) => {
                let t = *t;
                self.field_value(t, &path, node)
            }
            None => self.dynamic_value(parent, parent_path, name, key_as_written, node, dynamic),
        }
    }

    fn object_value(
        &mut self,
        o: &mut ObjectMapping,
        path: &[String],
        key_as_written: &str,
        node: &Node,
        dynamic: Dynamic,
    ) -> Result<(), EsError> {
        if !o.enabled {
            return Ok(());
        }
        match &node.value {
            Kind::Object(members) => self.object(o, path, members, dynamic, false),
            Kind::Array(items) => {
                for item in items {
                    self.object_value(o, path, key_as_written, item, dynamic)?;
                }
                Ok(())
            }
            Kind::Null => Ok(()),
            _ => {
                let shown = match self.flavor {
                    Flavor::Elasticsearch8 => path[path.len() - 1].as_str(),
                    Flavor::Elasticsearch7 | Flavor::OpenSearch2 => key_as_written,
                };
                Err(self.doc_error(
                    node.start,
                    format!(
                        "object mapping for [{}] tried to parse field [{shown}] as object, but found a concrete value",
                        path.join(".")
                    ),
                ))
            }
        }
    }

    fn field_value(&mut self, t: FieldType, path: &[String], node: &Node) -> Result<(), EsError> {
        if t.takes_objects() {
            return Ok(());
        }
        match &node.value {
            Kind::Null => Ok(()),
            Kind::Array(items) => {
                for item in items {
                    self.field_value(t, path, item)?;
                }
                Ok(())
            }
            Kind::Object(_) => Err(self.field_error(
                path,
                t,
                &node.java_preview(),
                node.end,
                Some(self.no_text(node.start)),
            )),
            _ => match self.check_scalar(t, node) {
                Ok(()) => Ok(()),
                Err(_)
                    if self.ignore_malformed
                        && t.supports_ignore_malformed()
                        && path != ["@timestamp"] =>
                {
                    Ok(())
                }
                Err(cause) => {
                    Err(self.field_error(path, t, &node.java_preview(), node.start, Some(cause)))
                }
            },
        }
    }

    fn not_numeric(&self, node: &Node, what: &str) -> EsError {
        let token = match &node.value {
            Kind::Bool(true) => "VALUE_TRUE",
            Kind::Bool(false) => "VALUE_FALSE",
            Kind::Number { float: true, .. } => "VALUE_NUMBER_FLOAT",
            Kind::Number { .. } => "VALUE_NUMBER_INT",
            _ => "VALUE_STRING",
        };
        errors::x_content(
            self.flavor,
            &self.loc(node.start),
            &format!("Current token ({token}) {what}"),
        )
    }

    /// Whether a scalar fits a concrete type, with Elasticsearch's coercion rules; the cause of the
    /// failure when it does not.
    fn check_scalar(&self, t: FieldType, node: &Node) -> Result<(), EsError> {
        use FieldType::*;
        let text = match &node.value {
            Kind::String(s) => Some(s.as_str()),
            _ => None,
        };
        match t {
            Text | MatchOnlyText | Keyword | Wildcard | ConstantKeyword | Flattened
            | FlatObject => Ok(()),
            Long | Integer | Short | Byte | UnsignedLong => {
                let (min, max, name): (f64, f64, &str) = match t {
                    Long => (i64::MIN as f64, i64::MAX as f64, "a long"),
                    Integer => (i32::MIN as f64, i32::MAX as f64, "an integer"),
                    Short => (i16::MIN as f64, i16::MAX as f64, "a short"),
                    Byte => (i8::MIN as f64, i8::MAX as f64, "a byte"),
                    _ => (0.0, u64::MAX as f64, "an unsigned_long"),
                };
                let raw = match &node.value {
                    Kind::Number { text, .. } => text.as_str(),
                    Kind::String(s) if s.is_empty() => return Ok(()),
                    Kind::String(s) => s.as_str(),
                    _ => {
                        return Err(self.not_numeric(
                            node,
                            "not numeric, can not use numeric value accessors",
                        ));
                    }
                };
                let v: f64 = raw.trim().parse().map_err(|_| {
                    errors::illegal_argument(format!("For input string: \"{raw}\""))
                })?;
                if v.trunc() < min || v.trunc() > max {
                    return Err(errors::illegal_argument(format!(
                        "Value [{raw}] is out of range for {name}"
                    )));
                }
                Ok(())
            }
            Double | Float | HalfFloat | ScaledFloat => {
                let raw = match &node.value {
                    Kind::Number { text, .. } => text.as_str(),
                    Kind::String(s) if s.is_empty() => return Ok(()),
                    Kind::String(s) => s.as_str(),
                    _ => {
                        return Err(self.not_numeric(
                            node,
                            "not numeric, can not use numeric value accessors",
                        ));
                    }
                };
                let v: f64 = raw.trim().parse().map_err(|_| {
                    EsError::new(
                        400,
                        "number_format_exception",
                        format!("For input string: \"{raw}\""),
                    )
                })?;
                if !v.is_finite() || (t == Float && v.abs() > f32::MAX as f64) {
                    return Err(errors::illegal_argument(format!(
                        "[{}] supports only finite values, but got [{raw}]",
                        t.name()
                    )));
                }
                Ok(())
            }
            Boolean => match &node.value {
                Kind::Bool(_) => Ok(()),
                Kind::String(s) if s.is_empty() || s == "true" || s == "false" => Ok(()),
                Kind::String(s) => Err(errors::illegal_argument(format!(
                    "Failed to parse value [{s}] as only [true] or [false] are allowed."
                ))),
                _ => Err(self.not_numeric(node, "not of boolean type")),
            },
            Date | DateNanos => {
                let ok = match &node.value {
                    Kind::Number { .. } => true,
                    Kind::String(s) => is_strict_date_optional_time(s) || is_epoch_millis(s),
                    _ => false,
                };
                if ok {
                    return Ok(());
                }
                let shown = text.map_or_else(|| node.java_preview(), str::to_string);
                Err(errors::illegal_argument(format!(
                    "failed to parse date field [{shown}] with format [strict_date_optional_time||epoch_millis]"
                ))
                .caused_by(EsError::new(
                    400,
                    "date_time_parse_exception",
                    "Failed to parse with all enclosed parsers",
                )))
            }
            Ip => match text.map(str::parse::<IpAddr>) {
                Some(Ok(_)) => Ok(()),
                _ => Err(errors::illegal_argument(format!(
                    "'{}' is not an IP string literal.",
                    node.java_preview()
                ))),
            },
        }
    }

    /// A field the mapping does not know yet.
    fn dynamic_value(
        &mut self,
        parent: &mut ObjectMapping,
        parent_path: &[String],
        name: &str,
        key_as_written: &str,
        node: &Node,
        dynamic: Dynamic,
    ) -> Result<(), EsError> {
        let new = match &node.value {
            Kind::Null => return Ok(()),
            Kind::Array(items) => {
                // The first value decides the type; the others are then parsed into it.
                for item in items {
                    self.value(parent, parent_path, name, key_as_written, item, dynamic)?;
                }
                return Ok(());
            }
            Kind::Object(_) => Mapper::Object(ObjectMapping::default()),
            Kind::String(s) => Mapper::Field(if self.date_detection && is_dynamic_date(s) {
                FieldType::Date
            } else if self.logs_templates && parent_path.is_empty() && name == "message" {
                FieldType::MatchOnlyText
            } else if self.logs_templates {
                FieldType::Keyword
            } else {
                FieldType::Text
            }),
            Kind::Number { float: false, .. } => Mapper::Field(FieldType::Long),
            Kind::Number { float: true, .. } => Mapper::Field(FieldType::Float),
            Kind::Bool(_) => Mapper::Field(FieldType::Boolean),
        };
        match dynamic {
            Dynamic::False => return Ok(()),
            Dynamic::Strict => return Err(self.strict(name, parent_path, node.start)),
            Dynamic::True => {}
        }
        // A dynamic `text` field comes with a `keyword` sub-field, which counts too.
        let counts = if matches!(new, Mapper::Field(FieldType::Text)) {
            2
        } else {
            1
        };
        if !self.make_room(counts) {
            return Ok(());
        }
        parent.fields.insert(name.to_string(), new);
        let mut path = parent_path.to_vec();
        path.push(name.to_string());
        self.added.push((path, counts));
        self.value(parent, parent_path, name, key_as_written, node, dynamic)
    }
}

fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')),
    )
}

/// `strict_date_optional_time`: `yyyy-MM-dd` optionally followed by `'T'HH[:mm[:ss[.f{1,9}]]]`
/// and a zone (`Z`, `±HH`, `±HHmm`, `±HH:mm`).
pub fn is_strict_date_optional_time(s: &str) -> bool {
    let b = s.as_bytes();
    let date_ok = b.len() >= 10
        && digits(b, 4).is_some()
        && b[4] == b'-'
        && digits(&b[5..], 2).is_some_and(|m| (1..=12).contains(&m))
        && b[7] == b'-'
        && digits(&b[8..], 2).is_some_and(|d| (1..=31).contains(&d));
    if !date_ok {
        return false;
    }
    let mut rest = &b[10..];
    if rest.is_empty() {
        return true;
    }
    if rest[0] != b'T' {
        return false;
    }
    rest = &rest[1..];
    let Some(h) = digits(rest, 2) else {
        return false;
    };
    if h > 23 {
        return false;
    }
    rest = &rest[2..];
    for limit in [59, 60] {
        if rest.first() == Some(&b':') {
            match digits(&rest[1..], 2) {
                Some(v) if v <= limit => rest = &rest[3..],
                _ => return false,
            }
        } else {
            break;
        }
    }
    if let Some(b'.' | b',') = rest.first() {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', zone @ ..] => {
            let zone: Vec<u8> = zone.iter().copied().filter(|c| *c != b':').collect();
            (zone.len() == 2 || zone.len() == 4) && zone.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn is_epoch_millis(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    !s.is_empty()
        && s.split_once('.')
            .map_or(s, |(i, _)| i)
            .bytes()
            .all(|c| c.is_ascii_digit())
}

/// `dynamic_date_formats`: `strict_date_optional_time` and `yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z`.
fn is_dynamic_date(s: &str) -> bool {
    if is_strict_date_optional_time(s) {
        return true;
    }
    let b = s.as_bytes();
    b.len() >= 10
        && digits(b, 4).is_some()
        && b[4] == b'/'
        && digits(&b[5..], 2).is_some()
        && b[7] == b'/'
        && digits(&b[8..], 2).is_some()
        && b.len() > 10
}
