//! The faults a test can inject, and the bookkeeping that decides when each one fires.
//!
//! Whole-request faults answer a request with a status instead of serving it; item faults reject
//! chosen bulk items while the rest of the request is served; connection faults close the socket
//! without an answer. Every fault is consumed under the server's state lock, so a fault set to fire
//! N times fires exactly N times however many connections race for it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

/// How long a whole-request fault lasts.
#[derive(Debug, Clone, Copy)]
pub enum Lasting {
    /// The next N requests.
    Times(u64),
    /// Every request until this instant.
    Until(Instant),
    /// Every request until the test clears the fault.
    UntilCleared,
}

/// What a faulty request is answered with.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `None`: the body the real server (or, for 502 and 504, a proxy in front of it) sends with
    /// this status. `Some((content_type, body))`: exactly this.
    pub body: Option<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct RequestFault {
    pub reply: Reply,
    pub lasting: Lasting,
}

/// The bulk item an item rule is asked about.
pub struct ItemView<'a> {
    /// `create`, `index`, `update` or `delete`.
    pub action: &'a str,
    /// The index or data stream the item names.
    pub index: &'a str,
    pub id: &'a str,
    /// The document (`Null` for deletes and for sources that are not valid JSON).
    pub source: &'a Value,
}

/// Which bulk items to reject.
#[derive(Clone)]
pub enum ItemRule {
    /// Items the predicate holds for.
    Matching(Arc<dyn Fn(&ItemView<'_>) -> bool + Send + Sync>),
    /// The k-th, 2k-th, ... item seen since the rule was set (counting items of every request).
    EveryKth(u64),
    /// The first N attempts at each `(index, _id)`; items without an `_id` are never rejected.
    FirstAttempts(u32),
}

impl fmt::Debug for ItemRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemRule::Matching(_) => write!(f, "Matching(..)"),
            ItemRule::EveryKth(k) => write!(f, "EveryKth({k})"),
            ItemRule::FirstAttempts(n) => write!(f, "FirstAttempts({n})"),
        }
    }
}

impl ItemRule {
    pub fn matching(f: impl Fn(&ItemView<'_>) -> bool + Send + Sync + 'static) -> Self {
        ItemRule::Matching(Arc::new(f))
    }
}

#[derive(Debug)]
struct ItemFault {
    rule: ItemRule,
    status: u16,
    /// Items seen by this rule, for `EveryKth`.
    seen: u64,
    /// Attempts per `(index, _id)`, for `FirstAttempts`.
    attempts: HashMap<(String, String), u32>,
}

/// Where a dropped connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPoint {
    /// The request is read and thrown away: nothing is stored.
    BeforeProcessing,
    /// The request is served (documents stored) and the answer thrown away, as when a proxy or
    /// the network fails on the way back; a retry then meets its own documents.
    AfterProcessing,
}

#[derive(Debug, Default)]
pub struct Faults {
    requests: Vec<RequestFault>,
    items: Vec<ItemFault>,
    drops: Vec<DropPoint>,
    capacity: Option<Capacity>,
}

/// A cluster that indexes at most `per_sec` documents per second, over all connections: a
/// bucket of one second's worth, refilled as time passes. An item finding it empty is refused
/// with 429, as a full write thread pool refuses it.
#[derive(Debug)]
struct Capacity {
    per_sec: f64,
    tokens: f64,
    at: Instant,
    since: Instant,
    /// (accepted, refused) by tenth of a second since the capacity was set.
    tenths: Vec<(u64, u64)>,
}

impl Faults {
    pub fn add_request_fault(&mut self, fault: RequestFault) {
        self.requests.push(fault);
    }

    pub fn clear_request_faults(&mut self) {
        self.requests.clear();
    }

    pub fn add_item_fault(&mut self, rule: ItemRule, status: u16) {
        self.items.push(ItemFault {
            rule,
            status,
            seen: 0,
            attempts: HashMap::new(),
        });
    }

    pub fn clear_item_faults(&mut self) {
        self.items.clear();
    }

    /// At most `per_sec` items written per second from now on; `None`: no limit.
    pub fn set_write_capacity(&mut self, per_sec: Option<u64>) {
        self.capacity = per_sec.map(|n| Capacity {
            per_sec: n as f64,
            tokens: n as f64,
            at: Instant::now(),
            since: Instant::now(),
            tenths: Vec::new(),
        });
    }

    /// Items accepted and refused by the write capacity, by tenth of a second since it was set.
    pub fn capacity_tenths(&self) -> Vec<(u64, u64)> {
        self.capacity
            .as_ref()
            .map_or_else(Vec::new, |c| c.tenths.clone())
    }

    pub fn drop_connections(&mut self, n: usize, point: DropPoint) {
        self.drops.extend(std::iter::repeat_n(point, n));
    }

    pub fn clear_drops(&mut self) {
        self.drops.clear();
    }

    pub fn clear(&mut self) {
        *self = Faults::default();
    }

    /// The drop that applies to the request now arriving, consumed.
    pub fn take_drop(&mut self) -> Option<DropPoint> {
        if self.drops.is_empty() {
            None
        } else {
            Some(self.drops.remove(0))
        }
    }

    /// The reply that replaces the request now arriving, consumed; expired faults are forgotten.
    pub fn take_request_fault(&mut self, now: Instant) -> Option<Reply> {
        self.requests.retain(|f| match f.lasting {
            Lasting::Times(n) => n > 0,
            Lasting::Until(t) => now < t,
            Lasting::UntilCleared => true,
        });
        let fault = self.requests.first_mut()?;
        if let Lasting::Times(n) = &mut fault.lasting {
            *n -= 1;
        }
        Some(fault.reply.clone())
    }

    /// The status to reject this item with, if a rule picks it. Every rule sees every item, so
    /// counters stay meaningful when several rules are set.
    pub fn item_rejection(&mut self, item: &ItemView<'_>) -> Option<u16> {
        let mut verdict = None;
        for fault in &mut self.items {
            fault.seen += 1;
            let hit = match &fault.rule {
                ItemRule::Matching(f) => f(item),
                ItemRule::EveryKth(k) => *k > 0 && fault.seen % k == 0,
                ItemRule::FirstAttempts(n) => {
                    if item.id.is_empty() {
                        false
                    } else {
                        let count = fault
                            .attempts
                            .entry((item.index.to_string(), item.id.to_string()))
                            .or_insert(0);
                        *count += 1;
                        *count <= *n
                    }
                }
            };
            if hit && verdict.is_none() {
                verdict = Some(fault.status);
            }
        }
        if verdict.is_none() {
            if let Some(c) = &mut self.capacity {
                let now = Instant::now();
                let refill = now.duration_since(c.at).as_secs_f64() * c.per_sec;
                c.tokens = (c.tokens + refill).min(c.per_sec);
                c.at = now;
                let tenth = now.duration_since(c.since).as_millis() as usize / 100;
                if c.tenths.len() <= tenth {
                    c.tenths.resize(tenth + 1, (0, 0));
                }
                if c.tokens >= 1.0 {
                    c.tokens -= 1.0;
                    c.tenths[tenth].0 += 1;
                } else {
                    verdict = Some(429);
                    c.tenths[tenth].1 += 1;
                }
            }
        }
        verdict
    }
}
