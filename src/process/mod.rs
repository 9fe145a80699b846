//! Message processing: structured messages, filters and per-pod hints, applied by the tailer to
//! every batch after parsing and enrichment and before it takes buffer memory.
//!
//! # Order
//!
//! 1. **Hints** choose the container's parser (annotation, then rule, then `processing.parser`).
//! 2. **Parse**: a JSON object message (or logfmt, when chosen) becomes fields under the target
//!    (`json` by default, or merged at the top level), within the bounds of [`json`]; its level
//!    is lifted into `log.level`. A message that does not parse is left as it was, and counted.
//! 3. **include / exclude**: a record is kept if it matches at least one `include` rule (or
//!    there is none), and dropped if it matches any `exclude` rule. Rules on the message, the
//!    stream or per-file fields run before parsing (a dropped line is never parsed); the result
//!    is the same as if they ran after it.
//! 4. **drop_fields**, then 5. **rename_fields**, on parsed fields and the level.
//! 6. **add_fields**: the static fields, which the encoder writes into every document.
//!
//! A dropped record leaves its batch but stays inside the batch's acknowledgement range: its
//! file's position moves past it like past any other record (dropping was asked for, and it is
//! counted).
//!
//! # Cost
//!
//! Parsed output lives in the batch ([`Batch::fields`], [`Batch::processed`]) and counts against
//! the memory budget. A JSON object that needs no change is not copied at all: the encoder
//! splices the message text. With `parser = "none"` and no filters, a batch is not looked at.
//!
//! # Name clashes
//!
//! Parsed fields under a target never clash. Merged at the top level (`target = ""`), the
//! document's own fields win: a parsed key that is one of them (`@timestamp`, `message`,
//! `stream`, `log`, `kubernetes`, `container`, `host`; `fluentd`: `log`, `stream`, `time`,
//! `offset`, `kubernetes`, `docker`, `file`, `host`, `level`), a static field, an Elasticsearch
//! metadata field (`_id`, ...) or `json` itself moves under `json.` — except that with
//! `keep_message = false` the parsed `message` becomes the message, and a parsed key that *is*
//! the level field is not written twice.

pub mod filter;
pub mod hints;
pub mod json;
pub mod logfmt;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::document::Encoder;
use crate::enrich::Enricher;
use crate::record::{Batch, FieldsOut, MessageOut, Processed, Span, Stream};
use crate::source::KubeletName;
use crate::telemetry::{self, Throttle};

use filter::{Field, Match, Names};
use hints::{HintSource, ParserChoice, Rule};
use json::{Bounds, Built, Members, Node, NotParsed, Survey, TopKey};

/// The validated `[processing]` section.
#[derive(Clone, Debug)]
pub struct ProcessingSettings {
    /// The parser of containers no hint speaks for.
    pub parser: ParserChoice,
    /// How fields are named: schema, target, static fields.
    pub names: Names,
    /// Keep the message when it was parsed into fields.
    pub keep_message: bool,
    /// Top-level keys whose value is lifted into the level field, best first.
    pub level_keys: Vec<String>,
    pub bounds: Bounds,
    pub include: Vec<Match>,
    pub exclude: Vec<Match>,
    pub drop_fields: Vec<Field>,
    pub rename_fields: Vec<(Field, Field)>,
    /// Static fields (`key`, `value`).
    pub add_fields: Vec<(String, String)>,
    /// `add_fields` rendered as document members, each followed by a comma: what the encoder
    /// writes into every document.
    pub statics: String,
    /// Per namespace / label selector hints.
    pub rules: Vec<Rule>,
}

impl ProcessingSettings {
    /// The defaults: auto-detected JSON objects under `json`, the message kept.
    pub fn new(schema: crate::enrich::metadata::Schema) -> Self {
        ProcessingSettings {
            parser: ParserChoice::Auto,
            names: Names {
                schema,
                target: Some("json".into()),
                static_roots: Vec::new(),
            },
            keep_message: true,
            level_keys: DEFAULT_LEVEL_KEYS.iter().map(|k| k.to_string()).collect(),
            bounds: Bounds::DEFAULT,
            include: Vec::new(),
            exclude: Vec::new(),
            drop_fields: Vec::new(),
            rename_fields: Vec::new(),
            add_fields: Vec::new(),
            statics: String::new(),
            rules: Vec::new(),
        }
    }

