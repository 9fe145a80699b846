//! The Elasticsearch sink: lossless, idempotent `_bulk` delivery (docs/ARCHITECTURE.md, the invariants: positions move only on acknowledgement, idempotent retries).
//!
//! ```text
//!  batches ──► driver ──encode──► bulk bodies ──► request tasks (≤ max_in_flight) ──► cluster
//!             ▲  │                                   │ whole-request retries, host failover
//!             │  └── item outcomes ◄──────────────────┘
//!             │        delivered / 409 ─► resolve ─► all records of a batch resolved ─► ack
//!             │        429, 5xx ─► retry queue (backoff, jitter) ─► encoded again
//!             │        401, 403, 404 ─► retry queue too; unreachable for readiness; ERROR
//!             │        other 4xx ─► dead letters ─► resolve
//! ```
//!
//! The driver owns every batch from the moment it arrives until each of its records is resolved:
//! delivered (2xx), already delivered (409 on `create`: an earlier attempt or a restart wrote it),
//! or dead-lettered. Only then is the batch's range acknowledged to the positions table and the
//! batch dropped, which returns its memory budget. Records are never copied out of their batch:
//! an item is a reference (batch slot, record index), and a retried or split item is encoded again
//! from the batch. So the memory of everything in flight is the batches' plus at most
//! `max_in_flight + 1` request bodies (compressed, if gzip is on) and the one being written, and
//! all of it is counted against `buffer.max_bytes`: bodies hold a charge on the budget (taken
//! without waiting, see [`Budget::charge`]) until their request is settled, so readers wait for
//! them too.
//!
//! Requests are closed at `batch.max_bytes`, or at the smaller size a 413 taught ([`size`]), so a
//! proxy with a lower body limit costs a few refused requests once, not one per request.
//!
//! Requests are built in the driver task (encoding and gzip), and sent by one task each, which
//! retries whole-request failures itself (connection errors, timeouts, 429, 5xx, with backoff and
//! host failover) and hands back the final per-item outcomes. While Elasticsearch is down, every
//! request task waits, the driver stops writing requests and only queues the batches that come
//! (they hold their share of the memory budget), the budget fills up, and the readers wait: the
//! log files are the buffer.

pub mod bulk;
pub mod client;
pub mod dead_letter;
pub mod fallback;
mod igzip;
pub mod index;
pub mod pace;
pub mod replay;
pub mod retry;
pub mod share;
pub mod size;
pub mod template;
pub mod turnaround;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ack::{Acks, FileKey};
use crate::buffer::{Budget, Permit};
use crate::document::Encoder;
use crate::record::{Batch, Record};
use crate::telemetry::{self, metrics, Throttle};

use bulk::{doc_id, BulkBody, BulkBuilder, ID_LEN};
use client::{Client, ClientSettings, Pick};
use dead_letter::{DeadLetter, DeadLetterSettings, DeadLetters};
use fallback::Fallback;
use index::IndexTemplate;
use pace::{SendLimit, Window};
use retry::{Backoff, ItemError, ItemOutcome, OpType, Verdict};
use share::Share;
use size::{BodyCap, Learned};
use turnaround::ItemCap;

/// Everything the sink needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ElasticsearchSettings {
    pub client: ClientSettings,
    /// The index every record goes to, as a template.
    pub index: IndexTemplate,
    /// Where records go whose template fields are missing.
    pub index_fallback: String,
    pub op_type: OpType,
    /// gzip level of request bodies; `None` sends them uncompressed.
    pub gzip: Option<u32>,
    /// A request is closed at this many bytes before compression…
    pub batch_max_bytes: usize,
    /// …or this many records…
    pub batch_max_events: usize,
    /// …or this long after its first record, whichever comes first.
    pub batch_timeout: Duration,
    /// Requests sent at once at most.
    pub max_in_flight: usize,
    /// Halve the requests at once on 429 and grow them back (see [`pace`]).
    pub adaptive_concurrency: bool,
    /// Requests and bytes per second sent, for the whole agent (see [`pace`]).
    pub rate_limit: crate::buffer::rate_limit::LimitSpec,
    /// Backoff of retried requests and items.
    pub retry: Backoff,
    /// Give up retrying after this long and dead-letter; `None`: never give up.
    pub retry_max_duration: Option<Duration>,
    /// Install an index template with mappings that suit logship's documents at start.
    pub install_template: bool,
    pub dead_letter: DeadLetterSettings,
    /// Send refused records to this index (wrapped, the document as a string) instead of the
    /// dead-letter files; the files remain the fallback if that index refuses them too.
    pub dead_letter_index: Option<String>,
}

