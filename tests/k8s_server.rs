//! The test Kubernetes API server answers as kube-apiserver does: raw HTTP tests check the wire
//! format (lists, chunked watch streams, Status objects, headers) and the real kube-rs client and
//! watcher are driven against it through the faults an agent must survive.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, ResourceExt};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use support::kubernetes::{container_id, namespace, pod, Target, TestKube};

// ---- a small HTTP/1.1 client on std sockets, so chunking and cut connections are seen as sent ----

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn send_request(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        req.push_str("Accept: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send request");
    BufReader::new(stream)
}

fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// One chunk of a chunked body; `Ok(None)` for the terminating chunk.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-body",
        ));
    }
    let size = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}")))?;
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data)?;
    data.truncate(size);
    Ok((size > 0).then_some(data))
}

fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut reader = send_request(addr, target, headers);
    let (status, headers) = read_head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = read_chunk(&mut reader).expect("chunk") {
            body.extend(c);
        }
    } else {
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        body.resize(len, 0);
        reader.read_exact(&mut body).expect("body");
    }
    Response {
        status,
        headers,
        body,
    }
}

fn get(addr: SocketAddr, target: &str) -> Response {
    get_with(addr, target, &[])
}

/// An open watch, read event by event.
struct Watch {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    pending: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Next {
    Event(Value),
    /// The terminating chunk: the server ended the watch.
    End,
    /// The connection closed without the terminating chunk.
    Cut,
    Silent,
}

impl Watch {
    fn open(addr: SocketAddr, target: &str) -> Watch {
        let mut reader = send_request(addr, target, &[]);
        let (status, headers) = read_head(&mut reader);
        Watch {
            reader,
            status,
            headers,
            pending: Vec::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn next(&mut self, timeout: Duration) -> Next {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Next::Event(
                    serde_json::from_slice(&line).expect("an event is one JSON line"),
                );
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(timeout))
                .unwrap();
            match read_chunk(&mut self.reader) {
                Ok(Some(data)) => self.pending.extend(data),
                Ok(None) => return Next::End,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Silent
                }
                Err(_) => return Next::Cut,
            }
        }
    }

