//! The retry policy: what an Elasticsearch answer means for the records of a bulk request, as pure
//! functions over (status, body), so that every case is a row in a test table.
//!
//! The rules (docs/ARCHITECTURE.md, the invariants):
//!
//! - per item: 2xx is delivered; 409 on `create` means an earlier attempt (a retry, a restart)
//!   already delivered it, so it is delivered too; 429 and 5xx are retried *alone*; 401, 403 and
//!   404 (`security_exception`: a missing privilege; `index_not_found_exception`: a missing index
//!   where automatic creation is off) are [`needs_operator`] refusals, retried alone as well, with
//!   backoff, because dead-lettering would send every record there until someone fixes access;
//!   any other 4xx (a mapping conflict, a bad document) will fail the same way forever, so the
//!   record goes to the dead letters;
//! - per request: a connection error, a timeout, 408, 429 and 5xx retry the whole request; 413
//!   splits it in halves; 401, 403 and 404 are configuration or cluster problems an operator must
//!   fix, and dropping data would not fix them: retried (and logged as errors); any other 4xx for the
//!   whole request means the request itself is wrong, so its records go to the dead letters
//!   instead of looping forever;
//! - a 2xx answer that cannot be read, or whose item count does not match, is retried: the ids
//!   make a repeat harmless, a guess would not be.
//!
//! It never decides *when* to retry; [`Backoff`] does, with exponential growth and full jitter so
//! that a thousand agents that failed together do not come back together.

use std::time::Duration;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The bulk action logship writes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpType {
    /// `create`: fails with 409 if the id exists, which makes repeats idempotent (the default).
    Create,
    /// `index`: overwrites a document with the same id; repeats are idempotent too, but a data
    /// stream accepts only `create`.
    Index,
}

impl OpType {
    pub const fn as_str(self) -> &'static str {
        match self {
            OpType::Create => "create",
            OpType::Index => "index",
        }
    }
}

/// What happened to one item of a bulk request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Written now.
    Delivered,
    /// `create` found the id: an earlier attempt delivered it.
    AlreadyDelivered,
    /// Rejected for now (429, 5xx): send it again later.
    Retry { status: u16, error: ItemError },
    /// Refused until an operator acts (401, 403, 404: see [`needs_operator`]): send it again
    /// later, like [`ItemOutcome::Retry`], and say loudly that someone must fix access.
    Blocked { status: u16, error: ItemError },
    /// Rejected for good: dead-letter it.
    Reject { status: u16, error: ItemError },
}

/// Elasticsearch's description of an item's failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemError {
    /// `error.type`, e.g. `mapper_parsing_exception`.
    pub kind: String,
    /// `error.reason`, plus the caused-by reason when there is one.
    pub reason: String,
}

/// What a whole answer means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request was processed; one outcome per item, in request order.
    Items(Vec<ItemOutcome>),
    /// Send the same request again after a backoff (possibly to another host).
    RetryRequest { reason: String, host_failed: bool },
    /// 413: the request is too large for the cluster; send its halves.
    Split,
    /// The request itself is wrong: every item goes to the dead letters with this reason.
    Reject { status: u16, reason: String },
}

/// Classifies an HTTP answer to a bulk request of `items` items sent with `op`.
pub fn classify(status: u16, body: &[u8], items: usize, op: OpType) -> Verdict {
    match status {
        200..=299 => match parse_items(body, op, items) {
            Ok(outcomes) if outcomes.len() == items => Verdict::Items(outcomes),
            Ok(outcomes) => Verdict::RetryRequest {
                reason: format!(
                    "bulk response has {} items for {items} sent",
                    outcomes.len()
                ),
                host_failed: false,
            },
            Err(e) => Verdict::RetryRequest {
                reason: format!("unreadable bulk response: {e}"),
                host_failed: false,
            },
        },
        413 => Verdict::Split,
        s if needs_operator(s) => Verdict::RetryRequest {
            reason: format!("HTTP {status}: {}", error_summary(body)),
            host_failed: false,
        },
        408 | 429 => Verdict::RetryRequest {
            reason: format!("HTTP {status}: {}", error_summary(body)),
            host_failed: status == 408,
        },
        400..=499 => Verdict::Reject {
            status,
            reason: format!("HTTP {status}: {}", error_summary(body)),
        },
        _ => Verdict::RetryRequest {
            reason: format!("HTTP {status}: {}", error_summary(body)),
            host_failed: status >= 500,
        },
    }
}