    /// Whether processing can change anything; when not, the tailer never calls in here. With
    /// enrichment, an annotation can choose a parser.
    pub fn active(&self, enrichment: bool) -> bool {
        self.parser != ParserChoice::None
            || !self.rules.is_empty()
            || !self.include.is_empty()
            || !self.exclude.is_empty()
            || enrichment
    }

    /// The document paths of the per-file fields filters look at.
    fn metadata_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for m in self.include.iter().chain(&self.exclude) {
            if let Field::Metadata(p) = &m.field {
                if !paths.contains(p) {
                    paths.push(p.clone());
                }
            }
        }
        paths
    }
}

/// Where the level comes from unless configured: the keys of common logging libraries.
pub const DEFAULT_LEVEL_KEYS: [&str; 7] = [
    "level",
    "severity",
    "log.level",
    "lvl",
    "loglevel",
    "log_level",
    "levelname",
];

/// A followed file's processing state (kept with the file, like its rate limit).
#[derive(Debug, Default)]
pub struct FileProcessing {
    /// The enrichment cache version the hints were resolved at; `None`: never.
    version: Option<u64>,
    /// The parser its container's messages get.
    pub parser: ParserChoice,
    /// The multiline rule hints name for it; `None`: no hint.
    pub multiline: Option<Arc<str>>,
    /// The fragment `meta` was read from.
    meta_fragment: Option<Arc<str>>,
    /// The per-file fields filters look at, by path.
    meta: Vec<(String, Option<String>)>,
}

impl FileProcessing {
    /// Resolve the hints again before the next turn (the file was truncated: a new parser).
    pub fn invalidate(&mut self) {
        self.version = None;
    }
}

/// Top-level keys the survey must know about, precomputed.
#[derive(Debug)]
struct TopKeys {
    /// First bytes of every name below: most keys are ruled out by one lookup.
    first: [bool; 256],
    levels: Vec<String>,
    /// The level is renamed: a record with a level key takes the rebuild path.
    level_rewrite: bool,
    /// Top-level names a merged key may not keep (only with `target = ""`).
    taken: Vec<String>,
    /// Paths drop_fields and rename_fields take from.
    touched: Vec<String>,
}

impl TopKeys {
    fn new(s: &ProcessingSettings) -> Self {
        let mut keys = TopKeys {
            first: [false; 256],
            levels: s.level_keys.clone(),
            level_rewrite: s
                .rename_fields
                .iter()
                .any(|(from, _)| *from == Field::Level),
            taken: Vec::new(),
            touched: Vec::new(),
        };
        if s.names.target.is_none() {
            let mut taken: Vec<String> =
                s.names.own_roots().iter().map(|r| r.to_string()).collect();
            taken.extend(s.names.static_roots.iter().cloned());
            taken.push(filter::CLASH_OBJECT.to_string());
            taken.extend(
                filter::ELASTICSEARCH_METADATA
                    .iter()
                    .map(|name| name.to_string()),
            );
            keys.taken = taken;
        }
        for field in s
            .drop_fields
            .iter()
            .chain(s.rename_fields.iter().map(|(from, _)| from))
        {
            if let Field::Parsed(p) = field {
                keys.touched.push(p.clone());
            }
        }
        for name in keys.levels.iter().chain(&keys.taken).chain(&keys.touched) {
            if let Some(&b) = name.as_bytes().first() {
                keys.first[usize::from(b)] = true;
            }
        }
        keys
    }

    #[inline]
    fn classify(&self, key: &str) -> TopKey {
        let Some(&b) = key.as_bytes().first() else {
            return TopKey::Rewrite;
        };
        if !self.first[usize::from(b)] {
            return TopKey::Plain;
        }
        let root = key.split('.').next().unwrap_or(key);
        if self.taken.iter().any(|t| t == root) {
            return TopKey::Rewrite;
        }
        let related = |p: &str| {
            let nested = |a: &str, b: &str| {
                a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'.'
            };
            p == key || nested(p, key) || nested(key, p)
        };
        if self.touched.iter().any(|p| related(p)) {
            return TopKey::Rewrite;
        }
        match self.levels.iter().position(|l| l == key) {
            Some(_) if self.level_rewrite => TopKey::Rewrite,
            Some(rank) => TopKey::Level(rank),
            None => TopKey::Plain,
        }
    }
}

