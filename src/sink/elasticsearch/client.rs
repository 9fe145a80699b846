//! The HTTP side of the Elasticsearch sink: hosts, authentication, TLS, one attempt at a time.
//!
//! [`Client`] sends one request to one host and reports what happened; it never retries (the
//! request loop in `mod.rs` does, with the policy of `retry.rs`). It keeps the health of every
//! host: hosts are used round-robin, a host that failed is taken out for a backoff that grows with
//! its consecutive failures, and once that backoff has passed it is probed with `GET /` before
//! bulk requests go to it again. When every host is out, callers wait for the first to come back:
//! nothing is dropped because a cluster is unreachable.
//!
//! Answers are read chunk by chunk up to a bound ([`answer_limit`]): a bulk answer for N items has
//! a known size order, and a proxy or a broken server that sends more must not make the agent hold
//! it all in memory. Past the bound the answer is not read further and the attempt fails
//! ([`ClientError::AnswerTooLarge`]), so its records are sent again, never taken as delivered.
//!
//! Secrets (passwords, API keys, tokens) live in [`Secret`], whose `Debug` prints `***`; they only
//! leave it to become an `Authorization` header. A bearer token is read from a file and read again
//! when the file changes (projected service account tokens and Vault agents rotate them).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Url;
use serde::Deserialize;

use super::bulk::BulkBody;
use super::retry::Backoff;
use crate::telemetry::{self, metrics};

/// The most an answer other than a bulk answer (the banner, a template) may hold.
pub const ANSWER_BASE_BYTES: usize = 1 << 20;

/// What each bulk item may add: a filtered item answer is about 25 bytes, one with an error a few
/// hundred.
pub const ANSWER_ITEM_BYTES: usize = 1024;

/// The most the answer to a bulk request of `items` items and `raw_bytes` bytes (before
/// compression) may hold: [`ANSWER_BASE_BYTES`], [`ANSWER_ITEM_BYTES`] per item, and the request's
/// size again, since an error's reason can quote the value it refuses.
pub const fn answer_limit(items: usize, raw_bytes: usize) -> usize {
    ANSWER_BASE_BYTES
        .saturating_add(items.saturating_mul(ANSWER_ITEM_BYTES))
        .saturating_add(raw_bytes)
}

/// A secret string: masked in `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A secret given in the configuration, or the file that holds it (a mounted Secret), read
/// when the client is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Value(Secret),
    File(PathBuf),
}

impl SecretSource {
    fn resolve(&self) -> Result<Secret, ClientError> {
        match self {
            SecretSource::Value(secret) => Ok(secret.clone()),
            SecretSource::File(path) => Ok(Secret::new(crate::credentials::read(path)?)),
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// HTTP basic authentication.
    Basic {
        user: String,
        password: SecretSource,
    },
    /// `Authorization: ApiKey <value>`; the value is the base64 of `id:key`, as Elasticsearch's
    /// create API key answer gives it in `encoded`.
    ApiKey(SecretSource),
    /// `Authorization: Bearer <token>`, the token read from a file and re-read when it changes.
    Bearer {
        token_file: PathBuf,
    },
}

/// TLS towards Elasticsearch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Extra trusted CA certificates (PEM), on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with its key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Logged as a warning at start: it defeats TLS.
    pub insecure_skip_verify: bool,
}

/// What the client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    pub hosts: Vec<Url>,
    pub auth: Auth,
    pub tls: TlsSettings,
    /// How long one request may take, connection included.
    pub request_timeout: Duration,
    /// How long a failing host stays out (grows with consecutive failures).
    pub host_backoff: Backoff,
    /// An ingest pipeline every bulk request goes through.
    pub pipeline: Option<String>,
}

/// Errors building the client (reading certificates), or of one attempt.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("{host}: {source}")]
    Transport {
        host: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{host}: HTTP {status} answer larger than {limit} bytes, not read further; the request counts as failed")]
    AnswerTooLarge {
        host: Url,
        status: u16,
        limit: usize,
    },
    #[error("{host}: HTTP {status}: {body}")]
    Status {
        host: Url,
        status: u16,
        body: String,
    },
    #[error("{host}: unexpected answer to GET /: {source}")]
    Banner {
        host: Url,
        #[source]
        source: serde_json::Error,
    },
    /// A password, API key or bearer token file (see `credentials`).
    #[error(transparent)]
    Credential(#[from] crate::credentials::CredentialError),
}

/// What `GET /` says about the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// "elasticsearch" or "opensearch".
    pub distribution: String,
    pub version: String,
    pub cluster_name: String,
}

