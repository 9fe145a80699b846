//! Raw lines: plain VM logs, and the fallback for anything that does not parse in its file's
//! format.
//!
//! The message is the line without a trailing `\r` (files written on or for Windows), the
//! timestamp the time it was read, the stream unknown. An empty line carries no message: it is
//! skipped and counted (`empty_lines`), its bytes still acknowledged. A malformed CRI or docker
//! line is kept whole as raw text, counted and warned about through
//! `telemetry::malformed_line`, never dropped; pending partials of the file's streams are not
//! affected by it. A raw line longer than `max_line_bytes` comes in pieces that go through the
//! parser's raw assembly, which splits or truncates it like any other oversize message.

use crate::parse::assemble::Locator;
use crate::parse::multiline::Message;
use crate::parse::{emit, joiner, Format, Line, LineParser, PieceTarget, RAW};
use crate::record::{Batch, Stream};
use crate::telemetry::{self, metrics};
use crate::timestamp::Timestamp;

/// `bytes` without one trailing `\r`.
#[inline]
pub(super) fn strip_cr(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Counts an empty line, which is skipped.
pub(super) fn count_empty() {
    telemetry::add(&metrics().empty_lines, 1);
}

impl LineParser {
    /// A complete raw line.
    #[inline]
    pub(super) fn raw_whole(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        let text = strip_cr(line.bytes);
        if text.is_empty() {
            count_empty();
            return;
        }
        match self.multiline.as_deref() {
            Some(rule) if self.format == Some(Format::Raw) => {
                let message = Message {
                    bytes: text,
                    timestamp: now,
                    stream: Stream::Unknown,
                    offset: line.offset,
                    end: line.end,
                };
                self.joins[RAW].take(rule, message, now, &self.settings, out);
            }
            _ => emit(
                out,
                text,
                now,
                Stream::Unknown,
                line.offset,
                line.end,
                &self.settings.path,
            ),
        }
    }

    /// A complete line that did not parse as `format`: kept as raw text, counted and warned.
    pub(super) fn malformed(
        &mut self,
        line: Line<'_>,
        now: Timestamp,
        out: &mut Batch,
        format: &str,
        reason: &str,
    ) {
        if !strip_cr(line.bytes).is_empty() {
            telemetry::malformed_line(&self.settings.path, line.offset, format, reason);
        }
        self.raw_whole(line, now, out);
    }

    /// The first piece of a line longer than `max_line_bytes` kept as raw text; the next pieces
    /// follow it into the raw assembly.
    pub(super) fn raw_first(&mut self, line: Line<'_>, now: Timestamp, out: &mut Batch) {
        let assembly = &mut self.slots[RAW];
        let mut join = joiner(&self.multiline, &mut self.joins, self.format, RAW, now);
        if assembly.is_open() {
            // Only if the reader broke its contract (a First before the previous Last).
            let end = assembly.end();
            assembly.close(end, true, &self.settings, join.as_mut(), out);
        }
        assembly.open(Stream::Unknown, now, line.offset, line.end);
        assembly.append(
            line.bytes,
            Locator::Plain(line.offset),
            line.offset,
            line.end,
            &self.settings,
            join.as_mut(),
            out,
        );
        self.piece = Some(PieceTarget {
            slot: RAW,
            line: line.offset,
            closes: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::parse::{FormatChoice, Oversize};
    use crate::record::Stream;
    use crate::telemetry::{self, metrics};

    #[test]
    fn raw_lines() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                b"Nov 22 10:00:00 node-1 kubelet[812]: started",
                Some("Nov 22 10:00:00 node-1 kubelet[812]: started"),
            ),
            (b"windows line\r", Some("windows line")),
            (b"only the last \r\r", Some("only the last \r")),
            (b"  indented  ", Some("  indented  ")),
            (b"bad \xff utf-8", Some("bad \u{fffd} utf-8")),
            (b"nul \x00 byte", Some("nul \0 byte")),
            (b"", None),
            (b"\r", None),
        ];
        for (bytes, want) in cases {
            let mut p = parser(FormatChoice::Raw, 1 << 20, Oversize::Split);
            let empty = telemetry::get(&metrics().empty_lines);
            let mut b = batch();
            push(&mut p, raw_line(40, bytes), &mut b);
            let end = 41 + bytes.len() as u64;
            let want: Vec<Rec> = want
                .iter()
                .map(|m| Rec::new(m, Stream::Unknown, NOW, 40, end))
                .collect();
            assert_eq!(collect(&b), want, "{bytes:?}");
            if want.is_empty() {
                assert!(telemetry::get(&metrics().empty_lines) > empty);
            }
            assert_eq!(p.pending_start(), None);
        }
    }

    #[test]
    fn raw_lines_that_look_like_cri_stay_raw() {
        let line = "2026-11-22T10:00:01Z stdout F not parsed in a raw file";
        let mut p = parser(FormatChoice::Raw, 1 << 20, Oversize::Split);
        let got = records(&mut p, &[whole(0, line)]);
        assert_eq!(
            got,
            vec![Rec::new(
                line,
                Stream::Unknown,
                NOW,
                0,
                line.len() as u64 + 1
            )]
        );
    }

    #[test]
    fn long_raw_lines_split_at_piece_offsets() {
        // 10 + 10 + 5 with max 10: records at the offsets of their first bytes, the last
        // record's end covering the newline.
        let line = b"0123456789abcdefghijKLMNO";
        let mut p = parser(FormatChoice::Raw, 10, Oversize::Split);
        let mut b = batch();
        let mut pending = Vec::new();
        for l in pieces(100, line, 10) {
            push(&mut p, l, &mut b);
            pending.push(p.pending_start());
        }
        assert_eq!(pending, vec![Some(100), Some(100), None]);
        assert_eq!(
            collect(&b),
            vec![
                Rec::new("0123456789", Stream::Unknown, NOW, 100, 110),
                Rec::new("abcdefghij", Stream::Unknown, NOW, 110, 120),
                Rec::new("KLMNO", Stream::Unknown, NOW, 120, 126),
            ]
        );
    }

    #[test]
    fn long_raw_lines_of_exact_multiples() {
        // 20 bytes with max 10 come as First(10) and Last(10): the last record carries the
        // newline. A final "\r" alone in the Last piece leaves no empty record behind.
        type Expected<'a> = &'a [(&'a str, u64, u64)];
        let cases: &[(&[u8], Expected)] = &[
            (
                b"0123456789abcdefghij",
                &[("0123456789", 0, 10), ("abcdefghij", 10, 21)],
            ),
            (
                b"0123456789abcdefghij\r",
                &[("0123456789", 0, 10), ("abcdefghij", 10, 22)],
            ),
            (b"0123456789\r", &[("0123456789", 0, 12)]),
        ];
        for (line, want) in cases {
            let mut p = parser(FormatChoice::Raw, 10, Oversize::Split);
            let got = records(&mut p, &pieces(0, line, 10));
            let want: Vec<Rec> = want
                .iter()
                .map(|(m, o, e)| Rec::new(m, Stream::Unknown, NOW, *o, *e))
                .collect();
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[test]
    fn long_raw_lines_truncate() {
        let line = b"0123456789abcdefghijKLMNO";
        let mut p = parser(FormatChoice::Raw, 10, Oversize::Truncate);
        let truncated = telemetry::get(&metrics().oversize_lines_truncated);
        let got = records(&mut p, &pieces(100, line, 10));
        assert_eq!(
            got,
            vec![Rec::new("0123456789", Stream::Unknown, NOW, 100, 126)]
        );
        assert!(telemetry::get(&metrics().oversize_lines_truncated) > truncated);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        // "€" (3 bytes) at bytes 8..11: truncation to 10 keeps 8 bytes rather than half of it.
        let line = "01234567\u{20ac}abcdef".as_bytes();
        let mut p = parser(FormatChoice::Raw, 10, Oversize::Truncate);
        let got = records(&mut p, &pieces(0, line, 10));
        assert_eq!(
            got,
            vec![Rec::new(
                "01234567",
                Stream::Unknown,
                NOW,
                0,
                line.len() as u64 + 1
            )]
        );
    }
}
