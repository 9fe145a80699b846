//! Per-pod hints: which message parser and which multiline rule a container gets, from its
//! pod's annotations or from configuration rules, resolved per container and again whenever
//! the pod changes (an annotation can be edited while the pod runs).
//!
//! Annotations (read from the metadata cache, like `logship.io/rate-limit`):
//!
//! - `logship.io/parser`: `json`, `logfmt`, `auto` or `none`;
//! - `logship.io/multiline`: `java`, `python`, `go`, `nodejs`, a rule named in the configuration,
//!   several of them joined by `+` (`java+python`), or `none`.
//!
//! A value applies to every container of the pod; `<container>=<value>` items, comma-separated,
//! name containers, and a bare value among them is for the others:
//! `logship.io/parser: "app=json,istio-proxy=none"`, `logship.io/parser: "logfmt,envoy=json"`.
//! (A value rather than `logship.io/parser-<container>` keys: annotation names are at most 63
//! characters, container names may be as long.)
//!
//! Configuration rules (`processing.rules`), the first matching one that sets a hint wins:
//! `"namespace=shop,payments selector=app.kubernetes.io/name=web container=app parser=json
//! multiline=java"`; every term is optional, and a rule without `namespace`, `selector` or
//! `container` matches every file. `selector` is an equality-based label selector: `k=v`,
//! `k!=v`, `k` (has the label), `!k` (has not), comma-separated, all must hold.
//!
//! Precedence: the pod's annotation, then the first matching rule, then `processing.parser`
//! (and for multiline, the file's own configuration).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::enrich::metadata::PodMeta;
use crate::source::KubeletName;

/// The annotation that chooses a container's message parser.
pub const PARSER_ANNOTATION: &str = "logship.io/parser";
/// The annotation that chooses a container's multiline rule.
pub const MULTILINE_ANNOTATION: &str = "logship.io/multiline";

/// Which parser a container's messages get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParserChoice {
    /// A message that is a JSON object is parsed; any other is left as it is.
    #[default]
    Auto,
    /// Every message is expected to be a JSON object; one that is not is counted as invalid.
    Json,
    /// Every message is expected to be logfmt.
    Logfmt,
    /// Messages are left as they are.
    None,
}

impl ParserChoice {
    pub fn parse(text: &str) -> Result<ParserChoice, String> {
        match text.trim() {
            "auto" => Ok(ParserChoice::Auto),
            "json" => Ok(ParserChoice::Json),
            "logfmt" => Ok(ParserChoice::Logfmt),
            "none" => Ok(ParserChoice::None),
            other => Err(format!(
                "{other:?} is not a parser (json, logfmt, auto or none)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParserChoice::Auto => "auto",
            ParserChoice::Json => "json",
            ParserChoice::Logfmt => "logfmt",
            ParserChoice::None => "none",
        }
    }
}

/// A multiline rule name: `none`, a built-in (`java`, `python`, `go`, `nodejs`) or a rule named
/// in the configuration, or several joined by `+` (`java+python`: the comma already separates
/// an annotation's items). Only the spelling is checked here (each name 1 to 63 of `a-z`, `0-9`,
/// `-`, `_`, starting with a letter or digit); the multiline engine knows which rules exist.
pub fn multiline_name(text: &str) -> Result<Arc<str>, String> {
    let name = text.trim();
    let spelled = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && part.as_bytes()[0].is_ascii_alphanumeric()
    };
    if name.split('+').all(spelled) {
        Ok(Arc::from(name))
    } else {
        Err(format!(
            "{name:?} is not a multiline rule name (java, python, go, nodejs, none, a configured rule: a-z, 0-9, - and _; several joined by +)"
        ))
    }
}

/// The value an annotation gives `container`: its own `<container>=<value>` item, else the
/// bare value, else none. The whole annotation is checked, so a mistake for another container
/// is reported too.
pub fn for_container<'v>(value: &'v str, container: &str) -> Result<Option<&'v str>, String> {
    let mut bare = None;
    let mut own = None;
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("{value:?} has an empty item"));
        }
        match item.split_once('=') {
            Some((name, v)) => {
                let (name, v) = (name.trim(), v.trim());
                if name.is_empty() || v.is_empty() {
                    return Err(format!("{item:?} is not <container>=<value>"));
                }
                if name == container {
                    own = Some(v);
                }
            }
            None if bare.is_some() => {
                return Err(format!("{value:?} has two values for every container"));
            }
            None => bare = Some(item),
        }
    }
    Ok(own.or(bare))
}

/// One term of an equality-based label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A configuration rule: which files it matches, and what it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// As written, for logs.
    pub text: String,
    namespaces: Vec<String>,
    /// Label keys de-dotted as the metadata cache keeps them.
    selector: Vec<Term>,
    containers: Vec<String>,
    pub parser: Option<ParserChoice>,
    pub multiline: Option<Arc<str>>,
}

