//! `[multiline]` -> [`Multiline`]: the limits in range (`max_bytes` no more than
//! `tail.max_line_bytes`), every custom rule's patterns compiled
//! (a pattern that does not compile is an error naming the rule's key and what the regex crate
//! says), names unique, and the default rule one that exists.

use super::error::ConfigError;
use super::raw::RawMultiline;
use super::units::{HumanDuration, Size};
use super::validate::{duration_in, size_in};
use crate::parse::multiline::{Builtin, Limits, Multiline, MultilineRule, MAX_LIST};

/// Checks the section. `max_line_bytes` is `tail.max_line_bytes`, if valid: a joined record is
/// not longer than a line may be.
pub fn validate(
    errors: &mut Vec<ConfigError>,
    raw: &RawMultiline,
    max_line_bytes: Option<usize>,
) -> Multiline {
    let e = errors;
    let defaults = Limits::default();
    let flush_timeout = duration_in(
        e,
        "multiline.flush_timeout",
        raw.flush_timeout,
        (HumanDuration::millis(10), HumanDuration::secs(60)),
    )
    .unwrap_or(defaults.flush_timeout);
    // A joined record is never longer than a line may be: tail.max_line_bytes bounds it too,
    // so that a smaller max_line_bytes does not need this key changed as well.
    let max_bytes = size_in(
        e,
        "multiline.max_bytes",
        raw.max_bytes,
        (Size::kib(1), Size::mib(64)),
    )
    .map(|bytes| max_line_bytes.map_or(bytes, |line| bytes.min(line)));
    if !(2..=100_000).contains(&raw.max_lines) {
        e.push(ConfigError::invalid(
            "multiline.max_lines",
            format!("must be between 2 and 100000, is {}", raw.max_lines),
        ));
    }
    let limits = Limits {
        flush_timeout,
        max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
        max_lines: raw.max_lines.clamp(2, 100_000) as usize,
    };

    let mut rules = Vec::new();
    for (i, rule) in raw.rules.iter().enumerate() {
        let key = |field: &str| format!("multiline.rules[{i}].{field}");
        let name = rule.name.trim();
        let taken = name == "none"
            || Builtin::ALL.iter().any(|b| b.name() == name)
            || raw.rules[..i].iter().any(|r| r.name.trim() == name);
        if name.is_empty() {
            e.push(ConfigError::invalid(key("name"), "must not be empty"));
            continue;
        }
        if taken {
            e.push(ConfigError::invalid(
                key("name"),
                format!("{name:?} is already the name of a rule (none, the built-in ones, or an earlier one)"),
            ));
            continue;
        }
        match MultilineRule::custom(name, &rule.start, &rule.continuation, limits) {
            Ok(rule) => rules.push(rule),
            Err((field, why)) => e.push(ConfigError::invalid(
                key(field),
                format!("rule {name:?}: {why}"),
            )),
        }
    }

    // A list (`java+python`, or an array in the file) names each of its rules.
    let default = raw.default_rule.trim();
    let parts: Vec<&str> = default.split('+').map(str::trim).collect();
    let unknown: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|part| {
            !(*part == "none"
                || Builtin::ALL.iter().any(|b| b.name() == *part)
                || raw.rules.iter().any(|r| r.name.trim() == *part))
        })
        .collect();
    let default = if !unknown.is_empty() {
        let mut names: Vec<&str> = vec!["none"];
        names.extend(Builtin::ALL.iter().map(|b| b.name()));
        for name in raw.rules.iter().map(|r| r.name.trim()) {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        e.push(ConfigError::invalid(
            "multiline.default_rule",
            format!(
                "{} not a rule: one of {} (or add it to multiline.rules)",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if unknown.len() == 1 { " is" } else { " are" },
                names.join(", ")
            ),
        ));
        "none"
    } else if parts.len() > 1 && parts.contains(&"none") {
        e.push(ConfigError::invalid(
            "multiline.default_rule",
            format!("{default:?}: \"none\" joins nothing and cannot be in a list of rules"),
        ));
        "none"
    } else if parts.len() > MAX_LIST {
        e.push(ConfigError::invalid(
            "multiline.default_rule",
            format!("{default:?}: at most {MAX_LIST} rules in a list"),
        ));
        "none"
    } else {
        default
    };
    // A default naming a custom rule that had an error is reported with that rule; the agent
    // does not start either way.
    Multiline::new(limits, rules, default).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::raw::RawMultilineRule;

    fn rule(name: &str, start: &str, continuation: &str) -> RawMultilineRule {
        RawMultilineRule {
            name: name.into(),
            start: start.into(),
            continuation: continuation.into(),
        }
    }

    fn check(raw: &RawMultiline) -> (Multiline, Vec<String>) {
        let mut errors = Vec::new();
        let m = validate(&mut errors, raw, Some(256 * 1024));
        (m, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_defaults_join_nothing() {
        let (m, errors) = check(&RawMultiline::default());
        assert!(errors.is_empty(), "{errors:?}");
        assert!(m.default_rule().is_none());
        assert_eq!(
            m.limits(),
            Limits {
                flush_timeout: Duration::from_secs(1),
                max_bytes: 64 * 1024,
                max_lines: 500
            }
        );
        assert_eq!(
            m.names().collect::<Vec<_>>(),
            ["java", "python", "go", "nodejs"]
        );
    }

    #[test]
    fn max_bytes_is_at_most_a_line() {
        let raw = RawMultiline {
            max_bytes: Size::mib(1),
            ..RawMultiline::default()
        };
        let (m, errors) = check(&raw);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.limits().max_bytes, 256 * 1024);
    }

    #[test]
    fn custom_rules_and_a_default() {
        let raw = RawMultiline {
            default_rule: "spring".into(),
            rules: vec![
                rule("spring", r"^\d{4}-\d{2}-\d{2}", ""),
                rule("indented", "", r"^\s"),
            ],
            ..RawMultiline::default()
        };
        let (m, errors) = check(&raw);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.default_rule().unwrap().name(), "spring");
        assert_eq!(m.rule("indented").unwrap().name(), "indented");
        assert_eq!(m.rule("java").unwrap().name(), "java");
        assert!(m.rule("none").is_none());
        assert!(m.resolve("none").unwrap().is_none());
        let unknown = m.resolve("ruby").unwrap_err().to_string();
        assert_eq!(
            unknown,
            "no multiline rule is named \"ruby\" (known: none, java, python, go, nodejs, spring, indented)"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let raw = RawMultiline {
            default_rule: "jaava".into(),
            flush_timeout: HumanDuration::millis(1),
            max_bytes: Size::mib(100),
            max_lines: 1,
            rules: vec![
                rule("", "^x", ""),
                rule("java", "^x", ""),
                rule("bad", r"^(\d+", ""),
                rule("worse", "", "[z-a]"),
                rule("empty", "", ""),
                rule("bad", "^y", ""),
            ],
        };
        let (_, errors) = check(&raw);
        let expected = [
            "multiline.flush_timeout: must be between 10ms and 1m, is 1ms",
            "multiline.max_bytes: must be between 1KiB and 64MiB, is 100MiB",
            "multiline.max_lines: must be between 2 and 100000, is 1",
            "multiline.rules[0].name: must not be empty",
            "multiline.rules[1].name: \"java\" is already the name of a rule",
            "multiline.rules[2].start: rule \"bad\": \"^(\\\\d+\" is not a regular expression: unclosed group",
            "multiline.rules[3].continuation: rule \"worse\": \"[z-a]\" is not a regular expression: invalid character class range, the start must be <= the end",
            "multiline.rules[4].start: rule \"empty\": needs a start pattern, a continuation pattern, or both",
            "multiline.rules[5].name: \"bad\" is already the name of a rule",
            "multiline.default_rule: \"jaava\" is not a rule: one of none, java, python, go, nodejs, bad, worse, empty (or add it to multiline.rules)",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error:?}\nvs {expected:?}");
        }
    }
}
