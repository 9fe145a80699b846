//! `RawConfig` -> `Settings`: the pure step that turns what the user wrote into typed values
//! (glob sets, byte counts, durations, the output) and checks every range and every rule
//! between keys. It collects every error, never stops at the first, and never touches the disk
//! or the network: anything it needs from the machine (the hostname) is handed to it.

use std::path::PathBuf;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use super::error::ConfigError;
use super::raw::{OutputType, RawConfig, RawRateLimit};
use super::units::{HumanDuration, Size};
use super::{
    BufferSettings, LogSettings, OutputSettings, PositionsSettings, ServerSettings, Settings,
    TailSettings,
};
use crate::buffer::rate_limit::{Action, AnnotationPolicy, LimitSpec, RateLimitSettings};

/// Where `node_name` comes from when the configuration leaves it empty.
/// `tail.max_line_bytes`: 1KiB to 64MiB.
const LINE_BYTES: (Size, Size) = (Size::kib(1), Size::mib(64));
/// `tail.read_budget`: 4KiB to 64MiB.
const READ_BUDGET: (Size, Size) = (Size::kib(4), Size::mib(64));
/// `tail.poll_interval`: 10ms to 10s.
pub(super) const POLL_INTERVAL: (HumanDuration, HumanDuration) =
    (HumanDuration::millis(10), HumanDuration::secs(10));
/// `tail.rescan_interval`: at least 100ms.
const RESCAN_MIN: Duration = Duration::from_millis(100);
/// `positions.flush_interval`: at least 10ms.
const FLUSH_MIN: Duration = Duration::from_millis(10);

const NODE_NAME_FALLBACK: &str =
    "the NODE_NAME environment variable, else the hostname (/proc/sys/kernel/hostname, /etc/hostname)";

