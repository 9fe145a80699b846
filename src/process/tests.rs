//! Processing end to end: records through the processor and the encoder, as documents.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::filter::{parse_add, render_static, Match};
use super::*;
use crate::ack::FileKey;
use crate::enrich::metadata::Schema;
use crate::record::Batch;
use crate::source::Source;
use crate::timestamp::Timestamp;

const PATH: &str = "/var/log/containers/web-0_shop_app-3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b.log";

fn encoder(s: &ProcessingSettings) -> Encoder {
    Encoder::with_schema("node-1", s.names.schema)
        .with_processing(s.names.target.as_deref(), &s.statics)
}

fn batch(encoder: &Encoder, messages: &[&str]) -> Batch {
    let path = Path::new(PATH);
    let kubelet = KubeletName::from_path(path);
    let fragment = encoder.source_fragment(path, kubelet.as_ref());
    let source = Arc::new(Source {
        path: path.into(),
        kubelet,
        fragment,
    });
    let mut b = Batch::new(source, FileKey(1), 0);
    for (i, m) in messages.iter().enumerate() {
        b.push(
            Timestamp(0),
            Stream::Stdout,
            m,
            i as u64 * 100,
            i as u64 * 100 + 99,
        );
    }
    b.ack.end = messages.len() as u64 * 100;
    b
}

/// Processes `messages` with `s` (parser as given) and returns the documents.
fn docs_with(s: ProcessingSettings, parser: ParserChoice, messages: &[&str]) -> Vec<Value> {
    let enc = encoder(&s);
    let mut b = batch(&enc, messages);
    let mut p = Processor::new(s);
    let mut f = FileProcessing {
        parser,
        ..FileProcessing::default()
    };
    let fragment = Arc::clone(&b.fragment);
    p.process(&mut f, &fragment, &enc, &mut b);
    assert!(b.processed.is_empty() || b.processed.len() == b.records.len());
    (0..b.records.len())
        .map(|i| {
            let mut out = Vec::new();
            enc.encode(&b, i, &mut out);
            serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
        })
        .collect()
}

fn docs(s: ProcessingSettings, messages: &[&str]) -> Vec<Value> {
    let parser = s.parser;
    docs_with(s, parser, messages)
}

fn defaults() -> ProcessingSettings {
    ProcessingSettings::new(Schema::Ecs)
}

#[test]
fn json_objects_become_fields_under_json_with_the_level_lifted() {
    let m = r#"{"level":"warn","msg":"disk almost full","disk":{"free_mb":12,"mount":"/data"},"tags":["a","b"]}"#;
    let d = &docs(defaults(), &[m, "plain text line"]);
    assert_eq!(d[0]["message"], m, "the message is kept");
    assert_eq!(d[0]["log"]["level"], "warn");
    assert_eq!(d[0]["log"]["offset"], 0);
    assert_eq!(d[0]["log"]["file"]["path"], PATH);
    assert_eq!(
        d[0]["json"],
        json!({"level":"warn","msg":"disk almost full","disk":{"free_mb":12,"mount":"/data"},"tags":["a","b"]})
    );
    assert_eq!(d[0]["kubernetes"]["pod"]["name"], "web-0");
    assert_eq!(d[0]["host"]["name"], "node-1");
    assert_eq!(d[1]["message"], "plain text line");
    assert!(d[1].get("json").is_none() && d[1]["log"].get("level").is_none());
}

#[test]
fn what_is_not_a_json_object_is_left_as_it_was() {
    let before = telemetry::get(&telemetry::metrics().structured_invalid);
    let ms = [
        "[1,2,3]",
        "42",
        "\"just a string\"",
        "null",
        "{\"unterminated\":",
        "{\"a\":1} tail",
    ];
    let d = docs(defaults(), &ms);
    for (doc, m) in d.iter().zip(ms) {
        assert_eq!(doc["message"], m);
        assert!(doc.get("json").is_none(), "{doc}");
    }
    // Counted: the two that looked like objects (auto leaves the others alone silently)...
    let after = telemetry::get(&telemetry::metrics().structured_invalid);
    assert!(after - before >= 2);
    // ...and with parser = json every one of them.
    let before = after;
    docs_with(defaults(), ParserChoice::Json, &ms);
    assert!(telemetry::get(&telemetry::metrics().structured_invalid) - before >= 6);
}