/// The parsed form of one message.
enum Parsed<'m> {
    /// Not parsed.
    None,
    /// A JSON object shipped as written.
    Inline(Survey),
    /// Built (JSON that needs changes, or logfmt).
    Tree(Built<'m>),
}

/// The tailer's processor: settings, and scratch space reused across records.
#[derive(Debug)]
pub struct Processor {
    settings: Arc<ProcessingSettings>,
    top: TopKeys,
    metadata_paths: Vec<String>,
    surveyor: json::Surveyor,
    stack: Vec<u8>,
    keep: Vec<bool>,
    warnings: Throttle,
}

impl Processor {
    pub fn new(settings: ProcessingSettings) -> Self {
        Processor {
            top: TopKeys::new(&settings),
            metadata_paths: settings.metadata_paths(),
            settings: Arc::new(settings),
            surveyor: json::Surveyor::default(),
            stack: Vec::new(),
            keep: Vec::new(),
            warnings: Throttle::new(Duration::from_secs(30)),
        }
    }

    pub fn settings(&self) -> &ProcessingSettings {
        &self.settings
    }

    /// Resolves the file's hints if its pod may have changed (the cache version moved). Returns
    /// the new multiline rule name when it changed (`Some(None)`: no hint any more), for the
    /// tailer to hand to the file's line parser.
    pub fn resolve(
        &mut self,
        f: &mut FileProcessing,
        path: &Path,
        kubelet: Option<&KubeletName>,
        enricher: Option<&Enricher>,
    ) -> Option<Option<Arc<str>>> {
        let version = enricher.map_or(0, |e| e.cache.version());
        let first = f.version.is_none();
        if f.version == Some(version) {
            return None;
        }
        f.version = Some(version);
        let found = match (enricher, kubelet) {
            (Some(e), Some(k)) => e.cache.lookup(&k.namespace, &k.pod),
            _ => None,
        };
        let (hints, problems) = hints::resolve(
            &self.settings.rules,
            kubelet,
            found.as_ref().map(|f| &*f.pod),
        );
        for (annotation, reason) in problems {
            if let Some(suppressed) = self.warnings.admit() {
                tracing::warn!(path = %path.display(), annotation, %reason, suppressed, "Ignoring a pod annotation that does not parse; the configured parser and multiline rule apply.");
            }
        }
        let parser = hints
            .parser
            .as_ref()
            .map_or(self.settings.parser, |(p, _)| *p);
        if parser != f.parser || first {
            if let Some((_, from)) = &hints.parser {
                let from = source_name(from);
                tracing::info!(path = %path.display(), parser = parser.name(), from, "Message parser for this container.");
            }
            f.parser = parser;
        }
        let multiline = hints.multiline.map(|(m, _)| m);
        (multiline != f.multiline || (first && multiline.is_some())).then(|| {
            f.multiline = multiline.clone();
            multiline
        })
    }

