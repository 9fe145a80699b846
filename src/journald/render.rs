//! A journal entry -> a record of a batch: its message and time, and its own document fields
//! (`record::Own`), rendered here once so that encoding splices them like a file's fragment.
//!
//! ECS names (README, "journald"): `log.syslog.priority` and `log.level` from `PRIORITY`,
//! `systemd.unit` from `_SYSTEMD_UNIT`, `process.pid` from `_PID`, `process.name` from
//! `SYSLOG_IDENTIFIER` (else `_COMM`), `host.name` from `_HOSTNAME` (else the node name), and,
//! with `journald.all_fields`, every other field under `journald.*` with a lower-case name.

use std::fmt::Write as _;

use crate::process::json::write_str;
use crate::record::{Batch, Own, Span, Stream};
use crate::timestamp::Timestamp;

use super::file::Entry;
use super::JournaldSettings;

/// The syslog names of the priorities, as journalctl prints them (`-p`).
const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Fields with a place of their own in the document (`__`-prefixed ones, journald's addresses,
/// are never fields of an entry).
const MAPPED: [&[u8]; 6] = [
    b"MESSAGE",
    b"PRIORITY",
    b"_SYSTEMD_UNIT",
    b"_PID",
    b"SYSLOG_IDENTIFIER",
    b"_HOSTNAME",
];

/// Scratch space reused for every entry.
#[derive(Default)]
pub struct Renderer {
    extra: Vec<(String, String)>,
}

impl Renderer {
    /// Appends `entry`, the entry at `index` of its file, to `batch` as a record with its own
    /// fields. `node_name` is the host the documents name by default. Returns the bytes of the
    /// message cut off past `settings.max_message_bytes` (0 for none).
    pub fn push(
        &mut self,
        batch: &mut Batch,
        entry: &Entry,
        index: u64,
        node_name: &str,
        settings: &JournaldSettings,
    ) -> usize {
        let micros = i64::try_from(entry.realtime).unwrap_or(i64::MAX / 1000);
        let timestamp = Timestamp(micros.saturating_mul(1000));
        // Invalid UTF-8 is replaced, as in a file's lines.
        let message = String::from_utf8_lossy(entry.get(b"MESSAGE").unwrap_or_default());
        let message = message.trim_end_matches(['\n', '\r']);
        let end = bounded(message, settings.max_message_bytes);
        let cut = message.len() - end;
        let message = &message[..end];
        batch.push(timestamp, Stream::Unknown, message, index, index + 1);

        let own = &mut batch.own;
        let mut o = Own::default();
        let priority = entry
            .get(b"PRIORITY")
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.trim().parse::<u8>().ok())
            .filter(|p| *p < 8);
        if let Some(p) = priority {
            let at = own.len();
            let _ = write!(own, "\"{}\"", LEVELS[usize::from(p)]);
            o.level = span(at, own.len());
            let at = own.len();
            let _ = write!(own, "\"syslog\":{{\"priority\":{p}}}");
            o.log = span(at, own.len());
        }
        let at = own.len();
        if let Some(unit) = entry.get(b"_SYSTEMD_UNIT") {
            own.push_str("\"systemd\":{\"unit\":");
            json_str(own, unit);
            own.push_str("},");
        }
        let pid = entry
            .get(b"_PID")
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.trim().parse::<u64>().ok());
        let name = entry
            .get(b"SYSLOG_IDENTIFIER")
            .or_else(|| entry.get(b"_COMM"));
        if pid.is_some() || name.is_some() {
            own.push_str("\"process\":{");
            if let Some(pid) = pid {
                let _ = write!(own, "\"pid\":{pid}");
                if name.is_some() {
                    own.push(',');
                }
            }
            if let Some(name) = name {
                own.push_str("\"name\":");
                json_str(own, name);
            }
            own.push_str("},");
        }
        if settings.all_fields {
            self.extra.clear();
            for (name, value) in entry.fields() {
                // `_COMM` is kept unless it is `process.name`.
                let used = name == b"_COMM" && entry.get(b"SYSLOG_IDENTIFIER").is_none();
                if used || MAPPED.contains(&name) || name.starts_with(b"__") {
                    continue;
                }
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                // Bounded as the message is (a field is shipped whole or cut, never refused).
                let mut value = String::from_utf8_lossy(value).into_owned();
                value.truncate(bounded(&value, settings.max_message_bytes));
                self.extra.push((name, value));
            }
            if !self.extra.is_empty() {
                // A field repeated in the entry becomes an array, in the entry's order.
                self.extra.sort_by(|a, b| a.0.cmp(&b.0));
                own.push_str("\"journald\":{");
                let mut i = 0;
                while i < self.extra.len() {
                    let name = &self.extra[i].0;
                    let n = self.extra[i..].iter().take_while(|e| &e.0 == name).count();
                    if i > 0 {
                        own.push(',');
                    }
                    json_str(own, name.as_bytes());
                    own.push(':');
                    if n == 1 {
                        json_str(own, self.extra[i].1.as_bytes());
                    } else {
                        own.push('[');
                        for (k, (_, v)) in self.extra[i..i + n].iter().enumerate() {
                            if k > 0 {
                                own.push(',');
                            }
                            json_str(own, v.as_bytes());
                        }
                        own.push(']');
                    }
                    i += n;
                }
                own.push_str("},");
            }
        }
        o.members = span(at, own.len());
        if let Some(host) = entry
            .get(b"_HOSTNAME")
            .filter(|h| *h != node_name.as_bytes())
        {
            let at = own.len();
            own.push_str("\"host\":{\"name\":");
            json_str(own, host);
            own.push_str("}}");
            o.host = span(at, own.len());
        }
        batch.owns.push(o);
        cut
    }
}

/// The length of `text` cut to at most `max` bytes, at a character's boundary.
fn bounded(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn span(start: usize, end: usize) -> Span {
    Span::of(start..end).unwrap_or_default()
}

/// Appends `bytes` as a JSON string literal, invalid UTF-8 replaced (as in a file's lines).
fn json_str(out: &mut String, bytes: &[u8]) {
    write_str(out, &String::from_utf8_lossy(bytes));
}
