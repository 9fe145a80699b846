//! A JSON reader that keeps byte positions, because Elasticsearch's errors carry them.
//!
//! Elasticsearch reads documents with Jackson and reports a failure at the token where it
//! happened (`[1:14] failed to parse field ...`, `Can't get text on a START_OBJECT at 1:8`).
//! `serde_json` forgets where a value was, so documents and action lines are read here into a
//! small tree that remembers the byte offset of every key, every value's first byte and, for
//! objects and arrays, their closing byte. Syntax errors are worded like Jackson's, with duplicate
//! keys rejected as Elasticsearch configures it (`STRICT_DUPLICATE_DETECTION`). Columns are 1-based
//! byte columns, as Jackson counts them on byte input. It never allocates beyond the tree it
//! returns and never recurses deeper than [`MAX_DEPTH`].

use serde_json::{Map, Number, Value};

/// Jackson's default nesting limit (`StreamReadConstraints.DEFAULT_MAX_DEPTH`).
pub const MAX_DEPTH: usize = 1000;

/// A value and where it is in the input.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Kind,
    /// Offset of the value's first byte.
    pub start: usize,
    /// Offset of the closing `}` or `]` of an object or array; `start` for scalars.
    pub end: usize,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    String(String),
    /// The number's text as written, and whether it has a fraction or an exponent.
    Number {
        text: String,
        float: bool,
    },
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub key: String,
    /// Offset of the key's opening quote.
    pub key_at: usize,
    pub value: Node,
}

/// A syntax error, worded like Jackson's.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

/// XContent's name for the token a value starts with, as Elasticsearch prints it.
pub fn token_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Object(_) => "START_OBJECT",
        Kind::Array(_) => "START_ARRAY",
        Kind::String(_) => "VALUE_STRING",
        Kind::Number { .. } => "VALUE_NUMBER",
        Kind::Bool(_) => "VALUE_BOOLEAN",
        Kind::Null => "VALUE_NULL",
    }
}

/// `line:column` of a byte offset, 1-based, as XContent locations print.
pub fn location(input: &[u8], at: usize) -> String {
    let at = at.min(input.len());
    let line = 1 + input[..at].iter().filter(|&&b| b == b'\n').count();
    let line_start = input[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    format!("{line}:{}", at - line_start + 1)
}

/// Reads the first value of `input`. Returns it and the offset just after it; what follows is the
/// caller's to judge. `Ok(None)` means the input holds only whitespace.
pub fn parse_first(input: &[u8]) -> Result<Option<(Node, usize)>, SyntaxError> {
    let mut reader = Reader { input, pos: 0 };
    reader.skip_ws();
    if reader.pos == input.len() {
        return Ok(None);
    }
    let node = reader.value(0)?;
    Ok(Some((node, reader.pos)))
}

/// The token that starts at `at` (after whitespace), for "found extra data" messages; a syntax
/// error when what is there is not a token at all.
pub fn next_token(input: &[u8], at: usize) -> Result<Option<&'static str>, SyntaxError> {
    let mut reader = Reader { input, pos: at };
    reader.skip_ws();
    let Some(&b) = input.get(reader.pos) else {
        return Ok(None);
    };
    Ok(Some(match b {
        b'{' => "START_OBJECT",
        b'[' => "START_ARRAY",
        b'}' | b']' => return Err(reader.unexpected(b, "expected a value")),
        _ => token_name(&reader.value(MAX_DEPTH - 1)?.value),
    }))
}

impl Node {
    /// The value as `serde_json` holds it, for storage and previews.
    pub fn to_value(&self) -> Value {
        match &self.value {
            Kind::Object(members) => {
                let mut map = Map::new();
                for m in members {
                    map.insert(m.key.clone(), m.value.to_value());
                }
                Value::Object(map)
            }
            Kind::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Kind::String(s) => Value::String(s.clone()),
            Kind::Number { text, .. } => serde_json::from_str::<Number>(text)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Null => Value::Null,
        }
    }

