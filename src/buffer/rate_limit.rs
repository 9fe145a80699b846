//! Per-container rate limits: lines per second and bytes per second, with a burst.
//!
//! A limit belongs to a container (all generations of its log file share it). The operator's
//! limit is the rule for its namespace, else the default. The pod's `logship.io/rate-limit`
//! annotation may only tighten it (`rate_limit.annotations = "tighten"`, the default): per
//! dimension, lines/s and bytes/s, the stricter of the two applies, so a tenant cannot opt out of
//! the protection the operator set (`none` in an annotation lifts nothing). `override` lets the
//! annotation replace the operator's limit, `ignore` ignores annotations. Written like `500/s`,
//! `1MiB/s`, `30000/m` or both `500/s,1MiB/s`; `none` is no limit.
//!
//! Two actions, chosen in the configuration:
//!
//! - **throttle** (the default, lossless): the container's file is read more slowly. After each
//!   read the lines and bytes read are owed to the limiter; the file is read again only once the
//!   debt is paid, so its average rate is the limit, with bursts of at most one read.
//! - **drop**: lines past the limit are dropped as they are parsed, counted, and summarised in a
//!   record shipped in their place ("dropped N lines from pod/container...") at most once per
//!   `summary_interval`, so that the loss is visible where the logs are searched.
//!
//! The token buckets are governor's (GCRA); this module only decides what a limit is and how
//! reading pays for what it read.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::source::KubeletName;

type Bucket = governor::DefaultDirectRateLimiter;

/// A rate: so many per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Cells (lines or bytes) per second.
    pub per_second: f64,
}

/// A container's limit; `None` parts are unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitSpec {
    pub lines: Option<Rate>,
    pub bytes: Option<Rate>,
}

impl LimitSpec {
    pub fn is_unlimited(&self) -> bool {
        self.lines.is_none() && self.bytes.is_none()
    }

    /// Parses `500/s`, `1MiB/s`, `30000/m`, `500/s,1MiB/s`, `none` (or empty): unlimited.
    pub fn parse(text: &str) -> Result<LimitSpec, String> {
        let mut spec = LimitSpec::default();
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("none") {
            return Ok(spec);
        }
        for part in text.split(',') {
            let part = part.trim();
            let (amount, per) = part
                .rsplit_once('/')
                .ok_or_else(|| format!("{part:?} is not a rate: write 500/s or 1MiB/s"))?;
            let seconds = match per.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                other => return Err(format!("{part:?}: unknown unit of time {other:?} (s or m)")),
            };
            let amount = amount.trim();
            let (slot, value) = match amount.parse::<u64>() {
                Ok(lines) => (&mut spec.lines, lines as f64),
                Err(_) => {
                    let bytes = amount.parse::<bytesize::ByteSize>().map_err(|e| {
                        format!("{part:?}: {amount:?} is neither a count of lines nor a size: {e}")
                    })?;
                    (&mut spec.bytes, bytes.as_u64() as f64)
                }
            };
            if value <= 0.0 {
                return Err(format!(
                    "{part:?}: a rate must be more than 0 (write none for no limit)"
                ));
            }
            if slot.is_some() {
                return Err(format!("{text:?} gives the same kind of limit twice"));
            }
            *slot = Some(Rate {
                per_second: value / seconds,
            });
        }
        Ok(spec)
    }
}

impl fmt::Display for LimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(l) = self.lines {
            parts.push(format!("{}/s", l.per_second));
        }
        if let Some(b) = self.bytes {
            parts.push(format!(
                "{}/s",
                bytesize::ByteSize(b.per_second as u64).display().iec()
            ));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The stricter of two limits of one dimension (`None` is unlimited).
fn stricter(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.per_second <= b.per_second { a } else { b }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether `wanted` asks for more than `limit` in one dimension (a dimension it does not name
/// asks for nothing).
fn looser(wanted: Option<Rate>, limit: Option<Rate>) -> bool {
    match (wanted, limit) {
        (Some(w), Some(l)) => w.per_second > l.per_second,
        _ => false,
    }
}

impl LimitSpec {
    /// Per dimension, the stricter of the two.
    pub fn tightened_by(self, other: LimitSpec) -> LimitSpec {
        LimitSpec {
            lines: stricter(self.lines, other.lines),
            bytes: stricter(self.bytes, other.bytes),
        }
    }

    /// Whether `self`, as asked for, would allow more than `limit`: `none` asks to lift every
    /// dimension; otherwise a dimension it names with a higher rate.
    pub fn loosens(&self, limit: &LimitSpec) -> bool {
        if self.is_unlimited() {
            return !limit.is_unlimited();
        }
        looser(self.lines, limit.lines) || looser(self.bytes, limit.bytes)
    }
}

/// What a pod's `logship.io/rate-limit` annotation may do (`rate_limit.annotations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnnotationPolicy {
    /// Only tighten the operator's limit, per dimension.
    #[default]
    Tighten,
    /// Replace the operator's limit, looser or not.
    Override,
    /// Not read.
    Ignore,
}

/// What happens past a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Throttle,
    Drop,
}

/// The validated `[rate_limit]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitSettings {
    /// Every container's limit unless a rule or an annotation says otherwise.
    pub default: LimitSpec,
    /// Per-namespace limits.
    pub namespaces: Vec<(String, LimitSpec)>,
    /// How much above the rate a container may go at once, as time at the rate.
    pub burst: Duration,
    pub action: Action,
    /// How often a summary of dropped lines is shipped, per container.
    pub summary_interval: Duration,
    /// What pod annotations may do to the limits above.
    pub annotations: AnnotationPolicy,
}

