//! JSON messages -> fields: a strict, bounded, allocation-free survey for the common case, and a
//! bounded tree for the records that must be changed.
//!
//! Most JSON log lines are already what Elasticsearch should index: a flat object with a few
//! fields. For them the survey validates the message (RFC 8259, strictly: no trailing commas,
//! no control characters in strings, no lone surrogates), finds the level, and checks every
//! bound; if nothing has to change, the encoder splices the message text itself into the
//! document: no tree, no copy, no allocation. Only a record that needs a change (a bound hit, a
//! duplicate key, a key Elasticsearch would refuse, a field a filter drops or renames, a name
//! clash at the top level) is built into a [`Node`] tree, changed and rendered.
//!
//! Bounds, so that an application cannot blow up the agent or the index mapping:
//!
//! - **depth**: objects and arrays nested deeper than `max_depth` (the message's object is depth
//!   1) are kept as one string holding their JSON text;
//! - **fields**: at most `max_fields` members (keys, at any depth, in document order); the rest
//!   are left out;
//! - **key length**: a member whose key is longer than `max_key_bytes` is left out.
//!
//! Neither the survey nor the tree recurses deeper than `max_depth`: what lies deeper is skipped
//! by an iterative scanner, so a line of ten thousand `[` costs a loop, not the stack.
//! Duplicate keys: the last one wins (as in JavaScript and most JSON libraries), the earlier
//! ones are left out. Keys Elasticsearch refuses (empty, starting or ending with `.`, or with
//! `..`) are renamed: dots become `_`, and an empty key becomes `_`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

/// The limits on what one message may turn into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub max_depth: usize,
    pub max_fields: usize,
    pub max_key_bytes: usize,
}

impl Bounds {
    /// `processing.max_depth`, `max_fields` and `max_key_bytes` when not configured.
    pub const DEFAULT: Bounds = Bounds {
        max_depth: 8,
        max_fields: 200,
        max_key_bytes: 256,
    };
}

/// Why a message was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotParsed {
    /// It is not a JSON object at all (plain text, or another JSON value).
    NotObject,
    /// It starts like a JSON object but is not valid JSON.
    Invalid(&'static str),
}

/// Which bounds or repairs changed a record (for counting, and to keep its message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adjusted {
    pub depth: bool,
    pub fields: bool,
    pub key_bytes: bool,
    pub duplicate_keys: bool,
    pub key_names: bool,
}

impl Adjusted {
    pub fn any(&self) -> bool {
        self.depth || self.fields || self.key_bytes || self.duplicate_keys || self.key_names
    }

    /// The event "a parsed message hit a bound or had keys repaired; its message is kept":
    /// counted per reason and warned about (throttled).
    pub fn report(&self, path: &std::path::Path, offset: u64) {
        use crate::telemetry::{add, metrics, Throttle, WARN_PERIOD};
        let m = metrics();
        let reasons = [
            (self.depth, &m.structured_depth, "depth"),
            (self.fields, &m.structured_fields, "fields"),
            (self.key_bytes, &m.structured_key_bytes, "key_bytes"),
            (
                self.duplicate_keys,
                &m.structured_duplicate_keys,
                "duplicate_keys",
            ),
            (self.key_names, &m.structured_key_names, "key_names"),
        ];
        let mut which = Vec::new();
        for (hit, counter, name) in reasons {
            if hit {
                add(counter, 1);
                which.push(name);
            }
        }
        static T: Throttle = Throttle::new(WARN_PERIOD);
        if let Some(suppressed) = T.admit() {
            tracing::warn!(path = %path.display(), offset, adjusted = ?which, suppressed, "Parsed message adjusted to the processing bounds; its message is kept.");
        }
    }
}

/// What the survey makes of a top-level key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopKey {
    /// Nothing to do.
    Plain,
    /// A level key; lower ranks win.
    Level(usize),
    /// The record must be rebuilt (a filter drops or renames it, or its name clashes).
    Rewrite,
}

/// What the survey found in a valid JSON object message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Survey {
    /// The object, without surrounding whitespace.
    pub object: Range<usize>,
    /// Inside its braces, without surrounding whitespace (empty for `{}`).
    pub inner: Range<usize>,
    /// The record cannot be shipped as written: build and render it.
    pub rewrite: bool,
    /// The raw JSON text of the best-ranked level key's value.
    pub level: Option<Range<usize>>,
}

