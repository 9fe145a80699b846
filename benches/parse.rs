//! Parsing throughput: 200-byte CRI and docker json-file lines through `LineParser` into a batch
//! that is reused (cleared, not reallocated) between iterations, as the reader does per turn.
//! Line boundaries are found once beforehand, so the figures are the parser's alone.
//!
//! Encoding throughput: the same records as JSON documents into a reused buffer (what every sink
//! writes), and as gzip'ed bulk request items (action line, id, document) as the Elasticsearch
//! sink writes them.
//!
//! The agent's target is 1,000,000 lines/s on one core end to end; the parser should take a
//! small share of that, i.e. run at several million lines/s.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use logship::ack::FileKey;
use logship::document::Encoder;
use logship::parse::multiline::{Builtin, Limits, MultilineRule};
use logship::parse::{FormatChoice, Line, LineParser, Oversize, Piece};
use logship::record::{Batch, IdPrefix};
use logship::sink::elasticsearch::bulk::{doc_id, BulkBuilder};
use logship::sink::elasticsearch::retry::OpType;
use logship::source::{KubeletName, Source};
use logship::timestamp::Timestamp;

const LINES: usize = 10_000;
const LINE_BYTES: usize = 200;
const MAX_LINE_BYTES: usize = 256 * 1024;

/// `LINES` lines of exactly `LINE_BYTES` bytes (newline included): `head(i)`, padding, `tail`.
fn input(head: impl Fn(usize) -> String, tail: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(LINES * LINE_BYTES);
    for i in 0..LINES {
        let head = head(i);
        body.extend_from_slice(head.as_bytes());
        body.resize(body.len() + LINE_BYTES - head.len() - tail.len() - 1, b'x');
        body.extend_from_slice(tail.as_bytes());
        body.push(b'\n');
    }
    assert_eq!(body.len(), LINES * LINE_BYTES);
    body
}

fn cri() -> Vec<u8> {
    input(
        |i| format!("2026-11-22T10:00:00.{i:09}Z stdout F GET /api/v1/items/{i} 200 "),
        "",
    )
}

fn docker() -> Vec<u8> {
    input(
        |i| format!(r#"{{"log":"GET /api/v1/items/{i} 200 \"curl/8.5\" "#),
        r#"\n","stream":"stdout","time":"2026-11-22T10:00:00.123456789Z"}"#,
    )
}

/// (offset, end) of every line, newline excluded from the bytes but included in `end`.
fn lines(body: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(LINES);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', body) {
        out.push((start, nl));
        start = nl + 1;
    }
    out
}

fn bench_format(c: &mut Criterion, name: &str, format: FormatChoice, body: &[u8]) {
    bench_parser(c, name, format, None, body);
}

/// `body` through a parser with `rule`; ordinary lines only, so every line is still a record.
fn bench_parser(
    c: &mut Criterion,
    name: &str,
    format: FormatChoice,
    rule: Option<Arc<MultilineRule>>,
    body: &[u8],
) {
    let spans = lines(body);
    let path: Arc<Path> = Arc::from(Path::new("/var/log/containers/web_shop_nginx-0.log"));
    let source = Arc::new(Source {
        path: path.to_path_buf(),
        kubelet: None,
        fragment: "".into(),
    });
    let mut parser =
        LineParser::new(format, MAX_LINE_BYTES, Oversize::Split, path).with_multiline(rule);
    let mut batch = Batch::new(source, FileKey(1), 0);
    let now = Timestamp::now();

    let mut run = || {
        batch.records.clear();
        batch.text.clear();
        for &(start, nl) in &spans {
            let line = Line {
                bytes: &body[start..nl],
                piece: Piece::Whole,
                offset: start as u64,
                end: nl as u64 + 1,
            };
            parser.push(line, now, &mut batch);
        }
        assert_eq!(parser.pending_start(), None);
        batch.records.len()
    };
    // Every line is one record: the bench measures parsing, not a fallback.
    assert_eq!(run(), LINES);

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::ElementsAndBytes {
        elements: LINES as u64,
        bytes: body.len() as u64,
    });
    group.bench_function(name, |b| b.iter(|| black_box(run())));
    group.finish();
}

fn parse(c: &mut Criterion) {
    bench_format(c, "cri", FormatChoice::Cri, &cri());
    bench_format(c, "docker", FormatChoice::Docker, &docker());
    bench_format(c, "auto_cri", FormatChoice::Auto, &cri());
    // Multiline on, ordinary lines: what a rule costs the lines it does not join.
    let java = Arc::new(MultilineRule::builtin(Builtin::Java, Limits::default()));
    bench_parser(
        c,
        "cri_multiline_java",
        FormatChoice::Cri,
        Some(java),
        &cri(),
    );
    let python = Arc::new(MultilineRule::builtin(Builtin::Python, Limits::default()));
    bench_parser(
        c,
        "cri_multiline_python",
        FormatChoice::Cri,
        Some(python),
        &cri(),
    );
}

/// A batch of the CRI input parsed, with a kubelet file's fragment.
fn parsed_batch(encoder: &Encoder) -> Batch {
    let body = cri();
    let path = Path::new(
        "/var/log/containers/web-7d4b9_shop_nginx-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
    );
    let kubelet = KubeletName::from_path(path);
    let source = Arc::new(Source {
        path: path.to_path_buf(),
        fragment: encoder.source_fragment(path, kubelet.as_ref()),
        kubelet,
    });
    let mut parser = LineParser::new(
        FormatChoice::Cri,
        MAX_LINE_BYTES,
        Oversize::Split,
        Arc::from(path),
    );
    let mut batch = Batch::new(source, FileKey(1), 0);
    for (start, nl) in lines(&body) {
        let line = Line {
            bytes: &body[start..nl],
            piece: Piece::Whole,
            offset: start as u64,
            end: nl as u64 + 1,
        };
        parser.push(line, Timestamp::now(), &mut batch);
    }
    batch.id_prefix = IdPrefix([7; 12]);
    batch
}

fn encode(c: &mut Criterion) {
    let encoder = Encoder::new("node-1");
    let batch = parsed_batch(&encoder);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(batch.records.len() as u64));
    let mut out = Vec::new();
    group.bench_function("document", |b| {
        b.iter(|| {
            out.clear();
            for index in 0..batch.records.len() {
                encoder.encode(&batch, index, &mut out);
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    for (name, gzip) in [("bulk_plain", None), ("bulk_gzip1", Some(1))] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut bulk = BulkBuilder::new(OpType::Create, gzip);
                for (i, record) in batch.records.iter().enumerate() {
                    let id = doc_id(batch.id_prefix, record.offset, record.end);
                    bulk.push("logs-logship-default", &id, i, |out| {
                        encoder.encode(&batch, i, out)
                    });
                }
                black_box(bulk.finish().unwrap().bytes.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
