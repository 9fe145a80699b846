//! The journal file reader (`src/journald/file.rs`) against real journal files, written by
//! systemd-journal-remote as journald writes them (tests/support/journal.rs): every field and
//! timestamp of every entry is what was written and what `journalctl -o export` reads, in the
//! compact and the regular layout, compressed or not; a chain of many entry arrays is walked from
//! any index and searched by sequence number; entries appended while the file is read are read
//! after a refresh; a damaged file gives errors, never a panic or an endless loop.

mod support;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use logship::journald::file::{Cursor, Entry, JournalError, JournalFile, State};
use support::journal::{journalctl_export, write_journal, write_journal_with, ExportEntry};

const T0: u64 = 1_700_000_000_000_000;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Every entry of the file, in order.
fn read_all(path: &Path) -> Vec<Entry> {
    let mut file = JournalFile::open(path).unwrap();
    let offsets: Vec<u64> = file.entry_offsets(0).map(Result::unwrap).collect();
    assert_eq!(offsets.len() as u64, file.header().n_entries);
    offsets
        .into_iter()
        .map(|offset| {
            let mut entry = Entry::new();
            file.read_entry(offset, &mut entry).unwrap();
            entry
        })
        .collect()
}

fn owned_fields(entry: &Entry) -> Vec<(String, Vec<u8>)> {
    entry
        .fields()
        .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
        .collect()
}

/// The entries read are the entries written: timestamps, boot id, sequence numbers from
/// `first_seqnum` on, and the fields as a set (journald stores an entry's fields in the order of
/// their DATA objects in the file, and a repeated `NAME=value` once), `_BOOT_ID` included.
fn assert_same(read: &[Entry], written: &[ExportEntry], first_seqnum: u64) {
    assert_eq!(read.len(), written.len());
    for (i, (r, w)) in read.iter().zip(written).enumerate() {
        assert_eq!(r.seqnum, first_seqnum + i as u64, "entry {i}");
        assert_eq!(r.realtime, w.realtime, "entry {i}");
        assert_eq!(r.monotonic, w.monotonic, "entry {i}");
        assert_eq!(r.boot_id, w.boot_id_bytes(), "entry {i}");
        let got: BTreeSet<(String, Vec<u8>)> = owned_fields(r).into_iter().collect();
        let mut want: BTreeSet<(String, Vec<u8>)> = w.fields.iter().cloned().collect();
        want.insert(("_BOOT_ID".into(), w.boot_id.clone().into_bytes()));
        assert_eq!(got, want, "entry {i}");
        assert_eq!(r.len(), want.len(), "entry {i}: a field read twice");
    }
}