/// Checks `raw` and builds the settings. `fallback_node_name` is what `node_name = ""` means on
/// this machine (`NODE_NAME`, else the hostname), if anything.
pub fn validate(
    raw: &RawConfig,
    fallback_node_name: Option<&str>,
    in_cluster: bool,
) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let e = &mut errors;

    if raw.data_dir.trim().is_empty() {
        e.push(ConfigError::invalid("data_dir", "must not be empty"));
    }
    let node_name = match (raw.node_name.trim(), fallback_node_name) {
        ("", Some(fallback)) => fallback.to_string(),
        ("", None) => {
            e.push(ConfigError::invalid(
                "node_name",
                format!("is empty, and {NODE_NAME_FALLBACK} gives none either"),
            ));
            String::new()
        }
        (name, _) => name.to_string(),
    };
    let shutdown_timeout = at_least(
        e,
        "shutdown_timeout",
        raw.shutdown_timeout,
        Duration::from_nanos(1),
    );
    check_filter(e, &raw.log.level);

    let tail = &raw.tail;
    if tail.include.is_empty() {
        e.push(ConfigError::invalid(
            "tail.include",
            "must name at least one pattern",
        ));
    }
    let include_set = globs(e, "tail.include", &tail.include);
    let exclude_set = globs(e, "tail.exclude", &tail.exclude);
    let max_line_bytes = size_in(e, "tail.max_line_bytes", tail.max_line_bytes, LINE_BYTES);
    let read_budget = size_in(e, "tail.read_budget", tail.read_budget, READ_BUDGET);
    let poll_interval = duration_in(e, "tail.poll_interval", tail.poll_interval, POLL_INTERVAL);
    let rescan_interval = at_least(e, "tail.rescan_interval", tail.rescan_interval, RESCAN_MIN);
    let positions = &raw.positions;
    let import_from: Vec<crate::import::Source> = positions
        .import_from
        .iter()
        .filter_map(|s| match s.parse() {
            Ok(source) => Some(source),
            Err(why) => {
                e.push(ConfigError::invalid("positions.import_from", why));
                None
            }
        })
        .collect();
    let flush_interval = at_least(
        e,
        "positions.flush_interval",
        positions.flush_interval,
        FLUSH_MIN,
    );

    let max_bytes = raw.buffer.max_bytes;
    // Only when both inputs are themselves valid, so one mistake is not reported twice.
    if let (Some(line), Some(budget)) = (max_line_bytes, read_budget) {
        let needed = Size(2 * line.max(budget) as u64);
        if max_bytes < needed {
            e.push(ConfigError::invalid(
                "buffer.max_bytes",
                format!(
                    "must be at least 2 x max(tail.max_line_bytes, tail.read_budget) = {needed} \
                     (a whole line and a whole read must fit while another is in flight), is {max_bytes}"
                ),
            ));
        }
    }
    let max_bytes = usize::try_from(max_bytes.0).unwrap_or_else(|_| {
        e.push(ConfigError::invalid(
            "buffer.max_bytes",
            format!("{max_bytes} is more than this machine can address"),
        ));
        0
    });

    let output = match raw.output.kind {
        OutputType::Elasticsearch => super::elasticsearch::validate(
            e,
            &raw.output.elasticsearch,
            std::path::Path::new(&raw.data_dir),
        )
        .map_or(OutputSettings::Blackhole, |es| {
            OutputSettings::Elasticsearch(Box::new(es))
        }),
        OutputType::Stdout => OutputSettings::Stdout,
        OutputType::Blackhole => OutputSettings::Blackhole,
        OutputType::File => {
            if raw.output.file.path.trim().is_empty() {
                e.push(ConfigError::invalid(
                    "output.file.path",
                    "is required when output.type = \"file\"",
                ));
            }
            OutputSettings::File {
                path: PathBuf::from(&raw.output.file.path),
                fsync: raw.output.file.fsync,
            }
        }
    };

    for pattern in &tail.rotated_patterns {
        if let Err(why) = crate::tail::generations::check_pattern(pattern) {
            e.push(ConfigError::invalid("tail.rotated_patterns", why));
        }
    }
    let kubernetes = super::kubernetes::validate(e, &raw.kubernetes, &node_name, in_cluster);
    let schema = match raw.kubernetes.schema.as_str() {
        "fluentd" => crate::enrich::metadata::Schema::Fluentd,
        _ => crate::enrich::metadata::Schema::Ecs,
    };
    let multiline = super::multiline::validate(e, &raw.multiline, max_line_bytes);
    let listen = listen_address(e, &raw.server.listen);
    let rate_limit = rate_limit(e, &raw.rate_limit);
    let processing = super::processing::validate(e, &raw.processing, schema, &raw.kubernetes);
    let journald = super::journald::validate(e, &raw.journald, max_line_bytes);

    if !errors.is_empty() {
        return Err(errors);
    }
    // Every Option below is Some: a None pushed an error above.
    let (
        Some(shutdown_timeout),
        Some(max_line_bytes),
        Some(read_budget),
        Some(poll_interval),
        Some(rescan_interval),
        Some(flush_interval),
        Some(listen),
    ) = (
        shutdown_timeout,
        max_line_bytes,
        read_budget,
        poll_interval,
        rescan_interval,
        flush_interval,
        listen,
    )
    else {
        unreachable!("a value missing without an error");
    };
    Ok(Settings {
        data_dir: PathBuf::from(&raw.data_dir),
        node_name,
        shutdown_timeout,
        log: LogSettings {
            level: raw.log.level.clone(),
            format: raw.log.format,
        },
        tail: TailSettings {
            include: tail.include.clone(),
            exclude: tail.exclude.clone(),
            include_set,
            exclude_set,
            read_from: tail.read_from,
            format: tail.format,
            max_line_bytes,
            oversize: tail.oversize_lines,
            read_budget,
            poll_interval,
            rescan_interval,
            rotate_wait: tail.rotate_wait.0,
            max_deleted_files: tail.max_deleted_files as usize,
            max_deleted_bytes: tail.max_deleted_bytes.0,
            rotated_patterns: tail.rotated_patterns.clone(),
        },
        multiline,
        positions: PositionsSettings {
            flush_interval,
            gc_after: raw.positions.gc_after.0,
            import_from,
        },
        buffer: BufferSettings { max_bytes },
        output,
        kubernetes,
        schema,
        server: ServerSettings { listen },
        rate_limit,
        processing,
        journald,
    })
}

/// `server.listen`: an IP address and a port. A host name is refused rather than resolved:
/// validation does not touch the network, and which of a name's addresses is bound would be
/// a guess.
fn listen_address(errors: &mut Vec<ConfigError>, listen: &str) -> Option<std::net::SocketAddr> {
    match listen.trim().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(ConfigError::invalid(
                "server.listen",
                format!(
                    "{listen:?} is not an IP address and port (\"0.0.0.0:2020\", \"127.0.0.1:2020\", \"[::]:2020\")"
                ),
            ));
            None
        }
    }
}