/// Errors building the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("opening the dead-letter store {path}: {source}")]
    DeadLetters {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A built sink, ready to run.
pub struct ElasticsearchSink {
    settings: Arc<ElasticsearchSettings>,
    client: Arc<Client>,
    dead_letters: DeadLetters,
    node_name: String,
}

impl ElasticsearchSink {
    /// Reads certificates and opens the dead-letter store; no network yet.
    pub fn build(settings: ElasticsearchSettings, node_name: &str) -> Result<Self, SinkError> {
        let client = Arc::new(Client::build(&settings.client)?);
        let dead_letters = DeadLetters::open(settings.dead_letter.clone()).map_err(|source| {
            SinkError::DeadLetters {
                path: settings.dead_letter.dir.clone(),
                source,
            }
        })?;
        Ok(ElasticsearchSink {
            settings: Arc::new(settings),
            client,
            dead_letters,
            node_name: node_name.to_owned(),
        })
    }

    /// Runs until the batch channel closes and every record received is resolved.
    pub async fn run(
        self,
        batches: Receiver<Batch>,
        acks: Acks,
        encoder: Arc<Encoder>,
        budget: Budget,
    ) {
        let startup = tokio::spawn(template::start_up(
            Arc::clone(&self.client),
            Arc::clone(&self.settings),
        ));
        let mut driver = Driver {
            window: Arc::new(Window::new(
                self.settings.max_in_flight,
                self.settings.adaptive_concurrency,
            )),
            share: Arc::new(Share::new(self.settings.adaptive_concurrency)),
            send_limit: SendLimit::new(self.settings.rate_limit),
            body_cap: BodyCap::new(self.settings.batch_max_bytes),
            item_cap: ItemCap::new(self.settings.batch_max_events),
            send_wait: None,
            settings: self.settings,
            client: self.client,
            acks,
            encoder,
            budget,
            node_name: self.node_name,
            pending: Vec::new(),
            free: Vec::new(),
            queued: HashMap::new(),
            turns: VecDeque::new(),
            builder: None,
            unwritten: VecDeque::new(),
            ready: VecDeque::new(),
            retries: BinaryHeap::new(),
            in_flight: JoinSet::new(),
            index_cache: IndexCache::default(),
            dead_letters: self.dead_letters,
            doc: Vec::new(),
            refusals: HashMap::new(),
            retry_warnings: Throttle::new(Duration::from_secs(10)),
            access_errors: Throttle::new(Duration::from_secs(10)),
            split_warnings: Throttle::new(Duration::from_secs(10)),
            body_cap_learned: false,
            fallback_fields: HashMap::new(),
            fallback_waiting: HashMap::new(),
            lookups: JoinSet::new(),
            lookup_ids: HashMap::new(),
            fallback_warnings: Throttle::new(Duration::from_secs(10)),
        };
        driver.run(batches).await;
        startup.abort();
    }
}

/// A batch whose records are not all resolved yet.
struct Pending {
    batch: Batch,
    unresolved: usize,
}

/// One record of a pending batch, as an item of a request.
#[derive(Clone, Copy, Debug)]
struct ItemRef {
    slot: u32,
    record: u32,
    /// Item-level retries so far.
    attempts: u32,
    /// When the record was first sent, for `retry.max_duration`.
    since: Instant,
    /// The record was refused and now goes to the dead-letter index, wrapped.
    dead: bool,
    /// The index's mapping refused the document: it goes without what the mapping refused.
    fallback: Option<Fallback>,
}

/// Why a record is on its way to the dead-letter index.
#[derive(Debug)]
struct Refusal {
    status: u16,
    kind: String,
    reason: String,
}

/// A retried item waiting for its backoff to pass.
#[derive(Clone, Copy, Debug)]
struct Delayed {
    ready_at: Instant,
    item: ItemRef,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.ready_at == other.ready_at
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.ready_at.cmp(&other.ready_at)
    }
}

/// A request being written, and when its first item went in.
struct Open {
    builder: BulkBuilder<ItemRef>,
    opened_at: Instant,
    /// The memory the body holds so far, charged to the budget.
    charge: Permit,
    /// The number of items it is closed at: the learned caps when it was opened.
    max_items: usize,
}

/// A finished request body and its charge on the budget, returned when its request is settled.
struct Ready {
    body: BulkBody<ItemRef>,
    charge: Permit,
}

/// The end of one request task.
struct Delivery {
    body: BulkBody<ItemRef>,
    outcome: Final,
    charge: Permit,
    /// How long the attempt that ended it took to be answered, if it was.
    took: Option<Duration>,
}

/// What a request task ends with.
enum Final {
    Items(Vec<ItemOutcome>),
    Split,
    Reject { status: u16, reason: String },
    GaveUp { reason: String },
}

