//! Dead letters: records Elasticsearch refused for good, kept on disk so nothing is lost silently.
//!
//! A record goes here when retrying cannot help (a mapping conflict, a document Elasticsearch
//! cannot parse, a request it refuses as a whole) or when retries ran out (`retry.max_duration`).
//! Its position is then acknowledged, so the file moves on, and the record waits here until the
//! operator fixed the cause and runs `logship dead-letter replay`.
//!
//! Layout: `<data_dir>/dead-letter/dead-letter-<sequence>.ndjson`, one JSON object per line:
//!
//! ```json
//! {"time":"…","index":"logs-…","id":"…","status":400,
//!  "error":{"type":"document_parsing_exception","reason":"…"},"document":{…}}
//! ```
//!
//! Files are rotated at `max_file_bytes`; when the directory holds more than `max_bytes`, the
//! oldest file is removed, with an error in the log and a counter (that is data loss the operator
//! asked for by sizing the store).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::telemetry::{self, metrics};
use crate::timestamp::Timestamp;

const PREFIX: &str = "dead-letter-";
const SUFFIX: &str = ".ndjson";

/// Limits of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterSettings {
    /// The directory (`<data_dir>/dead-letter`).
    pub dir: PathBuf,
    /// All files together at most this many bytes; the oldest go first.
    pub max_bytes: u64,
    /// One file at most this many bytes before the next is started.
    pub max_file_bytes: u64,
}

/// One refused record.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub index: &'a str,
    pub id: &'a str,
    /// HTTP status of the item (or of the whole request).
    pub status: u16,
    pub kind: &'a str,
    pub reason: &'a str,
    /// The document as it was sent: one JSON object.
    pub document: &'a [u8],
}

/// The store. Writes go through the operating system's cache (no fsync): the record's position
/// is written after this at the earliest, and a crash before that ships it again.
#[derive(Debug)]
pub struct DeadLetters {
    settings: DeadLetterSettings,
    /// Files in the directory, oldest first, with their sizes.
    files: Vec<(u64, u64)>,
    current: Option<File>,
    line: Vec<u8>,
}

impl DeadLetters {
    /// Opens the store, creating the directory; existing files are kept (and counted).
    pub fn open(settings: DeadLetterSettings) -> io::Result<DeadLetters> {
        fs::create_dir_all(&settings.dir)?;
        let files = list(&settings.dir)?;
        Ok(DeadLetters {
            settings,
            files,
            current: None,
            line: Vec::new(),
        })
    }

    /// Appends one dead letter.
    pub fn write(&mut self, letter: &DeadLetter<'_>) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"time\":\"");
        Timestamp::now().write_rfc3339(line);
        line.extend_from_slice(b"\",\"index\":");
        serde_json::to_writer(&mut *line, letter.index)?;
        line.extend_from_slice(b",\"id\":");
        serde_json::to_writer(&mut *line, letter.id)?;
        line.extend_from_slice(format!(",\"status\":{},\"error\":", letter.status).as_bytes());
        serde_json::to_writer(
            &mut *line,
            &serde_json::json!({ "type": letter.kind, "reason": letter.reason }),
        )?;
        line.extend_from_slice(b",\"document\":");
        line.extend_from_slice(letter.document);
        line.extend_from_slice(b"}\n");
        let len = line.len() as u64;
        let needs_new = match self.files.last() {
            Some(&(_, size)) => self.current.is_none() || size + len > self.settings.max_file_bytes,
            None => true,
        };
        if needs_new {
            self.rotate()?;
        }
        let Some(file) = self.current.as_mut() else {
            return Err(io::Error::other("no dead-letter file open"));
        };
        file.write_all(&self.line)?;
        if let Some(last) = self.files.last_mut() {
            last.1 += len;
        }
        self.enforce_limit();
        Ok(())
    }

    /// Starts the next file.
    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.files.last().map_or(1, |&(seq, _)| seq + 1);
        let path = file_path(&self.settings.dir, seq);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // `logship dead-letter replay` skips a file locked by a running agent.
        file.lock()?;
        self.current = Some(file);
        self.files.push((seq, 0));
        Ok(())
    }

    /// Removes the oldest files while the store is over its size (never the one being written).
    fn enforce_limit(&mut self) {
        while self.files.len() > 1 && self.total() > self.settings.max_bytes {
            let (seq, size) = self.files.remove(0);
            let path = file_path(&self.settings.dir, seq);
            let lines = fs::read(&path)
                .map(|b| memchr::memchr_iter(b'\n', &b).count() as u64)
                .unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    telemetry::add(&metrics().dead_letters_evicted, lines);
                    tracing::error!(path = %path.display(), records = lines, bytes = size, max_bytes = self.settings.max_bytes, "Dead-letter store full: removed its oldest file; these records are lost.");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "Cannot remove an old dead-letter file.");
                }
            }
        }
    }

    fn total(&self) -> u64 {
        self.files.iter().map(|&(_, size)| size).sum()
    }

    /// The dead-letter files, oldest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .map(|&(seq, _)| file_path(&self.settings.dir, seq))
            .collect()
    }
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:08}{SUFFIX}"))
}

/// The store's files with their sequence numbers and sizes, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((seq, entry.metadata()?.len()));
    }
    files.sort_unstable();
    Ok(files)
}

/// The path of dead-letter file `seq` in `dir`.
pub fn path_of(dir: &Path, seq: u64) -> PathBuf {
    file_path(dir, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(doc: &[u8]) -> DeadLetter<'_> {
        DeadLetter {
            index: "logs",
            id: "abc",
            status: 400,
            kind: "document_parsing_exception",
            reason: "failed to parse field [app]",
            document: doc,
        }
    }

    #[test]
    fn writes_readable_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DeadLetterSettings {
            dir: dir.path().join("dl"),
            max_bytes: 1 << 20,
            max_file_bytes: 400,
        };
        let mut dl = DeadLetters::open(settings.clone()).unwrap();
        for i in 0..5 {
            dl.write(&letter(format!("{{\"message\":\"m{i}\"}}").as_bytes()))
                .unwrap();
        }
        let paths = dl.paths();
        assert!(paths.len() >= 2, "rotated at 400 bytes: {paths:?}");
        let mut docs = Vec::new();
        for p in &paths {
            for line in fs::read_to_string(p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["error"]["type"], "document_parsing_exception");
                assert_eq!(v["status"], 400);
                docs.push(v["document"]["message"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(docs, ["m0", "m1", "m2", "m3", "m4"]);
        // Reopening continues after the existing files.
        let mut again = DeadLetters::open(settings).unwrap();
        again.write(&letter(b"{}")).unwrap();
        assert_eq!(again.paths().len(), paths.len() + 1);
    }

    #[test]
    fn oldest_files_go_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut dl = DeadLetters::open(DeadLetterSettings {
            dir: dir.path().to_path_buf(),
            max_bytes: 1000,
            max_file_bytes: 300,
        })
        .unwrap();
        let before = telemetry::get(&metrics().dead_letters_evicted);
        for _ in 0..20 {
            dl.write(&letter(b"{\"message\":\"x\"}")).unwrap();
        }
        let total: u64 = list(dir.path()).unwrap().iter().map(|f| f.1).sum();
        assert!(total <= 1000 + 300, "{total}");
        assert!(telemetry::get(&metrics().dead_letters_evicted) > before);
    }
}
