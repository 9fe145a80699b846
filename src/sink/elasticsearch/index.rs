//! Index names: a template rendered per record.
//!
//! A template mixes literal text, strftime specifiers applied to the record's timestamp in UTC
//! (`logs-%Y.%m.%d`, `%G.%V` for ISO weeks) and field references in braces
//! (`logs-{kubernetes.namespace}`). When a referenced field is missing (a file whose name is not a
//! kubelet name has no namespace), the record goes to the fallback index instead of an index
//! named after an empty string.
//!
//! Rendering is cheap on the hot path: the sink caches the rendered name per file and time bucket
//! (the finest unit the template uses: a day for `%Y.%m.%d`), so a name is formatted once per file
//! per day, not once per record.

use std::fmt::Write as _;

use crate::timestamp::Timestamp;

/// Errors in an index template, found when the configuration is validated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{' in index template {0:?}")]
    Unclosed(String),
    #[error("unknown field {field:?} in index template (known: {known})")]
    UnknownField { field: String, known: String },
    #[error("unsupported strftime specifier %{0} in index template")]
    Specifier(char),
    #[error("index names must be lowercase and must not contain any of \\ / * ? \" < > | space , #: {0:?}")]
    Invalid(String),
    #[error("index template is empty")]
    Empty,
}

/// The fields a template may reference: the ones every document has before enrichment.
pub const FIELDS: &[&str] = &[
    "kubernetes.namespace",
    "kubernetes.pod.name",
    "kubernetes.container.name",
    "host.name",
    "stream",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A strftime specifier, without the `%`.
    Time(char),
    Field(String),
}

/// A parsed index template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexTemplate {
    parts: Vec<Part>,
    /// Nanoseconds per time bucket: records whose timestamps fall in the same bucket render the
    /// same name. `None` if the template uses no time at all.
    bucket: Option<i64>,
}

/// Specifiers supported, with the finest unit each depends on (seconds).
const SPECIFIERS: &[(char, i64)] = &[
    ('Y', 86_400),
    ('y', 86_400),
    ('m', 86_400),
    ('d', 86_400),
    ('j', 86_400),
    ('G', 86_400),
    ('V', 86_400),
    ('u', 86_400),
    ('H', 3_600),
    ('M', 60),
    ('%', 0),
];

impl IndexTemplate {
    /// Parses and checks a template.
    pub fn parse(template: &str) -> Result<IndexTemplate, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut bucket: Option<i64> = None;
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let spec = chars.next().ok_or(TemplateError::Specifier(' '))?;
                    let unit = SPECIFIERS
                        .iter()
                        .find(|(s, _)| *s == spec)
                        .map(|(_, unit)| *unit)
                        .ok_or(TemplateError::Specifier(spec))?;
                    if spec == '%' {
                        literal.push('%');
                        continue;
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Time(spec));
                    let ns = unit * 1_000_000_000;
                    bucket = Some(bucket.map_or(ns, |b| b.min(ns)));
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(TemplateError::Unclosed(template.into())),
                        }
                    }
                    let field = field.trim().to_string();
                    if !FIELDS.contains(&field.as_str()) {
                        return Err(TemplateError::UnknownField {
                            field,
                            known: FIELDS.join(", "),
                        });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        for part in &parts {
            if let Part::Literal(text) = part {
                check_name(text)?;
            }
        }
        Ok(IndexTemplate { parts, bucket })
    }

    /// A wildcard pattern covering every name the template renders: its literal prefix and `*`
    /// (for index templates and permissions).
    pub fn pattern(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                _ => {
                    out.push('*');
                    break;
                }
            }
        }
        out
    }

    /// Whether the template references any field (then the name depends on the file).
    pub fn uses_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// The time bucket of `ts`: equal buckets render equal names (for caching).
    pub fn bucket(&self, ts: Timestamp) -> i64 {
        self.bucket.map_or(0, |b| ts.0.div_euclid(b))
    }

    /// Renders the name of a record at `ts` whose fields are given by `field`; `None` if a field
    /// is missing (use the fallback index) or its value would make an invalid name.
    pub fn render<'a>(
        &self,
        ts: Timestamp,
        field: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<String> {
        let mut out = String::new();
        let mut when = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(name) => {
                    let value = field(name).filter(|v| !v.is_empty())?;
                    out.push_str(value);
                }
                Part::Time(spec) => {
                    let dt = *when.get_or_insert_with(|| utc(ts));
                    let _ = write!(out, "{}", dt.format(&format!("%{spec}")));
                }
            }
        }
        check_name(&out).ok()?;
        Some(out)
    }
}

fn utc(ts: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(
        ts.0.div_euclid(1_000_000_000),
        ts.0.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
}

/// Elasticsearch's rules for index names, as far as a template's text can break them.
fn check_name(text: &str) -> Result<(), TemplateError> {
    let bad = text.chars().any(|c| {
        c.is_uppercase()
            || matches!(
                c,
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
            )
    });
    if bad || text.len() > 255 {
        return Err(TemplateError::Invalid(text.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22T10:30:00Z
    const TS: Timestamp = Timestamp(1_795_343_400_000_000_000);

    fn fields(name: &str) -> Option<&'static str> {
        match name {
            "kubernetes.namespace" => Some("shop"),
            "host.name" => Some("node-1"),
            _ => None,
        }
    }

    #[test]
    fn renders_time_and_fields() {
        let table = [
            ("logs-logship-default", Some("logs-logship-default")),
            ("logs-%Y.%m.%d", Some("logs-2026.11.22")),
            ("logs-%G.%V", Some("logs-2026.47")),
            (
                "logs-{kubernetes.namespace}-%Y.%m",
                Some("logs-shop-2026.11"),
            ),
            ("logs-{ host.name }-%H", Some("logs-node-1-10")),
            ("logs-{kubernetes.pod.name}", None),
            ("100%%-logs", Some("100%-logs")),
        ];
        for (template, want) in table {
            let t = IndexTemplate::parse(template).unwrap();
            assert_eq!(t.render(TS, fields).as_deref(), want, "{template}");
        }
    }

    #[test]
    fn buckets_follow_the_finest_unit() {
        let day = IndexTemplate::parse("logs-%Y.%m.%d").unwrap();
        let hour = IndexTemplate::parse("logs-%Y.%m.%d.%H").unwrap();
        let none = IndexTemplate::parse("logs").unwrap();
        let later = Timestamp(TS.0 + 3_600_000_000_000);
        assert_eq!(day.bucket(TS), day.bucket(later));
        assert_ne!(hour.bucket(TS), hour.bucket(later));
        assert_eq!(none.bucket(TS), none.bucket(Timestamp(0)));
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(matches!(
            IndexTemplate::parse("logs-{kubernetes.labels}"),
            Err(TemplateError::UnknownField { .. })
        ));
        assert!(matches!(
            IndexTemplate::parse("logs-{oops"),
            Err(TemplateError::Unclosed(_))
        ));
        assert_eq!(
            IndexTemplate::parse("logs-%Q"),
            Err(TemplateError::Specifier('Q'))
        );
        assert!(matches!(
            IndexTemplate::parse("Logs"),
            Err(TemplateError::Invalid(_))
        ));
        assert_eq!(IndexTemplate::parse(""), Err(TemplateError::Empty));
    }
}