struct Driver {
    settings: Arc<ElasticsearchSettings>,
    client: Arc<Client>,
    acks: Acks,
    encoder: Arc<Encoder>,
    /// Request bodies count against the memory budget too.
    budget: Budget,
    /// Requests allowed at once, adapted to 429s.
    window: Arc<Window>,
    /// Documents per second while the cluster refuses items with 429 (see [`share`]).
    share: Arc<Share>,
    send_limit: Option<SendLimit>,
    /// The size requests are closed at: `batch.max_bytes`, lowered by 413s (see [`size`]).
    body_cap: BodyCap,
    /// The number of items requests are closed at: `batch.max_events`, lowered while the cluster
    /// is slow (see [`turnaround`]).
    item_cap: ItemCap,
    /// The send limit holds the next body back until then.
    send_wait: Option<Instant>,
    node_name: String,
    /// Batches by slot; `None` slots are in `free`.
    pending: Vec<Option<Pending>>,
    free: Vec<u32>,
    /// Batches taken in and not written into a request yet, by file, oldest first...
    queued: HashMap<FileKey, VecDeque<u32>>,
    /// ...and the files that have some, in the order their next batch is written (see `fill`).
    turns: VecDeque<FileKey>,
    builder: Option<Open>,
    /// Items to be written into a request again (retries whose backoff passed, the items of a
    /// body too large for the share), written by `fill` before new batches.
    unwritten: VecDeque<ItemRef>,
    /// Bodies written and waiting for a request slot.
    ready: VecDeque<Ready>,
    retries: BinaryHeap<Reverse<Delayed>>,
    in_flight: JoinSet<Delivery>,
    index_cache: IndexCache,
    dead_letters: DeadLetters,
    /// Reused buffer for documents written to the dead letters.
    doc: Vec<u8>,
    /// Refusals of the records on their way to the dead-letter index, by (slot, record).
    refusals: HashMap<(u32, u32), Refusal>,
    retry_warnings: Throttle,
    /// Items refused for access (401, 403, 404) are logged at most this often.
    access_errors: Throttle,
    /// 413 splits are logged at most this often.
    split_warnings: Throttle,
    /// The body cap is below `batch.max_bytes` since a 413 (logged when it is back).
    body_cap_learned: bool,
    /// Whether each index maps `logship.mapping_fallback`, and since when that is known.
    fallback_fields: HashMap<Arc<str>, (bool, Instant)>,
    /// Fallback documents waiting for their index's answer, by index.
    fallback_waiting: HashMap<Arc<str>, Vec<ItemRef>>,
    /// Those questions: the index, and whether it maps the field...
    lookups: JoinSet<(Arc<str>, bool)>,
    /// ...and the index each one asks about.
    lookup_ids: HashMap<tokio::task::Id, Arc<str>>,
    /// Mapping fallbacks are logged at most this often.
    fallback_warnings: Throttle,
}

/// Rendered index names by (source address, time bucket, stream), both 0 for a name without
/// fields; each entry keeps its source alive so that its address cannot be reused by another
/// file while cached.
#[derive(Default)]
struct IndexCache {
    names: HashMap<IndexKey, (Arc<crate::source::Source>, Arc<str>)>,
    /// The last name asked for: nearly every record's, since records come file by file (this
    /// saves hashing the key for each). It keeps its source alive as the entries do.
    last: Option<(IndexKey, Arc<crate::source::Source>, Arc<str>)>,
}

type IndexKey = (usize, i64, u8);

/// Index cache entries at most before it is cleared (one per file and day, typically).
const INDEX_CACHE_MAX: usize = 4096;

