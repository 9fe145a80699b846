//! The docker json-file format: one JSON object per line,
//! `{"log":"GET / 200\n","stream":"stdout","time":"2026-11-22T10:00:00.123456789Z"}`.
//!
//! Docker writes the keys in the order `log`, `stream`, `attrs` (only with `--log-opt labels`,
//! `env` or `tag`), `time`; a fast path matches exactly that and decodes `log` straight into the
//! batch text, without allocating. Anything else (other key orders, whitespace, escaped keys) goes
//! through serde_json. A `log` that does not end in `\n` is a line docker split at 16 KiB: it is
//! joined with the following lines of the same stream until one ends in `\n`, which is dropped.
//!
//! A line longer than `max_line_bytes` reaches the parser in pieces and cannot be decoded as
//! JSON; the parser keeps it as raw text, counted as malformed (`parse::raw`).

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use crate::parse::assemble::{Locator, RETAIN_BYTES};
use crate::parse::multiline::Message;
use crate::parse::{joiner, slot_of, Line, LineParser};
use crate::record::{Batch, Record, Stream};
use crate::telemetry;
use crate::timestamp::{parse_rfc3339, Timestamp};

/// What the fast path expects a line to start with.
const PREFIX: &[u8] = br#"{"log":""#;

/// A parsed line. Its `log`, decoded, is the end of the batch text from `start`.
pub(super) struct Parsed {
    pub stream: Stream,
    pub timestamp: Timestamp,
    /// Where the decoded `log` starts in the batch text.
    pub start: usize,
    /// Invalid UTF-8 or a lone surrogate was replaced.
    pub invalid: bool,
    /// The escaped `log` inside the line, when the fast path found it: it maps decoded bytes
    /// back to file offsets for split records.
    pub escaped: Option<Range<usize>>,
}

/// Parses `line`, appending its decoded `log` to `text`. On error `text` is left as it was.
pub(super) fn parse(line: &[u8], text: &mut String) -> Result<Parsed, &'static str> {
    let start = text.len();
    if let Some(body) = line.strip_prefix(PREFIX) {
        if let Some((quote, invalid)) = super::json::decode_str(body, text) {
            if let Some((stream, timestamp)) = fast_rest(&body[quote + 1..]) {
                return Ok(Parsed {
                    stream,
                    timestamp,
                    start,
                    invalid,
                    escaped: Some(PREFIX.len()..PREFIX.len() + quote),
                });
            }
        }
        text.truncate(start);
    }
    parse_any_order(line, text, start)
}

/// What follows `log` on the fast path: `,"stream":"stdout",["attrs":{...},]"time":"..."}`.
#[inline]
fn fast_rest(rest: &[u8]) -> Option<(Stream, Timestamp)> {
    let rest = rest.strip_prefix(br#","stream":""#)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(br#"stdout","#) {
        (Stream::Stdout, r)
    } else {
        (Stream::Stderr, rest.strip_prefix(br#"stderr","#)?)
    };
    let rest = match rest.strip_prefix(br#""attrs":"#) {
        Some(attrs) => attrs[super::json::skip_object(attrs)?..].strip_prefix(b",")?,
        None => rest,
    };
    let time = rest.strip_prefix(br#""time":""#)?.strip_suffix(br#""}"#)?;
    Some((stream, parse_rfc3339(time)?))
}

/// The slow path: any key order and layout, through serde_json.
fn parse_any_order(line: &[u8], text: &mut String, start: usize) -> Result<Parsed, &'static str> {
    #[derive(Deserialize)]
    struct DockerLine<'a> {
        #[serde(borrow)]
        log: Cow<'a, str>,
        #[serde(borrow)]
        stream: Cow<'a, str>,
        #[serde(borrow)]
        time: Cow<'a, str>,
    }
    let parsed: DockerLine<'_> =
        serde_json::from_slice(line).map_err(|_| "not a docker json-file object")?;
    let stream = match &*parsed.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err("unknown stream"),
    };
    let timestamp = parse_rfc3339(parsed.time.as_bytes()).ok_or("invalid time")?;
    text.push_str(&parsed.log);
    Ok(Parsed {
        stream,
        timestamp,
        start,
        invalid: false,
        escaped: None,
    })
}

impl LineParser {
    /// A complete physical line of a docker file.
    pub(super) fn docker_whole(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        match parse(line.bytes, &mut out.text) {
            Ok(parsed) => self.docker_record(parsed, line, now, out),
            Err(reason) => self.malformed(line, now, out, "docker", reason),
        }
    }