/// `[rate_limit]`: the default and namespace limits parsed, the action named.
fn rate_limit(errors: &mut Vec<ConfigError>, raw: &RawRateLimit) -> RateLimitSettings {
    let default = LimitSpec::parse(&raw.default).unwrap_or_else(|why| {
        errors.push(ConfigError::invalid("rate_limit.default", why));
        LimitSpec::default()
    });
    let mut namespaces = Vec::new();
    for rule in &raw.namespaces {
        match rule.split_once('=') {
            Some((ns, limit)) if !ns.trim().is_empty() => match LimitSpec::parse(limit) {
                Ok(spec) => namespaces.push((ns.trim().to_owned(), spec)),
                Err(why) => errors.push(ConfigError::invalid("rate_limit.namespaces", why)),
            },
            _ => errors.push(ConfigError::invalid(
                "rate_limit.namespaces",
                format!("{rule:?} is not <namespace>=<limit> (batch=200/s)"),
            )),
        }
    }
    let action = match raw.action.as_str() {
        "throttle" => Action::Throttle,
        "drop" => Action::Drop,
        other => {
            errors.push(ConfigError::invalid(
                "rate_limit.action",
                format!("must be \"throttle\" or \"drop\", is {other:?}"),
            ));
            Action::Throttle
        }
    };
    let annotations = match raw.annotations.as_str() {
        "tighten" => AnnotationPolicy::Tighten,
        "override" => AnnotationPolicy::Override,
        "ignore" => AnnotationPolicy::Ignore,
        other => {
            errors.push(ConfigError::invalid(
                "rate_limit.annotations",
                format!("must be \"tighten\", \"override\" or \"ignore\", is {other:?}"),
            ));
            AnnotationPolicy::Tighten
        }
    };
    let burst = duration_in(
        errors,
        "rate_limit.burst",
        raw.burst,
        (HumanDuration::millis(10), HumanDuration::secs(60)),
    )
    .unwrap_or(Duration::from_secs(1));
    let summary_interval = at_least(
        errors,
        "rate_limit.summary_interval",
        raw.summary_interval,
        Duration::from_millis(100),
    )
    .unwrap_or(Duration::from_secs(10));
    RateLimitSettings {
        default,
        namespaces,
        burst,
        action,
        summary_interval,
        annotations,
    }
}

/// Records that `key` is invalid for `reason`; there is no value for it.
pub(super) fn refuse<T>(
    errors: &mut Vec<ConfigError>,
    key: impl Into<String>,
    reason: impl Into<String>,
) -> Option<T> {
    errors.push(ConfigError::invalid(key, reason));
    None
}

/// A size within `(min, max)`, both included, as a `usize`.
pub(super) fn size_in(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: Size,
    (min, max): (Size, Size),
) -> Option<usize> {
    within(errors, key, value, min, max).and_then(|size| usize::try_from(size.0).ok())
}

/// A duration within `(min, max)`, both included.
pub(super) fn duration_in(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: HumanDuration,
    (min, max): (HumanDuration, HumanDuration),
) -> Option<Duration> {
    within(errors, key, value, min, max).map(|duration| duration.0)
}

/// `value` if it is within `min..=max`; else an error that names the bounds.
fn within<T: PartialOrd + std::fmt::Display>(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Option<T> {
    if value < min || value > max {
        errors.push(ConfigError::invalid(
            key,
            format!("must be between {min} and {max}, is {value}"),
        ));
        return None;
    }
    Some(value)
}

/// A duration of at least `min` (a nanosecond: more than zero).
pub(super) fn at_least(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: HumanDuration,
    min: Duration,
) -> Option<Duration> {
    if value.0 < min {
        let rule = if min == Duration::from_nanos(1) {
            "must be more than 0s".to_string()
        } else {
            format!("must be at least {}", HumanDuration(min))
        };
        errors.push(ConfigError::invalid(key, format!("{rule}, is {value}")));
        return None;
    }
    Some(value.0)
}

/// Compiles glob patterns. `*` does not cross a `/`, as in a shell, so that a pattern matches
/// exactly the files discovery walks to (it walks one directory level per pattern component).
fn globs(errors: &mut Vec<ConfigError>, key: &str, patterns: &[String]) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        if !pattern.starts_with('/') {
            errors.push(ConfigError::invalid(
                key,
                format!("{pattern:?} is not absolute: patterns match absolute paths (/**/ matches in any directory)"),
            ));
            continue;
        }
        match GlobBuilder::new(pattern).literal_separator(true).build() {
            Ok(glob) => {
                set.add(glob);
            }
            Err(e) => errors.push(ConfigError::invalid(
                key,
                format!("{pattern:?} is not a glob pattern: {}", e.kind()),
            )),
        }
    }
    set.build().unwrap_or_else(|e| {
        errors.push(ConfigError::invalid(key, e.to_string()));
        GlobSet::empty()
    })
}

