//! Reading a `_bulk` body into operations, following Elasticsearch's `BulkRequestParser`.
//!
//! The body is NDJSON: an action line, then (except for `delete`) a source line. The rules are the
//! real parser's, including its quirks: a blank action line is skipped, an action whose source
//! line is missing at the very end of the body is dropped silently, a body that does not end with
//! a newline is refused, and anything malformed fails the whole request with a 400 that names the
//! line. Nothing here touches the stored data; `cluster` executes what this returns.

use serde_json::Value;

use super::errors::{self, EsError};
use super::json::{self, Kind, Node};
use super::Flavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Index,
    Update,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Index => "index",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// The body of an `update` action.
#[derive(Debug, Clone, Default)]
pub struct UpdateBody {
    pub doc: Option<Value>,
    pub upsert: Option<Value>,
    pub doc_as_upsert: bool,
    pub detect_noop: bool,
    pub script: bool,
}

/// One operation of a bulk request.
#[derive(Debug, Clone)]
pub struct Op<'a> {
    pub action: Action,
    /// `index` with `op_type: create` behaves as `create`.
    pub create: bool,
    pub index: Option<String>,
    pub id: Option<String>,
    pub pipeline: Option<String>,
    pub require_alias: bool,
    pub if_seq_no: Option<i64>,
    pub if_primary_term: Option<i64>,
    /// The source line of `create` and `index`, without its newline (and `\r`).
    pub source: Option<&'a [u8]>,
    pub update: Option<UpdateBody>,
}

/// Parameters an action line may carry, per flavour.
fn known_parameter(flavor: Flavor, name: &str) -> bool {
    const COMMON: &[&str] = &[
        "_index",
        "_id",
        "routing",
        "op_type",
        "version",
        "version_type",
        "if_seq_no",
        "if_primary_term",
        "retry_on_conflict",
        "pipeline",
        "_source",
        "require_alias",
    ];
    COMMON.contains(&name)
        || match flavor {
            Flavor::Elasticsearch8 => matches!(
                name,
                "dynamic_templates" | "require_data_stream" | "list_executed_pipelines"
            ),
            Flavor::Elasticsearch7 => matches!(name, "dynamic_templates" | "_type"),
            Flavor::OpenSearch2 => false,
        }
}

fn malformed(line: usize, what: String) -> EsError {
    errors::illegal_argument(format!("Malformed action/metadata line [{line}], {what}"))
}

fn unterminated() -> EsError {
    errors::illegal_argument("The bulk request must be terminated by a newline [\\n]")
}

fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Kind::String(s) => Some(s.clone()),
        Kind::Number { text, .. } => Some(text.clone()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses the body of `POST [/{index}]/_bulk`. The body must not be empty (the caller answers
/// that case). Returns every operation, or the error that fails the whole request.
pub fn parse<'a>(
    body: &'a [u8],
    flavor: Flavor,
    default_index: Option<&str>,
    default_pipeline: Option<&str>,
) -> Result<Vec<Op<'a>>, EsError> {
    let mut ops = Vec::new();
    let mut line = 0usize;
    let mut from = 0usize;
    let next_marker = |from: usize| -> Result<Option<usize>, EsError> {
        match memchr::memchr(b'\n', &body[from..]) {
            Some(i) => Ok(Some(from + i)),
            None if from != body.len() => Err(unterminated()),
            None => Ok(None),
        }
    };
    while let Some(marker) = next_marker(from)? {
        line += 1;
        let action_line = &body[from..marker];
        from = marker + 1;
        let Some((action, params)) = read_action(action_line, line, flavor)? else {
            continue;
        };
        let mut op = Op {
            action: action.unwrap_or(Action::Index),
            create: action == Some(Action::Create),
            index: default_index.map(str::to_string),
            id: None,
            pipeline: default_pipeline.map(str::to_string),
            require_alias: false,
            if_seq_no: None,
            if_primary_term: None,
            source: None,
            update: None,
        };
        if let Some(params) = &params {
            apply_params(&mut op, params, line, flavor)?;
        }
        if op.action == Action::Delete && action.is_some() {
            ops.push(op);
            continue;
        }
        let Some(marker) = next_marker(from)? else {
            // The real parser stops here: an action without its source line is dropped.
            break;
        };
        line += 1;
        let mut source = &body[from..marker];
        if source.last() == Some(&b'\r') {
            source = &source[..source.len() - 1];
        }
        from = marker + 1;
        match action {
            // 7.x and OpenSearch skip an unknown action together with its source line.
            None => continue,
            Some(Action::Update) => op.update = Some(read_update(source, flavor)?),
            Some(_) => op.source = Some(source),
        }
        ops.push(op);
    }
    Ok(ops)
}