/// A JSON value as logship keeps it.
#[derive(Clone, Debug, PartialEq)]
pub enum Node<'a> {
    /// A scalar exactly as written: a number, `true`, `false`, `null`, or a string literal with
    /// its quotes and escapes.
    Raw(&'a str),
    /// Text written as a JSON string (logfmt values, subtrees deeper than the depth bound).
    Text(Cow<'a, str>),
    Object(Members<'a>),
    Array(Vec<Node<'a>>),
}

/// An object's members in order, keys unescaped.
pub type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A parsed message: its top-level members and what was adjusted on the way.
#[derive(Debug)]
pub struct Built<'a> {
    pub members: Members<'a>,
    pub adjusted: Adjusted,
}

fn invalid(reason: &'static str) -> NotParsed {
    NotParsed::Invalid(reason)
}

/// A read position in a message.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A string whose opening quote is at the cursor: the range of its body (between the
    /// quotes) and whether it has escapes.
    fn string(&mut self) -> Result<(Range<usize>, bool), NotParsed> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // One pass for the three kinds of byte that end a run: log strings are short, and
            // a plain loop beats setting up a vectorised search for each of them.
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            match self.b.get(self.i) {
                None => return Err(invalid("unterminated string")),
                Some(c) if *c < 0x20 => return Err(invalid("control character in a string")),
                _ => {}
            }
            if self.b[self.i] == b'"' {
                let body = start..self.i;
                self.i += 1;
                return Ok((body, escaped));
            }
            escaped = true;
            match self.b.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                Some(b'u') => {
                    let unit = self.hex4(self.i + 2)?;
                    match unit {
                        0xD800..=0xDBFF => {
                            if self.b.get(self.i + 6..self.i + 8) != Some(b"\\u") {
                                return Err(invalid("lone surrogate in a string"));
                            }
                            let low = self.hex4(self.i + 8)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(invalid("lone surrogate in a string"));
                            }
                            self.i += 12;
                        }
                        0xDC00..=0xDFFF => return Err(invalid("lone surrogate in a string")),
                        _ => self.i += 6,
                    }
                }
                _ => return Err(invalid("invalid escape in a string")),
            }
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, NotParsed> {
        let digits = self.b.get(at..at + 4).ok_or(invalid("short \\u escape"))?;
        let mut n = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(invalid("invalid \\u escape")),
            };
            n = n * 16 + u32::from(v);
        }
        Ok(n)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), NotParsed> {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(invalid("invalid number")),
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(invalid("invalid number"));
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(invalid("invalid number"));
            }
        }
        Ok(())
    }

    fn literal(&mut self) -> Result<(), NotParsed> {
        for word in [&b"true"[..], b"false", b"null"] {
            if self.b[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(());
            }
        }
        Err(invalid("unexpected character"))
    }

    /// A scalar at the cursor (string, number, literal).
    fn scalar(&mut self) -> Result<(), NotParsed> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't' | b'f' | b'n') => self.literal(),
            None => Err(invalid("unexpected end")),
            Some(_) => Err(invalid("unexpected character")),
        }
    }

    /// `"key"` then `:`, at the cursor (after whitespace).
    fn key(&mut self) -> Result<(Range<usize>, bool), NotParsed> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(invalid("expected a key"));
        }
        let key = self.string()?;
        self.ws();
        if !self.eat(b':') {
            return Err(invalid("expected ':'"));
        }
        self.ws();
        Ok(key)
    }

    /// Skips (and validates) any value at the cursor without recursing: `stack` holds the open
    /// containers (reused, so deep nesting costs its bytes, not the call stack).
    fn skip_value(&mut self, stack: &mut Vec<u8>) -> Result<(), NotParsed> {
        stack.clear();
        loop {
            self.ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if !self.eat(close) {
                        stack.push(open);
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: close what ends here, or go on to the next value.
            loop {
                let Some(&top) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if top == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if top == b'{' => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(b']') if top == b'[' => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return Err(invalid("expected ',' or a closing bracket")),
                }
            }
        }
    }
}

/// Whether Elasticsearch would refuse `key` as a field name.
fn bad_key_name(key: &[u8]) -> bool {
    key.is_empty()
        || key[0] == b'.'
        || key[key.len() - 1] == b'.'
        || memchr::memmem::find(key, b"..").is_some()
}

/// What Elasticsearch gets instead of a name it would refuse.
fn repair_key_name(key: &str) -> String {
    if key.is_empty() {
        "_".to_string()
    } else {
        key.replace('.', "_")
    }
}

