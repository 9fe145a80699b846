//! logfmt messages -> fields: `level=info msg="request done" took=12ms cached`.
//!
//! Pairs are separated by whitespace; a key is any run of printable characters without `=` or
//! `"`; a value is quoted (`"..."`, with `\"`, `\\`, `\n`, `\r` and `\t` decoded, any other
//! backslash kept) or runs to the next whitespace, and may be empty (`key=`). A key without `=`
//! is a flag and becomes `true`. Values are strings: logfmt has no types, and guessing them
//! would let one line map a field as a number and the next as text. A message is logfmt when it
//! is pairs throughout and at least one has a value; anything else is left as it was. The same
//! bounds as for JSON apply (fields, key length); duplicate keys: the last one wins.

use std::borrow::Cow;

use super::json::{dedup, Adjusted, Bounds, Built, Members, Node, NotParsed};

/// Parses `message` as logfmt.
pub fn parse(message: &str, bounds: Bounds) -> Result<Built<'_>, NotParsed> {
    let b = message.as_bytes();
    let mut i = 0;
    let mut members = Members::new();
    let mut adjusted = Adjusted::default();
    let mut pairs = 0;
    let mut fields = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        let key = &message[key_start..i];
        if key.is_empty() {
            return Err(NotParsed::Invalid(if b[i] == b'=' {
                "a value without a key"
            } else {
                "a quote where a key belongs"
            }));
        }
        let value = if i < b.len() && b[i] == b'=' {
            i += 1;
            pairs += 1;
            if i < b.len() && b[i] == b'"' {
                let (text, end) = quoted(message, i + 1)?;
                i = end;
                if i < b.len() && !b[i].is_ascii_whitespace() {
                    return Err(NotParsed::Invalid("text right after a quoted value"));
                }
                Node::Text(text)
            } else {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                Node::Text(Cow::Borrowed(&message[start..i]))
            }
        } else if i < b.len() && b[i] == b'"' {
            return Err(NotParsed::Invalid("a quote inside a key"));
        } else {
            Node::Raw("true")
        };
        if key.len() > bounds.max_key_bytes {
            adjusted.key_bytes = true;
            continue;
        }
        if fields >= bounds.max_fields {
            adjusted.fields = true;
            continue;
        }
        fields += 1;
        let name = if key.starts_with('.') || key.ends_with('.') || key.contains("..") {
            adjusted.key_names = true;
            Cow::Owned(key.replace('.', "_"))
        } else {
            Cow::Borrowed(key)
        };
        members.push((name, value));
    }
    if pairs == 0 {
        return Err(NotParsed::NotObject);
    }
    if dedup(&mut members) {
        adjusted.duplicate_keys = true;
    }
    Ok(Built { members, adjusted })
}

/// The quoted value whose body starts at `start`: its text and the index after the closing
/// quote.
fn quoted(message: &str, start: usize) -> Result<(Cow<'_, str>, usize), NotParsed> {
    let b = message.as_bytes();
    let mut i = start;
    let mut owned: Option<String> = None;
    let mut copied = start;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let text = match owned {
                    Some(mut s) => {
                        s.push_str(&message[copied..i]);
                        Cow::Owned(s)
                    }
                    None => Cow::Borrowed(&message[start..i]),
                };
                return Ok((text, i + 1));
            }
            b'\\' if i + 1 < b.len() => {
                let decoded = match b[i + 1] {
                    b'"' => Some('"'),
                    b'\\' => Some('\\'),
                    b'n' => Some('\n'),
                    b'r' => Some('\r'),
                    b't' => Some('\t'),
                    _ => None,
                };
                if let Some(c) = decoded {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&message[copied..i]);
                    s.push(c);
                    copied = i + 2;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(NotParsed::Invalid("unterminated quoted value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::json::render;
    use serde_json::{json, Value};

    const BOUNDS: Bounds = Bounds::DEFAULT;

    fn doc(message: &str) -> Value {
        let built = parse(message, BOUNDS).unwrap();
        let mut out = String::new();
        render(&Node::Object(built.members), &mut out);
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn pairs_quotes_flags_and_empty_values() {
        assert_eq!(
            doc(r#"level=info msg="request \"done\"\tok" took=12ms cached empty= path=/a=b"#),
            json!({"level":"info","msg":"request \"done\"\tok","took":"12ms","cached":true,"empty":"","path":"/a=b"})
        );
        assert_eq!(
            doc("  a=1   a=2 \u{e9}=\u{1f600} "),
            json!({"a":"2","\u{e9}":"\u{1f600}"})
        );
        assert_eq!(doc(r#"p="C:\dir\n""#), json!({"p": "C:\\dir\n"}));
    }

    #[test]
    fn what_is_not_logfmt() {
        for m in ["", "just some words", "GET /index.html"] {
            assert_eq!(parse(m, BOUNDS).unwrap_err(), NotParsed::NotObject, "{m:?}");
        }
        for m in [
            "=value",
            "a=\"unterminated",
            "a=\"x\"y",
            "a=1 \"b\"=2",
            "ke\"y=1",
        ] {
            assert!(
                matches!(parse(m, BOUNDS), Err(NotParsed::Invalid(_))),
                "{m:?}"
            );
        }
    }

    #[test]
    fn bounds_apply() {
        let line: Vec<String> = (0..300).map(|i| format!("k{i}={i}")).collect();
        let line = line.join(" ");
        let built = parse(&line, BOUNDS).unwrap();
        assert_eq!(built.members.len(), 200);
        assert!(built.adjusted.fields);
        let long = format!("{}=1 ok=2", "k".repeat(300));
        let built = parse(&long, BOUNDS).unwrap();
        assert!(built.adjusted.key_bytes);
        assert_eq!(built.members.len(), 1);
    }
}
