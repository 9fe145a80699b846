//! Multiline: joining the lines of one event (a stack trace, a traceback, a goroutine dump) into
//! one record.
//!
//! Joining works on complete messages, after CRI partials and docker splits are reassembled, and
//! per stream: stdout and stderr each have their own [`Join`], so their lines never mix. A rule
//! ([`MultilineRule`]: a built-in one from `rules`, or a custom pair of regular expressions)
//! says of each line whether it starts an event, continues the open one, or is an ordinary line.
//! An ordinary line with nothing open goes straight into the batch, as without multiline; the
//! lines of an event are copied into the join's buffer (reused, bounded by `max_bytes`) and
//! joined with `\n`.
//!
//! A record is closed when a line does not continue it, after `flush_timeout` without a line, at
//! `max_lines` or `max_bytes` (the line that would pass them begins the next record, counted and
//! warned), or when the file is let go. `flush_timeout` is measured on two clocks. The
//! messages' own timestamps (the runtime's, when it wrote them) decide while lines come: a line
//! written `flush_timeout` or more after the record's last one does not join it, and neither does
//! a record of one stream stay open once the other stream's lines are that much later
//! (`LineParser::close_stale`, at the end of every read). This is what a re-read after a restart
//! sees too, and a reader that is behind (a backlog, a rate limit) does not cut records. The
//! read time decides when the file is idle: a record whose last line was read `flush_timeout`
//! ago is shipped (`LineParser::expire`, for files read to their end). Blank lines
//! are held back: they join only if more of the event follows, so a record never ends in
//! them, and their bytes belong to the record they followed.
//!
//! Invariants, with those of `parse`:
//! - the open record's first line is where reading restarts after a crash
//!   ([`Join::pending_start`]), and a record spread over lines that another stream's open
//!   record interleaves is remembered ([`Join::spans`]) so that the ack range does not end
//!   inside it, where re-reading would ship its tail twice;
//! - every record starts from the rule's first question, never from a state carried over from
//!   the record before (not even after a cut at `max_lines`), so re-reading from any record's
//!   first line groups the lines the same way;
//! - a line longer than `max_line_bytes` (split or truncated) is never joined: the open record
//!   is closed before its first piece.

mod rules;

use std::sync::Arc;
use std::time::Duration;

use regex::bytes::Regex;

pub use rules::Builtin;

use crate::ack::{AckToken, FileKey};
use crate::parse::assemble::RETAIN_BYTES;
use crate::parse::{emit, Settings};
use crate::record::{Batch, Carried, IdPrefix, Stream};
use crate::telemetry;
use crate::timestamp::Timestamp;

/// What closes a record besides the next event: shared by every rule of a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A record with no new line for this long is shipped.
    pub flush_timeout: Duration,
    /// A joined record never grows past this many bytes by joining (`\n` included).
    pub max_bytes: usize,
    /// Nor past this many lines.
    pub max_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            flush_timeout: Duration::from_secs(1),
            max_bytes: 64 * 1024,
            max_lines: 500,
        }
    }
}

/// Spans a join remembers before it merges them into one (see [`Join::close`]).
const MAX_SPANS: usize = 1024;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// What a line is when no record is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Begin {
    /// The first line of an event: held, in this state, for the lines that continue it.
    Start(u16),
    /// A continuation whose start was not seen (or was cut off): held like a start.
    Headless(u16),
    /// An ordinary line: a record of its own, shipped at once.
    Single,
}

/// A custom rule's patterns; at least one is set.
#[derive(Clone, Debug)]
struct Patterns {
    /// Matches the first line of a record.
    start: Option<Regex>,
    /// Matches a line that continues the open record.
    continuation: Option<Regex>,
}

#[derive(Clone, Debug)]
enum Kind {
    Builtin(Builtin),
    Custom(Patterns),
    /// Several rules on one stream (`java+python`): a line that starts a record under one of
    /// them (the first, where several would) opens it under that rule, which alone decides the
    /// record's continuation lines; the record's state is the member's index in the high byte
    /// and the member's own state in the low one.
    List(Vec<Arc<MultilineRule>>),
}