/// The first non-whitespace byte is `{`: the message may be a JSON object.
#[inline]
pub fn looks_like_object(message: &str) -> bool {
    message
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        == Some(b'{')
}

/// The survey's reusable scratch space (one per tailer: nothing is allocated per record once it
/// has grown to the largest object seen).
#[derive(Debug, Default)]
pub struct Surveyor {
    /// Key spans of the objects being surveyed, innermost last.
    keys: Vec<(u32, u32)>,
    /// For [`Cursor::skip_value`].
    stack: Vec<u8>,
    /// Sort order when checking a large object for duplicates.
    order: Vec<u32>,
}

struct SurveyState<'c> {
    bounds: Bounds,
    fields: usize,
    rewrite: bool,
    level: Option<(usize, Range<usize>)>,
    classify: &'c dyn Fn(&str) -> TopKey,
}

impl Surveyor {
    /// Validates `message` as a JSON object and checks what shipping it as written needs.
    /// `classify` is asked about every top-level key without escapes (a key with escapes always
    /// takes the rebuild path).
    pub fn survey(
        &mut self,
        message: &str,
        bounds: Bounds,
        classify: &dyn Fn(&str) -> TopKey,
    ) -> Result<Survey, NotParsed> {
        let mut c = Cursor::new(message);
        c.ws();
        if c.peek() != Some(b'{') {
            return Err(NotParsed::NotObject);
        }
        let start = c.i;
        let mut state = SurveyState {
            bounds,
            fields: 0,
            rewrite: false,
            level: None,
            classify,
        };
        self.keys.clear();
        let inner = self.object(&mut c, 1, &mut state)?;
        let end = c.i;
        c.ws();
        if c.i != c.b.len() {
            return Err(invalid("text after the object"));
        }
        Ok(Survey {
            object: start..end,
            inner,
            rewrite: state.rewrite,
            level: state.level.map(|(_, r)| r),
        })
    }

    /// The object at the cursor, at `depth`; returns the range inside its braces.
    fn object(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        st: &mut SurveyState<'_>,
    ) -> Result<Range<usize>, NotParsed> {
        c.i += 1;
        c.ws();
        let inner_start = c.i;
        if c.eat(b'}') {
            return Ok(inner_start..inner_start);
        }
        let base = self.keys.len();
        let mut has_escapes = false;
        loop {
            let (key, escaped) = c.key()?;
            has_escapes |= escaped;
            st.fields += 1;
            let key_bytes = &c.b[key.clone()];
            if st.fields > st.bounds.max_fields
                || key.len() > st.bounds.max_key_bytes
                || bad_key_name(key_bytes)
            {
                st.rewrite = true;
            }
            let mut class = TopKey::Plain;
            if depth == 1 {
                if escaped {
                    st.rewrite = true;
                } else {
                    class = (st.classify)(&c.s[key.clone()]);
                    if class == TopKey::Rewrite {
                        st.rewrite = true;
                    }
                }
            }
            self.keys.push((key.start as u32, key.end as u32));
            let value_start = c.i;
            self.value(c, depth, st)?;
            if let TopKey::Level(rank) = class {
                let raw = value_start..c.i;
                if st.level.as_ref().is_none_or(|(r, _)| rank < *r) {
                    st.level = Some((rank, raw));
                }
            }
            c.ws();
            if c.eat(b',') {
                continue;
            }
            let inner_end = c.i;
            if !c.eat(b'}') {
                return Err(invalid("expected ',' or '}'"));
            }
            // Escaped keys may spell the same key differently: the tree compares them decoded.
            if has_escapes || self.has_duplicates(c.b, base) {
                st.rewrite = true;
            }
            self.keys.truncate(base);
            return Ok(inner_start..trim_end(c.b, inner_start, inner_end));
        }
    }

    fn array(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        st: &mut SurveyState<'_>,
    ) -> Result<(), NotParsed> {
        c.i += 1;
        c.ws();
        if c.eat(b']') {
            return Ok(());
        }
        loop {
            c.ws();
            self.value(c, depth, st)?;
            c.ws();
            if c.eat(b',') {
                continue;
            }
            if c.eat(b']') {
                return Ok(());
            }
            return Err(invalid("expected ',' or ']'"));
        }
    }

