//! The test Elasticsearch answers as the real one does: each test sends what a client would send
//! over a real socket and asserts on what Elasticsearch (or OpenSearch) would answer and store.
//!
//! The client is a small HTTP/1.1 client on `std::net::TcpStream`, so that dropped connections and
//! refused connects are seen exactly as they happen.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use support::elasticsearch::{Credentials, DropPoint, Flavor, ItemRule, ItemView, TestEs};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        self.read_response(method == "HEAD")
    }

    fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed without a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only {
            return Ok(response);
        }
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let n: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; n];
            self.reader.read_exact(&mut body)?;
            response.body = body;
        }
        Ok(response)
    }
}

fn request(
    es: &TestEs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    Client::connect(es.addr())
        .and_then(|mut c| c.send(method, path, headers, body))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

fn bulk(es: &TestEs, path: &str, body: &str) -> Response {
    request(es, "POST", path, &[NDJSON], body.as_bytes())
}

/// A bulk body from (action line, source line) pairs.
fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn item(resp: &Value, i: usize) -> &Value {
    let entry = &resp["items"][i];
    let (_, inner) = entry
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("no item {i} in {resp}"));
    inner
}

#[test]
fn the_banner_is_each_distributions_own() {
    let es8 = TestEs::start(Flavor::Elasticsearch8);
    let resp = request(&es8, "GET", "/", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let banner = resp.json();
    assert!(banner["version"]["number"]
        .as_str()
        .unwrap()
        .starts_with("8."));
    assert_eq!(banner["version"]["build_flavor"], "default");
    assert_eq!(banner["tagline"], "You Know, for Search");
    assert!(banner["version"].get("distribution").is_none());
    for key in ["name", "cluster_name", "cluster_uuid"] {
        assert!(banner[key].is_string(), "{key} in {banner}");
    }
    let head = request(&es8, "HEAD", "/", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let es7 = TestEs::start(Flavor::Elasticsearch7);
    let banner = request(&es7, "GET", "/", &[], b"").json();
    assert!(banner["version"]["number"]
        .as_str()
        .unwrap()
        .starts_with("7.17."));

    let os = TestEs::start(Flavor::OpenSearch2);
    let resp = request(&os, "GET", "/", &[], b"");
    assert_eq!(resp.header("x-elastic-product"), None);
    let banner = resp.json();
    assert_eq!(banner["version"]["distribution"], "opensearch");
    assert!(banner["version"]["number"]
        .as_str()
        .unwrap()
        .starts_with("2."));
    assert_eq!(
        banner["tagline"],
        "The OpenSearch Project: https://opensearch.org/"
    );
}

#[test]
fn a_second_create_of_the_same_id_is_a_409_and_the_document_is_stored_once() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = ndjson(&[
        json!({"create": {"_index": "logs", "_id": "a"}}),
        json!({"message": "first"}),
        json!({"create": {"_index": "logs", "_id": "a"}}),
        json!({"message": "second"}),
    ]);
    let resp = bulk(&es, "/_bulk", &body);
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["errors"], true);
    let created = item(&v, 0);
    assert_eq!(created["status"], 201);
    assert_eq!(created["result"], "created");
    assert_eq!(created["_index"], "logs");
    assert_eq!(created["_id"], "a");
    assert_eq!(created["_version"], 1);
    assert_eq!(created["_seq_no"], 0);
    assert_eq!(created["_primary_term"], 1);
    assert_eq!(
        created["_shards"],
        json!({"total": 2, "successful": 1, "failed": 0})
    );
    let conflict = item(&v, 1);
    assert_eq!(conflict["status"], 409);
    assert_eq!(
        conflict["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert_eq!(
        conflict["error"]["reason"],
        "[a]: version conflict, document already exists (current version [1])"
    );
    assert_eq!(conflict["error"]["index"], "logs");
    assert_eq!(conflict["error"]["shard"], "0");

    // A retry of the whole batch (a client that never saw the answer) changes nothing.
    let again = bulk(&es, "/_bulk", &body).json();
    assert_eq!(item(&again, 0)["status"], 409);
    assert_eq!(es.doc_count(), 1);
    assert_eq!(es.document("logs", "a"), Some(json!({"message": "first"})));
    assert_eq!(es.item_status_counts().get(&409), Some(&3));
}

#[test]
fn index_without_an_id_gets_one_and_index_on_an_id_replaces_it() {
    let es = TestEs::start(Flavor::Elasticsearch7);
    let v = bulk(
        &es,
        "/app/_bulk",
        &ndjson(&[
            json!({"index": {}}),
            json!({"n": 1}),
            json!({"index": {"_id": "x"}}),
            json!({"n": 2}),
            json!({"index": {"_id": "x"}}),
            json!({"n": 3}),
            json!({"delete": {"_id": "nope"}}),
        ]),
    )
    .json();
    assert_eq!(
        v["errors"], false,
        "a delete of a missing id is not an error"
    );
    let auto = item(&v, 0);
    assert_eq!(auto["_id"].as_str().unwrap().len(), 20);
    assert_eq!(auto["_index"], "app");
    assert_eq!(auto["_type"], "_doc", "7.x items carry _type");
    assert_eq!(item(&v, 2)["result"], "updated");
    assert_eq!(item(&v, 2)["status"], 200);
    assert_eq!(item(&v, 2)["_version"], 2);
    assert_eq!(item(&v, 3)["result"], "not_found");
    assert_eq!(item(&v, 3)["status"], 404);
    assert_eq!(es.document("app", "x"), Some(json!({"n": 3})));
    assert_eq!(es.doc_count(), 2);
}

#[test]
fn gzip_bodies_are_decompressed_and_recorded() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let mut lines = Vec::new();
    for i in 0..100 {
        lines.push(json!({"create": {"_index": "logs", "_id": format!("id-{i}")}}));
        lines.push(json!({"message": "the same line again and again", "i": i}));
    }
    let body = ndjson(&lines);
    let compressed = gzip(body.as_bytes());
    let resp = request(
        &es,
        "POST",
        "/_bulk",
        &[NDJSON, ("Content-Encoding", "gzip")],
        &compressed,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["errors"], false);
    assert_eq!(es.doc_count(), 100);
    let record = es.bulk_requests().pop().unwrap();
    assert!(record.gzip);
    assert_eq!(record.body_bytes, body.len());
    assert_eq!(record.wire_bytes, compressed.len());
    assert_eq!(record.items, Some(100));
    assert_eq!(record.status, Some(200));

    let garbage = request(
        &es,
        "POST",
        "/_bulk",
        &[NDJSON, ("Content-Encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(garbage.status, 400);
}

#[test]
fn malformed_requests_fail_whole_as_elasticsearch_fails_them() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let reason = |resp: &Response| resp.json()["error"]["reason"].as_str().unwrap().to_string();

    let resp = bulk(&es, "/_bulk", "{\"create\":{\"_index\":\"a\"}}\n{\"x\":1}");
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"]["type"], "illegal_argument_exception");
    assert_eq!(
        reason(&resp),
        "The bulk request must be terminated by a newline [\\n]"
    );
    assert_eq!(
        resp.json()["error"]["root_cause"][0]["type"],
        "illegal_argument_exception"
    );
    assert_eq!(resp.json()["status"], 400);

    let resp = bulk(
        &es,
        "/_bulk",
        "{\"insert\":{\"_index\":\"a\"}}\n{\"x\":1}\n",
    );
    assert_eq!(
        reason(&resp),
        "Malformed action/metadata line [1], expected field [create], [delete], [index] or [update] but found [insert]"
    );
    let resp = bulk(
        &es,
        "/_bulk",
        "{\"create\":{\"_index\":\"a\"}}\n{}\n{\"create\":{\"_idx\":\"a\"}}\n{}\n",
    );
    assert_eq!(
        reason(&resp),
        "Action/metadata line [3] contains an unknown parameter [_idx]"
    );
    let resp = bulk(&es, "/_bulk", "[1]\n");
    assert_eq!(
        reason(&resp),
        "Malformed action/metadata line [1], expected START_OBJECT but found [START_ARRAY]"
    );
    let resp = bulk(
        &es,
        "/_bulk",
        "{\"create\":{\"_type\":\"_doc\",\"_index\":\"a\"}}\n{}\n",
    );
    assert_eq!(
        reason(&resp),
        "Action/metadata line [1] contains an unknown parameter [_type]"
    );
    let resp = bulk(&es, "/_bulk", "{\"create\":{}}\n{}\n{\"index\":{}}\n{}\n");
    assert_eq!(
        resp.json()["error"]["type"],
        "action_request_validation_exception"
    );
    assert_eq!(
        reason(&resp),
        "Validation Failed: 1: index is missing;2: index is missing;"
    );
    let resp = bulk(&es, "/_bulk", "\n\n");
    assert_eq!(reason(&resp), "Validation Failed: 1: no requests added;");
    let resp = bulk(&es, "/_bulk", "");
    assert_eq!(resp.json()["error"]["type"], "parse_exception");
    let resp = bulk(
        &es,
        "/_bulk?consistency=one",
        "{\"create\":{\"_index\":\"a\"}}\n{}\n",
    );
    assert_eq!(
        reason(&resp),
        "request [/_bulk] contains unrecognized parameter: [consistency]"
    );
    assert_eq!(es.doc_count(), 0, "a failed request stores nothing");

    // 7.x skips an unknown action and its source line, and accepts `_type`.
    let es7 = TestEs::start(Flavor::Elasticsearch7);
    let v = bulk(
        &es7,
        "/_bulk",
        "{\"insert\":{\"_index\":\"a\"}}\n{}\n{\"create\":{\"_index\":\"a\",\"_type\":\"_doc\",\"_id\":\"1\"}}\n{}\n",
    )
    .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(es7.doc_count(), 1);
}

#[test]
fn the_content_type_must_be_json_or_ndjson() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = b"{\"create\":{\"_index\":\"a\"}}\n{}\n";
    let resp = request(&es, "POST", "/_bulk", &[], body);
    assert_eq!(resp.status, 406);
    assert_eq!(
        resp.json(),
        json!({"error": "Content-Type header [] is not supported", "status": 406})
    );
    let resp = request(
        &es,
        "POST",
        "/_bulk",
        &[("Content-Type", "text/plain")],
        body,
    );
    assert_eq!(resp.status, 406);
    assert_eq!(
        resp.json()["error"],
        "Content-Type header [text/plain] is not supported"
    );
    let resp = request(
        &es,
        "POST",
        "/_bulk",
        &[("Content-Type", "application/json; charset=UTF-8")],
        body,
    );
    assert_eq!(resp.status, 200);
    let resp = request(&es, "GET", "/_bulk", &[], b"");
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST, PUT"));
}

/// Two documents: `app` as a string, then `app.kubernetes.io/name`, which makes `app` an object.
fn dotted_conflict() -> String {
    ndjson(&[
        json!({"create": {"_index": "k8s", "_id": "1"}}),
        json!({"kubernetes": {"labels": {"app": "web"}}}),
        json!({"create": {"_index": "k8s", "_id": "2"}}),
        json!({"kubernetes": {"labels": {"app.kubernetes.io/name": "web"}}}),
        json!({"create": {"_index": "k8s", "_id": "3"}}),
        json!({"kubernetes": {"labels": {"team": "payments"}}}),
    ])
}

#[test]
fn a_dotted_key_under_a_string_field_is_rejected_per_item_as_each_version_words_it() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let v = bulk(&es, "/_bulk", &dotted_conflict()).json();
    assert_eq!(v["errors"], true);
    assert_eq!(item(&v, 0)["status"], 201);
    assert_eq!(item(&v, 2)["status"], 201, "the other items are stored");
    let failed = item(&v, 1);
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["error"]["type"], "document_parsing_exception");
    // {"kubernetes":{"labels":{"app.kubernetes.io/name":"web"}}}: the key starts at column 26
    // and its value at column 51.
    assert_eq!(
        failed["error"]["reason"],
        "[1:51] failed to parse field [kubernetes.labels.app] of type [text] in document with id '2'. Preview of field's value: '{kubernetes={io/name=web}}'"
    );
    assert_eq!(
        failed["error"]["caused_by"]["type"],
        "illegal_state_exception"
    );
    assert_eq!(
        failed["error"]["caused_by"]["reason"],
        "Can't get text on a START_OBJECT at 1:26"
    );
    assert_eq!(
        es.field_type("k8s", "kubernetes.labels.app").as_deref(),
        Some("text")
    );
    assert_eq!(
        es.field_type("k8s", "kubernetes.labels.team").as_deref(),
        Some("text")
    );
    assert_eq!(es.documents("k8s").len(), 2);

    let es7 = TestEs::start(Flavor::Elasticsearch7);
    let v = bulk(&es7, "/_bulk", &dotted_conflict()).json();
    let failed = item(&v, 1);
    assert_eq!(failed["error"]["type"], "mapper_parsing_exception");
    assert_eq!(
        failed["error"]["reason"],
        "Could not dynamically add mapping for field [app.kubernetes.io/name]. Existing mapping for [kubernetes.labels.app] must be of type object but found [text]."
    );
    let os = TestEs::start(Flavor::OpenSearch2);
    let v = bulk(&os, "/_bulk", &dotted_conflict()).json();
    assert_eq!(item(&v, 1)["error"]["type"], "mapper_parsing_exception");
}