impl Driver {
    async fn run(&mut self, mut batches: Receiver<Batch>) {
        let mut input_open = true;
        loop {
            telemetry::beat(telemetry::Loop::Sink);
            self.release_due_retries(Instant::now());
            self.fill();
            // A reader waiting for room while nothing is being sent waits for this open request:
            // no more batches can come to fill it, so it goes now rather than at its timeout.
            let starved =
                self.budget.readers_waiting() && self.in_flight.is_empty() && self.ready.is_empty();
            self.close_if_due(Instant::now(), !input_open || starved);
            self.dispatch();
            if !input_open
                && self.in_flight.is_empty()
                && self.ready.is_empty()
                && self.retries.is_empty()
                && self.builder.is_none()
                && self.turns.is_empty()
                && self.unwritten.is_empty()
                && self.fallback_waiting.is_empty()
            {
                debug_assert!(self.pending.iter().all(Option::is_none));
                return;
            }
            // Batches are taken in as they come (their memory is counted already: they hold
            // their permits), so that the next request can be filled fairly from all files
            // (`fill`); requests are written only while none waits for a slot, so the bodies in
            // memory stay bounded, and a slow cluster slows the readers through the budget.
            let accept = input_open;
            // Turn at least every heartbeat period, idle or not, to show the sink is alive.
            let heartbeat = Instant::now() + telemetry::HEARTBEAT_PERIOD;
            let deadline = Some(self.next_deadline().map_or(heartbeat, |d| d.min(heartbeat)));
            let budget = self.budget.clone();
            tokio::select! {
                _ = budget.starved(), if self.builder.is_some() => {}
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    match done {
                        Ok(delivery) => self.settle(delivery),
                        Err(e) => {
                            // A request task panicked: its records were never resolved, so their
                            // positions never move; they are read again at the next start.
                            tracing::error!(error = %e, "An Elasticsearch request task failed; its records will be sent again after a restart.");
                        }
                    }
                }
                Some(answer) = self.lookups.join_next_with_id(), if !self.lookups.is_empty() => {
                    match answer {
                        Ok((id, (index, mapped))) => {
                            self.lookup_ids.remove(&id);
                            self.field_known(index, mapped);
                        }
                        // A question that never came back (its task failed): what waits goes
                        // without the reason field, which is always safe, and no answer is kept.
                        Err(e) => {
                            tracing::warn!(error = %e, "Asking an index's mapping failed; fallback documents go without the reason field.");
                            if let Some(index) = self.lookup_ids.remove(&e.id()) {
                                if let Some(items) = self.fallback_waiting.remove(&index) {
                                    self.unwritten.extend(items);
                                }
                            }
                        }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {}
                batch = batches.recv(), if accept => match batch {
                    Some(batch) => self.add(batch),
                    None => input_open = false,
                },
            }
        }
    }

    /// The earliest of the open request's timeout, the first retry's backoff and the end of the
    /// send limit's wait.
    fn next_deadline(&self) -> Option<Instant> {
        let close = self
            .builder
            .as_ref()
            .map(|o| o.opened_at + self.settings.batch_timeout);
        let retry = self.retries.peek().map(|Reverse(d)| d.ready_at);
        [close, retry, self.send_wait].into_iter().flatten().min()
    }

    /// Takes a new batch in: queued behind its file's earlier ones, written into a request
    /// when its file's turn comes (`fill`).
    fn add(&mut self, batch: Batch) {
        if batch.records.is_empty() {
            batch.acknowledge(self.acks.as_ref());
            return;
        }
        let file = batch.ack.file;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.pending.push(None);
                (self.pending.len() - 1) as u32
            }
        };
        let unresolved = batch.records.len();
        self.pending[slot as usize] = Some(Pending { batch, unresolved });
        let queue = self.queued.entry(file).or_default();
        if queue.is_empty() {
            self.turns.push_back(file);
        }
        queue.push_back(slot);
    }

    /// Writes queued batches into the open request while no written request waits for a slot:
    /// one batch of each file in turn, so a quiet file's new lines go into the next request
    /// instead of waiting behind everything a busy file has queued (docs/ARCHITECTURE.md, fair
    /// reading and delivery). Every record of a batch becomes an item.
    fn fill(&mut self) {
        while self.ready.is_empty() {
            // Items to send again go first: they are the oldest.
            if let Some(item) = self.unwritten.pop_front() {
                self.push(item);
                continue;
            }
            let Some(file) = self.turns.pop_front() else {
                return;
            };
            let Some(queue) = self.queued.get_mut(&file) else {
                continue;
            };
            let Some(slot) = queue.pop_front() else {
                self.queued.remove(&file);
                continue;
            };
            if queue.is_empty() {
                self.queued.remove(&file);
            } else {
                self.turns.push_back(file);
            }
            let records = self.pending[slot as usize]
                .as_ref()
                .map_or(0, |p| p.batch.records.len());
            let since = Instant::now();
            for record in 0..records as u32 {
                self.push(ItemRef {
                    slot,
                    record,
                    attempts: 0,
                    since,
                    dead: false,
                    fallback: None,
                });
            }
        }
    }

    /// Where record `item` goes: its index and its document id; `None` once its batch is
    /// resolved.
    fn address(&mut self, item: ItemRef) -> Option<(Arc<str>, [u8; ID_LEN])> {
        let batch = &self.pending[item.slot as usize].as_ref()?.batch;
        let record = &batch.records[item.record as usize];
        let index = index_name(
            &mut self.index_cache,
            &self.settings,
            &self.node_name,
            batch,
            record,
        );
        Some((
            index,
            doc_id(batch.id_prefix_of(record), record.offset, record.end),
        ))
    }

    /// Writes one item into the open request, closing it when it is full.
    fn push(&mut self, item: ItemRef) {
        let Some((index, id)) = self.address(item) else {
            return;
        };
        let Some(pending) = self.pending[item.slot as usize].as_ref() else {
            return;
        };
        let batch = &pending.batch;
        let budget = &self.budget;
        let (item_cap, share) = (&self.item_cap, &self.share);
        let open = self.builder.get_or_insert_with(|| {
            let cap = item_cap.get();
            Open {
                builder: BulkBuilder::new(self.settings.op_type, self.settings.gzip),
                opened_at: Instant::now(),
                charge: budget.charge(0),
                max_items: share.items().map_or(cap, |items| items.min(cap)),
            }
        });
        let encoder = &self.encoder;
        let fallback = item.fallback.filter(|_| !item.dead);
        // Only a dead item has a refusal: no lookup for the others.
        let refusal = if item.dead {
            self.refusals.get(&(item.slot, item.record))
        } else {
            None
        };
        match (
            item.dead,
            &self.settings.dead_letter_index,
            refusal,
            fallback,
        ) {
            (true, Some(dl_index), Some(refusal), _) => {
                let doc = &mut self.doc;
                doc.clear();
                encoder.encode(batch, item.record as usize, doc);
                open.builder.push(dl_index, &id, item, |out| {
                    wrap_dead_letter(out, refusal, &index, &id, doc)
                });
            }
            (_, _, _, Some(fallback)) => {
                let reason = self
                    .fallback_fields
                    .get(&index)
                    .is_some_and(|&(mapped, _)| mapped)
                    .then_some(fallback.reason.as_str());
                open.builder.push(&index, &id, item, |out| {
                    encoder.encode_fallback(
                        batch,
                        item.record as usize,
                        fallback.without_labels,
                        reason,
                        out,
                    )
                });
            }
            _ => open.builder.push(&index, &id, item, |out| {
                encoder.encode(batch, item.record as usize, out)
            }),
        }
        open.charge.resize(open.builder.held_bytes());
        if open.builder.raw_bytes() >= self.body_cap.get() || open.builder.len() >= open.max_items {
            self.close();
        }
    }

    /// Finishes the open request and queues it for sending.
    fn close(&mut self) {
        let Some(open) = self.builder.take() else {
            return;
        };
        let mut charge = open.charge;
        match open.builder.finish() {
            Ok(body) => {
                charge.resize(body.bytes.len());
                self.ready.push_back(Ready { body, charge });
            }
            // Compressing into memory cannot fail; if it ever did, the items stay unresolved
            // and their positions do not move.
            Err(e) => tracing::error!(error = %e, "Cannot finish a bulk request body."),
        }
    }

    fn close_if_due(&mut self, now: Instant, force: bool) {
        if let Some(open) = &self.builder {
            if force || now >= open.opened_at + self.settings.batch_timeout {
                self.close();
            }
        }
    }

    /// Moves retried items whose backoff has passed to those written next (`fill`).
    fn release_due_retries(&mut self, now: Instant) {
        while let Some(Reverse(next)) = self.retries.peek() {
            if next.ready_at > now {
                break;
            }
            let Some(Reverse(due)) = self.retries.pop() else {
                break;
            };
            self.unwritten.push_back(due.item);
        }
    }

    /// Starts request tasks for waiting bodies, up to the concurrency window and as the send
    /// limit allows.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.window.get() {
            let Some(head) = self.ready.front() else {
                return;
            };
            let now = Instant::now();
            if self.send_wait.is_some_and(|t| t > now) {
                return;
            }
            // A body written before the cluster started refusing is far larger than the share
            // lets out at once: its items are written again, into bodies of the share's size as
            // the queue empties (`fill`), so that the agent slows down now rather than after it.
            if let Some(share_items) = self.share.items() {
                if head.body.items.len() > share_items.saturating_mul(2) {
                    if let Some(Ready { body, .. }) = self.ready.pop_front() {
                        self.unwritten.extend(body.items);
                    }
                    self.fill();
                    continue;
                }
            }
            // The share is asked first and paid last, the send limit in between (what it was
            // paid for the head body stays paid): a body held back by either is paid by neither.
            let items = head.body.items.len();
            if let Err(wait) = self.share.check(items, now.into_std()) {
                self.send_wait = Some(now + wait);
                return;
            }
            if let Some(limit) = self.send_limit.as_mut() {
                if let Err(wait) = limit.admit(head.body.bytes.len()) {
                    self.send_wait = Some(now + wait);
                    return;
                }
            }
            self.share.spend(items);
            self.send_wait = None;
            let Some(Ready { body, charge }) = self.ready.pop_front() else {
                return;
            };
            telemetry::add(&metrics().es_requests, 1);
            self.in_flight.spawn(deliver(
                Arc::clone(&self.client),
                Arc::clone(&self.settings),
                Arc::clone(&self.window),
                Arc::clone(&self.share),
                body,
                charge,
            ));
        }
    }

    /// Applies what a request ended with to each of its items.
    fn settle(&mut self, delivery: Delivery) {
        // The body's charge on the budget is returned once its items moved on (at the end).
        let Delivery {
            body,
            outcome,
            charge: _charge,
            took,
        } = delivery;
        let raw_bytes = body.raw_bytes;
        let items = body.items;
        match outcome {
            Final::Items(outcomes) => {
                let now = Instant::now();
                if let Some(took) = took {
                    self.item_cap.answered(items.len(), took);
                }
                if self.body_cap.accepted(raw_bytes, now) && self.body_cap_learned {
                    self.body_cap_learned = false;
                    tracing::info!(
                        bytes = self.body_cap.get(),
                        "Elasticsearch accepts requests of elasticsearch.batch.max_bytes again."
                    );
                }
                let mut delivered = 0u64;
                let mut duplicates = 0u64;
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    match outcome {
                        ItemOutcome::Delivered | ItemOutcome::AlreadyDelivered if item.dead => {
                            telemetry::add(&metrics().dead_lettered, 1);
                            self.resolve(item);
                        }
                        ItemOutcome::Delivered => {
                            delivered += 1;
                            self.resolve(item);
                        }
                        ItemOutcome::AlreadyDelivered => {
                            duplicates += 1;
                            self.resolve(item);
                        }
                        ItemOutcome::Retry { status, error } => {
                            telemetry::add(&metrics().es_items_retried, 1);
                            if let Some(suppressed) = self.retry_warnings.admit() {
                                tracing::warn!(status, error = %error.kind, reason = %error.reason, suppressed, "Elasticsearch refused records for now; retrying them alone.");
                            }
                            self.retry_item(item, status, &error, now);
                        }
                        ItemOutcome::Blocked { status, error } => {
                            // Dead-lettering would send every record there until access is
                            // fixed (and the store evicts past its size): they wait instead,
                            // and so do their positions.
                            telemetry::add(&metrics().es_items_blocked, 1);
                            if let Some(suppressed) = self.access_errors.admit() {
                                tracing::error!(status, error = %error.kind, reason = %error.reason, suppressed, "Elasticsearch refused records for lack of a privilege or a missing index; operator action needed: grant the privilege or create the index. The records are retried with backoff and wait in the buffer, then in the files; nothing is dropped.");
                            }
                            self.retry_item(item, status, &error, now);
                        }
                        ItemOutcome::Reject { status, error } => {
                            let next = fallback::mapping_reason(status, &error)
                                .filter(|_| !item.dead)
                                .and_then(|reason| Fallback::next(item.fallback, reason));
                            match next {
                                Some(next) => self.fall_back(item, next, &error, now),
                                None => self.dead_letter(item, status, &error.kind, &error.reason),
                            }
                        }
                    }
                }
                telemetry::add(&metrics().records_sent, delivered);
                telemetry::add(&metrics().es_items_duplicate, duplicates);
            }
            Final::Split => {
                if items.len() == 1 {
                    self.dead_letter(
                        items[0],
                        413,
                        "request_entity_too_large",
                        "the document alone is larger than the cluster accepts (http.max_content_length)",
                    );
                    return;
                }
                match self.body_cap.refused(raw_bytes, Instant::now()) {
                    Learned::First { cap } => {
                        self.body_cap_learned = true;
                        tracing::warn!(refused_bytes = raw_bytes, max_request_bytes = cap, batch_max_bytes = self.settings.batch_max_bytes, "Elasticsearch (or a proxy in front of it) refuses requests this large (413); building smaller requests from now on and probing upward slowly. Raise its body limit (http.max_content_length, the proxy's) or lower elasticsearch.batch.max_bytes.");
                    }
                    Learned::Lower { cap } => {
                        tracing::info!(refused_bytes = raw_bytes, max_request_bytes = cap, "Elasticsearch refused a smaller request as too large (413); lowering the request size again.");
                    }
                    Learned::Nothing => {}
                }
                if let Some(suppressed) = self.split_warnings.admit() {
                    tracing::warn!(items = items.len(), bytes = raw_bytes, suppressed, "Elasticsearch refused a bulk request as too large (413); sending it in halves.");
                }
                let (first, second) = items.split_at(items.len() / 2);
                for half in [first, second] {
                    for &item in half {
                        self.push(item);
                    }
                    self.close();
                }
            }
            Final::Reject { status, reason } => {
                tracing::error!(status, reason = %reason, items = items.len(), "Elasticsearch refused a whole bulk request; its records go to the dead letters.");
                for item in items {
                    self.dead_letter(item, status, "bulk_request_rejected", &reason);
                }
            }
            Final::GaveUp { reason } => {
                tracing::error!(reason = %reason, items = items.len(), max_duration = ?self.settings.retry_max_duration, "Retries ran out (elasticsearch.retry.max_duration); the records go to the dead letters.");
                for item in items {
                    self.dead_letter(item, 0, "retries_exhausted", &reason);
                }
            }
        }
    }

    /// Queues a refused item to be sent again after its backoff, or dead-letters it once
    /// `retry.max_duration` has passed since it was first sent.
    fn retry_item(&mut self, mut item: ItemRef, status: u16, error: &ItemError, now: Instant) {
        if let Some(max) = self.settings.retry_max_duration {
            if now.duration_since(item.since) >= max {
                let reason = format!("still refused after {max:?}: {}", error.reason);
                self.dead_letter(item, status, &error.kind, &reason);
                return;
            }
        }
        let mut wait = self.settings.retry.delay(item.attempts);
        if status == 429 {
            wait = self.share.retry_wait(wait);
        }
        item.attempts = item.attempts.saturating_add(1);
        self.retries.push(Reverse(Delayed {
            ready_at: now + wait,
            item,
        }));
    }

    /// Sends a document the index's mapping refused again at once, as `next` says (see
    /// [`fallback`]), once it is known whether its index maps the reason field.
    fn fall_back(&mut self, mut item: ItemRef, next: Fallback, error: &ItemError, now: Instant) {
        let Some((index, _)) = self.address(item) else {
            return;
        };
        if let Some(suppressed) = self.fallback_warnings.admit() {
            tracing::warn!(index = %index, reason = next.reason.as_str(), without_labels = next.without_labels, error = %error.kind, detail = %error.reason, suppressed, "The index's mapping refused a document; sending it again without its parsed fields (the message keeps the line).");
        }
        item.fallback = Some(next);
        match self.fallback_fields.get(&index) {
            Some(&(_, since)) if now.duration_since(since) < fallback::KNOWN_FOR => {
                self.unwritten.push_back(item);
            }
            _ => {
                let waiting = self.fallback_waiting.entry(Arc::clone(&index)).or_default();
                waiting.push(item);
                if waiting.len() == 1 {
                    let client = Arc::clone(&self.client);
                    let asked = Arc::clone(&index);
                    let task = self.lookups.spawn(async move {
                        let mapped = maps_fallback_field(&client, &asked).await;
                        (asked, mapped)
                    });
                    self.lookup_ids.insert(task.id(), index);
                }
            }
        }
    }

    /// The answer about an index's reason field came: its fallback documents go now.
    fn field_known(&mut self, index: Arc<str>, mapped: bool) {
        if !mapped {
            tracing::info!(index = %index, field = fallback::FIELD, "The index does not map the fallback reason field (logship's index template defines it); fallback documents go without it.");
        }
        self.fallback_fields
            .insert(Arc::clone(&index), (mapped, Instant::now()));
        if let Some(items) = self.fallback_waiting.remove(&index) {
            self.unwritten.extend(items);
        }
        if self.fallback_fields.len() > INDEX_CACHE_MAX {
            self.fallback_fields.clear();
        }
    }

    /// Writes a record to the dead letters and resolves it. If the store cannot be written, the
    /// record is not resolved but retried later: its position must not move past it.
    fn dead_letter(&mut self, mut item: ItemRef, status: u16, kind: &str, reason: &str) {
        if self.pending[item.slot as usize].is_none() {
            return;
        }
        if let (false, Some(dl_index)) = (item.dead, &self.settings.dead_letter_index) {
            tracing::warn!(dead_letter_index = %dl_index, status, error = kind, reason, "Record refused by Elasticsearch; sending it to the dead-letter index.");
            self.refusals.insert(
                (item.slot, item.record),
                Refusal {
                    status,
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                },
            );
            item.dead = true;
            item.attempts = 0;
            self.push(item);
            return;
        }
        // The dead-letter index refused it too: the file keeps the first refusal, which is the
        // one the operator must fix.
        let first = self.refusals.get(&(item.slot, item.record));
        let (status, kind, reason) = match first {
            Some(r) => (
                r.status,
                r.kind.clone(),
                format!(
                    "{} (the dead-letter index refused it too: {kind}: {reason})",
                    r.reason
                ),
            ),
            None => (status, kind.to_owned(), reason.to_owned()),
        };
        let (kind, reason) = (kind.as_str(), reason.as_str());
        let Some((index, id)) = self.address(item) else {
            return;
        };
        let Some(pending) = self.pending[item.slot as usize].as_ref() else {
            return;
        };
        self.doc.clear();
        self.encoder
            .encode(&pending.batch, item.record as usize, &mut self.doc);
        let letter = DeadLetter {
            index: &index,
            id: std::str::from_utf8(&id).unwrap_or_default(),
            status,
            kind,
            reason,
            document: &self.doc,
        };
        match self.dead_letters.write(&letter) {
            Ok(()) => {
                telemetry::add(&metrics().dead_lettered, 1);
                tracing::warn!(index = %index, status, error = kind, reason, "Record refused by Elasticsearch written to the dead letters.");
                self.resolve(item);
            }
            Err(e) => {
                telemetry::add(&metrics().dead_letter_errors, 1);
                tracing::error!(error = %e, "Cannot write to the dead-letter store; the record stays unacknowledged and is tried again.");
                let wait = self.settings.retry.max;
                self.retries.push(Reverse(Delayed {
                    ready_at: Instant::now() + wait,
                    item,
                }));
            }
        }
    }

    /// One record is done; a batch whose records are all done is acknowledged and dropped.
    fn resolve(&mut self, item: ItemRef) {
        if item.dead {
            self.refusals.remove(&(item.slot, item.record));
        }
        let slot = item.slot as usize;
        let Some(pending) = self.pending[slot].as_mut() else {
            return;
        };
        pending.unresolved -= 1;
        if pending.unresolved == 0 {
            if let Some(done) = self.pending[slot].take() {
                done.batch.acknowledge(self.acks.as_ref());
            }
            self.free.push(item.slot);
        }
    }
}

