//! Filebeat's registry (`libbeat/statestore/backend/memlog`): the directory
//! `<path.data>/registry/filebeat` holds `meta.json` (`{"version":"1"}`), snapshots
//! `<txid>.json` (a JSON array of values, each with its key as `_key`) and `log.json`, the
//! operations since the snapshot: `{"op":"set","id":N}` then `{"k":KEY,"v":VALUE}`, or
//! `{"op":"remove","id":N}` then `{"k":KEY}`. The state is rebuilt as Filebeat does: the
//! snapshot with the highest txid, then the operations numbered after it, in order, until the
//! first gap or unreadable value (a torn last line).
//!
//! Keys and values (`filebeat/input/filestream`):
//! - `filestream::<input id>::native::<inode>-<device>[-suffix]`, offset `cursor.offset`, path
//!   `meta.source`;
//! - `filestream::<input id>::fingerprint::<sha256 hex>`: SHA-256 of the file's first 1,024
//!   bytes (`prospector.scanner.fingerprint`, at its defaults);
//! - `filestream::<input id>::path::<path>`;
//! - `filebeat::logs::...` (the `log` input): `offset`, `source`, `FileStateOS.{inode,device}`.
//!
//! A value whose `ttl` is 0 was removed; a filestream value whose `cursor` is null was never
//! acknowledged. Filebeat holds `<path.data>/filebeat.lock` while it runs: a lock taken there
//! means it still does.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Entry, ImportError, Key, Kind, Loaded, Source};

/// Filebeat's default fingerprint: SHA-256 of this many bytes from the start.
const FINGERPRINT_LENGTH: u64 = 1024;

pub(super) fn read(source: &Source) -> Result<Loaded, ImportError> {
    let dir = &source.path;
    check_not_running(dir)?;
    if let Ok(meta) = std::fs::read(dir.join("meta.json")) {
        let version = serde_json::from_slice::<Value>(&meta)
            .ok()
            .and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned));
        if version.as_deref() != Some("1") {
            return Err(ImportError::unreadable(
                source,
                format!("meta.json has version {version:?}, not \"1\" (Filebeat 7.9 and later)"),
            ));
        }
    }
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    let mut txid = 0u64;
    if let Some((id, path)) = newest_snapshot(dir) {
        let text = std::fs::read(&path).map_err(|e| ImportError::unreadable(source, e))?;
        let values: Vec<Value> = serde_json::from_slice(&text)
            .map_err(|e| ImportError::unreadable(source, format!("{}: {e}", path.display())))?;
        for mut v in values {
            let Some(Value::String(key)) = v.as_object_mut().and_then(|o| o.remove("_key")) else {
                continue;
            };
            table.insert(key, v);
        }
        txid = id;
    }
    match std::fs::read(dir.join("log.json")) {
        Ok(text) => replay(&text, txid, &mut table),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImportError::unreadable(source, e)),
    }
    Ok(entries(&table))
}

/// A running Filebeat holds a lock on `<path.data>/filebeat.lock` (two levels above the
/// registry's store directory).
fn check_not_running(dir: &Path) -> Result<(), ImportError> {
    let Some(data) = dir.parent().and_then(Path::parent) else {
        return Ok(());
    };
    let lock = data.join("filebeat.lock");
    let Ok(file) = File::open(&lock) else {
        return Ok(());
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(ImportError::InUse {
            product: Kind::Filebeat.product(),
            path: dir.to_path_buf(),
            why: format!("{} is locked", lock.display()),
        }),
        // A lock this filesystem cannot take says nothing either way.
        Err(std::fs::TryLockError::Error(_)) => Ok(()),
    }
}

/// The snapshot Filebeat loads: the `<txid>.json` with the highest txid.
fn newest_snapshot(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((id, path))
        })
        .max_by_key(|(id, _)| *id)
}

