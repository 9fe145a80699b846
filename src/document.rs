//! Records -> JSON documents (the ECS-style schema the README's "The record" shows), the bytes every sink writes.
//!
//! Most of a document is the same for every record of a file: its path, what the kubelet name
//! and the pod's metadata say, the host. That part is rendered once per file into a fragment
//! ([`Source::fragment`], replaced by enrichment when the pod's metadata is known or changes),
//! and each record only writes what is its own (timestamp, message, stream, offset) before
//! splicing the fragment in. Encoding a record allocates nothing: it appends to the caller's
//! reused buffer.
//!
//! Field order is fixed and documented in the README:
//!
//! ```json
//! {"@timestamp":"…","message":"…","stream":"stdout","log":{"offset":0,"level":"info","file":{"path":"…"}},
//!  "kubernetes":{"namespace":"…","pod":{"name":"…"},"container":{"name":"…"}},
//!  "container":{"id":"…"},"json":{…},"cluster":{"name":"…"},"host":{"name":"…"}}
//! ```
//!
//! `stream` is left out for raw files, `kubernetes` and `container` for files whose name is not a
//! kubelet name. What message processing made of a record (`process`: the level, the parsed
//! fields, the message left out or replaced) is spliced from the batch: a JSON object that
//! needed no change straight from the message text, anything else from [`Batch::fields`]; the
//! static fields (`processing.add_fields`) are rendered once, here. The `fluentd` schema writes the names fluent-plugin-kubernetes_metadata_filter
//! writes instead (`log` for the message, `time`, `kubernetes.pod_name`, `docker.container_id`).
//!
//! [`Source::fragment`]: crate::source::Source::fragment

use std::path::Path;

use serde_json::json;

use crate::enrich::metadata::{self, Schema};
use crate::record::{Batch, FieldsOut, MessageOut, Processed};
use crate::source::KubeletName;

/// Renders documents. One per agent, shared by the tailer (fragments) and the sinks (records).
#[derive(Debug)]
pub struct Encoder {
    /// `"host":{"name":"<node>"}}`, already escaped: the end of every document.
    host: Box<str>,
    schema: Schema,
    /// The static fields (`processing.add_fields`) as document members, each followed by a
    /// comma; empty for none.
    statics: Box<str>,
    /// `"<target>":` before a parsed JSON object spliced as written; empty when parsed fields
    /// are merged at the top level (then only the members inside its braces are spliced).
    target: Box<str>,
}

impl Encoder {
    /// An encoder of ECS documents whose `host.name` is `host_name`.
    pub fn new(host_name: &str) -> Self {
        Encoder::with_schema(host_name, Schema::Ecs)
    }

    /// An encoder of documents in `schema`.
    pub fn with_schema(host_name: &str, schema: Schema) -> Self {
        let host = format!("\"host\":{}}}", json!({ "name": host_name }));
        Encoder {
            host: host.into(),
            schema,
            statics: "".into(),
            target: format!("{}:", json!("json")).into(),
        }
    }