/// Whether `status` (for a whole request or one item) means a configuration or cluster problem
/// that only an operator can fix: refused credentials (401), a missing privilege (403), a missing
/// index or a wrong URL (404). Dropping the records would not fix it, so they are retried, for
/// the request and for the item alike.
pub const fn needs_operator(status: u16) -> bool {
    matches!(status, 401 | 403 | 404)
}

/// Classifies one item by its status.
pub fn classify_item(status: u16, error: ItemError, op: OpType) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Delivered,
        409 if op == OpType::Create => ItemOutcome::AlreadyDelivered,
        429 | 500..=599 => ItemOutcome::Retry { status, error },
        s if needs_operator(s) => ItemOutcome::Blocked { status, error },
        _ => ItemOutcome::Reject { status, error },
    }
}

/// One item of the answer: an object with one key, the action. Named fields instead of a map, so
/// that reading an answer of ten thousand items allocates nothing per item.
#[derive(Deserialize)]
struct Action {
    create: Option<Item>,
    index: Option<Item>,
    update: Option<Item>,
    delete: Option<Item>,
}

#[derive(Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    caused_by: Option<Box<ErrorBody>>,
}

impl ErrorBody {
    fn into_item_error(self) -> ItemError {
        let mut reason = self.reason.unwrap_or_default();
        if let Some(cause) = self.caused_by {
            let cause_reason = cause.reason.unwrap_or_default();
            reason = format!("{reason} (caused by {}: {cause_reason})", cause.kind);
        }
        ItemError {
            kind: self.kind,
            reason,
        }
    }
}

/// Reads a bulk answer's items into their outcomes one by one, as the answer is parsed: an
/// answer of ten thousand items never exists as ten thousand parsed actions (several MiB per
/// answer in flight), only as their outcomes.
fn parse_items(
    body: &[u8],
    op: OpType,
    items: usize,
) -> Result<Vec<ItemOutcome>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let outcomes = de.deserialize_map(Answer { op, items })?;
    de.end()?;
    Ok(outcomes)
}

/// The answer object: its `items` are read by [`Outcomes`]; the rest is skipped.
struct Answer {
    op: OpType,
    items: usize,
}

impl<'de> Visitor<'de> for Answer {
    type Value = Vec<ItemOutcome>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a bulk response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut outcomes = Vec::new();
        // `errors: false`, which Elasticsearch writes before the items, says that every item
        // succeeded: they are counted, not read.
        let mut errors = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "items" if errors == Some(false) => {
                    let count = map.next_value_seed(Count)?;
                    outcomes = vec![ItemOutcome::Delivered; count];
                }
                "items" => {
                    outcomes = map.next_value_seed(Outcomes {
                        op: self.op,
                        items: self.items,
                    })?;
                }
                "errors" => errors = Some(map.next_value::<bool>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(outcomes)
    }
}

/// The number of members of an array, skipped.
struct Count;

