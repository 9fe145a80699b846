//! Fault injection: random, seeded interleavings of container writes, kubelet rotations (rename,
//! gzip of older generations, deletion past `containerLogMaxFiles`), logrotate's copytruncate,
//! agent SIGTERM and kill -9 restarts with downtime in between, Elasticsearch faults (503 and
//! outages, 429 for requests and items, timeouts and dropped answers, 413 below a proxy's limit,
//! item-level 403) and API server faults (401, token rotation, outages), against the real binary,
//! the test Elasticsearch and the test API server.
//!
//! The model knows every line written and where it went. At the end, every line is in
//! Elasticsearch exactly once, or it was in a generation the kubelet deleted, and then: deleted
//! while an agent ran, its bytes are counted in `logship_lost_bytes_total`; deleted while no agent
//! ran, it is reported (nothing can read or measure a file that came and went while the agent was
//! down) but not a failure. Lines written once the faults are over carry their pod's metadata.
//! A failing case prints the lines missing or duplicated, per file generation, and its event log.
//!
//! The files are laid out as the kubelet lays them out: `pods/<ns>_<pod>_<uid>/<container>/0.log`
//! written by the runtime through a descriptor it holds, rotated to `0.log.<timestamp>` (the
//! newest rotated generation stays plain, older ones are gzipped), and a
//! `containers/<pod>_<ns>_<container>-<id>.log` symlink that the agent follows.
//!
//! Environment:
//! - `LOGSHIP_FAULT_CASES` (default 3): cases to run.
//! - `LOGSHIP_FAULT_SEED`: the first case's seed (default 20261204, the same sequences every run;
//!   `random`: from the clock); case `i` uses seed + i.
//!   A failing case prints the variables that run it again: the sequence of faults is the same,
//!   the timing of the agent is not.
//! - `LOGSHIP_FAULT_KINDS` (default `all`): the fault kinds that may happen, comma-separated;
//!   `all,-kill9` is all but one. Writes always happen. Kinds: see [`Kind::ALL`].
//! - `LOGSHIP_FAULT_STEPS` (default 12): steps per case.
//! - `LOGSHIP_FAULT_VERBOSE`: print the event log of every case, not only of failing ones.

#[path = "faults/plan.rs"]
mod plan;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plan::{Kind, Plan, Rng};
use support::agent::{cri, http_get, wait_until, AgentProcess, Fixture};
use support::elasticsearch::{DropPoint, Flavor, ItemRule, TestEs};
use support::kubernetes::{file_name, namespace, pod, TestKube};
use support::prometheus;

const INDEX: &str = "logs-logship-default";
const NODE: &str = "test-node";
const NAMESPACE: &str = "shop";
/// The pods whose containers write, each with one container named after its app.
const PODS: [(&str, &str); 2] = [("web-7d4b9-x2x9k", "web"), ("api-5f6d8-q8w7e", "api")];
/// How long the kubelet's rotation waits, at most, for the agent to open a new generation: its
/// `containerLogMonitorInterval` (10 s), well above the 1 s in which the agent must open it.
const KUBELET_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// How long a started agent has to find what is on disk before a deletion counts against it, and
/// how long it has to notice a deletion (and count what it lost) before it is stopped: the 1 s
/// within which it finds a new file or a rotation, and a margin for a loaded machine.
const FIND_WITHIN: Duration = Duration::from_secs(2);
/// How long the end of a case waits for every line to arrive once the faults are over.
const DRAIN: Duration = Duration::from_secs(60);
/// ... or once nothing more arrived for this long.
const STALL: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The model: files, generations, lines

/// One line written.
struct Line {
    file: usize,
    generation: usize,
    seq: usize,
    message: String,
    /// Its bytes in the file (the whole CRI line).
    bytes: u64,
}

/// Why a generation's file is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deleted {
    /// Deleted by the kubelet while an agent was running: unread bytes must be counted as lost.
    WhileRunning,
    /// Deleted while no agent ran, or before a freshly started one could have found it
    /// ([`FIND_WITHIN`]): reported, not a failure.
    WhileDown,
    /// Truncated by copytruncate, the copy not followed: what was not shipped before is gone, as
    /// documented. Reported, not a failure.
    Truncated,
}

/// A file a container (or the copytruncated application) writes to.
struct LogFile {
    /// `c0`, `c1`, ... or `ct`.
    tag: String,
    /// The path the writer opens: `.../0.log` or `app/ct.log`.
    live: PathBuf,
    /// The descriptor the writer holds (the container runtime's), opened for appending.
    writer: fs::File,
    generation: usize,
    seq: usize,
    /// Rotated generations still on disk, oldest first: (generation, path as it is now).
    rotated: Vec<(usize, PathBuf)>,
    /// Pod and app, for a container's file.
    pod: Option<(&'static str, &'static str)>,
}

