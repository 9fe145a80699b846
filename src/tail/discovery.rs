//! Which files to follow: include globs minus exclude globs.
//!
//! Each include pattern has a literal root directory (`/var/log/containers` for
//! `/var/log/containers/*.log`) and a depth. A scan walks the roots to that depth and keeps the
//! regular files (after following symlinks: kubelet's `/var/log/containers` entries link into
//! `/var/log/pods`) that an include pattern matches and no exclude pattern does.
//!
//! Scans run when notify reports a change under a root (so a new file is found well within a
//! second) and every `rescan_interval` as a safety net for events the kernel dropped or roots
//! that did not exist yet. Discovery only names paths; opening, identity and positions are the
//! reader's.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use globset::GlobSet;
use notify::{RecursiveMode, Watcher};

use super::TailSettings;

/// How deep a `**` pattern is walked: deep enough for any log layout, and a bound on symlink loops.
const MAX_DEPTH: usize = 16;

/// A directory to walk, and how many levels below it files can match.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Root {
    dir: PathBuf,
    depth: usize,
}

/// Finds the files to follow and notices new ones.
pub struct Discovery {
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<Root>,
    /// Set by the notify callback, cleared by [`Discovery::take_dirty`].
    dirty: Arc<AtomicBool>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Roots a watch is established on; the others are retried at every scan.
    watched: BTreeSet<PathBuf>,
}

impl Discovery {
    /// Discovery for the include and exclude patterns of `tail`. `wake` is signalled (never
    /// blocking) when notify reports a change under a root.
    pub fn new(tail: &TailSettings, wake: SyncSender<()>) -> Self {
        let dirty = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&dirty);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Only what changes the set of names: creations, removals, renames. Writes to a
            // followed file are seen by polling its descriptor; a scan per write would cost a
            // directory walk per log line. Errors (queue overflow) mark dirty too: the next scan
            // finds all.
            let relevant = event.as_ref().map_or(true, |e| {
                use notify::event::{EventKind, ModifyKind};
                matches!(
                    e.kind,
                    EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(_))
                        | EventKind::Any
                        | EventKind::Other
                )
            });
            if relevant {
                flag.store(true, Ordering::Release);
                let _ = wake.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "File notifications unavailable; new files are found by periodic rescans only.");
                None
            }
        };
        let mut roots: Vec<Root> = tail.include.iter().map(|p| root_of(p)).collect();
        roots.sort();
        roots.dedup();
        Discovery {
            include: tail.include_set.clone(),
            exclude: tail.exclude_set.clone(),
            roots,
            dirty,
            watcher,
            watched: BTreeSet::new(),
        }
    }

    /// Whether notify reported a change since the last call.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Asks for a scan at the next opportunity (a file was rotated: its successor is due).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Expands the patterns now. Missing roots and unreadable directories are skipped (they are
    /// retried at the next scan); discovery never fails.
    pub fn scan(&mut self) -> Vec<PathBuf> {
        self.watch_roots();
        let mut found = Vec::new();
        for root in &self.roots {
            walk(&root.dir, root.depth, &mut |path| {
                if self.include.is_match(path) && !self.exclude.is_match(path) {
                    found.push(path.to_path_buf());
                }
            });
        }
        found.sort();
        found.dedup();
        found
    }

    fn watch_roots(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for root in &self.roots {
            if self.watched.contains(&root.dir) || !root.dir.is_dir() {
                continue;
            }
            let mode = if root.depth > 1 {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(&root.dir, mode) {
                Ok(()) => {
                    self.watched.insert(root.dir.clone());
                }
                Err(e) => {
                    tracing::debug!(dir = %root.dir.display(), error = %e, "Cannot watch directory; relying on rescans.");
                }
            }
        }
    }
}

/// The literal directory a pattern starts in and how many levels below it matches can be.
fn root_of(pattern: &str) -> Root {
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{']);
    let path = Path::new(pattern);
    let mut dir = PathBuf::new();
    let mut rest = Vec::new();
    for component in path.components() {
        let text = component.as_os_str().to_string_lossy();
        if rest.is_empty() && !is_glob(&text) {
            dir.push(component);
        } else {
            rest.push(text.into_owned());
        }
    }
    if rest.is_empty() {
        // A literal file path: its directory, one level.
        let parent = path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        return Root {
            dir: parent,
            depth: 1,
        };
    }
    let depth = if rest.iter().any(|c| c.contains("**")) {
        MAX_DEPTH
    } else {
        rest.len()
    };
    if dir.as_os_str().is_empty() || !matches!(path.components().next(), Some(Component::RootDir)) {
        dir = PathBuf::from("/");
    }
    Root { dir, depth }
}

/// Calls `f` for every regular file (symlinks followed) at most `depth` levels below `dir`.
fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // metadata() follows symlinks; a dangling link (its pod is gone) is simply skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            f(&path);
        } else if meta.is_dir() && depth > 1 {
            walk(&path, depth - 1, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_of_patterns() {
        let r = |p| root_of(p);
        assert_eq!(
            r("/var/log/containers/*.log"),
            Root {
                dir: "/var/log/containers".into(),
                depth: 1
            }
        );
        assert_eq!(
            r("/var/log/pods/*/*/*.log"),
            Root {
                dir: "/var/log/pods".into(),
                depth: 3
            }
        );
        assert_eq!(
            r("/var/log/**/*.log"),
            Root {
                dir: "/var/log".into(),
                depth: MAX_DEPTH
            }
        );
        assert_eq!(
            r("/var/log/syslog"),
            Root {
                dir: "/var/log".into(),
                depth: 1
            }
        );
    }
}