    /// A value inside a container at `depth`.
    fn value(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        st: &mut SurveyState<'_>,
    ) -> Result<(), NotParsed> {
        match c.peek() {
            Some(b'{' | b'[') if depth >= st.bounds.max_depth => {
                st.rewrite = true;
                c.skip_value(&mut self.stack)
            }
            Some(b'{') => self.object(c, depth + 1, st).map(drop),
            Some(b'[') => self.array(c, depth + 1, st),
            _ => c.scalar(),
        }
    }

    /// Whether two of the keys from `base` on are the same (raw bytes: escaped keys are handled
    /// by the caller).
    fn has_duplicates(&mut self, b: &[u8], base: usize) -> bool {
        let keys = &self.keys[base..];
        let text = |k: &(u32, u32)| &b[k.0 as usize..k.1 as usize];
        if keys.len() <= 16 {
            for (i, k) in keys.iter().enumerate() {
                if keys[i + 1..].iter().any(|o| text(o) == text(k)) {
                    return true;
                }
            }
            return false;
        }
        self.order.clear();
        self.order.extend(0..keys.len() as u32);
        self.order
            .sort_unstable_by(|x, y| text(&keys[*x as usize]).cmp(text(&keys[*y as usize])));
        self.order
            .windows(2)
            .any(|w| text(&keys[w[0] as usize]) == text(&keys[w[1] as usize]))
    }
}

fn trim_end(b: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(b[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    end
}

/// Parses `message` (a JSON object) into a bounded tree.
pub fn build<'a>(message: &'a str, bounds: Bounds) -> Result<Built<'a>, NotParsed> {
    let mut c = Cursor::new(message);
    c.ws();
    if c.peek() != Some(b'{') {
        return Err(NotParsed::NotObject);
    }
    let mut b = Builder {
        bounds,
        fields: 0,
        adjusted: Adjusted::default(),
        stack: Vec::new(),
    };
    let members = b.object(&mut c, 1)?;
    c.ws();
    if c.i != c.b.len() {
        return Err(invalid("text after the object"));
    }
    Ok(Built {
        members,
        adjusted: b.adjusted,
    })
}

struct Builder {
    bounds: Bounds,
    fields: usize,
    adjusted: Adjusted,
    stack: Vec<u8>,
}

impl Builder {
    fn object<'a>(&mut self, c: &mut Cursor<'a>, depth: usize) -> Result<Members<'a>, NotParsed> {
        c.i += 1;
        c.ws();
        let mut members = Members::new();
        if c.eat(b'}') {
            return Ok(members);
        }
        loop {
            let (key, escaped) = c.key()?;
            if key.len() > self.bounds.max_key_bytes {
                self.adjusted.key_bytes = true;
                c.skip_value(&mut self.stack)?;
            } else if self.fields >= self.bounds.max_fields {
                self.adjusted.fields = true;
                c.skip_value(&mut self.stack)?;
            } else {
                self.fields += 1;
                let mut name = if escaped {
                    // Valid JSON (the scan above checked it), so this decodes.
                    Cow::Owned(
                        serde_json::from_str::<String>(&c.s[key.start - 1..key.end + 1])
                            .map_err(|_| invalid("invalid escape in a key"))?,
                    )
                } else {
                    Cow::Borrowed(&c.s[key.clone()])
                };
                if bad_key_name(name.as_bytes()) {
                    self.adjusted.key_names = true;
                    name = Cow::Owned(repair_key_name(&name));
                }
                let value = self.value(c, depth)?;
                members.push((name, value));
            }
            c.ws();
            if c.eat(b',') {
                continue;
            }
            if !c.eat(b'}') {
                return Err(invalid("expected ',' or '}'"));
            }
            if dedup(&mut members) {
                self.adjusted.duplicate_keys = true;
            }
            return Ok(members);
        }
    }

    fn array<'a>(&mut self, c: &mut Cursor<'a>, depth: usize) -> Result<Vec<Node<'a>>, NotParsed> {
        c.i += 1;
        c.ws();
        let mut items = Vec::new();
        if c.eat(b']') {
            return Ok(items);
        }
        loop {
            c.ws();
            items.push(self.value(c, depth)?);
            c.ws();
            if c.eat(b',') {
                continue;
            }
            if c.eat(b']') {
                return Ok(items);
            }
            return Err(invalid("expected ',' or ']'"));
        }
    }

    fn value<'a>(&mut self, c: &mut Cursor<'a>, depth: usize) -> Result<Node<'a>, NotParsed> {
        let start = c.i;
        match c.peek() {
            Some(b'{' | b'[') if depth >= self.bounds.max_depth => {
                self.adjusted.depth = true;
                c.skip_value(&mut self.stack)?;
                Ok(Node::Text(Cow::Borrowed(&c.s[start..c.i])))
            }
            Some(b'{') => Ok(Node::Object(self.object(c, depth + 1)?)),
            Some(b'[') => Ok(Node::Array(self.array(c, depth + 1)?)),
            _ => {
                c.scalar()?;
                Ok(Node::Raw(&c.s[start..c.i]))
            }
        }
    }
}