/// Every entry and field as our reader reads it equals what `journalctl -o export` reads, in
/// order.
fn assert_matches_journalctl(path: &Path) {
    let ours = read_all(path);
    let theirs = journalctl_export(path);
    assert_eq!(ours.len(), theirs.len());
    for (i, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
        let value = |name: &str| {
            theirs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(
            value("__REALTIME_TIMESTAMP"),
            Some(ours.realtime.to_string()),
            "entry {i}"
        );
        assert_eq!(
            value("__MONOTONIC_TIMESTAMP"),
            Some(ours.monotonic.to_string()),
            "entry {i}"
        );
        if let Some(seqnum) = value("__SEQNUM") {
            assert_eq!(seqnum, ours.seqnum.to_string(), "entry {i}");
        }
        let cursor = value("__CURSOR").unwrap();
        assert!(
            cursor.contains(&format!(";i={:x};", ours.seqnum)),
            "entry {i}: {cursor}"
        );
        let theirs: Vec<(String, Vec<u8>)> = theirs
            .iter()
            .filter(|(n, _)| !n.starts_with("__"))
            .cloned()
            .collect();
        assert_eq!(owned_fields(ours), theirs, "entry {i}");
    }
}

fn binary_message() -> Vec<u8> {
    b"binary \x00 nul, \xff high byte,\nand a second line".to_vec()
}

/// A message of 200 KiB that compresses very well.
fn huge_message() -> Vec<u8> {
    b"0123456789abcdef-"
        .iter()
        .copied()
        .cycle()
        .take(200 * 1024)
        .collect()
}

/// Entries of every kind: text, binary, repeated fields, empty values, values holding `=`,
/// a 5000-byte and a 200 KiB message, and another boot.
fn mixed_entries() -> Vec<ExportEntry> {
    let five_thousand: Vec<u8> = (0..5000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    vec![
        ExportEntry::new(T0, 1_000)
            .field("MESSAGE", "hello journal")
            .field("PRIORITY", "6")
            .field("SYSLOG_IDENTIFIER", "test"),
        ExportEntry::new(T0 + 1, 1_001)
            .field("MESSAGE", binary_message())
            .field("PRIORITY", "3"),
        ExportEntry::new(T0 + 2, 1_002)
            .field("MESSAGE", "repeated fields")
            .field("TAG", "new-a")
            .field("TAG", "new-b"),
        ExportEntry::new(T0 + 3, 1_003)
            .field("MESSAGE", "an empty value and a value holding =")
            .field("EMPTY", "")
            .field("EQUATION", "a=b=c"),
        ExportEntry::new(T0 + 4, 1_004).field("MESSAGE", &five_thousand),
        ExportEntry::new(T0 + 5, 1_005)
            .field("MESSAGE", huge_message())
            .field("SYSLOG_IDENTIFIER", "test"),
        ExportEntry::new(T0 + 6, 7)
            .boot("fedcba9876543210fedcba9876543210")
            .field("MESSAGE", "after a reboot")
            .field("_TRANSPORT", "stdout")
            .field("_PID", "4242"),
    ]
}

#[test]
fn every_field_and_timestamp_is_what_was_written() {
    let dir = dir();
    let path = dir.path().join("mixed.journal");
    let written = mixed_entries();
    write_journal(&path, &written);

    let file = JournalFile::open(&path).unwrap();
    let header = file.header().clone();
    assert!(
        header.compact(),
        "systemd 252 writes compact files: {header:?}"
    );
    assert_eq!(header.state, State::Offline);
    assert_eq!(header.n_entries, written.len() as u64);
    assert_eq!(
        (header.head_entry_seqnum, header.tail_entry_seqnum),
        (1, written.len() as u64)
    );
    assert_eq!(header.head_entry_realtime, T0);
    assert_eq!(header.tail_entry_realtime, T0 + 6);
    drop(file);

    let read = read_all(&path);
    assert_same(&read, &written, 1);
    assert_eq!(read[1].get(b"MESSAGE"), Some(binary_message().as_slice()));
    assert_eq!(read[3].get(b"EMPTY"), Some(&b""[..]));
    assert_eq!(read[3].get(b"EQUATION"), Some(&b"a=b=c"[..]));
    assert_eq!(read[3].get(b"NOPE"), None);
    assert_eq!(read[4].get(b"MESSAGE").unwrap().len(), 5000);
    assert_eq!(read[5].get(b"MESSAGE"), Some(huge_message().as_slice()));
    // Two values of one field, both new to the file, come in the order written.
    let tags: Vec<&[u8]> = read[2]
        .fields()
        .filter(|(n, _)| *n == b"TAG")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(tags, [&b"new-a"[..], b"new-b"]);

    // The 200 KiB message was stored compressed (the file does not hold its text).
    let raw = fs::read(&path).unwrap();
    let text = &huge_message()[..4096];
    assert!(
        !raw.windows(text.len()).any(|w| w == text),
        "the large message was not compressed"
    );

    assert_matches_journalctl(&path);
}

#[test]
fn a_repeated_field_keeps_both_values_and_a_repeated_pair_is_stored_once() {
    let dir = dir();
    let path = dir.path().join("tags.journal");
    let written = vec![
        ExportEntry::new(T0, 1)
            .field("MESSAGE", "one")
            .field("TAG", "a"),
        ExportEntry::new(T0 + 1, 2)
            .field("MESSAGE", "two")
            .field("TAG", "b")
            .field("TAG", "a")
            .field("TAG", "b"),
    ];
    write_journal(&path, &written);
    let read = read_all(&path);
    // journald drops the second TAG=b and orders the fields by their place in the file: TAG=a,
    // written with the first entry, comes before TAG=b.
    let tags: Vec<&[u8]> = read[1]
        .fields()
        .filter(|(n, _)| *n == b"TAG")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(tags, [&b"a"[..], b"b"]);
    assert_eq!(read[1].get(b"TAG"), Some(&b"a"[..]));
    assert_matches_journalctl(&path);
}

#[test]
fn the_regular_layout_and_uncompressed_payloads_read_the_same() {
    let dir = dir();
    let written = mixed_entries();
    for (name, args, env) in [
        (
            "regular.journal",
            &[][..],
            &[("SYSTEMD_JOURNAL_COMPACT", "0")][..],
        ),
        ("plain.journal", &["--compress=no"][..], &[][..]),
        (
            "regular-plain.journal",
            &["--compress=no"][..],
            &[
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
            ][..],
        ),
    ] {
        let path = dir.path().join(name);
        write_journal_with(&path, &written, args, env);
        let file = JournalFile::open(&path).unwrap();
        assert_eq!(
            file.header().compact(),
            !name.starts_with("regular"),
            "{name}"
        );
        drop(file);
        assert_same(&read_all(&path), &written, 1);
        assert_matches_journalctl(&path);
    }
}

fn many(n: u64, from: u64) -> Vec<ExportEntry> {
    (from..from + n)
        .map(|i| {
            ExportEntry::new(T0 + i * 1000, 5_000 + i)
                .field("MESSAGE", format!("entry number {i}"))
                .field("PRIORITY", ["3", "4", "6"][(i % 3) as usize])
                .field("_SYSTEMD_UNIT", format!("unit-{}.service", i % 7))
                .field("N", i.to_string())
        })
        .collect()
}

#[test]
fn twenty_thousand_entries_are_read_in_order_from_any_index_and_found_by_seqnum() {
    let dir = dir();
    let path = dir.path().join("many.journal");
    const N: u64 = 20_000;
    let written = many(N, 0);
    write_journal(&path, &written);

    let read = read_all(&path);
    assert_same(&read, &written, 1);

    let mut file = JournalFile::open(&path).unwrap();
    let mut entry = Entry::new();
    for from in [0, 1, 2, 5, 100, 4_095, 4_096, 12_345, N - 1] {
        let offsets: Vec<u64> = file.entry_offsets(from).map(Result::unwrap).collect();
        assert_eq!(offsets.len() as u64, N - from, "from {from}");
        file.read_entry(offsets[0], &mut entry).unwrap();
        assert_eq!(entry.seqnum, from + 1, "from {from}");
        assert_eq!(entry.get(b"N"), Some(from.to_string().as_bytes()));
        file.read_entry(*offsets.last().unwrap(), &mut entry)
            .unwrap();
        assert_eq!(entry.seqnum, N);
    }
    for from in [N, N + 1, u64::MAX] {
        assert_eq!(file.entry_offsets(from).count(), 0, "from {from}");
    }

    // The first entry whose seqnum is past the one given (seqnums are 1..=N).
    for (seqnum, index) in [
        (0, Some(0)),
        (1, Some(1)),
        (2, Some(2)),
        (N / 2, Some(N / 2)),
        (4_097, Some(4_097)),
        (N - 1, Some(N - 1)),
        (N, None),
        (N + 10, None),
    ] {
        assert_eq!(file.find_seqnum(seqnum).unwrap(), index, "seqnum {seqnum}");
        if let Some(index) = index {
            let offset = file.entry_offsets(index).next().unwrap().unwrap();
            file.read_entry(offset, &mut entry).unwrap();
            assert_eq!(entry.seqnum, seqnum + 1);
        }
    }
    for seqnum in (0..N).step_by(997) {
        assert_eq!(file.find_seqnum(seqnum).unwrap(), Some(seqnum));
    }
    assert_matches_journalctl(&path);
}

#[test]
fn entries_appended_after_open_are_read_after_a_refresh() {
    let dir = dir();
    let path = dir.path().join("live.journal");
    write_journal(&path, &many(100, 0));

    let mut file = JournalFile::open(&path).unwrap();
    let mut cursor = Cursor::new(0);
    let mut entry = Entry::new();
    let mut seen = 0;
    let mut read_available = |file: &mut JournalFile, cursor: &mut Cursor, seen: &mut u64| {
        while let Some(offset) = file.next_entry(cursor).unwrap() {
            file.read_entry(offset, &mut entry).unwrap();
            assert_eq!(entry.seqnum, *seen + 1);
            assert_eq!(entry.get(b"N"), Some(seen.to_string().as_bytes()));
            *seen += 1;
        }
    };
    read_available(&mut file, &mut cursor, &mut seen);
    assert_eq!(seen, 100);

    // A second run appends (the same seqnum id, numbers going on), enough for new arrays.
    for (from, n) in [(100, 300), (400, 5_000), (5_400, 1)] {
        write_journal(&path, &many(n, from));
        read_available(&mut file, &mut cursor, &mut seen);
        assert_eq!(seen, from, "nothing new before a refresh");
        file.refresh().unwrap();
        assert_eq!(file.header().n_entries, from + n);
        read_available(&mut file, &mut cursor, &mut seen);
        assert_eq!(seen, from + n);
        assert_eq!(cursor.index(), from + n);
    }
    assert_eq!(file.find_seqnum(5_000).unwrap(), Some(5_000));
}

#[test]
fn a_file_written_while_it_is_read_is_read_whole() {
    let dir = dir();
    let path = dir.path().join("racing.journal");
    write_journal(&path, &many(10, 0));
    let mut file = JournalFile::open(&path).unwrap();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            for round in 0..6 {
                write_journal(&path, &many(5_000, 10 + round * 5_000));
            }
        })
    };
    let total = 10 + 6 * 5_000;
    let mut cursor = Cursor::new(0);
    let mut entry = Entry::new();
    let start = Instant::now();
    while cursor.index() < total {
        assert!(
            start.elapsed().as_secs() < 120,
            "stuck at {}",
            cursor.index()
        );
        file.refresh().unwrap();
        while let Some(offset) = file.next_entry(&mut cursor).unwrap() {
            file.read_entry(offset, &mut entry).unwrap();
            let i = cursor.index() - 1;
            assert_eq!(entry.seqnum, i + 1);
            assert_eq!(
                entry.get(b"MESSAGE"),
                Some(format!("entry number {i}").as_bytes())
            );
        }
        if writer.is_finished() && cursor.index() < total {
            file.refresh().unwrap();
            assert!(
                file.header().n_entries > cursor.index(),
                "entries missing after the writer ended"
            );
        }
    }
    writer.join().unwrap();
}