/// The index of `record`, rendered once per (file, time bucket, stream).
fn index_name(
    cache: &mut IndexCache,
    settings: &ElasticsearchSettings,
    node_name: &str,
    batch: &Batch,
    record: &Record,
) -> Arc<str> {
    let template = &settings.index;
    let key = if template.uses_fields() {
        (
            Arc::as_ptr(&batch.source) as usize,
            template.bucket(record.timestamp),
            record.stream as u8,
        )
    } else {
        (0, template.bucket(record.timestamp), 0)
    };
    if let Some((last, _, name)) = &cache.last {
        if *last == key {
            return Arc::clone(name);
        }
    }
    if let Some((source, name)) = cache.names.get(&key) {
        let name = Arc::clone(name);
        cache.last = Some((key, Arc::clone(source), Arc::clone(&name)));
        return name;
    }
    let kubelet = batch.source.kubelet.as_ref();
    let rendered = template.render(record.timestamp, |field| match field {
        "kubernetes.namespace" => kubelet.map(|k| k.namespace.as_str()),
        "kubernetes.pod.name" => kubelet.map(|k| k.pod.as_str()),
        "kubernetes.container.name" => kubelet.map(|k| k.container.as_str()),
        "host.name" => Some(node_name),
        "stream" => record.stream.as_str(),
        _ => None,
    });
    let name: Arc<str> = match rendered {
        Some(name) => name.into(),
        None => settings.index_fallback.as_str().into(),
    };
    if cache.names.len() >= INDEX_CACHE_MAX {
        cache.names.clear();
    }
    cache
        .names
        .insert(key, (Arc::clone(&batch.source), Arc::clone(&name)));
    cache.last = Some((key, Arc::clone(&batch.source), Arc::clone(&name)));
    name
}

