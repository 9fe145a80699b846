//! Where records come from: the identity of a followed file and what its kubelet name says.
//!
//! File identity is (device, inode) plus a fingerprint of the file's first bytes (DESIGN.md
//! invariant 6): a renamed file keeps its identity, a new file that reuses an old inode does not.

use std::path::PathBuf;

/// The durable identity of a file, stored in the positions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: Fingerprint,
}

/// CRC-32 of the first `len` bytes of a file. `len` grows (up to the fingerprint size) while a
/// young file grows, so a file shorter than the fingerprint size still has a stable identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    pub len: u32,
    pub crc32: u32,
}

/// What the kubelet file name `<pod>_<namespace>_<container>-<container id>.log` tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletName {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
}

/// A followed file as the rest of the pipeline sees it.
#[derive(Debug)]
pub struct Source {
    /// The path as discovered (for kubelet logs, the /var/log/containers symlink).
    pub path: PathBuf,
    /// Parsed from the file name; `None` for files that are not kubelet container logs.
    pub kubelet: Option<KubeletName>,
    /// The document fields that are the same for every record of this file, rendered once as a
    /// JSON fragment (see `document`), so encoding a record never re-renders them.
    pub fragment: Box<str>,
}

// TEMPORARY stand-in until the parse branch lands.
impl KubeletName {
    pub fn from_path(_p: &std::path::Path) -> Option<KubeletName> {
        None
    }
}
