//! `[kubernetes]` -> [`KubernetesSettings`] or off: whether enrichment runs (`auto` decides from
//! the environment it is given, never from the disk), where the API server is, what to keep.

use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSetBuilder};

use super::error::ConfigError;
use super::raw::RawKubernetes;
use super::units::HumanDuration;
use super::validate::duration_in;
use crate::enrich::metadata::{KeepOptions, Schema};
use crate::enrich::{ApiAccess, KubernetesSettings};

fn key(name: &str) -> String {
    format!("kubernetes.{name}")
}

/// Checks the section. `in_cluster`: `KUBERNETES_SERVICE_HOST` is set (the agent runs in a pod).
/// `Ok(None)` is enrichment off.
pub fn validate(
    errors: &mut Vec<ConfigError>,
    raw: &RawKubernetes,
    node_name: &str,
    in_cluster: bool,
) -> Option<KubernetesSettings> {
    let e = errors;
    let before = e.len();
    let path = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(PathBuf::from);
    let explicit = !raw.api_url.trim().is_empty() || !raw.kubeconfig.trim().is_empty();
    let enabled = match raw.enabled.as_str() {
        "auto" => in_cluster || explicit,
        "true" => true,
        "false" => false,
        other => {
            e.push(ConfigError::invalid(
                key("enabled"),
                format!("must be \"auto\", \"true\" or \"false\", is {other:?}"),
            ));
            false
        }
    };
    let access = match (path(&raw.api_url), path(&raw.kubeconfig)) {
        (Some(_), Some(_)) => {
            e.push(ConfigError::invalid(
                key("kubeconfig"),
                "set either kubernetes.api_url or kubernetes.kubeconfig, not both",
            ));
            None
        }
        (Some(url), None) => {
            let url = url.display().to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                e.push(ConfigError::invalid(
                    key("api_url"),
                    format!("{url:?} must start with http:// or https://"),
                ));
            }
            Some(ApiAccess::Explicit {
                url,
                token_file: path(&raw.token_file),
                ca_file: path(&raw.ca_file),
            })
        }
        (None, Some(file)) => Some(ApiAccess::Kubeconfig(file)),
        (None, None) => {
            if enabled && !in_cluster {
                e.push(ConfigError::invalid(
                    key("enabled"),
                    "is true, but this is not a pod (KUBERNETES_SERVICE_HOST is unset): set kubernetes.api_url or kubernetes.kubeconfig",
                ));
            }
            Some(ApiAccess::InCluster)
        }
    };
    let schema = match raw.schema.as_str() {
        "ecs" => Some(Schema::Ecs),
        "fluentd" => Some(Schema::Fluentd),
        other => {
            e.push(ConfigError::invalid(
                key("schema"),
                format!("must be \"ecs\" or \"fluentd\", is {other:?}"),
            ));
            None
        }
    };
    let mut annotations = GlobSetBuilder::new();
    for pattern in &raw.annotations {
        match Glob::new(pattern) {
            Ok(g) => {
                annotations.add(g);
            }
            Err(err) => e.push(ConfigError::invalid(
                key("annotations"),
                format!("{pattern:?} is not a glob pattern: {}", err.kind()),
            )),
        }
    }
    let annotations = annotations.build().unwrap_or_else(|err| {
        e.push(ConfigError::invalid(key("annotations"), err.to_string()));
        globset::GlobSet::empty()
    });
    if raw.dedot_separator.contains('.') {
        e.push(ConfigError::invalid(
            key("dedot_separator"),
            "must not contain a dot",
        ));
    }
    let wait = duration_in(
        e,
        &key("wait_for_metadata"),
        raw.wait_for_metadata,
        (HumanDuration(Duration::ZERO), HumanDuration::secs(60)),
    );
    if e.len() > before || !enabled {
        return None;
    }
    Some(KubernetesSettings {
        access: access?,
        node_name: node_name.to_owned(),
        schema: schema?,
        keep: KeepOptions {
            labels: raw.labels,
            namespace_labels: raw.namespace_labels,
            annotations,
            dedot: Some(raw.dedot_separator.clone()).filter(|s| !s.is_empty()),
        },
        wait_for_metadata: wait?,
        delete_grace: raw.delete_grace.0,
    })
}