    /// Processes the records of `batch` (read from the file whose state is `f` and whose
    /// per-file fields are `fragment`): parses, filters, and records in the batch what the
    /// encoder needs.
    pub fn process(
        &mut self,
        f: &mut FileProcessing,
        fragment: &Arc<str>,
        encoder: &Encoder,
        batch: &mut Batch,
    ) {
        let s = Arc::clone(&self.settings);
        if batch.records.is_empty()
            || (f.parser == ParserChoice::None && s.include.is_empty() && s.exclude.is_empty())
        {
            return;
        }
        self.refresh_metadata(f, fragment, encoder);
        let source = Arc::clone(&batch.source);
        let Batch {
            records,
            text,
            fields,
            processed,
            owns,
            ..
        } = batch;
        processed.clear();
        processed.reserve_exact(records.len());
        fields.clear();
        self.keep.clear();
        let mut any = false;
        let mut dropped = false;
        for r in records.iter() {
            let message = &text[r.message.clone()];
            let record = Record {
                message,
                base: r.message.start,
                stream: r.stream,
                path: &source.path,
                offset: r.offset,
            };
            match self.one(&s, f, &record, fields) {
                Some(p) => {
                    any |= p != Processed::default();
                    processed.push(p);
                    self.keep.push(true);
                }
                None => {
                    processed.push(Processed::default());
                    self.keep.push(false);
                    dropped = true;
                }
            }
        }
        if dropped {
            let mut keep = self.keep.iter();
            records.retain(|_| *keep.next().unwrap_or(&true));
            let mut keep = self.keep.iter();
            processed.retain(|_| *keep.next().unwrap_or(&true));
            if !owns.is_empty() {
                let mut keep = self.keep.iter();
                owns.retain(|_| *keep.next().unwrap_or(&true));
            }
        }
        if !any {
            // Nothing structured: the batch costs what it did before processing.
            *processed = Vec::new();
            *fields = String::new();
        }
    }

    fn refresh_metadata(&mut self, f: &mut FileProcessing, fragment: &Arc<str>, encoder: &Encoder) {
        if self.metadata_paths.is_empty()
            || f.meta_fragment
                .as_ref()
                .is_some_and(|m| Arc::ptr_eq(m, fragment))
        {
            return;
        }
        let doc = encoder.fragment_fields(fragment);
        f.meta = self
            .metadata_paths
            .iter()
            .map(|p| {
                let value = doc
                    .as_ref()
                    .and_then(|d| filter::value_at(d, p))
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                (p.clone(), value)
            })
            .collect();
        f.meta_fragment = Some(Arc::clone(fragment));
    }

    /// One record: `None` if a filter drops it.
    fn one(
        &mut self,
        s: &ProcessingSettings,
        f: &FileProcessing,
        r: &Record<'_>,
        fields: &mut String,
    ) -> Option<Processed> {
        // Filters that need no parsing first: a line they drop is never parsed.
        let mut included = s.include.is_empty();
        if !included {
            included = s
                .include
                .iter()
                .filter(|m| !m.after_parsing())
                .any(|m| pre_value(m, r, f).is_some_and(|v| m.regex.is_match(&v)));
        }
        if s.exclude
            .iter()
            .filter(|m| !m.after_parsing())
            .any(|m| pre_value(m, r, f).is_some_and(|v| m.regex.is_match(&v)))
        {
            telemetry::filtered(telemetry::FilterVerdict::Excluded);
            return None;
        }

        let parsed = self.parse(s, f.parser, r);
        let (level, level_key) = match &parsed {
            Parsed::None => (None, None),
            Parsed::Inline(survey) => (
                survey
                    .level
                    .clone()
                    .and_then(|range| level_literal(&r.message[range])),
                None,
            ),
            Parsed::Tree(built) => tree_level(&s.level_keys, &built.members),
        };

        // Filters on what parsing found.
        let value = |this: &mut Self, m: &Match| -> Option<String> {
            match &m.field {
                Field::Level => level.as_deref().map(|l| json::raw_text(l).into_owned()),
                Field::Parsed(path) => match &parsed {
                    Parsed::None => None,
                    Parsed::Inline(survey) => {
                        json::find_path(&r.message[survey.object.clone()], path, &mut this.stack)
                            .map(|raw| json::raw_text(raw).into_owned())
                    }
                    Parsed::Tree(built) => {
                        json::node_at(&built.members, path).map(|n| json::node_text(n).into_owned())
                    }
                },
                _ => None,
            }
        };
        if !included {
            included = s
                .include
                .iter()
                .filter(|m| m.after_parsing())
                .any(|m| value(self, m).is_some_and(|v| m.regex.is_match(&v)));
            if !included {
                telemetry::filtered(telemetry::FilterVerdict::NotIncluded);
                return None;
            }
        }
        if s.exclude
            .iter()
            .filter(|m| m.after_parsing())
            .any(|m| value(self, m).is_some_and(|v| m.regex.is_match(&v)))
        {
            telemetry::filtered(telemetry::FilterVerdict::Excluded);
            return None;
        }

        let level = if s.drop_fields.contains(&Field::Level) {
            None
        } else {
            level
        };
        Some(match parsed {
            Parsed::None => Processed::default(),
            Parsed::Inline(survey) => {
                let mut p = Processed::default();
                if let Some(level) = &level {
                    p.level = push(fields, level);
                }
                let span = if s.names.target.is_some() {
                    survey.object
                } else {
                    survey.inner
                };
                if !span.is_empty() {
                    if let Some(span) = Span::of(r.base + span.start..r.base + span.end) {
                        p.fields = FieldsOut::Inline;
                        p.members = span;
                    }
                }
                p.message = if s.keep_message {
                    MessageOut::Kept
                } else {
                    MessageOut::Dropped
                };
                p
            }
            Parsed::Tree(built) => {
                if built.adjusted.any() {
                    built.adjusted.report(r.path, r.offset);
                }
                assemble(s, built, level, level_key, fields)
            }
        })
    }