fn open_append(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Something to undo once its time has come (a fault that lasts a while).
enum Heal {
    EsUp,
    EsClearItems,
    EsDelay,
    EsBodyLimit,
    KubeUp,
    /// Writes the token file with the token the API server requires now.
    TokenFile(String),
}

/// A running case.
struct Case {
    rng: Rng,
    kinds: Vec<Kind>,
    started: Instant,
    events: Vec<String>,
    fx: Fixture,
    es: TestEs,
    kube: TestKube,
    agent: Option<AgentProcess>,
    /// When the running agent (or the last one) was started.
    agent_started: Instant,
    /// Generations deleted while this agent ran, and when.
    recent_deletions: Vec<((usize, usize), Instant)>,
    env: Vec<(String, String)>,
    files: Vec<LogFile>,
    lines: Vec<Line>,
    deleted: HashMap<(usize, usize), Deleted>,
    /// Steps of downtime left while the agent is stopped.
    downtime: u64,
    heals: Vec<(Instant, Heal)>,
    token_file: PathBuf,
    token_newline: bool,
    tokens: usize,
    /// Whether the include pattern covers logrotate's copies of `ct.log`.
    ct_copies_followed: bool,
    max_files: usize,
    /// `logship_lost_bytes_total` of the agents that ran before, and the last value seen of the
    /// one running.
    lost_before: f64,
    lost_now: f64,
    /// A body limit that stays: a proxy in front of Elasticsearch.
    proxy_limit: Option<usize>,
    fake_clock: chrono::DateTime<chrono::Utc>,
    counts: BTreeMap<&'static str, usize>,
}

impl Case {
    fn log(&mut self, text: impl AsRef<str>) {
        let at = self.started.elapsed().as_secs_f64();
        self.events.push(format!("[{at:7.3}s] {}", text.as_ref()));
    }

    fn has(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    fn new(seed: u64, kinds: &[Kind]) -> Case {
        let mut rng = Rng(seed);
        let es = TestEs::start(Flavor::Elasticsearch8);
        let kube = TestKube::start();
        kube.create_namespace(namespace(NAMESPACE).label("team", "payments").build());
        let fx = Fixture::new();
        let root = fx.dir.path().join("var/log");
        let containers = root.join("containers");
        fs::create_dir_all(&containers).unwrap();
        let mut files = Vec::new();
        for (i, (name, app)) in PODS.into_iter().enumerate() {
            let created = kube.create_pod(
                pod(NAMESPACE, name, NODE)
                    .replica_set(&name[..name.rfind('-').unwrap()])
                    .build(),
            );
            let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
            let dir = root.join(format!("pods/{NAMESPACE}_{name}_{uid}/{app}"));
            fs::create_dir_all(&dir).unwrap();
            let live = dir.join("0.log");
            let writer = open_append(&live);
            std::os::unix::fs::symlink(&live, containers.join(file_name(NAMESPACE, name, app)))
                .unwrap();
            files.push(LogFile {
                tag: format!("c{i}"),
                live,
                writer,
                generation: 0,
                seq: 0,
                rotated: Vec::new(),
                pod: Some((name, app)),
            });
        }
        let app = root.join("app");
        fs::create_dir_all(&app).unwrap();
        let ct = app.join("ct.log");
        files.push(LogFile {
            tag: "ct".into(),
            writer: open_append(&ct),
            live: ct,
            generation: 0,
            seq: 0,
            rotated: Vec::new(),
            pod: None,
        });

        let token_newline = kinds.contains(&Kind::TokenNewline);
        let token_file = fx.dir.path().join("token");
        kube.require_token("token-0");
        write_token(&token_file, "token-0", token_newline);
        let max_deleted = if kinds.contains(&Kind::Delete) && rng.chance(50) {
            "0"
        } else {
            "256"
        };
        let read_from = if kinds.contains(&Kind::ReadFromTail) {
            "tail"
        } else {
            "head"
        };
        // logrotate's copies are followed (the README's way to save what copytruncate would
        // lose) or not.
        let ct_copies_followed = rng.chance(50);
        let include = format!(
            "[\"{}/*.log\",\"{}/ct.log{}\"]",
            containers.display(),
            app.display(),
            if ct_copies_followed { "*" } else { "" }
        );
        let env: Vec<(String, String)> = [
            ("LOGSHIP_TAIL__INCLUDE", include),
            ("LOGSHIP_TAIL__READ_FROM", read_from.into()),
            ("LOGSHIP_TAIL__MAX_DELETED_FILES", max_deleted.into()),
            ("LOGSHIP_OUTPUT__TYPE", "elasticsearch".into()),
            ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", es.url()),
            (
                "LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__TIMEOUT",
                "50ms".into(),
            ),
            (
                "LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__INITIAL_BACKOFF",
                "10ms".into(),
            ),
            (
                "LOGSHIP_OUTPUT__ELASTICSEARCH__RETRY__MAX_BACKOFF",
                "300ms".into(),
            ),
            // Generous for a loaded machine: a debug-built test server on a busy core can take a
            // second to answer, and a timeout then would be a fault nobody injected.
            (
                "LOGSHIP_OUTPUT__ELASTICSEARCH__REQUEST_TIMEOUT",
                "3s".into(),
            ),
            ("LOGSHIP_KUBERNETES__ENABLED", "true".into()),
            ("LOGSHIP_KUBERNETES__API_URL", kube.url()),
            (
                "LOGSHIP_KUBERNETES__TOKEN_FILE",
                token_file.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // containerLogMaxFiles: its minimum when deletion is a fault kind; else nothing is deleted,
        // so that the other kinds are judged without it.
        let max_files = if kinds.contains(&Kind::Delete) {
            2
        } else {
            usize::MAX
        };
        let mut case = Case {
            rng,
            kinds: kinds.to_vec(),
            started: Instant::now(),
            events: Vec::new(),
            fx,
            es,
            kube,
            agent: None,
            agent_started: Instant::now(),
            recent_deletions: Vec::new(),
            env,
            files,
            lines: Vec::new(),
            deleted: HashMap::new(),
            downtime: 0,
            heals: Vec::new(),
            token_file,
            token_newline,
            tokens: 0,
            ct_copies_followed,
            max_files,
            lost_before: 0.0,
            lost_now: 0.0,
            proxy_limit: None,
            fake_clock: chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            counts: BTreeMap::new(),
        };
        case.log(format!(
            "setup: read_from={read_from} max_deleted_files={max_deleted} containerLogMaxFiles={} token file ends in a newline: {token_newline}, copytruncate copies followed: {ct_copies_followed}",
            if max_files == usize::MAX { "unbounded".to_string() } else { max_files.to_string() }
        ));
        case.start_agent();
        case
    }

    // ---- the agent ----

    fn start_agent(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let agent = self.fx.spawn(&env);
        self.lost_now = 0.0;
        self.agent = Some(agent);
        self.agent_started = Instant::now();
        self.log("agent started");
    }

    /// Reads the running agent's counters it is judged by.
    fn scrape(&mut self) -> Option<prometheus::Exposition> {
        let agent = self.agent.as_mut()?;
        if !agent.running() {
            return None;
        }
        let (status, _, body) = http_get(agent.server_addr(), "/metrics");
        if status != 200 {
            return None;
        }
        let metrics = prometheus::parse(&body).ok()?;
        if let Some(lost) =
            metrics.value("logship_lost_bytes_total", &[("reason", "deleted_unread")])
        {
            self.lost_now = lost;
        }
        Some(metrics)
    }

    fn stop_agent(&mut self, graceful: bool) -> Result<(), String> {
        self.scrape();
        // An agent stopped right after a deletion had no time to notice it and count what it
        // lost: the deletion is judged as one while no agent ran.
        for (key, at) in std::mem::take(&mut self.recent_deletions) {
            if at.elapsed() < FIND_WITHIN {
                self.deleted.insert(key, Deleted::WhileDown);
                self.log(format!(
                    "{} g{}: deleted {:?} before the stop, judged as deleted while down",
                    self.files[key.0].tag,
                    key.1,
                    at.elapsed()
                ));
            }
        }
        let mut agent = self.agent.take().expect("running");
        self.lost_before += self.lost_now;
        self.lost_now = 0.0;
        if graceful {
            let status = agent.terminate();
            self.log(format!("agent stopped by SIGTERM: {status}"));
            if !status.success() {
                return Err(format!("SIGTERM: the agent exited with {status}"));
            }
        } else {
            agent.kill9();
            self.log("agent killed (kill -9)");
        }
        Ok(())
    }

    /// Whether the agent holds `path`'s file open (its `/proc/<pid>/fd`).
    fn agent_holds(&self, path: &Path) -> bool {
        let Some(agent) = &self.agent else {
            return false;
        };
        let Ok(want) = fs::metadata(path) else {
            return false;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", agent.child.id())) else {
            return false;
        };
        fds.flatten().any(|fd| {
            fs::metadata(fd.path()).is_ok_and(|m| m.dev() == want.dev() && m.ino() == want.ino())
        })
    }

    // ---- events ----

    fn write(&mut self, file: usize, n: usize) {
        let mut body = String::new();
        let first = self.files[file].seq;
        for _ in 0..n {
            let f = &mut self.files[file];
            let pad = "x".repeat(self.rng.range(0, 120) as usize);
            let message = format!("{}-g{}-{:06} {pad}", f.tag, f.generation, f.seq);
            let line = cri("stdout", 'F', &message);
            self.lines.push(Line {
                file,
                generation: f.generation,
                seq: f.seq,
                message,
                bytes: line.len() as u64,
            });
            f.seq += 1;
            body.push_str(&line);
        }
        let f = &mut self.files[file];
        f.writer.write_all(body.as_bytes()).unwrap();
        let text = format!(
            "write {} g{}: {n} lines (seq {first}..={})",
            f.tag,
            f.generation,
            f.seq - 1
        );
        self.log(text);
    }

    /// The kubelet's rotation of a container's log (container_log_manager.go, rotateLog): remove
    /// rotated files past `containerLogMaxFiles`, compress the uncompressed rotated ones, rename
    /// `0.log` to `0.log.<timestamp>`, have the runtime reopen `0.log`.
    fn rotate(&mut self, file: usize) {
        if self.agent.is_some() {
            let live = self.files[file].live.clone();
            let start = Instant::now();
            if !wait_until(KUBELET_MONITOR_INTERVAL, || self.agent_holds(&live)) {
                let tag = self.files[file].tag.clone();
                self.log(format!(
                    "NOTE: the agent had not opened {tag}'s 0.log {:?} after it appeared; rotating anyway",
                    start.elapsed()
                ));
            }
        }
        // Past containerLogMaxFiles (the live file counts) minus the one about to be rotated.
        let keep = self.max_files.saturating_sub(2);
        while self.files[file].rotated.len() > keep {
            let (generation, path) = self.files[file].rotated.remove(0);
            fs::remove_file(&path).unwrap();
            let how = if self.agent.is_some() && self.agent_started.elapsed() >= FIND_WITHIN {
                Deleted::WhileRunning
            } else {
                Deleted::WhileDown
            };
            self.deleted.insert((file, generation), how);
            if how == Deleted::WhileRunning {
                self.recent_deletions
                    .push(((file, generation), Instant::now()));
            }
            let tag = self.files[file].tag.clone();
            self.log(format!(
                "kubelet deleted {tag} g{generation} ({}) {how:?}",
                path.file_name().unwrap().to_string_lossy()
            ));
            *self.counts.entry("delete").or_default() += 1;
        }
        for i in 0..self.files[file].rotated.len() {
            let path = self.files[file].rotated[i].1.clone();
            if path.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            let gz = kubelet_compress(&path);
            let tag = self.files[file].tag.clone();
            let generation = self.files[file].rotated[i].0;
            self.log(format!("kubelet gzipped {tag} g{generation}"));
            self.files[file].rotated[i].1 = gz;
        }
        self.fake_clock += chrono::Duration::seconds(11);
        let f = &mut self.files[file];
        let rotated = PathBuf::from(format!(
            "{}.{}",
            f.live.display(),
            self.fake_clock.format("%Y%m%d-%H%M%S")
        ));
        fs::rename(&f.live, &rotated).unwrap();
        f.rotated.push((f.generation, rotated.clone()));
        let tag = f.tag.clone();
        let generation = f.generation;
        self.log(format!(
            "kubelet rotated {tag} g{generation} to {}",
            rotated.file_name().unwrap().to_string_lossy()
        ));
        // The runtime writes on through its descriptor until it reopens.
        if self.rng.chance(30) {
            let n = self.rng.range(1, 20) as usize;
            self.write(file, n);
        }
        let f = &mut self.files[file];
        f.writer = open_append(&f.live);
        f.generation += 1;
        f.seq = 0;
    }

    /// logrotate's copytruncate with dateext: copy to `ct.log-<n>`, truncate the original. When
    /// the include pattern does not cover the copies, a careful user's logrotate: lines not read
    /// before the truncation are gone (README, Guarantees), so it waits until the agent shipped
    /// them, as far as an agent is running.
    fn copytruncate(&mut self) {
        let file = self.files.len() - 1;
        let generation = self.files[file].generation;
        if !self.ct_copies_followed && self.agent.is_some() {
            let want: Vec<String> = self
                .lines
                .iter()
                .filter(|l| l.file == file && l.generation == generation)
                .map(|l| l.message.clone())
                .collect();
            if !wait_until(Duration::from_secs(30), || {
                let stored = self.stored();
                want.iter().all(|m| stored.contains_key(m))
            }) {
                self.log(format!(
                    "NOTE: ct g{generation} not shipped within 30 s; truncating anyway"
                ));
            }
        }
        let f = &mut self.files[file];
        let copy = PathBuf::from(format!("{}-{}", f.live.display(), f.generation + 1));
        fs::copy(&f.live, &copy).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&f.live)
            .unwrap()
            .set_len(0)
            .unwrap();
        let text = format!(
            "copytruncate ct g{} (copy {}, {})",
            f.generation,
            copy.file_name().unwrap().to_string_lossy(),
            if self.ct_copies_followed {
                "followed"
            } else {
                "not followed"
            }
        );
        f.generation += 1;
        f.seq = 0;
        if !self.ct_copies_followed {
            // What was not shipped by now can no longer be read.
            self.deleted.insert((file, generation), Deleted::Truncated);
        }
        self.log(text);
    }

    fn heal_at(&mut self, after: Duration, heal: Heal) {
        self.heals.push((Instant::now() + after, heal));
    }

    fn apply_heals(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heals)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.heals = later;
        for (_, heal) in due {
            let text = match heal {
                Heal::EsUp => {
                    self.es.up();
                    "elasticsearch up".to_string()
                }
                Heal::EsClearItems => {
                    self.es.clear_item_faults();
                    "elasticsearch item faults cleared".to_string()
                }
                Heal::EsDelay => {
                    self.es.set_delay(Duration::ZERO);
                    "elasticsearch answers at once again".to_string()
                }
                Heal::EsBodyLimit => {
                    let limit = self.proxy_limit.unwrap_or(100 * 1024 * 1024);
                    self.es.set_max_content_length(limit);
                    format!("elasticsearch body limit back to {limit}")
                }
                Heal::KubeUp => {
                    self.kube.up();
                    "api server up".to_string()
                }
                Heal::TokenFile(token) => {
                    write_token(&self.token_file, &token, self.token_newline);
                    format!("token file now holds {token}")
                }
            };
            self.log(text);
        }
    }

    fn event(&mut self, kind: Kind) -> Result<(), String> {
        *self.counts.entry(kind.name()).or_default() += 1;
        let d = self.rng.millis(300, 4000);
        match kind {
            Kind::Rotate => {
                let file = self.rng.range(0, PODS.len() as u64 - 1) as usize;
                self.rotate(file);
            }
            Kind::CopyTruncate => self.copytruncate(),
            Kind::Sigterm | Kind::Kill9 => {
                // With read_from = "tail", a file the agent never recorded is one found at
                // start-up, read from its end as configured: give the first agent the time to
                // find and record the files, so that their lines are not judged lost.
                let first_run = !self
                    .events
                    .iter()
                    .any(|e| e.contains("agent stopped") || e.contains("agent killed"));
                if first_run && self.has(Kind::ReadFromTail) {
                    let left = FIND_WITHIN.saturating_sub(self.agent_started.elapsed());
                    std::thread::sleep(left);
                }
                self.stop_agent(kind == Kind::Sigterm)?;
                self.downtime = self.rng.range(1, 4);
                self.log(format!("downtime: {} steps", self.downtime));
            }
            Kind::Es503 => {
                if self.rng.chance(50) {
                    self.es.fail_for(d, 503);
                    self.log(format!("elasticsearch answers 503 for {d:?}"));
                } else {
                    self.es.down();
                    self.heal_at(d, Heal::EsUp);
                    self.log(format!("elasticsearch down for {d:?}"));
                }
            }
            Kind::Es429 => {
                if self.rng.chance(50) {
                    let n = self.rng.range(1, 20);
                    self.es.fail_next(n, 429);
                    self.log(format!(
                        "elasticsearch answers 429 to the next {n} requests"
                    ));
                } else {
                    self.es.reject_items(ItemRule::FirstAttempts(2), 429);
                    self.heal_at(d, Heal::EsClearItems);
                    self.log(format!(
                        "elasticsearch rejects the first 2 attempts at each item with 429 for {d:?}"
                    ));
                }
            }
            Kind::EsTimeout => {
                if self.rng.chance(50) {
                    self.es.set_delay(Duration::from_millis(4000));
                    self.heal_at(d, Heal::EsDelay);
                    self.log(format!(
                        "elasticsearch takes 4 s per request (request_timeout 3 s) for {d:?}"
                    ));
                } else {
                    let n = self.rng.range(1, 5) as usize;
                    let point = if self.rng.chance(50) {
                        DropPoint::AfterProcessing
                    } else {
                        DropPoint::BeforeProcessing
                    };
                    self.es.drop_connections(n, point);
                    self.log(format!(
                        "elasticsearch drops the next {n} connections {point:?}"
                    ));
                }
            }
            Kind::Es413 => {
                let limit = self.rng.range(4, 32) as usize * 1024;
                self.es.set_max_content_length(limit);
                if self.rng.chance(50) {
                    self.proxy_limit = Some(limit);
                    self.log(format!(
                        "a proxy in front of elasticsearch answers 413 past {limit} bytes, for good"
                    ));
                } else {
                    self.heal_at(d, Heal::EsBodyLimit);
                    self.log(format!(
                        "elasticsearch answers 413 past {limit} bytes for {d:?}"
                    ));
                }
            }
            Kind::EsItem403 => {
                self.es.reject_items(ItemRule::matching(|_| true), 403);
                self.heal_at(d, Heal::EsClearItems);
                self.log(format!(
                    "elasticsearch rejects every item with 403 for {d:?}"
                ));
            }
            Kind::Api401 => {
                if self.rng.chance(50) {
                    self.kube.fail_for(d, 401);
                    self.log(format!("api server answers 401 for {d:?}"));
                } else {
                    self.tokens += 1;
                    let token = format!("token-{}", self.tokens);
                    self.kube.require_token(&token);
                    self.heal_at(d, Heal::TokenFile(token.clone()));
                    self.log(format!(
                        "api server requires {token}; the token file catches up in {d:?}"
                    ));
                }
            }
            Kind::ApiOutage => match self.rng.range(0, 2) {
                0 => {
                    self.kube.down();
                    self.heal_at(d, Heal::KubeUp);
                    self.log(format!("api server down for {d:?}"));
                }
                1 => {
                    self.kube.fail_for(d, 503);
                    self.log(format!("api server answers 503 for {d:?}"));
                }
                _ => {
                    self.kube.cut_watches();
                    self.log("api server cut its watches");
                }
            },
            Kind::Delete | Kind::TokenNewline | Kind::ReadFromTail => {
                unreachable!("not drawn as an event")
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        self.apply_heals(false);
        if self.agent.is_none() {
            if self.downtime == 0 {
                self.start_agent();
            } else {
                self.downtime -= 1;
            }
        } else if let Some(agent) = self.agent.as_mut() {
            if !agent.running() {
                return Err(format!(
                    "the agent exited on its own:\n{}",
                    tail(&agent.logs(), 30)
                ));
            }
        }
        let mut choices: Vec<(Option<Kind>, u64)> = vec![(None, 6)];
        for &k in &self.kinds {
            let stop = matches!(k, Kind::Sigterm | Kind::Kill9);
            if k.weight() > 0 && !(stop && self.agent.is_none()) {
                choices.push((Some(k), k.weight()));
            }
        }
        let total: u64 = choices.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.range(0, total - 1);
        let mut chosen = None;
        for (k, w) in choices {
            if pick < w {
                chosen = k;
                break;
            }
            pick -= w;
        }
        match chosen {
            None => {
                let targets = if self.has(Kind::CopyTruncate) {
                    self.files.len()
                } else {
                    PODS.len()
                };
                let file = self.rng.range(0, targets as u64 - 1) as usize;
                let n = self.rng.range(1, 300) as usize;
                self.write(file, n);
            }
            Some(kind) => self.event(kind)?,
        }
        let pause = self.rng.millis(0, 300);
        std::thread::sleep(pause);
        if self.agent.is_some() {
            self.scrape();
        }
        Ok(())
    }

    /// The messages stored in Elasticsearch, with how often each is there.
    fn stored(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for doc in self.es.documents(INDEX).values() {
            let m = doc["message"].as_str().unwrap_or_default().to_string();
            *counts.entry(m).or_insert(0) += 1;
        }
        counts
    }

    /// Ends the faults, writes a last line to each container once the API server is back, waits
    /// for everything, stops the agent, and judges.
    fn finish(&mut self, failures: &mut Vec<String>) {
        self.apply_heals(true);
        self.es.clear_faults();
        if let Some(limit) = self.proxy_limit {
            self.es.set_max_content_length(limit);
        }
        self.kube.clear_faults();
        self.kube.up();
        self.log("faults over");
        if self.agent.is_none() {
            self.start_agent();
        }
        let reachable = wait_until(Duration::from_secs(20), || {
            self.scrape()
                .and_then(|m| m.value("logship_kubernetes_reachable", &[]))
                == Some(1.0)
        });
        if !reachable {
            failures.push(
                "NOT REACHABLE: logship_kubernetes_reachable stayed 0 for 20 s after the API server's faults ended"
                    .into(),
            );
        }
        let first_marker = self.lines.len();
        for file in 0..PODS.len() {
            self.write(file, 1);
        }
        let expected: Vec<usize> = (0..self.lines.len())
            .filter(|&i| {
                let l = &self.lines[i];
                !self.deleted.contains_key(&(l.file, l.generation))
            })
            .collect();
        // Until everything is in, or nothing more arrived for a long while (so that a case that
        // fails does not cost the whole bound).
        let (mut docs, mut progress) = (0, Instant::now());
        let mut stalled = false;
        let all_in = wait_until(DRAIN, || {
            let stored = self.stored();
            if stored.len() != docs {
                (docs, progress) = (stored.len(), Instant::now());
            } else if progress.elapsed() >= STALL {
                stalled = true;
                return true;
            }
            expected
                .iter()
                .all(|&i| stored.contains_key(&self.lines[i].message))
        }) && !stalled;
        if !all_in {
            let probe = probe(self.es.addr());
            self.log(format!(
                "not everything arrived within {DRAIN:?} (or nothing more for {STALL:?}); the test Elasticsearch answers GET / with: {probe}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Some(agent) = self.agent.as_mut() {
            if !agent.running() {
                failures.push(format!(
                    "the agent exited on its own:\n{}",
                    tail(&agent.logs(), 30)
                ));
                self.agent = None;
            }
        }
        if self.agent.is_some() {
            if let Err(e) = self.stop_agent(true) {
                failures.push(e);
            }
        }
        self.judge(first_marker, failures);
    }

    fn judge(&mut self, first_marker: usize, failures: &mut Vec<String>) {
        let stored = self.stored();
        let docs = self.es.documents(INDEX);
        let written: HashMap<&str, usize> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.message.as_str(), i))
            .collect();
        // Per (file, generation): seqs missing, seqs doubled.
        let mut missing: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        let mut doubled: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
        let mut missing_bytes_counted = 0u64;
        let mut missing_deleted: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        let mut lost_while_down = 0usize;
        for l in &self.lines {
            let n = stored.get(&l.message).copied().unwrap_or(0);
            let key = (l.file, l.generation);
            if n == 0 {
                match self.deleted.get(&key) {
                    Some(Deleted::WhileDown | Deleted::Truncated) => lost_while_down += 1,
                    Some(Deleted::WhileRunning) => {
                        missing_bytes_counted += l.bytes;
                        missing_deleted.entry(key).or_default().push(l.seq);
                    }
                    None => missing.entry(key).or_default().push(l.seq),
                }
            } else if n > 1 {
                doubled.entry(key).or_default().push((l.seq, n));
            }
        }
        for ((file, generation), seqs) in &missing {
            failures.push(format!(
                "LOST: {} g{generation}: {} lines never arrived (seq {}){}",
                self.files[*file].tag,
                seqs.len(),
                ranges(seqs),
                if self.deleted.contains_key(&(*file, *generation)) {
                    ""
                } else {
                    "; the generation still exists"
                }
            ));
        }
        for ((file, generation), seqs) in &doubled {
            let list: Vec<String> = seqs
                .iter()
                .take(12)
                .map(|(s, n)| format!("{s}x{n}"))
                .collect();
            failures.push(format!(
                "DUPLICATED: {} g{generation}: {} lines stored more than once (seq x times: {}{})",
                self.files[*file].tag,
                seqs.len(),
                list.join(", "),
                if seqs.len() > 12 { ", ..." } else { "" }
            ));
        }
        let strangers: Vec<&str> = stored
            .keys()
            .map(String::as_str)
            .filter(|m| !written.contains_key(m))
            .collect();
        if !strangers.is_empty() {
            failures.push(format!(
                "NEVER WRITTEN: {} stored records match no line written (fragments?): {:?}",
                strangers.len(),
                strangers.iter().take(5).collect::<Vec<_>>()
            ));
        }
        let lost_counted = self.lost_before + self.lost_now;
        if (missing_bytes_counted as f64) > lost_counted {
            let which: Vec<String> = missing_deleted
                .iter()
                .map(|((file, generation), seqs)| {
                    format!(
                        "{} g{generation} seq {}",
                        self.files[*file].tag,
                        ranges(seqs)
                    )
                })
                .collect();
            failures.push(format!(
                "LOST UNCOUNTED: {missing_bytes_counted} bytes of lines in generations deleted while the agent ran never arrived ({}), but logship_lost_bytes_total says {lost_counted}",
                which.join("; ")
            ));
        }
        // Lines written once every fault was over carry their pod's metadata.
        for l in &self.lines[first_marker..] {
            let Some((_, app)) = self.files[l.file].pod else {
                continue;
            };
            let doc = docs
                .values()
                .find(|d| d["message"].as_str() == Some(l.message.as_str()));
            if let Some(doc) = doc {
                if doc["kubernetes"]["labels"]["app"] != app {
                    failures.push(format!(
                        "NOT ENRICHED: {} written after the faults ended has no pod labels: kubernetes = {}",
                        l.message.split(' ').next().unwrap_or_default(),
                        doc["kubernetes"]
                    ));
                }
            }
        }
        let summary = format!(
            "{} lines written, {} stored documents, {} lines in generations deleted while no agent ran, or truncated unfollowed, never arrived (not counted against the agent), lost bytes counted {lost_counted}",
            self.lines.len(),
            docs.len(),
            lost_while_down
        );
        self.log(summary);
    }

    /// WARN and ERROR lines of every agent run, for a failure report.
    fn agent_warnings(&self) -> String {
        let mut out = String::new();
        let mut paths: Vec<PathBuf> = fs::read_dir(self.fx.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("agent-") && n.ends_with(".log"))
            })
            .collect();
        paths.sort();
        for path in paths {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let mut seen: Vec<String> = Vec::new();
            for line in text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                // Repeats of one message (retries) once.
                let gist: String = line.chars().skip(28).take(90).collect();
                if seen.contains(&gist) {
                    continue;
                }
                seen.push(gist);
                if seen.len() <= 25 {
                    let _ = writeln!(
                        out,
                        "  {}: {line}",
                        path.file_name().unwrap().to_string_lossy()
                    );
                }
            }
        }
        out
    }
}

fn write_token(path: &Path, token: &str, newline: bool) {
    // Written aside and renamed, as the kubelet's atomic writer updates a projected token.
    let tmp = path.with_extension("tmp");
    let text = if newline {
        format!("{token}\n")
    } else {
        token.to_string()
    };
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// The kubelet's compression of a rotated log (compressLog): gzip to `<name>.gz.tmp`, rename to
/// `<name>.gz`, remove the original.
fn kubelet_compress(rotated: &Path) -> PathBuf {
    let data = fs::read(rotated).unwrap();
    let tmp = PathBuf::from(format!("{}.gz.tmp", rotated.display()));
    let gz = PathBuf::from(format!("{}.gz", rotated.display()));
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&tmp).unwrap(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    fs::rename(&tmp, &gz).unwrap();
    fs::remove_file(rotated).unwrap();
    gz
}

/// One `GET /` with short timeouts: the status line, or what went wrong. Tells a server that stopped
/// answering from an agent that stopped asking.
fn probe(addr: std::net::SocketAddr) -> String {
    use std::io::Read as _;
    let attempt = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        Ok(raw.lines().next().unwrap_or("an empty answer").to_string())
    };
    attempt().unwrap_or_else(|e| format!("error: {e}"))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `[1, 2, 3, 7, 9, 10]` as `1..=3, 7, 9..=10`.
fn ranges(seqs: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}..={}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    if parts.len() > 10 {
        let n = parts.len();
        parts.truncate(10);
        parts.push(format!("... {} more ranges", n - 10));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Running cases

struct Outcome {
    seed: u64,
    counts: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
    events: Vec<String>,
    warnings: String,
    took: Duration,
}

fn run_case(seed: u64, plan: &Plan) -> Outcome {
    let started = Instant::now();
    let mut case = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let c = case.insert(Case::new(seed, &plan.kinds));
        let mut failures = Vec::new();
        for _ in 0..plan.steps {
            if let Err(e) = c.step() {
                failures.push(e);
                break;
            }
        }
        if failures.is_empty() {
            c.finish(&mut failures);
        }
        failures
    }));
    let failures = match result {
        Ok(f) => f,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            vec![format!(
                "PANIC: {}",
                text.chars().take(2000).collect::<String>()
            )]
        }
    };
    let (counts, events, warnings) = match &case {
        Some(c) => (c.counts.clone(), c.events.clone(), c.agent_warnings()),
        None => Default::default(),
    };
    Outcome {
        seed,
        counts,
        failures,
        events,
        warnings,
        took: started.elapsed(),
    }
}