#[test]
fn edge_cases_ship_as_valid_documents() {
    let deep = format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(50), "}".repeat(50));
    let huge: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let huge = format!("{{\"ids\":[{}]}}", huge.join(","));
    let many: Vec<String> = (0..500).map(|i| format!("\"f{i}\":{i}")).collect();
    let many = format!("{{{}}}", many.join(","));
    let dup = r#"{"user":"a","user":"b","level":"info","level":"error"}"#;
    let replaced = "{\"msg\":\"bad \u{fffd} byte\"}";
    let mut s = defaults();
    s.keep_message = false;
    let d = docs(s, &[&deep, &huge, &many, dup, replaced]);
    // Deeper than 8 levels: kept as text; the message kept too (a bound applied).
    let mut v = &d[0]["json"]["a"];
    for _ in 0..7 {
        v = &v["b"];
    }
    assert!(v.as_str().unwrap().starts_with("{\"b\":"), "{v}");
    assert_eq!(d[0]["message"], deep);
    // A huge array is one field, shipped as written (and its message left out as asked).
    assert_eq!(d[1]["json"]["ids"].as_array().unwrap().len(), 10_000);
    assert!(d[1].get("message").is_none());
    // 500 fields: 200 kept, the message kept.
    assert_eq!(d[2]["json"].as_object().unwrap().len(), 200);
    assert_eq!(d[2]["message"], many);
    // Duplicates: the last wins, also for the level.
    assert_eq!(d[3]["json"], json!({"user":"b","level":"error"}));
    assert_eq!(d[3]["log"]["level"], "error");
    // Invalid UTF-8 was replaced by the line parser: the replacement character goes through.
    assert_eq!(d[4]["json"]["msg"], "bad \u{fffd} byte");
}