impl Rule {
    /// Parses `namespace=a,b selector=k=v,k2!=v2 container=c parser=json multiline=java`.
    /// `dedot`: the separator label keys are de-dotted with (`kubernetes.dedot_separator`).
    pub fn parse(text: &str, dedot: Option<&str>) -> Result<Rule, String> {
        let mut rule = Rule {
            text: text.to_string(),
            namespaces: Vec::new(),
            selector: Vec::new(),
            containers: Vec::new(),
            parser: None,
            multiline: None,
        };
        let list = |v: &str| -> Result<Vec<String>, String> {
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            if items.iter().any(String::is_empty) {
                return Err(format!("{v:?} has an empty name"));
            }
            Ok(items)
        };
        let key = |k: &str| match dedot {
            Some(sep) => k.replace('.', sep),
            None => k.to_string(),
        };
        let mut seen = Vec::new();
        for term in text.split_whitespace() {
            let (name, value) = term
                .split_once('=')
                .ok_or_else(|| format!("{term:?} is not <name>=<value>"))?;
            if seen.contains(&name) {
                return Err(format!("{name} is given twice"));
            }
            seen.push(name);
            match name {
                "namespace" => rule.namespaces = list(value)?,
                "container" => rule.containers = list(value)?,
                "selector" => {
                    for t in list(value)? {
                        rule.selector.push(if let Some((k, v)) = t.split_once("!=") {
                            Term::NotEquals(key(k), v.to_string())
                        } else if let Some((k, v)) = t.split_once('=') {
                            Term::Equals(key(k), v.strip_prefix('=').unwrap_or(v).to_string())
                        } else if let Some(k) = t.strip_prefix('!') {
                            Term::Absent(key(k))
                        } else {
                            Term::Exists(key(&t))
                        });
                    }
                }
                "parser" => rule.parser = Some(ParserChoice::parse(value)?),
                "multiline" => rule.multiline = Some(multiline_name(value)?),
                other => {
                    return Err(format!(
                        "{other:?} is not a rule term (namespace, selector, container, parser, multiline)"
                    ))
                }
            }
        }
        if rule.parser.is_none() && rule.multiline.is_none() {
            return Err(format!("{text:?} sets neither parser nor multiline"));
        }
        Ok(rule)
    }

    /// Whether the rule looks at pod labels.
    pub fn uses_labels(&self) -> bool {
        !self.selector.is_empty()
    }

    fn matches(&self, kubelet: Option<&KubeletName>, pod: Option<&PodMeta>) -> bool {
        let scoped =
            !self.namespaces.is_empty() || !self.containers.is_empty() || !self.selector.is_empty();
        let Some(k) = kubelet else {
            return !scoped;
        };
        if !self.namespaces.is_empty() && !self.namespaces.contains(&k.namespace) {
            return false;
        }
        if !self.containers.is_empty() && !self.containers.contains(&k.container) {
            return false;
        }
        if self.selector.is_empty() {
            return true;
        }
        let Some(pod) = pod else {
            return false;
        };
        self.selector.iter().all(|t| match t {
            Term::Equals(k, v) => pod.labels.get(k) == Some(v),
            Term::NotEquals(k, v) => pod.labels.get(k) != Some(v),
            Term::Exists(k) => pod.labels.contains_key(k),
            Term::Absent(k) => !pod.labels.contains_key(k),
        })
    }
}

/// Where a hint came from, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintSource {
    Annotation,
    Rule(String),
}

/// What hints say about one container; `None`: no hint (the configuration's default applies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    pub parser: Option<(ParserChoice, HintSource)>,
    pub multiline: Option<(Arc<str>, HintSource)>,
}

