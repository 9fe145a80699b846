//! Vector's file source checkpoints (`lib/file-source-common/src/checkpointer.rs`):
//! `<data_dir>/<source id>/checkpoints.json`, `{"version":"1","checkpoints":[{"fingerprint":
//! {...},"position":N,"modified":"..."}]}`. A fingerprint is `{"first_lines_checksum":N}` (once
//! spelled `first_line_checksum`), CRC-64/ECMA-182 of the file's first line, newline included
//! (`fingerprinter.rs`, with the defaults: one line, no ignored header, at most 102,400 bytes),
//! or `{"dev_inode":[dev,inode]}`. Vector writes `checkpoints.new.json` and renames it over
//! `checkpoints.json`, and reads the new one first when it is there; so does this.
//!
//! Entries are read one by one: the legacy `checksum` and `unknown` fingerprints (Vector before
//! 0.51) are reported and left out, not a reason to refuse the file. No path is stored: entries
//! are matched by computing the checksum of every candidate file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;

use super::{Entry, ImportError, Key, Loaded, Source};

/// Vector's default `max_line_bytes`: the checksum covers at most this much.
const MAX_LINE_BYTES: u64 = 102_400;

const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182);

pub(super) fn read(source: &Source) -> Result<Loaded, ImportError> {
    let path = &source.path;
    let newer = path.with_file_name("checkpoints.new.json");
    let text = std::fs::read(&newer)
        .ok()
        .filter(|t| serde_json::from_slice::<Value>(t).is_ok())
        .map_or_else(|| std::fs::read(path), Ok)
        .map_err(|e| ImportError::unreadable(source, e))?;
    let state: Value =
        serde_json::from_slice(&text).map_err(|e| ImportError::unreadable(source, e))?;
    parse(&state).map_err(|why| ImportError::unreadable(source, why))
}

fn parse(state: &Value) -> Result<Loaded, String> {
    let version = state.get("version").and_then(Value::as_str);
    if version != Some("1") {
        return Err(format!(
            "not a Vector checkpoints file of version \"1\" (version {version:?})"
        ));
    }
    let list = state
        .get("checkpoints")
        .and_then(Value::as_array)
        .ok_or("no \"checkpoints\" array")?;
    let mut loaded = Loaded::default();
    for (n, c) in list.iter().enumerate() {
        let what = format!("checkpoint {}", n + 1);
        let Some(position) = c.get("position").and_then(Value::as_u64) else {
            loaded.skipped.push((what, "no position".into()));
            continue;
        };
        let fingerprint = c.get("fingerprint");
        let sum = fingerprint.and_then(|f| {
            f.get("first_lines_checksum")
                .or_else(|| f.get("first_line_checksum"))
                .and_then(Value::as_u64)
        });
        let dev_inode = fingerprint
            .and_then(|f| f.get("dev_inode"))
            .and_then(Value::as_array)
            .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)));
        let key = match (sum, dev_inode) {
            (Some(sum), _) => Key::FirstLineChecksum(sum),
            (None, Some((dev, inode))) => Key::Inode {
                dev: Some(dev),
                inode,
            },
            _ => {
                loaded.skipped.push((
                    what,
                    format!(
                        "a fingerprint this import does not know ({}; Vector 0.51 and later do not read it either)",
                        fingerprint.map_or("none".into(), Value::to_string)
                    ),
                ));
                continue;
            }
        };
        loaded.entries.push(Entry {
            path: None,
            key,
            offset: position,
            marker: None,
        });
    }
    Ok(loaded)
}

/// The checksum Vector's default fingerprinter gives the file at `path`: CRC-64/ECMA-182 of its
/// bytes up to and including the first newline (at most 102,400); `None` while it has no
/// complete first line.
pub(super) fn first_line_checksum(path: &Path) -> io::Result<Option<u64>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_LINE_BYTES)
        .read_to_end(&mut buf)?;
    let end = match memchr::memchr(b'\n', &buf) {
        Some(i) => i + 1,
        None if buf.len() as u64 == MAX_LINE_BYTES => buf.len(),
        None => return Ok(None),
    };
    Ok(Some(CRC.checksum(&buf[..end])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc_64_ecma_182_of_the_first_line() {
        assert_eq!(CRC.checksum(b"123456789"), 0x6c40_df5f_0b49_7347);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(
            &path,
            "2024-05-01T12:00:00Z INFO service started\n2024-05-01T12:00:01Z INFO listening on :8080\n",
        )
        .unwrap();
        // Vector's own value for this file (lines = 1).
        assert_eq!(
            first_line_checksum(&path).unwrap(),
            Some(13_943_816_749_370_044_573)
        );
        std::fs::write(&path, "no newline yet").unwrap();
        assert_eq!(first_line_checksum(&path).unwrap(), None);
    }

    #[test]
    fn both_fingerprints_the_old_spelling_and_unknown_ones() {
        let state: Value = serde_json::from_str(
            r#"{"version":"1","checkpoints":[
                {"fingerprint":{"first_lines_checksum":13943816749370044573},"position":87,"modified":"2024-05-01T12:00:05.123456789Z"},
                {"fingerprint":{"first_line_checksum":5},"position":3,"modified":"2024-05-01T12:00:05Z"},
                {"fingerprint":{"dev_inode":[2049,1311934]},"position":42,"modified":"2024-05-01T11:59:58.5Z"},
                {"fingerprint":{"checksum":7},"position":9,"modified":"2024-05-01T11:59:58.5Z"}
            ]}"#,
        )
        .unwrap();
        let loaded = parse(&state).unwrap();
        assert_eq!(
            loaded
                .entries
                .iter()
                .map(|e| (&e.key, e.offset))
                .collect::<Vec<_>>(),
            vec![
                (&Key::FirstLineChecksum(13_943_816_749_370_044_573), 87),
                (&Key::FirstLineChecksum(5), 3),
                (
                    &Key::Inode {
                        dev: Some(2049),
                        inode: 1_311_934
                    },
                    42
                ),
            ]
        );
        assert_eq!(loaded.skipped.len(), 1);
        assert!(parse(&serde_json::json!({"version": "2", "checkpoints": []})).is_err());
    }
}