    fn parse<'m>(
        &mut self,
        s: &ProcessingSettings,
        parser: ParserChoice,
        r: &Record<'m>,
    ) -> Parsed<'m> {
        let outcome = match parser {
            ParserChoice::None => return Parsed::None,
            ParserChoice::Auto if !json::looks_like_object(r.message) => return Parsed::None,
            ParserChoice::Auto | ParserChoice::Json => {
                let top = &self.top;
                match self
                    .surveyor
                    .survey(r.message, s.bounds, &|k| top.classify(k))
                {
                    Ok(survey) if !survey.rewrite => Ok(Parsed::Inline(survey)),
                    Ok(_) => json::build(r.message, s.bounds).map(Parsed::Tree),
                    Err(e) => Err(e),
                }
            }
            ParserChoice::Logfmt => logfmt::parse(r.message, s.bounds).map(Parsed::Tree),
        };
        match outcome {
            Ok(parsed) => {
                telemetry::structured(if parser == ParserChoice::Logfmt {
                    telemetry::StructuredKind::Logfmt
                } else {
                    telemetry::StructuredKind::Json
                });
                parsed
            }
            Err(NotParsed::NotObject) if parser == ParserChoice::Auto => Parsed::None,
            Err(NotParsed::NotObject) => {
                telemetry::structured_invalid(
                    r.path,
                    r.offset,
                    parser.name(),
                    "not a JSON object or logfmt pairs",
                );
                Parsed::None
            }
            Err(NotParsed::Invalid(reason)) => {
                telemetry::structured_invalid(r.path, r.offset, parser.name(), reason);
                Parsed::None
            }
        }
    }
}

/// What processing needs to know of one record.
struct Record<'m> {
    message: &'m str,
    /// Where the message starts in the batch's text.
    base: usize,
    stream: Stream,
    path: &'m Path,
    offset: u64,
}

fn source_name(from: &HintSource) -> String {
    match from {
        HintSource::Annotation => "annotation".to_string(),
        HintSource::Rule(text) => format!("rule {text:?}"),
    }
}

/// The value of a field that needs no parsing.
fn pre_value<'r>(m: &Match, r: &Record<'r>, f: &'r FileProcessing) -> Option<Cow<'r, str>> {
    match &m.field {
        Field::Message => Some(Cow::Borrowed(r.message)),
        Field::Stream => r.stream.as_str().map(Cow::Borrowed),
        Field::Metadata(path) => f
            .meta
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, v)| v.as_deref())
            .map(Cow::Borrowed),
        _ => None,
    }
}

/// Appends `text` to `fields`; its span (empty if it would not fit a span).
fn push(fields: &mut String, text: &str) -> Span {
    let start = fields.len();
    fields.push_str(text);
    Span::of(start..fields.len()).unwrap_or_default()
}

/// pino's and bunyan's numeric levels.
fn numeric_level(n: u64) -> Option<&'static str> {
    Some(match n {
        10 => "trace",
        20 => "debug",
        30 => "info",
        40 => "warn",
        50 => "error",
        60 => "fatal",
        _ => return None,
    })
}

