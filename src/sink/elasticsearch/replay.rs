//! `logship dead-letter replay`: send the dead letters again, once the operator fixed the cause.
//!
//! Every dead-letter file is read, its records are sent with their original index and id (so a
//! record that made it in some other way answers 409 and counts as delivered), and the file is
//! removed when all of its records are in, or rewritten (temporary file and rename) with only the
//! ones Elasticsearch still refuses. A file a running agent is writing is locked by it and skipped;
//! it is replayed by a later run, once the agent has moved on to its next file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::bulk::BulkBuilder;
use super::client::{Client, Pick};
use super::dead_letter;
use super::retry::{self, ItemOutcome, Verdict};
use super::ElasticsearchSettings;

/// Attempts per request before a replay gives up on it for this run.
const ATTEMPTS: u32 = 8;
/// Records per request.
const CHUNK: usize = 500;

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    /// Files skipped because a running agent holds them.
    pub busy: usize,
    pub delivered: u64,
    pub already_present: u64,
    /// Records still refused (or that could not be sent); they stay in the store.
    pub remaining: u64,
    /// Lines that are not dead letters (kept as they are).
    pub unreadable: u64,
}

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the dead-letter store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Client(#[from] super::client::ClientError),
}

#[derive(Deserialize)]
struct Letter<'a> {
    #[serde(borrow)]
    index: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    document: &'a RawValue,
}

/// Replays every dead-letter file of `settings.dead_letter.dir`.
pub async fn replay(settings: &ElasticsearchSettings) -> Result<Report, ReplayError> {
    let dir = &settings.dead_letter.dir;
    let io_err = |source| ReplayError::Io {
        path: dir.clone(),
        source,
    };
    let client = Client::build(&settings.client)?;
    let mut report = Report::default();
    for (seq, _) in dead_letter::list(dir).map_err(io_err)? {
        let path = dead_letter::path_of(dir, seq);
        let file = File::open(&path).map_err(|source| ReplayError::Io {
            path: path.clone(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                report.busy += 1;
                continue;
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(ReplayError::Io { path, source });
            }
        }
        report.files += 1;
        let text = fs::read(&path).map_err(|source| ReplayError::Io {
            path: path.clone(),
            source,
        })?;
        let keep = replay_file(&client, settings, &text, &mut report).await;
        finish_file(&path, &keep).map_err(|source| ReplayError::Io {
            path: path.clone(),
            source,
        })?;
        drop(file);
    }
    Ok(report)
}

/// Sends the letters of one file; returns the lines to keep.
async fn replay_file<'a>(
    client: &Client,
    settings: &ElasticsearchSettings,
    text: &'a [u8],
    report: &mut Report,
) -> Vec<&'a [u8]> {
    let mut keep = Vec::new();
    let mut letters = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Letter<'_>>(line) {
            Ok(letter) => letters.push((line, letter)),
            Err(_) => {
                report.unreadable += 1;
                keep.push(line);
            }
        }
    }
    for chunk in letters.chunks(CHUNK) {
        let mut builder = BulkBuilder::new(settings.op_type, settings.gzip);
        for (i, (_, letter)) in chunk.iter().enumerate() {
            builder.push(&letter.index, letter.id.as_bytes(), i, |out| {
                out.extend_from_slice(letter.document.get().as_bytes())
            });
        }
        let Ok(body) = builder.finish() else {
            keep.extend(chunk.iter().map(|(line, _)| *line));
            report.remaining += chunk.len() as u64;
            continue;
        };
        let outcomes = send(client, settings, &body).await;
        for ((line, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Some(ItemOutcome::Delivered) => report.delivered += 1,
                Some(ItemOutcome::AlreadyDelivered) => report.already_present += 1,
                Some(ItemOutcome::Reject { status, error })
                | Some(ItemOutcome::Retry { status, error })
                | Some(ItemOutcome::Blocked { status, error }) => {
                    tracing::warn!(status, error = %error.kind, reason = %error.reason, "Dead letter still refused; kept.");
                    report.remaining += 1;
                    keep.push(line);
                }
                None => {
                    report.remaining += 1;
                    keep.push(line);
                }
            }
        }
    }
    keep
}

/// One request with a few retries; `None` per item when it never got an item answer.
async fn send(
    client: &Client,
    settings: &ElasticsearchSettings,
    body: &super::bulk::BulkBody<usize>,
) -> Vec<Option<ItemOutcome>> {
    let n = body.items.len();
    for attempt in 0..ATTEMPTS {
        let index = match client.hosts.pick(std::time::Instant::now()) {
            Pick::Use { index, .. } => index,
            Pick::Wait(wait) => {
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                continue;
            }
        };
        match client.bulk(index, body).await {
            Ok(answer) => match retry::classify(answer.status, &answer.body, n, settings.op_type) {
                Verdict::Items(outcomes) => return outcomes.into_iter().map(Some).collect(),
                Verdict::Reject { status, reason } => {
                    tracing::error!(status, reason = %reason, "Elasticsearch refused the replay request; the dead letters are kept.");
                    return vec![None; n];
                }
                Verdict::Split => {
                    tracing::error!("Elasticsearch refused the replay request as too large (413); the dead letters are kept. Raise http.max_content_length.");
                    return vec![None; n];
                }
                Verdict::RetryRequest { reason, .. } => {
                    tracing::warn!(reason = %reason, attempt, "Replay request failed; retrying.");
                }
            },
            Err(e) => {
                client.hosts.failed(index, std::time::Instant::now());
                tracing::warn!(error = %e, "Replay request failed; retrying.");
            }
        }
        tokio::time::sleep(settings.retry.delay(attempt)).await;
    }
    vec![None; n]
}

/// Removes a fully replayed file, or rewrites it with what is left.
fn finish_file(path: &Path, keep: &[&[u8]]) -> io::Result<()> {
    if keep.is_empty() {
        return fs::remove_file(path);
    }
    let tmp = path.with_extension("ndjson.tmp");
    let mut out = File::create(&tmp)?;
    for line in keep {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.sync_all()?;
    fs::rename(&tmp, path)
}