    /// Sets where parsed fields go (`None`: the top level) and the static fields, rendered (see
    /// `process::filter::render_static`).
    #[must_use]
    pub fn with_processing(mut self, target: Option<&str>, statics: &str) -> Self {
        self.target = match target {
            Some(t) => format!("{}:", json!(t)).into(),
            None => "".into(),
        };
        self.statics = statics.into();
        self
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The per-file part of the documents of the file at `path`, as its name tells it (see
    /// [`metadata::render`]); enrichment renders a fuller one the same way.
    pub fn source_fragment(
        &self,
        path: &Path,
        kubelet: Option<&KubeletName>,
    ) -> std::sync::Arc<str> {
        metadata::render(self.schema, &path.to_string_lossy(), kubelet, None, None).into()
    }

    /// The per-file fields of documents with `fragment`, as JSON (for filters on them).
    pub fn fragment_fields(&self, fragment: &str) -> Option<serde_json::Value> {
        let text = match self.schema {
            Schema::Ecs => format!("{{\"log\":{{\"offset\":0,{fragment}{}", self.host),
            Schema::Fluentd => format!("{{{fragment}{}", self.host),
        };
        serde_json::from_str(&text).ok()
    }

    /// Appends the document of the record at `index` of `batch` to `out`, without a newline.
    pub fn encode(&self, batch: &Batch, index: usize, out: &mut Vec<u8>) {
        self.write(batch, index, None, out);
    }

    /// Appends the document a record becomes when the index's mapping refused it (see
    /// `sink::elasticsearch::fallback`): the message as read, the time, stream and offset, the
    /// file's metadata (without the pod's labels, annotations and namespace labels when
    /// `without_labels`), the static fields, and `reason` as `logship.mapping_fallback` when
    /// given; no parsed fields and no parsed level.
    pub fn encode_fallback(
        &self,
        batch: &Batch,
        index: usize,
        without_labels: bool,
        reason: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        self.write(
            batch,
            index,
            Some(Stripped {
                without_labels,
                reason,
            }),
            out,
        );
    }

    fn write(
        &self,
        batch: &Batch,
        index: usize,
        stripped: Option<Stripped<'_>>,
        out: &mut Vec<u8>,
    ) {
        let record = &batch.records[index];
        let processed = if stripped.is_some() {
            Processed::default()
        } else {
            batch.processed(index)
        };
        out.extend_from_slice(b"{\"@timestamp\":\"");
        record.timestamp.write_rfc3339(out);
        out.push(b'"');
        let message_key: &[u8] = match self.schema {
            Schema::Ecs => b",\"message\":",
            Schema::Fluentd => b",\"log\":",
        };
        match processed.message {
            MessageOut::Kept => {
                out.extend_from_slice(message_key);
                write_json_str(out, batch.message(record));
            }
            MessageOut::Replaced => {
                out.extend_from_slice(message_key);
                out.extend_from_slice(batch.fields[processed.replacement.range()].as_bytes());
            }
            MessageOut::Dropped => {}
        }
        if let Some(stream) = record.stream.as_str() {
            out.extend_from_slice(b",\"stream\":\"");
            out.extend_from_slice(stream.as_bytes());
            out.push(b'"');
        }
        match self.schema {
            Schema::Ecs => out.extend_from_slice(b",\"log\":{\"offset\":"),
            Schema::Fluentd => {
                out.extend_from_slice(b",\"time\":\"");
                record.timestamp.write_rfc3339(out);
                out.extend_from_slice(b"\",\"offset\":");
            }
        }
        write_u64(out, record.offset);
        out.push(b',');
        let own = batch.own_of(index);
        let level = match own {
            Some(o) if processed.level.is_empty() => &batch.own[o.level.range()],
            _ => &batch.fields[processed.level.range()],
        };
        if !level.is_empty() {
            // Inside `log` (ECS: `log.level`) or at the top level (fluentd: `level`).
            out.extend_from_slice(b"\"level\":");
            out.extend_from_slice(level.as_bytes());
            out.push(b',');
        }
        if let Some(o) = own {
            // A record of its own (a journal entry): no file fragment; its `log` members close
            // the `log` object (ECS) or stand at the top level (fluentd).
            let log = &batch.own[o.log.range()];
            if self.schema == Schema::Ecs {
                if log.is_empty() {
                    out.pop();
                } else {
                    out.extend_from_slice(log.as_bytes());
                }
                out.extend_from_slice(b"},");
            } else if !log.is_empty() {
                out.extend_from_slice(log.as_bytes());
                out.push(b',');
            }
            out.extend_from_slice(batch.own[o.members.range()].as_bytes());
        }
        match stripped {
            Some(Stripped {
                without_labels: true,
                ..
            }) => out.extend_from_slice(self.without_labels(&batch.fragment).as_bytes()),
            _ => out.extend_from_slice(batch.fragment.as_bytes()),
        }
        match processed.fields {
            FieldsOut::None => {}
            FieldsOut::Inline => {
                out.extend_from_slice(self.target.as_bytes());
                out.extend_from_slice(batch.text[processed.members.range()].as_bytes());
                out.push(b',');
            }
            FieldsOut::Rendered => {
                out.extend_from_slice(batch.fields[processed.members.range()].as_bytes());
            }
        }
        out.extend_from_slice(self.statics.as_bytes());
        if let Some(reason) = stripped.and_then(|s| s.reason) {
            out.extend_from_slice(b"\"logship\":{\"mapping_fallback\":");
            write_json_str(out, reason);
            out.extend_from_slice(b"},");
        }
        match own {
            Some(o) if !o.host.is_empty() => {
                out.extend_from_slice(batch.own[o.host.range()].as_bytes());
            }
            _ => out.extend_from_slice(self.host.as_bytes()),
        }
    }

    /// A file's fragment without the pod's labels, annotations and namespace labels, the parts
    /// whose keys come from users (rare: only for a document whose fallback was refused too).
    fn without_labels(&self, fragment: &str) -> String {
        // The fragment is a run of members, each followed by a comma; for ECS it starts inside
        // `log` and closes it. Wrapped into an object, it is edited as JSON.
        let text = match self.schema {
            Schema::Ecs => format!("{{\"log\":{{\"offset\":0,{fragment}\"_\":0}}"),
            Schema::Fluentd => format!("{{{fragment}\"_\":0}}"),
        };
        let Ok(serde_json::Value::Object(mut root)) = serde_json::from_str(&text) else {
            return fragment.to_owned();
        };
        root.remove("_");
        if let Some(serde_json::Value::Object(k)) = root.get_mut("kubernetes") {
            for key in ["labels", "annotations", "namespace_labels"] {
                k.remove(key);
            }
        }
        let mut out = String::with_capacity(fragment.len());
        let member = |out: &mut String, key: &str, value: &serde_json::Value| {
            out.push_str(&json!(key).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        };
        if self.schema == Schema::Ecs {
            if let Some(serde_json::Value::Object(log)) = root.remove("log") {
                let mut first = true;
                for (key, value) in log.iter().filter(|(k, _)| k.as_str() != "offset") {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    member(&mut out, key, value);
                }
                out.push_str("},");
            }
        }
        for (key, value) in &root {
            member(&mut out, key, value);
            out.push(',');
        }
        out
    }
}

/// What a fallback document leaves out (see [`Encoder::encode_fallback`]).
#[derive(Clone, Copy)]
struct Stripped<'a> {
    without_labels: bool,
    reason: Option<&'a str>,
}

/// Appends `s` as a JSON string literal, with serde_json's escaping (a table lookup per byte;
/// runs that need no escaping, nearly all of a log line, are copied in one go).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Appends the decimal digits of `n`.
fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::FileKey;
    use crate::record::Stream;
    use crate::source::Source;
    use crate::timestamp::Timestamp;
    use serde_json::Value;
    use std::sync::Arc;

    fn batch(encoder: &Encoder, path: &str) -> Batch {
        let kubelet = KubeletName::from_path(Path::new(path));
        let fragment = encoder.source_fragment(Path::new(path), kubelet.as_ref());
        let source = Arc::new(Source {
            path: path.into(),
            kubelet,
            fragment,
        });
        Batch::new(source, FileKey(1), 0)
    }

    fn encode_all(encoder: &Encoder, batch: &Batch) -> Vec<Value> {
        batch
            .records
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut out = Vec::new();
                encoder.encode(batch, i, &mut out);
                serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
            })
            .collect()
    }

    #[test]
    fn kubelet_file_document() {
        let encoder = Encoder::new("node-1");
        let id = "3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b";
        let path = format!("/var/log/containers/web-7d4b9_shop_nginx-{id}.log");
        let mut b = batch(&encoder, &path);
        b.push(
            Timestamp(1_795_341_600_123_456_789),
            Stream::Stdout,
            "GET /healthz 200",
            123_456,
            123_500,
        );
        let docs = encode_all(&encoder, &b);
        assert_eq!(
            docs[0],
            json!({
                "@timestamp": "2026-11-22T10:00:00.123456789Z",
                "message": "GET /healthz 200",
                "stream": "stdout",
                "log": { "offset": 123456, "file": { "path": path } },
                "kubernetes": { "namespace": "shop", "pod": { "name": "web-7d4b9" }, "container": { "name": "nginx" } },
                "container": { "id": id },
                "host": { "name": "node-1" }
            })
        );
    }

    #[test]
    fn raw_file_document_and_escaping() {
        let encoder = Encoder::new("vm \"1\"");
        let mut b = batch(&encoder, "/var/log/odd \"name\".log");
        let nasty = "quote \" backslash \\ tab \t nl \n cr \r nul \0 bell \u{7} é 😀 \u{fffd}";
        b.push(Timestamp(0), Stream::Unknown, nasty, 0, 10);
        b.push(Timestamp(-1), Stream::Stderr, "", u64::MAX, u64::MAX);
        let docs = encode_all(&encoder, &b);
        assert_eq!(
            docs[0],
            json!({
                "@timestamp": "1970-01-01T00:00:00.000000000Z",
                "message": nasty,
                "log": { "offset": 0, "file": { "path": "/var/log/odd \"name\".log" } },
                "host": { "name": "vm \"1\"" }
            })
        );
        assert_eq!(docs[1]["@timestamp"], "1969-12-31T23:59:59.999999999Z");
        assert_eq!(docs[1]["stream"], "stderr");
        assert_eq!(docs[1]["log"]["offset"], u64::MAX);
    }

    #[test]
    fn pods_layout_carries_the_pod_uid() {
        let encoder = Encoder::new("n");
        let mut b = batch(&encoder, "/var/log/pods/shop_web_6a1f/nginx/0.log");
        b.push(Timestamp(0), Stream::Stdout, "x", 0, 2);
        let doc = &encode_all(&encoder, &b)[0];
        assert_eq!(
            doc["kubernetes"]["pod"],
            json!({ "name": "web", "uid": "6a1f" })
        );
        assert!(doc.get("container").is_none());
    }

    #[test]
    fn a_record_with_its_own_fields_closes_log_and_names_its_host() {
        use crate::record::{Own, Span};
        let encoder = Encoder::new("node-1");
        let source = Arc::new(Source {
            path: "/var/log/journal/m/system.journal".into(),
            kubelet: None,
            fragment: "".into(),
        });
        let mut b = Batch::new(source, FileKey(1), 7);
        let span = |own: &mut String, text: &str| {
            let at = own.len();
            own.push_str(text);
            Span::of(at..own.len()).unwrap()
        };
        b.push(Timestamp(0), Stream::Unknown, "full", 7, 8);
        let level = span(&mut b.own, "\"err\"");
        let log = span(&mut b.own, "\"syslog\":{\"priority\":3}");
        let members = span(&mut b.own, "\"systemd\":{\"unit\":\"kubelet.service\"},");
        let host = span(&mut b.own, "\"host\":{\"name\":\"other\"}}");
        let o = Own {
            level,
            log,
            members,
            host,
        };
        b.owns.push(o);
        b.push(Timestamp(0), Stream::Unknown, "bare", 8, 9);
        b.owns.push(Own::default());
        let docs = encode_all(&encoder, &b);
        assert_eq!(
            docs[0],
            json!({
                "@timestamp": "1970-01-01T00:00:00.000000000Z",
                "message": "full",
                "log": { "offset": 7, "level": "err", "syslog": { "priority": 3 } },
                "systemd": { "unit": "kubelet.service" },
                "host": { "name": "other" }
            })
        );
        assert_eq!(
            docs[1],
            json!({
                "@timestamp": "1970-01-01T00:00:00.000000000Z",
                "message": "bare",
                "log": { "offset": 8 },
                "host": { "name": "node-1" }
            })
        );
        let fluentd = Encoder::with_schema("node-1", Schema::Fluentd);
        let doc = &encode_all(&fluentd, &b)[0];
        assert_eq!(doc["syslog"]["priority"], 3);
        assert_eq!(doc["level"], "err");
        assert_eq!(doc["log"], "full");
    }
}
