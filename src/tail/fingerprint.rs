//! File identity: (device, inode) plus a CRC-32 of the file's first bytes (of its decompressed
//! content, for a gzipped generation: see [`super::gzip`]).
//!
//! The inode alone is not enough: when kubelet deletes an old log and creates a new one, the
//! filesystem may hand the new file the freed inode, and a position keyed on the inode would make
//! the new file start in its middle. The fingerprint tells them apart. It covers the first
//! [`FINGERPRINT_BYTES`] bytes, or fewer while the file is younger than that; a short fingerprint
//! is extended as the file grows, and a stored one is checked against the same number of bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::record::IdPrefix;
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
    let want = (len as usize).min(FINGERPRINT_BYTES as usize);
    Ok(of_bytes(&super::gzip::head(file, false, want)?))
}

/// Whether `file` is the file a stored fingerprint was taken of: it has at least as many bytes,
/// and they hash the same.
pub fn matches(file: &File, stored: Fingerprint) -> io::Result<bool> {
    let now = fingerprint(file, stored.len)?;
    Ok(now == stored)
}

/// Whether a stored fingerprint can vouch for a stored offset: it covers at least
/// `min(offset, FINGERPRINT_BYTES)` bytes. A shorter one (taken of a young file whose fingerprint
/// was not extended before the position was stored) matches other content too, and resuming a
/// different file at that offset would skip its first lines.
pub fn guards(stored: Fingerprint, offset: u64) -> bool {
    u64::from(stored.len) >= offset.min(u64::from(FINGERPRINT_BYTES))
}

/// A longer fingerprint if the file grew past the bytes the current one covers, and still starts
/// with them (a file whose first bytes changed is not the file `current` was taken of: that is
/// for the truncation checks to find, not for its fingerprint to follow).
pub fn extend(file: &File, current: Fingerprint, size: u64) -> io::Result<Option<Fingerprint>> {
    if current.len >= FINGERPRINT_BYTES || size <= u64::from(current.len) {
        return Ok(None);
    }
    let head = super::gzip::head(file, false, FINGERPRINT_BYTES as usize)?;
    let covered = (current.len as usize).min(head.len());
    if of_bytes(&head[..covered]) != current {
        return Ok(None);
    }
    let longer = of_bytes(&head);
    Ok((longer.len > current.len).then_some(longer))
}

/// The identity of an open file whose content may be gzip: (device, inode) of the file itself,
/// the fingerprint of its content's first bytes. A generation gzipped into a new file has the
/// fingerprint it had before.
pub fn identify_content(file: &File, gzip: bool) -> io::Result<FileIdentity> {
    if !gzip {
        return identify(file);
    }
    let meta = file.metadata()?;
    let head = super::gzip::head(file, true, FINGERPRINT_BYTES as usize)?;
    Ok(FileIdentity {
        dev: meta.dev(),
        inode: meta.ino(),
        fingerprint: of_bytes(&head),
    })
}

/// The fingerprint of content that starts with `head` (at most [`FINGERPRINT_BYTES`] of it).
pub fn of_bytes(head: &[u8]) -> Fingerprint {
    let head = &head[..head.len().min(FINGERPRINT_BYTES as usize)];
    let mut crc = flate2::Crc::new();
    crc.update(head);
    Fingerprint {
        len: head.len() as u32,
        crc32: crc.sum(),
    }
}

/// [`matches`] for content that may be gzip.
pub fn matches_content(file: &File, gzip: bool, stored: Fingerprint) -> io::Result<bool> {
    if !gzip {
        return matches(file, stored);
    }
    let head = super::gzip::head(file, true, stored.len as usize)?;
    Ok(of_bytes(&head) == stored)
}

