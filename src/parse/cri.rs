//! The CRI log format written by containerd and CRI-O:
//! `<RFC 3339 timestamp> <stdout|stderr> <P|F> <message>`.
//!
//! `F` ends a record; `P` is a partial chunk (the runtime cut a long line, at 16 KiB by
//! default) joined with the following chunks *of the same stream* until an `F`: stdout and
//! stderr partials interleave, so each stream has its own pending assembly. The joined record has
//! the timestamp and offset of its first chunk and the end of its `F` line. A tag may carry
//! further `:`-separated tags (`F:x`), which are ignored as the kubelet ignores them. An empty
//! message (`... stdout F`, with or without the space) is a record with an empty message: an
//! empty println is a real event.
//!
//! A line longer than `max_line_bytes` arrives in pieces; its header is in the first, so it is
//! parsed there and the pieces feed the stream's assembly like one chunk.

use memchr::memchr;

use crate::parse::assemble::Locator;
use crate::parse::multiline::Message;
use crate::parse::{emit, joiner, slot_of, Line, LineParser, Piece, PieceTarget};
use crate::record::{Batch, Stream};
use crate::timestamp::{parse_rfc3339_prefix, Timestamp};

/// A parsed CRI header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// `F`: this chunk ends the record.
    pub full: bool,
    /// Where the message starts in the line.
    pub message: usize,
}

/// Parses the header of a CRI line (or of the first piece of one).
#[inline]
pub(super) fn parse_header(line: &[u8]) -> Result<Header, &'static str> {
    let (timestamp, len) = parse_rfc3339_prefix(line).ok_or("invalid timestamp")?;
    if line.get(len) != Some(&b' ') {
        return Err("invalid timestamp");
    }
    let stream = match line.get(len + 1..len + 8) {
        Some(b"stdout ") => Stream::Stdout,
        Some(b"stderr ") => Stream::Stderr,
        _ => return Err("unknown stream"),
    };
    // The tag is one letter, possibly followed by `:`-separated others; then a space or the end.
    let tag = len + 8;
    let full = match line.get(tag) {
        Some(b'F') => true,
        Some(b'P') => false,
        _ => return Err("invalid tag"),
    };
    let message = match line.get(tag + 1) {
        None => line.len(),
        Some(b' ') => tag + 2,
        Some(b':') => memchr(b' ', &line[tag + 1..]).map_or(line.len(), |i| tag + 1 + i + 1),
        Some(_) => return Err("invalid tag"),
    };
    Ok(Header {
        timestamp,
        stream,
        full,
        message,
    })
}

impl LineParser {
    /// A complete physical line of a CRI file.
    #[inline]
    pub(super) fn cri_whole(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        match parse_header(line.bytes) {
            Ok(header) => self.cri_record(header, line, now, out),
            Err(reason) => self.malformed(line, now, out, "cri", reason),
        }
    }

    /// Emits, starts, continues or completes the record of a parsed line.
    #[inline]
    pub(super) fn cri_record(
        &mut self,
        header: Header,
        line: Line<'_>,
        now: Timestamp,
        out: &mut Batch,
    ) {
        let message = &line.bytes[header.message..];
        let s = slot_of(header.stream);
        let slot = &mut self.slots[s];
        if header.full && !slot.is_open() {
            match self.multiline.as_deref() {
                // The usual line: straight into the batch.
                None => emit(
                    out,
                    message,
                    header.timestamp,
                    header.stream,
                    line.offset,
                    line.end,
                    &self.settings.path,
                ),
                Some(rule) => self.joins[s].take(
                    rule,
                    Message {
                        bytes: message,
                        timestamp: header.timestamp,
                        stream: header.stream,
                        offset: line.offset,
                        end: line.end,
                    },
                    now,
                    &self.settings,
                    out,
                ),
            }
            return;
        }
        self.cri_append(header, line, now, out);
        if header.full {
            let mut join = joiner(&self.multiline, &mut self.joins, self.format, s, now);
            self.slots[s].close(line.end, false, &self.settings, join.as_mut(), out);
        }
    }

    /// Appends the message of a CRI line, or of its first piece, to the record open on its
    /// stream, opening one first.
    #[inline]
    fn cri_append(&mut self, header: Header, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        let s = slot_of(header.stream);
        let slot = &mut self.slots[s];
        if !slot.is_open() {
            slot.open(header.stream, header.timestamp, line.offset, line.end);
        }
        let mut join = joiner(&self.multiline, &mut self.joins, self.format, s, now);
        slot.append(
            &line.bytes[header.message..],
            Locator::Plain(line.offset + header.message as u64),
            line.offset,
            line.end,
            &self.settings,
            join.as_mut(),
            out,
        );
    }