#[test]
fn a_deleted_file_stays_readable_through_its_descriptor() {
    let dir = dir();
    let path = dir.path().join("deleted.journal");
    write_journal(&path, &many(50, 0));
    let fd = fs::File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    let mut file = JournalFile::from_file(fd, &path).unwrap();
    file.refresh().unwrap();
    let mut entry = Entry::new();
    let offsets: Vec<u64> = file.entry_offsets(0).map(Result::unwrap).collect();
    assert_eq!(offsets.len(), 50);
    file.read_entry(offsets[49], &mut entry).unwrap();
    assert_eq!(entry.get(b"N"), Some(&b"49"[..]));
}

// Damage.

fn le64(raw: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(raw[at as usize..at as usize + 8].try_into().unwrap())
}

fn le32(raw: &[u8], at: u64) -> u64 {
    u64::from(u32::from_le_bytes(
        raw[at as usize..at as usize + 4].try_into().unwrap(),
    ))
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

/// A copy of `src` named `name` in `dir`.
fn copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(src, &path).unwrap();
    path
}

/// Walks the whole file, reading every entry and searching a few seqnums; counts the entries
/// read and the errors. Every call ends: the walk stops at the first chain error.
fn walk(path: &Path) -> Result<(u64, u64), JournalError> {
    let mut file = JournalFile::open(path)?;
    let mut entry = Entry::new();
    let (mut good, mut bad) = (0, 0);
    let offsets: Vec<Result<u64, JournalError>> = file.entry_offsets(0).collect();
    assert!(offsets.len() as u64 <= file.header().n_entries + 1);
    for offset in offsets {
        match offset.and_then(|o| file.read_entry(o, &mut entry)) {
            Ok(()) => good += 1,
            Err(_) => bad += 1,
        }
    }
    for seqnum in [0, 1, 50, 10_000] {
        let _ = file.find_seqnum(seqnum);
    }
    file.refresh()?;
    Ok((good, bad))
}

