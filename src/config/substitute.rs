//! `${VAR}` and `${VAR:-default}` in the configuration file, replaced from the environment in the
//! file's text before it is parsed, so a ConfigMap can take a Secret's value
//! (`password = "${ES_PASSWORD}"`) in any file format.
//!
//! Rules, as a shell has them: `${VAR}` is the variable's value (empty if set but empty) and an
//! error if it is unset; `${VAR:-default}` is the default when the variable is unset or empty;
//! `$${` is a literal `${`; any other `$` is left alone. Values are inserted as they are, not
//! quoted, and not substituted again. A reference does not span lines, and lines that are
//! comments (first non-blank character `#`, in TOML and YAML alike) are left alone, so a
//! commented-out example cannot fail a load. Every problem is reported, with its line.

use std::collections::HashMap;
use std::path::Path;

use super::error::ConfigError;

/// The text with every reference replaced, or every reference that could not be.
pub fn substitute(
    text: &str,
    env: &HashMap<String, String>,
    path: &Path,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
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
    out: &mut String,
    error: &mut dyn FnMut(Problem),
) {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let from = &rest[at..];
        if let Some(after) = from.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                error(Problem::Malformed(format!(
                    "{:?} has no closing }} (write $${{ for a literal ${{)",
                    from.trim_end()
                )));
                out.push_str(from);
                return;
            };
            let reference = &after[..end];
            match resolve(reference, env) {
                Ok(value) => out.push_str(value),
                Err(problem) => error(problem),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &from[1..];
        }
    }
    out.push_str(rest);
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

    fn sub(text: &str) -> Result<String, Vec<String>> {
        substitute(text, &env(), Path::new("/etc/logship.toml"))
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
        assert_eq!(out, "a = \"${HOST}\"");
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