/// The level as a JSON string literal, from a level key's raw value: a string as it is, a
/// number as pino's name for it or as text; anything else is no level.
fn level_literal(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    match raw.as_bytes().first()? {
        b'"' => Some(Cow::Borrowed(raw)),
        b'-' | b'0'..=b'9' => Some(Cow::Owned(match raw.parse().ok().and_then(numeric_level) {
            Some(name) => format!("\"{name}\""),
            None => format!("\"{raw}\""),
        })),
        _ => None,
    }
}

/// The level among a tree's top-level members, and the key it came from.
fn tree_level<'m>(
    keys: &[String],
    members: &Members<'m>,
) -> (Option<Cow<'m, str>>, Option<String>) {
    for key in keys {
        let found = members.iter().rev().find(|(k, _)| k == key);
        let literal = match found {
            Some((_, Node::Raw(raw))) => level_literal(raw),
            Some((_, Node::Text(text))) => {
                let mut s = String::new();
                json::write_str(&mut s, text);
                Some(Cow::Owned(s))
            }
            _ => None,
        };
        if literal.is_some() {
            return (literal, Some(key.clone()));
        }
    }
    (None, None)
}

/// Renders a built record: drops, renames, placement under the target or at the top level.
fn assemble(
    s: &ProcessingSettings,
    built: Built<'_>,
    mut level: Option<Cow<'_, str>>,
    level_key: Option<String>,
    fields: &mut String,
) -> Processed {
    let Built {
        mut members,
        adjusted,
    } = built;
    for field in &s.drop_fields {
        if let Field::Parsed(path) = field {
            json::take_path(&mut members, path);
        }
    }
    let mut outside = Members::new();
    let mut replacement: Option<String> = None;
    for (from, to) in &s.rename_fields {
        let node = match from {
            Field::Level => level
                .take()
                .map(|l| Node::Text(Cow::Owned(json::raw_text(&l).into_owned()))),
            Field::Parsed(path) => json::take_path(&mut members, path),
            _ => None,
        };
        let Some(node) = node else { continue };
        match to {
            Field::Message => replacement = Some(json::node_text(&node).into_owned()),
            Field::Level => {
                let mut lit = String::new();
                json::write_str(&mut lit, &json::node_text(&node));
                level = Some(Cow::Owned(lit));
            }
            Field::Parsed(path) => json::set_path(&mut members, path, node),
            Field::Outside(path) => json::set_path(&mut outside, path, node),
            _ => {}
        }
    }
    let mut p = Processed::default();
    if let Some(level) = &level {
        p.level = push(fields, level);
    }
    let start = fields.len();
    let member = |fields: &mut String, key: &str, value: &Node<'_>| {
        json::write_str(fields, key);
        fields.push(':');
        json::render(value, fields);
        fields.push(',');
    };
    match &s.names.target {
        Some(target) => member(fields, target, &Node::Object(members)),
        None => {
            let mut clashes = Members::new();
            for (key, value) in members {
                if !s.keep_message && replacement.is_none() && key == s.names.message() {
                    replacement = Some(json::node_text(&value).into_owned());
                    continue;
                }
                if level_key.as_deref() == Some(key.as_ref()) && key == s.names.level() {
                    continue;
                }
                let root = key.split('.').next().unwrap_or(&key);
                if s.names.taken_at_top(root) {
                    clashes.push((key, value));
                } else {
                    member(fields, &key, &value);
                }
            }
            if !clashes.is_empty() {
                member(fields, filter::CLASH_OBJECT, &Node::Object(clashes));
            }
        }
    }
    for (key, value) in &outside {
        member(fields, key, value);
    }
    if fields.len() > start {
        if let Some(span) = Span::of(start..fields.len()) {
            p.fields = FieldsOut::Rendered;
            p.members = span;
        }
    }
    p.message = if s.keep_message || adjusted.any() {
        // A record a bound or a repair changed keeps its message: nothing is lost.
        MessageOut::Kept
    } else if let Some(text) = replacement {
        let mut lit = String::with_capacity(text.len() + 2);
        json::write_str(&mut lit, &text);
        p.replacement = push(fields, &lit);
        MessageOut::Replaced
    } else {
        MessageOut::Dropped
    };
    p
}

#[cfg(test)]
mod tests;
