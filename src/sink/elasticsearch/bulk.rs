//! Bulk request bodies: NDJSON action and document lines, gzip'ed as they are written.
//!
//! A [`BulkBuilder`] takes records one by one and writes `{"create":{"_index":…,"_id":…}}\n` and
//! the document line straight into the (compressing) request buffer: the uncompressed body is
//! never held in memory. It counts items and uncompressed bytes so the caller can close the
//! request at `batch.max_bytes` or `batch.max_events`, and remembers which record every item is,
//! in order, because Elasticsearch answers item by item in request order.
//!
//! Document ids: the record's file generation prefix (12 bytes, see [`IdPrefix`]), its start
//! offset (8 bytes, big-endian) and its length in bytes (4 bytes, big-endian), in unpadded
//! base64url: 32 characters. The length is in the id because a record's boundaries can change
//! when its bytes are read again (a restart with another `max_line_bytes` or multiline rule
//! before the first reading was acknowledged): that is a different document, and with the start
//! alone it would be answered 409 and taken as delivered.
//!
//! [`IdPrefix`]: crate::record::IdPrefix

use std::io::{self, Write};

use base64::Engine as _;
use flate2::write::GzEncoder;

use crate::record::IdPrefix;

use super::igzip::Igzip;

use super::retry::OpType;

/// Length of a document id in base64url characters.
pub const ID_LEN: usize = 32;

/// The document id of the record spanning file bytes `[offset, end)`.
pub fn doc_id(prefix: IdPrefix, offset: u64, end: u64) -> [u8; ID_LEN] {
    // Records are bounded by `tail.max_line_bytes` (64 MiB at most), far below 4 GiB.
    let len = u32::try_from(end.saturating_sub(offset)).unwrap_or(u32::MAX);
    let mut raw = [0u8; 24];
    raw[..12].copy_from_slice(&prefix.0);
    raw[12..20].copy_from_slice(&offset.to_be_bytes());
    raw[20..].copy_from_slice(&len.to_be_bytes());
    let mut out = [0u8; ID_LEN];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(raw, &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, ID_LEN);
    out
}

/// Where the body goes while it is written.
enum Body {
    Plain(Vec<u8>),
    /// gzip level 1.
    Igzip(Box<Igzip>),
    /// gzip levels 2 to 9.
    Gzip(Box<GzEncoder<Vec<u8>>>),
}

/// One bulk request being written.
pub struct BulkBuilder<R> {
    body: Body,
    /// Every item's reference, in request order.
    items: Vec<R>,
    /// Bytes written before compression.
    raw_bytes: usize,
    op: OpType,
    /// Reused for each document of a [`Body::Gzip`] body (the others take documents in place).
    doc: Vec<u8>,
}

/// A finished request body.
pub struct BulkBody<R> {
    /// Cheap to clone: a retried request sends the same bytes again.
    pub bytes: bytes::Bytes,
    pub gzip: bool,
    pub items: Vec<R>,
    /// Bytes before compression.
    pub raw_bytes: usize,
}

