//! `[processing]` -> [`ProcessingSettings`]: the parser and target named, bounds in range,
//! filters and static fields resolved against the schema (so that a filter on a field the
//! documents cannot have is an error here, not a silent no-op), rules and hints parsed.

use super::error::ConfigError;
use super::raw::{RawKubernetes, RawProcessing};
use crate::enrich::metadata::Schema;
use crate::process::filter::{self, Match, Names};
use crate::process::hints::{ParserChoice, Rule};
use crate::process::json::Bounds;
use crate::process::ProcessingSettings;

fn key(name: &str) -> String {
    format!("processing.{name}")
}

/// A number within `min..=max`.
fn within(errors: &mut Vec<ConfigError>, name: &str, value: u32, min: u32, max: u32) -> usize {
    if value < min || value > max {
        errors.push(ConfigError::invalid(
            key(name),
            format!("must be between {min} and {max}, is {value}"),
        ));
    }
    value.clamp(min, max) as usize
}

/// Checks the section; `kubernetes` for how label keys are de-dotted.
pub fn validate(
    errors: &mut Vec<ConfigError>,
    raw: &RawProcessing,
    schema: Schema,
    kubernetes: &RawKubernetes,
) -> ProcessingSettings {
    let e = errors;
    let mut s = ProcessingSettings::new(schema);
    s.parser = ParserChoice::parse(&raw.parser).unwrap_or_else(|why| {
        e.push(ConfigError::invalid(key("parser"), why));
        ParserChoice::Auto
    });
    let target = raw.target.trim();
    s.names.target = if target.is_empty() {
        None
    } else if target.contains('.')
        || s.names.own_roots().contains(&target)
        || target.starts_with('_')
    {
        e.push(ConfigError::invalid(
            key("target"),
            format!(
                "{target:?} must be a plain name (no dots, not starting with _) and not one of the document's own fields, or empty for the top level"
            ),
        ));
        Some("json".into())
    } else {
        Some(target.to_string())
    };
    s.keep_message = raw.keep_message;
    if raw.level_keys.iter().any(|k| k.trim().is_empty()) {
        e.push(ConfigError::invalid(key("level_keys"), "has an empty key"));
    }
    s.level_keys = raw
        .level_keys
        .iter()
        .map(|k| k.trim().to_string())
        .collect();
    s.bounds = Bounds {
        max_depth: within(e, "max_depth", raw.max_depth, 1, 32),
        max_fields: within(e, "max_fields", raw.max_fields, 1, 10_000),
        max_key_bytes: within(e, "max_key_bytes", raw.max_key_bytes, 1, 4096),
    };

    for text in &raw.add_fields {
        match filter::parse_add(text) {
            Ok(pair) => s.add_fields.push(pair),
            Err(why) => e.push(ConfigError::invalid(key("add_fields"), why)),
        }
    }
    s.names.static_roots = s
        .add_fields
        .iter()
        .map(|(k, _)| k.split('.').next().unwrap_or(k).to_string())
        .collect();
    match filter::render_static(&s.names, &s.add_fields) {
        Ok(statics) => s.statics = statics,
        Err(why) => e.push(ConfigError::invalid(key("add_fields"), why)),
    }
    let names: Names = s.names.clone();
    for (name, list, out) in [
        ("include", &raw.include, &mut s.include),
        ("exclude", &raw.exclude, &mut s.exclude),
    ] {
        for text in list {
            match Match::parse(&names, text) {
                Ok(m) => out.push(m),
                Err(why) => e.push(ConfigError::invalid(key(name), why)),
            }
        }
    }
    for text in &raw.drop_fields {
        match filter::parse_drop(&names, text) {
            Ok(f) => s.drop_fields.push(f),
            Err(why) => e.push(ConfigError::invalid(key("drop_fields"), why)),
        }
    }
    for text in &raw.rename_fields {
        match filter::parse_rename(&names, text, raw.keep_message) {
            Ok(pair) => s.rename_fields.push(pair),
            Err(why) => e.push(ConfigError::invalid(key("rename_fields"), why)),
        }
    }
    let dedot = Some(kubernetes.dedot_separator.as_str()).filter(|d| !d.is_empty());
    for text in &raw.rules {
        match Rule::parse(text, dedot) {
            Ok(rule) => {
                if rule.uses_labels() && !kubernetes.labels {
                    e.push(ConfigError::invalid(
                        key("rules"),
                        format!(
                            "{text:?} has a label selector, which needs kubernetes.labels = true"
                        ),
                    ));
                }
                s.rules.push(rule);
            }
            Err(why) => e.push(ConfigError::invalid(key("rules"), why)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::filter::Field;

    fn check(raw: &RawProcessing) -> Result<ProcessingSettings, Vec<String>> {
        let mut errors = Vec::new();
        let s = validate(&mut errors, raw, Schema::Ecs, &RawKubernetes::default());
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn the_defaults_parse_json_objects_into_json() {
        let s = check(&RawProcessing::default()).unwrap();
        assert_eq!(s.parser, ParserChoice::Auto);
        assert_eq!(s.names.target.as_deref(), Some("json"));
        assert!(s.keep_message);
        assert_eq!(s.bounds.max_depth, 8);
        assert_eq!(s.bounds.max_fields, 200);
        assert!(s.statics.is_empty());
    }

    #[test]
    fn a_full_section() {
        let raw = RawProcessing {
            parser: "json".into(),
            target: "".into(),
            keep_message: false,
            include: vec!["message=~ERROR".into(), "stream=~stderr".into()],
            exclude: vec![
                "kubernetes.namespace=~^kube-".into(),
                "path=~^/healthz".into(),
            ],
            drop_fields: vec!["password".into(), "log.level".into()],
            rename_fields: vec!["msg=message".into()],
            add_fields: vec!["cluster.name=prod".into()],
            rules: vec!["namespace=shop selector=app.kubernetes.io/name=web parser=logfmt".into()],
            ..RawProcessing::default()
        };
        let s = check(&raw).unwrap();
        assert_eq!(s.names.target, None);
        assert_eq!(s.exclude[1].field, Field::Parsed("path".into()));
        assert_eq!(
            s.rename_fields,
            [(Field::Parsed("msg".into()), Field::Message)]
        );
        assert_eq!(s.statics, "\"cluster\":{\"name\":\"prod\"},");
        assert_eq!(s.rules.len(), 1);
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let raw = RawProcessing {
            parser: "xml".into(),
            target: "log".into(),
            max_depth: 0,
            max_fields: 20_000,
            include: vec!["message~x".into()],
            exclude: vec!["json.a=~(".into()],
            drop_fields: vec!["message".into()],
            rename_fields: vec!["json.msg=message".into()],
            add_fields: vec!["host.ip=1".into()],
            rules: vec!["namespace=shop".into()],
            ..RawProcessing::default()
        };
        let errors = check(&raw).unwrap_err();
        for key in [
            "processing.parser:",
            "processing.target:",
            "processing.max_depth:",
            "processing.max_fields:",
            "processing.include:",
            "processing.exclude:",
            "processing.drop_fields:",
            "processing.rename_fields:",
            "processing.add_fields:",
            "processing.rules:",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} in {errors:#?}"
            );
        }
        let kubernetes = RawKubernetes {
            labels: false,
            ..RawKubernetes::default()
        };
        let mut errors = Vec::new();
        let raw = RawProcessing {
            rules: vec!["selector=app=web parser=json".into()],
            ..RawProcessing::default()
        };
        validate(&mut errors, &raw, Schema::Ecs, &kubernetes);
        assert!(
            errors[0].to_string().contains("kubernetes.labels = true"),
            "{errors:?}"
        );
    }
}