/// A tracing filter, as `EnvFilter` reads it. EnvFilter takes a bare word as a target to enable
/// entirely, so `level = "inof"` would quietly hide every event of the agent; a bare word that
/// is not a level is refused, and `target=level` is how a target is named.
fn check_filter(errors: &mut Vec<ConfigError>, level: &str) {
    if let Err(e) = EnvFilter::builder().parse(level) {
        errors.push(ConfigError::invalid(
            "log.level",
            format!("{level:?} is not a tracing filter: {e}"),
        ));
        return;
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[', ':']) && directive.parse::<LevelFilter>().is_err() {
            errors.push(ConfigError::invalid(
                "log.level",
                format!(
                    "{directive:?} is not a level (off, error, warn, info, debug, trace); \
                     to name a target write {directive}=debug"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(raw: &RawConfig) -> Vec<String> {
        match validate(raw, Some("node-1"), false) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_defaults_validate() {
        let settings = validate(&RawConfig::default(), Some("node-1"), false).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/logship"));
        assert_eq!(settings.node_name, "node-1");
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(settings.tail.include, ["/var/log/containers/*.log"]);
        assert!(settings
            .tail
            .include_set
            .is_match("/var/log/containers/web_shop_nginx-abc.log"));
        assert!(!settings
            .tail
            .include_set
            .is_match("/var/log/containers/sub/web.log"));
        assert_eq!(settings.tail.max_line_bytes, 256 * 1024);
        assert_eq!(settings.tail.read_budget, 256 * 1024);
        assert_eq!(settings.tail.poll_interval, Duration::from_millis(250));
        assert_eq!(settings.tail.rescan_interval, Duration::from_secs(10));
        assert_eq!(settings.tail.rotate_wait, Duration::from_secs(5));
        assert_eq!(settings.positions.flush_interval, Duration::from_secs(1));
        assert_eq!(settings.positions.gc_after, Duration::from_secs(86_400));
        assert_eq!(settings.buffer.max_bytes, 12 << 20);
        let OutputSettings::Elasticsearch(es) = &settings.output else {
            panic!("the default output is elasticsearch: {:?}", settings.output)
        };
        assert_eq!(es.client.hosts[0].as_str(), "http://localhost:9200/");
        assert_eq!(es.index_fallback, "logs-logship-default");
        assert_eq!(es.batch_max_bytes, 5 << 20);
        assert_eq!(es.retry_max_duration, None);
        assert_eq!(
            es.dead_letter.dir,
            PathBuf::from("/var/lib/logship/dead-letter")
        );
        assert_eq!(settings.server.listen.to_string(), "0.0.0.0:2020");
    }

    #[test]
    fn the_listen_address_is_an_ip_and_a_port() {
        let mut raw = RawConfig::default();
        for good in ["127.0.0.1:0", "[::]:2020", " 10.0.0.1:9000 "] {
            raw.server.listen = good.into();
            assert!(errors_of(&raw).is_empty(), "{good}");
        }
        for bad in ["localhost:2020", "0.0.0.0", ":2020", "0.0.0.0:70000", ""] {
            raw.server.listen = bad.into();
            let errors = errors_of(&raw);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(
                errors[0].starts_with("server.listen: ")
                    && errors[0].contains("IP address and port"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn node_name_falls_back_and_is_required() {
        let mut raw = RawConfig::default();
        assert!(errors_of(&raw).is_empty());
        let err = validate(&raw, None, false).unwrap_err();
        assert!(err[0]
            .to_string()
            .starts_with("node_name: is empty, and the NODE_NAME"));
        raw.node_name = " node-7 ".into();
        assert_eq!(validate(&raw, None, false).unwrap().node_name, "node-7");
    }

    #[test]
    fn impossible_values_are_all_reported() {
        let mut raw = RawConfig {
            data_dir: "".into(),
            shutdown_timeout: HumanDuration::secs(0),
            ..RawConfig::default()
        };
        raw.log.level = "inof".into();
        raw.tail.include = vec!["var/log/*.log".into(), "/var/log/[.log".into()];
        raw.tail.exclude = vec!["*.gz".into()];
        raw.tail.max_line_bytes = Size(512);
        raw.tail.read_budget = Size::mib(128);
        raw.tail.poll_interval = HumanDuration::secs(20);
        raw.tail.rescan_interval = HumanDuration::millis(50);
        raw.positions.flush_interval = HumanDuration::millis(1);
        raw.output.kind = OutputType::File;
        let errors = errors_of(&raw);
        let expected = [
            "data_dir: must not be empty",
            "shutdown_timeout: must be more than 0s, is 0s",
            "log.level: \"inof\" is not a level",
            "tail.include: \"var/log/*.log\" is not absolute",
            "tail.include: \"/var/log/[.log\" is not a glob pattern: unclosed character class",
            "tail.exclude: \"*.gz\" is not absolute",
            "tail.max_line_bytes: must be between 1KiB and 64MiB, is 512",
            "tail.read_budget: must be between 4KiB and 64MiB, is 128MiB",
            "tail.poll_interval: must be between 10ms and 10s, is 20s",
            "tail.rescan_interval: must be at least 100ms, is 50ms",
            "positions.flush_interval: must be at least 10ms, is 1ms",
            "output.file.path: is required when output.type = \"file\"",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error:?} vs {expected:?}");
        }
    }

    #[test]
    fn the_buffer_must_hold_two_of_the_larger_of_a_line_and_a_read() {
        let mut raw = RawConfig::default();
        raw.tail.max_line_bytes = Size::mib(16);
        raw.tail.read_budget = Size::mib(1);
        raw.buffer.max_bytes = Size::mib(31);
        let errors = errors_of(&raw);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(
            "buffer.max_bytes: must be at least 2 x max(tail.max_line_bytes, tail.read_budget) = 32MiB"
        ));
        assert!(errors[0].ends_with("is 31MiB"), "{}", errors[0]);
        raw.buffer.max_bytes = Size::mib(32);
        assert!(errors_of(&raw).is_empty());
        // An out-of-range input is reported once, on its own key.
        raw.tail.max_line_bytes = Size::mib(100);
        raw.buffer.max_bytes = Size::kib(64);
        let errors = errors_of(&raw);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("tail.max_line_bytes"));
    }

    #[test]
    fn rotated_patterns_must_name_siblings_of_the_file() {
        let mut raw = RawConfig::default();
        assert!(errors_of(&raw).is_empty());
        raw.tail.rotated_patterns = vec!["*.gz".into(), "{name}.[".into(), "{name}.*".into()];
        let errors = errors_of(&raw);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.starts_with("tail.rotated_patterns")));
        assert!(errors[0].contains("{name}"), "{}", errors[0]);
        raw.tail.rotated_patterns = Vec::new();
        assert!(errors_of(&raw).is_empty(), "empty turns it off");
    }

    #[test]
    fn filters_and_globs_that_are_fine() {
        let mut raw = RawConfig::default();
        raw.log.level = "warn,logship::tail=debug,hyper[span]=off".into();
        raw.tail.include = vec!["/var/log/**/*.log".into(), "/var/log/{a,b}/?.log".into()];
        raw.tail.exclude = vec!["/**/*.gz".into()];
        raw.output.kind = OutputType::File;
        raw.output.file.path = "/tmp/out.ndjson".into();
        raw.output.file.fsync = true;
        let settings = validate(&raw, Some("n"), false).unwrap();
        assert!(settings
            .tail
            .include_set
            .is_match("/var/log/pods/x/y/0.log"));
        assert!(settings.tail.include_set.is_match("/var/log/b/z.log"));
        assert!(settings.tail.exclude_set.is_match("/var/log/a/x.gz"));
        assert_eq!(
            settings.output,
            OutputSettings::File {
                path: "/tmp/out.ndjson".into(),
                fsync: true
            }
        );
    }
}