#[test]
fn a_string_where_an_object_was_mapped_is_rejected_and_the_mapping_is_unchanged() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"create": {"_index": "k8s", "_id": "1"}}),
            json!({"app.kubernetes.io/name": "web"}),
            json!({"create": {"_index": "k8s", "_id": "2"}}),
            json!({"app": "web", "new_field": 1}),
            json!({"create": {"_index": "k8s", "_id": "3"}}),
            json!({"app": {"kubernetes": {"io/name": 7}}}),
        ]),
    )
    .json();
    assert_eq!(es.field_type("k8s", "app").as_deref(), Some("object"));
    assert_eq!(
        es.field_type("k8s", "app.kubernetes.io/name").as_deref(),
        Some("text")
    );
    assert_eq!(
        es.field_type("k8s", "app.kubernetes").as_deref(),
        Some("object")
    );
    let failed = item(&v, 1);
    assert_eq!(
        failed["error"]["reason"],
        "[1:8] object mapping for [app] tried to parse field [app] as object, but found a concrete value"
    );
    assert_eq!(
        es.field_type("k8s", "new_field"),
        None,
        "a rejected document adds no field"
    );
    assert_eq!(
        item(&v, 2)["status"],
        201,
        "a number into a text field is fine"
    );

    // Type conflicts between concrete values.
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"create": {"_index": "nums", "_id": "1"}}),
            json!({"count": 5, "ok": true, "at": "2026-01-01T00:00:00Z"}),
            json!({"create": {"_index": "nums", "_id": "2"}}),
            json!({"count": "many"}),
            json!({"create": {"_index": "nums", "_id": "3"}}),
            json!({"count": "12", "ok": "false", "at": 1767225600000u64}),
            json!({"create": {"_index": "nums", "_id": "4"}}),
            json!({"ok": "yes"}),
        ]),
    )
    .json();
    assert_eq!(es.field_type("nums", "at").as_deref(), Some("date"));
    assert_eq!(
        item(&v, 1)["error"]["reason"],
        "[1:10] failed to parse field [count] of type [long] in document with id '2'. Preview of field's value: 'many'"
    );
    assert_eq!(
        item(&v, 1)["error"]["caused_by"],
        json!({"type": "illegal_argument_exception", "reason": "For input string: \"many\""})
    );
    assert_eq!(item(&v, 2)["status"], 201, "numeric strings are coerced");
    assert_eq!(
        item(&v, 3)["error"]["caused_by"]["reason"],
        "Failed to parse value [yes] as only [true] or [false] are allowed."
    );
}