/// The pod annotation that sets a pod's limit.
pub const ANNOTATION: &str = "logship.io/rate-limit";

/// Where a container's limit came from, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    Default,
    Namespace,
    Annotation,
}

/// A container's limit, where it came from, and what was wrong with its annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub spec: LimitSpec,
    pub source: LimitSource,
    /// The annotation did not parse (why): it was ignored.
    pub invalid: Option<String>,
    /// The annotation asked for more than the operator's limit in some dimension, and was held
    /// to it (`tighten`): what it asked for.
    pub refused: Option<LimitSpec>,
}

impl RateLimitSettings {
    /// Whether any limit can apply at all (otherwise the tailer skips this module entirely).
    pub fn enabled(&self) -> bool {
        !self.default.is_unlimited() || !self.namespaces.is_empty()
    }

    /// The operator's limit of a container: its namespace's rule, else the default.
    fn operator_limit(&self, kubelet: Option<&KubeletName>) -> (LimitSpec, LimitSource) {
        if let Some(k) = kubelet {
            if let Some((_, spec)) = self.namespaces.iter().find(|(ns, _)| *ns == k.namespace) {
                return (*spec, LimitSource::Namespace);
            }
        }
        (self.default, LimitSource::Default)
    }

    /// The limit of a container: the operator's, combined with its pod's annotation as
    /// `annotations` says. A bad annotation is ignored and said in [`Resolved::invalid`].
    pub fn limit_for(&self, kubelet: Option<&KubeletName>, annotation: Option<&str>) -> Resolved {
        let (operator, operator_source) = self.operator_limit(kubelet);
        let mut resolved = Resolved {
            spec: operator,
            source: operator_source,
            invalid: None,
            refused: None,
        };
        let Some(text) = annotation.filter(|_| self.annotations != AnnotationPolicy::Ignore) else {
            return resolved;
        };
        let wanted = match LimitSpec::parse(text) {
            Ok(spec) => spec,
            Err(why) => {
                resolved.invalid = Some(why);
                return resolved;
            }
        };
        match self.annotations {
            AnnotationPolicy::Override => {
                resolved.spec = wanted;
                resolved.source = LimitSource::Annotation;
            }
            AnnotationPolicy::Tighten | AnnotationPolicy::Ignore => {
                resolved.spec = operator.tightened_by(wanted);
                if resolved.spec != operator {
                    resolved.source = LimitSource::Annotation;
                }
                if wanted.loosens(&operator) {
                    resolved.refused = Some(wanted);
                }
            }
        }
        resolved
    }
}

/// Lines and bytes read and not paid for yet (throttle).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owed {
    pub lines: u64,
    pub bytes: u64,
}

impl Owed {
    pub fn is_zero(&self) -> bool {
        self.lines == 0 && self.bytes == 0
    }
}

/// The token buckets of one container.
#[derive(Debug)]
pub struct Limiter {
    pub spec: LimitSpec,
    lines: Option<(Bucket, u32)>,
    bytes: Option<(Bucket, u32)>,
}

fn bucket(rate: Rate, burst: Duration) -> (Bucket, u32) {
    // GCRA: one cell every 1/rate; a burst of rate x burst cells (at least one).
    let period = Duration::from_secs_f64(1.0 / rate.per_second.max(1e-9));
    let burst_cells = (rate.per_second * burst.as_secs_f64()).clamp(1.0, u32::MAX as f64) as u32;
    let burst_cells = NonZeroU32::new(burst_cells).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst_cells);
    (RateLimiter::direct(quota), burst_cells.get())
}

