//! Liveness and readiness, decided from plain values so that every case is a table test.
//!
//! - **Live** (`/healthz`): every loop of the pipeline turned within [`LIVENESS_BOUND`]. A loop
//!   that waits for work or for buffer space still turns (telemetry's heartbeats), so an agent
//!   held back by a slow or absent Elasticsearch is live: restarting it would not help. Only a
//!   loop that is stuck (a wedged thread, a hung file system call) makes the agent not live.
//! - **Ready** (`/readyz`): the configuration is validated and the positions are loaded (the
//!   endpoint starts only after both, so they hold whenever it answers), and records can leave:
//!   the output is local, or Elasticsearch answers, or the buffer still has room for a read.
//!   Unready means the agent has stopped reading because nothing can be shipped.
//!
//! Nothing here reads a clock or a global: the server passes what it measured.

use std::fmt::Write;
use std::time::Duration;

use bytesize::ByteSize;

use crate::telemetry::Loop;

/// How long a loop may go without turning before the agent counts as not live. Loops turn at
/// least every second or `tail.poll_interval` (10s at most); this leaves room for a slow scan
/// of a large directory tree or a slow disk. With the DaemonSet's probe (every 10s, 3 failures)
/// a stuck agent is restarted within about 90s.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);

/// An answer of a probe: whether it passes, and a one-line reason for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
}

/// Where records go, as readiness sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// stdout, a file, the blackhole: always there.
    Local,
    /// Elasticsearch, and whether it answered last time it was asked.
    Elasticsearch { reachable: bool },
}

/// The memory budget between reading and acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferUse {
    /// Bytes held by records not acknowledged yet.
    pub used: usize,
    /// `buffer.max_bytes`.
    pub capacity: usize,
    /// What one read asks for (the larger of `tail.read_budget` and `tail.max_line_bytes`):
    /// with less than this left, the reader is about to wait.
    pub headroom: usize,
}

impl BufferUse {
    /// Whether the next read would have to wait for acknowledgements.
    pub fn full(&self) -> bool {
        self.used.saturating_add(self.headroom) > self.capacity
    }

    /// Percent of the capacity in use (can pass 100: one oversized batch is always let in).
    pub fn percent(&self) -> u64 {
        (self.used as u64 * 100) / self.capacity.max(1) as u64
    }

    fn describe(&self) -> String {
        format!(
            "buffer {}% used ({} of {})",
            self.percent(),
            ByteSize(self.used as u64).display().iec(),
            ByteSize(self.capacity as u64).display().iec()
        )
    }
}

/// The Kubernetes API as readiness sees it, when enrichment is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kubernetes {
    Reachable,
    Unreachable,
    /// The API server answers, but refused the credentials (401) or their rights (403).
    Refused {
        status: u16,
    },
}

/// Readiness from where records go and how full the buffer is. `kubernetes` is the state of
/// the Kubernetes API, when enrichment is on: said in the reason, but it does not make the agent
/// unready, because records still ship (with the metadata cached, or without) and unready means
/// that reading has stopped. A refused token is named as such, since no retry will fix it.
pub fn readiness(output: Output, buffer: BufferUse, kubernetes: Option<Kubernetes>) -> Verdict {
    let buffer_text = buffer.describe();
    let (ok, reason) = match output {
        Output::Local => (true, format!("local output; {buffer_text}")),
        Output::Elasticsearch { reachable: true } => {
            (true, format!("Elasticsearch reachable; {buffer_text}"))
        }
        Output::Elasticsearch { reachable: false } if !buffer.full() => (
            true,
            format!("Elasticsearch not reachable, records wait in the buffer; {buffer_text}"),
        ),
        Output::Elasticsearch { reachable: false } => (
            false,
            format!(
                "Elasticsearch not reachable and the buffer is full, reading waits; {buffer_text}"
            ),
        ),
    };
    let reason = match kubernetes {
        Some(Kubernetes::Reachable) => format!("{reason}; Kubernetes API reachable"),
        Some(Kubernetes::Unreachable) => format!(
            "{reason}; Kubernetes API not reachable, records carry the metadata cached before"
        ),
        Some(Kubernetes::Refused { status }) => {
            let what = match status {
                401 => "token (401 Unauthorized)",
                403 => "requests (403 Forbidden: check its RBAC)",
                _ => "requests",
            };
            format!("{reason}; the Kubernetes API server refused the agent's {what}, records carry only the metadata cached before")
        }
        None => reason,
    };
    let reason = if ok {
        format!("ready: configuration and positions loaded; {reason}")
    } else {
        format!("not ready: {reason}")
    };
    Verdict { ok, reason }
}