/// Whether `index` maps the fallback reason field: asked of each host in turn until one answers;
/// no answer counts as not mapped (the field is then left out, which is always safe).
async fn maps_fallback_field(client: &Client, index: &str) -> bool {
    let path = format!("{index}/_mapping/field/{}", fallback::FIELD);
    for host in 0..client.hosts.len() {
        match client.get(host, &path).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                return fallback::field_is_mapped(&answer.body);
            }
            Ok(answer) if answer.status == 404 => return false,
            Ok(answer) => {
                tracing::debug!(
                    status = answer.status,
                    index,
                    "Cannot ask the index's mapping."
                );
            }
            Err(e) => tracing::debug!(error = %e, index, "Cannot ask the index's mapping."),
        }
    }
    false
}

/// The document a refused record becomes in the dead-letter index: the refusal, where the record
/// was going, and the record itself as a string (as an object it could hit the same mapping
/// conflict again).
fn wrap_dead_letter(out: &mut Vec<u8>, refusal: &Refusal, index: &str, id: &[u8], doc: &[u8]) {
    out.extend_from_slice(b"{\"@timestamp\":\"");
    crate::timestamp::Timestamp::now().write_rfc3339(out);
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(refusal.status.to_string().as_bytes());
    let rest = serde_json::json!({
        "error": { "type": refusal.kind, "reason": refusal.reason },
        "index": index,
        "id": std::str::from_utf8(id).unwrap_or_default(),
        "document": String::from_utf8_lossy(doc),
    });
    // `rest` is an object: splice its members in after `status`.
    let rest = rest.to_string();
    out.push(b',');
    out.extend_from_slice(&rest.as_bytes()[1..]);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends one request until it gets an answer that is final for the request as a whole.
async fn deliver(
    client: Arc<Client>,
    settings: Arc<ElasticsearchSettings>,
    window: Arc<Window>,
    share: Arc<Share>,
    body: BulkBody<ItemRef>,
    charge: Permit,
) -> Delivery {
    static WARNINGS: Throttle = Throttle::new(Duration::from_secs(10));
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let index = match client.hosts.pick(std::time::Instant::now()) {
            Pick::Use { index, probe } => {
                if probe {
                    if let Err(e) = client.info(index).await {
                        client.hosts.failed(index, std::time::Instant::now());
                        if let Some(suppressed) = WARNINGS.admit() {
                            tracing::error!(error = %e, suppressed, "Elasticsearch host still unavailable.");
                        }
                        continue;
                    }
                    client.hosts.succeeded(index);
                }
                index
            }
            Pick::Wait(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let sent_at = Instant::now();
        let mut took = None;
        let verdict = match client.bulk(index, &body).await {
            Ok(answer) => {
                let verdict = retry::classify(
                    answer.status,
                    &answer.body,
                    body.items.len(),
                    settings.op_type,
                );
                took = Some(sent_at.elapsed());
                telemetry::observe_bulk(answer.status, sent_at.elapsed());
                // Items refused for access are, for readiness, what a whole-request 401 or 403
                // is: records cannot leave until an operator acts.
                if matches!(&verdict, Verdict::Items(items) if items.iter().any(
                    |i| matches!(i, ItemOutcome::Blocked { .. })
                )) {
                    telemetry::set_cluster_reachable(false);
                }
                let refused = match &verdict {
                    Verdict::Items(items) => items
                        .iter()
                        .filter(|i| matches!(i, ItemOutcome::Retry { status: 429, .. }))
                        .count(),
                    _ => 0,
                };
                if matches!(verdict, Verdict::Items(_)) {
                    share.answered(
                        sent_at.into_std(),
                        body.items.len(),
                        refused,
                        std::time::Instant::now(),
                    );
                }
                if answer.status == 429 || refused > 0 {
                    window.congested(std::time::Instant::now());
                } else if (200..300).contains(&answer.status) {
                    window.passed();
                }
                verdict
            }
            Err(e) => {
                // An answer too large to read still came from the cluster (or a proxy): its
                // status counts, and the host is left out for a while like one that failed.
                let status = match &e {
                    client::ClientError::AnswerTooLarge { status, .. } => *status,
                    _ => 0,
                };
                telemetry::observe_bulk(status, sent_at.elapsed());
                Verdict::RetryRequest {
                    reason: e.to_string(),
                    host_failed: true,
                }
            }
        };
        let outcome = match verdict {
            Verdict::Items(items) => Final::Items(items),
            Verdict::Split => Final::Split,
            Verdict::Reject { status, reason } => Final::Reject { status, reason },
            Verdict::RetryRequest {
                reason,
                host_failed,
            } => {
                if host_failed {
                    client.hosts.failed(index, std::time::Instant::now());
                }
                if let Some(max) = settings.retry_max_duration {
                    if started.elapsed() >= max {
                        return Delivery {
                            body,
                            outcome: Final::GaveUp { reason },
                            charge,
                            took: None,
                        };
                    }
                }
                telemetry::add(&metrics().es_request_retries, 1);
                let wait = settings.retry.delay(attempt);
                if let Some(suppressed) = WARNINGS.admit() {
                    tracing::error!(host = %client.hosts.url(index), reason = %reason, attempt, retry_in = ?wait, suppressed, "Bulk request failed; retrying. Readers wait meanwhile, nothing is dropped.");
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if !matches!(outcome, Final::Reject { .. }) {
            client.hosts.succeeded(index);
        }
        return Delivery {
            body,
            outcome,
            charge,
            took,
        };
    }
}