/// Leaves out every member whose key appears again later (the last one wins). Returns whether
/// any was left out.
pub fn dedup(members: &mut Members<'_>) -> bool {
    let n = members.len();
    if n < 2 {
        return false;
    }
    let mut keep = vec![true; n];
    let mut any = false;
    if n <= 16 {
        for i in 0..n {
            if members[i + 1..].iter().any(|(k, _)| *k == members[i].0) {
                keep[i] = false;
                any = true;
            }
        }
    } else {
        let mut seen: HashSet<&str> = HashSet::with_capacity(n);
        for i in (0..n).rev() {
            if !seen.insert(&members[i].0) {
                keep[i] = false;
                any = true;
            }
        }
    }
    if any {
        let mut keep = keep.into_iter();
        members.retain(|_| keep.next().unwrap_or(true));
    }
    any
}

/// The raw JSON text of the value at `path` (dotted: a key may itself contain dots, so
/// `http.status` finds `{"http":{"status":1}}` and `{"http.status":1}`) in `object`, a valid
/// JSON object; the last of duplicate keys wins.
pub fn find_path<'a>(object: &'a str, path: &str, stack: &mut Vec<u8>) -> Option<&'a str> {
    let mut c = Cursor::new(object);
    find_in(&mut c, path, stack)
}

fn find_in<'a>(c: &mut Cursor<'a>, path: &str, stack: &mut Vec<u8>) -> Option<&'a str> {
    c.ws();
    if !c.eat(b'{') {
        return None;
    }
    c.ws();
    if c.eat(b'}') {
        return None;
    }
    let mut found = None;
    loop {
        let (key, escaped) = c.key().ok()?;
        let name: Cow<'_, str> = if escaped {
            Cow::Owned(serde_json::from_str::<String>(&c.s[key.start - 1..key.end + 1]).ok()?)
        } else {
            Cow::Borrowed(&c.s[key])
        };
        let start = c.i;
        c.skip_value(stack).ok()?;
        let value = &c.s[start..c.i];
        if let Some(rest) = path.strip_prefix(name.as_ref()) {
            if rest.is_empty() {
                found = Some(value);
            } else if let Some(rest) = rest.strip_prefix('.') {
                if let Some(inner) = find_in(&mut Cursor::new(value), rest, stack) {
                    found = Some(inner);
                }
            }
        }
        c.ws();
        if !c.eat(b',') {
            return found;
        }
    }
}

/// The node at `path` (dotted, as [`find_path`]) among `members`.
pub fn node_at<'m, 'a>(members: &'m Members<'a>, path: &str) -> Option<&'m Node<'a>> {
    let mut found = None;
    for (key, value) in members {
        if let Some(rest) = path.strip_prefix(key.as_ref()) {
            if rest.is_empty() {
                found = Some(value);
            } else if let (Some(rest), Node::Object(inner)) = (rest.strip_prefix('.'), value) {
                if let Some(n) = node_at(inner, rest) {
                    found = Some(n);
                }
            }
        }
    }
    found
}

/// Takes the node at `path` out of `members` (every member it names, with duplicates gone the
/// last). Returns it, if there was one.
pub fn take_path<'a>(members: &mut Members<'a>, path: &str) -> Option<Node<'a>> {
    let mut taken = None;
    let mut i = 0;
    while i < members.len() {
        let key = members[i].0.clone();
        if let Some(rest) = path.strip_prefix(key.as_ref()) {
            if rest.is_empty() {
                taken = Some(members.remove(i).1);
                continue;
            }
            if let (Some(rest), Node::Object(inner)) = (rest.strip_prefix('.'), &mut members[i].1) {
                if let Some(n) = take_path(inner, rest) {
                    taken = Some(n);
                }
            }
        }
        i += 1;
    }
    taken
}

