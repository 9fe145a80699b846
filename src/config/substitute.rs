//! `${VAR}` and `${VAR:-default}` in the configuration file, replaced from the environment, so a
//! ConfigMap can take a Secret's value (`password = "${ES_PASSWORD}"`) in any file format.
//!
//! Rules, as a shell has them: `${VAR}` is the variable's value (empty if set but empty) and an
//! error if it is unset; `${VAR:-default}` is the default when the variable is unset or empty;
//! `$${` is a literal `${`; any other `$` is left alone. A reference does not span lines, and
//! lines that are comments (first non-blank character `#`, in TOML and YAML alike) are left
//! alone, so a commented-out example cannot fail a load. Every problem is reported, with its
//! line.
//!
//! Values go into the parsed values, never into the text: a value holding `"`, `\`, `'`, `#`
//! or a newline is taken exactly as it is, and cannot break the file or change its meaning. So
//! the text is parsed with each reference replaced by a placeholder (letters and digits, valid
//! in any string and in a YAML plain scalar), and [`Substituted::fill`] then puts the values in
//! place of the placeholders in every string of the parsed tree. A value is never substituted
//! again. A string that is exactly one reference, for a key that takes a number or a boolean
//! (`port: ${PORT}` in YAML, `max_in_flight = "${N}"` in TOML), is read as one, as a `LOGSHIP_*`
//! variable would be.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::error::ConfigError;
use super::schema::{Kind, Schema};

/// The file's text with every reference replaced by a placeholder, and the values that go in
/// their place.
#[derive(Debug)]
pub struct Substituted {
    /// The text to parse.
    pub text: String,
    /// `lsref<nonce>n`: what every placeholder starts with (then its index and `z`).
    marker: String,
    /// The value of placeholder `i`, and the reference it stands for (for errors).
    values: Vec<(String, String)>,
}

