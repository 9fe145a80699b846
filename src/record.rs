//! Records and the batches they travel in.
//!
//! A [`Batch`] is the unit that moves between stages: the records parsed from one read of one
//! file, their messages concatenated in one `String`, and the [`AckToken`] that covers every byte
//! of the file they came from. Keeping the messages in one buffer per batch means parsing does not
//! allocate per line, and the token means the ack path never has to reason about single lines.
//!
//! Invariant: a batch's token covers a contiguous byte range `[start, end)` of one file, and the
//! tokens of consecutive batches of that file are adjacent (`end` of one is `start` of the next).
//! Every byte in the range belongs to a record of the batch or was deliberately skipped and
//! counted (an empty line, the truncated tail of an oversize line). Bytes held back in an
//! incomplete line or a pending partial record are never inside a token.

use std::ops::Range;
use std::sync::Arc;

use crate::ack::{AckToken, Acknowledge, FileKey};
use crate::buffer::Permit;
use crate::source::Source;
use crate::timestamp::Timestamp;

/// Which output stream of the container a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Raw files (plain VM logs) have no stream.
    Unknown,
}

impl Stream {
    /// The name used in documents; `None` for [`Stream::Unknown`], which is left out.
    pub const fn as_str(self) -> Option<&'static str> {
        match self {
            Stream::Stdout => Some("stdout"),
            Stream::Stderr => Some("stderr"),
            Stream::Unknown => None,
        }
    }
}

/// The part of every record's document id that names the file *generation* it came from: a hash
/// of the node name, the path the file is followed under, the birth time of the file its content
/// was first read from, the CRC-32 of its first line (of the content: decompressed for a gzipped
/// generation), and how many times it was truncated. Nothing of the file holding the content
/// (device, inode) takes part, so a generation keeps its ids when it is renamed or gzipped into a
/// new file. With the record's byte range appended it is the record's idempotent `_id`: the same
/// after a restart or a rotation, different for a new file on a reused inode (another birth time
/// and first line) or a file truncated and written again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdPrefix(pub [u8; 12]);

/// One log record: a line, or several physical lines joined (CRI partials, docker splits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the line was written: the runtime's timestamp, or the read time for raw files.
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// Byte range of the message inside [`Batch::text`]. Always valid UTF-8 (invalid bytes are
    /// replaced when parsed) and without the trailing newline.
    pub message: Range<usize>,
    /// File offset of the record's first byte: `log.offset` in the document, and with the file
    /// identity the source of the record's idempotent `_id`.
    pub offset: u64,
    /// File offset just past the record's last byte, newline included.
    pub end: u64,
    /// A multiline record a rotation cut: it began in the previous generation of its file
    /// (`offset` is there) and ended in this one. Its id prefix is [`Batch::carried`]'s, and
    /// `end - offset` is its length in both files.
    pub carried: bool,
}

/// What a batch holding a record cut by a rotation (see [`Record::carried`]) owes the previous
/// generation: that generation's id prefix, and the range of it the record covers from its
/// start to that generation's end, acknowledged with the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carried {
    pub prefix: IdPrefix,
    pub ack: AckToken,
}

/// The records of one read of one file, with the token that acknowledges them.
#[derive(Debug)]
pub struct Batch {
    /// The file the records came from, with what its name says and its pre-rendered fragment.
    pub source: Arc<Source>,
    pub records: Vec<Record>,
    /// All messages, back to back; records index into it.
    pub text: String,
    /// The bytes this batch acknowledges once the sink is done with it.
    pub ack: AckToken,
    /// The file generation part of the records' document ids.
    pub id_prefix: IdPrefix,
    /// The previous generation's part in a record cut by a rotation, if the batch holds one.
    pub carried: Option<Carried>,
    /// The per-file fields of the records' documents (path, Kubernetes metadata) as a JSON
    /// fragment: the source's, or the enriched one current when the batch was read.
    pub fragment: Arc<str>,
    /// The share of the memory budget this batch holds; released when the batch is dropped,
    /// which is after the sink has acknowledged it.
    pub permit: Option<Permit>,
    /// What message processing (`process`) made of each record, by index: empty when no record
    /// of the batch was structured, else exactly as long as `records`.
    pub processed: Vec<Processed>,
    /// Text that processing rendered for the records (levels, parsed fields), which
    /// [`Processed`] spans point into. Counted in [`Batch::memory_bytes`].
    pub fields: String,
    /// The fields each record has of its own, by index, for records that are not lines of a
    /// file (journal entries, `journald`): empty for file batches, else exactly as long as
    /// `records`. Their spans point into [`Batch::own`].
    pub owns: Vec<Own>,
    /// The rendered JSON [`Own`] spans point into.
    pub own: String,
}

