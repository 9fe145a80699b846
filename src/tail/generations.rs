//! Rotated generations: the files a followed file was before it was rotated.
//!
//! The kubelet rotates `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log` by renaming it to
//! `0.log.<timestamp>` (the runtime then writes a new `0.log`), keeps a few generations, and
//! gzips every one but the newest (`0.log.<timestamp>.gz`, written as `….tmp` first). While the
//! agent is down, or before it found a file, whole generations can be written and rotated away;
//! they are still on disk and are read from here (README, "Guarantees").
//!
//! This module finds a file's generations (`tail.rotated_patterns`, globs next to the file with
//! `{name}` for its name) and orders them oldest first. It opens them and takes their content's
//! first bytes (decompressed for gzip), which is their identity: a generation is the same whether
//! renamed or compressed. It never decides where to read: the tailer matches them against the
//! positions table.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::fingerprint::FINGERPRINT_BYTES;
use super::gzip;

/// `tail.rotated_patterns` by default: kubelet's generations (`0.log.20261122-100000`, gzipped
/// or not), and not the `….tmp` file it compresses into.
pub const DEFAULT_PATTERNS: [&str; 2] = ["{name}.[0-9]*[0-9]", "{name}.[0-9]*[0-9].gz"];

/// What stands for the followed file's name in a pattern.
const NAME: &str = "{name}";

/// Checks one `tail.rotated_patterns` entry: it names siblings (`{name}` once, no `/`), cannot
/// match the file itself, and is a valid glob.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.matches(NAME).count() != 1 {
        return Err(format!(
            "{pattern:?} must contain {NAME} exactly once (the followed file's name)"
        ));
    }
    if pattern.contains('/') {
        return Err(format!(
            "{pattern:?} must name files in the followed file's own directory (no '/')"
        ));
    }
    if pattern == NAME {
        return Err(format!(
            "{pattern:?} matches the followed file itself; add what rotation appends"
        ));
    }
    Glob::new(&pattern.replace(NAME, "x"))
        .map(|_| ())
        .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}"))
}

/// One rotated generation, opened.
#[derive(Debug)]
pub struct Generation {
    pub path: PathBuf,
    pub file: File,
    /// Its content is gzip (by its magic bytes, not its name).
    pub gzip: bool,
    pub dev: u64,
    pub inode: u64,
    /// Bytes on disk (compressed, for gzip).
    pub size: u64,
    /// The first bytes of its content (decompressed), up to the fingerprint size.
    pub head: Vec<u8>,
    /// The decompressed size from the gzip trailer, modulo 2^32 (a hint).
    pub trailer_size: Option<u32>,
    pub modified: SystemTime,
    /// The name without `.gz`: what orders generations.
    stem: String,
}

/// The names in one directory, sorted: listed once per scan, however many followed files the
/// directory holds (thousands of files in one directory would otherwise cost a listing each).
#[derive(Debug, Default)]
pub struct Listing {
    names: Vec<String>,
}

impl Listing {
    /// Lists `dir`; an unreadable directory lists nothing.
    pub fn read(dir: &Path) -> Listing {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_unstable();
        Listing { names }
    }

    /// The names that may be generations of `name`: those starting with it when every pattern
    /// does (a binary search), else all.
    fn candidates<'a>(&'a self, name: &str, patterns: &[String]) -> &'a [String] {
        if !patterns.iter().all(|p| p.starts_with(NAME)) {
            return &self.names;
        }
        let from = self.names.partition_point(|n| n.as_str() < name);
        let len = self.names[from..].partition_point(|n| n.starts_with(name));
        &self.names[from..from + len]
    }
}

/// The rotated generations of the file `name` in `dir`, oldest first. A generation present both
/// plain and gzipped (the kubelet is compressing it) is the plain one; empty files are left out
/// (nothing to read, and no identity). Unreadable ones are skipped: this is a best effort on
/// top of following the live file.
pub fn find(dir: &Path, listing: &Listing, name: &str, patterns: &[String]) -> Vec<Generation> {
    let candidates = listing.candidates(name, patterns);
    if candidates.iter().all(|n| n == name) {
        return Vec::new();
    }
    let Some(set) = compile(name, patterns) else {
        return Vec::new();
    };
    let mut found: Vec<Generation> = Vec::new();
    for file_name in candidates {
        if file_name == name || !set.is_match(file_name) {
            continue;
        }
        let path = dir.join(file_name);
        match open(&path, file_name) {
            Ok(Some(g)) => found.push(g),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "Cannot open a rotated generation.")
            }
        }
    }
    // Plain before gzip of the same content, so the dedup below keeps the plain one.
    found.sort_by(|a, b| a.head.cmp(&b.head).then(a.gzip.cmp(&b.gzip)));
    found.dedup_by(|later, kept| later.gzip != kept.gzip && later.head == kept.head);
    order(&mut found);
    found
}

fn compile(name: &str, patterns: &[String]) -> Option<GlobSet> {
    let escaped = globset::escape(name);
    let mut set = GlobSetBuilder::new();
    let mut any = false;
    for p in patterns {
        if let Ok(glob) = Glob::new(&p.replace(NAME, &escaped)) {
            set.add(glob);
            any = true;
        }
    }
    any.then(|| set.build().ok()).flatten()
}