#[test]
fn a_document_that_is_not_json_fails_alone() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = "{\"create\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"m\":}\n{\"create\":{\"_index\":\"a\",\"_id\":\"2\"}}\n{\"m\":1}\n{\"create\":{\"_index\":\"a\",\"_id\":\"3\"}}\n{\"_id\":\"x\"}\n";
    let v = bulk(&es, "/_bulk", body).json();
    let failed = item(&v, 0);
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["error"]["type"], "document_parsing_exception");
    let reason = failed["error"]["reason"].as_str().unwrap();
    // The cause's own location is part of its message, as XContentParseException words it.
    assert_eq!(
        reason,
        "[1:6] failed to parse: [1:6] Unexpected character ('}' (code 125)): expected a value"
    );
    assert_eq!(
        failed["error"]["caused_by"]["type"],
        "x_content_parse_exception"
    );
    assert_eq!(item(&v, 1)["status"], 201);
    assert_eq!(
        item(&v, 2)["error"]["caused_by"]["reason"],
        "Field [_id] is a metadata field and cannot be added inside a document. Use the index API request parameters."
    );

    let es7 = TestEs::start(Flavor::Elasticsearch7);
    let v = bulk(&es7, "/_bulk", body).json();
    assert_eq!(item(&v, 0)["error"]["type"], "mapper_parsing_exception");
    assert_eq!(item(&v, 0)["error"]["reason"], "failed to parse");
    assert_eq!(
        item(&v, 0)["error"]["caused_by"]["type"],
        "json_parse_exception"
    );
}