impl Limiter {
    pub fn new(spec: LimitSpec, burst: Duration) -> Limiter {
        Limiter {
            spec,
            lines: spec.lines.map(|r| bucket(r, burst)),
            bytes: spec.bytes.map(|r| bucket(r, burst)),
        }
    }

    /// Pays as much of `owed` as the buckets allow now. `Ok` when all is paid; otherwise how
    /// long until the next payment can be made.
    pub fn pay(&self, owed: &mut Owed) -> Result<(), Duration> {
        pay_one(self.lines.as_ref(), &mut owed.lines)?;
        pay_one(self.bytes.as_ref(), &mut owed.bytes)
    }

    /// Drop mode: whether one line of `bytes` bytes may pass now (it is taken from the buckets
    /// if so; a line refused takes nothing).
    pub fn admit(&self, bytes: u32) -> bool {
        // A line refused for its bytes has used a line token: the limit errs on the side of
        // the limit.
        if let Some((b, _)) = &self.lines {
            if b.check().is_err() {
                return false;
            }
        }
        if let Some((b, burst)) = &self.bytes {
            let n = NonZeroU32::new(bytes.clamp(1, *burst)).unwrap_or(NonZeroU32::MIN);
            if !matches!(b.check_n(n), Ok(Ok(()))) {
                return false;
            }
        }
        true
    }
}

fn pay_one(bucket: Option<&(Bucket, u32)>, owed: &mut u64) -> Result<(), Duration> {
    let Some((b, burst)) = bucket else {
        *owed = 0;
        return Ok(());
    };
    while *owed > 0 {
        let chunk = (*owed).min(u64::from(*burst)) as u32;
        let n = NonZeroU32::new(chunk).unwrap_or(NonZeroU32::MIN);
        match b.check_n(n) {
            Ok(Ok(())) => *owed -= u64::from(chunk),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(wait.max(Duration::from_millis(1)));
            }
            // Cannot happen: chunks are at most the burst.
            Err(_) => *owed -= u64::from(chunk),
        }
    }
    Ok(())
}