    fn event(&mut self) -> Value {
        match self.next(Duration::from_secs(5)) {
            Next::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event that is not a BOOKMARK.
    fn change(&mut self) -> Value {
        loop {
            let e = self.event();
            if e["type"] != "BOOKMARK" {
                return e;
            }
        }
    }
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

// ---- wire format ----

#[test]
fn discovery_and_version_answer_as_kube_apiserver_does() {
    let kube = TestKube::start();
    let version = get(kube.addr(), "/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.json()["major"], "1");
    assert!(version.json()["gitVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1."));
    assert!(version.header("audit-id").is_some());
    assert_eq!(version.header("cache-control"), Some("no-cache, private"));

    let api = get(kube.addr(), "/api").json();
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"][0], "v1");

    let resources = get(kube.addr(), "/api/v1").json();
    assert_eq!(resources["kind"], "APIResourceList");
    let pods = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods in discovery");
    assert_eq!(pods["namespaced"], true);
    assert!(pods["verbs"].as_array().unwrap().contains(&"watch".into()));

    let missing = get(kube.addr(), "/api/v1/services");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["kind"], "Status");
    assert_eq!(missing.json()["reason"], "NotFound");
    let nowhere = get(kube.addr(), "/nowhere");
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.text(), "404 page not found\n");
}

#[test]
fn a_pod_list_is_a_podlist_at_the_cluster_version_with_bare_items() {
    let kube = TestKube::start();
    kube.create_pod(
        pod("shop", "web-7d4b9-x2x4k", "node-1")
            .replica_set("web-7d4b9")
            .build(),
    );
    let last = kube.create_pod(pod("shop", "db-0", "node-2").stateful_set("db").build());

    let resp = get(
        kube.addr(),
        "/api/v1/pods?resourceVersion=0&resourceVersionMatch=NotOlderThan&limit=500",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(
        resp.body.ends_with(b"}\n"),
        "Go's encoder ends the body with a newline"
    );
    let list = resp.json();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(rv_of(&list), rv_of(&last));
    assert!(
        list["metadata"].get("continue").is_none(),
        "resourceVersion=0 ignores limit"
    );
    assert_eq!(names(&list), ["db-0", "web-7d4b9-x2x4k"], "etcd key order");
    let item = &list["items"][1];
    assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
    assert_eq!(item["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(item["metadata"]["ownerReferences"][0]["name"], "web-7d4b9");
    assert_eq!(item["metadata"]["labels"]["app.kubernetes.io/name"], "web");
    assert_eq!(item["metadata"]["labels"]["pod-template-hash"], "7d4b9");
    assert!(item["metadata"]["managedFields"].as_array().unwrap().len() >= 2);
    let id = container_id("shop", "web-7d4b9-x2x4k", "web");
    assert_eq!(id.len(), 64);
    assert_eq!(
        item["status"]["containerStatuses"][0]["containerID"],
        format!("containerd://{id}")
    );
    assert_eq!(item["spec"]["nodeName"], "node-1");

    let namespaces = get(kube.addr(), "/api/v1/namespaces").json();
    assert_eq!(namespaces["kind"], "NamespaceList");
    assert_eq!(
        names(&namespaces),
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert_eq!(
        namespaces["items"][0]["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "default"
    );
}

#[test]
fn pages_continue_from_a_consistent_snapshot_and_count_what_remains() {
    let kube = TestKube::start();
    for i in 0..5 {
        kube.create_pod(pod("shop", &format!("web-{i}"), "node-1").build());
    }
    let first = get(kube.addr(), "/api/v1/namespaces/shop/pods?limit=2").json();
    assert_eq!(names(&first), ["web-0", "web-1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // The page after a change still shows the list as it was when it began.
    kube.set_pod_label("shop", "web-2", "tier", Some("front"));
    kube.delete_pod("shop", "web-3");
    let second = get(
        kube.addr(),
        &format!("/api/v1/namespaces/shop/pods?limit=2&continue={token}"),
    )
    .json();
    assert_eq!(names(&second), ["web-2", "web-3"]);
    assert!(second["items"][0]["metadata"]["labels"]
        .get("tier")
        .is_none());
    assert_eq!(rv_of(&second), rv_of(&first));
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let third = get(
        kube.addr(),
        &format!("/api/v1/namespaces/shop/pods?limit=2&continue={token}"),
    )
    .json();
    assert_eq!(names(&third), ["web-4"]);
    assert!(third["metadata"].get("continue").is_none());

    // With a selector the server cannot know how many remain.
    let filtered = get(kube.addr(), "/api/v1/pods?limit=1&labelSelector=app%3Dweb").json();
    assert!(filtered["metadata"]["continue"].is_string());
    assert!(filtered["metadata"].get("remainingItemCount").is_none());
}

#[test]
fn a_continue_token_older_than_the_compaction_is_410_with_a_token_that_goes_on() {
    let kube = TestKube::start();
    for i in 0..4 {
        kube.create_pod(pod("shop", &format!("web-{i}"), "node-1").build());
    }
    let first = get(kube.addr(), "/api/v1/pods?limit=2").json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    kube.create_pod(pod("shop", "web-9", "node-1").build());
    kube.compact();
    let gone = get(
        kube.addr(),
        &format!("/api/v1/pods?limit=2&continue={token}"),
    );
    assert_eq!(gone.status, 410);
    let status = gone.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["code"], 410);
    assert!(status["message"]
        .as_str()
        .unwrap()
        .starts_with("The provided continue parameter is too old"));
    let fresh = status["metadata"]["continue"].as_str().unwrap();
    let rest = get(
        kube.addr(),
        &format!("/api/v1/pods?limit=10&continue={fresh}"),
    )
    .json();
    assert_eq!(
        names(&rest),
        ["web-2", "web-3", "web-9"],
        "continues at the latest version"
    );

    let exact = get(
        kube.addr(),
        &format!(
            "/api/v1/pods?resourceVersion={}&resourceVersionMatch=Exact",
            rv_of(&first)
        ),
    );
    assert_eq!(exact.status, 410);
    assert_eq!(
        exact.json()["message"],
        "The resourceVersion for the provided list is too old."
    );
}

#[test]
fn an_exact_list_shows_the_cluster_as_it_was() {
    let kube = TestKube::start();
    let a = kube.create_pod(pod("shop", "web-a", "node-1").build());
    kube.set_pod_label("shop", "web-a", "version", Some("2"));
    kube.create_pod(pod("shop", "web-b", "node-1").build());
    let then = get(
        kube.addr(),
        &format!(
            "/api/v1/pods?resourceVersion={}&resourceVersionMatch=Exact",
            rv_of(&a)
        ),
    )
    .json();
    assert_eq!(names(&then), ["web-a"]);
    assert!(then["items"][0]["metadata"]["labels"]
        .get("version")
        .is_none());
    assert_eq!(rv_of(&then), rv_of(&a));
}

#[test]
fn selectors_filter_lists_and_unsupported_fields_are_refused() {
    let kube = TestKube::start();
    kube.create_pod(
        pod("shop", "web-1", "node-1")
            .label("tier", "front")
            .build(),
    );
    kube.create_pod(
        pod("shop", "web-2", "node-2")
            .label("tier", "front")
            .build(),
    );
    kube.create_pod(pod("ops", "agent-1", "node-1").daemon_set("agent").build());
    let on_node = get(
        kube.addr(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
    )
    .json();
    assert_eq!(names(&on_node), ["agent-1", "web-1"]);
    let both = get(
        kube.addr(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1,metadata.namespace!%3Dops&labelSelector=tier+in+(front,back),app.kubernetes.io/name",
    )
    .json();
    assert_eq!(names(&both), ["web-1"]);
    let bad = get(kube.addr(), "/api/v1/pods?fieldSelector=spec.foo%3Dbar");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["reason"], "BadRequest");
    assert_eq!(bad.json()["message"], "field label not supported: spec.foo");
    let bad_labels = get(kube.addr(), "/api/v1/pods?labelSelector=app+in+(a");
    assert_eq!(bad_labels.status, 400);
}

#[test]
fn invalid_list_options_are_422_as_validation_words_them() {
    let kube = TestKube::start();
    let resp = get(
        kube.addr(),
        "/api/v1/pods?watch=true&resourceVersionMatch=NotOlderThan",
    );
    assert_eq!(resp.status, 422);
    let s = resp.json();
    assert_eq!(s["reason"], "Invalid");
    assert_eq!(s["details"]["kind"], "ListOptions");
    assert_eq!(
        s["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
    );
    let exact0 = get(
        kube.addr(),
        "/api/v1/pods?resourceVersion=0&resourceVersionMatch=Exact",
    );
    assert_eq!(exact0.status, 422);
}

#[test]
fn a_watch_streams_one_json_event_per_line_in_chunks() {
    let kube = TestKube::start();
    let list = get(kube.addr(), "/api/v1/pods").json();
    let mut w = Watch::open(
        kube.addr(),
        &format!(
            "/api/v1/pods?watch=true&resourceVersion={}&timeoutSeconds=30",
            rv_of(&list)
        ),
    );
    assert_eq!(w.status, 200);
    assert_eq!(w.header("content-type"), Some("application/json"));
    assert_eq!(w.header("transfer-encoding"), Some("chunked"));

    let created = kube.create_pod(pod("shop", "web-1", "node-1").build());
    let added = w.event();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(
        added["object"]["kind"], "Pod",
        "watch objects carry their kind"
    );
    assert_eq!(added["object"]["apiVersion"], "v1");
    assert_eq!(rv_of(&added["object"]), rv_of(&created));

    kube.set_pod_label("shop", "web-1", "tier", Some("front"));
    let modified = w.event();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["metadata"]["labels"]["tier"], "front");

    let deleted_at = kube.delete_pod("shop", "web-1");
    let deleted = w.event();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(rv_of(&deleted["object"]), rv_of(&deleted_at));
    assert!(rv_of(&deleted["object"]) > rv_of(&modified["object"]));
    assert_eq!(w.next(Duration::from_millis(200)), Next::Silent);
}

#[test]
fn a_watch_from_version_zero_starts_with_the_current_state() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    kube.create_pod(pod("shop", "web-2", "node-2").build());
    let mut w = Watch::open(
        kube.addr(),
        "/api/v1/pods?watch=1&resourceVersion=0&fieldSelector=spec.nodeName%3Dnode-2",
    );
    let e = w.event();
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["metadata"]["name"], "web-2");
    assert_eq!(w.next(Duration::from_millis(200)), Next::Silent);
}

#[test]
fn a_watch_from_before_the_compaction_gets_410_as_an_error_event() {
    let kube = TestKube::start();
    let old = kube.resource_version();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    kube.compact();
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={old}"),
    );
    assert_eq!(w.status, 200, "the apiserver answers 410 inside the stream");
    let e = w.event();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert_eq!(
        e["object"]["message"],
        format!(
            "too old resource version: {old} ({})",
            kube.oldest_resource_version()
        )
    );
    assert_eq!(w.next(Duration::from_secs(2)), Next::End);
}

#[test]
fn a_compaction_leaves_open_watches_alone() {
    let kube = TestKube::start();
    let rv = kube.resource_version();
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
    );
    assert!(kube.wait_for_open_watches(1, Duration::from_secs(5)));
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    kube.compact();
    kube.create_pod(pod("shop", "web-2", "node-1").build());
    assert_eq!(w.event()["object"]["metadata"]["name"], "web-1");
    assert_eq!(w.event()["object"]["metadata"]["name"], "web-2");
}

#[test]
fn a_bounded_history_expires_old_versions_too() {
    let kube = TestKube::start();
    kube.set_history_limit(3);
    let start = kube.resource_version();
    for i in 0..5 {
        kube.create_pod(pod("shop", &format!("web-{i}"), "node-1").build());
    }
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={start}"),
    );
    assert_eq!(w.event()["object"]["code"], 410);
    let recent = kube.oldest_resource_version();
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={recent}"),
    );
    for i in 2..5 {
        assert_eq!(w.event()["object"]["metadata"]["name"], format!("web-{i}"));
    }
}

#[test]
fn bookmarks_come_only_when_allowed_and_carry_the_cluster_version() {
    let kube = TestKube::start();
    let rv = kube.resource_version();
    let mut with = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dnode-1"),
    );
    let mut without = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
    );
    assert!(kube.wait_for_open_watches(2, Duration::from_secs(5)));
    kube.create_namespace(namespace("shop").label("team", "payments").build());
    kube.create_pod(pod("shop", "web-1", "node-2").build());
    kube.send_bookmarks();
    let b = with.event();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["kind"], "Pod");
    assert!(b["object"]["metadata"].get("name").is_none());
    assert_eq!(
        rv_of(&b["object"]),
        kube.resource_version(),
        "a bookmark moves a filtered watch on"
    );
    assert_eq!(without.change()["object"]["metadata"]["name"], "web-1");
    assert_eq!(without.next(Duration::from_millis(300)), Next::Silent);