/// Reads an action line: `None` for a blank line; the action (`None` for an unknown action that
/// this flavour tolerates) and its parameters otherwise.
#[allow(clippy::type_complexity)]
fn read_action(
    input: &[u8],
    line: usize,
    flavor: Flavor,
) -> Result<Option<(Option<Action>, Option<Vec<(String, Node)>>)>, EsError> {
    let syntax =
        |e: json::SyntaxError| errors::x_content(flavor, &json::location(input, e.at), &e.message);
    let mut pos = input
        .iter()
        .position(|b| !b" \t\r".contains(b))
        .unwrap_or(input.len());
    if pos == input.len() {
        return Ok(None);
    }
    if input[pos] != b'{' {
        let token = json::next_token(input, pos)
            .map_err(syntax)?
            .unwrap_or("END");
        return Err(malformed(
            line,
            format!("expected START_OBJECT but found [{token}]"),
        ));
    }
    pos += 1;
    let skip_ws = |p: usize| {
        input[p..]
            .iter()
            .position(|b| !b" \t\r".contains(b))
            .map_or(input.len(), |i| p + i)
    };
    pos = skip_ws(pos);
    match input.get(pos) {
        Some(b'}') => {
            return Err(malformed(
                line,
                "expected FIELD_NAME but found [END_OBJECT]".into(),
            ));
        }
        Some(b'"') => {}
        _ => {
            // Let the JSON reader word the syntax error.
            let e = json::parse_first(input).err().unwrap_or(json::SyntaxError {
                at: pos,
                message: "Unexpected end-of-input: expected close marker for Object".into(),
            });
            return Err(syntax(e));
        }
    }
    // Read `"name": value` by parsing `{"name": value}` lazily: the key, then the value alone.
    let key_end = find_string_end(input, pos).ok_or_else(|| {
        syntax(json::SyntaxError {
            at: input.len(),
            message: "Unexpected end-of-input: was expecting closing quote for a string value"
                .into(),
        })
    })?;
    let name: String = match json::parse_first(&input[pos..=key_end]).map_err(|mut e| {
        e.at += pos;
        syntax(e)
    })? {
        Some((
            Node {
                value: Kind::String(s),
                ..
            },
            _,
        )) => s,
        _ => String::new(),
    };
    pos = skip_ws(key_end + 1);
    if input.get(pos) != Some(&b':') {
        let e = json::parse_first(input).err().unwrap_or(json::SyntaxError {
            at: pos,
            message: "Unexpected end-of-input: expected close marker for Object".into(),
        });
        return Err(syntax(e));
    }
    pos = skip_ws(pos + 1);
    let action = match name.as_str() {
        "create" => Some(Action::Create),
        "index" => Some(Action::Index),
        "update" => Some(Action::Update),
        "delete" => Some(Action::Delete),
        other => match flavor {
            Flavor::Elasticsearch8 => {
                return Err(malformed(
                    line,
                    format!(
                        "expected field [create], [delete], [index] or [update] but found [{other}]"
                    ),
                ));
            }
            Flavor::Elasticsearch7 | Flavor::OpenSearch2 => None,
        },
    };
    let value = match json::parse_first(&input[pos..]) {
        Ok(Some((node, _))) => node,
        Ok(None) => {
            return Err(syntax(json::SyntaxError {
                at: input.len(),
                message: "Unexpected end-of-input: expected a value".into(),
            }));
        }
        Err(mut e) => {
            e.at += pos;
            return Err(syntax(e));
        }
    };
    // Anything after the parameters object (a missing closing brace, extra keys) is tolerated
    // with a deprecation warning by 8.x and ignored by older versions.
    match value.value {
        Kind::Object(members) => Ok(Some((
            action,
            Some(members.into_iter().map(|m| (m.key, m.value)).collect()),
        ))),
        other => Err(malformed(
            line,
            format!(
                "expected START_OBJECT or END_OBJECT but found [{}]",
                json::token_name(&other)
            ),
        )),
    }
}