/// The text with every reference replaced by a placeholder, or every reference that could not
/// be resolved.
pub fn substitute(
    text: &str,
    env: &HashMap<String, String>,
    path: &Path,
) -> Result<Substituted, Vec<ConfigError>> {
    // A marker the text does not hold, so that only placeholders are ever replaced.
    let marker = loop {
        let marker = format!("lsref{:016x}n", fastrand::u64(..));
        if !text.contains(&marker) {
            break marker;
        }
    };
    let mut out = Substituted {
        text: String::with_capacity(text.len()),
        marker,
        values: Vec::new(),
    };
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.text.push_str(line);
            continue;
        }
        let number = index + 1;
        let mut error = |e: Problem| errors.push(e.at(path, number));
        substitute_line(line, env, &mut out, &mut error);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl Substituted {
    /// Puts the values in place of the placeholders in every key and string of `tree` (the
    /// parsed file), reading a string that is exactly one placeholder as a number or a boolean
    /// where the key takes one. Returns what could not be read.
    pub fn fill(&self, tree: &mut Map<String, Value>, schema: &Schema) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !self.values.is_empty() {
            self.fill_table(tree, "", schema, &mut errors);
        }
        errors
    }

    fn fill_table(
        &self,
        table: &mut Map<String, Value>,
        prefix: &str,
        schema: &Schema,
        errors: &mut Vec<ConfigError>,
    ) {
        let entries = std::mem::take(table);
        for (name, mut value) in entries {
            let name = self.replace(&name);
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            self.fill_value(&mut value, &key, schema, errors);
            table.insert(name, value);
        }
    }

    fn fill_value(
        &self,
        value: &mut Value,
        key: &str,
        schema: &Schema,
        errors: &mut Vec<ConfigError>,
    ) {
        match value {
            Value::String(text) => {
                let typed = match (self.whole(text), schema.kind(key)) {
                    (Some((v, reference)), Some(kind @ (Kind::Number | Kind::Bool))) => {
                        Some(super::env::read(v, kind).map_err(|why| {
                            ConfigError::invalid(key.to_owned(), format!("${{{reference}}}: {why}"))
                        }))
                    }
                    _ => None,
                };
                match typed {
                    Some(Ok(v)) => *value = v,
                    Some(Err(e)) => errors.push(e),
                    None => *text = self.replace(text),
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.fill_value(item, key, schema, errors);
                }
            }
            Value::Object(table) => self.fill_table(table, key, schema, errors),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// The value and reference of a string that is exactly one placeholder.
    fn whole(&self, text: &str) -> Option<(&str, &str)> {
        let index = text
            .strip_prefix(&self.marker)?
            .strip_suffix('z')?
            .parse::<usize>()
            .ok()?;
        self.values
            .get(index)
            .map(|(value, reference)| (value.as_str(), reference.as_str()))
    }

    /// `text` with every placeholder replaced by its value.
    fn replace(&self, text: &str) -> String {
        if self.values.is_empty() || !text.contains(&self.marker) {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(&self.marker) {
            out.push_str(&rest[..at]);
            let after = &rest[at + self.marker.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let value = after[..digits]
                .parse::<usize>()
                .ok()
                .filter(|_| after[digits..].starts_with('z'))
                .and_then(|i| self.values.get(i));
            match value {
                Some((value, _)) => {
                    out.push_str(value);
                    rest = &after[digits + 1..];
                }
                None => {
                    out.push_str(&self.marker);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// What is wrong with one reference.
enum Problem {
    Unset(String),
    Malformed(String),
}

impl Problem {
    fn at(self, path: &Path, line: usize) -> ConfigError {
        let path = path.to_path_buf();
        match self {
            Problem::Unset(var) => ConfigError::UnsetVariable { path, line, var },
            Problem::Malformed(message) => ConfigError::BadReference {
                path,
                line,
                message,
            },
        }
    }
}

fn substitute_line(
    line: &str,
    env: &HashMap<String, String>,
    subst: &mut Substituted,
    error: &mut dyn FnMut(Problem),
) {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        subst.text.push_str(&rest[..at]);
        let from = &rest[at..];
        if let Some(after) = from.strip_prefix("$${") {
            subst.text.push_str("${");
            rest = after;
        } else if let Some(after) = from.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                error(Problem::Malformed(format!(
                    "{:?} has no closing }} (write $${{ for a literal ${{)",
                    from.trim_end()
                )));
                subst.text.push_str(from);
                return;
            };
            let reference = &after[..end];
            match resolve(reference, env) {
                Ok(value) => {
                    let index = subst.values.len();
                    subst.text.push_str(&subst.marker);
                    subst.text.push_str(&index.to_string());
                    subst.text.push('z');
                    subst.values.push((value.to_owned(), reference.to_owned()));
                }
                Err(problem) => error(problem),
            }
            rest = &after[end + 1..];
        } else {
            subst.text.push('$');
            rest = &from[1..];
        }
    }
    subst.text.push_str(rest);
}

/// The value of what is inside `${...}`.
fn resolve<'a>(reference: &'a str, env: &'a HashMap<String, String>) -> Result<&'a str, Problem> {
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    if !is_name(name) {
        return Err(Problem::Malformed(format!(
            "${{{reference}}} is not a variable reference: a name is letters, digits and _, \
             not starting with a digit (write $${{ for a literal ${{)"
        )));
    }
    match (env.get(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(Problem::Unset(name.to_string())),
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("HOST", "es-1"), ("PORT", "9200"), ("EMPTY", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The text with the values put in place of the placeholders (what the parser's strings
    /// end up holding).
    fn sub(text: &str) -> Result<String, Vec<String>> {
        substitute(text, &env(), Path::new("/etc/logship.toml"))
            .map(|s| s.replace(&s.text))
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn references_are_replaced() {
        let cases = [
            (
                "url = \"http://${HOST}:${PORT}\"",
                "url = \"http://es-1:9200\"",
            ),
            ("a = \"${MISSING:-fallback}\"", "a = \"fallback\""),
            ("a = \"${HOST:-fallback}\"", "a = \"es-1\""),
            ("a = \"${EMPTY:-fallback}\"", "a = \"fallback\""),
            ("a = \"${EMPTY}\"", "a = \"\""),
            ("a = \"${MISSING:-}\"", "a = \"\""),
            ("a = \"${MISSING:-a:-b}\"", "a = \"a:-b\""),
            ("a = \"$${HOST}\"", "a = \"${HOST}\""),
            ("a = \"$HOST $ 5$ $$\"", "a = \"$HOST $ 5$ $$\""),
            ("a = \"${HOST}${HOST}\"", "a = \"es-1es-1\""),
            ("# b = \"${MISSING}\"\n", "# b = \"${MISSING}\"\n"),
            ("  # ${", "  # ${"),
            ("a = 1\r\nb = \"${PORT}\"\r\n", "a = 1\r\nb = \"9200\"\r\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(sub(text).as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn values_are_not_substituted_again() {
        let mut env = env();
        env.insert("TRICKY".into(), "${HOST}".into());
        let out = substitute("a = \"${TRICKY}\"", &env, Path::new("f.toml")).unwrap();
        assert_eq!(out.replace(&out.text), "a = \"${HOST}\"");
    }

    #[test]
    fn every_bad_reference_is_reported_with_its_line() {
        let text = "a = \"${HOST}\"\nb = \"${NOPE}\"\nc = \"${1X}\" d = \"${}\"\ne = \"${OPEN\"\nf = \"${ALSO_NOPE:x}\"\n";
        let errors = sub(text).unwrap_err();
        assert_eq!(
            errors,
            [
                "configuration file /etc/logship.toml, line 2: ${NOPE} is not set and has no default \
                 (write ${NOPE:-default} to give one)",
                "configuration file /etc/logship.toml, line 3: ${1X} is not a variable reference: \
                 a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)",
                "configuration file /etc/logship.toml, line 3: ${} is not a variable reference: \
                 a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)",
                "configuration file /etc/logship.toml, line 4: \"${OPEN\\\"\" has no closing } \
                 (write $${ for a literal ${)",
                "configuration file /etc/logship.toml, line 5: ${ALSO_NOPE:x} is not a variable \
                 reference: a name is letters, digits and _, not starting with a digit \
                 (write $${ for a literal ${)",
            ]
        );
    }
}