/// Lines dropped from one container since its last summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dropped {
    pub lines: u64,
    pub bytes: u64,
    /// Offset of the first line dropped since the last summary: the summary record's offset
    /// (unique in the file, since that line was never shipped).
    pub first_offset: Option<u64>,
    /// When the last summary was shipped (or the first drop happened).
    pub since: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        type Rates = (Option<f64>, Option<f64>);
        let table: &[(&str, Result<Rates, ()>)] = &[
            ("500/s", Ok((Some(500.0), None))),
            ("1MiB/s", Ok((None, Some(1048576.0)))),
            ("500/s, 1MiB/s", Ok((Some(500.0), Some(1048576.0)))),
            ("6000/m", Ok((Some(100.0), None))),
            ("none", Ok((None, None))),
            ("", Ok((None, None))),
            ("500", Err(())),
            ("500/h", Err(())),
            ("0/s", Err(())),
            ("lots/s", Err(())),
            ("1/s,2/s", Err(())),
        ];
        for (text, want) in table {
            let got = LimitSpec::parse(text)
                .map(|s| (s.lines.map(|r| r.per_second), s.bytes.map(|r| r.per_second)))
                .map_err(|_| ());
            assert_eq!(&got, want, "{text}");
        }
        assert_eq!(
            LimitSpec::parse("500/s,1MiB/s").unwrap().to_string(),
            "500/s,1.0 MiB/s"
        );
    }

    fn settings(annotations: AnnotationPolicy) -> RateLimitSettings {
        RateLimitSettings {
            default: LimitSpec::parse("1000/s").unwrap(),
            namespaces: vec![
                ("noisy".into(), LimitSpec::parse("10/s").unwrap()),
                ("bulk".into(), LimitSpec::parse("100/s,1MiB/s").unwrap()),
                ("free".into(), LimitSpec::default()),
            ],
            burst: Duration::from_secs(1),
            action: Action::Throttle,
            summary_interval: Duration::from_secs(10),
            annotations,
        }
    }

    fn k(ns: &str) -> KubeletName {
        KubeletName {
            namespace: ns.into(),
            pod: "p".into(),
            container: "c".into(),
            container_id: None,
            pod_uid: None,
        }
    }

    #[test]
    fn limits_come_from_the_namespace_then_the_default_and_bad_annotations_are_ignored() {
        let settings = settings(AnnotationPolicy::Tighten);
        assert_eq!(
            settings.limit_for(Some(&k("a")), None).source,
            LimitSource::Default
        );
        assert_eq!(
            settings.limit_for(Some(&k("noisy")), None).source,
            LimitSource::Namespace
        );
        let r = settings.limit_for(Some(&k("noisy")), Some("5/s"));
        assert_eq!(
            (
                r.spec.lines.unwrap().per_second,
                r.source,
                r.invalid,
                r.refused
            ),
            (5.0, LimitSource::Annotation, None, None)
        );
        let r = settings.limit_for(Some(&k("noisy")), Some("fast please"));
        assert_eq!(
            (r.spec.lines.unwrap().per_second, r.source),
            (10.0, LimitSource::Namespace)
        );
        assert!(r.invalid.is_some());
    }

    #[test]
    fn annotations_only_tighten_per_dimension_unless_the_operator_allows_overrides() {
        // (policy, namespace, annotation) -> (effective limit, source, refused)
        use AnnotationPolicy::{Ignore, Override, Tighten};
        use LimitSource::{Annotation, Default, Namespace};
        let cases: &[(AnnotationPolicy, &str, &str, &str, LimitSource, bool)] = &[
            (Tighten, "noisy", "none", "10/s", Namespace, true),
            (Tighten, "noisy", "", "10/s", Namespace, true),
            (Tighten, "noisy", "50/s", "10/s", Namespace, true),
            (Tighten, "noisy", "10/s", "10/s", Namespace, false),
            (Tighten, "noisy", "5/s", "5/s", Annotation, false),
            (
                Tighten,
                "noisy",
                "1KiB/s",
                "10/s,1.0 KiB/s",
                Annotation,
                false,
            ),
            (
                Tighten,
                "noisy",
                "50/s,1KiB/s",
                "10/s,1.0 KiB/s",
                Annotation,
                true,
            ),
            (
                Tighten,
                "bulk",
                "200/s,512KiB/s",
                "100/s,512.0 KiB/s",
                Annotation,
                true,
            ),
            (Tighten, "bulk", "50/s", "50/s,1.0 MiB/s", Annotation, false),
            (
                Tighten,
                "bulk",
                "2MiB/s",
                "100/s,1.0 MiB/s",
                Namespace,
                true,
            ),
            (Tighten, "a", "none", "1000/s", Default, true),
            (Tighten, "a", "6000/m", "100/s", Annotation, false),
            (Tighten, "free", "none", "none", Namespace, false),
            (Tighten, "free", "20/s", "20/s", Annotation, false),
            (Override, "noisy", "none", "none", Annotation, false),
            (Override, "noisy", "50/s", "50/s", Annotation, false),
            (Override, "a", "5/s", "5/s", Annotation, false),
            (Ignore, "noisy", "none", "10/s", Namespace, false),
            (Ignore, "noisy", "5/s", "10/s", Namespace, false),
        ];
        for &(policy, ns, annotation, want, source, refused) in cases {
            let r = settings(policy).limit_for(Some(&k(ns)), Some(annotation));
            let case = format!("{policy:?} {ns} {annotation:?}");
            assert_eq!(r.spec.to_string(), want, "{case}");
            assert_eq!(r.source, source, "{case}");
            assert_eq!(r.refused.is_some(), refused, "{case}");
            assert_eq!(r.invalid, None, "{case}");
        }
    }

    #[test]
    fn throttling_pays_debts_at_the_rate() {
        let limiter = Limiter::new(
            LimitSpec::parse("100/s").unwrap(),
            Duration::from_millis(100),
        );
        let mut owed = Owed {
            lines: 10,
            bytes: 5000,
        };
        assert_eq!(limiter.pay(&mut owed), Ok(()), "the burst covers 10 lines");
        assert!(owed.is_zero());
        // 50 more lines at 100/s take about half a second, paid in pieces of at most the burst.
        let started = Instant::now();
        let mut owed = Owed {
            lines: 50,
            bytes: 0,
        };
        let mut waits = 0;
        while let Err(wait) = limiter.pay(&mut owed) {
            assert!(wait <= Duration::from_millis(110), "{wait:?}");
            std::thread::sleep(wait);
            waits += 1;
        }
        assert!(owed.is_zero());
        assert!(waits >= 4, "paid in pieces: {waits}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "not faster than the rate: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn drop_mode_admits_up_to_the_burst() {
        let limiter = Limiter::new(LimitSpec::parse("10/s").unwrap(), Duration::from_secs(1));
        let admitted = (0..100).filter(|_| limiter.admit(100)).count();
        assert_eq!(admitted, 10);
        let bytes = Limiter::new(LimitSpec::parse("1KiB/s").unwrap(), Duration::from_secs(1));
        let admitted = (0..100).filter(|_| bytes.admit(100)).count();
        assert_eq!(admitted, 10);
    }
}
