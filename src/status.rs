//! `logship status`: asks a running agent how it is doing and prints a short summary for a
//! person.
//!
//! The agent serves its state as one JSON document, [`Status`], on `GET /status` (built by
//! `server` from the same values as `/readyz`, `/healthz` and `/metrics`, so `status`, the
//! kubelet and Prometheus never disagree). This module is both ends of it: the document's type,
//! the request (reqwest), and the summary ([`render`]), which is pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The path the agent serves the document on.
pub const PATH: &str = "/status";
/// How long connecting, and then the whole request, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Connecting, sending or reading failed.
    #[error("asking http://{addr}{PATH}: {source}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered, but not with a status document (an older logship, or not logship).
    #[error("asking http://{addr}{PATH}: answered {status}, not a status document (is this a logship of this version?)")]
    NotServed { addr: SocketAddr, status: u16 },
    /// The answer is not a status document of this version.
    #[error("asking http://{addr}{PATH}: not a status document: {source}")]
    Decode {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
    /// The runtime for the request could not be started.
    #[error("starting the runtime for the request: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The agent's state, as `GET /status` serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// `/readyz`: its answer and its words.
    pub ready: Probe,
    /// `/healthz`: its answer and its words.
    pub live: Probe,
    pub files_followed: u64,
    pub records: Records,
    pub retries: Retries,
    pub buffer: Buffer,
    pub bulk: Bulk,
    /// `None` when enrichment is off.
    pub kubernetes: Option<Kubernetes>,
}

/// A probe's verdict and the reason it gives (as the kubelet reads it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub ok: bool,
    pub reason: String,
}

/// Records since the agent started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    pub read: u64,
    pub sent: u64,
    pub dead_lettered: u64,
    /// Every reason together (rate limits in drop mode, dead letters evicted).
    pub dropped: u64,
}

/// Retried bulk requests and retried records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retries {
    pub requests: u64,
    pub records: u64,
}

/// The memory budget (`buffer.max_bytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

/// Bulk request attempts and their answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bulk {
    pub attempts: u64,
    /// `None` without attempts.
    pub mean_seconds: Option<f64>,
    /// The latency histogram's bucket bound under which 99% of the attempts fall; `None` without
    /// attempts or when they fall past the last bound (see `beyond_last_bucket`).
    pub p99_under_seconds: Option<f64>,
    pub p99_beyond_last_bucket: bool,
    pub answers: Answers,
}

/// Bulk attempts by answer class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// No answer: a connection error or the timeout.
    pub none: u64,
}

/// The Kubernetes API, when enrichment is on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kubernetes {
    pub reachable: bool,
    /// 401 or 403 while the API server refuses the agent's credentials.
    pub refused_status: Option<u16>,
    pub cached_pods: u64,
    pub failed_requests: u64,
    pub refused: u64,
}

