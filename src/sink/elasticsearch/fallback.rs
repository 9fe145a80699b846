//! Documents the index's mapping refuses are sent again without what the mapping refused, rather
//! than dead-lettered (README.md, mapping limits).
//!
//! An item-level 400 that names a mapping error (the index's limit of total fields, of depth or
//! of nested fields; a field that is a number in one document and an object in another; a
//! dynamic field the mapping does not allow) would fail the same way forever, but the line itself
//! is fine: only its parsed fields, or a label, do not fit the index. So the document goes again
//! at once, with the same id:
//!
//! 1. without its parsed fields (and its parsed level): the message, which holds the line as read,
//!    the time, the stream, the offset, the file's metadata, the static fields;
//! 2. if that is refused for its mapping too, also without the pod's labels, annotations and
//!    namespace labels (a label whose key is an object in the index);
//! 3. only a document refused again goes to the dead letters.
//!
//! Each fallback document carries `logship.mapping_fallback` (the reason) only where the index
//! maps that field (logship's index template defines it): an index at its field limit refuses any
//! new field, so the agent asks the index (`GET <index>/_mapping/field/logship.mapping_fallback`)
//! once per index before the first fallback, and leaves the field out where it is not mapped or
//! the question cannot be answered.

use std::time::Duration;

use super::retry::ItemError;
use crate::telemetry::{self, metrics};

/// The field that says why a document is a fallback.
pub const FIELD: &str = "logship.mapping_fallback";

/// How long an index's answer about [`FIELD`] is trusted (a template installed meanwhile applies
/// to the next index anyway).
pub const KNOWN_FOR: Duration = Duration::from_secs(600);

/// Why the mapping refused a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `index.mapping.total_fields.limit`.
    TotalFields,
    /// `index.mapping.depth.limit`.
    Depth,
    /// `index.mapping.nested_fields.limit` or `nested_objects.limit`.
    Nested,
    /// A value of the wrong type for its field: a number where an object is mapped, an object
    /// under a concrete field, a date or number that does not parse.
    FieldType,
    /// Any other mapping refusal (a `strict` mapping, a field name the mapping cannot take).
    Mapping,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::TotalFields => "total_fields_limit",
            Reason::Depth => "depth_limit",
            Reason::Nested => "nested_limit",
            Reason::FieldType => "field_type",
            Reason::Mapping => "mapping",
        }
    }

    fn count(self) {
        let m = metrics();
        let counter = match self {
            Reason::TotalFields => &m.es_fallback_total_fields,
            Reason::Depth => &m.es_fallback_depth,
            Reason::Nested => &m.es_fallback_nested,
            Reason::FieldType => &m.es_fallback_field_type,
            Reason::Mapping => &m.es_fallback_mapping,
        };
        telemetry::add(counter, 1);
    }
}

/// How far a document is stripped down, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// Without parsed fields...
    pub reason: Reason,
    /// ...and, when set, without the pod's labels and annotations either.
    pub without_labels: bool,
}

impl Fallback {
    /// The next step after a refusal for `reason` of a document sent as `current`; `None` when
    /// it has had both: it goes to the dead letters.
    pub fn next(current: Option<Fallback>, reason: Reason) -> Option<Fallback> {
        let next = match current {
            None => Fallback {
                reason,
                without_labels: false,
            },
            Some(f) if !f.without_labels => Fallback {
                reason,
                without_labels: true,
            },
            Some(_) => return None,
        };
        reason.count();
        Some(next)
    }
}

/// Whether an item refused with `status` and `error` was refused by the index's mapping, and why.
pub fn mapping_reason(status: u16, error: &ItemError) -> Option<Reason> {
    if status != 400 {
        return None;
    }
    let reason = error.reason.as_str();
    let limit = |what: &str| reason.contains("Limit of ") && reason.contains(what);
    match error.kind.as_str() {
        "illegal_argument_exception"
        | "mapper_parsing_exception"
        | "document_parsing_exception"
            if limit("total fields") =>
        {
            Some(Reason::TotalFields)
        }
        "illegal_argument_exception"
        | "mapper_parsing_exception"
        | "document_parsing_exception"
            if limit("mapping depth") =>
        {
            Some(Reason::Depth)
        }
        "illegal_argument_exception"
        | "mapper_parsing_exception"
        | "document_parsing_exception"
            if limit("nested") =>
        {
            Some(Reason::Nested)
        }
        "illegal_argument_exception" if is_type_conflict(reason) => Some(Reason::FieldType),
        "mapper_parsing_exception" | "document_parsing_exception" => {
            if is_type_conflict(reason) {
                Some(Reason::FieldType)
            } else {
                Some(Reason::Mapping)
            }
        }
        "strict_dynamic_mapping_exception" => Some(Reason::Mapping),
        _ => None,
    }
}