#[test]
fn logs_data_streams_take_only_creates_with_a_timestamp() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"create": {"_index": "logs-app-default", "_id": "1"}}),
            json!({"@timestamp": "2026-11-22T10:00:00.123456789Z", "message": "hello"}),
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"@timestamp": "2026-11-22T10:00:00Z", "message": "hello"}),
            json!({"create": {"_index": "logs-app-default", "_id": "3"}}),
            json!({"message": "no time"}),
            json!({"index": {"_index": "logs-app-default", "op_type": "create", "_id": "4"}}),
            json!({"@timestamp": "2026-11-22T10:00:01Z", "message": "with op_type"}),
        ]),
    )
    .json();
    let backing = es.data_streams()["logs-app-default"].clone();
    assert!(backing.starts_with(".ds-logs-app-default-"), "{backing}");
    assert!(backing.ends_with("-000001"), "{backing}");
    assert_eq!(item(&v, 0)["status"], 201);
    assert_eq!(item(&v, 0)["_index"], backing.as_str());
    let refused = item(&v, 1);
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["_index"], "logs-app-default");
    assert_eq!(refused["_id"], Value::Null);
    assert_eq!(
        refused["error"],
        json!({"type": "illegal_argument_exception", "reason": "only write ops with an op_type of create are allowed in data streams"})
    );
    let missing = item(&v, 2);
    assert_eq!(missing["error"]["type"], "document_parsing_exception");
    assert!(missing["error"]["reason"]
        .as_str()
        .unwrap()
        .ends_with("failed to parse: data stream timestamp field [@timestamp] is missing"));
    assert_eq!(item(&v, 3)["status"], 201);
    assert_eq!(es.documents("logs-app-default").len(), 2);
    assert_eq!(
        es.field_type("logs-app-default", "message").as_deref(),
        Some("match_only_text")
    );

    // 7.9+ has the same built-in template; OpenSearch has none.
    let es7 = TestEs::start(Flavor::Elasticsearch7);
    let v = bulk(
        &es7,
        "/_bulk",
        &ndjson(&[
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"@timestamp": "2026-11-22T10:00:00Z"}),
        ]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 400);
    let os = TestEs::start(Flavor::OpenSearch2);
    let v = bulk(
        &os,
        "/_bulk",
        &ndjson(&[
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"message": "x"}),
        ]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 201);
    assert!(os.data_streams().is_empty());
}

