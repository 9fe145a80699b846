//! The file sink's output: NDJSON appended to one file.
//!
//! A write is acknowledged once it is flushed to the operating system (and, with `fsync`, to the
//! disk). The file is (re)opened lazily, so a file that was deleted or moved away by a user, or a
//! directory that appears late, is recreated on the next write instead of failing forever.

use std::io;
use std::path::PathBuf;

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

/// An append-only NDJSON file.
pub struct FileOutput {
    path: PathBuf,
    fsync: bool,
    file: Option<File>,
}

impl FileOutput {
    pub fn new(path: PathBuf, fsync: bool) -> Self {
        FileOutput {
            path,
            fsync,
            file: None,
        }
    }

    /// Appends `bytes`; on error the file is closed and reopened at the next call.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self.try_write(bytes).await;
        if result.is_err() {
            self.file = None;
        }
        result.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("appending to {}: {e}", self.path.display()),
            )
        })
    }

    async fn try_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .await?,
            );
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        file.write_all(bytes).await?;
        file.flush().await?;
        if self.fsync {
            file.sync_data().await?;
        }
        Ok(())
    }
}