/// Members a list of rules may have (the member's index is a byte of the state).
pub const MAX_LIST: usize = 16;

/// A way of joining lines, with the limits: what a parser is given to join with.
#[derive(Clone, Debug)]
pub struct MultilineRule {
    name: String,
    kind: Kind,
    limits: Limits,
}

/// Why a custom rule cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// Neither a start nor a continuation pattern.
    #[error("needs a start pattern, a continuation pattern, or both")]
    NoPattern,
    /// A pattern the regex crate refused.
    #[error("{pattern:?} is not a regular expression: {reason}")]
    Regex {
        pattern: String,
        /// What is wrong, on one line (the crate's message draws the pattern over several).
        reason: String,
        #[source]
        source: regex::Error,
    },
}

impl MultilineRule {
    pub fn builtin(builtin: Builtin, limits: Limits) -> Self {
        MultilineRule {
            name: builtin.name().to_owned(),
            kind: Kind::Builtin(builtin),
            limits,
        }
    }

    /// A rule of the user's: `start` matches the first line of a record, `continuation` a line
    /// that continues one (empty: not given). With only `start`, every other line continues;
    /// with only `continuation`, every other line starts a record; with both, a line that
    /// matches neither is a record of its own.
    pub fn custom(
        name: &str,
        start: &str,
        continuation: &str,
        limits: Limits,
    ) -> Result<Self, (&'static str, RuleError)> {
        let compile = |which: &'static str, pattern: &str| {
            if pattern.is_empty() {
                return Ok(None);
            }
            Regex::new(pattern).map(Some).map_err(|source| {
                let text = source.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or_default();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason).to_owned();
                (
                    which,
                    RuleError::Regex {
                        pattern: pattern.to_owned(),
                        reason,
                        source,
                    },
                )
            })
        };
        let patterns = Patterns {
            start: compile("start", start)?,
            continuation: compile("continuation", continuation)?,
        };
        if patterns.start.is_none() && patterns.continuation.is_none() {
            return Err(("start", RuleError::NoPattern));
        }
        Ok(MultilineRule {
            name: name.to_owned(),
            kind: Kind::Custom(patterns),
            limits,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn begins(&self, line: &[u8]) -> Begin {
        match &self.kind {
            Kind::Builtin(b) => b.begins(line),
            Kind::List(members) => {
                let mut headless = None;
                for (i, member) in members.iter().enumerate() {
                    match member.begins(line) {
                        Begin::Start(state) => return Begin::Start(pack(i, state)),
                        Begin::Headless(state) if headless.is_none() => {
                            headless = Some(pack(i, state));
                        }
                        _ => {}
                    }
                }
                headless.map_or(Begin::Single, Begin::Headless)
            }
            Kind::Custom(p) => match (&p.start, &p.continuation) {
                (Some(start), _) if start.is_match(line) => Begin::Start(0),
                (_, Some(cont)) if cont.is_match(line) => Begin::Headless(0),
                (Some(_), Some(_)) => Begin::Single,
                (Some(_), None) => Begin::Headless(0),
                (None, _) => Begin::Start(0),
            },
        }
    }

    fn continues(&self, state: u16, line: &[u8]) -> Option<u16> {
        match &self.kind {
            Kind::Builtin(b) => b.continues(state, line),
            Kind::List(members) => {
                let i = usize::from(state >> 8);
                members
                    .get(i)?
                    .continues(state & 0xff, line)
                    .map(|s| pack(i, s))
            }
            Kind::Custom(p) => {
                let starts = p.start.as_ref().is_some_and(|r| r.is_match(line));
                let continues = match &p.continuation {
                    Some(cont) => cont.is_match(line),
                    None => true,
                };
                (!starts && continues).then_some(0)
            }
        }
    }
}

/// A list member's index and its state, as the list's state.
fn pack(member: usize, state: u16) -> u16 {
    ((member as u16) << 8) | (state & 0xff)
}

/// A rule name that names no rule.
#[derive(Debug, thiserror::Error)]
pub enum UnknownRule {
    /// Neither a built-in rule, a configured one, nor `none`.
    #[error("no multiline rule is named {name:?} (known: none, {known})")]
    Unknown { name: String, known: String },
    /// A list (`java+python`) with `none` in it, or too long.
    #[error("{name:?} is not a list of rules: {why}")]
    List { name: String, why: String },
}

/// The `[multiline]` section as the agent uses it: every rule by name, and the default.
#[derive(Clone, Debug)]
pub struct Multiline {
    /// The built-in rules, then the configured ones.
    rules: Vec<Arc<MultilineRule>>,
    /// What files join with unless told otherwise; `None`: no joining.
    default: Option<Arc<MultilineRule>>,
    limits: Limits,
    /// Lists of rules built so far, by name (`java+python`): the same list is the same rule, so
    /// choosing it again for a file does not close the file's open records.
    lists: Arc<std::sync::Mutex<Vec<Arc<MultilineRule>>>>,
}

impl Default for Multiline {
    fn default() -> Self {
        Multiline::new(Limits::default(), Vec::new(), "none")
            .expect("\"none\" is always a known rule")
    }
}

impl Multiline {
    /// The built-in rules and `custom` (whose names the configuration checked: unique, not a
    /// built-in's, not `none`), all with `limits`; `default` names one of them, or `none`.
    pub fn new(
        limits: Limits,
        custom: Vec<MultilineRule>,
        default: &str,
    ) -> Result<Self, UnknownRule> {
        let mut rules: Vec<Arc<MultilineRule>> = Builtin::ALL
            .iter()
            .map(|&b| Arc::new(MultilineRule::builtin(b, limits)))
            .collect();
        rules.extend(custom.into_iter().map(|mut r| {
            r.limits = limits;
            Arc::new(r)
        }));
        let mut multiline = Multiline {
            rules,
            default: None,
            limits,
            lists: Arc::default(),
        };
        multiline.default = multiline.resolve(default)?;
        Ok(multiline)
    }

    /// The rule named `name` (a built-in one or a configured one); `None` for any other name,
    /// `none` included. For choosing a file's rule from a hint, [`Multiline::resolve`] tells an
    /// unknown name from `none`.
    pub fn rule(&self, name: &str) -> Option<Arc<MultilineRule>> {
        self.rules.iter().find(|r| r.name == name).cloned()
    }

    /// `Ok(None)` for `none` (no joining), `Ok(Some(rule))` for a known rule or a list of them
    /// joined by `+` (`java+python`), an error naming the known rules otherwise.
    pub fn resolve(&self, name: &str) -> Result<Option<Arc<MultilineRule>>, UnknownRule> {
        if name == "none" {
            return Ok(None);
        }
        let unknown = |name: &str| UnknownRule::Unknown {
            name: name.to_owned(),
            known: self.names().collect::<Vec<_>>().join(", "),
        };
        if !name.contains('+') {
            return self.rule(name).map(Some).ok_or_else(|| unknown(name));
        }
        let parts: Vec<&str> = name.split('+').map(str::trim).collect();
        let mut members = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if *part == "none" {
                return Err(UnknownRule::List {
                    name: name.to_owned(),
                    why: "`none` joins nothing and cannot be one of them".into(),
                });
            }
            if parts[..i].contains(part) {
                continue;
            }
            members.push(self.rule(part).ok_or_else(|| unknown(part))?);
        }
        let name = members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        if members.len() == 1 {
            return Ok(members.pop());
        }
        if members.len() > MAX_LIST {
            return Err(UnknownRule::List {
                name,
                why: format!("at most {MAX_LIST} rules"),
            });
        }
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = lists.iter().find(|l| l.name == name) {
            return Ok(Some(Arc::clone(list)));
        }
        let list = Arc::new(MultilineRule {
            name,
            kind: Kind::List(members),
            limits: self.limits,
        });
        lists.push(Arc::clone(&list));
        Ok(Some(list))
    }

    /// What new files join with: `multiline.default_rule`.
    pub fn default_rule(&self) -> Option<Arc<MultilineRule>> {
        self.default.clone()
    }

    /// Every rule's name, built-in ones first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Why an open record was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// A line that does not continue it, a line too long to join, a change of rule.
    Next,
    /// `flush_timeout` without a line.
    Timeout,
    /// The next line would have passed `max_bytes`.
    MaxBytes,
    /// The next line would have passed `max_lines`.
    MaxLines,
    /// The file is let go.
    Flush,
}

