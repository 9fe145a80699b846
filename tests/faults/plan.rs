//! The plan of a fault-injection run (tests/faults.rs): the fault kinds, what the environment
//! selects, and the seeded generator every choice of a case comes from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What can happen besides writes. Case-level kinds (`token_newline`, `read_from_tail`) change
/// the case's setup whenever they are enabled; the others are events drawn at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Kubelet rotation: rename, runtime reopen, gzip of the previous rotated generation.
    Rotate,
    /// Kubelet deletes rotated generations past `containerLogMaxFiles = 2` when it rotates (so
    /// only together with `rotate`); the agent may keep at most 0 or 256 deleted files open
    /// (`tail.max_deleted_files`).
    Delete,
    /// logrotate's copytruncate (dateext copies, followed or not) on a plain file.
    CopyTruncate,
    /// SIGTERM, downtime of a few steps, restart.
    Sigterm,
    /// kill -9, downtime of a few steps, restart.
    Kill9,
    /// Elasticsearch answers 503 for a while, or stops listening for a while.
    Es503,
    /// 429 for the next requests, or for the first attempts at each item.
    Es429,
    /// Answers slower than `request_timeout` for a while, or connections closed after serving.
    EsTimeout,
    /// A body limit below `batch.max_bytes`: for a while, or for good (a proxy in front).
    Es413,
    /// Item-level 403 (a missing privilege) for a while.
    EsItem403,
    /// API server 401 for a while, or a token rotation the file catches up with later.
    Api401,
    /// API server down (connections refused) or 503 for a while, or watches cut.
    ApiOutage,
    /// The token file ends in a newline, as `echo "$TOKEN" > file` writes it.
    TokenNewline,
    /// `tail.read_from = "tail"`.
    ReadFromTail,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Rotate,
        Kind::Delete,
        Kind::CopyTruncate,
        Kind::Sigterm,
        Kind::Kill9,
        Kind::Es503,
        Kind::Es429,
        Kind::EsTimeout,
        Kind::Es413,
        Kind::EsItem403,
        Kind::Api401,
        Kind::ApiOutage,
        Kind::TokenNewline,
        Kind::ReadFromTail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Rotate => "rotate",
            Kind::Delete => "delete",
            Kind::CopyTruncate => "copytruncate",
            Kind::Sigterm => "sigterm",
            Kind::Kill9 => "kill9",
            Kind::Es503 => "es503",
            Kind::Es429 => "es429",
            Kind::EsTimeout => "es_timeout",
            Kind::Es413 => "es413",
            Kind::EsItem403 => "es_item403",
            Kind::Api401 => "api401",
            Kind::ApiOutage => "api_outage",
            Kind::TokenNewline => "token_newline",
            Kind::ReadFromTail => "read_from_tail",
        }
    }

    /// Relative weight among the events of a step (writes weigh 6).
    pub fn weight(self) -> u64 {
        match self {
            Kind::Rotate => 3,
            Kind::Delete | Kind::TokenNewline | Kind::ReadFromTail => 0,
            _ => 1,
        }
    }

    pub fn parse_list(text: &str) -> Result<Vec<Kind>, String> {
        let mut kinds: Vec<Kind> = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (remove, name) = match word.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, word),
            };
            let named: Vec<Kind> = if name == "all" {
                Kind::ALL.to_vec()
            } else {
                vec![Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| {
                        format!(
                            "LOGSHIP_FAULT_KINDS: unknown kind {name:?}; known: all, {}",
                            Kind::ALL.map(Kind::name).join(", ")
                        )
                    })?]
            };
            if remove {
                kinds.retain(|k| !named.contains(k));
            } else {
                for k in named {
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
            }
        }
        kinds.sort();
        Ok(kinds)
    }
}

pub struct Plan {
    pub seed: u64,
    pub cases: u64,
    pub steps: u64,
    pub kinds: Vec<Kind>,
}

/// The first case's seed when `LOGSHIP_FAULT_SEED` is not set.
const DEFAULT_SEED: u64 = 20_261_204;

impl Plan {
    pub fn from_env() -> Plan {
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a whole number, is {v:?}")),
            Err(_) => default,
        };
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let kinds = std::env::var("LOGSHIP_FAULT_KINDS").unwrap_or_else(|_| "all".into());
        // A fixed default, so that every run (CI's too) drives the same sequences; `random`
        // draws a new first seed from the clock.
        let seed = match std::env::var("LOGSHIP_FAULT_SEED").as_deref() {
            Ok("random") => clock % 1_000_000_000,
            _ => number("LOGSHIP_FAULT_SEED", DEFAULT_SEED),
        };
        Plan {
            seed,
            cases: number("LOGSHIP_FAULT_CASES", 3),
            steps: number("LOGSHIP_FAULT_STEPS", 12),
            kinds: Kind::parse_list(&kinds).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    pub fn kinds_text(&self) -> String {
        self.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// SplitMix64: a small, well-mixed generator, so that a seed alone gives the sequence.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}