    kube.set_bookmark_interval(Duration::from_millis(100));
    let mut periodic = Watch::open(
        kube.addr(),
        "/api/v1/namespaces?watch=true&resourceVersion=0&allowWatchBookmarks=true",
    );
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen < 2 && Instant::now() < deadline {
        if let Next::Event(e) = periodic.next(Duration::from_secs(1)) {
            if e["type"] == "BOOKMARK" {
                assert_eq!(e["object"]["kind"], "Namespace");
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 2, "bookmarks every interval");
}

#[test]
fn timeout_seconds_ends_the_stream_cleanly() {
    let kube = TestKube::start();
    let started = Instant::now();
    let mut w = Watch::open(
        kube.addr(),
        "/api/v1/pods?watch=true&resourceVersion=0&timeoutSeconds=1",
    );
    assert_eq!(w.next(Duration::from_secs(5)), Next::End);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_pod_bound_to_the_node_arrives_as_added_and_one_leaving_the_selection_as_deleted() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "").build());
    let rv = kube.resource_version();
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dnode-1&labelSelector=tier%3Dfront"),
    );
    kube.update_pod("shop", "web-1", |p| {
        p["spec"]["nodeName"] = "node-1".into();
        p["metadata"]["labels"]["tier"] = "front".into();
    });
    assert_eq!(w.event()["type"], "ADDED");
    let dropped = kube.set_pod_label("shop", "web-1", "tier", Some("back"));
    let e = w.event();
    assert_eq!(e["type"], "DELETED");
    assert_eq!(
        e["object"]["metadata"]["labels"]["tier"], "front",
        "the last state it matched in"
    );
    assert_eq!(rv_of(&e["object"]), rv_of(&dropped));
}