    /// Java's `toString()` of the value as XContent reads it (`Map`, `List`, `String`, `Long`,
    /// `Double`), which is what Elasticsearch puts in "Preview of field's value".
    pub fn java_preview(&self) -> String {
        match &self.value {
            Kind::Object(members) => {
                let inner: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}={}", m.key, m.value.java_preview()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            Kind::Array(items) => {
                let inner: Vec<String> = items.iter().map(Node::java_preview).collect();
                format!("[{}]", inner.join(", "))
            }
            Kind::String(s) => s.clone(),
            Kind::Number { text, float: false } => text.clone(),
            Kind::Number { text, float: true } => java_double(text.parse().unwrap_or(f64::NAN)),
            Kind::Bool(b) => b.to_string(),
            Kind::Null => "null".to_string(),
        }
    }
}

/// `Double.toString`: plain notation with at least one decimal between 10^-3 and 10^7,
/// `d.dddE±n` outside it.
pub fn java_double(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let abs = v.abs();
    if abs == 0.0 || (1e-3..1e7).contains(&abs) {
        let s = format!("{v}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exp}")
    }
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eof(&self, what: &str) -> SyntaxError {
        SyntaxError {
            at: self.input.len(),
            message: format!("Unexpected end-of-input: {what}"),
        }
    }

    fn unexpected(&self, b: u8, what: &str) -> SyntaxError {
        let shown = if b.is_ascii_graphic() || b == b' ' {
            format!("'{}'", b as char)
        } else {
            format!("(CTRL-CHAR, code {b})")
        };
        SyntaxError {
            at: self.pos,
            message: format!("Unexpected character ({shown} (code {b})): {what}"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(SyntaxError {
                at: self.pos,
                message: format!(
                    "Document nesting depth ({}) exceeds the maximum allowed ({MAX_DEPTH})",
                    depth + 1
                ),
            });
        }
        let start = self.pos;
        let Some(&b) = self.input.get(self.pos) else {
            return Err(self.eof("expected a value"));
        };
        let value = match b {
            b'{' => return self.object(depth),
            b'[' => return self.array(depth),
            b'"' => Kind::String(self.string()?),
            b'-' | b'0'..=b'9' => self.number()?,
            b't' | b'f' | b'n' => self.literal()?,
            b'}' | b']' | b',' => return Err(self.unexpected(b, "expected a value")),
            _ => {
                if b.is_ascii_alphabetic() {
                    return Err(self.unrecognized());
                }
                return Err(self.unexpected(
                    b,
                    "expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false')",
                ));
            }
        };
        Ok(Node {
            value,
            start,
            end: start,
        })
    }

    fn unrecognized(&self) -> SyntaxError {
        let word: String = self.input[self.pos..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .map(|&b| b as char)
            .collect();
        SyntaxError {
            at: self.pos,
            message: format!(
                "Unrecognized token '{word}': was expecting (JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
            ),
        }
    }

    fn literal(&mut self) -> Result<Kind, SyntaxError> {
        for (word, kind) in [
            ("true", Kind::Bool(true)),
            ("false", Kind::Bool(false)),
            ("null", Kind::Null),
        ] {
            let end = self.pos + word.len();
            if self.input.get(self.pos..end) == Some(word.as_bytes())
                && !self
                    .input
                    .get(end)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                self.pos = end;
                return Ok(kind);
            }
        }
        Err(self.unrecognized())
    }

    fn number(&mut self) -> Result<Kind, SyntaxError> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while r.input.get(r.pos).is_some_and(u8::is_ascii_digit) {
                r.pos += 1;
            }
            r.pos - from
        };
        if self.input[self.pos] == b'-' {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = digits(self);
        if n == 0 {
            return match self.input.get(self.pos) {
                None => {
                    Err(self
                        .eof("expected digit (0-9) to follow minus sign, for valid numeric value"))
                }
                Some(&b) => Err(self.unexpected(
                    b,
                    "expected digit (0-9) to follow minus sign, for valid numeric value",
                )),
            };
        }
        if n > 1 && self.input[int_start] == b'0' {
            return Err(SyntaxError {
                at: int_start,
                message: "Invalid numeric value: Leading zeroes not allowed".into(),
            });
        }
        let mut float = false;
        if self.input.get(self.pos) == Some(&b'.') {
            float = true;
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.bad_number_char("Decimal point not followed by a digit"));
            }
        }
        if let Some(b'e' | b'E') = self.input.get(self.pos) {
            float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.input.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.bad_number_char("Exponent indicator not followed by a digit"));
            }
        }
        if let Some(&b) = self.input.get(self.pos) {
            if b.is_ascii_alphabetic() {
                return Err(self.unexpected(b, "Expected space separating root-level values"));
            }
        }
        let text = String::from_utf8_lossy(&self.input[start..self.pos]).into_owned();
        Ok(Kind::Number { text, float })
    }

    fn bad_number_char(&self, what: &str) -> SyntaxError {
        match self.input.get(self.pos) {
            None => self.eof(what),
            Some(&b) => self.unexpected(b, what),
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(self.eof("was expecting closing quote for a string value"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(&e) = self.input.get(self.pos) else {
                        return Err(self.eof("was expecting closing quote for a string value"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(SyntaxError {
                                at: self.pos,
                                message: format!(
                                    "Unrecognized character escape '{}' (code {e})",
                                    e as char
                                ),
                            });
                        }
                    }
                }
                0..=0x1f => {
                    return Err(SyntaxError {
                        at: self.pos,
                        message: format!(
                            "Illegal unquoted character ((CTRL-CHAR, code {b})): has to be escaped using backslash to be included in string value"
                        ),
                    });
                }
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|e| SyntaxError {
            at: self.pos,
            message: format!(
                "Invalid UTF-8 start byte 0x{:x}",
                e.as_bytes()[e.utf8_error().valid_up_to()]
            ),
        })
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(self.eof("in character escape sequence"));
            };
            let d = (b as char).to_digit(16).ok_or_else(|| {
                self.unexpected(b, "expected a hex-digit for character escape sequence")
            })?;
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first)
            && self.input.get(self.pos..self.pos + 2) == Some(b"\\u")
        {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        // Jackson passes lone surrogates through; Rust strings cannot hold them.
        Ok(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }

    fn object(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut members: Vec<Member> = Vec::new();
        self.skip_ws();
        if self.input.get(self.pos) == Some(&b'}') {
            return Ok(Node {
                value: Kind::Object(members),
                start,
                end: self.pos_then_advance(),
            });
        }
        loop {
            self.skip_ws();
            let key_at = self.pos;
            match self.input.get(self.pos) {
                None => return Err(self.eof("expected close marker for Object")),
                Some(b'"') => {}
                Some(&b) => {
                    return Err(
                        self.unexpected(b, "was expecting double-quote to start field name")
                    );
                }
            }
            let key = self.string()?;
            if members.iter().any(|m| m.key == key) {
                return Err(SyntaxError {
                    at: key_at,
                    message: format!("Duplicate field '{key}'"),
                });
            }
            self.skip_ws();
            match self.input.get(self.pos) {
                None => return Err(self.eof("expected close marker for Object")),
                Some(b':') => self.pos += 1,
                Some(&b) => {
                    return Err(self
                        .unexpected(b, "was expecting a colon to separate field name and value"));
                }
            }
            self.skip_ws();
            let value = self.value(depth + 1)?;
            members.push(Member { key, key_at, value });
            self.skip_ws();
            match self.input.get(self.pos) {
                None => return Err(self.eof("expected close marker for Object")),
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    return Ok(Node {
                        value: Kind::Object(members),
                        start,
                        end: self.pos_then_advance(),
                    });
                }
                Some(&b) => {
                    return Err(
                        self.unexpected(b, "was expecting comma to separate Object entries")
                    );
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.input.get(self.pos) == Some(&b']') {
            return Ok(Node {
                value: Kind::Array(items),
                start,
                end: self.pos_then_advance(),
            });
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.input.get(self.pos) {
                None => return Err(self.eof("expected close marker for Array")),
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    return Ok(Node {
                        value: Kind::Array(items),
                        start,
                        end: self.pos_then_advance(),
                    });
                }
                Some(&b) => {
                    return Err(self.unexpected(b, "was expecting comma to separate Array entries"));
                }
            }
        }
    }

    fn pos_then_advance(&mut self) -> usize {
        let at = self.pos;
        self.pos += 1;
        at
    }
}