/// Liveness from how long ago each loop turned (`None`: not yet), given how long the endpoint
/// has been up: a loop that has not turned yet gets the bound from the start.
pub fn liveness(ages: &[(Loop, Option<Duration>)], up_for: Duration, bound: Duration) -> Verdict {
    let mut stuck = Vec::new();
    let mut turning = Vec::new();
    for &(which, age) in ages {
        match age {
            Some(age) if age > bound => stuck.push(format!(
                "the {} has not turned for {} (bound {})",
                which.name(),
                seconds(age),
                seconds(bound)
            )),
            Some(age) => turning.push(format!("{} {} ago", which.name(), seconds(age))),
            None if up_for > bound => stuck.push(format!(
                "the {} has not turned since the start {} ago (bound {})",
                which.name(),
                seconds(up_for),
                seconds(bound)
            )),
            None => turning.push(format!("{} starting", which.name())),
        }
    }
    if stuck.is_empty() {
        Verdict {
            ok: true,
            reason: format!("live: loops turning ({})", turning.join(", ")),
        }
    } else {
        Verdict {
            ok: false,
            reason: format!("not live: {}", stuck.join("; ")),
        }
    }
}

/// `1.5s`, `75.0s`: one decimal, enough for a person reading a probe answer.
fn seconds(d: Duration) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:.1}s", d.as_secs_f64());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn buffer(used: usize) -> BufferUse {
        BufferUse {
            used,
            capacity: 32 * MIB,
            headroom: 256 * 1024,
        }
    }

    #[test]
    fn readiness_cases() {
        let down = Output::Elasticsearch { reachable: false };
        let up = Output::Elasticsearch { reachable: true };
        let almost_full = 32 * MIB - 256 * 1024;
        let cases = [
            (Output::Local, 0, true, "ready: configuration and positions loaded; local output; buffer 0% used (0 B of 32.0 MiB)"),
            (Output::Local, 40 * MIB, true, "local output; buffer 125% used"),
            (up, 32 * MIB, true, "Elasticsearch reachable; buffer 100% used"),
            (down, 0, true, "Elasticsearch not reachable, records wait in the buffer"),
            (down, almost_full, true, "records wait in the buffer; buffer 99% used"),
            (down, almost_full + 1, false, "not ready: Elasticsearch not reachable and the buffer is full, reading waits; buffer 99% used"),
            (down, 32 * MIB, false, "buffer 100% used (32.0 MiB of 32.0 MiB)"),
        ];
        for (output, used, ok, text) in cases {
            let v = readiness(output, buffer(used), None);
            assert_eq!(v.ok, ok, "{output:?} {used}: {}", v.reason);
            assert!(v.reason.contains(text), "{:?} lacks {text:?}", v.reason);
        }
    }

    #[test]
    fn kubernetes_is_said_and_a_refusal_named_without_making_the_agent_unready() {
        let up = Output::Elasticsearch { reachable: true };
        let cases = [
            (Kubernetes::Reachable, "; Kubernetes API reachable"),
            (Kubernetes::Unreachable, "; Kubernetes API not reachable"),
            (
                Kubernetes::Refused { status: 401 },
                "; the Kubernetes API server refused the agent's token (401 Unauthorized)",
            ),
            (
                Kubernetes::Refused { status: 403 },
                "refused the agent's requests (403 Forbidden",
            ),
        ];
        for (kubernetes, text) in cases {
            let v = readiness(up, buffer(0), Some(kubernetes));
            assert!(v.ok, "{kubernetes:?}: {}", v.reason);
            assert!(v.reason.contains(text), "{:?} lacks {text:?}", v.reason);
        }
    }

    #[test]
    fn full_means_the_next_read_would_wait() {
        let b = BufferUse {
            used: 0,
            capacity: 8192,
            headroom: 4096,
        };
        assert!(!b.full());
        assert!(!BufferUse { used: 4096, ..b }.full());
        assert!(BufferUse { used: 4097, ..b }.full());
        assert!(
            BufferUse {
                used: usize::MAX,
                ..b
            }
            .full(),
            "no overflow"
        );
        assert_eq!(BufferUse { used: 2048, ..b }.percent(), 25);
    }

    #[test]
    fn liveness_cases() {
        let bound = Duration::from_secs(60);
        let s = Duration::from_secs;
        let live = liveness(
            &[
                (Loop::Tailer, Some(Duration::from_millis(150))),
                (Loop::Sink, Some(s(1))),
            ],
            s(3600),
            bound,
        );
        assert_eq!(
            live,
            Verdict {
                ok: true,
                reason: "live: loops turning (tailer 0.1s ago, sink 1.0s ago)".into()
            }
        );
        let starting = liveness(
            &[(Loop::Tailer, None), (Loop::Sink, Some(s(0)))],
            s(5),
            bound,
        );
        assert!(starting.ok, "{}", starting.reason);
        assert!(starting.reason.contains("tailer starting"));

        let stuck = liveness(
            &[(Loop::Tailer, Some(s(1))), (Loop::Sink, Some(s(75)))],
            s(3600),
            bound,
        );
        assert_eq!(
            stuck,
            Verdict {
                ok: false,
                reason: "not live: the sink has not turned for 75.0s (bound 60.0s)".into()
            }
        );
        let never = liveness(
            &[(Loop::Tailer, None), (Loop::Sink, Some(s(61)))],
            s(61),
            bound,
        );
        assert!(!never.ok);
        assert!(never
            .reason
            .contains("the tailer has not turned since the start 61.0s ago"));
        assert!(never.reason.contains("; the sink has not turned for 61.0s"));
        // Exactly at the bound is still live: "longer than the bound" is the rule.
        assert!(liveness(&[(Loop::Sink, Some(bound))], s(3600), bound).ok);
    }
}