#[test]
fn send_initial_events_ends_the_initial_state_with_an_annotated_bookmark() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    let mut w = Watch::open(
        kube.addr(),
        "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=",
    );
    assert_eq!(w.event()["type"], "ADDED");
    let end = w.event();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(rv_of(&end["object"]), kube.resource_version());
    kube.create_pod(pod("shop", "web-2", "node-1").build());
    assert_eq!(w.change()["object"]["metadata"]["name"], "web-2");

    kube.set_watch_list(false);
    let refused = get(
        kube.addr(),
        "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
    );
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.json()["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
    );
}

#[test]
fn a_watch_at_a_future_version_times_out_with_504() {
    let kube = TestKube::start();
    let future = kube.resource_version() + 10;
    let started = Instant::now();
    let mut w = Watch::open(
        kube.addr(),
        &format!("/api/v1/pods?watch=true&resourceVersion={future}"),
    );
    let e = w.event();
    assert!(started.elapsed() >= Duration::from_millis(2900));
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 504);
    assert_eq!(
        e["object"]["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
}

#[test]
fn get_by_name_and_not_found() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").job("backup-29001").build());
    let p = get(kube.addr(), "/api/v1/namespaces/shop/pods/web-1").json();
    assert_eq!(p["kind"], "Pod");
    assert_eq!(
        p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "backup-29001"
    );
    let ns = get(kube.addr(), "/api/v1/namespaces/kube-system").json();
    assert_eq!(ns["kind"], "Namespace");
    let missing = get(kube.addr(), "/api/v1/namespaces/shop/pods/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "pods \"nope\" not found");
    assert_eq!(missing.json()["details"]["kind"], "pods");
    assert_eq!(kube.get_requests().len(), 3);
}

