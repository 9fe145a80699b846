//! File identity: (device, inode) plus a CRC-32 of the file's first bytes.
//!
//! The inode alone is not enough: when kubelet deletes an old log and creates a new one, the
//! filesystem may hand the new file the freed inode, and a position keyed on the inode would make
//! the new file start in its middle. The fingerprint tells them apart. It covers the first
//! [`FINGERPRINT_BYTES`] bytes, or fewer while the file is younger than that; a short fingerprint
//! is extended as the file grows, and a stored one is checked against the same number of bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::source::{FileIdentity, Fingerprint};

/// How many leading bytes the fingerprint covers once the file has them.
pub const FINGERPRINT_BYTES: u32 = 256;

/// The identity of an open file, fingerprinting up to [`FINGERPRINT_BYTES`] bytes.
pub fn identify(file: &File) -> io::Result<FileIdentity> {
    let meta = file.metadata()?;
    let fingerprint = fingerprint(
        file,
        FINGERPRINT_BYTES.min(u32::try_from(meta.len()).unwrap_or(u32::MAX)),
    )?;
    Ok(FileIdentity {
        dev: meta.dev(),
        inode: meta.ino(),
        fingerprint,
    })
}

/// CRC-32 of the first `len` bytes of `file` (fewer if the file is shorter: `len` says how many
/// were covered).
pub fn fingerprint(file: &File, len: u32) -> io::Result<Fingerprint> {
    let mut buf = [0u8; FINGERPRINT_BYTES as usize];
    let want = (len as usize).min(buf.len());
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..want], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(&buf[..got]);
    Ok(Fingerprint {
        len: got as u32,
        crc32: crc.sum(),
    })
}

/// Whether `file` is the file a stored fingerprint was taken of: it has at least as many bytes,
/// and they hash the same.
pub fn matches(file: &File, stored: Fingerprint) -> io::Result<bool> {
    let now = fingerprint(file, stored.len)?;
    Ok(now == stored)
}

/// A longer fingerprint if the file grew past the bytes the current one covers.
pub fn extend(file: &File, current: Fingerprint, size: u64) -> io::Result<Option<Fingerprint>> {
    if current.len >= FINGERPRINT_BYTES || size <= u64::from(current.len) {
        return Ok(None);
    }
    let longer = fingerprint(file, FINGERPRINT_BYTES)?;
    Ok((longer.len > current.len).then_some(longer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn same_file_matches_and_grows_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"first line\n").unwrap();
        let file = File::open(&path).unwrap();
        let young = identify(&file).unwrap();
        assert_eq!(young.fingerprint.len, 11);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(&[b'x'; 500]).unwrap();
        assert!(
            matches(&file, young.fingerprint).unwrap(),
            "a grown file is still the same file"
        );
        let grown = extend(&file, young.fingerprint, 511).unwrap().unwrap();
        assert_eq!(grown.len, FINGERPRINT_BYTES);
        assert!(extend(&file, grown, 511).unwrap().is_none());
    }

    #[test]
    fn different_content_or_shorter_file_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"2026-11-22T10:00:00Z stdout F hello\n").unwrap();
        std::fs::write(&b, b"2026-11-22T10:00:01Z stdout F hello\n").unwrap();
        let fa = identify(&File::open(&a).unwrap()).unwrap().fingerprint;
        assert!(!matches(&File::open(&b).unwrap(), fa).unwrap());
        std::fs::write(&b, b"2026").unwrap();
        assert!(
            !matches(&File::open(&b).unwrap(), fa).unwrap(),
            "shorter than the stored fingerprint"
        );
    }
}