/// A write capacity: a second's worth is taken at once, the rest of the items are refused with
/// 429 one by one, and the capacity comes back with time.
#[test]
fn a_write_capacity_refuses_items_past_it_with_429() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.set_write_capacity(Some(100));
    let body = |from: usize| {
        let mut lines = Vec::new();
        for i in from..from + 150 {
            lines.push(json!({"create": {"_index": "logs", "_id": i.to_string()}}));
            lines.push(json!({"i": i}));
        }
        ndjson(&lines)
    };
    let statuses = |v: &Value| -> Vec<u64> {
        (0..150)
            .map(|i| item(v, i)["status"].as_u64().unwrap())
            .collect()
    };
    let v = bulk(&es, "/_bulk", &body(0)).json();
    assert_eq!(v["errors"], true);
    let got = statuses(&v);
    let first = got.iter().filter(|s| **s == 201).count();
    assert!((100..=101).contains(&first), "{first} created");
    assert!(
        got[..100].iter().all(|s| *s == 201),
        "the first ones are taken"
    );
    assert_eq!(
        item(&v, 149)["error"]["type"],
        "es_rejected_execution_exception"
    );
    std::thread::sleep(Duration::from_millis(500));
    let v = bulk(&es, "/_bulk", &body(150)).json();
    let second = statuses(&v).iter().filter(|s| **s == 201).count();
    assert!(
        (45..=70).contains(&second),
        "about half a second's worth comes back: {second}"
    );
    es.set_write_capacity(None);
    let v = bulk(&es, "/_bulk", &body(300)).json();
    assert_eq!(v["errors"], false, "no limit any more");
    let refused = es.item_status_counts().get(&429).copied().unwrap_or(0);
    assert_eq!(refused as usize, 300 - first - second);
    assert_eq!(es.doc_count(), first + second + 150);
}

#[test]
fn chosen_items_are_rejected_with_429_and_the_rest_are_stored() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.reject_items(ItemRule::EveryKth(2), 429);
    let mut lines = Vec::new();
    for i in 0..4 {
        lines.push(json!({"create": {"_index": "logs", "_id": i.to_string()}}));
        lines.push(json!({"i": i}));
    }
    let body = ndjson(&lines);
    let v = bulk(&es, "/_bulk", &body).json();
    assert_eq!(v["errors"], true);
    let statuses: Vec<u64> = (0..4)
        .map(|i| item(&v, i)["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 429, 201, 429]);
    let rejected = item(&v, 1);
    assert_eq!(rejected["error"]["type"], "es_rejected_execution_exception");
    assert!(rejected["error"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("rejected execution of primary operation ["));
    assert_eq!(es.doc_count(), 2);

    // First attempt of each id refused, the retry accepted: every line exactly once.
    es.clear_item_faults();
    es.reject_items(ItemRule::FirstAttempts(1), 429);
    let v = bulk(&es, "/_bulk", &body).json();
    let statuses: Vec<u64> = (0..4)
        .map(|i| item(&v, i)["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 429, 429, 429]);
    let v = bulk(&es, "/_bulk", &body).json();
    let statuses: Vec<u64> = (0..4)
        .map(|i| item(&v, i)["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [409, 201, 409, 201]);
    assert_eq!(es.doc_count(), 4);

    es.clear_item_faults();
    es.reject_items(
        ItemRule::matching(|item: &ItemView<'_>| item.source["level"] == "debug"),
        429,
    );
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"create": {"_index": "other"}}),
            json!({"level": "debug"}),
            json!({"create": {"_index": "other"}}),
            json!({"level": "info"}),
        ]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 429);
    assert_eq!(item(&v, 1)["status"], 201);

    let os = TestEs::start(Flavor::OpenSearch2);
    os.reject_items(ItemRule::EveryKth(1), 429);
    let v = bulk(&os, "/_bulk", &body).json();
    assert_eq!(item(&v, 0)["error"]["type"], "rejected_execution_exception");
}

#[test]
fn a_body_over_the_limit_after_gunzip_is_a_413() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.set_max_content_length(4096);
    let mut lines = Vec::new();
    for i in 0..100 {
        lines.push(json!({"create": {"_index": "logs", "_id": i.to_string()}}));
        lines.push(json!({"message": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}));
    }
    let body = ndjson(&lines);
    let compressed = gzip(body.as_bytes());
    assert!(body.len() > 4096 && compressed.len() < 4096);
    let resp = request(
        &es,
        "POST",
        "/_bulk",
        &[NDJSON, ("Content-Encoding", "gzip")],
        &compressed,
    );
    assert_eq!(resp.status, 413);
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(es.doc_count(), 0);

    let part: String = body.lines().take(60).map(|l| format!("{l}\n")).collect();
    assert!(part.len() <= 4096);
    let resp = bulk(&es, "/_bulk", &part);
    assert_eq!(resp.status, 200);
    assert_eq!(es.doc_count(), 30);
    assert_eq!(es.status_counts().get(&413), Some(&1));
}

#[test]
fn a_status_fault_answers_for_its_window_then_the_server_recovers() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = ndjson(&[
        json!({"create": {"_index": "logs", "_id": "1"}}),
        json!({"m": 1}),
    ]);
    es.fail_next(2, 503);
    for _ in 0..2 {
        let resp = bulk(&es, "/_bulk", &body);
        assert_eq!(resp.status, 503);
        assert_eq!(resp.json()["error"]["type"], "cluster_block_exception");
        assert_eq!(
            resp.json()["error"]["reason"],
            "blocked by: [SERVICE_UNAVAILABLE/2/no master];"
        );
    }
    assert_eq!(es.doc_count(), 0);
    assert_eq!(bulk(&es, "/_bulk", &body).status, 200);
    assert_eq!(es.doc_count(), 1);

    es.fail_next(1, 429);
    let resp = bulk(&es, "/_bulk", &body);
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.json()["error"]["type"],
        "es_rejected_execution_exception"
    );

    es.fail_next(1, 502);
    let resp = bulk(&es, "/_bulk", &body);
    assert_eq!(resp.status, 502);
    assert_eq!(resp.header("content-type"), Some("text/html"));
    assert!(resp.text().contains("502 Bad Gateway"));

    es.fail_for(Duration::from_millis(300), 500);
    assert_eq!(bulk(&es, "/_bulk", &body).status, 500);
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(bulk(&es, "/_bulk", &body).status, 200);

    es.fail_next_with(1, 503, "text/plain", b"upstream connect error");
    let resp = bulk(&es, "/_bulk", &body);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), "upstream connect error");

    es.fail_until_cleared(503);
    assert_eq!(request(&es, "GET", "/", &[], b"").status, 503);
    es.clear_faults();
    assert_eq!(request(&es, "GET", "/", &[], b"").status, 200);
    assert_eq!(es.status_counts().get(&503), Some(&4));
}