#[test]
fn metadata_only_clients_get_partial_object_metadata() {
    let kube = TestKube::start();
    kube.create_namespace(namespace("shop").label("team", "payments").build());
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let list = get_with(kube.addr(), "/api/v1/namespaces", &[("Accept", accept)]).json();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let shop = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "shop")
        .unwrap();
    assert_eq!(shop["kind"], "PartialObjectMetadata");
    assert_eq!(shop["metadata"]["labels"]["team"], "payments");
    assert!(shop.get("spec").is_none() && shop.get("status").is_none());
}

#[test]
fn a_token_is_required_once_set_and_refused_with_a_401_status() {
    let kube = TestKube::start();
    kube.require_token("s3cret");
    let anonymous = get(kube.addr(), "/api/v1/pods");
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.json(),
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    let wrong = get_with(
        kube.addr(),
        "/api/v1/pods",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.status, 401);
    let right = get_with(
        kube.addr(),
        "/api/v1/pods",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(right.status, 200);
    // A rotation: the old token stops working once only the new one is required.
    kube.require_token("n3w");
    assert_eq!(
        get_with(
            kube.addr(),
            "/api/v1/pods",
            &[("Authorization", "Bearer s3cret")]
        )
        .status,
        401
    );
    assert_eq!(
        kube.requests()[1].authorization.as_deref(),
        Some("Bearer nope")
    );
}

#[test]
fn a_forbidden_resource_is_403_naming_the_user_and_the_verb() {
    let kube = TestKube::start();
    kube.forbid("namespaces");
    let resp = get(kube.addr(), "/api/v1/namespaces?watch=true");
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json()["message"],
        "namespaces is forbidden: User \"system:serviceaccount:kube-system:logship\" cannot watch resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    assert_eq!(get(kube.addr(), "/api/v1/pods").status, 200);
    kube.permit("namespaces");
    assert_eq!(get(kube.addr(), "/api/v1/namespaces").status, 200);
}

#[test]
fn injected_statuses_answer_as_the_apiserver_and_then_stop() {
    let kube = TestKube::start();
    kube.fail_next(1, 429);
    let throttled = get(kube.addr(), "/api/v1/pods");
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("1"));
    assert_eq!(
        throttled.text(),
        "Too many requests, please try again later.\n"
    );
    kube.fail_next_for(Target::Lists, 1, 503, Some(3));
    let watch_first = get(kube.addr(), "/api/v1/pods?watch=true&timeoutSeconds=1");
    assert_eq!(
        watch_first.status, 200,
        "a fault for lists leaves watches alone"
    );
    let unavailable = get(kube.addr(), "/api/v1/pods");
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.header("retry-after"), Some("3"));
    assert_eq!(unavailable.json()["reason"], "ServiceUnavailable");
    kube.fail_next(1, 500);
    let internal = get(kube.addr(), "/api/v1/pods");
    assert_eq!(internal.status, 500);
    assert_eq!(internal.json()["reason"], "InternalError");
    assert_eq!(get(kube.addr(), "/api/v1/pods").status, 200);

    kube.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(get(kube.addr(), "/version").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn closed_watches_end_cleanly_and_cut_ones_do_not() {
    let kube = TestKube::start();
    let mut a = Watch::open(kube.addr(), "/api/v1/pods?watch=true&resourceVersion=0&sendInitialEvents=false&resourceVersionMatch=NotOlderThan");
    let mut b = Watch::open(
        kube.addr(),
        "/api/v1/namespaces/shop/pods?watch=true&resourceVersion=0",
    );
    assert!(kube.wait_for_open_watches(2, Duration::from_secs(5)));
    kube.close_watches();
    assert_eq!(a.next(Duration::from_secs(5)), Next::End);
    assert_eq!(b.next(Duration::from_secs(5)), Next::End);
    assert!(kube.wait_for_open_watches(0, Duration::from_secs(5)));

    let mut c = Watch::open(kube.addr(), "/api/v1/pods?watch=true&resourceVersion=0");
    assert!(kube.wait_for_open_watches(1, Duration::from_secs(5)));
    kube.cut_watches();
    assert_eq!(c.next(Duration::from_secs(5)), Next::Cut);
}

#[test]
fn down_refuses_connections_and_up_serves_the_same_cluster_on_the_same_port() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    let mut w = Watch::open(kube.addr(), "/api/v1/pods?watch=true&resourceVersion=0");
    assert_eq!(w.event()["type"], "ADDED");
    kube.down();
    assert!(!kube.is_up());
    assert!(matches!(
        w.next(Duration::from_secs(5)),
        Next::Cut | Next::End
    ));
    assert!(TcpStream::connect_timeout(&kube.addr(), Duration::from_secs(1)).is_err());
    kube.up();
    assert_eq!(names(&get(kube.addr(), "/api/v1/pods").json()), ["web-1"]);
}