/// Puts `node` at `path` (dotted) in `members`, replacing what was there: through existing
/// objects, creating missing ones; where a non-object is in the way, the rest of the path is
/// one dotted key.
pub fn set_path<'a>(members: &mut Members<'a>, path: &str, node: Node<'a>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(rest) = rest else {
        members.retain(|(k, _)| k != path);
        members.push((Cow::Owned(path.to_string()), node));
        return;
    };
    match members.iter_mut().rev().find(|(k, _)| k == head) {
        Some((_, Node::Object(inner))) => set_path(inner, rest, node),
        Some(_) => {
            members.retain(|(k, _)| k != path);
            members.push((Cow::Owned(path.to_string()), node));
        }
        None => {
            let mut inner = Members::new();
            set_path(&mut inner, rest, node);
            members.push((Cow::Owned(head.to_string()), Node::Object(inner)));
        }
    }
}

/// Appends `s` as a JSON string literal, with serde_json's escaping.
pub fn write_str(out: &mut String, s: &str) {
    /// serde_json writes bytes; what it writes of a `&str` is whole UTF-8 runs of it (it cuts
    /// only at ASCII bytes it escapes) and ASCII escapes, so each write is valid UTF-8.
    struct Text<'a>(&'a mut String);
    impl std::io::Write for Text<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = std::str::from_utf8(buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.0.push_str(text);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    out.reserve(s.len() + 2);
    // Only a write that is not UTF-8 could fail, and none is (see above).
    let _ = serde_json::to_writer(Text(out), s);
}

/// Appends `node` as JSON.
pub fn render(node: &Node<'_>, out: &mut String) {
    match node {
        Node::Raw(raw) => out.push_str(raw),
        Node::Text(text) => write_str(out, text),
        Node::Object(members) => {
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                render(value, out);
            }
            out.push('}');
        }
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, out);
            }
            out.push(']');
        }
    }
}

/// The text of a raw JSON value, as a filter matches it: a string decoded, anything else as
/// written.
pub fn raw_text(raw: &str) -> Cow<'_, str> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(body) if !body.contains('\\') => Cow::Borrowed(body),
        Some(_) => serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .unwrap_or(Cow::Borrowed(raw)),
        None => Cow::Borrowed(raw),
    }
}

