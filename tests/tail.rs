//! The agent against real files: rotation, truncation, deletion, restarts, odd input.
//! Each test runs the real binary with the file sink and checks what a user would see in it.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use support::agent::{append, cri, kubelet_compress, kubelet_rotate, wait_until, Fixture};

const WAIT: Duration = Duration::from_secs(20);

/// Asserts every message in `expected` appears exactly once, and in the given order.
fn assert_exactly_once_in_order(got: &[String], expected: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in got {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    for e in expected {
        assert_eq!(
            counts.get(e.as_str()).copied().unwrap_or(0),
            1,
            "{e:?} should appear exactly once"
        );
    }
    let positions: Vec<usize> = expected
        .iter()
        .map(|e| got.iter().position(|g| g == e).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[test]
fn reads_existing_and_new_files_and_resumes_after_restart() {
    let fx = Fixture::new();
    let a = fx.log("a.log");
    append(&a, cri("stdout", 'F', "a1").as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(1, WAIT));
    append(&fx.log("b.log"), cri("stderr", 'F', "b1").as_bytes());
    append(&a, cri("stdout", 'F', "a2").as_bytes());
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());

    // Lines written while the agent is down are shipped once after it restarts, and nothing
    // already shipped comes again.
    append(&a, cri("stdout", 'F', "a3").as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(4, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    assert_exactly_once_in_order(&msgs, &["a1".into(), "a2".into(), "a3".into()]);
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    let b = fx
        .records()
        .into_iter()
        .find(|r| r["message"] == "b1")
        .unwrap();
    assert_eq!(b["stream"], "stderr");
    assert_eq!(b["host"]["name"], "test-node");
    assert_eq!(b["@timestamp"], "2026-11-22T10:00:00.123456789Z");
}

#[test]
fn kubelet_rotation_with_gzip_and_delete_loses_and_doubles_nothing() {
    let fx = Fixture::new();
    let path = fx
        .log("web_shop_nginx-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log");
    let mut agent = fx.spawn(&[]);
    let mut expected = Vec::new();
    let mut previous = None;
    for generation in 0..5 {
        for i in 0..200 {
            let m = format!("g{generation}-{i}");
            append(&path, cri("stdout", 'F', &m).as_bytes());
            expected.push(m);
        }
        // The kubelet rotates a file once it grew large, long after the agent opened it: wait
        // for the generation's first line, then rotate right after writing, while the agent is
        // still reading the old file.
        let first = format!("g{generation}-0");
        assert!(
            wait_until(WAIT, || fx.messages().contains(&first)),
            "{}",
            agent.logs()
        );
        let rotated = kubelet_rotate(&path, &format!("2026112210000{generation}"));
        if let Some(old) = previous.replace(rotated) {
            kubelet_compress(&old);
        }
    }
    append(&path, cri("stdout", 'F', "last").as_bytes());
    expected.push("last".into());
    assert!(
        fx.wait_for_records(expected.len(), WAIT),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    assert_exactly_once_in_order(&msgs, &expected);
    assert_eq!(msgs.len(), expected.len());
    let r = &fx.records()[0];
    assert_eq!(r["kubernetes"]["namespace"], "shop");
    assert_eq!(r["kubernetes"]["pod"]["name"], "web");
    assert_eq!(r["kubernetes"]["container"]["name"], "nginx");
}

#[test]
fn file_deleted_while_open_is_read_to_its_end() {
    let fx = Fixture::new();
    let path = fx.log("gone.log");
    append(&path, cri("stdout", 'F', "first").as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(1, WAIT));
    let mut expected = vec!["first".to_string()];
    let mut body = String::new();
    for i in 0..5000 {
        let m = format!("before-delete-{i}");
        body.push_str(&cri("stdout", 'F', &m));
        expected.push(m);
    }
    append(&path, body.as_bytes());
    fs::remove_file(&path).unwrap();
    assert!(
        fx.wait_for_records(expected.len(), WAIT),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    assert_exactly_once_in_order(&fx.messages(), &expected);
}

#[test]
fn copytruncate_restarts_at_zero_with_a_warning() {
    let fx = Fixture::new();
    let path = fx.log("app.log");
    append(&path, b"one\ntwo\nthree\n");
    let mut agent = fx.spawn(&[("LOGSHIP_TAIL__FORMAT", "raw")]);
    assert!(fx.wait_for_records(3, WAIT));
    fs::copy(&path, fx.dir.path().join("app.log.1")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, b"four\n");
    assert!(fx.wait_for_records(4, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_eq!(fx.messages(), ["one", "two", "three", "four"]);
    assert!(agent.logs().contains("truncated"), "{}", agent.logs());
}

#[test]
fn new_file_reusing_an_old_inode_starts_at_zero() {
    let fx = Fixture::new();
    let path = fx.log("reuse.log");
    append(&path, b"old file line that is long enough to matter\n");
    let mut agent = fx.spawn(&[("LOGSHIP_TAIL__FORMAT", "raw")]);
    assert!(fx.wait_for_records(1, WAIT));
    assert!(agent.terminate().success());
    // Rewrite the file in place: same inode, different first bytes. To the agent this is what a
    // new file on a reused inode looks like.
    fs::write(&path, b"NEW\n").unwrap();
    let mut agent = fx.spawn(&[("LOGSHIP_TAIL__FORMAT", "raw")]);
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    assert_eq!(
        fx.messages(),
        ["old file line that is long enough to matter", "NEW"]
    );
}

#[test]
fn crash_loses_nothing_and_repeats_only_the_unacknowledged_tail() {
    let fx = Fixture::new();
    let path = fx.log("crash.log");
    let mut expected = Vec::new();
    let mut body = String::new();
    for i in 0..20_000 {
        let m = format!("line-{i}");
        body.push_str(&cri("stdout", 'F', &m));
        expected.push(m);
    }
    append(&path, body.as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(1000, WAIT));
    agent.kill9();
    let shipped_before_crash = fx.messages().len();
    for i in 20_000..20_100 {
        let m = format!("line-{i}");
        append(&path, cri("stdout", 'F', &m).as_bytes());
        expected.push(m);
    }
    let mut agent = fx.spawn(&[]);
    assert!(
        wait_until(WAIT, || {
            let msgs = fx.messages();
            msgs.last().map(String::as_str) == Some("line-20099")
        }),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    let mut seen = std::collections::HashSet::new();
    for m in &msgs {
        seen.insert(m.as_str());
    }
    for e in &expected {
        assert!(seen.contains(e.as_str()), "{e} lost");
    }
    let repeated = msgs.len() - expected.len();
    assert!(
        repeated <= shipped_before_crash,
        "repeated {repeated} > shipped before the crash"
    );
}

#[test]
fn incomplete_line_waits_for_its_newline() {
    let fx = Fixture::new();
    let path = fx.log("partial.log");
    append(&path, b"complete\nhalf a li");
    let mut agent = fx.spawn(&[("LOGSHIP_TAIL__FORMAT", "raw")]);
    assert!(fx.wait_for_records(1, WAIT));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fx.messages(), ["complete"]);
    append(&path, b"ne\n");
    assert!(fx.wait_for_records(2, WAIT));
    assert!(agent.terminate().success());
    assert_eq!(fx.messages(), ["complete", "half a line"]);
}

#[test]
fn cri_partials_and_docker_splits_are_joined() {
    let fx = Fixture::new();
    let mut cri_text = cri("stdout", 'P', "part one, ");
    cri_text.push_str(&cri("stderr", 'F', "interleaved"));
    cri_text.push_str(&cri("stdout", 'F', "part two"));
    append(&fx.log("cri.log"), cri_text.as_bytes());
    let big = "x".repeat(16 * 1024);
    let docker = format!(
        "{{\"log\":\"{big}\",\"stream\":\"stdout\",\"time\":\"2026-11-22T10:00:00.5Z\"}}\n{{\"log\":\"tail\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-22T10:00:00.6Z\"}}\n"
    );
    append(&fx.log("docker.log"), docker.as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(3, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    assert!(msgs.contains(&"part one, part two".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"interleaved".to_string()));
    assert!(msgs.contains(&format!("{big}tail")));
    assert_eq!(msgs.len(), 3);
}

#[test]
fn long_lines_are_split_and_bad_bytes_replaced_without_losing_neighbours() {
    let fx = Fixture::new();
    let path = fx.log("odd.log");
    let long = "L".repeat(5000);
    let mut body = Vec::new();
    body.extend_from_slice(b"before\n");
    body.extend_from_slice(long.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(b"bad \xff\xfe bytes and a \0 nul\n");
    body.extend_from_slice(b"after\n");
    append(&path, &body);
    let mut agent = fx.spawn(&[
        ("LOGSHIP_TAIL__FORMAT", "raw"),
        ("LOGSHIP_TAIL__MAX_LINE_BYTES", "2KiB"),
    ]);
    assert!(fx.wait_for_records(6, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    assert_eq!(msgs.first().unwrap(), "before");
    assert_eq!(msgs.last().unwrap(), "after");
    let pieces: Vec<&String> = msgs.iter().filter(|m| m.starts_with('L')).collect();
    assert_eq!(pieces.len(), 3, "5000 bytes in pieces of at most 2048");
    assert!(pieces.iter().all(|p| p.len() <= 2048));
    assert_eq!(pieces.iter().map(|p| p.len()).sum::<usize>(), 5000);
    assert!(
        msgs.contains(&"bad \u{fffd}\u{fffd} bytes and a \0 nul".to_string()),
        "{msgs:?}"
    );
    // Pieces of one line have distinct offsets (they become distinct document ids).
    let offsets: std::collections::HashSet<u64> = fx
        .records()
        .iter()
        .map(|r| r["log"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets.len(), msgs.len());
}

#[test]
fn thousands_of_files() {
    let fx = Fixture::new();
    let files = 2000;
    for f in 0..files {
        let mut body = String::new();
        for i in 0..5 {
            body.push_str(&cri("stdout", 'F', &format!("f{f}-{i}")));
        }
        append(&fx.log(&format!("f{f}.log")), body.as_bytes());
    }
    let mut agent = fx.spawn(&[]);
    assert!(
        fx.wait_for_records(files * 5, Duration::from_secs(60)),
        "{}",
        agent.logs()
    );
    // New lines in a few of them still arrive.
    for f in (0..files).step_by(500) {
        append(
            &fx.log(&format!("f{f}.log")),
            cri("stdout", 'F', &format!("f{f}-late")).as_bytes(),
        );
    }
    assert!(fx.wait_for_records(files * 5 + 4, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    let msgs = fx.messages();
    assert_eq!(msgs.len(), files * 5 + 4);
    let unique: std::collections::HashSet<&String> = msgs.iter().collect();
    assert_eq!(unique.len(), msgs.len());
}

#[test]
fn read_from_tail_skips_history_only_at_start_up() {
    let fx = Fixture::new();
    append(&fx.log("old.log"), b"history 1\nhistory 2\n");
    let mut agent = fx.spawn(&[
        ("LOGSHIP_TAIL__READ_FROM", "tail"),
        ("LOGSHIP_TAIL__FORMAT", "raw"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    append(&fx.log("old.log"), b"fresh\n");
    append(&fx.log("new.log"), b"new file from its head\n");
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.terminate().success());
    let mut msgs = fx.messages();
    msgs.sort();
    assert_eq!(msgs, ["fresh", "new file from its head"]);
}

#[test]
fn a_large_backlog_does_not_delay_another_files_new_lines() {
    let fx = Fixture::new();
    let backlog = fx.log("noisy.log");
    let line = cri("stdout", 'F', &"n".repeat(150));
    let body = line.repeat(400_000); // ~80 MB
    append(&backlog, body.as_bytes());
    append(&fx.log("quiet.log"), b"");
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(1, WAIT));
    append(
        &fx.log("quiet.log"),
        cri("stdout", 'F', "quiet line").as_bytes(),
    );
    assert!(
        wait_until(WAIT, || fx.messages().iter().any(|m| m == "quiet line")),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
    // Where the quiet line is in the output, not how much was written by the time the test had
    // read the file again (reading 80 MB of output takes the test longer than the agent needs to
    // finish the backlog).
    let msgs = fx.messages();
    let at = msgs
        .iter()
        .position(|m| m == "quiet line")
        .unwrap_or(msgs.len());
    assert!(
        at < 400_000,
        "the quiet file's line waited for the whole backlog ({at} records first)"
    );
}

#[test]
fn sigterm_drains_writes_positions_and_exits_zero() {
    let fx = Fixture::new();
    let mut body = String::new();
    for i in 0..50_000 {
        body.push_str(&cri("stdout", 'F', &format!("m{i}")));
    }
    append(&fx.log("busy.log"), body.as_bytes());
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(100, WAIT));
    let status = agent.terminate();
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    // Whatever was shipped is in the positions; a restart ships the rest, no duplicates.
    let shipped = fx.messages().len();
    let positions = fx.positions();
    assert_eq!(positions["version"], 3);
    let mut agent = fx.spawn(&[]);
    assert!(fx.wait_for_records(50_000, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.terminate().success());
    assert_eq!(fx.messages().len(), 50_000, "first run shipped {shipped}");
}

/// A file copytruncated while the agent was down and written past its old position: with
/// `read_from = "tail"`, it is still read from its start (its content is new since the agent
/// last saw it; `read_from` applies only to files it never knew).
#[test]
fn copytruncate_while_down_with_read_from_tail_loses_nothing() {
    let fx = Fixture::new();
    let path = fx.log("app.log");
    let env = [
        ("LOGSHIP_TAIL__READ_FROM", "tail"),
        ("LOGSHIP_TAIL__FORMAT", "raw"),
    ];
    let mut agent = fx.spawn(&env);
    append(&path, b"before 1\nbefore 2\n");
    assert!(fx.wait_for_records(2, WAIT), "{}", agent.logs());
    assert!(agent.terminate().success());
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let after: Vec<String> = (0..20)
        .map(|i| format!("after truncation {i:02}"))
        .collect();
    append(&path, (after.join("\n") + "\n").as_bytes());
    let mut agent = fx.spawn(&env);
    assert!(fx.wait_for_records(22, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    let mut expected = vec!["before 1".to_string(), "before 2".to_string()];
    expected.extend(after);
    assert_eq!(fx.messages(), expected);
}

/// A file copytruncated while the agent is still reading its backlog (a rate limit holds it
/// back), and written past the offset the agent had reached: nothing of the new content ships
/// as a fragment read at the old offset, and no new line ships twice.
#[test]
fn copytruncate_during_a_backlog_ships_no_fragment_and_nothing_twice() {
    let fx = Fixture::new();
    let path = fx.log("busy.log");
    let old: String = (0..20_000)
        .map(|i| format!("old {i:06} {}\n", "o".repeat(40)))
        .collect();
    append(&path, old.as_bytes());
    let mut agent = fx.spawn(&[
        ("LOGSHIP_TAIL__FORMAT", "raw"),
        ("LOGSHIP_RATE_LIMIT__DEFAULT", "5000/s"),
    ]);
    assert!(fx.wait_for_records(2_000, WAIT), "{}", agent.logs());
    // copytruncate: the copy is not followed; the file starts over, at once longer than
    // before, with lines of another length (a read at the old offset would start mid-line).
    let new: Vec<String> = (0..30_000)
        .map(|i| format!("new {i:06} {}", "n".repeat(47)))
        .collect();
    let text = new.join("\n") + "\n";
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    drop(file);
    assert!(
        wait_until(WAIT * 3, || fx
            .messages()
            .iter()
            .any(|m| m == new.last().unwrap())),
        "{}",
        agent.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    let metrics = support::agent::http_get(agent.server_addr(), "/metrics").2;
    assert!(agent.terminate().success());
    // The old content not read yet when the file was truncated is gone, and counted.
    let lost: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logship_lost_bytes_total{reason=\"truncated_unread\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(lost > 100_000.0, "{lost} bytes counted lost");
    let msgs = fx.messages();
    let whole = |m: &String| {
        (m.starts_with("old ") && m.ends_with(&"o".repeat(40)) && m.len() == 51)
            || (m.starts_with("new ") && m.ends_with(&"n".repeat(47)) && m.len() == 58)
    };
    let fragments: Vec<&String> = msgs.iter().filter(|m| !whole(m)).collect();
    assert!(fragments.is_empty(), "fragments shipped: {fragments:?}");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &msgs {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "shipped more than once: {twice:?}");
    for m in &new {
        assert_eq!(counts.get(m.as_str()), Some(&1), "{m} lost");
    }
}

/// logrotate's copytruncate with a pattern that follows the copy (the one way to keep what is
/// written between the copy and the truncation): the copy is recognised by its first bytes and
/// read from where the original's batches ended, with the original's document ids, so every
/// line is in Elasticsearch once.
#[test]
fn a_followed_copytruncate_copy_repeats_nothing() {
    followed_copy_repeats_nothing(|from, to| {
        fs::copy(from, to).unwrap();
    });
}

/// The same, with the copy found while it is still empty: logrotate (like `cp`) creates the copy
/// before it writes into it, and logship may open it in between. Which file it is can only be
/// told once its first bytes are there (found by the fault harness: every line of the copy was
/// stored twice).
#[test]
fn a_copy_found_while_still_empty_repeats_nothing() {
    followed_copy_repeats_nothing(|from, to| {
        fs::File::create(to).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        fs::copy(from, to).unwrap();
    });
}

fn followed_copy_repeats_nothing(make_copy: impl Fn(&Path, &Path)) {
    use support::elasticsearch::{Flavor, TestEs};
    let es = TestEs::start(Flavor::Elasticsearch8);
    let fx = Fixture::new();
    let path = fx.log("app.log");
    let line = |prefix: &str, i: usize| {
        cri(
            "stdout",
            'F',
            &format!("{prefix} {i:04} {}", "p".repeat(30)),
        )
    };
    let first: String = (0..200).map(|i| line("first", i)).collect();
    append(&path, first.as_bytes());
    let url = es.url();
    let mut agent = fx.spawn(&[
        ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
        ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url.as_str()),
    ]);
    assert!(es.wait_for_doc_count(200, WAIT), "{}", agent.logs());
    // More lines, then at once the copy (a name the pattern follows) and the truncation.
    let more: String = (0..50).map(|i| line("more", i)).collect();
    append(&path, more.as_bytes());
    make_copy(&path, &fx.log("app.1.log"));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let after: String = (0..10).map(|i| line("after", i)).collect();
    append(&path, after.as_bytes());
    assert!(
        es.wait_for_doc_count(260, WAIT),
        "{} documents\n{}",
        es.doc_count(),
        agent.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.terminate().success());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for doc in es.documents("logs-logship-default").values() {
        *counts
            .entry(doc["message"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(counts.len(), 260, "{} documents", counts.len());
}

/// With `read_from = "tail"`, a file that appears at a path logship followed before (the
/// kubelet's next generation of a container, created while logship was stopped) is read from
/// its start: `read_from` is for history, and this file is new.
#[test]
fn read_from_tail_reads_a_known_path_new_file_from_its_start() {
    let fx = Fixture::new();
    let path = fx.log("app.log");
    append(&path, b"");
    let env = [
        ("LOGSHIP_TAIL__READ_FROM", "tail"),
        ("LOGSHIP_TAIL__FORMAT", "raw"),
    ];
    let mut agent = fx.spawn(&env);
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    // While logship is stopped: rotated away before anything was written, and a new file.
    fs::rename(&path, fx.dir.path().join("app.log.old")).unwrap();
    let lines: Vec<String> = (0..30)
        .map(|i| format!("written while stopped {i:02}"))
        .collect();
    append(&path, (lines.join("\n") + "\n").as_bytes());
    let mut agent = fx.spawn(&env);
    assert!(fx.wait_for_records(30, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    assert_eq!(fx.messages(), lines);
}

/// With `read_from = "tail"`, a file created while logship was stopped (after it last wrote its
/// positions) is read from its start at the restart: all of it was written since.
#[test]
fn read_from_tail_reads_a_file_created_while_stopped_from_its_start() {
    let fx = Fixture::new();
    let env = [
        ("LOGSHIP_TAIL__READ_FROM", "tail"),
        ("LOGSHIP_TAIL__FORMAT", "raw"),
    ];
    append(&fx.log("old.log"), b"history\n");
    let mut agent = fx.spawn(&env);
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    // Whole seconds in the positions file: be clearly after it.
    std::thread::sleep(Duration::from_millis(1100));
    let lines: Vec<String> = (0..20)
        .map(|i| format!("new while stopped {i:02}"))
        .collect();
    append(&fx.log("new.log"), (lines.join("\n") + "\n").as_bytes());
    let mut agent = fx.spawn(&env);
    assert!(fx.wait_for_records(20, WAIT), "{}", agent.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.terminate().success());
    assert_eq!(fx.messages(), lines);
}