#[test]
fn random_fault_sequences_lose_and_double_nothing() {
    let plan = Plan::from_env();
    eprintln!(
        "fault injection: {} cases from seed {}, {} steps each, kinds {}",
        plan.cases,
        plan.seed,
        plan.steps,
        plan.kinds_text()
    );
    let verbose = std::env::var_os("LOGSHIP_FAULT_VERBOSE").is_some();
    let mut failed = Vec::new();
    for i in 0..plan.cases {
        let seed = plan.seed + i;
        let outcome = run_case(seed, &plan);
        let counts: Vec<String> = outcome
            .counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        eprintln!(
            "case seed {seed}: {} in {:.1?} [{}]",
            if outcome.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            outcome.took,
            counts.join(" ")
        );
        if outcome.failures.is_empty() && verbose {
            for e in &outcome.events {
                eprintln!("    {e}");
            }
        }
        if !outcome.failures.is_empty() {
            eprintln!("  failures:");
            for f in &outcome.failures {
                eprintln!("    {f}");
            }
            eprintln!("  events:");
            for e in &outcome.events {
                eprintln!("    {e}");
            }
            eprintln!("  agent warnings and errors:\n{}", outcome.warnings);
            eprintln!(
                "  run it again: LOGSHIP_FAULT_SEED={seed} LOGSHIP_FAULT_CASES=1 LOGSHIP_FAULT_STEPS={} LOGSHIP_FAULT_KINDS={} cargo test --test faults",
                plan.steps,
                plan.kinds_text()
            );
            // In CI a case that fails is run once more with the same seed: the sequence of
            // events is the same, the agent's timing is not. A case that passes then is reported
            // above and here as flaky, loudly, and does not fail the run; one that fails twice
            // does. Outside CI every failure counts.
            if std::env::var_os("CI").is_some() {
                let again = run_case(seed, &plan);
                if again.failures.is_empty() {
                    eprintln!(
                        "case seed {seed}: FLAKY: failed, then passed when run again with the same seed; investigate with the command above"
                    );
                    continue;
                }
                eprintln!("case seed {seed}: failed again when run a second time");
            }
            failed.push(outcome);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed (seeds {:?}); see above",
        failed.len(),
        plan.cases,
        failed.iter().map(|o| o.seed).collect::<Vec<_>>()
    );
}

#[test]
fn kinds_are_parsed_and_unknown_ones_refused() {
    assert_eq!(Kind::parse_list("all").unwrap().len(), Kind::ALL.len());
    assert_eq!(
        Kind::parse_list("rotate, sigterm").unwrap(),
        vec![Kind::Rotate, Kind::Sigterm]
    );
    let most = Kind::parse_list("all,-kill9").unwrap();
    assert_eq!(most.len(), Kind::ALL.len() - 1);
    assert!(!most.contains(&Kind::Kill9));
    let err = Kind::parse_list("rotate,explode").unwrap_err();
    assert!(err.contains("\"explode\""), "{err}");
    assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1..=3, 7, 9..=10");
}
