//! Real systemd journal files for the tests of `src/journald`: entries are written in the Journal
//! Export Format (https://systemd.io/JOURNAL_EXPORT_FORMATS/) and `systemd-journal-remote` (the
//! Debian package of that name) turns them into a journal file, as journald itself writes one
//! (systemd 252: compact, keyed hash, zstd). `journalctl --file X -o export` reads one back.
//!
//! A test that needs the tool fails when it is missing, saying how to install it: it is not
//! skipped, so a CI without it cannot pass without testing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `systemd-journal-remote` is, if installed.
pub fn journal_remote() -> Option<PathBuf> {
    ["/lib/systemd", "/usr/lib/systemd"]
        .iter()
        .map(|dir| Path::new(dir).join("systemd-journal-remote"))
        .find(|path| path.is_file())
}

/// `systemd-journal-remote`, or a panic that says how to get it.
pub fn require_journal_remote() -> PathBuf {
    journal_remote().expect(
        "these tests write real journal files with systemd-journal-remote, which is not installed: \
         apt-get install systemd-journal-remote (the CI script installs it)",
    )
}

/// One entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// Microseconds since the Unix epoch.
    pub realtime: u64,
    pub monotonic: u64,
    /// 32 lowercase hex digits.
    pub boot_id: String,
    /// In order; a name may repeat.
    pub fields: Vec<(String, Vec<u8>)>,
}

/// The boot id the entries get unless told otherwise.
pub const BOOT_ID: &str = "0123456789abcdef0123456789abcdef";

impl ExportEntry {
    pub fn new(realtime: u64, monotonic: u64) -> ExportEntry {
        ExportEntry {
            realtime,
            monotonic,
            boot_id: BOOT_ID.to_string(),
            fields: Vec::new(),
        }
    }

    pub fn boot(mut self, boot_id: &str) -> ExportEntry {
        self.boot_id = boot_id.to_string();
        self
    }

    pub fn field(mut self, name: &str, value: impl AsRef<[u8]>) -> ExportEntry {
        self.fields
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// The boot id as the 16 bytes a journal file holds.
    pub fn boot_id_bytes(&self) -> [u8; 16] {
        let mut id = [0; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&self.boot_id[2 * i..2 * i + 2], 16).expect("hex boot id");
        }
        id
    }
}

/// The entries in the Journal Export Format: `NAME=value` lines, or the binary-safe form
/// (`NAME`, newline, the length as a 64-bit little-endian number, the bytes, newline) for a
/// value with a newline or bytes that are not printable ASCII.
pub fn export(entries: &[ExportEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        writeln!(out, "__REALTIME_TIMESTAMP={}", entry.realtime).unwrap();
        writeln!(out, "__MONOTONIC_TIMESTAMP={}", entry.monotonic).unwrap();
        writeln!(out, "_BOOT_ID={}", entry.boot_id).unwrap();
        for (name, value) in &entry.fields {
            let text = value
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
            if text {
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
            } else {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
            }
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Writes `entries` to the journal file `path` (its name must end in `.journal`; its directory
/// is created), appending if it exists. Panics with the tool's output if it fails.
pub fn write_journal(path: &Path, entries: &[ExportEntry]) {
    write_journal_with(path, entries, &[], &[]);
}

/// [`write_journal`] with more arguments and environment: `--compress=no`, or
/// `SYSTEMD_JOURNAL_COMPACT=0` for the regular (64-bit) layout.
pub fn write_journal_with(
    path: &Path,
    entries: &[ExportEntry],
    args: &[&str],
    env: &[(&str, &str)],
) {
    assert!(
        path.extension().is_some_and(|e| e == "journal"),
        "{} must end in .journal",
        path.display()
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut child = Command::new(require_journal_remote())
        .arg(format!("--output={}", path.display()))
        .args(args)
        .arg("-")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn systemd-journal-remote");
    let input = export(entries);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("systemd-journal-remote");
    writer
        .join()
        .unwrap()
        .expect("write to systemd-journal-remote");
    assert!(
        output.status.success(),
        "systemd-journal-remote failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One entry as `journalctl -o export` prints it: every field in order, `__CURSOR` and the
/// timestamps included.
pub type Exported = Vec<(String, Vec<u8>)>;

/// Every entry of the journal file `path`, as `journalctl --file path -o export --all` reads it.
pub fn journalctl_export(path: &Path) -> Vec<Exported> {
    let output = Command::new("journalctl")
        .arg("--file")
        .arg(path)
        .args(["-o", "export", "--all", "--no-pager"])
        .output()
        .expect("journalctl (apt-get install systemd)");
    assert!(
        output.status.success(),
        "journalctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_export(&output.stdout)
}

/// Parses the Journal Export Format.
pub fn parse_export(mut text: &[u8]) -> Vec<Exported> {
    let mut entries = Vec::new();
    let mut entry = Exported::new();
    while !text.is_empty() {
        let line_end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
        let line = &text[..line_end];
        text = &text[(line_end + 1).min(text.len())..];
        if line.is_empty() {
            if !entry.is_empty() {
                entries.push(std::mem::take(&mut entry));
            }
            continue;
        }
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => entry.push((
                String::from_utf8(line[..eq].to_vec()).unwrap(),
                line[eq + 1..].to_vec(),
            )),
            None => {
                let len = u64::from_le_bytes(text[..8].try_into().unwrap()) as usize;
                let value = text[8..8 + len].to_vec();
                assert_eq!(
                    text[8 + len],
                    b'\n',
                    "binary field not followed by a newline"
                );
                text = &text[8 + len + 1..];
                entry.push((String::from_utf8(line.to_vec()).unwrap(), value));
            }
        }
    }
    if !entry.is_empty() {
        entries.push(entry);
    }
    entries
}