impl ClusterInfo {
    /// The major version number, if it parses.
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }
}

/// Which host to use next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// Use host `index`; `probe` if it is coming back from a failure and must answer `GET /`
    /// first.
    Use { index: usize, probe: bool },
    /// Every host is out; the first comes back after this long.
    Wait(Duration),
}

#[derive(Clone, Copy, Debug, Default)]
struct HostState {
    failures: u32,
    down_until: Option<Instant>,
}

/// Round-robin over hosts, skipping those that are out.
#[derive(Debug)]
pub struct Hosts {
    urls: Vec<Url>,
    states: Mutex<Vec<HostState>>,
    next: AtomicUsize,
    backoff: Backoff,
}

impl Hosts {
    pub fn new(urls: Vec<Url>, backoff: Backoff) -> Self {
        let states = Mutex::new(vec![HostState::default(); urls.len()]);
        Hosts {
            urls,
            states,
            next: AtomicUsize::new(0),
            backoff,
        }
    }

    pub fn url(&self, index: usize) -> &Url {
        &self.urls[index]
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The next host to use at `now`.
    pub fn pick(&self, now: Instant) -> Pick {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let n = states.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            if states[i].down_until.is_none() {
                return Pick::Use {
                    index: i,
                    probe: false,
                };
            }
        }
        let mut soonest = None::<(usize, Instant)>;
        for (i, s) in states.iter().enumerate() {
            if let Some(until) = s.down_until {
                if soonest.is_none_or(|(_, t)| until < t) {
                    soonest = Some((i, until));
                }
            }
        }
        match soonest {
            Some((i, until)) if until <= now => Pick::Use {
                index: i,
                probe: true,
            },
            Some((_, until)) => Pick::Wait(until - now),
            None => Pick::Wait(Duration::from_millis(100)),
        }
    }

    /// The host answered well.
    pub fn succeeded(&self, index: usize) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if states[index].down_until.is_some() {
            tracing::info!(host = %self.urls[index], "Elasticsearch host is back.");
        }
        states[index] = HostState::default();
    }

    /// The host failed at `now`: out for a backoff that grows with its failures.
    pub fn failed(&self, index: usize, now: Instant) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut states[index];
        // At least a quarter of the cap, so a host that just failed is not picked again at once.
        let cap = self.backoff.cap(s.failures);
        let wait = cap / 4 + self.backoff.delay(s.failures) * 3 / 4;
        s.failures = s.failures.saturating_add(1);
        s.down_until = Some(now + wait);
    }

    /// How many hosts are in service.
    pub fn healthy(&self) -> usize {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.iter().filter(|s| s.down_until.is_none()).count()
    }
}

/// The `Authorization` value `<scheme> <credential>`, the credential from `source`.
fn auth_value(
    scheme: &str,
    credential: &str,
    source: &SecretSource,
) -> Result<HeaderValue, ClientError> {
    let origin = match source {
        SecretSource::File(path) => path.display().to_string(),
        SecretSource::Value(_) => "output.elasticsearch.auth".to_owned(),
    };
    Ok(crate::credentials::header(scheme, credential, &origin)?)
}