/// The text of a node, as a filter matches it.
pub fn node_text<'n>(node: &'n Node<'_>) -> Cow<'n, str> {
    match node {
        Node::Raw(raw) => raw_text(raw),
        Node::Text(text) => Cow::Borrowed(text.as_ref()),
        other => {
            let mut s = String::new();
            render(other, &mut s);
            Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const BOUNDS: Bounds = Bounds::DEFAULT;

    fn plain(_: &str) -> TopKey {
        TopKey::Plain
    }

    fn survey(message: &str) -> Result<Survey, NotParsed> {
        Surveyor::default().survey(message, BOUNDS, &plain)
    }

    /// The object as a document would hold it.
    fn rendered(message: &str, bounds: Bounds) -> (Value, Adjusted) {
        let built = build(message, bounds).unwrap();
        let mut out = String::new();
        render(&Node::Object(built.members), &mut out);
        (serde_json::from_str(&out).unwrap(), built.adjusted)
    }

    #[test]
    fn flat_objects_ship_as_written() {
        let m = r#"  {"level":"info", "msg":"hello \"you\"", "n": -1.5e3, "ok": true, "x": null, "a": [1, {"b": []}]}  "#;
        let s = survey(m).unwrap();
        assert!(!s.rewrite);
        assert_eq!(&m[s.object.clone()], m.trim());
        assert!(m[s.inner.clone()].starts_with("\"level\""));
        assert!(m[s.inner.clone()].ends_with("]}]"));
        let empty = survey("{ }").unwrap();
        assert!(empty.inner.is_empty());
    }

    #[test]
    fn what_is_not_an_object_or_not_json() {
        for m in [
            "plain text",
            "[1,2]",
            "\"a string\"",
            "42",
            "",
            "   ",
            "null",
        ] {
            assert_eq!(survey(m), Err(NotParsed::NotObject), "{m:?}");
        }
        for m in [
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} trailing",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{a:1}",
            "{\"a\":1}}",
            "{\"a\":{\"b\":1]}",
        ] {
            assert!(
                matches!(survey(m), Err(NotParsed::Invalid(_))),
                "{m:?}: {:?}",
                survey(m)
            );
            assert!(serde_json::from_str::<Value>(m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn deep_nesting_is_kept_as_text_beyond_the_bound_without_recursion() {
        let m = r#"{"a":{"b":{"c":{"d":1}}},"e":[[["x"]]]}"#;
        let bounds = Bounds {
            max_depth: 3,
            ..BOUNDS
        };
        assert!(
            Surveyor::default()
                .survey(m, bounds, &plain)
                .unwrap()
                .rewrite
        );
        let (doc, adjusted) = rendered(m, bounds);
        assert!(adjusted.depth);
        assert_eq!(doc, json!({"a":{"b":{"c":"{\"d\":1}"}},"e":[["[\"x\"]"]]}));
        // A hundred thousand levels: validated and kept as text, no stack overflow.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(survey(&deep).unwrap().rewrite);
        let (doc, adjusted) = rendered(&deep, BOUNDS);
        assert!(adjusted.depth);
        // `a` is level 2, so seven arrays stay arrays (levels 2 to 8).
        let text = doc["a"][0][0][0][0][0][0][0].as_str().unwrap();
        assert_eq!(text.len(), 2 * (100_000 - 7) + 1);
        let broken = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(99_999));
        assert!(matches!(survey(&broken), Err(NotParsed::Invalid(_))));
    }

    #[test]
    fn huge_arrays_cost_no_fields() {
        let items: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
        let m = format!("{{\"ids\":[{}],\"level\":\"warn\"}}", items.join(","));
        let s = survey(&m).unwrap();
        assert!(!s.rewrite, "an array of scalars is one field");
        let objects: Vec<String> = (0..500).map(|i| format!("{{\"k{i}\":{i}}}")).collect();
        let m = format!("{{\"list\":[{}]}}", objects.join(","));
        assert!(survey(&m).unwrap().rewrite, "members inside arrays count");
        let (doc, adjusted) = rendered(&m, BOUNDS);
        assert!(adjusted.fields);
        assert_eq!(doc["list"].as_array().unwrap().len(), 500);
        let kept = doc["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| !o.as_object().unwrap().is_empty())
            .count();
        assert_eq!(kept, 199, "200 fields: `list` and 199 inside");
    }

    #[test]
    fn field_and_key_bounds() {
        let members: Vec<String> = (0..300).map(|i| format!("\"f{i}\":{i}")).collect();
        let m = format!("{{{}}}", members.join(","));
        let (doc, adjusted) = rendered(&m, BOUNDS);
        assert!(adjusted.fields && !adjusted.depth);
        assert_eq!(doc.as_object().unwrap().len(), 200);
        assert_eq!(doc["f199"], 199);
        assert!(doc.get("f200").is_none());

        let long = "k".repeat(300);
        let m = format!("{{\"{long}\":1,\"short\":2}}");
        assert!(survey(&m).unwrap().rewrite);
        let (doc, adjusted) = rendered(&m, BOUNDS);
        assert!(adjusted.key_bytes);
        assert_eq!(doc, json!({"short": 2}));
    }

    #[test]
    fn duplicate_keys_last_one_wins_at_any_depth() {
        let m = r#"{"a":1,"b":{"x":1,"x":2},"a":3}"#;
        assert!(survey(m).unwrap().rewrite);
        let (doc, adjusted) = rendered(m, BOUNDS);
        assert!(adjusted.duplicate_keys);
        assert_eq!(doc, json!({"b":{"x":2},"a":3}));
        // Spelled differently, the same key.
        let (doc, _) = rendered(r#"{"a":1,"\u0061":2}"#, BOUNDS);
        assert_eq!(doc, json!({"a":2}));
        // Many keys: the sorted check.
        let mut members: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        members.push("\"k3\":\"again\"".into());
        let m = format!("{{{}}}", members.join(","));
        assert!(survey(&m).unwrap().rewrite);
        assert_eq!(rendered(&m, BOUNDS).0["k3"], "again");
        let unique: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(
            !survey(&format!("{{{}}}", unique.join(",")))
                .unwrap()
                .rewrite
        );
    }

    #[test]
    fn names_elasticsearch_refuses_are_repaired() {
        let m = r#"{"":1,".a":2,"b.":3,"c..d":4,"e.f":5}"#;
        assert!(survey(m).unwrap().rewrite);
        let (doc, adjusted) = rendered(m, BOUNDS);
        assert!(adjusted.key_names);
        assert_eq!(doc, json!({"_":1,"_a":2,"b_":3,"c__d":4,"e.f":5}));
    }

    #[test]
    fn invalid_utf8_was_replaced_before_and_unicode_passes() {
        // The parser replaced invalid bytes with U+FFFD; what arrives here is text.
        let m = "{\"msg\":\"caf\u{e9} \u{fffd} \u{1f600}\",\"\u{e9}\":\"\\ud83d\\ude00\"}";
        assert!(!survey(m).unwrap().rewrite);
        let (doc, _) = rendered(m, BOUNDS);
        assert_eq!(doc["msg"], "caf\u{e9} \u{fffd} \u{1f600}");
        assert_eq!(doc["\u{e9}"], "\u{1f600}");
    }

    #[test]
    fn levels_are_ranked_and_keys_classified() {
        let classify = |k: &str| match k {
            "severity" => TopKey::Level(1),
            "level" => TopKey::Level(0),
            "secret" => TopKey::Rewrite,
            _ => TopKey::Plain,
        };
        let m = r#"{"severity":"W","level":"warn","x":{"level":"nested"}}"#;
        let s = Surveyor::default().survey(m, BOUNDS, &classify).unwrap();
        assert_eq!(&m[s.level.unwrap()], "\"warn\"");
        assert!(!s.rewrite);
        let s = Surveyor::default()
            .survey(r#"{"secret":1}"#, BOUNDS, &classify)
            .unwrap();
        assert!(s.rewrite);
    }

    #[test]
    fn paths_find_nested_and_dotted_keys() {
        let m = r#"{"http":{"status":500,"x.y":"z"},"http.method":"GET","a":"\"q\""}"#;
        let mut stack = Vec::new();
        assert_eq!(find_path(m, "http.status", &mut stack), Some("500"));
        assert_eq!(find_path(m, "http.method", &mut stack), Some("\"GET\""));
        assert_eq!(find_path(m, "http.x.y", &mut stack), Some("\"z\""));
        assert_eq!(find_path(m, "http.nope", &mut stack), None);
        assert_eq!(raw_text(find_path(m, "a", &mut stack).unwrap()), "\"q\"");
        let built = build(m, BOUNDS).unwrap();
        assert_eq!(
            node_at(&built.members, "http.x.y"),
            Some(&Node::Raw("\"z\""))
        );
        let mut members = built.members;
        assert_eq!(
            take_path(&mut members, "http.status"),
            Some(Node::Raw("500"))
        );
        set_path(&mut members, "user.id", Node::Raw("7"));
        set_path(&mut members, "a.b", Node::Raw("1"));
        let mut out = String::new();
        render(&Node::Object(members), &mut out);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!({"http":{"x.y":"z"},"http.method":"GET","a":"\"q\"","user":{"id":7},"a.b":1})
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\\u{e9}\u{1f600}\n ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(12, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z.]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Anything serde_json writes is valid to the survey, and what the tree renders is the
        /// same value where no bound or repair applied.
        #[test]
        fn agrees_with_serde_json(value in json_value(), pretty in any::<bool>()) {
            let object = json!({ "v": value });
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let s = survey(&text).unwrap();
            let (doc, adjusted) = rendered(&text, BOUNDS);
            prop_assert_eq!(s.rewrite, adjusted.any());
            if !adjusted.any() {
                // Read back by the same parser (serde_json rounds some floats by one ulp).
                let expected: Value = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(doc, expected);
            }
        }

        /// Mangled text: the survey accepts exactly what serde_json accepts (as an object), and
        /// never panics.
        #[test]
        fn validity_matches_serde_json(value in json_value(), cut in any::<prop::sample::Index>(), junk in "[\\[\\]{}:,\"\\\\0-9a-z .eE+-]{0,3}") {
            let text = serde_json::to_string(&json!({ "v": value })).unwrap();
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap();
            let mangled = format!("{}{}{}", &text[..at], junk, &text[at..]);
            let ours = survey(&mangled);
            let theirs = serde_json::from_str::<Value>(&mangled);
            // Numbers beyond f64 are valid JSON that serde_json declines to hold.
            prop_assume!(!matches!(&theirs, Err(e) if e.to_string().contains("out of range")));
            let theirs_object = matches!(theirs, Ok(Value::Object(_)));
            // serde_json's recursion limit (128) is below what strings of this size reach.
            prop_assert_eq!(ours.is_ok(), theirs_object, "{:?}: {:?}", mangled, ours);
        }
    }
}