    /// The first piece of a CRI line longer than `max_line_bytes`: the header is here, the
    /// message continues in the next pieces.
    pub(super) fn cri_first(
        &mut self,
        header: Header,
        line: Line<'_>,
        now: Timestamp,
        out: &mut Batch,
    ) {
        debug_assert!(matches!(line.piece, Piece::First));
        let slot = slot_of(header.stream);
        self.piece = Some(PieceTarget {
            slot,
            line: line.offset,
            closes: header.full,
        });
        self.cri_append(header, line, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::parse::{FormatChoice, Oversize};
    use crate::telemetry::{self, metrics};

    const T0: i64 = 1_795_341_600_123_456_789; // 2026-11-22T10:00:00.123456789Z
    const T1: i64 = 1_795_341_601_000_000_000; // 2026-11-22T10:00:01Z

    #[test]
    fn parses_headers() {
        type Parsed<'a> = Result<(i64, Stream, bool, &'a str), &'a str>;
        const OUT: Stream = Stream::Stdout;
        const ERR: Stream = Stream::Stderr;
        let cases: &[(&str, Parsed)] = &[
            (
                "2026-11-22T10:00:00.123456789Z stdout F GET /healthz 200",
                Ok((T0, OUT, true, "GET /healthz 200")),
            ),
            (
                "2026-11-22T10:00:01Z stderr P partial ",
                Ok((T1, ERR, false, "partial ")),
            ),
            // CRI-O writes local offsets.
            (
                "2026-11-22T11:00:00.123456789+01:00 stdout F cri-o",
                Ok((T0, OUT, true, "cri-o")),
            ),
            ("2026-11-22T10:00:01Z stdout F", Ok((T1, OUT, true, ""))),
            ("2026-11-22T10:00:01Z stdout F ", Ok((T1, OUT, true, ""))),
            (
                "2026-11-22T10:00:01Z stdout F  two",
                Ok((T1, OUT, true, " two")),
            ),
            (
                "2026-11-22T10:00:01Z stdout F:x tagged",
                Ok((T1, OUT, true, "tagged")),
            ),
            ("2026-11-22T10:00:01Z stdout P:x", Ok((T1, OUT, false, ""))),
            ("", Err("invalid timestamp")),
            ("plain text from a VM", Err("invalid timestamp")),
            ("2026-11-22 10:00:01 stdout F x", Err("invalid timestamp")),
            ("2026-11-22T10:00:01Z stdin F x", Err("unknown stream")),
            ("2026-11-22T10:00:01Z stdout", Err("unknown stream")),
            ("2026-11-22T10:00:01Z stdout ", Err("invalid tag")),
            ("2026-11-22T10:00:01Z stdout X msg", Err("invalid tag")),
            ("2026-11-22T10:00:01Z stdout FP msg", Err("invalid tag")),
            ("2026-11-22T10:00:01Z  stdout F x", Err("unknown stream")),
        ];
        for (line, want) in cases {
            let got = parse_header(line.as_bytes())
                .map(|h| (h.timestamp.0, h.stream, h.full, &line[h.message..]));
            assert_eq!(got, *want, "{line:?}");
        }
    }

    #[test]
    fn emits_full_lines() {
        let line = "2026-11-22T10:00:00.123456789Z stdout F GET /healthz 200";
        let mut p = parser(FormatChoice::Cri, 1 << 20, Oversize::Split);
        let got = records(&mut p, &[whole(500, line)]);
        let end = 500 + line.len() as u64 + 1;
        assert_eq!(
            got,
            vec![Rec::new("GET /healthz 200", Stream::Stdout, T0, 500, end)]
        );
        assert_eq!(p.pending_start(), None);
    }

    #[test]
    fn empty_messages_are_records() {
        for line in [
            "2026-11-22T10:00:01Z stdout F",
            "2026-11-22T10:00:01Z stdout F ",
        ] {
            let mut p = parser(FormatChoice::Cri, 1 << 20, Oversize::Split);
            let got = records(&mut p, &[whole(0, line)]);
            assert_eq!(
                got,
                vec![Rec::new("", Stream::Stdout, T1, 0, line.len() as u64 + 1)]
            );
        }
    }

    #[test]
    fn joins_partials_per_stream() {
        // containerd cut a long stdout line in three; a stderr line and a stderr partial pair
        // are interleaved with it.
        let lines = [
            "2026-11-22T10:00:00.123456789Z stdout P {\"level\":\"info\",",
            "2026-11-22T10:00:00.2Z stderr F warning: disk 91% full",
            "2026-11-22T10:00:00.3Z stdout P \"msg\":\"caf\u{e9}\",",
            "2026-11-22T10:00:00.4Z stderr P error: ",
            "2026-11-22T10:00:00.5Z stdout F \"n\":1}",
            "2026-11-22T10:00:00.6Z stderr F connection reset",
        ];
        let (mut p, mut b) = cri();
        let mut pending = Vec::new();
        let offsets =
            push_lines_observed(&mut p, lines, &mut b, |p| pending.push(p.pending_start()));
        let o = |i: usize| offsets[i].0;
        let e = |i: usize| offsets[i].1;
        assert_eq!(
            pending,
            vec![Some(0), Some(0), Some(0), Some(0), Some(o(3)), None]
        );
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(
                    "warning: disk 91% full",
                    Stream::Stderr,
                    T0 - 123_456_789 + 200_000_000,
                    o(1),
                    e(1)
                ),
                Rec::new(
                    "{\"level\":\"info\",\"msg\":\"caf\u{e9}\",\"n\":1}",
                    Stream::Stdout,
                    T0,
                    0,
                    e(4)
                ),
                Rec::new(
                    "error: connection reset",
                    Stream::Stderr,
                    T0 - 123_456_789 + 400_000_000,
                    o(3),
                    e(5)
                ),
            ]
        );
    }

    #[test]
    fn a_character_cut_between_partials_is_whole_again() {
        let euro = "\u{20ac}".as_bytes();
        let mut first = b"2026-11-22T10:00:01Z stdout P price: 5".to_vec();
        first.extend_from_slice(&euro[..1]);
        let mut second = b"2026-11-22T10:00:01Z stdout F ".to_vec();
        second.extend_from_slice(&euro[1..]);
        let (mut p, mut b) = cri();
        let l1 = raw_line(0, &first);
        let l2 = raw_line(l1.end, &second);
        let end = l2.end;
        push(&mut p, l1, &mut b);
        push(&mut p, l2, &mut b);
        assert_eq!(
            collect(&b),
            vec![Rec::new("price: 5\u{20ac}", Stream::Stdout, T1, 0, end)]
        );
    }

    #[test]
    fn malformed_lines_are_kept_raw_and_partials_stay_pending() {
        let lines = [
            "2026-11-22T10:00:01Z stdout P half ",
            "garbage without a header",
            "2026-11-22T10:00:01Z stdin F wrong stream",
            "2026-11-22T10:00:01Z stdout F rest",
        ];
        let (mut p, mut b) = cri();
        let malformed = telemetry::get(&metrics().malformed_lines);
        let spans = push_lines(&mut p, lines, &mut b);
        assert!(telemetry::get(&metrics().malformed_lines) >= malformed + 2);
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(lines[1], Stream::Unknown, NOW, spans[1].0, spans[1].1),
                Rec::new(lines[2], Stream::Unknown, NOW, spans[2].0, spans[2].1),
                Rec::new("half rest", Stream::Stdout, T1, 0, spans[3].1),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let line = b"2026-11-22T10:00:01Z stdout F bad \xff\xc3 bytes \xe2\x82";
        let before = telemetry::get(&metrics().invalid_utf8_lines);
        let (mut p, mut b) = cri();
        push(&mut p, raw_line(0, line), &mut b);
        assert_eq!(
            collect(&b),
            vec![Rec::new(
                "bad \u{fffd}\u{fffd} bytes \u{fffd}",
                Stream::Stdout,
                T1,
                0,
                line.len() as u64 + 1
            )]
        );
        assert!(telemetry::get(&metrics().invalid_utf8_lines) > before);
    }

    #[test]
    fn long_lines_in_pieces_split() {
        // max 64: the reader hands this 130-byte line over as 64 + 64 + 2.
        let msg = letters(100);
        let line = format!("2026-11-22T10:00:01Z stdout F {msg}");
        assert_eq!(line.len(), 130);
        let header = 21 + 9; // timestamp, space, "stdout F "
        let split = telemetry::get(&metrics().oversize_lines_split);
        let mut p = parser(FormatChoice::Cri, 64, Oversize::Split);
        let mut b = batch();
        let mut pending = Vec::new();
        for l in pieces(1000, line.as_bytes(), 64) {
            push(&mut p, l, &mut b);
            pending.push(p.pending_start());
        }
        assert_eq!(pending, vec![Some(1000), Some(1000), None]);
        // The first record takes the 34 message bytes of the first piece and 30 of the second;
        // the second starts at the message byte 64 bytes further.
        let second = 1000 + header as u64 + 64;
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(&msg[..64], Stream::Stdout, T1, 1000, second),
                Rec::new(&msg[64..], Stream::Stdout, T1, second, 1131),
            ]
        );
        assert!(telemetry::get(&metrics().oversize_lines_split) > split);
    }

    #[test]
    fn long_lines_in_pieces_truncate() {
        let msg = letters(100);
        let line = format!("2026-11-22T10:00:01Z stdout F {msg}");
        let mut p = parser(FormatChoice::Cri, 64, Oversize::Truncate);
        let mut b = batch();
        let discarded = telemetry::get(&metrics().oversize_bytes_discarded);
        for l in pieces(0, line.as_bytes(), 64) {
            push(&mut p, l, &mut b);
        }
        assert_eq!(
            collect(&b),
            vec![Rec::new(&msg[..64], Stream::Stdout, T1, 0, 131)]
        );
        assert!(telemetry::get(&metrics().oversize_bytes_discarded) >= discarded + 36);
    }

    #[test]
    fn joined_partials_past_max_split_and_truncate() {
        // Three 40-byte partials and an F: 160 message bytes with max 64.
        let mut lines = Vec::new();
        for (i, tag) in ["P", "P", "P", "F"].iter().enumerate() {
            lines.push(format!(
                "2026-11-22T10:00:01Z stdout {tag} {}",
                letters(40)[..].replace('a', &i.to_string())
            ));
        }
        let msg: String = lines.iter().map(|l| &l[30..]).collect();
        let mut spans = Vec::new();
        let mut at = 0;
        for l in &lines {
            spans.push(at);
            at += l.len() as u64 + 1;
        }
        let body = |i: usize, k: u64| spans[i] + 30 + k; // offset of message byte k of line i

        let mut p = parser(FormatChoice::Cri, 64, Oversize::Split);
        let mut b = batch();
        let mut pending = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            push(&mut p, whole(spans[i], l), &mut b);
            pending.push(p.pending_start());
        }
        // 64 = 40 + 24: the second record starts 24 bytes into line 1 and is re-read from line 1
        // after a crash; the third 8 bytes into line 3.
        assert_eq!(pending, vec![Some(0), Some(spans[1]), Some(spans[1]), None]);
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(&msg[..64], Stream::Stdout, T1, 0, body(1, 24)),
                Rec::new(&msg[64..128], Stream::Stdout, T1, body(1, 24), body(3, 8)),
                Rec::new(&msg[128..], Stream::Stdout, T1, body(3, 8), at),
            ]
        );

        let mut p = parser(FormatChoice::Cri, 64, Oversize::Truncate);
        let mut b = batch();
        let mut pending = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            push(&mut p, whole(spans[i], l), &mut b);
            pending.push(p.pending_start());
        }
        assert_eq!(pending, vec![Some(0), Some(0), Some(0), None]);
        assert_eq!(
            collect(&b),
            vec![Rec::new(&msg[..64], Stream::Stdout, T1, 0, at)]
        );
    }

    #[test]
    fn a_split_keeps_characters_whole() {
        // "é" (2 bytes) astride byte 64 of the message: the cut moves before it.
        let msg = format!("{}\u{e9}{}", letters(63), letters(20));
        let line = format!("2026-11-22T10:00:01Z stdout F {msg}");
        let mut p = parser(FormatChoice::Cri, 64, Oversize::Split);
        let mut b = batch();
        let ps = pieces(0, line.as_bytes(), 64);
        let end = ps.last().unwrap().end;
        for l in ps {
            push(&mut p, l, &mut b);
        }
        assert_eq!(
            collect(&b),
            vec![
                Rec::new(&msg[..63], Stream::Stdout, T1, 0, 30 + 63),
                Rec::new(&msg[63..], Stream::Stdout, T1, 30 + 63, end),
            ]
        );
    }

    #[test]
    fn a_partial_in_pieces_stays_pending() {
        // A P line longer than max, then its F.
        let p_line = format!("2026-11-22T10:00:01Z stderr P {}", letters(50));
        let f_line = "2026-11-22T10:00:02Z stderr F end";
        let mut p = parser(FormatChoice::Cri, 64, Oversize::Split);
        let mut b = batch();
        let ps = pieces(0, p_line.as_bytes(), 64);
        assert_eq!(ps.len(), 2);
        let f = whole(ps[1].end, f_line);
        let end = f.end;
        for l in ps {
            push(&mut p, l, &mut b);
        }
        assert_eq!(p.pending_start(), Some(0));
        assert!(b.records.is_empty());
        push(&mut p, f, &mut b);
        assert_eq!(p.pending_start(), None);
        assert_eq!(
            collect(&b),
            vec![Rec::new(
                &format!("{}end", letters(50)),
                Stream::Stderr,
                T1,
                0,
                end
            )]
        );
    }
}