#[test]
fn a_dropped_connection_gets_no_answer_and_stores_only_when_dropped_after() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = ndjson(&[
        json!({"create": {"_index": "logs", "_id": "1"}}),
        json!({"m": 1}),
    ]);
    es.drop_connections(1, DropPoint::BeforeProcessing);
    let mut client = Client::connect(es.addr()).unwrap();
    let err = client
        .send("POST", "/_bulk", &[NDJSON], body.as_bytes())
        .err()
        .expect("no answer");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    assert_eq!(es.doc_count(), 0);

    es.drop_connections(1, DropPoint::AfterProcessing);
    let mut client = Client::connect(es.addr()).unwrap();
    assert!(client
        .send("POST", "/_bulk", &[NDJSON], body.as_bytes())
        .is_err());
    assert_eq!(es.doc_count(), 1, "served, answer lost");
    // The client's retry meets its own document.
    let v = bulk(&es, "/_bulk", &body).json();
    assert_eq!(item(&v, 0)["status"], 409);
    let statuses: Vec<Option<u16>> = es.bulk_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [None, None, Some(200)]);
}

#[test]
fn down_refuses_connections_and_up_serves_again_on_the_same_port() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = ndjson(&[
        json!({"create": {"_index": "logs", "_id": "1"}}),
        json!({"m": 1}),
    ]);
    let mut kept = Client::connect(es.addr()).unwrap();
    assert_eq!(
        kept.send("POST", "/_bulk", &[NDJSON], body.as_bytes())
            .unwrap()
            .status,
        200
    );
    let url = es.url();

    es.down();
    assert!(!es.is_up());
    let err = TcpStream::connect(es.addr()).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        kept.send("GET", "/", &[], b"").is_err(),
        "open connections are closed too"
    );

    es.up();
    assert_eq!(es.url(), url);
    let resp = request(&es, "GET", "/", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(
        es.document("logs", "1"),
        Some(json!({"m": 1})),
        "data survives"
    );
    es.down();
    es.up();
    assert_eq!(request(&es, "GET", "/", &[], b"").status, 200);
}

#[test]
fn credentials_are_required_once_set() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.require(Credentials::basic("elastic", "changeme"));
    es.require(Credentials::api_key("key-id", "secret"));
    es.require(Credentials::Bearer("token-1".into()));
    let body = "{\"create\":{\"_index\":\"a\"}}\n{}\n";

    let resp = bulk(&es, "/_bulk", body);
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.headers_named("www-authenticate"),
        [
            "Basic realm=\"security\", charset=\"UTF-8\"",
            "Bearer realm=\"security\"",
            "ApiKey"
        ]
    );
    let v = resp.json();
    assert_eq!(v["error"]["type"], "security_exception");
    assert_eq!(
        v["error"]["reason"],
        "missing authentication credentials for REST request [/_bulk]"
    );
    assert_eq!(v["status"], 401);

    let wrong = Credentials::basic("elastic", "nope").header();
    let resp = request(
        &es,
        "POST",
        "/_bulk",
        &[NDJSON, ("Authorization", &wrong)],
        body.as_bytes(),
    );
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json()["error"]["reason"],
        "unable to authenticate user [elastic] for REST request [/_bulk]"
    );
    let wrong_key = Credentials::api_key("key-id", "other").header();
    let resp = request(&es, "GET", "/", &[("Authorization", &wrong_key)], b"");
    assert_eq!(resp.status, 401);

    for good in [
        Credentials::basic("elastic", "changeme"),
        Credentials::api_key("key-id", "secret"),
        Credentials::Bearer("token-1".into()),
    ] {
        let header = good.header();
        let resp = request(
            &es,
            "POST",
            "/_bulk",
            &[NDJSON, ("Authorization", &header)],
            body.as_bytes(),
        );
        assert_eq!(resp.status, 200, "{good:?}");
    }
    assert_eq!(es.doc_count(), 3);
    let sent: Vec<Option<String>> = es
        .bulk_requests()
        .iter()
        .map(|r| r.authorization.clone())
        .collect();
    assert_eq!(sent[0], None);
    assert_eq!(sent[1].as_deref(), Some(wrong.as_str()));

    let os = TestEs::start(Flavor::OpenSearch2);
    os.require(Credentials::basic("admin", "admin"));
    let resp = request(&os, "GET", "/", &[], b"");
    assert_eq!(resp.status, 401);
    assert_eq!(resp.text(), "Unauthorized");
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Basic realm=\"OpenSearch Security\"")
    );
}