/// A complete message of one stream, as it goes into a join.
#[derive(Clone, Copy, Debug)]
pub(super) struct Message<'a> {
    pub bytes: &'a [u8],
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// Start of the physical line it began in.
    pub offset: u64,
    /// End of its last physical line.
    pub end: u64,
}

/// A join with the rule it works by, handed to the assembly of the same stream so that a
/// reassembled message goes into the join rather than straight out.
pub(super) struct Joiner<'a> {
    pub join: &'a mut Join,
    pub rule: &'a MultilineRule,
    /// When the line was read: the clock of `flush_timeout`.
    pub now: Timestamp,
}

/// The multiline record being joined for one stream.
#[derive(Debug)]
pub(super) struct Join {
    /// The joined message; at most `max_bytes` (or one line, if a line alone is longer).
    buf: Vec<u8>,
    open: bool,
    stream: Stream,
    /// The first line's.
    timestamp: Timestamp,
    /// Start of the first line's physical line: the record's offset, where re-reading restarts.
    offset: u64,
    /// End of the last line taken (held-back blank lines included).
    end: u64,
    /// Lines in `buf`.
    lines: usize,
    /// Blank lines taken after the last line in `buf`, not in it yet.
    blanks: usize,
    /// The rule's state.
    state: u16,
    /// The last line's timestamp (when it was written).
    last_ts: Timestamp,
    /// When the last line was read.
    last_at: Timestamp,
    /// The latest timestamp of any message of this stream, joined or not: the stream's clock.
    seen: Timestamp,
    /// `(offset, end)` of emitted records that cover more than one physical line (another
    /// stream's lines may lie between theirs), until the ack range has passed their end.
    spans: Vec<(u64, u64)>,
    /// The open record began in the previous generation of the file (a rotation cut it):
    /// `offset` and `end` above are this generation's part, from its start.
    carried: Option<CarriedFrom>,
}