#[test]
fn merged_at_the_top_level_our_fields_win() {
    let mut s = defaults();
    s.names.target = None;
    s.add_fields = vec![parse_add("cluster.name=prod").unwrap()];
    s.names.static_roots = vec!["cluster".into()];
    s.statics = render_static(&s.names, &s.add_fields).unwrap();
    let m = r#"{"message":"theirs","host":"h1","_id":"x","cluster":"c","json":1,"user":{"id":7},"level":"info","@timestamp":"t"}"#;
    let d = &docs(s.clone(), &[m, r#"{"plain":true}"#])[..];
    let doc = &d[0];
    assert_eq!(doc["message"], m, "ours");
    assert_eq!(doc["host"]["name"], "node-1");
    assert_eq!(doc["cluster"]["name"], "prod");
    assert_eq!(doc["@timestamp"], "1970-01-01T00:00:00.000000000Z");
    assert_eq!(doc["user"]["id"], 7);
    assert_eq!(doc["level"], "info");
    assert_eq!(doc["log"]["level"], "info");
    assert_eq!(
        doc["json"],
        json!({"message":"theirs","host":"h1","_id":"x","cluster":"c","json":1,"@timestamp":"t"})
    );
    assert_eq!(d[1]["plain"], true, "no clash: spliced as written");

    // Without the message kept, theirs takes its place.
    s.keep_message = false;
    let d = docs(s, &[m, r#"{"msg":"no message key"}"#, "{}"]);
    assert_eq!(d[0]["message"], "theirs");
    assert!(d[0]["json"].get("message").is_none());
    assert!(d[1].get("message").is_none());
    assert_eq!(d[1]["msg"], "no message key");
    assert!(d[2].get("message").is_none());
}

#[test]
fn the_fluentd_schema_keeps_its_names() {
    let mut s = ProcessingSettings::new(Schema::Fluentd);
    let m = r#"{"level":"error","log":"inner","time":"t"}"#;
    let d = docs(s.clone(), &[m]);
    assert_eq!(d[0]["log"], m);
    assert_eq!(d[0]["level"], "error");
    assert_eq!(d[0]["json"]["log"], "inner");
    assert_eq!(d[0]["kubernetes"]["pod_name"], "web-0");
    // Merged at the top level, as Fluentd's parser filter does.
    s.names.target = None;
    let d = docs(s, &[m]);
    assert_eq!(d[0]["log"], m);
    assert_eq!(d[0]["level"], "error", "the level once");
    assert_eq!(d[0]["json"], json!({"log":"inner","time":"t"}));
}

#[test]
fn levels_from_other_keys_and_numbers() {
    let d = docs(
        defaults(),
        &[
            r#"{"severity":"WARNING","lvl":"x"}"#,
            r#"{"level":30,"msg":"pino"}"#,
            r#"{"level":35}"#,
            r#"{"log.level":"debug"}"#,
            r#"{"level":{"nested":1}}"#,
        ],
    );
    assert_eq!(d[0]["log"]["level"], "WARNING");
    assert_eq!(d[1]["log"]["level"], "info");
    assert_eq!(d[2]["log"]["level"], "35");
    assert_eq!(d[3]["log"]["level"], "debug");
    assert!(d[4]["log"].get("level").is_none());
}

#[test]
fn logfmt_when_chosen() {
    let d = docs_with(
        defaults(),
        ParserChoice::Logfmt,
        &[
            r#"level=info msg="user logged in" user=42"#,
            "not logfmt at all",
        ],
    );
    assert_eq!(
        d[0]["json"],
        json!({"level":"info","msg":"user logged in","user":"42"})
    );
    assert_eq!(d[0]["log"]["level"], "info");
    assert!(d[1].get("json").is_none());
    assert_eq!(d[1]["message"], "not logfmt at all");
    // parser none: nothing is parsed.
    let d = docs_with(defaults(), ParserChoice::None, &[r#"{"a":1}"#]);
    assert!(d[0].get("json").is_none());
}

/// The documented order: parse, include, exclude, drop, rename.
#[test]
fn filters_apply_in_order() {
    let mut s = defaults();
    s.keep_message = false;
    s.include = vec![
        Match::parse(&s.names, "json.level=~^(warn|error)$").unwrap(),
        Match::parse(&s.names, "message=~^PANIC").unwrap(),
    ];
    s.exclude = vec![
        Match::parse(&s.names, "json.path=~^/healthz").unwrap(),
        Match::parse(&s.names, "stream=~stderr").unwrap(),
    ];
    // Drop before rename: a renamed field's old name is gone, and the renamed one is not
    // dropped under its new name.
    s.drop_fields = vec![
        filter::parse_drop(&s.names, "json.secret").unwrap(),
        filter::parse_drop(&s.names, "json.msg").unwrap(),
    ];
    s.rename_fields = vec![
        filter::parse_rename(&s.names, "json.text=message", false).unwrap(),
        filter::parse_rename(&s.names, "json.uid=user.id", false).unwrap(),
        filter::parse_rename(&s.names, "json.text2=json.msg", false).unwrap(),
    ];
    let before = (
        telemetry::get(&telemetry::metrics().filtered_not_included),
        telemetry::get(&telemetry::metrics().filtered_excluded),
    );
    let d = docs(
        s,
        &[
            r#"{"level":"info","text":"dropped: not included"}"#,
            r#"{"level":"error","path":"/healthz","text":"dropped: excluded"}"#,
            r#"{"level":"error","text":"kept","secret":"s3cret","uid":7,"msg":"old","text2":"new"}"#,
            "PANIC: plain text is included by the message rule",
            r#"{"level":"warn","path":"/api"}"#,
        ],
    );
    assert_eq!(d.len(), 3, "{d:#?}");
    assert_eq!(d[0]["message"], "kept");
    assert_eq!(d[0]["json"], json!({"level":"error","msg":"new"}));
    assert_eq!(d[0]["user"]["id"], 7);
    assert_eq!(
        d[1]["message"],
        "PANIC: plain text is included by the message rule"
    );
    assert!(
        d[2].get("message").is_none(),
        "parsed, not kept, nothing renamed to it"
    );
    assert_eq!(
        telemetry::get(&telemetry::metrics().filtered_not_included) - before.0,
        1
    );
    assert!(telemetry::get(&telemetry::metrics().filtered_excluded) - before.1 >= 1);
}

#[test]
fn filtered_records_leave_the_batch_but_not_its_ack_range() {
    let mut s = defaults();
    s.exclude = vec![Match::parse(&s.names, "message=~^DEBUG").unwrap()];
    let enc = encoder(&s);
    let mut b = batch(&enc, &["DEBUG a", "INFO b", "DEBUG c", "{\"x\":1}"]);
    let ack = b.ack;
    let mut p = Processor::new(s);
    let mut f = FileProcessing::default();
    let fragment = Arc::clone(&b.fragment);
    p.process(&mut f, &fragment, &enc, &mut b);
    assert_eq!(b.ack, ack);
    let offsets: Vec<u64> = b.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [100, 300]);
    assert_eq!(b.processed.len(), 2);
    assert_eq!(b.processed[1].fields, FieldsOut::Inline);
}

#[test]
fn parsed_fields_count_against_the_memory_budget() {
    let mut s = defaults();
    s.drop_fields = vec![filter::parse_drop(&s.names, "json.x").unwrap()];
    let enc = encoder(&s);
    let messages: Vec<String> = (0..100)
        .map(|i| format!("{{\"x\":{i},\"payload\":\"{}\"}}", "p".repeat(200)))
        .collect();
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    let mut b = batch(&enc, &refs);
    let before = b.memory_bytes();
    let mut p = Processor::new(s);
    let fragment = Arc::clone(&b.fragment);
    p.process(&mut FileProcessing::default(), &fragment, &enc, &mut b);
    assert!(b.fields.len() > 100 * 200, "rendered: {}", b.fields.len());
    assert!(b.memory_bytes() >= before + b.fields.len());
}

#[test]
fn metadata_filters_read_the_files_fields() {
    let mut s = defaults();
    s.exclude = vec![Match::parse(&s.names, "kubernetes.namespace=~^shop$").unwrap()];
    assert!(docs(s.clone(), &["a", "b"]).is_empty());
    s.exclude = vec![Match::parse(&s.names, "kubernetes.namespace=~^kube-").unwrap()];
    assert_eq!(docs(s, &["a", "b"]).len(), 2);
}