#[test]
fn index_templates_are_stored_and_decide_how_new_indices_map() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let json_ct = ("Content-Type", "application/json");
    let clash = json!({"index_patterns": ["logs-*"], "priority": 100});
    let resp = request(
        &es,
        "PUT",
        "/_index_template/logship",
        &[json_ct],
        clash.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("that have the same priority [100]"));

    let template = json!({
        "index_patterns": ["logs-*"],
        "priority": 200,
        "template": {
            "mappings": {"properties": {"kubernetes.labels": {"type": "flattened"}}}
        }
    });
    let resp = request(
        &es,
        "PUT",
        "/_index_template/logship",
        &[json_ct],
        template.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"acknowledged": true}));
    assert_eq!(es.index_template("logship"), Some(template.clone()));
    let got = request(&es, "GET", "/_index_template/logship", &[], b"").json();
    assert_eq!(got["index_templates"][0]["name"], "logship");
    assert_eq!(got["index_templates"][0]["index_template"], template);
    assert_eq!(
        request(&es, "GET", "/_index_template/none", &[], b"").status,
        404
    );

    // The template wins over the built-in one: a plain index, where dotted labels are safe.
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"kubernetes": {"labels": {"app": "web"}}}),
            json!({"index": {"_index": "logs-app-default"}}),
            json!({"kubernetes": {"labels": {"app.kubernetes.io/name": "web"}}}),
        ]),
    )
    .json();
    assert_eq!(v["errors"], false, "{v}");
    assert!(es.data_streams().is_empty());

    let bad = json!({"index_patterns": ["x-*"], "template": {"mappings": {"properties": {"f": {"type": "strnig"}}}}});
    let resp = request(
        &es,
        "PUT",
        "/_index_template/bad",
        &[json_ct],
        bad.to_string().as_bytes(),
    );
    assert_eq!(
        resp.json()["error"]["reason"],
        "No handler for type [strnig] declared on field [f]"
    );

    let legacy = json!({"index_patterns": ["old-*"], "order": 1, "mappings": {"properties": {"n": {"type": "keyword"}}}});
    let resp = request(
        &es,
        "PUT",
        "/_template/old",
        &[json_ct],
        legacy.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(es.legacy_template("old"), Some(legacy));
    bulk(
        &es,
        "/old-1/_bulk",
        &ndjson(&[json!({"index": {}}), json!({"n": 5})]),
    );
    assert_eq!(es.field_type("old-1", "n").as_deref(), Some("keyword"));
}

#[test]
fn filter_path_pretty_and_pipelines_behave_as_in_elasticsearch() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let body = ndjson(&[
        json!({"create": {"_index": "a", "_id": "1"}}),
        json!({"m": 1}),
        json!({"create": {"_index": "a", "_id": "1"}}),
        json!({"m": 1}),
    ]);
    let v = bulk(
        &es,
        "/_bulk?filter_path=errors,items.*.error.type,items.*.status",
        &body,
    )
    .json();
    assert_eq!(
        v,
        json!({"errors": true, "items": [
            {"create": {"status": 201}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}}
        ]})
    );
    let resp = bulk(&es, "/_bulk?pretty", &body);
    assert!(resp.text().contains("\n  \"errors\": true"));

    let v = bulk(
        &es,
        "/_bulk?pipeline=geoip",
        &ndjson(&[json!({"create": {"_index": "b"}}), json!({})]),
    )
    .json();
    assert_eq!(
        item(&v, 0)["error"]["reason"],
        "pipeline with id [geoip] does not exist"
    );
    let json_ct = ("Content-Type", "application/json");
    let pipeline = json!({"processors": []}).to_string();
    assert_eq!(
        request(
            &es,
            "PUT",
            "/_ingest/pipeline/geoip",
            &[json_ct],
            pipeline.as_bytes()
        )
        .status,
        200
    );
    let v = bulk(
        &es,
        "/_bulk?pipeline=geoip",
        &ndjson(&[json!({"create": {"_index": "b"}}), json!({})]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 201);

    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[json!({"create": {"_index": "Logs"}}), json!({})]),
    )
    .json();
    assert_eq!(item(&v, 0)["error"]["type"], "invalid_index_name_exception");
    assert_eq!(
        item(&v, 0)["error"]["reason"],
        "Invalid index name [Logs], must be lowercase"
    );
}

#[test]
fn a_delay_holds_every_answer() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    // Long enough that a loaded machine's own slowness cannot pass for it.
    const DELAY: Duration = Duration::from_secs(2);
    es.set_delay(DELAY);
    let started = Instant::now();
    assert_eq!(request(&es, "GET", "/", &[], b"").status, 200);
    assert!(started.elapsed() >= DELAY);
    es.clear_faults();
    let started = Instant::now();
    request(&es, "GET", "/", &[], b"");
    assert!(started.elapsed() < DELAY, "the delay was cleared");
}

