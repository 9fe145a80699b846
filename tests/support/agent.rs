//! Runs the real `logship` binary against real files in a temporary directory.
//!
//! A [`Fixture`] owns a directory with `logs/` (what the agent follows), `data/` (its positions)
//! and `out.ndjson` (the file sink). Settings beyond the base config are passed the way a user
//! would: `LOGSHIP_*` environment variables.
//!
//! Every agent's HTTP endpoint listens on `127.0.0.1:0`: the system picks a free port, so tests
//! running side by side never race for one, and [`AgentProcess::server_addr`] reads the port the
//! agent logged at start.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub logs: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: PathBuf,
}

impl Fixture {
    /// A fresh directory and a config that follows `logs/*.log` with fast intervals.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let data = dir.path().join("data");
        fs::create_dir_all(&logs).unwrap();
        let out = dir.path().join("out.ndjson");
        let config = dir.path().join("logship.toml");
        let text = format!(
            r#"
data_dir = "{data}"
node_name = "test-node"
shutdown_timeout = "10s"
[log]
level = "info"
[tail]
include = ["{logs}/*.log"]
poll_interval = "20ms"
rescan_interval = "1s"
rotate_wait = "300ms"
[positions]
flush_interval = "50ms"
[kubernetes]
# CI may itself run in a pod; tests that want metadata point it at their own API server.
enabled = "false"
[output]
type = "file"
[output.file]
path = "{out}"
[server]
listen = "127.0.0.1:0"
"#,
            data = data.display(),
            logs = logs.display(),
            out = out.display()
        );
        fs::write(&config, text).unwrap();
        Fixture {
            dir,
            logs,
            data,
            out,
            config,
        }
    }

    /// The same fixture with its configuration mounted the way the kubelet mounts a ConfigMap:
    /// `etc/logship.toml -> ..data/logship.toml`, `..data -> ..<timestamp>/`, the file in the
    /// timestamped directory. [`Fixture::update_configmap`] then updates it as the kubelet does.
    pub fn with_configmap() -> Self {
        let mut fx = Fixture::new();
        let text = fs::read_to_string(&fx.config).unwrap();
        fs::remove_file(&fx.config).unwrap();
        let etc = fx.dir.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        let first = etc.join("..2026_12_02_10_00_00.000000001");
        fs::create_dir(&first).unwrap();
        fs::write(first.join("logship.toml"), text).unwrap();
        std::os::unix::fs::symlink(first.file_name().unwrap(), etc.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/logship.toml", etc.join("logship.toml")).unwrap();
        fx.config = etc.join("logship.toml");
        fx
    }

    /// The configuration's text, through whatever links lead to it.
    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config).unwrap()
    }

    /// Replaces the ConfigMap's content as the kubelet's atomic writer does: a new timestamped
    /// directory with the file, a `..data_tmp` link to it renamed over `..data`, the old
    /// directory removed. The file `logship.toml` itself never changes.
    pub fn update_configmap(&self, text: &str) {
        static VERSION: AtomicUsize = AtomicUsize::new(2);
        let etc = self.config.parent().unwrap();
        let old = fs::read_link(etc.join("..data")).unwrap();
        let n = VERSION.fetch_add(1, Ordering::Relaxed);
        let name = format!("..2026_12_02_10_00_00.{n:09}");
        fs::create_dir(etc.join(&name)).unwrap();
        fs::write(etc.join(&name).join("logship.toml"), text).unwrap();
        std::os::unix::fs::symlink(&name, etc.join("..data_tmp")).unwrap();
        fs::rename(etc.join("..data_tmp"), etc.join("..data")).unwrap();
        fs::remove_dir_all(etc.join(old)).unwrap();
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// Starts the agent with extra `LOGSHIP_*` variables.
    pub fn spawn(&self, env: &[(&str, &str)]) -> AgentProcess {
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stderr = self.dir.path().join(format!("agent-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logship"));
        cmd.arg("--config").arg(&self.config);
        // The test harness's own settings (tests/faults.rs) name no configuration key; the agent
        // would refuse them.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LOGSHIP_FAULT_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let err = fs::File::create(&stderr).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn logship");
        let mut agent = AgentProcess { child, stderr };
        // Files renamed before the agent ever saw them cannot be followed (no pattern matches
        // their new names): tests act once the first scan is done, as a user's writes would
        // come after the agent was ready.
        let ready = wait_until(Duration::from_secs(20), || {
            agent.logs().contains("Initial scan done") || !agent.running()
        });
        assert!(ready, "agent not ready:\n{}", agent.logs());
        agent
    }

    /// Starts the agent shipping to the Elasticsearch at `url` (requests closed after 50 ms),
    /// with extra `LOGSHIP_*` variables.
    pub fn spawn_to(&self, url: &str, extra: &[(&str, &str)]) -> AgentProcess {
        let mut env = vec![
            ("LOGSHIP_OUTPUT__TYPE", "elasticsearch"),
            ("LOGSHIP_OUTPUT__ELASTICSEARCH__HOSTS", url),
            ("LOGSHIP_OUTPUT__ELASTICSEARCH__BATCH__TIMEOUT", "50ms"),
        ];
        env.extend_from_slice(extra);
        self.spawn(&env)
    }

    /// Every record the file sink wrote, in order.
    /// The first record shipped with this message, if any.
    pub fn record_with(&self, message: &str) -> Option<Value> {
        self.records().into_iter().find(|r| r["message"] == message)
    }

    /// Waits (30 s at most) for a record with this message and returns it.
    pub fn wait_record(&self, agent: &AgentProcess, message: &str) -> Value {
        assert!(
            wait_until(Duration::from_secs(30), || self
                .record_with(message)
                .is_some()),
            "{message} never shipped:\n{}",
            agent.logs()
        );
        self.record_with(message).unwrap()
    }

    pub fn records(&self) -> Vec<Value> {
        read_records(&self.out)
    }

    /// The messages of every record, in order.
    pub fn messages(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits until at least `n` records are written.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || count_lines(&self.out) >= n)
    }

    /// The positions file as JSON, `Null` while the agent has not written it yet.
    pub fn positions_now(&self) -> Value {
        fs::read(self.data.join("positions.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// The positions file as JSON.
    pub fn positions(&self) -> Value {
        serde_json::from_slice(&fs::read(self.data.join("positions.json")).expect("positions.json"))
            .unwrap()
    }
}

pub struct AgentProcess {
    pub child: Child,
    pub stderr: PathBuf,
}

impl AgentProcess {
    /// SIGTERM, then waits for the exit (at most 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.wait(Duration::from_secs(20))
            .expect("agent did not exit after SIGTERM")
    }

    /// SIGKILL: a crash, no draining, no final positions write.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends SIGHUP (a reload).
    pub fn hangup(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the agent logged.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The value of one series on the agent's `/metrics` (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_get(self.server_addr(), "/metrics").2;
        super::prometheus::parse(&text)
            .unwrap_or_else(|e| panic!("/metrics does not parse: {e}"))
            .value(name, labels)
            .unwrap_or(0.0)
    }

    /// The address the agent's HTTP endpoint listens on, from its start-up log line.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let logs = self.logs();
        logs.lines()
            .filter(|l| l.contains("Serving /metrics"))
            .find_map(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no endpoint address in the agent's log:\n{logs}"))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_records(path: &Path) -> Vec<Value> {
    let mut bytes = fs::read(path).unwrap_or_default();
    // A last line without its newline is still being written (the sink's write can be seen
    // half done): it is read at the next look.
    bytes.truncate(memchr::memrchr(b'\n', &bytes).map_or(0, |i| i + 1));
    let text = String::from_utf8(bytes).expect("the sink writes UTF-8");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("sink wrote invalid JSON {l:?}: {e}"))
        })
        .collect()
}

fn count_lines(path: &Path) -> usize {
    fs::read(path)
        .map(|b| memchr::memchr_iter(b'\n', &b).count())
        .unwrap_or(0)
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Appends `text` to a file (creating it).
pub fn append(path: &Path, text: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text).unwrap();
}

/// A CRI line as containerd writes it.
pub fn cri(stream: &str, flag: char, message: &str) -> String {
    format!("2026-11-22T10:00:00.123456789Z {stream} {flag} {message}\n")
}

/// Kubelet's rotation: rename `path` to `path.<suffix>`, and the runtime creates a new file.
pub fn kubelet_rotate(path: &Path, suffix: &str) -> PathBuf {
    let rotated = PathBuf::from(format!("{}.{suffix}", path.display()));
    fs::rename(path, &rotated).unwrap();
    fs::File::create(path).unwrap();
    rotated
}

/// Kubelet's compression of an older generation: gzip it next to itself and delete it.
pub fn kubelet_compress(rotated: &Path) {
    let data = fs::read(rotated).unwrap();
    let gz = fs::File::create(format!("{}.gz", rotated.display())).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    fs::remove_file(rotated).unwrap();
}

/// One GET: the status code, the Content-Type and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}
