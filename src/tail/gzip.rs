//! Reading a gzipped rotated generation (kubelet's `0.log.<timestamp>.gz`) as the bytes it holds.
//!
//! Offsets in a compressed generation are offsets in its *decompressed* content, so the
//! generation keeps the positions and document ids it had before it was compressed. Reading is
//! streaming and sequential with bounded memory (a 64 KiB input buffer and the decoder's 32 KiB
//! window, whatever the file's size): reading at an offset ahead of the decoder decodes and
//! discards up to it; an offset behind it starts decoding over from the beginning (the tailer only
//! reads forward, so that happens once at most, when a read resumes).
//!
//! A corrupt or truncated file is an error from [`GzContent::read_at`] after every byte that could
//! be decoded before the damage; the caller ships those and counts the rest as unreadable. Nothing
//! here panics on bad input.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;

use flate2::read::MultiGzDecoder;

/// The first two bytes of every gzip member (RFC 1952).
const MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Input buffer of the decoder.
const INPUT_BUFFER: usize = 64 * 1024;

/// Whether `file` starts with the gzip magic bytes. Content decides, not the name: a `.gz` name
/// on a file the compressor has not written a byte of yet is not gzip (yet), and is empty.
pub fn is_gzip(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match file.read_at(&mut magic[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got == 2 && magic == MAGIC)
}

/// The size of the decompressed content modulo 2^32, from the gzip trailer (`ISIZE`), without
/// decoding anything; `None` if the file is too short to have one. Only a hint: a truncated file's
/// last four bytes are not a trailer, and a file of several members has one per member.
pub fn trailer_size(file: &File) -> io::Result<Option<u32>> {
    let len = file.metadata()?.len();
    if len < 18 {
        return Ok(None);
    }
    let mut isize = [0u8; 4];
    file.read_exact_at(&mut isize, len - 4)?;
    Ok(Some(u32::from_le_bytes(isize)))
}

/// A positional reader over a shared file: reads with `pread`, so it never moves the descriptor's
/// offset, which other readers of the same file rely on.
struct At {
    file: File,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The decompressed content of a gzip file, read forward.
pub struct GzContent {
    /// A duplicate of the followed file's descriptor: the decoder owns its reader.
    file: File,
    decoder: MultiGzDecoder<BufReader<At>>,
    /// Decompressed offset of the decoder's next byte.
    pos: u64,
}

impl std::fmt::Debug for GzContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzContent").field("pos", &self.pos).finish()
    }
}

impl GzContent {
    /// Starts decoding `file` (a duplicate of its descriptor is taken) from its beginning.
    pub fn open(file: &File) -> io::Result<GzContent> {
        let file = file.try_clone()?;
        let decoder = Self::decoder(&file)?;
        Ok(GzContent {
            file,
            decoder,
            pos: 0,
        })
    }

    fn decoder(file: &File) -> io::Result<MultiGzDecoder<BufReader<At>>> {
        let at = At {
            file: file.try_clone()?,
            pos: 0,
        };
        Ok(MultiGzDecoder::new(BufReader::with_capacity(
            INPUT_BUFFER,
            at,
        )))
    }

    /// Reads decompressed bytes at `offset` into `buf`, like `pread`: 0 at the end of the
    /// content. An error means the content is damaged at or before `offset + buf.len()`; the
    /// bytes before the damage were returned by earlier calls.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset < self.pos {
            self.decoder = Self::decoder(&self.file)?;
            self.pos = 0;
        }
        let mut discard = [0u8; 8192];
        while self.pos < offset {
            let want = usize::try_from(offset - self.pos)
                .unwrap_or(usize::MAX)
                .min(discard.len());
            let n = read_retrying(&mut self.decoder, &mut discard[..want])?;
            if n == 0 {
                // The content ends before `offset`.
                return Ok(0);
            }
            self.pos += n as u64;
        }
        let n = read_retrying(&mut self.decoder, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Up to `len` bytes of the start of the file's content: decompressed if `gzip`. A damaged gzip
/// file gives the bytes before the damage.
pub fn head(file: &File, gzip: bool, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    if gzip {
        let mut content = GzContent::open(file)?;
        while got < len {
            match content.read_at(&mut buf[got..], got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    } else {
        while got < len {
            match file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip_file(dir: &std::path::Path, data: &[u8]) -> File {
        let path = dir.join("a.log.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        File::open(&path).unwrap()
    }

    fn content(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    #[test]
    fn reads_forward_skips_ahead_and_starts_over_behind() {
        let dir = tempfile::tempdir().unwrap();
        let data = content(50_000);
        let file = gzip_file(dir.path(), &data);
        assert!(is_gzip(&file).unwrap());
        assert_eq!(trailer_size(&file).unwrap(), Some(data.len() as u32));
        let mut gz = GzContent::open(&file).unwrap();
        let mut buf = vec![0u8; 1000];
        let n = gz.read_at(&mut buf, 123_456).unwrap();
        assert_eq!(&buf[..n], &data[123_456..123_456 + n]);
        let n = gz.read_at(&mut buf, 10).unwrap();
        assert_eq!(&buf[..n], &data[10..10 + n]);
        let mut all = Vec::new();
        let mut at = 0u64;
        loop {
            let n = gz.read_at(&mut buf, at).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
        assert_eq!(all, data);
        assert_eq!(gz.read_at(&mut buf, data.len() as u64 + 5).unwrap(), 0);
    }

    #[test]
    fn a_truncated_file_gives_what_precedes_the_damage_then_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = content(200_000);
        let file = gzip_file(dir.path(), &data);
        let len = file.metadata().unwrap().len();
        let path = dir.path().join("a.log.gz");
        let cut = File::options().write(true).open(&path).unwrap();
        cut.set_len(len / 2).unwrap();
        let mut gz = GzContent::open(&file).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        let err = loop {
            match gz.read_at(&mut buf, got.len() as u64) {
                Ok(0) => panic!("a truncated file does not end cleanly"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert!(got.len() > data.len() / 4, "read {} bytes first", got.len());
        assert_eq!(&got[..], &data[..got.len()], "{err}");
        assert_eq!(head(&file, true, 8).unwrap(), b"line 0\nl");
    }

    #[test]
    fn plain_files_and_empty_files_are_not_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, b"plain\n").unwrap();
        assert!(!is_gzip(&File::open(&path).unwrap()).unwrap());
        std::fs::write(&path, b"").unwrap();
        assert!(!is_gzip(&File::open(&path).unwrap()).unwrap());
        std::fs::write(&path, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        let mut gz = GzContent::open(&File::open(&path).unwrap()).unwrap();
        assert!(
            gz.read_at(&mut [0u8; 10], 0).is_err(),
            "garbage is an error"
        );
    }
}