/// Where a record a rotation cut began: the previous generation of its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CarriedFrom {
    /// That generation's document id prefix, the record's.
    pub prefix: IdPrefix,
    pub file: FileKey,
    /// The record's start there.
    pub offset: u64,
    /// That generation's end: what it read of it (every line after `offset` is either in the
    /// record or in a record of another stream, emitted there).
    pub end: u64,
}

impl Join {
    pub(super) const fn new() -> Self {
        Join {
            buf: Vec::new(),
            open: false,
            stream: Stream::Unknown,
            timestamp: Timestamp(0),
            offset: 0,
            end: 0,
            lines: 0,
            blanks: 0,
            state: 0,
            last_ts: Timestamp(0),
            last_at: Timestamp(i64::MIN),
            seen: Timestamp(i64::MIN),
            spans: Vec::new(),
            carried: None,
        }
    }

    /// The open record, taken out to continue in the next generation of the file; this join
    /// keeps its stream's clock and the spans of what it emitted.
    pub(super) fn take_open(&mut self) -> Join {
        let mut open = std::mem::replace(self, Join::new());
        self.seen = open.seen;
        self.spans = std::mem::take(&mut open.spans);
        open
    }

    /// Continues `open`, a record of the previous generation, from `start` in this one.
    pub(super) fn continue_carried(&mut self, mut open: Join, from: CarriedFrom, start: u64) {
        debug_assert!(!self.open && open.open);
        open.offset = start;
        open.end = start;
        open.carried = Some(from);
        open.seen = open.seen.max(self.seen);
        open.spans = std::mem::take(&mut self.spans);
        *self = open;
    }