/// Talks to the cluster.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    pub hosts: Hosts,
    /// The `Authorization` header for basic and API key authentication, built once.
    auth_header: Option<HeaderValue>,
    /// The token file for bearer authentication, read again when it rotates.
    token_file: Option<crate::credentials::TokenFile>,
    pipeline: Option<String>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Client {
    /// Builds the HTTP client; reads the CA and client certificate files.
    pub fn build(settings: &ClientSettings) -> Result<Client, ClientError> {
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("logship/", env!("CARGO_PKG_VERSION")));
        let tls = &settings.tls;
        if let Some(path) = &tls.ca_file {
            let pem = read(path, "CA file")?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(not_pem("CA file", path))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = read(cert, "client certificate")?;
            pem.push(b'\n');
            pem.extend(read(key, "client key")?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(not_pem("client certificate and key", cert))?;
            builder = builder.identity(identity);
        }
        if tls.insecure_skip_verify {
            tracing::warn!("elasticsearch.tls.insecure_skip_verify is on: server certificates are not checked, anyone on the path can read and change what is sent.");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        let (auth_header, token_file) = match &settings.auth {
            Auth::None => (None, None),
            Auth::Basic { user, password } => {
                use base64::Engine as _;
                let secret = password.resolve()?;
                let pair = format!("{user}:{}", secret.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                (Some(auth_value("Basic", &encoded, password)?), None)
            }
            Auth::ApiKey(key) => {
                let secret = key.resolve()?;
                (Some(auth_value("ApiKey", secret.expose(), key)?), None)
            }
            Auth::Bearer { token_file } => (
                None,
                Some(crate::credentials::TokenFile::new(token_file.clone())),
            ),
        };
        Ok(Client {
            http,
            hosts: Hosts::new(settings.hosts.clone(), settings.host_backoff),
            auth_header,
            token_file,
            pipeline: settings.pipeline.clone(),
        })
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        if let Some(h) = &self.auth_header {
            return Ok(req.header(AUTHORIZATION, h.clone()));
        }
        if let Some(token) = &self.token_file {
            return Ok(req.header(AUTHORIZATION, token.bearer()?));
        }
        Ok(req)
    }

    /// `GET /` on host `index`: the cluster's banner.
    pub async fn info(&self, index: usize) -> Result<ClusterInfo, ClientError> {
        let host = self.hosts.url(index).clone();
        let answer = self.get(index, "").await?;
        if !(200..300).contains(&answer.status) {
            return Err(ClientError::Status {
                host,
                status: answer.status,
                body: super::retry::error_summary(&answer.body),
            });
        }
        #[derive(Deserialize)]
        struct Banner {
            #[serde(default)]
            cluster_name: String,
            version: Version,
        }
        #[derive(Deserialize)]
        struct Version {
            number: String,
            #[serde(default)]
            distribution: Option<String>,
        }
        let banner: Banner = serde_json::from_slice(&answer.body)
            .map_err(|source| ClientError::Banner { host, source })?;
        Ok(ClusterInfo {
            distribution: banner
                .version
                .distribution
                .unwrap_or_else(|| "elasticsearch".into()),
            version: banner.version.number,
            cluster_name: banner.cluster_name,
        })
    }

    /// `GET <path>` on host `index`.
    pub async fn get(&self, index: usize, path: &str) -> Result<Answer, ClientError> {
        let url = self.endpoint(index, path);
        let req = self.authorize(self.http.get(url))?;
        self.send(index, req, ANSWER_BASE_BYTES).await
    }

    /// `PUT <path>` with a JSON body on host `index`.
    pub async fn put_json(
        &self,
        index: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ClientError> {
        let url = self.endpoint(index, path);
        let req = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let req = self.authorize(req)?;
        self.send(index, req, ANSWER_BASE_BYTES).await
    }

    /// `POST /_bulk` with `body` on host `index`.
    pub async fn bulk(
        &self,
        index: usize,
        body: &BulkBody<impl Sized>,
    ) -> Result<Answer, ClientError> {
        let mut url = self.endpoint(index, "_bulk");
        {
            let mut query = url.query_pairs_mut();
            // Only what the retry policy reads: smaller answers, faster parsing.
            query.append_pair("filter_path", "errors,items.*.status,items.*.error");
            if let Some(p) = &self.pipeline {
                query.append_pair("pipeline", p);
            }
        }
        let mut req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body.bytes.clone());
        if body.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let req = self.authorize(req)?;
        let limit = answer_limit(body.items.len(), body.raw_bytes);
        self.send(index, req, limit).await
    }

    /// Sends `req` and reads its answer, at most `limit` bytes of it.
    async fn send(
        &self,
        index: usize,
        req: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Answer, ClientError> {
        let host = || self.hosts.url(index).clone();
        let transport = |source| ClientError::Transport {
            host: host(),
            source,
        };
        let mut response = req.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let too_large = || {
            telemetry::add(&metrics().es_oversized_answers, 1);
            ClientError::AnswerTooLarge {
                host: host(),
                status,
                limit,
            }
        };
        // Dropping the response closes the connection instead of reading the rest of it.
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::with_capacity((announced as usize).min(64 * 1024));
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body: body.freeze(),
        })
    }

    fn endpoint(&self, index: usize, path: &str) -> Url {
        let mut url = self.hosts.url(index).clone();
        // Keep a path prefix (a proxy at https://proxy/es/): append, don't replace.
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{path}"));
        url
    }
}

/// The error for `what` in `path` that reqwest could not read as PEM.
fn not_pem(what: &'static str, path: &Path) -> impl FnOnce(reqwest::Error) -> ClientError {
    let path = path.to_path_buf();
    move |source| ClientError::Pem { what, path, source }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Hosts {
        let urls = (0..n)
            .map(|i| Url::parse(&format!("http://es-{i}:9200")).unwrap())
            .collect();
        Hosts::new(
            urls,
            Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn round_robin_skips_failed_hosts_and_probes_them_when_due() {
        let h = hosts(3);
        let now = Instant::now();
        let used: Vec<_> = (0..3).map(|_| h.pick(now)).collect();
        assert_eq!(
            used,
            (0..3)
                .map(|index| Pick::Use {
                    index,
                    probe: false
                })
                .collect::<Vec<_>>()
        );
        h.failed(1, now);
        for _ in 0..6 {
            assert!(matches!(h.pick(now), Pick::Use { index, probe: false } if index != 1));
        }
        h.failed(0, now);
        h.failed(2, now);
        assert_eq!(h.healthy(), 0);
        assert!(
            matches!(h.pick(now), Pick::Wait(d) if d > Duration::ZERO && d <= Duration::from_secs(1))
        );
        let later = now + Duration::from_secs(2);
        assert!(matches!(h.pick(later), Pick::Use { probe: true, .. }));
        h.succeeded(1);
        assert_eq!(
            h.pick(later),
            Pick::Use {
                index: 1,
                probe: false
            }
        );
    }

    #[test]
    fn backoff_of_a_host_grows_with_its_failures() {
        let h = hosts(1);
        let now = Instant::now();
        for _ in 0..10 {
            h.failed(0, now);
        }
        let Pick::Wait(d) = h.pick(now) else { panic!() };
        assert!(d >= Duration::from_secs(15), "{d:?}");
    }

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let settings = ClientSettings {
            hosts: vec![
                Url::parse("http://es:9200").unwrap(),
                Url::parse("https://proxy/es/").unwrap(),
            ],
            auth: Auth::None,
            tls: TlsSettings::default(),
            request_timeout: Duration::from_secs(1),
            host_backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            pipeline: None,
        };
        let c = Client::build(&settings).unwrap();
        assert_eq!(c.endpoint(0, "_bulk").as_str(), "http://es:9200/_bulk");
        assert_eq!(c.endpoint(1, "_bulk").as_str(), "https://proxy/es/_bulk");
        assert_eq!(c.endpoint(0, "").as_str(), "http://es:9200/");
    }

    fn local_client(addr: std::net::SocketAddr) -> Client {
        Client::build(&ClientSettings {
            hosts: vec![Url::parse(&format!("http://{addr}")).unwrap()],
            auth: Auth::None,
            tls: TlsSettings::default(),
            request_timeout: Duration::from_secs(60),
            host_backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            pipeline: None,
        })
        .unwrap()
    }

    /// Serves one connection: reads the request head, writes `head`, then `chunk` as HTTP chunks
    /// for as long as the client reads them. Returns how many bytes of body were written.
    async fn endless_answer(
        listener: tokio::net::TcpListener,
        head: &'static str,
    ) -> std::io::Result<usize> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(0);
            }
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(head.as_bytes()).await?;
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
        let mut written = 0;
        loop {
            if conn.write_all(chunk.as_bytes()).await.is_err() {
                return Ok(written);
            }
            written += 64 * 1024;
        }
    }

    fn body(items: usize) -> BulkBody<usize> {
        let mut b = super::super::bulk::BulkBuilder::new(super::super::retry::OpType::Create, None);
        for i in 0..items {
            b.push("logs", b"id", i, |out| out.extend_from_slice(b"{}"));
        }
        b.finish().unwrap()
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_its_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = local_client(listener.local_addr().unwrap());
        let server = tokio::spawn(endless_answer(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        ));
        let body = body(10);
        let limit = answer_limit(10, body.raw_bytes);
        let started = Instant::now();
        let err = client.bulk(0, &body).await.unwrap_err();
        assert!(
            matches!(err, ClientError::AnswerTooLarge { status: 200, limit: l, .. } if l == limit),
            "{err}"
        );
        assert!(err.to_string().contains("answer larger than"), "{err}");
        // Cut at the bound, not at the request timeout.
        assert!(started.elapsed() < Duration::from_secs(30));
        let written = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the connection was closed")
            .unwrap()
            .unwrap();
        assert!(
            written < 64 * limit,
            "{written} bytes written for a bound of {limit}"
        );
    }

    #[tokio::test]
    async fn an_announced_oversized_answer_is_not_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = local_client(listener.local_addr().unwrap());
        tokio::spawn(endless_answer(
            listener,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1099511627776\r\n\r\n",
        ));
        let err = client.get(0, "").await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::AnswerTooLarge {
                    limit: ANSWER_BASE_BYTES,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let auth = Auth::Basic {
            user: "elastic".into(),
            password: SecretSource::Value(Secret::new("hunter2".into())),
        };
        let text = format!("{auth:?}");
        assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
    }
}