impl<R> BulkBuilder<R> {
    /// An empty request; `gzip` is the compression level, if any: 1 with ISA-L (see
    /// [`Igzip`]), 2 to 9 with zlib.
    pub fn new(op: OpType, gzip: Option<u32>) -> Self {
        let out = Vec::with_capacity(64 * 1024);
        let body = match gzip {
            Some(0..=1) => Body::Igzip(Box::new(Igzip::new(out))),
            Some(level) => Body::Gzip(Box::new(GzEncoder::new(
                out,
                flate2::Compression::new(level),
            ))),
            None => Body::Plain(out),
        };
        BulkBuilder {
            body,
            items: Vec::new(),
            raw_bytes: 0,
            op,
            doc: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes written so far, before compression.
    pub fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }

    /// Bytes the body holds in memory so far: what it will send (compressed, if it is), plus
    /// input waiting to be compressed.
    pub fn held_bytes(&self) -> usize {
        let body = match &self.body {
            Body::Plain(v) => v.capacity(),
            Body::Igzip(gz) => gz.held_bytes(),
            Body::Gzip(gz) => gz.get_ref().capacity(),
        };
        body + self.doc.capacity()
    }

    /// Adds one item: the action line for `index` and `id`, then the document `encode` writes
    /// (one JSON object, no newline).
    pub fn push(&mut self, index: &str, id: &[u8], item: R, encode: impl FnOnce(&mut Vec<u8>)) {
        let op = self.op;
        let buf = match &mut self.body {
            Body::Plain(v) => v,
            Body::Igzip(gz) => gz.input(),
            Body::Gzip(_) => {
                self.doc.clear();
                &mut self.doc
            }
        };
        let start = buf.len();
        buf.extend_from_slice(b"{\"");
        buf.extend_from_slice(op.as_str().as_bytes());
        buf.extend_from_slice(b"\":{\"_index\":\"");
        // Index names are checked when rendered (no quotes, backslashes or control characters),
        // ids are base64url: neither needs escaping.
        buf.extend_from_slice(index.as_bytes());
        buf.extend_from_slice(b"\",\"_id\":\"");
        buf.extend_from_slice(id);
        buf.extend_from_slice(b"\"}}\n");
        encode(buf);
        buf.push(b'\n');
        self.raw_bytes += buf.len() - start;
        // Compressing into a Vec cannot fail.
        let _ = match &mut self.body {
            Body::Plain(_) => Ok(()),
            Body::Igzip(gz) => gz.written(),
            Body::Gzip(gz) => gz.write_all(&self.doc),
        };
        self.items.push(item);
        if self.doc.capacity() > 1 << 20 {
            self.doc = Vec::new();
        }
    }

    /// Finishes the body.
    pub fn finish(self) -> io::Result<BulkBody<R>> {
        let (bytes, gzip) = match self.body {
            Body::Plain(v) => (v, false),
            Body::Igzip(gz) => (gz.finish()?, true),
            Body::Gzip(gz) => (gz.finish()?, true),
        };
        Ok(BulkBody {
            bytes: bytes.into(),
            gzip,
            items: self.items,
            raw_bytes: self.raw_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn ids_are_32_url_safe_characters_and_distinct_per_range() {
        let p = IdPrefix([7; 12]);
        let a = doc_id(p, 0, 10);
        let b = doc_id(p, 1, 10);
        assert_ne!(a, b);
        assert_ne!(doc_id(p, 0, 11), a, "same start, other end: another record");
        assert_ne!(doc_id(IdPrefix([8; 12]), 0, 10), a);
        for id in [a, b, doc_id(p, u64::MAX, 0), doc_id(p, 0, u64::MAX)] {
            assert!(id
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_'));
        }
        assert_eq!(&a, b"BwcHBwcHBwcHBwcHAAAAAAAAAAAAAAAK");
    }

    #[test]
    fn bodies_are_ndjson_with_a_final_newline_plain_or_gzip() {
        for gzip in [None, Some(1), Some(3), Some(6)] {
            let mut b = BulkBuilder::new(OpType::Create, gzip);
            b.push("logs", b"id1", 1u32, |out| {
                out.extend_from_slice(b"{\"m\":1}")
            });
            b.push("logs-x", b"id2", 2u32, |out| {
                out.extend_from_slice(b"{\"m\":\"two\"}")
            });
            assert_eq!(b.len(), 2);
            let raw = b.raw_bytes();
            let body = b.finish().unwrap();
            assert_eq!(body.items, vec![1, 2]);
            let text = if body.gzip {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&body.bytes[..])
                    .read_to_string(&mut s)
                    .unwrap();
                s
            } else {
                String::from_utf8(body.bytes.to_vec()).unwrap()
            };
            assert_eq!(
                text,
                "{\"create\":{\"_index\":\"logs\",\"_id\":\"id1\"}}\n{\"m\":1}\n\
                 {\"create\":{\"_index\":\"logs-x\",\"_id\":\"id2\"}}\n{\"m\":\"two\"}\n"
            );
            assert_eq!(raw, text.len());
        }
    }
}