/// A record's own document fields (a journal entry's unit, priority, process, host), rendered
/// as JSON when the record was made and spliced by the encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Own {
    /// `log.level` as a JSON string literal (used when processing lifted none); empty: none.
    pub level: Span,
    /// Members inside `log` (`"syslog":{"priority":3}`), without a trailing comma; may be empty.
    pub log: Span,
    /// Top-level members, each followed by a comma.
    pub members: Span,
    /// The `host` member and the document's closing brace (`"host":{"name":"…"}}`); empty: the
    /// encoder's (the node name).
    pub host: Span,
}

/// A byte range of [`Batch::text`] or [`Batch::fields`], compact (batches are far below 4 GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `range`; `None` if it does not fit in 32 bits.
    pub fn of(range: Range<usize>) -> Option<Span> {
        Some(Span {
            start: u32::try_from(range.start).ok()?,
            end: u32::try_from(range.end).ok()?,
        })
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }
}

/// What becomes of a record's message in its document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageOut {
    /// The message as read.
    #[default]
    Kept,
    /// Left out (`processing.keep_message = false` after the message was parsed into fields).
    Dropped,
    /// Replaced by the JSON string literal at [`Processed::replacement`] in [`Batch::fields`].
    Replaced,
}

/// Where a record's parsed fields are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldsOut {
    /// None.
    #[default]
    None,
    /// The message itself is the fields: [`Processed::members`] spans, in [`Batch::text`], the
    /// JSON object (or, for fields merged at the top level, the members inside its braces),
    /// written as it is after the target's name.
    Inline,
    /// [`Processed::members`] spans document members rendered in [`Batch::fields`], each
    /// followed by a comma.
    Rendered,
}

/// What processing made of one record: spans of [`Batch::fields`] (or [`Batch::text`] for
/// [`FieldsOut::Inline`]) the encoder splices into the document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processed {
    pub message: MessageOut,
    pub fields: FieldsOut,
    /// The lifted level (`log.level`) as a JSON string literal in [`Batch::fields`]; empty for
    /// none.
    pub level: Span,
    /// The message's replacement, a JSON string literal in [`Batch::fields`].
    pub replacement: Span,
    /// The parsed fields (see [`FieldsOut`]).
    pub members: Span,
}

impl Batch {
    /// An empty batch of `file` whose token starts (and so far ends) at `start`.
    pub fn new(source: Arc<Source>, file: FileKey, start: u64) -> Self {
        Batch {
            fragment: Arc::clone(&source.fragment),
            source,
            records: Vec::new(),
            text: String::new(),
            ack: AckToken {
                file,
                start,
                end: start,
            },
            id_prefix: IdPrefix::default(),
            carried: None,
            permit: None,
            processed: Vec::new(),
            fields: String::new(),
            owns: Vec::new(),
            own: String::new(),
        }
    }

    /// The message of `record`, which must belong to this batch.
    pub fn message(&self, record: &Record) -> &str {
        &self.text[record.message.clone()]
    }

    /// Appends a record whose message is `message`.
    pub fn push(
        &mut self,
        timestamp: Timestamp,
        stream: Stream,
        message: &str,
        offset: u64,
        end: u64,
    ) {
        let start = self.text.len();
        self.text.push_str(message);
        self.records.push(Record {
            timestamp,
            stream,
            message: start..self.text.len(),
            offset,
            end,
            carried: false,
        });
    }

    /// The id prefix of `record`, which must belong to this batch: the batch's, or the previous
    /// generation's for a record a rotation cut.
    pub fn id_prefix_of(&self, record: &Record) -> IdPrefix {
        match &self.carried {
            Some(c) if record.carried => c.prefix,
            _ => self.id_prefix,
        }
    }

    /// Acknowledges what this batch covers: its range, and the previous generation's range of
    /// a record a rotation cut, together (a position file never has one without the other).
    pub fn acknowledge(&self, acks: &dyn Acknowledge) {
        match &self.carried {
            None => acks.ack(self.ack),
            Some(c) => acks.ack_all(&[self.ack, c.ack]),
        }
    }

    /// Bytes this batch holds in memory, the unit of the memory budget: parsed fields count as
    /// much as the messages they came from.
    pub fn memory_bytes(&self) -> usize {
        self.text.capacity()
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.fields.capacity()
            + self.processed.capacity() * std::mem::size_of::<Processed>()
            + self.own.capacity()
            + self.owns.capacity() * std::mem::size_of::<Own>()
    }

    /// The own fields of the record at `index`, if the batch's records have any.
    pub fn own_of(&self, index: usize) -> Option<&Own> {
        self.owns.get(index)
    }

    /// What processing made of the record at `index` (the default, nothing, if not structured).
    pub fn processed(&self, index: usize) -> Processed {
        self.processed.get(index).copied().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