    /// Completes, starts or continues the record of a parsed line.
    pub(super) fn docker_record(
        &mut self,
        parsed: Parsed,
        line: Line<'_>,
        now: Timestamp,
        out: &mut Batch,
    ) {
        if parsed.invalid {
            telemetry::invalid_utf8(&self.settings.path, line.offset);
        }
        let complete = out.text.as_bytes()[parsed.start..].last() == Some(&b'\n');
        let s = slot_of(parsed.stream);
        let slot = &mut self.slots[s];
        if complete && !slot.is_open() {
            let decoded = &out.text.as_bytes()[parsed.start..out.text.len() - 1];
            match self.multiline.as_deref() {
                Some(rule) if !self.joins[s].passes(rule, decoded) => {
                    // Joined: the message moves from the batch to the join, which may emit
                    // into the batch text.
                    self.scratch.clear();
                    self.scratch.extend_from_slice(decoded);
                    out.text.truncate(parsed.start);
                    let message = Message {
                        bytes: &self.scratch,
                        timestamp: parsed.timestamp,
                        stream: parsed.stream,
                        offset: line.offset,
                        end: line.end,
                    };
                    self.joins[s].take(rule, message, now, &self.settings, out);
                }
                _ => {
                    // The usual line: the decoded text is the message, in place.
                    self.joins[s].saw(parsed.timestamp);
                    out.text.pop();
                    out.records.push(Record {
                        timestamp: parsed.timestamp,
                        stream: parsed.stream,
                        message: parsed.start..out.text.len(),
                        offset: line.offset,
                        end: line.end,
                        carried: false,
                    });
                }
            }
            return;
        }
        // Part of a split line: the decoded text moves from the batch to the assembly (the
        // assembly may emit into the batch text, so it cannot be read from there).
        let decoded_end = out.text.len() - usize::from(complete);
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&out.text.as_bytes()[parsed.start..decoded_end]);
        out.text.truncate(parsed.start);
        let at = match parsed.escaped {
            Some(range) => Locator::Json {
                escaped: &line.bytes[range.clone()],
                start: line.offset + range.start as u64,
            },
            // Past the `{`, so that no split offset equals the line's own.
            None => Locator::Spread {
                start: line.offset + 1,
                len: line.bytes.len() as u64 - 1,
            },
        };
        if !slot.is_open() {
            slot.open(parsed.stream, parsed.timestamp, line.offset, line.end);
        }
        let mut join = joiner(&self.multiline, &mut self.joins, self.format, s, now);
        slot.append(
            &self.scratch,
            at,
            line.offset,
            line.end,
            &self.settings,
            join.as_mut(),
            out,
        );
        if complete {
            slot.close(line.end, false, &self.settings, join.as_mut(), out);
        }
        if self.scratch.capacity() > RETAIN_BYTES {
            self.scratch = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::parse::{FormatChoice, Oversize};

    const T0: i64 = 1_795_341_600_123_456_789; // 2026-11-22T10:00:00.123456789Z
    const T1: i64 = 1_795_341_601_000_000_000; // 2026-11-22T10:00:01Z

    fn dk(log: &str, stream: &str, time: &str) -> String {
        format!(
            r#"{{"log":{},"stream":"{stream}","time":"{time}"}}"#,
            serde_json::to_string(log).unwrap()
        )
    }

    #[test]
    fn parses_docker_lines() {
        let cases: &[(&str, &str, Stream, i64)] = &[
            (
                r#"{"log":"GET /healthz 200\n","stream":"stdout","time":"2026-11-22T10:00:00.123456789Z"}"#,
                "GET /healthz 200",
                Stream::Stdout,
                T0,
            ),
            (
                r#"{"log":"panic: boom\n","stream":"stderr","time":"2026-11-22T10:00:01Z"}"#,
                "panic: boom",
                Stream::Stderr,
                T1,
            ),
            // attrs (--log-opt tag / labels), on the fast path.
            (
                r#"{"log":"tagged\n","stream":"stdout","attrs":{"tag":"web/{\"x\"}","app":"shop"},"time":"2026-11-22T10:00:01Z"}"#,
                "tagged",
                Stream::Stdout,
                T1,
            ),
            // Another key order and whitespace: serde_json.
            (
                r#"{"time":"2026-11-22T10:00:01Z", "stream":"stderr", "log":"reordered\n"}"#,
                "reordered",
                Stream::Stderr,
                T1,
            ),
            (
                r#"{"log":"say \"hi\" C:\\tmp\tcaf\u00e9 \ud83d\ude00 nul\u0000.\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}"#,
                "say \"hi\" C:\\tmp\tcaf\u{e9} \u{1f600} nul\0.",
                Stream::Stdout,
                T1,
            ),
            // An empty println.
            (
                r#"{"log":"\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}"#,
                "",
                Stream::Stdout,
                T1,
            ),
            // Docker's own nanoseconds with trailing zeros trimmed, and CRLF kept as written.
            (
                r#"{"log":"dos\r\n","stream":"stdout","time":"2026-11-22T10:00:00.1234Z"}"#,
                "dos\r",
                Stream::Stdout,
                1_795_341_600_123_400_000,
            ),
        ];
        for (line, message, stream, ts) in cases {
            let mut p = parser(FormatChoice::Docker, 1 << 20, Oversize::Split);
            let got = records(&mut p, &[whole(1000, line)]);
            assert_eq!(
                got,
                vec![Rec::new(
                    message,
                    *stream,
                    *ts,
                    1000,
                    1000 + line.len() as u64 + 1
                )],
                "{line}"
            );
        }
    }

    #[test]
    fn joins_lines_split_at_16k_per_stream() {
        let a = dk("first half, ", "stdout", "2026-11-22T10:00:00.123456789Z");
        let e = dk("err whole\n", "stderr", "2026-11-22T10:00:00.5Z");
        let c = dk("second half\n", "stdout", "2026-11-22T10:00:01Z");
        let mut p = parser(FormatChoice::Docker, 1 << 20, Oversize::Split);
        let mut b = batch();
        let la = whole(0, &a);
        let le = whole(la.end, &e);
        let lb = whole(le.end, &c);
        let (a_end, e_end, b_end) = (la.end, le.end, lb.end);
        push(&mut p, la, &mut b);
        assert_eq!(p.pending_start(), Some(0));
        push(&mut p, le, &mut b);
        assert_eq!(p.pending_start(), Some(0));
        push(&mut p, lb, &mut b);
        assert_eq!(p.pending_start(), None);
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(
                    "err whole",
                    Stream::Stderr,
                    1_795_341_600_500_000_000,
                    a_end,
                    e_end
                ),
                Rec::new("first half, second half", Stream::Stdout, T0, 0, b_end),
            ]
        );
    }

    #[test]
    fn malformed_docker_lines_are_kept_raw() {
        let now = NOW;
        let cases: &[&str] = &[
            "not json at all",
            r#"{"log":"no end"#,
            r#"{"log":"x\n","stream":"console","time":"2026-11-22T10:00:01Z"}"#,
            r#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#,
            r#"{"log":"x\n","stream":"stdout"}"#,
            r#"{"log":"bad \x escape\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}"#,
            r#"["log","stream","time"]"#,
        ];
        for line in cases {
            let mut p = parser(FormatChoice::Docker, 1 << 20, Oversize::Split);
            let before = telemetry::get(&telemetry::metrics().malformed_lines);
            let got = records(&mut p, &[whole(7, line)]);
            assert_eq!(
                got,
                vec![Rec::new(
                    line,
                    Stream::Unknown,
                    now,
                    7,
                    8 + line.len() as u64
                )],
                "{line}"
            );
            assert!(telemetry::get(&telemetry::metrics().malformed_lines) > before);
        }
    }

    #[test]
    fn a_malformed_line_leaves_pending_splits_alone() {
        let a = dk("half ", "stdout", "2026-11-22T10:00:01Z");
        let b = dk("rest\n", "stdout", "2026-11-22T10:00:02Z");
        let mut p = parser(FormatChoice::Docker, 1 << 20, Oversize::Split);
        let la = whole(0, &a);
        let bad = whole(la.end, "{garbage");
        let lb = whole(bad.end, &b);
        let (bad_off, bad_end, b_end) = (bad.offset, bad.end, lb.end);
        let got = records(&mut p, &[la, bad, lb]);
        assert_eq!(
            got,
            vec![
                Rec::new("{garbage", Stream::Unknown, NOW, bad_off, bad_end),
                Rec::new("half rest", Stream::Stdout, T1, 0, b_end),
            ]
        );
    }

    #[test]
    fn invalid_utf8_in_a_docker_line_is_replaced() {
        let mut line = br#"{"log":"bad "#.to_vec();
        line.extend_from_slice(b"\xff\xfe");
        line.extend_from_slice(br#" end\n","stream":"stdout","time":"2026-11-22T10:00:01Z"}"#);
        let mut p = parser(FormatChoice::Docker, 1 << 20, Oversize::Split);
        let mut b = batch();
        let n = line.len() as u64;
        push(
            &mut p,
            Line {
                bytes: &line,
                piece: crate::parse::Piece::Whole,
                offset: 0,
                end: n + 1,
            },
            &mut b,
        );
        assert_eq!(
            collect(&b),
            vec![Rec::new(
                "bad \u{fffd}\u{fffd} end",
                Stream::Stdout,
                T1,
                0,
                n + 1
            )]
        );
    }

    #[test]
    fn oversize_joins_split_at_escape_offsets() {
        // Each line fits in max_line_bytes (100), the joined message does not. `\u00e9` is 6
        // escaped bytes for 2 decoded ones, so the split offset must be mapped through it.
        let time = "2026-11-22T10:00:01Z";
        let l1 = dk(&letters(40), "stdout", time);
        let l2 = dk(&letters(40), "stdout", time);
        let l3 = format!(
            r#"{{"log":"\u00e9{}\n","stream":"stdout","time":"{time}"}}"#,
            letters(30)
        );
        let l4 = format!(
            r#"{{"log":"{}\u00e9{}\n","stream":"stdout","time":"{time}"}}"#,
            letters(19),
            letters(11)
        );
        let cases = [
            // 80 held + "é" + 30: the cut falls after "é" + 18 letters, escaped 6 + 18 bytes in.
            (
                &l3,
                format!("{}{}\u{e9}{}", letters(40), letters(40), letters(18)),
                6 + 18,
                letters(30)[18..].to_string(),
            ),
            // 80 held + 19 letters + "é" astride the cut: it moves before "é", 19 bytes in.
            (
                &l4,
                format!("{}{}{}", letters(40), letters(40), letters(19)),
                19,
                format!("\u{e9}{}", letters(11)),
            ),
        ];
        for (last, first, cut_in_body, rest) in cases {
            let mut p = parser(FormatChoice::Docker, 100, Oversize::Split);
            let w1 = whole(0, &l1);
            let w2 = whole(w1.end, &l2);
            let w3 = whole(w2.end, last);
            assert!(w3.bytes.len() < 100);
            let body = w3.offset + PREFIX.len() as u64;
            let end = w3.end;
            let got = records(&mut p, &[w1, w2, w3]);
            assert_eq!(
                got,
                vec![
                    Rec::new(&first, Stream::Stdout, T1, 0, body + cut_in_body),
                    Rec::new(&rest, Stream::Stdout, T1, body + cut_in_body, end),
                ],
                "{last}"
            );
        }
    }

    mod model {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Docker's encoding of one line, with non-ASCII written as `\u` escapes (as some
        /// encoders do) so that split offsets are mapped through them.
        fn encode(log: &str, stream: &str) -> String {
            let escaped = serde_json::to_string(log)
                .unwrap()
                .replace('\u{e9}', "\\u00e9")
                .replace('\u{1f600}', "\\ud83d\\ude00");
            format!(r#"{{"log":{escaped},"stream":"{stream}","time":"2026-11-22T10:00:01Z"}}"#)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// A stdout message split over several docker lines, with whole stderr lines in
            /// between: the stdout message is joined again (in records of at most `max` bytes,
            /// at distinct offsets inside the lines' escaped text), the stderr lines unaffected.
            #[test]
            fn split_lines_join_again(
                chunks in vec(("[a-z \"\\\\\t\u{0}\u{e9}\u{1f600}]{1,30}", any::<bool>()), 1..8),
                max in 100usize..400,
            ) {
                let mut lines = Vec::new();
                let mut errs = Vec::new();
                for (i, (chunk, err)) in chunks.iter().enumerate() {
                    let last = i + 1 == chunks.len();
                    let log = if last { format!("{chunk}\n") } else { chunk.clone() };
                    lines.push(encode(&log, "stdout"));
                    if *err {
                        errs.push(format!("err {i}"));
                        lines.push(encode(&format!("err {i}\n"), "stderr"));
                    }
                }
                let mut p = parser(FormatChoice::Docker, max, Oversize::Split);
                let mut b = batch();
                let mut at = 0;
                let mut bodies = Vec::new();
                for line in &lines {
                    prop_assume!(line.len() <= max);
                    let l = whole(at, line);
                    bodies.push(l.offset + PREFIX.len() as u64..l.end);
                    at = l.end;
                    push(&mut p, l, &mut b);
                }
                prop_assert_eq!(p.pending_start(), None);
                let got = collect(&b);
                let out: Vec<&Rec> = got.iter().filter(|r| r.stream == Stream::Stdout).collect();
                let err: Vec<&str> = got
                    .iter()
                    .filter(|r| r.stream == Stream::Stderr)
                    .map(|r| r.message.as_str())
                    .collect();
                prop_assert_eq!(err, errs.iter().map(String::as_str).collect::<Vec<_>>());
                let joined: String = out.iter().map(|r| r.message.as_str()).collect();
                let want: String = chunks.iter().map(|(c, _)| c.as_str()).collect();
                prop_assert_eq!(joined, want);
                prop_assert_eq!(out[0].offset, 0);
                for w in out.windows(2) {
                    prop_assert!(w[0].message.len() <= max);
                    prop_assert_eq!(w[0].end, w[1].offset);
                    prop_assert!(w[1].offset > w[0].offset);
                    prop_assert!(bodies.iter().any(|r| r.contains(&w[1].offset)));
                }
            }
        }
    }
}
