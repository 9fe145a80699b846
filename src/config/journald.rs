//! The `[journald]` section, validated into [`JournaldSettings`] (`None` when it is off).

use std::path::PathBuf;

use super::error::ConfigError;
use super::raw::RawJournald;
use super::validate::{duration_in, POLL_INTERVAL};
use crate::journald::{JournaldSettings, Match};

/// Where the system journal is: persistent, then volatile (journald writes to one of them).
const SYSTEM_JOURNAL: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// `max_line_bytes` (`tail.max_line_bytes`, when valid) bounds a journal message as it bounds a
/// line.
pub(super) fn validate(
    e: &mut Vec<ConfigError>,
    raw: &RawJournald,
    max_line_bytes: Option<usize>,
) -> Option<JournaldSettings> {
    let directories: Vec<PathBuf> = if raw.directory.trim().is_empty() {
        SYSTEM_JOURNAL.iter().map(PathBuf::from).collect()
    } else if !raw.directory.starts_with('/') {
        e.push(ConfigError::invalid(
            "journald.directory",
            format!("{:?} is not an absolute path", raw.directory),
        ));
        Vec::new()
    } else {
        vec![PathBuf::from(&raw.directory)]
    };
    let units = unit_names(e, "journald.units", &raw.units);
    let exclude_units = unit_names(e, "journald.exclude_units", &raw.exclude_units);
    let mut matches: Vec<Match> = Vec::new();
    for m in &raw.matches {
        match m.split_once('=') {
            Some((field, value)) if is_field_name(field) => {
                match matches.iter_mut().find(|x| x.field == field) {
                    Some(x) => x.values.push(value.as_bytes().to_vec()),
                    None => matches.push(Match {
                        field: field.to_owned(),
                        values: vec![value.as_bytes().to_vec()],
                    }),
                }
            }
            _ => e.push(ConfigError::invalid(
                "journald.matches",
                format!(
                    "{m:?} is not FIELD=value with a journal field name (A-Z, 0-9 and _, not starting with a digit): \"_TRANSPORT=kernel\", \"SYSLOG_IDENTIFIER=sshd\""
                ),
            )),
        }
    }
    let poll_interval = duration_in(
        e,
        "journald.poll_interval",
        raw.poll_interval,
        POLL_INTERVAL,
    );
    if !raw.enabled {
        return None;
    }
    Some(JournaldSettings {
        directories,
        units,
        exclude_units,
        matches,
        kernel: raw.kernel,
        from_tail: raw.read_from == super::ReadFrom::Tail,
        all_fields: raw.all_fields,
        poll_interval: poll_interval?,
        max_message_bytes: max_line_bytes?,
    })
}

/// Unit names as journalctl's `-u` takes them: a name without a unit type is a service.
fn unit_names(e: &mut Vec<ConfigError>, key: &str, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let name = name.trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            e.push(ConfigError::invalid(
                key,
                format!("{name:?} is not a unit name (\"kubelet\", \"containerd.service\")"),
            ));
            continue;
        }
        const TYPES: [&str; 11] = [
            ".service",
            ".socket",
            ".device",
            ".mount",
            ".automount",
            ".swap",
            ".target",
            ".path",
            ".timer",
            ".slice",
            ".scope",
        ];
        if TYPES.iter().any(|t| name.ends_with(t)) {
            out.push(name.to_owned());
        } else {
            out.push(format!("{name}.service"));
        }
    }
    out
}

/// A journal field name: upper-case letters, digits and `_`, not starting with a digit
/// (journald refuses others).
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_on_with_the_system_journal() {
        let mut e = Vec::new();
        assert!(validate(&mut e, &RawJournald::default(), Some(1024)).is_none());
        let on = RawJournald {
            enabled: true,
            units: vec![
                "kubelet".into(),
                "containerd.service".into(),
                "docker.socket".into(),
            ],
            matches: vec![
                "_TRANSPORT=kernel".into(),
                "_TRANSPORT=journal".into(),
                "PRIORITY=3".into(),
            ],
            ..RawJournald::default()
        };
        let s = validate(&mut e, &on, Some(1024)).expect("on");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            s.directories,
            [
                PathBuf::from("/var/log/journal"),
                PathBuf::from("/run/log/journal")
            ]
        );
        assert_eq!(
            s.units,
            ["kubelet.service", "containerd.service", "docker.socket"]
        );
        assert_eq!(s.matches.len(), 2);
        assert_eq!(
            s.matches[0].values,
            [b"kernel".to_vec(), b"journal".to_vec()]
        );
        assert!(!s.from_tail);
        assert!(s.kernel);
    }

    #[test]
    fn bad_values_are_named() {
        let mut e = Vec::new();
        let bad = RawJournald {
            enabled: true,
            directory: "journal".into(),
            units: vec!["".into(), "a b".into()],
            matches: vec!["unit=x".into(), "NOEQUALS".into()],
            poll_interval: super::super::units::HumanDuration::secs(60),
            ..RawJournald::default()
        };
        assert!(validate(&mut e, &bad, Some(1024)).is_none());
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        for want in [
            "journald.directory: \"journal\" is not an absolute path",
            "journald.units: \"\" is not a unit name",
            "journald.units: \"a b\" is not a unit name",
            "journald.matches: \"unit=x\" is not FIELD=value",
            "journald.matches: \"NOEQUALS\" is not FIELD=value",
            "journald.poll_interval: must be between 10ms and 10s, is 1m",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