impl<'de> DeserializeSeed<'de> for Count {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of bulk response items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut count = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

/// The `items` array, read into outcomes.
struct Outcomes {
    op: OpType,
    /// Items sent: the outcomes' capacity.
    items: usize,
}

impl<'de> DeserializeSeed<'de> for Outcomes {
    type Value = Vec<ItemOutcome>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Outcomes {
    type Value = Vec<ItemOutcome>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of bulk response items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // At most what was sent up front: a longer answer is refused by the caller anyway.
        let mut out = Vec::with_capacity(self.items.min(seq.size_hint().unwrap_or(self.items)));
        while let Some(action) = seq.next_element::<Action>()? {
            out.push(outcome(action, self.op));
        }
        Ok(out)
    }
}

fn outcome(action: Action, op: OpType) -> ItemOutcome {
    let Some(item) = action
        .create
        .or(action.index)
        .or(action.update)
        .or(action.delete)
    else {
        return ItemOutcome::Retry {
            status: 0,
            error: ItemError {
                kind: "empty_item".into(),
                reason: "bulk response item without an action".into(),
            },
        };
    };
    let error = item
        .error
        .map(ErrorBody::into_item_error)
        .unwrap_or_default();
    classify_item(item.status, error, op)
}

/// A short, single-line description of an error body, for logs and dead letters.
pub fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Whole {
        error: WholeError,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum WholeError {
        Structured(ErrorBody),
        Text(String),
    }
    match serde_json::from_slice::<Whole>(body) {
        Ok(Whole {
            error: WholeError::Structured(e),
        }) => {
            let e = e.into_item_error();
            format!("{}: {}", e.kind, e.reason)
        }
        Ok(Whole {
            error: WholeError::Text(t),
        }) => t,
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.is_empty() {
                "(empty body)".into()
            } else {
                text
            }
        }
    }
}

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(max, base * 2^n)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (0 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt);
        cap.mul_f64(fastrand::f64())
    }

    /// The upper bound of the wait before attempt `attempt + 1`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: u16, error: Option<&str>) -> String {
        match error {
            None => format!(
                r#"{{"create":{{"_index":"logs","_id":"x","_version":1,"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":0,"_primary_term":1,"status":{status}}}}}"#
            ),
            Some(kind) => format!(
                r#"{{"create":{{"_index":"logs","_id":"x","status":{status},"error":{{"type":"{kind}","reason":"why","caused_by":{{"type":"illegal_argument_exception","reason":"deeper"}}}}}}}}"#
            ),
        }
    }

    fn body(items: &[String]) -> Vec<u8> {
        format!(
            r#"{{"took":3,"errors":true,"items":[{}]}}"#,
            items.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn the_answers_other_members_are_skipped_wherever_they_are() {
        let items = format!(
            "[{},{}]",
            item(201, None),
            item(429, Some("es_rejected_execution_exception"))
        );
        let body = format!(
            r#"{{"items":{items},"took":3,"ingest_took":{{"nested":[1,{{"a":"items"}}]}},"errors":true,"\u0069tems_not":0}}"#
        );
        let Verdict::Items(outcomes) = classify(200, body.as_bytes(), 2, OpType::Create) else {
            panic!("items expected");
        };
        assert_eq!(outcomes[0], ItemOutcome::Delivered);
        assert!(matches!(
            outcomes[1],
            ItemOutcome::Retry { status: 429, .. }
        ));
        // `errors: false` before the items: they are counted, every one delivered.
        let clean = format!(
            r#"{{"took":1,"errors":false,"items":[{},{}]}}"#,
            item(201, None),
            item(201, None)
        );
        assert_eq!(
            classify(200, clean.as_bytes(), 2, OpType::Create),
            Verdict::Items(vec![ItemOutcome::Delivered; 2])
        );
        assert!(
            matches!(
                classify(200, clean.as_bytes(), 3, OpType::Create),
                Verdict::RetryRequest { .. }
            ),
            "a count that does not match is still caught"
        );
        // Trailing bytes after the object make the answer unreadable, as before.
        let bad = format!(r#"{{"items":{items}}} x"#);
        assert!(matches!(
            classify(200, bad.as_bytes(), 2, OpType::Create),
            Verdict::RetryRequest { .. }
        ));
    }

    #[test]
    fn item_outcomes() {
        let b = body(&[
            item(201, None),
            item(409, Some("version_conflict_engine_exception")),
            item(429, Some("es_rejected_execution_exception")),
            item(503, Some("unavailable_shards_exception")),
            item(400, Some("mapper_parsing_exception")),
            item(404, Some("index_not_found_exception")),
            item(403, Some("security_exception")),
            item(401, Some("security_exception")),
            item(413, Some("illegal_argument_exception")),
        ]);
        let Verdict::Items(outcomes) = classify(200, &b, 9, OpType::Create) else {
            panic!()
        };
        let err = |kind: &str| ItemError {
            kind: kind.into(),
            reason: "why (caused by illegal_argument_exception: deeper)".into(),
        };
        assert_eq!(
            outcomes,
            vec![
                ItemOutcome::Delivered,
                ItemOutcome::AlreadyDelivered,
                ItemOutcome::Retry {
                    status: 429,
                    error: err("es_rejected_execution_exception")
                },
                ItemOutcome::Retry {
                    status: 503,
                    error: err("unavailable_shards_exception")
                },
                ItemOutcome::Reject {
                    status: 400,
                    error: err("mapper_parsing_exception")
                },
                ItemOutcome::Blocked {
                    status: 404,
                    error: err("index_not_found_exception")
                },
                ItemOutcome::Blocked {
                    status: 403,
                    error: err("security_exception")
                },
                ItemOutcome::Blocked {
                    status: 401,
                    error: err("security_exception")
                },
                ItemOutcome::Reject {
                    status: 413,
                    error: err("illegal_argument_exception")
                },
            ]
        );
        // 409 on `index` is a real conflict (external versioning), not a repeat.
        let b = body(&[item(409, Some("version_conflict_engine_exception"))]);
        assert!(matches!(
            classify(200, &b, 1, OpType::Index),
            Verdict::Items(ref o) if matches!(o[0], ItemOutcome::Reject { status: 409, .. })
        ));
    }

    #[test]
    fn whole_request_outcomes() {
        let es_error = br#"{"error":{"root_cause":[],"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"},"status":400}"#;
        let table: &[(u16, &[u8], &str)] = &[
            (400, es_error, "reject"),
            (406, b"{\"error\":\"Content-Type header [text/plain] is not supported\",\"status\":406}", "reject"),
            (401, b"{\"error\":{\"type\":\"security_exception\",\"reason\":\"missing authentication credentials\"},\"status\":401}", "retry"),
            (403, b"", "retry"),
            (404, b"", "retry"),
            (408, b"", "retry"),
            (429, b"{\"error\":{\"type\":\"es_rejected_execution_exception\",\"reason\":\"rejected\"},\"status\":429}", "retry"),
            (500, b"", "retry"),
            (502, b"<html>Bad Gateway</html>", "retry"),
            (503, b"", "retry"),
            (413, b"", "split"),
            (200, b"{\"took\":1,\"errors\":false,\"items\":[]}", "retry"), // 0 items for 1 sent
            (200, b"<html>proxy page</html>", "retry"),
        ];
        for &(status, body, want) in table {
            let got = match classify(status, body, 1, OpType::Create) {
                Verdict::Items(_) => "items",
                Verdict::RetryRequest { .. } => "retry",
                Verdict::Split => "split",
                Verdict::Reject { .. } => "reject",
            };
            assert_eq!(got, want, "HTTP {status}");
        }
        let Verdict::Reject { reason, .. } = classify(400, es_error, 1, OpType::Create) else {
            panic!()
        };
        assert!(
            reason.contains("illegal_argument_exception: The bulk request must be terminated"),
            "{reason}"
        );
        let Verdict::Reject { reason, .. } = classify(406, table[1].1, 1, OpType::Create) else {
            panic!()
        };
        assert!(reason.contains("Content-Type header"), "{reason}");
    }

    #[test]
    fn filtered_responses_are_understood() {
        // What `filter_path=errors,items.*.status,items.*.error` leaves of a response.
        let b = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let Verdict::Items(o) = classify(200, b, 2, OpType::Create) else {
            panic!()
        };
        assert_eq!(o[0], ItemOutcome::Delivered);
        assert!(matches!(o[1], ItemOutcome::Retry { status: 429, .. }));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        };
        assert_eq!(b.cap(0), Duration::from_millis(100));
        assert_eq!(b.cap(3), Duration::from_millis(800));
        assert_eq!(b.cap(40), Duration::from_secs(30));
        for attempt in 0..50 {
            assert!(b.delay(attempt) <= b.cap(attempt));
        }
    }
}