/// The wordings Elasticsearch and OpenSearch use for a value that does not fit its field's type.
fn is_type_conflict(reason: &str) -> bool {
    [
        "failed to parse field",
        "tried to parse field",
        "can't merge a non object mapping",
        "must be of type object",
        "cannot be changed from type",
        "mapper [",
        "Could not dynamically add mapping",
    ]
    .iter()
    .any(|w| reason.contains(w))
}

/// Whether an answer to `GET <index>/_mapping/field/logship.mapping_fallback` says the field is
/// mapped: `{"<index>":{"mappings":{"logship.mapping_fallback":{...}}}}` for every index it
/// names (a data stream answers for each backing index; the one written to is the newest, but
/// all share the template).
pub fn field_is_mapped(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(indices)) = serde_json::from_slice(body) else {
        return false;
    };
    !indices.is_empty()
        && indices.values().all(|index| {
            index
                .get("mappings")
                .and_then(|m| m.get(FIELD))
                .is_some_and(|f| f.get("mapping").is_some())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: &str, reason: &str) -> ItemError {
        ItemError {
            kind: kind.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn mapping_refusals_are_recognised_by_reason() {
        let cases = [
            (
                err(
                    "illegal_argument_exception",
                    "Limit of total fields [1000] has been exceeded while adding new fields [3]",
                ),
                Some(Reason::TotalFields),
            ),
            (
                err(
                    "document_parsing_exception",
                    "[1:250] failed to parse: Limit of total fields [1000] has been exceeded while adding new fields [1]",
                ),
                Some(Reason::TotalFields),
            ),
            (
                err(
                    "illegal_argument_exception",
                    "Limit of mapping depth [20] has been exceeded due to object field [a.b.c]",
                ),
                Some(Reason::Depth),
            ),
            (
                err(
                    "illegal_argument_exception",
                    "Limit of nested fields [50] has been exceeded",
                ),
                Some(Reason::Nested),
            ),
            (
                err(
                    "document_parsing_exception",
                    "[1:40] failed to parse field [status] of type [long] in document with id 'x'. Preview of field's value: 'ok'",
                ),
                Some(Reason::FieldType),
            ),
            (
                err(
                    "document_parsing_exception",
                    "[1:60] object mapping for [user] tried to parse field [user] as object, but found a concrete value",
                ),
                Some(Reason::FieldType),
            ),
            (
                err(
                    "mapper_parsing_exception",
                    "Could not dynamically add mapping for field [app.kubernetes.io/name]. Existing mapping for [kubernetes.labels.app] must be of type object but found [keyword].",
                ),
                Some(Reason::FieldType),
            ),
            (
                err(
                    "document_parsing_exception",
                    "[1:2] mapping set to strict, dynamic introduction of [x] within [_doc] is not allowed",
                ),
                Some(Reason::Mapping),
            ),
            (
                err(
                    "strict_dynamic_mapping_exception",
                    "mapping set to strict, dynamic introduction of [x] within [_doc] is not allowed",
                ),
                Some(Reason::Mapping),
            ),
            // Not the mapping: dead letters as before.
            (
                err(
                    "illegal_argument_exception",
                    "Document contains at least one immense term in field=\"message\"",
                ),
                None,
            ),
            (err("action_request_validation_exception", "bad"), None),
        ];
        for (error, expected) in cases {
            assert_eq!(mapping_reason(400, &error), expected, "{error:?}");
        }
        let total = err(
            "illegal_argument_exception",
            "Limit of total fields [1000] has been exceeded",
        );
        assert_eq!(mapping_reason(429, &total), None);
        assert_eq!(mapping_reason(500, &total), None);
    }

    #[test]
    fn two_fallbacks_then_the_dead_letters() {
        let first = Fallback::next(None, Reason::FieldType).unwrap();
        assert!(!first.without_labels);
        let second = Fallback::next(Some(first), Reason::TotalFields).unwrap();
        assert!(second.without_labels);
        assert_eq!(second.reason, Reason::TotalFields);
        assert_eq!(Fallback::next(Some(second), Reason::FieldType), None);
    }

    #[test]
    fn the_field_is_mapped_only_where_every_index_maps_it() {
        let mapped = br#"{"logs-a":{"mappings":{"logship.mapping_fallback":{"full_name":"logship.mapping_fallback","mapping":{"mapping_fallback":{"type":"keyword"}}}}}}"#;
        assert!(field_is_mapped(mapped));
        assert!(!field_is_mapped(br#"{"logs-a":{"mappings":{}}}"#));
        assert!(!field_is_mapped(
            br#"{"a":{"mappings":{"logship.mapping_fallback":{"full_name":"logship.mapping_fallback","mapping":{"mapping_fallback":{"type":"keyword"}}}}},"b":{"mappings":{}}}"#
        ));
        assert!(!field_is_mapped(b"{}"));
        assert!(!field_is_mapped(b"not json"));
    }
}