/// Offset of the closing quote of the string starting at `start`.
fn find_string_end(input: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn apply_params(
    op: &mut Op<'_>,
    params: &[(String, Node)],
    line: usize,
    flavor: Flavor,
) -> Result<(), EsError> {
    for (name, value) in params {
        match &value.value {
            Kind::Null => continue,
            Kind::Array(_) => {
                return Err(malformed(
                    line,
                    format!("expected a simple value for field [{name}] but found [START_ARRAY]"),
                ));
            }
            Kind::Object(_) if name == "_source" || name == "dynamic_templates" => continue,
            Kind::Object(_) => {
                return Err(malformed(
                    line,
                    format!("expected a simple value for field [{name}] but found [START_OBJECT]"),
                ));
            }
            _ => {}
        }
        if !known_parameter(flavor, name) {
            return Err(errors::illegal_argument(format!(
                "Action/metadata line [{line}] contains an unknown parameter [{name}]"
            )));
        }
        let text = scalar_text(value).unwrap_or_default();
        let number = || {
            text.parse::<i64>()
                .map_err(|_| errors::illegal_argument(format!("For input string: \"{text}\"")))
        };
        match name.as_str() {
            "_index" => op.index = Some(text.clone()),
            "_id" => op.id = Some(text.clone()),
            "op_type" if op.action == Action::Index => op.create = text == "create",
            "pipeline" => op.pipeline = Some(text.clone()),
            "require_alias" => op.require_alias = text == "true",
            "if_seq_no" => op.if_seq_no = Some(number()?),
            "if_primary_term" => op.if_primary_term = Some(number()?),
            "version" | "version_type" if op.action == Action::Update => {
                return Err(errors::illegal_argument(
                    "Update requests do not support versioning. Please use `if_seq_no` and `if_primary_term` instead",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_update(source: &[u8], flavor: Flavor) -> Result<UpdateBody, EsError> {
    let syntax =
        |e: json::SyntaxError| errors::x_content(flavor, &json::location(source, e.at), &e.message);
    let node = match json::parse_first(source).map_err(syntax)? {
        Some((node, _)) => node,
        None => return Ok(UpdateBody::default()),
    };
    let Kind::Object(members) = &node.value else {
        return Err(errors::x_content(
            flavor,
            &json::location(source, node.start),
            &format!(
                "[UpdateRequest] Expected START_OBJECT but was: {}",
                json::token_name(&node.value)
            ),
        ));
    };
    let mut body = UpdateBody {
        detect_noop: true,
        ..UpdateBody::default()
    };
    for m in members {
        match m.key.as_str() {
            "doc" => body.doc = Some(m.value.to_value()),
            "upsert" => body.upsert = Some(m.value.to_value()),
            "doc_as_upsert" => body.doc_as_upsert = matches!(m.value.value, Kind::Bool(true)),
            "detect_noop" => body.detect_noop = !matches!(m.value.value, Kind::Bool(false)),
            "script" => body.script = true,
            "scripted_upsert" | "_source" | "lang" | "params" => {}
            other => {
                return Err(errors::x_content(
                    flavor,
                    &json::location(source, m.key_at),
                    &format!("[UpdateRequest] unknown field [{other}]"),
                ));
            }
        }
    }
    Ok(body)
}

/// `BulkRequest.validate()`: problems found in any operation fail the whole request.
pub fn validate(ops: &[Op<'_>]) -> Result<(), EsError> {
    let mut problems = Vec::new();
    if ops.is_empty() {
        problems.push("no requests added".to_string());
    }
    for op in ops {
        if op.index.as_deref().is_none_or(str::is_empty) {
            problems.push("index is missing".into());
        }
        match (&op.action, &op.id) {
            (Action::Update | Action::Delete, None) => problems.push("id is missing".into()),
            (_, Some(id)) if id.is_empty() => {
                problems.push("if _id is specified it must not be empty".into())
            }
            (_, Some(id)) if id.len() > 512 => problems.push(format!(
                "id [{id}] is too long, must be no longer than 512 bytes but was: {}",
                id.len()
            )),
            _ => {}
        }
        if let Some(u) = &op.update {
            if u.doc.is_none() && !u.script {
                problems.push("script or doc is missing".into());
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(errors::validation(&problems))
    }
}