impl Status {
    /// Ready and live.
    pub fn healthy(&self) -> bool {
        self.ready.ok && self.live.ok
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

/// Asks the agent at `addr` for its status document.
pub fn fetch(addr: SocketAddr) -> Result<Status, StatusError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Runtime)?;
    runtime.block_on(async {
        let request = |source| StatusError::Request { addr, source };
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .user_agent(concat!("logship-status/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(request)?;
        let answer = client
            .get(format!("http://{addr}{PATH}"))
            .send()
            .await
            .map_err(request)?;
        let status = answer.status().as_u16();
        if status != 200 {
            return Err(StatusError::NotServed { addr, status });
        }
        let body = answer.bytes().await.map_err(request)?;
        serde_json::from_slice(&body).map_err(|source| StatusError::Decode { addr, source })
    })
}

/// The summary `logship status` prints.
pub fn render(addr: SocketAddr, status: &Status) -> String {
    let mut out = format!("logship {} at http://{addr}\n", status.version);
    // The probes' own words ("ready: ...", "not live: ..."), as the kubelet gets them.
    out += &format!("  {}\n", status.ready.reason.trim());
    out += &format!("  {}\n", status.live.reason.trim());
    out += &format!("  files     {} followed\n", status.files_followed);
    let r = &status.records;
    out += &format!(
        "  records   {} read, {} sent, {} dead-lettered, {} dropped\n",
        r.read, r.sent, r.dead_lettered, r.dropped,
    );
    out += &format!(
        "  retries   {} requests, {} records\n",
        status.retries.requests, status.retries.records,
    );
    let b = &status.buffer;
    out += &format!(
        "  buffer    {} of {} ({}%)\n",
        ByteSize(b.used_bytes).display().iec(),
        ByteSize(b.capacity_bytes).display().iec(),
        b.used_bytes * 100 / b.capacity_bytes.max(1)
    );
    out += &bulk_line(&status.bulk);
    if let Some(k) = &status.kubernetes {
        out += &kubernetes_line(k);
    }
    out
}

fn kubernetes_line(k: &Kubernetes) -> String {
    let state = match k.refused_status {
        None if k.reachable => "API reachable".to_string(),
        None => "API not reachable".to_string(),
        Some(status) => format!("the API server refused the agent's credentials: {status}"),
    };
    format!(
        "  kubernetes {state}; {} pods cached, {} failed requests ({} refused)\n",
        k.cached_pods, k.failed_requests, k.refused
    )
}

fn bulk_line(bulk: &Bulk) -> String {
    let Some(mean) = bulk.mean_seconds.filter(|_| bulk.attempts > 0) else {
        return "  bulk      no requests\n".into();
    };
    let p99 = match bulk.p99_under_seconds {
        Some(bound) => format!("99% under {}", millis(bound)),
        None if bulk.p99_beyond_last_bucket => "99% beyond the last bucket".into(),
        None => String::new(),
    };
    let a = &bulk.answers;
    format!(
        "  bulk      {} attempts, mean {}, {p99}; answers 2xx {}, 4xx {}, 5xx {}, none {}\n",
        bulk.attempts,
        millis(mean),
        a.success,
        a.client_error,
        a.server_error,
        a.none,
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

    fn example() -> Status {
        Status {
            version: "0.1.0".into(),
            ready: Probe {
                ok: false,
                reason: "not ready: Elasticsearch not reachable and the buffer is full\n".into(),
            },
            live: Probe {
                ok: true,
                reason: "live: loops turning".into(),
            },
            files_followed: 3,
            records: Records {
                read: 1200,
                sent: 1100,
                dead_lettered: 0,
                dropped: 7,
            },
            retries: Retries {
                requests: 0,
                records: 0,
            },
            buffer: Buffer {
                used_bytes: 1 << 20,
                capacity_bytes: 4 << 20,
            },
            bulk: Bulk {
                attempts: 10,
                mean_seconds: Some(0.05),
                p99_under_seconds: Some(0.1),
                p99_beyond_last_bucket: false,
                answers: Answers {
                    success: 9,
                    client_error: 0,
                    server_error: 0,
                    none: 1,
                },
            },
            kubernetes: Some(Kubernetes {
                reachable: false,
                refused_status: Some(401),
                cached_pods: 4,
                failed_requests: 3,
                refused: 3,
            }),
        }
    }

    #[test]
    fn the_summary() {
        let status = example();
        assert!(!status.healthy());
        let text = render("127.0.0.1:2020".parse().unwrap(), &status);
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
    fn a_quiet_agent_without_enrichment() {
        let mut status = example();
        status.kubernetes = None;
        status.bulk = Bulk {
            attempts: 0,
            mean_seconds: None,
            p99_under_seconds: None,
            p99_beyond_last_bucket: false,
            answers: Answers {
                success: 0,
                client_error: 0,
                server_error: 0,
                none: 0,
            },
        };
        let text = render("127.0.0.1:2020".parse().unwrap(), &status);
        assert!(text.ends_with("  bulk      no requests\n"), "{text}");
        status.bulk.attempts = 2;
        status.bulk.mean_seconds = Some(90.0);
        status.bulk.p99_beyond_last_bucket = true;
        let text = render("127.0.0.1:2020".parse().unwrap(), &status);
        assert!(
            text.contains("2 attempts, mean 90.0 s, 99% beyond the last bucket;"),
            "{text}"
        );
    }

    /// The document's wire form: what an agent serves and `status` reads back, field names as
    /// the README documents them.
    #[test]
    fn the_document_round_trips_as_json() {
        let status = example();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["bulk"]["answers"]["2xx"], 9);
        assert_eq!(json["kubernetes"]["refused_status"], 401);
        assert_eq!(json["ready"]["ok"], false);
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
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