/// When the file was created (its birth time, from `statx`), in nanoseconds since the epoch; 0
/// where the filesystem does not record it. Distinguishes a new file on a reused inode.
pub fn born(meta: &std::fs::Metadata) -> i64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// CRC-32 of the file's first line (newline included), or of its first [`FINGERPRINT_BYTES`]
/// bytes if the line is longer. Stable once a record of the file exists: records are only made
/// of complete lines or of pieces at least `max_line_bytes` (more than 256 bytes) long.
pub fn first_line_crc(file: &File, gzip: bool) -> io::Result<u32> {
    let buf = super::gzip::head(file, gzip, FINGERPRINT_BYTES as usize)?;
    let line = memchr::memchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
    let mut crc = flate2::Crc::new();
    crc.update(&buf[..line]);
    Ok(crc.sum())
}

/// The document id prefix of a file generation (see [`IdPrefix`]). SipHash-1-3 with fixed keys
/// is specified, so ids stay the same across logship versions and platforms.
///
/// Nothing of the file that holds the content takes part (no device, no inode): a generation
/// renamed or gzipped into a new file keeps its ids. `path` is the name the file is followed
/// under (a generation is read under its live file's name), and `born` the birth time of the
/// file the content was first read from.
pub fn id_prefix(
    node: &str,
    path: &std::path::Path,
    born: i64,
    first_line_crc: u32,
    truncations: u32,
) -> IdPrefix {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    use std::os::unix::ffi::OsStrExt;
    let mut h = SipHasher13::new_with_keys(0x6c6f_6773_6869_7031, 0x646f_6369_6473_2131);
    h.write(node.as_bytes());
    // Explicit little-endian bytes: `Hasher::write_u64` hashes native-endian ones.
    h.write(&[0xff]);
    h.write(path.as_os_str().as_bytes());
    h.write(&[0xff]);
    h.write(&born.to_le_bytes());
    h.write(&first_line_crc.to_le_bytes());
    h.write(&truncations.to_le_bytes());
    let hash = h.finish128().as_bytes();
    let mut prefix = [0u8; 12];
    prefix.copy_from_slice(&hash[..12]);
    IdPrefix(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_fingerprint_shorter_than_its_offset_is_not_trusted() {
        let fp = |len| Fingerprint { len, crc32: 0 };
        assert!(guards(fp(0), 0), "nothing read, nothing to guard");
        assert!(
            !guards(fp(0), 1),
            "an empty file's fingerprint matches anything"
        );
        assert!(guards(fp(100), 100));
        assert!(!guards(fp(100), 101));
        assert!(
            guards(fp(FINGERPRINT_BYTES), 1 << 30),
            "a full one guards any offset"
        );
        assert!(!guards(fp(FINGERPRINT_BYTES - 1), 1 << 30));
    }

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
    fn id_prefix_tells_generations_apart_and_is_stable() {
        let id = |name: &str| std::path::PathBuf::from(format!("/var/log/containers/{name}.log"));
        let a = id_prefix("node-1", &id("a"), 5, 7, 0);
        assert_eq!(a, id_prefix("node-1", &id("a"), 5, 7, 0), "deterministic");
        // Pinned: ids must not change between versions, or a restart after an upgrade duplicates.
        assert_eq!(
            a.0,
            [141, 67, 254, 31, 142, 120, 8, 57, 145, 250, 95, 153],
            "{:?}",
            a.0
        );
        for other in [
            id_prefix("node-2", &id("a"), 5, 7, 0),
            id_prefix("node-1", &id("b"), 5, 7, 0),
            id_prefix("node-1", &id("a"), 6, 7, 0),
            id_prefix("node-1", &id("a"), 5, 8, 0),
            id_prefix("node-1", &id("a"), 5, 7, 1),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn first_line_crc_covers_the_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"first\n").unwrap();
        let file = File::open(&path).unwrap();
        let crc = first_line_crc(&file, false).unwrap();
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"second line\n").unwrap();
        assert_eq!(
            first_line_crc(&file, false).unwrap(),
            crc,
            "later lines change nothing"
        );
        std::fs::write(&path, [b'x'; 1000]).unwrap();
        let long = first_line_crc(&file, false).unwrap();
        std::fs::write(&path, [b'x'; 2000]).unwrap();
        assert_eq!(
            first_line_crc(&file, false).unwrap(),
            long,
            "a long first line: 256 bytes"
        );
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
