//! What happened to a followed file since it was last looked at.
//!
//! Kubelet rotates container logs by renaming `0.log` to `0.log.<timestamp>` and having the
//! runtime reopen a new `0.log`; later it gzips the renamed file and deletes it. Other tools
//! rotate by copying and truncating. This module turns two observations — `fstat` of the open
//! descriptor and `stat` of the path it was found under — into one [`Change`], as a pure function
//! so every case is tested without touching a filesystem.

/// What the reader observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Size of the open file now.
    pub size: u64,
    /// Offset the reader has read up to.
    pub read_offset: u64,
    /// (dev, inode) the path resolves to now, or `None` if it no longer exists.
    pub path_target: Option<(u64, u64)>,
    /// (dev, inode) of the open file.
    pub open: (u64, u64),
}

/// What the reader must do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing new.
    Idle,
    /// New bytes to read.
    Grew,
    /// The file is smaller than what was read: copytruncate. Read again from 0.
    Truncated,
    /// The path now names another file: this one was renamed away. Read it to its end; the new
    /// file is found by discovery and read from its head.
    Rotated,
    /// The path is gone: the file was deleted while open. Its data stays readable through the
    /// open descriptor, so read it to its end.
    Deleted,
}

/// Classifies an observation. Truncation wins over everything: offsets past the end of the file
/// mean nothing any more. Then detachment (rotation, deletion), because a detached file must be
/// drained and released even when it also grew.
pub fn classify(o: Observation) -> Change {
    if o.size < o.read_offset {
        return Change::Truncated;
    }
    match o.path_target {
        None => Change::Deleted,
        Some(target) if target != o.open => Change::Rotated,
        Some(_) if o.size > o.read_offset => Change::Grew,
        Some(_) => Change::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let o = |size, read_offset, path_target| Observation {
            size,
            read_offset,
            path_target,
            open: (1, 10),
        };
        let table = [
            (o(100, 100, Some((1, 10))), Change::Idle),
            (o(150, 100, Some((1, 10))), Change::Grew),
            (o(20, 100, Some((1, 10))), Change::Truncated),
            (o(0, 100, Some((1, 10))), Change::Truncated),
            (o(100, 100, Some((1, 11))), Change::Rotated),
            (o(150, 100, Some((1, 11))), Change::Rotated),
            (o(100, 100, Some((2, 10))), Change::Rotated),
            (o(100, 100, None), Change::Deleted),
            (o(10, 100, None), Change::Truncated),
        ];
        for (obs, want) in table {
            assert_eq!(classify(obs), want, "{obs:?}");
        }
    }
}
