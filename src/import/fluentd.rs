//! Fluentd's in_tail `pos_file` (`lib/fluent/plugin/in_tail/position_file.rb`): one line per
//! file, `path<TAB>offset<TAB>inode`, both numbers in hexadecimal padded to 16 digits. An offset
//! of `ffffffffffffffff` marks a file no longer watched (compaction removes such lines and
//! duplicates; until then the last line of a path is its current one). No device is stored.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Entry, ImportError, Key, Loaded, Source};

/// in_tail's mark of a file it stopped watching.
const UNWATCHED: u64 = u64::MAX;

pub(super) fn read(source: &Source) -> Result<Loaded, ImportError> {
    let text = std::fs::read(&source.path).map_err(|e| ImportError::unreadable(source, e))?;
    Ok(parse(&String::from_utf8_lossy(&text)))
}

fn parse(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    // The last line of a path is its current position.
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    let mut entries: Vec<Option<Entry>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.rsplitn(3, '\t');
        let (Some(inode), Some(offset), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            loaded.skipped.push((
                format!("line {}", n + 1),
                "not path, offset and inode".into(),
            ));
            continue;
        };
        let (Ok(offset), Ok(inode)) = (
            u64::from_str_radix(offset.trim(), 16),
            u64::from_str_radix(inode.trim(), 16),
        ) else {
            loaded.skipped.push((
                format!("line {} ({path})", n + 1),
                "offset or inode is not hexadecimal".into(),
            ));
            continue;
        };
        let path = PathBuf::from(path);
        if let Some(&i) = by_path.get(&path) {
            entries[i] = None;
        }
        if offset == UNWATCHED {
            loaded.skipped.push((
                path.display().to_string(),
                "Fluentd no longer watched it (offset ffffffffffffffff)".into(),
            ));
            by_path.remove(&path);
            continue;
        }
        by_path.insert(path.clone(), entries.len());
        entries.push(Some(Entry {
            path: Some(path),
            key: Key::Inode { dev: None, inode },
            offset,
            marker: None,
        }));
    }
    loaded.entries = entries.into_iter().flatten().collect();
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_unwatched_entries_duplicates_and_garbage() {
        let text = "/var/log/containers/a.log\t00000000000001f4\t0000000000a1b2c3\n\
                    /var/log/containers/b.log\tffffffffffffffff\t0000000000000007\n\
                    /var/log/containers/a.log\t0000000000000200\t0000000000a1b2c3\n\
                    not a position line\n\
                    /var/log/containers/c.log\tzz\t01\n";
        let loaded = parse(text);
        assert_eq!(
            loaded.entries,
            vec![Entry {
                path: Some("/var/log/containers/a.log".into()),
                key: Key::Inode {
                    dev: None,
                    inode: 0xa1b2c3
                },
                offset: 0x200,
                marker: None,
            }]
        );
        assert_eq!(loaded.skipped.len(), 3, "{:?}", loaded.skipped);
        assert!(loaded.skipped[0].1.contains("no longer watched"));
    }
}
