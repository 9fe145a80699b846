//! Credential files: the one way a password, an API key or a bearer token is read from a file.
//!
//! Secrets are mounted as files (Kubernetes Secrets, projected service account tokens, Vault
//! agents), and the tools that write them usually end the file with a newline (`echo "$TOKEN" >
//! file`, `kubectl create secret --from-file`). Like client-go, whitespace around the content is
//! not part of the secret: it is trimmed. A file that holds nothing once trimmed is an error
//! naming the file, never an empty password sent to a server.
//!
//! [`TokenFile`] is a bearer token that rotates: it is read again whenever the file's
//! modification time changes (the kubelet swaps a projected token's directory; a Vault agent
//! renames a new file over the old one). If a re-read fails after a good read, the last good
//! token is kept, as client-go does (kubernetes/kubernetes#68164): a tool that removes the file
//! after start must not take the agent's access away.
//!
//! Nothing here logs or keeps a secret in a `Debug` output.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderValue;

/// Errors reading a credential file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("reading the credential file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("the credential file {path} is empty")]
    Empty { path: PathBuf },
    /// The secret holds a character an HTTP header cannot carry (a control character inside it).
    #[error("the credential in {origin} cannot be sent in an HTTP header: it contains a control character")]
    NotAHeader { origin: String },
}

/// The secret in `path`, with the whitespace around it (a final newline, CRLF, spaces) trimmed.
pub fn read(path: &Path) -> Result<String, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(CredentialError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_owned())
}

/// An `Authorization` header value `<scheme> <secret>`, marked sensitive (never logged by the
/// HTTP stacks). `origin` says where the secret came from (a file, a key), for the error.
pub fn header(scheme: &str, secret: &str, origin: &str) -> Result<HeaderValue, CredentialError> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {secret}")).map_err(|_| {
        CredentialError::NotAHeader {
            origin: origin.to_owned(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// What was last read from a [`TokenFile`].
#[derive(Default)]
struct Cached {
    /// The file's modification time at that read.
    modified: Option<SystemTime>,
    header: Option<HeaderValue>,
}

/// A bearer token file, read again when it changes.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// A token file; nothing is read yet.
    pub fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            cached: Mutex::new(Cached::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Authorization: Bearer <token>`, read again if the file changed since the last read. A
    /// failed re-read keeps the last good token; without one, it is the error.
    pub fn bearer(&self) -> Result<HeaderValue, CredentialError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let fresh = match (&modified, &cached.header) {
            (Ok(m), Some(_)) => cached.modified != Some(*m),
            (Err(_), Some(_)) => false,
            (_, None) => true,
        };
        if fresh {
            match read(&self.path)
                .and_then(|token| header("Bearer", &token, &self.path.display().to_string()))
            {
                Ok(h) => {
                    cached.header = Some(h);
                    cached.modified = modified.ok();
                }
                Err(e) if cached.header.is_none() => return Err(e),
                Err(e) => {
                    // Mid-write by a tool that does not rename: the next change is read again.
                    cached.modified = modified.ok();
                    tracing::warn!(error = %e, "Could not read the rotated token; the last one read is kept.");
                }
            }
        }
        match &cached.header {
            Some(h) => Ok(h.clone()),
            None => Err(CredentialError::Empty {
                path: self.path.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn whitespace_around_a_secret_is_not_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 6] = [
            (b"s3cret", "s3cret"),
            (b"s3cret\n", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"  s3cret \t\n\n", "s3cret"),
            (b"\ns3cret", "s3cret"),
            (b"pa ss\"w\\rd\n", "pa ss\"w\\rd"),
        ];
        for (i, (content, want)) in cases.into_iter().enumerate() {
            let path = file(&dir, &format!("s{i}"), content);
            assert_eq!(read(&path).unwrap(), want, "{content:?}");
        }
    }

    #[test]
    fn an_empty_missing_or_unsendable_secret_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for content in [&b""[..], b"\n", b" \r\n\t "] {
            let path = file(&dir, "empty", content);
            let err = read(&path).unwrap_err();
            assert!(matches!(err, CredentialError::Empty { .. }), "{content:?}");
            assert!(err.to_string().contains("empty"), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        let missing = dir.path().join("missing");
        let err = read(&missing).unwrap_err();
        assert!(matches!(err, CredentialError::Read { .. }));
        assert!(err.to_string().contains("missing"), "{err}");

        let bad = file(&dir, "bad", b"tok\nen\n");
        let err = TokenFile::new(bad.clone()).bearer().unwrap_err();
        assert!(matches!(err, CredentialError::NotAHeader { .. }), "{err}");
        assert!(err.to_string().contains(&bad.display().to_string()));
        assert!(
            !err.to_string().contains("tok"),
            "the secret is not in the error: {err}"
        );
    }

    #[test]
    fn a_token_file_is_read_again_when_it_changes_and_kept_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "token", b"one\n");
        let token = TokenFile::new(path.clone());
        assert_eq!(token.bearer().unwrap(), "Bearer one");
        assert!(token.bearer().unwrap().is_sensitive());

        // A rotation: a new file renamed over the old one, with a later modification time.
        let next = file(&dir, "token.new", b"two\r\n");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(token.bearer().unwrap(), "Bearer two");

        // Removed, then emptied: the last good token stays.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token.bearer().unwrap(), "Bearer two");
        let empty = file(&dir, "token", b"\n");
        std::fs::File::options()
            .write(true)
            .open(&empty)
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(token.bearer().unwrap(), "Bearer two");

        // Never read well: the error.
        let fresh = TokenFile::new(dir.path().join("none"));
        assert!(matches!(fresh.bearer(), Err(CredentialError::Read { .. })));
    }
}
