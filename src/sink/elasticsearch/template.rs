//! Start-up: learn what the cluster is (`GET /`), and optionally install an index template.
//!
//! Runs beside the sink, never in its way: a wrong URL or rejected credentials are logged as a
//! clear error and retried with backoff, while bulk requests wait on their own; the agent does not
//! crash-loop because the cluster is not there yet.
//!
//! The template (`install_template = true`) maps logship's documents the way they are meant to be
//! searched: `@timestamp` as `date_nanos` (records keep nanoseconds), names and ids as `keyword`,
//! the message as text, and every label and annotation value as `keyword` whatever its key, so
//! dotted label keys never create conflicting objects. It applies to the indices the `index`
//! template can produce (its literal prefix followed by `*`), with a priority above the built-in
//! `logs-*-*` template, and keeps those indices data streams on Elasticsearch 7.9 and later when
//! their names match `logs-*-*`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{Client, ClusterInfo};
use super::ElasticsearchSettings;

/// The name the template is installed under.
pub const TEMPLATE_NAME: &str = "logship";

/// Learns the cluster's version (retrying until one host answers), then installs the template if
/// asked to.
pub async fn start_up(client: Arc<Client>, settings: Arc<ElasticsearchSettings>) {
    let mut attempt = 0u32;
    let info = loop {
        let index = attempt as usize % client.hosts.len();
        match client.info(index).await {
            Ok(info) => break info,
            Err(e) => {
                let wait = settings
                    .retry
                    .delay(attempt)
                    .max(Duration::from_millis(500));
                tracing::error!(error = %e, retry_in = ?wait, "Cannot reach Elasticsearch; records wait and are sent once it answers. Check elasticsearch.hosts and the credentials.");
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    };
    crate::telemetry::set_cluster_reachable(true);
    tracing::info!(distribution = %info.distribution, version = %info.version, cluster = %info.cluster_name, "Connected to the cluster.");
    if !settings.install_template {
        return;
    }
    let (path, body) = template_request(&info, &settings.index.pattern());
    let mut attempt = 0u32;
    loop {
        let index = attempt as usize % client.hosts.len();
        match client.put_json(index, &path, &body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                tracing::info!(template = TEMPLATE_NAME, path = %path, "Installed the index template.");
                return;
            }
            Ok(answer) if (400..500).contains(&answer.status) && answer.status != 429 => {
                tracing::error!(status = answer.status, reason = %super::retry::error_summary(&answer.body), "Elasticsearch refused the index template; documents are shipped with the cluster's mappings.");
                return;
            }
            Ok(answer) => {
                tracing::warn!(
                    status = answer.status,
                    "Installing the index template failed; retrying."
                );
            }
            Err(e) => tracing::warn!(error = %e, "Installing the index template failed; retrying."),
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(
            settings
                .retry
                .delay(attempt)
                .max(Duration::from_millis(500)),
        )
        .await;
    }
}

/// The request that installs the template on this cluster: a composable template where the
/// cluster has them (Elasticsearch 7.8+, OpenSearch), a legacy one otherwise.
pub fn template_request(info: &ClusterInfo, pattern: &str) -> (String, Value) {
    let major = info.major().unwrap_or(0);
    let minor: u32 = info
        .version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let opensearch = info.distribution == "opensearch";
    let composable = opensearch || major > 7 || (major == 7 && minor >= 8);
    // Elasticsearch's built-in `logs-*-*` template makes such names data streams (7.9+); an index
    // template of higher priority must say so too, or it would turn them into plain indices.
    let data_stream = !opensearch
        && (major > 7 || (major == 7 && minor >= 9))
        && glob_may_match_logs_data_stream(pattern);
    let message = if !opensearch && major >= 8 {
        json!({ "type": "match_only_text" })
    } else {
        json!({ "type": "text" })
    };
    let mappings = json!({
        "dynamic_templates": [
            { "labels": { "path_match": "kubernetes.labels.*", "mapping": { "type": "keyword", "ignore_above": 1024 } } },
            { "namespace_labels": { "path_match": "kubernetes.namespace_labels.*", "mapping": { "type": "keyword", "ignore_above": 1024 } } },
            { "annotations": { "path_match": "kubernetes.annotations.*", "mapping": { "type": "keyword", "ignore_above": 4096 } } },
            { "strings_as_keyword": { "match_mapping_type": "string", "mapping": { "type": "keyword", "ignore_above": 1024 } } }
        ],
        "properties": {
            "@timestamp": { "type": "date_nanos" },
            "message": message,
            "stream": { "type": "keyword" },
            "log": { "properties": {
                "offset": { "type": "long" },
                "file": { "properties": { "path": { "type": "keyword" } } }
            } },
            "host": { "properties": { "name": { "type": "keyword" } } },
            "container": { "properties": { "id": { "type": "keyword" } } },
            "kubernetes": { "properties": {
                "namespace": { "type": "keyword" },
                "pod": { "properties": { "name": { "type": "keyword" }, "uid": { "type": "keyword" } } },
                "container": { "properties": { "name": { "type": "keyword" } } }
            } },
            // Why a document was sent without its parsed fields (see `fallback`): a document
            // the mapping refused may add no field, so this one must be mapped beforehand.
            "logship": { "properties": { "mapping_fallback": { "type": "keyword" } } }
        }
    });
    if composable {
        let mut body = json!({
            "index_patterns": [pattern],
            "priority": 200,
            "template": { "mappings": mappings },
            "_meta": { "managed_by": "logship" }
        });
        if data_stream {
            body["data_stream"] = json!({});
        }
        (format!("_index_template/{TEMPLATE_NAME}"), body)
    } else {
        let body = json!({
            "index_patterns": [pattern],
            "order": 200,
            "mappings": mappings
        });
        (format!("_template/{TEMPLATE_NAME}"), body)
    }
}

/// Whether indices matching `pattern` can be named `logs-<x>-<y>`.
fn glob_may_match_logs_data_stream(pattern: &str) -> bool {
    let Some(rest) = pattern.strip_prefix("logs-") else {
        return pattern == "*" || pattern.starts_with("logs*");
    };
    rest.contains('-') || rest.contains('*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(distribution: &str, version: &str) -> ClusterInfo {
        ClusterInfo {
            distribution: distribution.into(),
            version: version.into(),
            cluster_name: "c".into(),
        }
    }

    #[test]
    fn template_per_cluster() {
        let (path, body) = template_request(&info("elasticsearch", "8.15.0"), "logs-logship-*");
        assert_eq!(path, "_index_template/logship");
        assert_eq!(body["data_stream"], json!({}));
        assert_eq!(body["priority"], 200);
        assert_eq!(
            body["template"]["mappings"]["properties"]["message"]["type"],
            "match_only_text"
        );
        assert_eq!(
            body["template"]["mappings"]["properties"]["logship"]["properties"]["mapping_fallback"]
                ["type"],
            "keyword"
        );
        let (_, body) = template_request(&info("elasticsearch", "7.17.3"), "logs-logship-*");
        assert_eq!(body["data_stream"], json!({}));
        assert_eq!(
            body["template"]["mappings"]["properties"]["message"]["type"],
            "text"
        );
        let (_, body) = template_request(&info("elasticsearch", "8.15.0"), "app-*");
        assert!(body.get("data_stream").is_none());
        let (path, body) = template_request(&info("opensearch", "2.11.0"), "logs-logship-*");
        assert_eq!(path, "_index_template/logship");
        assert!(body.get("data_stream").is_none());
        let (path, body) = template_request(&info("elasticsearch", "7.4.0"), "logs-*");
        assert_eq!(path, "_template/logship");
        assert_eq!(body["order"], 200);
    }
}