#[test]
fn every_request_is_recorded_with_its_verb() {
    let kube = TestKube::start();
    get(kube.addr(), "/version");
    get(
        kube.addr(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1",
    );
    get(kube.addr(), "/api/v1/watch/namespaces?timeoutSeconds=1");
    get(kube.addr(), "/api/v1/namespaces/default");
    assert_eq!(kube.request_count(), 4);
    let lists = kube.list_requests();
    assert_eq!(lists.len(), 1);
    assert_eq!(
        lists[0].param("fieldSelector").as_deref(),
        Some("spec.nodeName=node-1")
    );
    assert_eq!(kube.watch_requests().len(), 1);
    assert_eq!(kube.watch_requests()[0].status, Some(200));
    assert_eq!(kube.get_requests().len(), 1);
    assert_eq!(kube.requests_for("/api/v1/namespaces").len(), 1);
}

// ---- driven by kube-rs ----

async fn client_for(kube: &TestKube, token: Option<&str>) -> kube::Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path, token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config from kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// The next event of a watcher, skipping (and collecting) errors.
async fn next_event<S>(stream: &mut S, errors: &mut Vec<watcher::Error>) -> Event<Pod>
where
    S: Stream<Item = watcher::Result<Event<Pod>>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(e))) => return e,
            Ok(Some(Err(e))) => {
                errors.push(e);
                // The raw watcher retries at once; a real caller backs off.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => panic!("the watcher ended"),
            Err(_) => panic!("no watcher event within 10 s"),
        }
    }
}