/// Applies the operations of `log.json` numbered after `txid`, in order, until a gap or an
/// unreadable value.
fn replay(text: &[u8], txid: u64, table: &mut BTreeMap<String, Value>) {
    let mut values = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    let mut next = txid + 1;
    loop {
        let Some(Ok(action)) = values.next() else {
            return;
        };
        let Some(Ok(body)) = values.next() else {
            return;
        };
        let id = action.get("id").and_then(Value::as_u64).unwrap_or(0);
        if id <= txid {
            continue;
        }
        if id != next {
            return;
        }
        next += 1;
        let field = |name: &str| body.get(name).or_else(|| body.get(name.to_uppercase()));
        let Some(key) = field("k").and_then(Value::as_str) else {
            return;
        };
        match action.get("op").and_then(Value::as_str) {
            Some("set") => {
                let Some(value) = field("v") else {
                    return;
                };
                table.insert(key.to_string(), value.clone());
            }
            Some("remove") => {
                table.remove(key);
            }
            _ => return,
        }
    }
}

fn entries(table: &BTreeMap<String, Value>) -> Loaded {
    let mut loaded = Loaded::default();
    for (key, v) in table {
        if v.get("ttl").and_then(Value::as_i64) == Some(0) {
            loaded.skipped.push((key.clone(), "removed (ttl 0)".into()));
            continue;
        }
        let entry = if key.starts_with("filestream::") {
            filestream(key, v)
        } else if key.starts_with("filebeat::logs::") {
            log_input(v)
        } else {
            Err("not a file input's state".to_string())
        };
        match entry {
            Ok(e) => loaded.entries.push(e),
            Err(why) => loaded.skipped.push((key.clone(), why)),
        }
    }
    loaded
}

fn filestream(key: &str, v: &Value) -> Result<Entry, String> {
    let offset = v
        .get("cursor")
        .and_then(|c| c.get("offset"))
        .and_then(number)
        .ok_or("never acknowledged (no cursor offset)")?;
    let path = v
        .get("meta")
        .and_then(|m| m.get("source"))
        .and_then(Value::as_str)
        .map(PathBuf::from);
    let identifier = v
        .get("meta")
        .and_then(|m| m.get("identifier_name"))
        .and_then(Value::as_str)
        .unwrap_or("native");
    let marker = format!("::{identifier}::");
    let value = key
        .rfind(&marker)
        .map(|i| &key[i + marker.len()..])
        .ok_or_else(|| format!("no {identifier} identity in the key"))?;
    let key = match identifier {
        "native" => {
            let mut parts = value.split('-').map(str::parse::<u64>);
            match (parts.next(), parts.next()) {
                (Some(Ok(inode)), Some(Ok(device))) => Key::Inode {
                    dev: Some(device),
                    inode,
                },
                _ => return Err(format!("{value:?} is not inode-device")),
            }
        }
        "fingerprint" => {
            let hex = value
                .get(..64)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            Key::Fingerprint {
                hex: hex.ok_or("not a SHA-256 fingerprint")?.to_ascii_lowercase(),
                offset: 0,
                length: FINGERPRINT_LENGTH,
            }
        }
        "path" => Key::Path(PathBuf::from(value)),
        other => return Err(format!("file identity {other:?} cannot be matched")),
    };
    Ok(Entry {
        path,
        key,
        offset,
        marker: None,
    })
}

fn log_input(v: &Value) -> Result<Entry, String> {
    let offset = v.get("offset").and_then(number).ok_or("no offset")?;
    let os = v.get("FileStateOS");
    let inode = os.and_then(|o| o.get("inode")).and_then(number);
    let device = os.and_then(|o| o.get("device")).and_then(number);
    let path = v.get("source").and_then(Value::as_str).map(PathBuf::from);
    let key = match (inode, &path) {
        (Some(inode), _) => Key::Inode { dev: device, inode },
        (None, Some(p)) => Key::Path(p.clone()),
        (None, None) => return Err("neither an inode nor a path".into()),
    };
    Ok(Entry {
        path,
        key,
        offset,
        marker: None,
    })
}

/// A JSON number as u64, whatever form Filebeat wrote it in (`1.8e+12` after a reload).
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