#[test]
fn a_damaged_file_gives_errors_never_a_panic() {
    let dir = dir();
    let src = dir.path().join("good.journal");
    let mut written = many(3_000, 0);
    written[1_000] = ExportEntry::new(T0, 1).field("MESSAGE", huge_message());
    write_journal(&src, &written);
    assert_eq!(walk(&src).unwrap(), (3_000, 0));
    let raw = fs::read(&src).unwrap();
    let header_size = le64(&raw, 88);
    let first_array = le64(&raw, 176);
    let tail_object = le64(&raw, 136);

    // A bad signature, an unknown incompatible flag.
    let path = copy(&src, dir.path(), "signature.journal");
    patch(&path, 0, b"NOTAJRNL");
    assert!(matches!(
        JournalFile::open(&path),
        Err(JournalError::NotJournal { .. })
    ));
    let path = copy(&src, dir.path(), "flags.journal");
    let flags = le32(&raw, 12) as u32 | 1 << 5;
    patch(&path, 12, &flags.to_le_bytes());
    let err = JournalFile::open(&path).unwrap_err();
    assert!(matches!(err, JournalError::UnknownFeatures { .. }), "{err}");
    assert!(err.to_string().contains("newer logship"), "{err}");

    // Truncated: at the header, in the middle of the objects.
    for len in [0, 7, 100, header_size, tail_object / 2, tail_object] {
        let path = copy(&src, dir.path(), "truncated.journal");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        match walk(&path) {
            Ok((good, bad)) => assert!(good < 3_000 || len >= tail_object, "{len}: {good} {bad}"),
            Err(e) => assert!(
                matches!(
                    e,
                    JournalError::NotJournal { .. } | JournalError::Corrupt { .. }
                ),
                "{len}: {e}"
            ),
        }
    }

    // Garbage over items of the first entry array: those entries fail, the others are read.
    let path = copy(&src, dir.path(), "array-items.journal");
    patch(&path, first_array + 24 + 4 * 2, &[0x5a; 12]);
    let (good, bad) = walk(&path).unwrap();
    assert_eq!((good, bad), (2_997, 3));

    // The first array's next array points back to it: a cycle ends the walk with an error.
    let path = copy(&src, dir.path(), "cycle.journal");
    patch(&path, first_array + 16, &first_array.to_le_bytes());
    let mut file = JournalFile::open(&path).unwrap();
    let offsets: Vec<_> = file.entry_offsets(0).collect();
    let err = offsets.last().unwrap().as_ref().unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    assert!(offsets[..offsets.len() - 1].iter().all(Result::is_ok));
    assert!(file.entry_offsets(2_999).next().unwrap().is_err());
    assert!(file.find_seqnum(2_999).is_err());

    // The first array's header damaged: no entry can be reached.
    let path = copy(&src, dir.path(), "array-header.journal");
    patch(&path, first_array, &[0xff; 16]);
    let mut file = JournalFile::open(&path).unwrap();
    let offsets: Vec<_> = file.entry_offsets(0).collect();
    assert_eq!(offsets.len(), 1);
    assert!(matches!(offsets[0], Err(JournalError::Corrupt { .. })));

    // A DATA object's header, and the compressed payload of the huge message: that entry fails,
    // every other one is read.
    let mut file = JournalFile::open(&src).unwrap();
    let entries: Vec<u64> = file.entry_offsets(0).map(Result::unwrap).collect();
    let items = |entry: u64| -> Vec<u64> {
        let size = le64(&raw, entry + 8);
        (entry + 64..entry + size)
            .step_by(4)
            .map(|at| le32(&raw, at))
            .collect()
    };
    let message_of = |entry: u64| {
        items(entry)
            .into_iter()
            .find(|&data| raw[data as usize + 72..].starts_with(b"MESSAGE=e"))
            .unwrap()
    };
    let data = message_of(entries[10]);
    let path = copy(&src, dir.path(), "data-header.journal");
    patch(&path, data, &[2]);
    assert_eq!(walk(&path).unwrap(), (2_999, 1));
    let path = copy(&src, dir.path(), "data-size.journal");
    patch(&path, data + 8, &u64::MAX.to_le_bytes());
    assert_eq!(walk(&path).unwrap(), (2_999, 1));
    let mut file = JournalFile::open(&path).unwrap();
    let err = file.read_entry(entries[10], &mut Entry::new()).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { offset, .. } if offset == data),
        "{err}"
    );

    let huge = items(entries[1_000])
        .into_iter()
        .find(|&data| raw[data as usize + 1] != 0)
        .expect("a compressed DATA object");
    let path = copy(&src, dir.path(), "zstd.journal");
    let payload = le64(&raw, huge + 8) - 72;
    assert!(payload < 100 * 1024, "compressed to {payload} bytes");
    patch(
        &path,
        huge + 72 + payload / 2,
        &vec![0xa5; (payload / 4) as usize],
    );
    assert_eq!(walk(&path).unwrap(), (2_999, 1));
    let mut file = JournalFile::open(&path).unwrap();
    let err = file
        .read_entry(entries[1_000], &mut Entry::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Decompress { .. } | JournalError::TooLarge { .. }
        ),
        "{err}"
    );

    // Bytes flipped anywhere: whatever happens, no panic and an end.
    let mut rng = fastrand::Rng::with_seed(7);
    let path = dir.path().join("flipped.journal");
    for _ in 0..300 {
        let mut bytes = raw[..tail_object as usize + 4096].to_vec();
        for _ in 0..rng.usize(1..20) {
            let at = rng.usize(0..bytes.len());
            bytes[at] = rng.u8(..);
        }
        fs::write(&path, &bytes).unwrap();
        let _ = walk(&path);
    }
}