#[test]
fn the_total_fields_limit_rejects_documents_that_would_pass_it() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.set_total_fields_limit(5);
    let v = bulk(
        &es,
        "/_bulk",
        &ndjson(&[
            json!({"create": {"_index": "a", "_id": "1"}}),
            json!({"a": "x", "b": "y"}),
            json!({"create": {"_index": "a", "_id": "2"}}),
            json!({"c": "z"}),
            json!({"create": {"_index": "a", "_id": "3"}}),
            json!({"d": 1}),
        ]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 201);
    assert_eq!(
        item(&v, 1)["error"]["reason"],
        "Limit of total fields [5] has been exceeded while adding new fields [2]"
    );
    assert_eq!(item(&v, 2)["status"], 201);
    assert_eq!(es.field_count("a"), Some(5));
}

#[test]
fn updates_merge_upsert_and_report_noops() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    let v = bulk(
        &es,
        "/app/_bulk",
        &ndjson(&[
            json!({"update": {"_id": "u"}}),
            json!({"doc": {"a": 1}}),
            json!({"update": {"_id": "u"}}),
            json!({"doc": {"a": 1}, "doc_as_upsert": true}),
            json!({"update": {"_id": "u"}}),
            json!({"doc": {"a": 1}}),
            json!({"update": {"_id": "u"}}),
            json!({"doc": {"b": {"c": 2}}}),
        ]),
    )
    .json();
    let missing = item(&v, 0);
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"]["type"], "document_missing_exception");
    assert_eq!(missing["error"]["reason"], "[u]: document missing");
    assert_eq!(item(&v, 1)["result"], "created");
    assert_eq!(item(&v, 2)["result"], "noop");
    assert_eq!(item(&v, 2)["_version"], 1);
    assert_eq!(item(&v, 3)["result"], "updated");
    assert_eq!(item(&v, 3)["_version"], 2);
    assert_eq!(
        es.document("app", "u"),
        Some(json!({"a": 1, "b": {"c": 2}}))
    );

    let resp = bulk(&es, "/app/_bulk", "{\"update\":{}}\n{\"doc\":{}}\n");
    assert_eq!(
        resp.json()["error"]["reason"],
        "Validation Failed: 1: id is missing;"
    );
}

#[test]
fn a_strict_template_refuses_unknown_fields() {
    let es = TestEs::start(Flavor::Elasticsearch7);
    let template = json!({
        "index_patterns": ["strict-*"],
        "template": {"mappings": {
            "dynamic": "strict",
            "properties": {"message": {"type": "text"}, "labels": {"type": "object", "dynamic": true}}
        }}
    });
    let resp = request(
        &es,
        "PUT",
        "/_index_template/strict",
        &[("Content-Type", "application/json")],
        template.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = bulk(
        &es,
        "/strict-1/_bulk",
        &ndjson(&[
            json!({"index": {}}),
            json!({"message": "ok", "labels": {"app": "web"}}),
            json!({"index": {}}),
            json!({"message": "no", "extra": 1}),
        ]),
    )
    .json();
    assert_eq!(item(&v, 0)["status"], 201);
    let refused = item(&v, 1);
    assert_eq!(refused["error"]["type"], "strict_dynamic_mapping_exception");
    assert_eq!(
        refused["error"]["reason"],
        "mapping set to strict, dynamic introduction of [extra] within [_doc] is not allowed"
    );
}

#[test]
fn concurrent_clients_that_retry_what_failed_store_every_document_once() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    es.reject_items(ItemRule::FirstAttempts(1), 429);
    es.reject_items(ItemRule::EveryKth(7), 503);
    es.fail_next(5, 503);
    let addr = es.addr();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).unwrap();
                for batch in 0..10 {
                    let mut pending: Vec<String> =
                        (0..20).map(|i| format!("w{w}-b{batch}-{i}")).collect();
                    let mut attempts = 0;
                    while !pending.is_empty() {
                        attempts += 1;
                        assert!(attempts < 20, "no progress for {pending:?}");
                        let mut lines = Vec::new();
                        for id in &pending {
                            lines.push(json!({"create": {"_index": "logs", "_id": id}}));
                            lines.push(json!({"message": id}));
                        }
                        let resp = client
                            .send("POST", "/_bulk", &[NDJSON], ndjson(&lines).as_bytes())
                            .unwrap();
                        if resp.status != 200 {
                            continue;
                        }
                        let v = resp.json();
                        pending = pending
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| {
                                let status = item(&v, *i)["status"].as_u64().unwrap();
                                status == 429 || status >= 500
                            })
                            .map(|(_, id)| id.clone())
                            .collect();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let docs = es.documents("logs");
    assert_eq!(docs.len(), 800);
    assert_eq!(es.doc_count(), 800);
    for (id, doc) in docs {
        assert_eq!(doc, json!({"message": id}));
    }
    assert_eq!(es.item_status_counts().get(&201), Some(&800));
}