/// The names of an initial listing: Init, InitApply..., InitDone.
async fn initial_listing<S>(stream: &mut S, errors: &mut Vec<watcher::Error>) -> Vec<String>
where
    S: Stream<Item = watcher::Result<Event<Pod>>> + Unpin,
{
    assert!(matches!(next_event(stream, errors).await, Event::Init));
    let mut names = Vec::new();
    loop {
        match next_event(stream, errors).await {
            Event::InitApply(p) => names.push(p.name_any()),
            Event::InitDone => return names,
            other => panic!("unexpected {other:?} in the initial listing"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_follows_its_nodes_pods_through_410_and_closed_watches() {
    let kube = TestKube::start();
    kube.require_token("agent-token");
    kube.create_pod(
        pod("shop", "web-7d4b9-aaaaa", "node-1")
            .replica_set("web-7d4b9")
            .build(),
    );
    kube.create_pod(pod("shop", "db-0", "node-1").stateful_set("db").build());
    kube.create_pod(
        pod("shop", "web-7d4b9-bbbbb", "node-2")
            .replica_set("web-7d4b9")
            .build(),
    );
    let client = client_for(&kube, Some("agent-token")).await;
    let pods: Api<Pod> = Api::all(client);
    // kube 5 leaves `resourceVersion=0` out of a list that has a limit (the watch cache would
    // ignore the limit), so a cached list needs no page size.
    let mut config = watcher::Config::default()
        .fields("spec.nodeName=node-1")
        .any_semantic();
    config.page_size = None;
    let mut stream = watcher::watcher(pods, config).boxed();
    let mut errors = Vec::new();

    let mut initial = initial_listing(&mut stream, &mut errors).await;
    initial.sort();
    assert_eq!(initial, ["db-0", "web-7d4b9-aaaaa"]);
    let list = &kube.list_requests()[0];
    assert_eq!(list.param("resourceVersion").as_deref(), Some("0"));
    assert_eq!(
        list.param("fieldSelector").as_deref(),
        Some("spec.nodeName=node-1")
    );
    assert_eq!(list.authorization.as_deref(), Some("Bearer agent-token"));

    kube.create_pod(
        pod("shop", "web-7d4b9-ccccc", "node-1")
            .replica_set("web-7d4b9")
            .build(),
    );
    match next_event(&mut stream, &mut errors).await {
        Event::Apply(p) => assert_eq!(p.name_any(), "web-7d4b9-ccccc"),
        other => panic!("expected the new pod, got {other:?}"),
    }
    kube.set_pod_label(
        "shop",
        "web-7d4b9-ccccc",
        "app.kubernetes.io/version",
        Some("2.0"),
    );
    match next_event(&mut stream, &mut errors).await {
        Event::Apply(p) => assert_eq!(p.labels()["app.kubernetes.io/version"], "2.0"),
        other => panic!("expected the relabelled pod, got {other:?}"),
    }
    kube.delete_pod("shop", "db-0");
    match next_event(&mut stream, &mut errors).await {
        Event::Delete(p) => assert_eq!(p.name_any(), "db-0"),
        other => panic!("expected the deletion, got {other:?}"),
    }
    assert!(errors.is_empty(), "{errors:?}");

    // A closed watch: the watcher watches again from where it was, without listing.
    let watches_before = kube.watch_requests().len();
    kube.close_watches();
    kube.set_pod_annotation(
        "shop",
        "web-7d4b9-aaaaa",
        "logship.io/exclude",
        Some("true"),
    );
    match next_event(&mut stream, &mut errors).await {
        Event::Apply(p) => assert_eq!(p.annotations()["logship.io/exclude"], "true"),
        other => panic!("expected the annotated pod, got {other:?}"),
    }
    assert_eq!(kube.list_requests().len(), 1);
    assert_eq!(kube.watch_requests().len(), watches_before + 1);

    // History compacted past the watcher's version, then its watch ends: 410, and a re-list.
    kube.create_pod(pod("other", "noise-1", "node-2").build());
    kube.compact();
    kube.close_watches();
    let mut relisted = initial_listing(&mut stream, &mut errors).await;
    relisted.sort();
    assert_eq!(relisted, ["web-7d4b9-aaaaa", "web-7d4b9-ccccc"]);
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, watcher::Error::WatchError(s) if s.code == 410)),
        "{errors:?}"
    );
    assert_eq!(kube.list_requests().len(), 2);
    assert!(
        kube.get_requests().is_empty(),
        "a watcher never GETs pods one by one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_paginates_a_consistent_list_with_continue_tokens() {
    let kube = TestKube::start();
    for i in 0..200 {
        kube.create_pod(pod("shop", &format!("web-{i:03}"), "node-1").build());
    }
    let client = client_for(&kube, None).await;
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .fields("spec.nodeName=node-1")
        .page_size(64);
    let mut stream = watcher::watcher(pods, config).boxed();
    let mut errors = Vec::new();
    let names = initial_listing(&mut stream, &mut errors).await;
    assert_eq!(names.len(), 200);
    // The watch starts on the next poll; nothing arrives on it.
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(
        quiet.is_err(),
        "{:?}",
        quiet.map(|e| e.map(|e| e.map(|_| ())))
    );
    let lists = kube.list_requests();
    assert_eq!(lists.len(), 4, "200 pods in pages of 64");
    assert!(lists[0].param("continue").is_none());
    assert!(lists[1..].iter().all(|r| r.param("continue").is_some()));
    assert!(kube.wait_for_open_watches(1, Duration::from_secs(5)));
    let watch = &kube.watch_requests()[0];
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(
        watch.param("resourceVersion"),
        Some(kube.resource_version().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_streaming_lists_work_and_api_errors_reach_the_client() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    let client = client_for(&kube, None).await;
    let pods: Api<Pod> = Api::all(client.clone());
    let mut stream =
        watcher::watcher(pods.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut errors = Vec::new();
    assert_eq!(initial_listing(&mut stream, &mut errors).await, ["web-1"]);
    assert!(
        kube.list_requests().is_empty(),
        "the initial state came over the watch"
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces
        .get("kube-system")
        .await
        .expect("GET a namespace");
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "kube-system");
    let missing = Api::<Pod>::namespaced(client.clone(), "shop")
        .get("nope")
        .await;
    assert!(matches!(missing, Err(kube::Error::Api(s)) if s.code == 404 && s.reason == "NotFound"));
    kube.forbid("pods");
    let forbidden = pods.list(&ListParams::default()).await;
    assert!(matches!(forbidden, Err(kube::Error::Api(s)) if s.code == 403));
    kube.permit("pods");
    // kube's default retry layer honours the flow-control filter's Retry-After.
    let lists_before = kube.list_requests().len();
    kube.fail_next(1, 429);
    let started = Instant::now();
    pods.list(&ListParams::default())
        .await
        .expect("retried after the 429");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After: 1"
    );
    assert_eq!(kube.list_requests().len(), lists_before + 2);
    assert_eq!(kube.list_requests()[lists_before].status, Some(429));
    kube.require_token("t");
    let unauthorized = pods.list(&ListParams::default()).await;
    assert!(matches!(unauthorized, Err(kube::Error::Api(s)) if s.code == 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_metadata_watcher_follows_namespace_labels() {
    let kube = TestKube::start();
    kube.create_namespace(namespace("shop").label("team", "payments").build());
    let client = client_for(&kube, None).await;
    // kube 5 asks for metadata only when the Api is over `PartialObjectMeta`.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    let mut stream = watcher::watcher(namespaces, config).boxed();
    let mut next = async || match tokio::time::timeout(Duration::from_secs(10), stream.next()).await
    {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watcher error {e:?}"),
        _ => panic!("no namespace event within 10 s"),
    };
    assert!(matches!(next().await, Event::Init));
    let mut seen: Vec<PartialObjectMeta<Namespace>> = Vec::new();
    loop {
        match next().await {
            Event::InitApply(ns) => seen.push(ns),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen.len(), 5);
    let shop = seen.iter().find(|n| n.name_any() == "shop").unwrap();
    assert_eq!(shop.labels()["team"], "payments");
    assert_eq!(
        kube.list_requests()[0].accept.as_deref(),
        Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
    );

    kube.set_namespace_label("shop", "team", Some("checkout"));
    match next().await {
        Event::Apply(ns) => assert_eq!(ns.labels()["team"], "checkout"),
        other => panic!("expected the relabelled namespace, got {other:?}"),
    }
    kube.delete_namespace("shop");
    loop {
        match next().await {
            Event::Delete(ns) => {
                assert_eq!(ns.name_any(), "shop");
                break;
            }
            Event::Apply(ns) => assert_eq!(ns.name_any(), "shop", "turns Terminating first"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_recovers_when_the_apiserver_comes_back() {
    let kube = TestKube::start();
    kube.create_pod(pod("shop", "web-1", "node-1").build());
    let client = client_for(&kube, None).await;
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("spec.nodeName=node-1");
    let mut stream = watcher::watcher(pods, config).boxed();
    let mut errors = Vec::new();
    assert_eq!(initial_listing(&mut stream, &mut errors).await, ["web-1"]);

    kube.down();
    // While the apiserver is away the watcher fails to watch again; it says so and goes on.
    let poll = tokio::time::timeout(
        Duration::from_millis(500),
        next_event(&mut stream, &mut errors),
    )
    .await;
    assert!(poll.is_err(), "no event while the apiserver is down");
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, watcher::Error::WatchStartFailed(_))),
        "{errors:?}"
    );
    kube.create_pod(pod("shop", "web-2", "node-1").build());
    kube.up();
    match next_event(&mut stream, &mut errors).await {
        Event::Apply(p) => assert_eq!(p.name_any(), "web-2", "replayed from the watcher's version"),
        other => panic!("expected the pod created during the outage, got {other:?}"),
    }
    assert_eq!(kube.list_requests().len(), 1, "a re-watch, not a re-list");
}