/// Filebeat's fingerprint of the file at `path`: lowercase hex SHA-256 of `length` bytes from
/// `offset`; `None` for a file shorter than that.
pub(super) fn fingerprint(path: &Path, offset: u64, length: u64) -> io::Result<Option<String>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(length as usize);
    file.take(length).read_to_end(&mut buf)?;
    if (buf.len() as u64) < length {
        return Ok(None);
    }
    let digest = Sha256::digest(&buf);
    Ok(Some(digest.iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(snapshot: &str, log: &str, txid: u64) -> BTreeMap<String, Value> {
        let mut table = BTreeMap::new();
        let values: Vec<Value> = serde_json::from_str(snapshot).unwrap();
        for mut v in values {
            let key = v.as_object_mut().unwrap().remove("_key").unwrap();
            table.insert(key.as_str().unwrap().to_string(), v);
        }
        replay(log.as_bytes(), txid, &mut table);
        table
    }

    #[test]
    fn a_snapshot_then_the_operations_after_it_until_a_gap() {
        let snapshot = r#"[
{"_key":"filestream::my-app::native::1311934-2049","ttl":-1,"updated":[281470681743360,1714564805],"cursor":{"offset":87},"meta":{"source":"/var/log/app/app.log","identifier_name":"native"}},
{"_key":"filebeat::logs::native::524301-2049","id":"native::524301-2049","source":"/var/log/syslog","offset":1024,"ttl":-1,"type":"log","FileStateOS":{"inode":524301,"device":2049},"identifier_name":"native"}
]"#;
        let log = concat!(
            "{\"op\":\"set\",\"id\":10}\n{\"k\":\"filestream::my-app::native::1311934-2049\",\"v\":{\"cursor\":{\"offset\":1}}}\n",
            "{\"op\":\"set\",\"id\":13}\n{\"K\":\"filestream::my-app::native::1311934-2049\",\"V\":{\"ttl\":-1,\"cursor\":{\"offset\":131},\"meta\":{\"source\":\"/var/log/app/app.log\",\"identifier_name\":\"native\"}}}\n",
            "{\"op\":\"set\",\"id\":14}\n{\"k\":\"filestream::.global::fingerprint::",
            "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\",\"v\":{\"ttl\":-1,\"cursor\":{\"offset\":2.048e3},\"meta\":{\"source\":\"/var/log/b.log\",\"identifier_name\":\"fingerprint\"}}}\n",
            "{\"op\":\"remove\",\"id\":15}\n{\"k\":\"filebeat::logs::native::524301-2049\"}\n",
            "{\"op\":\"set\",\"id\":17}\n{\"k\":\"filestream::x::native::1-1\",\"v\":{\"cursor\":{\"offset\":5}}}\n",
            "{\"op\":\"set\",\"id\":18}\n{\"k\":\"torn",
        );
        let t = table(snapshot, log, 12);
        let loaded = entries(&t);
        let got: Vec<_> = loaded.entries.iter().map(|e| (&e.key, e.offset)).collect();
        assert_eq!(
            got,
            vec![
                (
                    &Key::Fingerprint {
                        hex: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
                            .into(),
                        offset: 0,
                        length: 1024
                    },
                    2048
                ),
                (
                    &Key::Inode {
                        dev: Some(2049),
                        inode: 1_311_934
                    },
                    131
                ),
            ],
            "id 10 is older than the snapshot, 15 removed the log input's state, 17 follows a gap"
        );
        assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    }

    #[test]
    fn removed_and_unacknowledged_states_are_reported() {
        let t = table(
            r#"[{"_key":"filestream::a::native::5-6","ttl":0,"cursor":{"offset":3}},
                {"_key":"filestream::a::native::7-8","ttl":-1,"cursor":null},
                {"_key":"filestream::a::inode_marker::7-x","ttl":-1,"cursor":{"offset":3},"meta":{"identifier_name":"inode_marker"}}]"#,
            "",
            1,
        );
        let loaded = entries(&t);
        assert!(loaded.entries.is_empty());
        assert_eq!(loaded.skipped.len(), 3, "{:?}", loaded.skipped);
    }

    #[test]
    fn the_fingerprint_is_sha256_of_the_first_1024_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, vec![b'a'; 2000]).unwrap();
        let digest = Sha256::digest(vec![b'a'; 1024]);
        let want: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fingerprint(&path, 0, 1024).unwrap(), Some(want));
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(fingerprint(&path, 0, 1024).unwrap(), None);
    }

    #[test]
    fn a_lock_held_on_filebeat_lock_means_it_runs() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("registry/filebeat");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = File::create(data.path().join("filebeat.lock")).unwrap();
        assert!(check_not_running(&dir).is_ok(), "unlocked");
        lock.lock().unwrap();
        let err = check_not_running(&dir).unwrap_err().to_string();
        assert!(err.contains("Filebeat still holds"), "{err}");
    }
}
