//! Switching from another agent with the real binary: `logship positions import` and
//! `positions.import_from` read Fluent Bit's database, Fluentd's pos_file, Filebeat's registry
//! and Vector's checkpoints (made here as those agents write them, see src/import), and the
//! agent then ships to the test Elasticsearch every line after the imported offsets exactly
//! once and none before them: of a live file, of a rotated generation the old agent was still
//! reading, and of a file it never saw. An entry for a file that no longer exists is reported.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::agent::{append, kubelet_rotate, wait_until, Fixture};
use support::elasticsearch::{Flavor, TestEs};

const WAIT: Duration = Duration::from_secs(30);
const INDEX: &str = "logs-logship-default";

fn logship(fx: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("--config")
        .arg(&fx.config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `logship positions import SPEC FLAGS...`.
fn import_cmd(fx: &Fixture, spec: &str, flags: &[&str]) -> Output {
    let mut args = vec!["positions", "import", spec];
    args.extend_from_slice(flags);
    logship(fx, &args, &[])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A line of `name`: long enough that three of them pass Filebeat's 1,024-byte fingerprint.
fn line(name: &str, i: usize) -> String {
    format!("{name} {i} {}", "x".repeat(400))
}

/// Appends lines `from..to` of `name` to `path`; the offset after the first `keep` of them
/// (counted from the file's start).
fn write_lines(path: &Path, name: &str, range: std::ops::Range<usize>) {
    let body: String = range.map(|i| line(name, i) + "\n").collect();
    append(path, body.as_bytes());
}

fn offset_after(name: &str, lines: usize) -> u64 {
    (0..lines).map(|i| line(name, i).len() as u64 + 1).sum()
}

/// What a test sets up: the old agent's view of the files.
struct Files {
    /// `a.log` rotated away while the old agent read it: 4 lines, 2 read.
    rotated: PathBuf,
    /// The new `a.log`: 3 lines, 1 read.
    live: PathBuf,
    /// `b.log`, which the old agent never saw: 3 lines.
    unseen: PathBuf,
    rotated_at: u64,
    live_at: u64,
}

impl Files {
    fn new(fx: &Fixture) -> Files {
        let live = fx.log("a.log");
        write_lines(&live, "old", 0..4);
        let rotated = kubelet_rotate(&live, "20261207-100000");
        write_lines(&live, "new", 0..3);
        let unseen = fx.log("b.log");
        write_lines(&unseen, "unseen", 0..3);
        Files {
            rotated,
            live,
            unseen,
            rotated_at: offset_after("old", 2),
            live_at: offset_after("new", 1),
        }
    }

    /// Every line after the offsets, and every line of the unseen file.
    fn expected() -> Vec<String> {
        let mut want = vec![
            line("old", 2),
            line("old", 3),
            line("new", 1),
            line("new", 2),
        ];
        want.extend((0..3).map(|i| line("unseen", i)));
        want.sort();
        want
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn dev(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().dev()
}

/// An inode no file of the test has.
const GONE_INODE: u64 = 4_000_000_001;

/// The stored documents' messages, sorted (a repeat would show twice).
fn stored(es: &TestEs) -> Vec<String> {
    let mut got: Vec<String> = es
        .documents(INDEX)
        .values()
        .map(|d| d["message"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    got
}

/// Imports `spec` (made by `setup`) through the command, then through `positions.import_from`,
/// each time into a fresh agent and Elasticsearch: every line after the offsets arrives once,
/// none before them. Returns what the command printed.
fn both_ways(setup: impl Fn(&Fixture, &Files) -> String) -> String {
    let mut said = String::new();
    for through_config in [false, true] {
        let fx = Fixture::new();
        let files = Files::new(&fx);
        let spec = setup(&fx, &files);
        let es = TestEs::start(Flavor::Elasticsearch8);
        let import = format!("[{}]", serde_json::json!(spec));
        let env: Vec<(&str, &str)> = if through_config {
            vec![("LOGSHIP_POSITIONS__IMPORT_FROM", import.as_str())]
        } else {
            let out = import_cmd(&fx, &spec, &[]);
            said = text(&out);
            assert!(out.status.success(), "{said}");
            vec![]
        };
        let mut agent = fx.spawn_to(&es.url(), &env);
        let want = Files::expected();
        assert!(
            wait_until(WAIT, || es.doc_count() >= want.len()),
            "{:#?}\n{}",
            stored(&es),
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
        let logs = agent.logs();
        assert!(agent.terminate().success(), "{logs}");
        assert_eq!(
            stored(&es),
            want,
            "through the configuration: {through_config}\n{logs}"
        );
        if through_config {
            assert!(
                logs.contains("Imported positions: 2 files matched"),
                "{logs}"
            );
            assert!(logs.contains("no file with its identity"), "{logs}");
        }
        let _ = &files.unseen;
    }
    said
}

fn assert_reported(said: &str, files: usize) {
    assert!(said.contains(&format!("{files} files matched")), "{said}");
    assert!(
        said.contains("no file with its identity exists now"),
        "{said}"
    );
}

#[test]
fn fluent_bit_database() {
    let said = both_ways(|fx, f| {
        let db = fx.dir.path().join("flb_kube.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        // Fluent Bit 5.x's schema, as tail_sql.h creates it, in its default WAL mode.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0, offset_marker INTEGER DEFAULT 0, offset_marker_size INTEGER DEFAULT 0);",
        )
        .unwrap();
        // The offset marker Fluent Bit 5.0.3+ stores: XXH3-64 of the 32 bytes before it.
        let marker = |path: &Path, offset: u64| {
            let bytes = std::fs::read(path).unwrap();
            xxhash_rust::xxh3::xxh3_64(&bytes[offset as usize - 32..offset as usize]) as i64
        };
        // An older row of the live file's inode first: the newest row wins.
        let rows = [
            (f.live.clone(), 0, inode(&f.live), 0, 0, 0),
            (
                f.rotated.clone(),
                f.rotated_at,
                inode(&f.rotated),
                1,
                marker(&f.rotated, f.rotated_at),
                32,
            ),
            (
                f.live.clone(),
                f.live_at,
                inode(&f.live),
                0,
                marker(&f.live, f.live_at),
                32,
            ),
            (
                PathBuf::from("/var/log/containers/gone.log"),
                10,
                GONE_INODE,
                0,
                0,
                0,
            ),
        ];
        for (name, offset, inode, rotated, marker, marker_size) in rows {
            conn.execute(
                "INSERT INTO in_tail_files (name, offset, inode, created, rotated, offset_marker, offset_marker_size) VALUES (?1, ?2, ?3, 1796630400, ?4, ?5, ?6)",
                rusqlite::params![
                    name.display().to_string(),
                    offset as i64,
                    inode as i64,
                    rotated,
                    marker,
                    marker_size
                ],
            )
            .unwrap();
        }
        drop(conn);
        format!("fluent-bit:{}", db.display())
    });
    assert_reported(&said, 2);
}

#[test]
fn fluentd_pos_file() {
    let said = both_ways(|fx, f| {
        let pos = fx.dir.path().join("fluentd-containers.log.pos");
        std::fs::write(
            &pos,
            format!(
                "{}\t{:016x}\t{:016x}\n{}\tffffffffffffffff\t{:016x}\n{}\t{:016x}\t{:016x}\n/var/log/containers/gone.log\t{:016x}\t{:016x}\n",
                f.rotated.display(),
                f.rotated_at,
                inode(&f.rotated),
                f.unseen.display(),
                inode(&f.unseen),
                f.live.display(),
                f.live_at,
                inode(&f.live),
                10,
                GONE_INODE,
            ),
        )
        .unwrap();
        format!("fluentd:{}", pos.display())
    });
    assert_reported(&said, 2);
    assert!(said.contains("no longer watched"), "{said}");
}

#[test]
fn filebeat_registry() {
    let said = both_ways(|fx, f| {
        let registry = fx.dir.path().join("filebeat-data/registry/filebeat");
        std::fs::create_dir_all(&registry).unwrap();
        std::fs::write(registry.join("meta.json"), r#"{"version":"1"}"#).unwrap();
        let native = |p: &Path| format!("filestream::logs::native::{}-{}", inode(p), dev(p));
        let head = std::fs::read(&f.live).unwrap();
        let digest: String = {
            use sha2::Digest;
            sha2::Sha256::digest(&head[..1024])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let value = |offset: u64, path: &Path, id: &str| {
            format!(
                r#"{{"ttl":-1,"updated":[281470681743360,1796630400],"cursor":{{"offset":{offset}}},"meta":{{"source":"{}","identifier_name":"{id}"}}}}"#,
                path.display()
            )
        };
        // The snapshot (txid 7): the rotated file at 0, a file since gone.
        let snapshot = format!(
            "[\n{{\"_key\":\"{}\",{}\n{{\"_key\":\"filestream::logs::native::{GONE_INODE}-1\",{}\n]",
            native(&f.rotated),
            &value(0, &f.rotated, "native")[1..],
            &value(10, Path::new("/var/log/gone.log"), "native")[1..],
        );
        std::fs::write(registry.join("7.json"), snapshot.replace("}\n{", "},\n{")).unwrap();
        // The log after it: the rotated file moves on, the live one appears by fingerprint;
        // an operation older than the snapshot is ignored.
        let log = format!(
            "{{\"op\":\"set\",\"id\":6}}\n{{\"k\":\"{}\",\"v\":{}}}\n{{\"op\":\"set\",\"id\":8}}\n{{\"k\":\"{}\",\"v\":{}}}\n{{\"op\":\"set\",\"id\":9}}\n{{\"k\":\"filestream::logs::fingerprint::{digest}\",\"v\":{}}}\n",
            native(&f.rotated),
            value(1, &f.rotated, "native"),
            native(&f.rotated),
            value(f.rotated_at, &f.rotated, "native"),
            value(f.live_at, &f.live, "fingerprint"),
        );
        std::fs::write(registry.join("log.json"), log).unwrap();
        format!("filebeat:{}", registry.display())
    });
    assert_reported(&said, 2);
}

#[test]
fn vector_checkpoints() {
    let said = both_ways(|fx, f| {
        let dir = fx.dir.path().join("vector/file_logs");
        std::fs::create_dir_all(&dir).unwrap();
        // The rotated file by its first line's checksum (Vector's default), the live one by
        // device and inode; a legacy fingerprint Vector itself no longer reads.
        let first = std::fs::read(&f.rotated).unwrap();
        let first = &first[..=first.iter().position(|&c| c == b'\n').unwrap()];
        let sum = crc::Crc::<u64>::new(&crc::CRC_64_ECMA_182).checksum(first);
        std::fs::write(
            dir.join("checkpoints.json"),
            format!(
                r#"{{"version":"1","checkpoints":[{{"fingerprint":{{"first_lines_checksum":{sum}}},"position":{},"modified":"2026-12-07T10:00:00Z"}},{{"fingerprint":{{"dev_inode":[{},{}]}},"position":{},"modified":"2026-12-07T10:00:00.5Z"}},{{"fingerprint":{{"dev_inode":[1,{GONE_INODE}]}},"position":10,"modified":"2026-12-07T10:00:00Z"}},{{"fingerprint":{{"checksum":1}},"position":3,"modified":"2026-12-07T10:00:00Z"}}]}}"#,
                f.rotated_at,
                dev(&f.live),
                inode(&f.live),
                f.live_at
            ),
        )
        .unwrap();
        format!("vector:{}", dir.join("checkpoints.json").display())
    });
    assert_reported(&said, 2);
    assert!(said.contains("Vector 0.51"), "{said}");
}

#[test]
fn the_command_never_replaces_positions_without_force_and_a_dry_run_writes_nothing() {
    let fx = Fixture::new();
    let f = Files::new(&fx);
    let pos = fx.dir.path().join("x.pos");
    std::fs::write(
        &pos,
        format!(
            "{}\t{:016x}\t{:016x}\n",
            f.live.display(),
            f.live_at,
            inode(&f.live)
        ),
    )
    .unwrap();
    let spec = format!("fluentd:{}", pos.display());
    let dry = import_cmd(&fx, &spec, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("Dry run"), "{}", text(&dry));
    assert!(!fx.data.join("positions.json").exists());
    let first = import_cmd(&fx, &spec, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let again = import_cmd(&fx, &spec, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let before = std::fs::read(fx.data.join("positions.json")).unwrap();
    let dry = import_cmd(&fx, &spec, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("1 files matched"), "{}", text(&dry));
    assert_eq!(
        std::fs::read(fx.data.join("positions.json")).unwrap(),
        before,
        "a dry run writes nothing"
    );
    assert!(text(&again).contains("--force"), "{}", text(&again));
    let forced = import_cmd(&fx, &spec, &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    // An offset that is not where a line starts is not used.
    std::fs::write(
        &pos,
        format!(
            "{}\t{:016x}\t{:016x}\n",
            f.live.display(),
            5,
            inode(&f.live)
        ),
    )
    .unwrap();
    let bad = import_cmd(&fx, &spec, &["--force"]);
    assert!(text(&bad).contains("not a newline"), "{}", text(&bad));
    assert!(text(&bad).contains("0 files matched"), "{}", text(&bad));
}

#[test]
fn a_database_fluent_bit_still_holds_is_refused_and_nothing_starts() {
    let fx = Fixture::new();
    let f = Files::new(&fx);
    let db = fx.dir.path().join("flb_kube.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0);",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO in_tail_files (name, offset, inode, created) VALUES (?1, ?2, ?3, 1)",
        rusqlite::params![
            f.live.display().to_string(),
            f.live_at as i64,
            inode(&f.live) as i64
        ],
    )
    .unwrap();
    let import = format!("[\"fluent-bit:{}\"]", db.display());
    let env = [("LOGSHIP_POSITIONS__IMPORT_FROM", import.as_str())];
    let held = logship(&fx, &[], &env);
    assert_eq!(held.status.code(), Some(70), "{}", text(&held));
    let said = text(&held);
    assert!(
        said.contains(&format!("Fluent Bit still holds {}", db.display()))
            && said.contains("stop it first"),
        "{said}"
    );
    let cli = import_cmd(&fx, &format!("fluent-bit:{}", db.display()), &[]);
    assert_eq!(cli.status.code(), Some(70), "{}", text(&cli));
    assert!(
        !fx.data.join("positions.json").exists(),
        "nothing half imported"
    );
    drop(conn);
    let cli = import_cmd(&fx, &format!("fluent-bit:{}", db.display()), &[]);
    assert!(cli.status.success(), "{}", text(&cli));
}

#[test]
fn a_filebeat_that_still_runs_holds_its_lock_and_nothing_is_imported() {
    let fx = Fixture::new();
    let data = fx.dir.path().join("filebeat-data");
    let registry = data.join("registry/filebeat");
    std::fs::create_dir_all(&registry).unwrap();
    std::fs::write(registry.join("meta.json"), r#"{"version":"1"}"#).unwrap();
    let lock = std::fs::File::create(data.join("filebeat.lock")).unwrap();
    lock.lock().unwrap();
    let out = import_cmd(&fx, &format!("filebeat:{}", registry.display()), &[]);
    assert_eq!(out.status.code(), Some(70), "{}", text(&out));
    assert!(
        text(&out).contains("Filebeat still holds"),
        "{}",
        text(&out)
    );
}

/// Bad input gets a clear error and imports nothing: a corrupt database, JSON of another shape,
/// a path that does not exist (given to the command), a malformed source.
#[test]
fn bad_sources_are_clear_errors() {
    let fx = Fixture::new();
    let corrupt = fx.dir.path().join("corrupt.db");
    std::fs::write(&corrupt, b"this is not a SQLite database, only some text").unwrap();
    let json = fx.dir.path().join("checkpoints.json");
    std::fs::write(&json, r#"{"version":"3","files":[]}"#).unwrap();
    let registry = fx.dir.path().join("registry/filebeat");
    std::fs::create_dir_all(&registry).unwrap();
    std::fs::write(registry.join("meta.json"), r#"{"version":"2"}"#).unwrap();
    for (spec, says) in [
        (
            format!("fluent-bit:{}", corrupt.display()),
            "not a database",
        ),
        (format!("vector:{}", json.display()), "version"),
        (format!("filebeat:{}", registry.display()), "meta.json"),
        (
            format!("fluentd:{}", fx.dir.path().join("none.pos").display()),
            "No such file",
        ),
    ] {
        let out = import_cmd(&fx, &spec, &[]);
        assert_eq!(out.status.code(), Some(70), "{spec}: {}", text(&out));
        assert!(text(&out).contains(says), "{spec}: {}", text(&out));
        assert!(!fx.data.join("positions.json").exists(), "{spec}");
    }
    let out = logship(
        &fx,
        &["check"],
        &[(
            "LOGSHIP_POSITIONS__IMPORT_FROM",
            r#"["syslog-ng:/x", "fluentd"]"#,
        )],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("positions.import_from"), "{said}");
    assert!(said.contains("\"syslog-ng\" is not a kind"), "{said}");
    assert!(said.contains("is not KIND:PATH"), "{said}");
    let help = text(&logship(&fx, &["positions", "import", "--help"], &[]));
    for kind in [
        "fluent-bit:PATH",
        "fluentd:PATH",
        "filebeat:DIR",
        "vector:PATH",
    ] {
        assert!(help.contains(kind), "{help}");
    }
}

/// A DaemonSet names the same sources on every node: a node without them starts as without an
/// import, and says so.
#[test]
fn a_source_missing_on_this_node_imports_nothing_and_the_agent_starts() {
    let fx = Fixture::new();
    let f = Files::new(&fx);
    let missing = fx.dir.path().join("no-such.db");
    let import = format!("[\"fluent-bit:{}\"]", missing.display());
    let mut agent = fx.spawn(&[("LOGSHIP_POSITIONS__IMPORT_FROM", import.as_str())]);
    // Everything of the followed files, from their heads (tail.read_from).
    assert!(fx.wait_for_records(3 + 3, WAIT), "{}", agent.logs());
    let logs = agent.logs();
    assert!(logs.contains("not on this node"), "{logs}");
    assert!(logs.contains("0 files matched"), "{logs}");
    assert!(agent.terminate().success());
    let _ = f.rotated;
}