fn open(path: &Path, file_name: &str) -> io::Result<Option<Generation>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    let gzip = gzip::is_gzip(&file)?;
    let head = gzip::head(&file, gzip, FINGERPRINT_BYTES as usize)?;
    if head.is_empty() {
        return Ok(None);
    }
    let trailer_size = if gzip {
        gzip::trailer_size(&file)?
    } else {
        None
    };
    let stem = file_name
        .strip_suffix(".gz")
        .unwrap_or(file_name)
        .to_owned();
    Ok(Some(Generation {
        path: path.to_path_buf(),
        gzip,
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.len(),
        head,
        trailer_size,
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        stem,
        file,
    }))
}

/// Oldest first. Names carry the order: kubelet's and logrotate's `dateext` suffixes are
/// timestamps that sort as text; logrotate's numbered suffixes (`app.log.1` newest) sort as
/// numbers, highest first. Modification times do not (compressing a generation touches it).
fn order(found: &mut [Generation]) {
    let numbered = |g: &Generation| -> Option<u64> {
        let suffix = g.stem.rsplit('.').next()?;
        (suffix.len() <= 4).then(|| suffix.parse().ok()).flatten()
    };
    let all_numbered = found.iter().all(|g| numbered(g).is_some());
    found.sort_by(|a, b| {
        if all_numbered {
            numbered(b).cmp(&numbered(a))
        } else {
            a.stem.cmp(&b.stem)
        }
        .then_with(|| a.modified.cmp(&b.modified))
    });
}

/// A generation to read, with where to start.
#[derive(Debug)]
pub struct Pending {
    pub generation: Generation,
    /// Decompressed offset to resume at, from its stored position (0 for one never read).
    pub offset: u64,
    pub truncations: u32,
    /// Birth time of the file its content was first read from (see `fingerprint::id_prefix`).
    pub born: i64,
}

/// One step of a container's backlog.
#[derive(Debug)]
pub enum Step {
    /// Follow this generation once the one before it is read to its end.
    Open(Pending),
    /// Stop holding this followed file (the live one) back.
    Release(crate::ack::FileKey),
}

/// The generations of one followed file still to be read, in order, and the live file held back
/// behind them. Holds their descriptors, so the kubelet deleting one frees no data before it is
/// read (at most the number of generations the kubelet keeps, per container).
#[derive(Debug)]
pub struct Chain {
    /// The followed file's real path (the target of its symlink).
    pub base: PathBuf,
    /// The name the live file is followed under: its generations' records carry it.
    pub path: PathBuf,
    /// What that name resolved to.
    pub target: Option<PathBuf>,
    /// The step being read now (a followed generation's key).
    pub active: Option<crate::ack::FileKey>,
    pub steps: std::collections::VecDeque<Step>,
}

impl Chain {
    /// Whether a pending step holds the file at (dev, inode).
    pub fn holds(&self, dev_ino: (u64, u64)) -> bool {
        self.steps.iter().any(
            |s| matches!(s, Step::Open(p) if (p.generation.dev, p.generation.inode) == dev_ino),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn patterns_are_checked() {
        for good in ["{name}.*", "{name}.[0-9]*[0-9].gz", "{name}-{1,2}"] {
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        for bad in ["*.gz", "{name}", "../{name}.1", "{name}.[", "{name}{name}"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    fn gz(path: &Path, data: &[u8]) {
        let mut enc =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn kubelet_generations_oldest_first_plain_preferred_tmp_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("0.log"), b"live\n").unwrap();
        gz(&d.join("0.log.20261122-100000.gz"), b"first generation\n");
        gz(&d.join("0.log.20261122-100100.gz"), b"second generation\n");
        // Being compressed: both the plain file and the (complete) gzip exist.
        std::fs::write(d.join("0.log.20261122-100200"), b"third generation\n").unwrap();
        gz(&d.join("0.log.20261122-100200.gz"), b"third generation\n");
        std::fs::write(d.join("0.log.20261122-100300"), b"fourth generation\n").unwrap();
        std::fs::write(d.join("0.log.20261122-100400.tmp"), b"partial").unwrap();
        std::fs::write(d.join("1.log.20261122-100000"), b"other container\n").unwrap();
        let patterns = DEFAULT_PATTERNS.map(String::from);
        let found = find(d, &Listing::read(d), "0.log", &patterns);
        let names: Vec<_> = found
            .iter()
            .map(|g| g.path.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0.log.20261122-100000.gz",
                "0.log.20261122-100100.gz",
                "0.log.20261122-100200",
                "0.log.20261122-100300"
            ]
        );
        assert!(found[0].gzip && !found[2].gzip);
        assert_eq!(found[1].head, b"second generation\n");
    }

    #[test]
    fn numbered_generations_highest_is_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (n, text) in [(1, "newest\n"), (2, "middle\n"), (10, "oldest\n")] {
            std::fs::write(d.join(format!("app.log.{n}")), text).unwrap();
        }
        let found = find(d, &Listing::read(d), "app.log", &["{name}.*".to_string()]);
        let heads: Vec<_> = found.iter().map(|g| g.head.clone()).collect();
        assert_eq!(heads, [&b"oldest\n"[..], b"middle\n", b"newest\n"]);
    }
}
