//! Fluent Bit's tail input database (the `DB` option; `plugins/in_tail/tail_sql.h`,
//! `tail_db.c`): SQLite, table `in_tail_files(id, name, offset, inode, created, rotated)` (and
//! since 5.0.3 `offset_marker`, `offset_marker_size`). Rows are looked up by inode, the highest
//! `id` winning, as Fluent Bit does; `name` is the path (after a rotation, the rotated path, with
//! `rotated` 1). No device is stored.
//!
//! A running Fluent Bit has the database open, by default in WAL mode: another connection's
//! exclusive lock is refused then (`database is locked`), which is how a running one is told
//! (there is one setup where it cannot be: a rollback journal without `db.locking`). A `-wal`
//! or `-journal` file next to it means it is open, or was not closed (a crash): its newest rows
//! are in that file, which only SQLite reads right, so the import refuses too. The database is
//! only read: a read-only mount (the migration overlays mount it so) is opened immutable, which
//! is right once no `-wal` is there.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{Entry, ImportError, Key, Kind, Loaded, Marker, Source};

pub(super) fn read(source: &Source) -> Result<Loaded, ImportError> {
    let path = &source.path;
    if !path.is_file() {
        return Err(ImportError::unreadable(source, "No such file or directory"));
    }
    let in_use = |why: String| ImportError::InUse {
        product: Kind::FluentBit.product(),
        path: path.clone(),
        why,
    };
    for suffix in ["-wal", "-journal"] {
        let side = sibling(path, suffix);
        if std::fs::metadata(&side).is_ok_and(|m| m.len() > 0) {
            return Err(in_use(format!(
                "{} is there: it has the database open, or did not close it",
                side.display()
            )));
        }
    }
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => {
            // Nothing is written: the exclusive lock is taken and given back at once.
            conn.busy_timeout(std::time::Duration::ZERO)
                .map_err(|e| ImportError::unreadable(source, e))?;
            let probe = conn.execute_batch(
                "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; ROLLBACK; PRAGMA locking_mode=NORMAL;",
            );
            if let Err(e) = probe {
                if is_busy(&e) {
                    return Err(in_use("its database is locked".into()));
                }
                return Err(ImportError::unreadable(source, e));
            }
            conn
        }
        // A read-only mount or file: nothing can write it, so it is read as it is.
        Err(_) => Connection::open_with_flags(
            format!("file:{}?immutable=1", path.display()),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| ImportError::unreadable(source, e))?,
    };
    let rows = query(&conn).map_err(|e| {
        if is_busy(&e) {
            in_use("its database is locked".into())
        } else {
            ImportError::unreadable(source, e)
        }
    })?;
    Ok(entries(rows))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// `(id, name, offset, inode, marker)` of every row, by id.
type Row = (i64, String, i64, i64, Option<Marker>);

fn query(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    // The offset marker came with Fluent Bit 5.0.3; older databases lack its columns.
    let marked = conn
        .prepare("SELECT name FROM pragma_table_info('in_tail_files')")?
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(Result::ok)
        .any(|c| c == "offset_marker_size");
    let sql = if marked {
        "SELECT id, name, offset, inode, offset_marker, offset_marker_size FROM in_tail_files ORDER BY id"
    } else {
        "SELECT id, name, offset, inode, 0, 0 FROM in_tail_files ORDER BY id"
    };
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| {
        let size = r.get::<_, Option<i64>>(5)?.unwrap_or(0);
        let marker = (size > 0).then(|| -> rusqlite::Result<Marker> {
            Ok(Marker {
                // Stored as a signed integer.
                xxh3: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                size: size as u64,
            })
        });
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            r.get::<_, Option<i64>>(3)?.unwrap_or(0),
            marker.transpose()?,
        ))
    })?;
    rows.collect()
}

