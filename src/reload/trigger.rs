//! What asks for a reload: SIGHUP, or a change in the directory of the configuration file.
//!
//! The directory is watched, not the file. Kubernetes updates a mounted ConfigMap by writing a
//! new hidden directory (`..2026_12_02_10_00_00.123/`) and renaming a `..data` symlink to it;
//! `logship.toml` is a link through `..data` and is never touched itself. Editors save by
//! writing another file and renaming it over the old one. So the events that matter name the
//! file or one of the ConfigMap's `..` entries, in the directory; other names (and reads, the
//! agent's own included) are ignored. An update is a burst of events (five or six for a
//! ConfigMap), so a reload is asked once the directory has been quiet for [`DEBOUNCE`] (at most
//! [`DEBOUNCE_MAX`] after the first event, for a directory that never goes quiet).
//!
//! A trigger only asks: the supervisor loads the file again and compares, so a spurious one
//! costs a read of the file. Triggers that arrive while a reload is pending are merged into it
//! (it reads the newest file anyway).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// How long the directory must be quiet before a change is acted on.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// The longest a change waits for the directory to go quiet.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(5);

/// Why a reload was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// SIGHUP: an operator (`systemctl reload`, `kill -HUP`).
    Signal,
    /// The configuration file's directory changed.
    File,
}

/// The reload requests of the process, in order.
pub struct Triggers {
    requests: mpsc::Receiver<Cause>,
    /// Kept alive: dropping it ends the watch.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Triggers {
    /// Installs the SIGHUP handler (from now on SIGHUP no longer ends the process) and, when
    /// there is a configuration file, watches its directory. Must be called inside a tokio
    /// runtime. Fails only if the signal handler cannot be installed; a watch that cannot be
    /// set up is a warning (SIGHUP still reloads).
    pub fn start(config: Option<&Path>) -> std::io::Result<Triggers> {
        use tokio::signal::unix::{signal, SignalKind};
        // One pending request is enough: it reads the newest file when it runs.
        let (tx, requests) = mpsc::channel(1);
        let mut hangup = signal(SignalKind::hangup())?;
        let on_signal = tx.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("Received SIGHUP: reloading the configuration.");
                if let Err(mpsc::error::TrySendError::Closed(_)) = on_signal.try_send(Cause::Signal)
                {
                    return;
                }
            }
        });
        let watcher = config.and_then(|path| watch(path, tx));
        Ok(Triggers {
            requests,
            _watcher: watcher,
        })
    }

    /// The next reload request; `None` once no trigger can fire any more.
    pub async fn next(&mut self) -> Option<Cause> {
        self.requests.recv().await
    }
}

/// Watches the directory of `config`; `None` (with a warning) if it cannot be watched.
fn watch(config: &Path, requests: mpsc::Sender<Cause>) -> Option<notify::RecommendedWatcher> {
    let dir = match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = config.file_name()?.to_os_string();
    let changed = Arc::new(Notify::new());
    let notify_changed = Arc::clone(&changed);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (the kernel's queue overflowed) may hide a change: look.
        if event.as_ref().map_or(true, |e| relevant(e, &name)) {
            notify_changed.notify_one();
        }
    });
    let watching = watcher.and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watching {
        Ok(w) => {
            tokio::spawn(debounce(changed, requests));
            tracing::debug!(dir = %dir.display(), "Watching the configuration file's directory.");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch the configuration file's directory; changes are applied at SIGHUP only.");
            None
        }
    }
}

/// Whether `event` may have changed the configuration file named `name`: a creation, removal,
/// rename or write (not a read, not an attribute) of that name or of a ConfigMap `..` entry.
fn relevant(event: &notify::Event, name: &OsString) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Any
            | EventKind::Other
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(
                ModifyKind::Any | ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Other
            )
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    kind && event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n == name || n.as_encoded_bytes().starts_with(b".."))
    })
}

/// Turns bursts of changes into one request each, once quiet.
async fn debounce(changed: Arc<Notify>, requests: mpsc::Sender<Cause>) {
    loop {
        changed.notified().await;
        let first = Instant::now();
        loop {
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::select! {
                _ = changed.notified() => {
                    if first.elapsed() >= DEBOUNCE_MAX {
                        break;
                    }
                }
                _ = quiet => break,
            }
        }
        if let Err(mpsc::error::TrySendError::Closed(_)) = requests.try_send(Cause::File) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_changes_of_the_file_or_the_configmap_links_count() {
        let name = OsString::from("logship.toml");
        let cases = [
            // kubelet's atomic update of a ConfigMap volume
            (
                EventKind::Create(CreateKind::Folder),
                "/etc/logship/..2026_12_02_10_00_00.123",
                true,
            ),
            (
                EventKind::Create(CreateKind::File),
                "/etc/logship/..data_tmp",
                true,
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/etc/logship/..data",
                true,
            ),
            (
                EventKind::Remove(notify::event::RemoveKind::Folder),
                "/etc/logship/..2026_12_01_09_00_00.456",
                true,
            ),
            // editors
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/etc/logship/logship.toml",
                true,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/etc/logship/logship.toml",
                true,
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/etc/logship/logship.toml",
                true,
            ),
            // reads (the agent's own, at every reload) and attributes
            (
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/etc/logship/logship.toml",
                false,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/etc/logship/logship.toml",
                false,
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
                "/etc/logship/logship.toml",
                false,
            ),
            // other files in the directory
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/etc/logship/es-password",
                false,
            ),
            (
                EventKind::Create(CreateKind::File),
                "/etc/logship/logship.toml.swp",
                false,
            ),
        ];
        for (kind, path, expected) in cases {
            assert_eq!(
                relevant(&event(kind, &[path]), &name),
                expected,
                "{kind:?} {path}"
            );
        }
        // A rename reported with both names counts if either is ours.
        let both = event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &[
                "/etc/logship/.logship.toml.tmp",
                "/etc/logship/logship.toml",
            ],
        );
        assert!(relevant(&both, &name));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_request_once_quiet() {
        let changed = Arc::new(Notify::new());
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(debounce(Arc::clone(&changed), tx));
        for _ in 0..6 {
            changed.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(rx.try_recv().is_err(), "not before the burst is over");
        tokio::time::sleep(DEBOUNCE).await;
        assert_eq!(rx.recv().await, Some(Cause::File));
        tokio::time::sleep(DEBOUNCE * 4).await;
        assert!(rx.try_recv().is_err(), "one request per burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_that_never_goes_quiet_is_read_anyway() {
        let changed = Arc::new(Notify::new());
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(debounce(Arc::clone(&changed), tx));
        let start = Instant::now();
        let request = async {
            loop {
                changed.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = request => unreachable!(),
            cause = rx.recv() => assert_eq!(cause, Some(Cause::File)),
        }
        let waited = start.elapsed();
        assert!(
            waited >= DEBOUNCE_MAX && waited < DEBOUNCE_MAX + DEBOUNCE,
            "{waited:?}"
        );
    }
}