/// Resolves the hints of a container: its pod's annotations, then the first matching rule per
/// hint. Annotations that do not parse are ignored and returned as problems (`(annotation,
/// reason)`) for the caller to report.
pub fn resolve(
    rules: &[Rule],
    kubelet: Option<&KubeletName>,
    pod: Option<&PodMeta>,
) -> (Hints, Vec<(&'static str, String)>) {
    let mut hints = Hints::default();
    let mut problems = Vec::new();
    if let (Some(k), Some(pod)) = (kubelet, pod) {
        if let Some(value) = pod.hints.get(PARSER_ANNOTATION) {
            match for_container(value, &k.container)
                .and_then(|v| v.map(ParserChoice::parse).transpose())
            {
                Ok(choice) => hints.parser = choice.map(|c| (c, HintSource::Annotation)),
                Err(why) => problems.push((PARSER_ANNOTATION, why)),
            }
        }
        if let Some(value) = pod.hints.get(MULTILINE_ANNOTATION) {
            match for_container(value, &k.container).and_then(|v| v.map(multiline_name).transpose())
            {
                Ok(name) => hints.multiline = name.map(|n| (n, HintSource::Annotation)),
                Err(why) => problems.push((MULTILINE_ANNOTATION, why)),
            }
        }
    }
    for rule in rules {
        if hints.parser.is_some() && hints.multiline.is_some() {
            break;
        }
        if !rule.matches(kubelet, pod) {
            continue;
        }
        if hints.parser.is_none() {
            hints.parser = rule
                .parser
                .map(|p| (p, HintSource::Rule(rule.text.clone())));
        }
        if hints.multiline.is_none() {
            hints.multiline = rule
                .multiline
                .clone()
                .map(|m| (m, HintSource::Rule(rule.text.clone())));
        }
    }
    (hints, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(labels: &[(&str, &str)], hints: &[(&str, &str)]) -> PodMeta {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodMeta {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: None,
            ip: None,
            node: None,
            labels: map(labels),
            annotations: BTreeMap::new(),
            hints: map(hints),
            workload: None,
            containers: Vec::new(),
        }
    }

    fn kubelet(container: &str) -> KubeletName {
        KubeletName {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: container.into(),
            container_id: None,
            pod_uid: None,
        }
    }

    #[test]
    fn per_container_annotation_values() {
        assert_eq!(for_container("json", "app"), Ok(Some("json")));
        assert_eq!(
            for_container("app=json,sidecar=none", "app"),
            Ok(Some("json"))
        );
        assert_eq!(for_container("app=json,sidecar=none", "other"), Ok(None));
        assert_eq!(
            for_container("logfmt, envoy=json", "envoy"),
            Ok(Some("json"))
        );
        assert_eq!(
            for_container("logfmt, envoy=json", "app"),
            Ok(Some("logfmt"))
        );
        for bad in ["", "json,,x=y", "json,logfmt", "=json", "app="] {
            assert!(for_container(bad, "app").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_choices() {
        assert_eq!(ParserChoice::parse("logfmt"), Ok(ParserChoice::Logfmt));
        assert!(ParserChoice::parse("xml").is_err());
        assert_eq!(multiline_name("java").unwrap().as_ref(), "java");
        assert!(multiline_name("my_rule-2").is_ok());
        assert_eq!(
            multiline_name("java+python").unwrap().as_ref(),
            "java+python"
        );
        for bad in ["java+", "+java", "java++go", "java+Go"] {
            assert!(multiline_name(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "Java", "-x", "a b", &"x".repeat(64)] {
            assert!(multiline_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn annotations_win_over_rules_and_the_first_matching_rule_wins() {
        let rules = vec![
            Rule::parse(
                "namespace=shop selector=app.kubernetes.io/name=web,!canary container=app parser=logfmt",
                Some("_"),
            )
            .unwrap(),
            Rule::parse("namespace=shop multiline=java", None).unwrap(),
            Rule::parse("parser=none multiline=go", None).unwrap(),
        ];
        let web = pod(&[("app_kubernetes_io/name", "web")], &[]);
        let (h, _) = resolve(&rules, Some(&kubelet("app")), Some(&web));
        assert_eq!(h.parser.unwrap().0, ParserChoice::Logfmt);
        assert_eq!(h.multiline.unwrap().0.as_ref(), "java");
        // Another container: the first rule does not match; the catch-all sets the parser.
        let (h, _) = resolve(&rules, Some(&kubelet("sidecar")), Some(&web));
        assert_eq!(h.parser.unwrap().0, ParserChoice::None);
        // A canary: the selector excludes it.
        let canary = pod(&[("app_kubernetes_io/name", "web"), ("canary", "")], &[]);
        let (h, _) = resolve(&rules, Some(&kubelet("app")), Some(&canary));
        assert_eq!(h.parser.unwrap().0, ParserChoice::None);
        // The annotation, per container.
        let annotated = pod(
            &[("app_kubernetes_io/name", "web")],
            &[
                (PARSER_ANNOTATION, "json,sidecar=none"),
                (MULTILINE_ANNOTATION, "app=python"),
            ],
        );
        let (h, problems) = resolve(&rules, Some(&kubelet("app")), Some(&annotated));
        assert!(problems.is_empty());
        assert_eq!(h.parser, Some((ParserChoice::Json, HintSource::Annotation)));
        assert_eq!(h.multiline.unwrap().0.as_ref(), "python");
        // A bad annotation is reported and the rules apply.
        let bad = pod(&[], &[(PARSER_ANNOTATION, "xml")]);
        let (h, problems) = resolve(&rules, Some(&kubelet("x")), Some(&bad));
        assert_eq!(problems.len(), 1);
        assert_eq!(h.parser.unwrap().0, ParserChoice::None);
        // A file that is not a kubelet log: only unscoped rules.
        let (h, _) = resolve(&rules, None, None);
        assert_eq!(h.multiline.unwrap().0.as_ref(), "go");
    }

    #[test]
    fn rule_mistakes() {
        for bad in [
            "namespace=shop",
            "namespace=shop parser=xml",
            "namespace= parser=json",
            "nmespace=shop parser=json",
            "parser=json parser=none",
            "multiline=Bad",
            "shop parser=json",
        ] {
            assert!(Rule::parse(bad, None).is_err(), "{bad:?}");
        }
    }
}