    /// Takes back `open`, which [`Join::take_open`] took and the next generation did not.
    pub(super) fn put_back(&mut self, mut open: Join) {
        debug_assert!(!self.open && open.open);
        open.seen = open.seen.max(self.seen);
        open.spans = std::mem::take(&mut self.spans);
        *self = open;
    }

    /// The last line's timestamp of the open record.
    pub(super) const fn last_written(&self) -> Timestamp {
        self.last_ts
    }

    pub(super) const fn is_open(&self) -> bool {
        self.open
    }

    /// Where reading must restart to rebuild the open record, if one is.
    pub(super) fn pending_start(&self) -> Option<u64> {
        self.open.then_some(self.offset)
    }

    /// When the open record is due for shipping if no line is read before: `flush_timeout`
    /// after its last line was read.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<Timestamp> {
        self.open
            .then(|| Timestamp(self.last_at.0.saturating_add(nanos(limits.flush_timeout))))
    }

    /// Whether the open record's last line was read `flush_timeout` or more before `now` (or
    /// the clock went back past it, which would otherwise hold the record for as long).
    pub(super) fn expired(&self, limits: &Limits, now: Timestamp) -> bool {
        self.deadline(limits)
            .is_some_and(|due| now >= due || now < self.last_at)
    }

    /// Whether the open record's last line was written `flush_timeout` or more before `at`.
    pub(super) fn stale(&self, limits: &Limits, at: Timestamp) -> bool {
        self.open && at.0.saturating_sub(self.last_ts.0) >= nanos(limits.flush_timeout)
    }

    /// The latest timestamp of this stream's messages.
    pub(super) const fn seen(&self) -> Timestamp {
        self.seen
    }

    /// A message of this stream went out without the join (the docker fast path).
    pub(super) fn saw(&mut self, timestamp: Timestamp) {
        self.seen = self.seen.max(timestamp);
    }

    /// Whether `bytes` would be shipped at once as a record of its own (nothing open, and not
    /// the start of an event): the docker fast path keeps such a message where it decoded it.
    pub(super) fn passes(&self, rule: &MultilineRule, bytes: &[u8]) -> bool {
        !self.open && rule.begins(bytes) == Begin::Single
    }

    /// Takes one complete message of this stream; emits into `out` what it completes.
    pub(super) fn take(
        &mut self,
        rule: &MultilineRule,
        message: Message<'_>,
        now: Timestamp,
        settings: &Settings,
        out: &mut Batch,
    ) {
        self.saw(message.timestamp);
        if self.stale(&rule.limits, message.timestamp) {
            self.close(Closed::Timeout, rule, settings, out);
        }
        if self.open {
            match rule.continues(self.state, message.bytes) {
                Some(state) if message.bytes.is_empty() => {
                    // Joined only if more of the record follows.
                    self.blanks += 1;
                    self.end = message.end;
                    self.state = state;
                    self.last_ts = message.timestamp;
                    self.last_at = now;
                    return;
                }
                Some(state) => {
                    let limits = &rule.limits;
                    let lines = self.lines + self.blanks + 1;
                    let bytes = self.buf.len() + self.blanks + 1 + message.bytes.len();
                    if lines <= limits.max_lines && bytes <= limits.max_bytes {
                        self.append(message.bytes, limits.max_bytes);
                        self.lines = lines;
                        self.end = message.end;
                        self.state = state;
                        self.last_ts = message.timestamp;
                        self.last_at = now;
                        return;
                    }
                    let why = if lines > limits.max_lines {
                        Closed::MaxLines
                    } else {
                        Closed::MaxBytes
                    };
                    self.close(why, rule, settings, out);
                }
                None => self.close(Closed::Next, rule, settings, out),
            }
        }
        match rule.begins(message.bytes) {
            // A blank line starts nothing: it is a record of its own, as without multiline.
            Begin::Start(state) | Begin::Headless(state) if !message.bytes.is_empty() => {
                self.open(message, state, now);
            }
            _ => emit(
                out,
                message.bytes,
                message.timestamp,
                message.stream,
                message.offset,
                message.end,
                &settings.path,
            ),
        }
    }

    fn open(&mut self, message: Message<'_>, state: u16, now: Timestamp) {
        debug_assert!(!self.open && self.buf.is_empty());
        self.buf.extend_from_slice(message.bytes);
        self.open = true;
        self.stream = message.stream;
        self.timestamp = message.timestamp;
        self.offset = message.offset;
        self.end = message.end;
        self.lines = 1;
        self.blanks = 0;
        self.state = state;
        self.last_ts = message.timestamp;
        self.last_at = now;
    }

    /// Appends the held-back blank lines and `bytes`, each after a `\n`, growing the buffer
    /// geometrically but never past `max` (unless the first line alone was longer).
    fn append(&mut self, bytes: &[u8], max: usize) {
        let need = self.buf.len() + self.blanks + 1 + bytes.len();
        if need > self.buf.capacity() {
            let target = (self.buf.capacity() * 2).clamp(need, max.max(need));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.resize(self.buf.len() + self.blanks + 1, b'\n');
        self.buf.extend_from_slice(bytes);
        self.blanks = 0;
    }

    /// Emits the open record and forgets it.
    pub(super) fn close(
        &mut self,
        why: Closed,
        rule: &MultilineRule,
        settings: &Settings,
        out: &mut Batch,
    ) {
        debug_assert!(self.open);
        // A record a rotation cut starts in the previous generation; its length is both parts.
        let (offset, end) = match &self.carried {
            Some(c) => (c.offset, c.end + (self.end - self.offset)),
            None => (self.offset, self.end),
        };
        emit(
            out,
            &self.buf,
            self.timestamp,
            self.stream,
            offset,
            end,
            &settings.path,
        );
        if let Some(c) = self.carried.take() {
            debug_assert!(
                out.carried.is_none(),
                "one record carried into a generation"
            );
            if let Some(record) = out.records.last_mut() {
                record.carried = true;
            }
            out.carried = Some(Carried {
                prefix: c.prefix,
                ack: AckToken {
                    file: c.file,
                    start: c.offset,
                    end: c.end,
                },
            });
        }
        if self.lines > 1 || self.blanks > 0 {
            if self.spans.len() >= MAX_SPANS {
                // Another stream held the ack range back for long (a partial line that never
                // ended): one span over them all ends the range no later than each would, and
                // re-reading from a record's start is always safe.
                let start = self.spans.iter().map(|s| s.0).min().unwrap_or(self.offset);
                self.spans.clear();
                self.spans.push((start, self.end));
            } else {
                self.spans.push((self.offset, self.end));
            }
        }
        if self.lines > 1 {
            telemetry::multiline_joined(self.lines as u64);
        }
        match why {
            Closed::Timeout => telemetry::multiline_timeout(),
            Closed::MaxBytes => telemetry::multiline_cut(
                &settings.path,
                self.offset,
                telemetry::MultilineLimit::MaxBytes,
                rule.limits.max_bytes,
            ),
            Closed::MaxLines => telemetry::multiline_cut(
                &settings.path,
                self.offset,
                telemetry::MultilineLimit::MaxLines,
                rule.limits.max_lines,
            ),
            Closed::Next | Closed::Flush => {}
        }
        self.open = false;
        self.state = 0;
        self.lines = 0;
        self.blanks = 0;
        self.buf.clear();
        if self.buf.capacity() > RETAIN_BYTES {
            self.buf = Vec::new();
        }
    }

    /// `(offset, end)` of the emitted records that cover more than one physical line and end
    /// past the ack range: where the ack range must not end (module invariants).
    pub(super) fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// The ack range ends at `ack` now: a record that ends there or before can no longer be
    /// read again in part.
    pub(super) fn acked(&mut self, ack: u64) {
        self.spans.retain(|&(_, end)| end > ack);
    }
}

#[cfg(test)]
mod tests;
