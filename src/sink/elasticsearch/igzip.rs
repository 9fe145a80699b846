//! gzip with Intel's ISA-L (igzip): the compressor of bulk bodies at level 1, the default.
//!
//! Compression is most of the agent's CPU on real pods' logs (README, Performance): zlib-rs at
//! level 1 takes about 7 CPU-s per GB of input on `pods10_kubelet` (benches/elasticsearch.rs),
//! igzip about 2.5, with smaller bodies (it builds a Huffman table per block where zlib's fastest
//! level uses the fixed one). Deflate is deflate: Elasticsearch reads either.
//!
//! Only level 1: ISA-L's level 3 costs about as much CPU as zlib's level 4 for bigger bodies
//! (17 against 18 CPU-s/GB, 133 MB against 126 MB on the wire for 300 MB of input), so levels 2
//! to 9 are zlib's.
//!
//! Documents are gathered into a 64 KiB chunk before they are compressed: igzip is fastest on
//! large inputs, and one call per document would cost more than the compression itself.

use std::io::{self, Write};

use isal::write::GzipEncoder;
use isal::CompressionLevel;

/// Input gathered before each compression call.
const CHUNK: usize = 64 * 1024;

/// A gzip stream being written into a `Vec<u8>`.
pub struct Igzip {
    encoder: SendEncoder,
    /// Input not compressed yet, at most about [`CHUNK`] (or one larger document).
    pending: Vec<u8>,
}

impl Igzip {
    /// A stream at ISA-L's level 1.
    pub fn new(out: Vec<u8>) -> Self {
        Igzip {
            encoder: SendEncoder(GzipEncoder::new(out, CompressionLevel::One)),
            pending: Vec::with_capacity(CHUNK),
        }
    }

    /// Where the next document is written, uncompressed; call [`Igzip::written`] after.
    pub fn input(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Compresses what was written into [`Igzip::input`] once there is a chunk of it.
    pub fn written(&mut self) -> io::Result<()> {
        if self.pending.len() >= CHUNK {
            self.compress()?;
        }
        Ok(())
    }

    fn compress(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.encoder.0.write_all(&self.pending)?;
            self.pending.clear();
        }
        // A document far larger than a chunk made the buffer grow: let it go.
        if self.pending.capacity() > 4 * CHUNK {
            self.pending = Vec::with_capacity(CHUNK);
        }
        Ok(())
    }

    /// Bytes held: compressed output, pending input.
    pub fn held_bytes(&self) -> usize {
        self.encoder.0.get_ref().capacity() + self.pending.capacity()
    }

    /// Compresses what is pending and ends the stream (trailer with CRC and length).
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        self.compress()?;
        self.encoder.0.finish()
    }
}

/// igzip's encoder, which may move to another thread.
///
/// The encoder is a plain C struct (`isal_zstream`) and the buffers it owns. Its raw pointers
/// are what makes it `!Send` to Rust: `next_in` and `next_out` point into the caller's buffers
/// only during a call and are set again before each, and `level_buf` points into the heap
/// buffer the same value owns, which does not move when the value does. ISA-L keeps no state
/// per thread. So a body can be written on one worker thread and finished on another, as
/// tokio's tasks are.
struct SendEncoder(GzipEncoder<Vec<u8>>);

// SAFETY: see above; the encoder is used through `&mut` only, never shared.
#[allow(unsafe_code)]
unsafe impl Send for SendEncoder {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn documents_of_any_size_come_back_whole() {
        let mut gz = Igzip::new(Vec::new());
        let mut all = Vec::new();
        let mut seed = 7u64;
        for i in 0..3000usize {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly small documents, some of several chunks.
            let len = if i % 500 == 7 {
                300_000
            } else {
                (seed >> 52) as usize
            };
            let doc: Vec<u8> = (0..len).map(|j| b"abcdefgh{}\"\\"[(j + i) % 12]).collect();
            gz.input().extend_from_slice(&doc);
            gz.input().push(b'\n');
            gz.written().unwrap();
            all.extend_from_slice(&doc);
            all.push(b'\n');
            assert!(gz.pending.len() < CHUNK || i % 500 == 7);
        }
        let bytes = gz.finish().unwrap();
        assert!(bytes.len() < all.len() / 3, "compressed: {}", bytes.len());
        assert_eq!(gunzip(&bytes), all);
    }

    #[test]
    fn an_empty_stream_is_a_valid_empty_gzip() {
        let bytes = Igzip::new(Vec::new()).finish().unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        assert!(gunzip(&bytes).is_empty());
    }

    #[test]
    fn it_moves_to_another_thread_mid_stream() {
        let mut gz = Igzip::new(Vec::new());
        gz.input().extend_from_slice(&[b'x'; 100_000]);
        gz.written().unwrap();
        let bytes = std::thread::spawn(move || {
            gz.input().extend_from_slice(b"tail");
            gz.finish().unwrap()
        })
        .join()
        .unwrap();
        let mut want = vec![b'x'; 100_000];
        want.extend_from_slice(b"tail");
        assert_eq!(gunzip(&bytes), want);
    }
}