fn entries(rows: Vec<Row>) -> Loaded {
    let mut loaded = Loaded::default();
    // By inode, the highest id winning (rows come by id).
    let mut by_inode: std::collections::BTreeMap<u64, Entry> = std::collections::BTreeMap::new();
    for (id, name, offset, inode, marker) in rows {
        // SQLite integers are signed: an inode past 2^63 comes back negative.
        let inode = inode as u64;
        let Ok(offset) = u64::try_from(offset) else {
            loaded
                .skipped
                .push((format!("row {id} ({name})"), "negative offset".into()));
            continue;
        };
        if let Some(old) = by_inode.insert(
            inode,
            Entry {
                path: Some(PathBuf::from(&name)),
                key: Key::Inode { dev: None, inode },
                offset,
                marker,
            },
        ) {
            loaded.skipped.push((
                format!("{} (inode {inode})", old.path.unwrap_or_default().display()),
                format!("a newer row (id {id}) has the same inode"),
            ));
        }
    }
    loaded.entries = by_inode.into_values().collect();
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0, offset_marker INTEGER DEFAULT 0, offset_marker_size INTEGER DEFAULT 0);";

    fn db(dir: &Path, wal: bool) -> (PathBuf, Connection) {
        let path = dir.join("flb_kube.db");
        let conn = Connection::open(&path).unwrap();
        if wal {
            conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        }
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "INSERT INTO in_tail_files (name, offset, inode, created) VALUES ('/var/log/containers/a.log', 87, 1311934, 1714564800);
             INSERT INTO in_tail_files (name, offset, inode, created, rotated) VALUES ('/var/log/pods/x/0.log.20240501', 42, 1311920, 1714478400, 1);
             INSERT INTO in_tail_files (name, offset, inode, created) VALUES ('/var/log/containers/old.log', 5, -2, 1);
             INSERT INTO in_tail_files (name, offset, inode, created) VALUES ('/var/log/containers/new.log', 9, -2, 2);",
        )
        .unwrap();
        (path, conn)
    }

    fn source(path: &Path) -> Source {
        Source {
            kind: Kind::FluentBit,
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn rows_by_inode_the_newest_winning() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = db(dir.path(), false);
        drop(conn);
        let loaded = read(&source(&path)).unwrap();
        let got: Vec<_> = loaded
            .entries
            .iter()
            .map(|e| (e.path.clone().unwrap(), e.offset))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/var/log/pods/x/0.log.20240501".into(), 42),
                ("/var/log/containers/a.log".into(), 87),
                ("/var/log/containers/new.log".into(), 9),
            ]
        );
        assert_eq!(
            loaded.entries[2].key,
            Key::Inode {
                dev: None,
                inode: u64::MAX - 1
            }
        );
        assert_eq!(loaded.skipped.len(), 1, "{:?}", loaded.skipped);
    }

    #[test]
    fn a_database_fluent_bit_still_holds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Fluent Bit's default: WAL, the connection open.
        let (path, conn) = db(dir.path(), true);
        let err = read(&source(&path)).unwrap_err().to_string();
        assert!(err.contains("Fluent Bit still holds"), "{err}");
        assert!(err.contains("stop it first"), "{err}");
        // Closed cleanly: the WAL is folded into the database and removed.
        drop(conn);
        assert_eq!(read(&source(&path)).unwrap().entries.len(), 3);
        // `db.locking true` with a rollback journal: locked while open.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=DELETE; PRAGMA locking_mode=EXCLUSIVE; BEGIN; SELECT count(*) FROM in_tail_files; COMMIT;",
        )
        .unwrap();
        let err = read(&source(&path)).unwrap_err().to_string();
        assert!(err.contains("Fluent Bit still holds"), "{err}");
        drop(conn);
        assert_eq!(read(&source(&path)).unwrap().entries.len(), 3);
    }

    #[test]
    fn a_read_only_database_is_read_as_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = db(dir.path(), true);
        drop(conn);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        // Root ignores permissions; the read-only open is what a read-only mount gets either way.
        let loaded = read(&source(&path)).unwrap();
        assert_eq!(loaded.entries.len(), 3);
        let missing = read(&source(&dir.path().join("none.db"))).unwrap_err();
        assert!(missing.to_string().contains("No such file"), "{missing}");
    }
}
