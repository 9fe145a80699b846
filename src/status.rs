//! `logship status`: asks a running agent's endpoint how it is doing and prints a short summary
//! for a person.
//!
//! Three GETs over a plain `TcpStream` (HTTP/1.1, `Connection: close`): `/readyz`, `/healthz` and
//! `/metrics`. The probes' own reasons are printed as they are, so `status` and the kubelet
//! never disagree; the figures come from the metrics text. Everything but [`fetch`] is pure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytesize::ByteSize;

/// How long connecting, and then each read or write, may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read (the metrics text is a few KiB).
const MAX_ANSWER: u64 = 4 << 20;

/// Errors reaching the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `--server` is neither `IP:PORT` nor `HOST:PORT` that resolves.
    #[error("{server:?} is not an address (HOST:PORT): {source}")]
    Address {
        server: String,
        #[source]
        source: std::io::Error,
    },
    /// Connecting, writing or reading failed.
    #[error("asking http://{addr}{path}: {source}")]
    Io {
        addr: SocketAddr,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// What came back is not an HTTP answer.
    #[error("asking http://{addr}{path}: not an HTTP answer ({reason})")]
    Malformed {
        addr: SocketAddr,
        path: &'static str,
        reason: &'static str,
    },
}

/// One answer: its status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// What the endpoint said.
#[derive(Clone, Debug)]
pub struct Report {
    pub addr: SocketAddr,
    pub ready: Answer,
    pub live: Answer,
    pub metrics: Samples,
}

impl Report {
    /// Ready and live.
    pub fn healthy(&self) -> bool {
        self.ready.status == 200 && self.live.status == 200
    }
}

/// Where to ask: `--server` if given, else `server.listen`, where an unspecified address
/// (`0.0.0.0`, `::`) means this machine's loopback.
pub fn target(server: Option<&str>, listen: SocketAddr) -> Result<SocketAddr, StatusError> {
    let Some(server) = server else {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        return Ok(SocketAddr::new(ip, listen.port()));
    };
    let address = |source| StatusError::Address {
        server: server.to_string(),
        source,
    };
    server
        .to_socket_addrs()
        .map_err(address)?
        .next()
        .ok_or_else(|| address(std::io::ErrorKind::NotFound.into()))
}

/// Asks the endpoint at `addr` for its probes and metrics.
pub fn fetch(addr: SocketAddr) -> Result<Report, StatusError> {
    let ready = get(addr, "/readyz")?;
    let live = get(addr, "/healthz")?;
    let metrics = get(addr, "/metrics")?;
    Ok(Report {
        addr,
        ready,
        live,
        metrics: Samples::parse(&metrics.body),
    })
}

/// One HTTP/1.1 GET, the connection closed after the answer.
fn get(addr: SocketAddr, path: &'static str) -> Result<Answer, StatusError> {
    let io = |source| StatusError::Io { addr, path, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: logship-status/{}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    parse_answer(&raw).map_err(|reason| StatusError::Malformed { addr, path, reason })
}

/// Status line, headers, and a body delimited by `Content-Length`, chunks, or the close.
fn parse_answer(raw: &[u8]) -> Result<Answer, &'static str> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err("no HTTP/1.x status line");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("no status code")?;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a header without a colon");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| "a bad Content-Length")?;
            body = body
                .get(..len)
                .ok_or("the body is shorter than its Content-Length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk cut short")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk cut short")?;
    }
}

/// The samples of a Prometheus text exposition, by name and labels.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// `name` -> (labels as written between the braces, value).
    by_name: BTreeMap<String, Vec<(String, f64)>>,
}

impl Samples {
    /// Reads every sample line; comments and lines that are not samples are skipped (this is a
    /// reader for a summary, not a validator).
    pub fn parse(text: &str) -> Samples {
        let mut samples = Samples::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, rest) = match line.find('{') {
                Some(open) => match closing_brace(line, open) {
                    Some(close) => (&line[..=close], &line[close + 1..]),
                    None => continue,
                },
                None => match line.split_once(' ') {
                    Some((name, rest)) => (name, rest),
                    None => continue,
                },
            };
            let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            samples
                .by_name
                .entry(name.to_string())
                .or_default()
                .push((labels.to_string(), value));
        }
        samples
    }

    /// The value of the series `name` whose labels include `label` (`key="value"`), or the
    /// unlabelled one for `None`.
    pub fn value(&self, name: &str, label: Option<&str>) -> Option<f64> {
        let series = self.by_name.get(name)?;
        series
            .iter()
            .find(|(labels, _)| match label {
                None => labels.is_empty(),
                Some(l) => labels.split(',').any(|part| part.trim() == l),
            })
            .map(|(_, v)| *v)
    }

    /// The sum of every series of `name` (0 if there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.by_name
            .get(name)
            .map_or(0.0, |s| s.iter().map(|(_, v)| v).sum())
    }

    /// The label set of the first series of `name` (for info metrics).
    pub fn labels(&self, name: &str) -> Option<&str> {
        self.by_name.get(name)?.first().map(|(l, _)| l.as_str())
    }

    /// The buckets of histogram `name` as (upper bound, cumulative count), in order.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = self
            .by_name
            .get(&format!("{name}_bucket"))
            .into_iter()
            .flatten()
            .filter_map(|(labels, count)| {
                let le = labels
                    .split(',')
                    .find_map(|p| p.trim().strip_prefix("le="))?
                    .trim_matches('"');
                Some((parse_value(le)?, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// The index of the `}` that closes the label set opened at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i),
            _ => {}
        }
    }
    None
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// The smallest bucket bound under which at least `q` of the observations fall, from cumulative
/// buckets: `None` without observations, infinity when they fall past the last bound.
pub fn quantile_bound(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(bound, _)| *bound)
}

/// The summary `logship status` prints.
pub fn render(report: &Report) -> String {
    let m = &report.metrics;
    let n = |name: &str| m.value(name, None).unwrap_or(0.0) as u64;
    let version = m
        .labels("logship_build_info")
        .and_then(|l| l.strip_prefix("version=\""))
        .map(|v| v.trim_end_matches('"'))
        .unwrap_or("?");
    let mut out = format!("logship {version} at http://{}\n", report.addr);
    // The probes' own words ("ready: ...", "not live: ..."), as the kubelet gets them.
    for (path, answer) in [("/readyz", &report.ready), ("/healthz", &report.live)] {
        match answer.status {
            200 | 503 => out += &format!("  {}\n", answer.body.trim()),
            other => out += &format!("  {path} answered {other}: {}\n", answer.body.trim()),
        }
    }
    out += &format!("  files     {} followed\n", n("logship_files_watched"));
    out += &format!(
        "  records   {} read, {} sent, {} dead-lettered, {} dropped\n",
        n("logship_read_records_total"),
        n("logship_sent_records_total"),
        n("logship_dead_lettered_records_total"),
        m.sum("logship_dropped_records_total") as u64,
    );
    out += &format!(
        "  retries   {} requests, {} records\n",
        n("logship_elasticsearch_request_retries_total"),
        n("logship_elasticsearch_items_retried_total"),
    );
    let used = n("logship_buffer_used_bytes");
    let capacity = n("logship_buffer_capacity_bytes");
    out += &format!(
        "  buffer    {} of {} ({}%)\n",
        ByteSize(used).display().iec(),
        ByteSize(capacity).display().iec(),
        used * 100 / capacity.max(1)
    );
    out += &bulk_line(m);
    out += &kubernetes_line(m);
    out
}

/// Enrichment, when the agent has talked to the Kubernetes API at all.
fn kubernetes_line(m: &Samples) -> String {
    let n = |name: &str| m.value(name, None).unwrap_or(0.0) as u64;
    let refused = m.sum("logship_kubernetes_refused_total") as u64;
    let errors = n("logship_kubernetes_watch_errors_total");
    let pods = n("logship_kubernetes_cached_pods");
    let reachable = n("logship_kubernetes_reachable") == 1;
    if !reachable && refused == 0 && errors == 0 && pods == 0 {
        return String::new();
    }
    let state = match n("logship_kubernetes_refused_status") {
        0 if reachable => "API reachable".to_string(),
        0 => "API not reachable".to_string(),
        status => format!("the API server refused the agent's credentials: {status}"),
    };
    format!(
        "  kubernetes {state}; {pods} pods cached, {errors} failed requests ({refused} refused)\n"
    )
}

fn bulk_line(m: &Samples) -> String {
    const LATENCY: &str = "logship_elasticsearch_request_duration_seconds";
    let count = m.value(&format!("{LATENCY}_count"), None).unwrap_or(0.0);
    if count == 0.0 {
        return "  bulk      no requests\n".into();
    }
    let mean = m.value(&format!("{LATENCY}_sum"), None).unwrap_or(0.0) / count;
    let class = |c: &str| {
        m.value(
            "logship_elasticsearch_responses_total",
            Some(&format!("class=\"{c}\"")),
        )
        .unwrap_or(0.0) as u64
    };
    let p99 = match quantile_bound(&m.buckets(LATENCY), 0.99) {
        Some(b) if b.is_finite() => format!("99% under {}", millis(b)),
        Some(_) => "99% beyond the last bucket".into(),
        None => String::new(),
    };
    format!(
        "  bulk      {} attempts, mean {}, {p99}; answers 2xx {}, 4xx {}, 5xx {}, none {}\n",
        count as u64,
        millis(mean),
        class("2xx"),
        class("4xx"),
        class("5xx"),
        class("none"),
    )
}

fn millis(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.0} ms", seconds * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP logship_build_info The running logship: its version.
# TYPE logship_build_info gauge
logship_build_info{version=\"0.1.0\"} 1
# TYPE logship_read_records_total counter
logship_read_records_total 1200
logship_sent_records_total 1100
logship_files_watched 3
logship_dropped_records_total{reason=\"dead_letter_evicted\"} 2
logship_dropped_records_total{reason=\"rate_limited\"} 5
logship_elasticsearch_responses_total{class=\"2xx\"} 9
logship_elasticsearch_responses_total{class=\"none\"} 1
logship_elasticsearch_request_duration_seconds_sum 0.5
logship_elasticsearch_request_duration_seconds_count 10
logship_elasticsearch_request_duration_seconds_bucket{le=\"0.01\"} 5
logship_elasticsearch_request_duration_seconds_bucket{le=\"0.05\"} 9
logship_elasticsearch_request_duration_seconds_bucket{le=\"0.1\"} 10
logship_elasticsearch_request_duration_seconds_bucket{le=\"+Inf\"} 10
logship_buffer_used_bytes 1048576
logship_buffer_capacity_bytes 4194304
logship_kubernetes_cached_pods 4
logship_kubernetes_watch_errors_total 3
logship_kubernetes_reachable 0
logship_kubernetes_refused_total{code=\"401\"} 3
logship_kubernetes_refused_total{code=\"403\"} 0
logship_kubernetes_refused_status 401
odd{a=\"x}y\",b=\"q\\\"\"} 7 1700000000
not a sample
";

    #[test]
    fn samples_by_name_and_label() {
        let s = Samples::parse(TEXT);
        assert_eq!(s.value("logship_read_records_total", None), Some(1200.0));
        assert_eq!(s.sum("logship_dropped_records_total"), 7.0);
        assert_eq!(
            s.value(
                "logship_elasticsearch_responses_total",
                Some("class=\"none\"")
            ),
            Some(1.0)
        );
        assert_eq!(
            s.value("odd", Some("b=\"q\\\"\"")),
            Some(7.0),
            "quotes, braces, timestamp"
        );
        assert_eq!(s.value("missing", None), None);
        assert_eq!(s.labels("logship_build_info"), Some("version=\"0.1.0\""));
        assert_eq!(
            s.buckets("logship_elasticsearch_request_duration_seconds"),
            [(0.01, 5.0), (0.05, 9.0), (0.1, 10.0), (f64::INFINITY, 10.0)]
        );
    }

    #[test]
    fn quantile_bounds() {
        let b = [(0.01, 5.0), (0.05, 9.0), (0.1, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile_bound(&b, 0.5), Some(0.01));
        assert_eq!(quantile_bound(&b, 0.9), Some(0.05));
        assert_eq!(quantile_bound(&b, 0.99), Some(0.1));
        assert_eq!(
            quantile_bound(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.99),
            None
        );
        assert_eq!(
            quantile_bound(&[(0.1, 0.0), (f64::INFINITY, 3.0)], 0.99),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn the_summary() {
        let report = Report {
            addr: "127.0.0.1:2020".parse().unwrap(),
            ready: Answer {
                status: 503,
                body: "not ready: Elasticsearch not reachable and the buffer is full\n".into(),
            },
            live: Answer {
                status: 200,
                body: "live: loops turning\n".into(),
            },
            metrics: Samples::parse(TEXT),
        };
        assert!(!report.healthy());
        let text = render(&report);
        let expected = "\
logship 0.1.0 at http://127.0.0.1:2020
  not ready: Elasticsearch not reachable and the buffer is full
  live: loops turning
  files     3 followed
  records   1200 read, 1100 sent, 0 dead-lettered, 7 dropped
  retries   0 requests, 0 records
  buffer    1.0 MiB of 4.0 MiB (25%)
  bulk      10 attempts, mean 50 ms, 99% under 100 ms; answers 2xx 9, 4xx 0, 5xx 0, none 1
  kubernetes the API server refused the agent's credentials: 401; 4 pods cached, 3 failed requests (3 refused)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn answers_by_length_chunks_or_close() {
        type Case<'a> = (&'a [u8], Result<(u16, &'a str), &'a str>);
        let cases: [Case; 6] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", Ok((200, "hello"))),
            (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nno\nextra", Ok((503, "no\n"))),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", Ok((200, "abcde"))),
            (b"HTTP/1.0 404 Not Found\r\n\r\nuntil close", Ok((404, "until close"))),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Err("no HTTP/1.x status line")),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", Err("the body is shorter than its Content-Length")),
        ];
        for (raw, expected) in cases {
            let got = parse_answer(raw).map(|a| (a.status, a.body));
            let expected = expected.map(|(s, b)| (s, b.to_string()));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn the_target_address() {
        let listen = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            (None, "0.0.0.0:2020", "127.0.0.1:2020"),
            (None, "[::]:2021", "[::1]:2021"),
            (None, "10.1.2.3:9000", "10.1.2.3:9000"),
            (Some("127.0.0.2:80"), "0.0.0.0:2020", "127.0.0.2:80"),
            (Some("localhost:2022"), "0.0.0.0:2020", "127.0.0.1:2022"),
        ];
        for (server, l, expected) in cases {
            let got = target(server, listen(l)).unwrap();
            // `localhost` may resolve to ::1 first on some machines.
            assert!(
                got == listen(expected)
                    || (server == Some("localhost:2022") && got.ip().is_loopback()),
                "{server:?} {l}: {got}"
            );
        }
        assert!(target(Some("no-port"), listen("0.0.0.0:1")).is_err());
    }
}
