//! `/metrics`: the agent's telemetry in the Prometheus text format (0.0.4), written with
//! prometheus-client.
//!
//! What is exposed comes from three places, read at scrape time (nothing here keeps state of its
//! own or runs between scrapes):
//!
//! - every field of [`telemetry::Metrics`], as its declaration names it (a field added there is
//!   exposed with nothing to change here);
//! - the bulk latency histogram ([`telemetry::bulk_latency`]) and the build information;
//! - what belongs to the running agent rather than the process: the buffer's use and capacity,
//!   and how long ago each loop turned.
//!
//! Labels are only the fixed ones of the declarations and the loop names: nothing grows with
//! files or pods.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::telemetry::{self, Kind, Loop, Metrics, Series};

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry one endpoint serves: the process-wide metrics and the running pipeline's buffer.
pub fn registry(current: super::Current) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "logship_build",
        // `register` ends a help text with a period itself.
        "The running logship: its version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(Telemetry));
    registry.register_collector(Box::new(BulkLatency));
    registry.register_collector(Box::new(AgentState { current }));
    registry
}

/// The registry as Prometheus text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// Every field of [`Metrics`].
#[derive(Debug)]
struct Telemetry;

impl Collector for Telemetry {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_series(telemetry::metrics(), Metrics::SERIES, encoder)
    }
}

/// `series` in order; consecutive series of one name are one family under one HELP and TYPE
/// (telemetry's tests check that the declarations keep families together).
fn encode_series(
    metrics: &Metrics,
    series: &[Series],
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    for family in series.chunk_by(|a, b| a.name == b.name) {
        let first = &family[0];
        let help = first.help.split_whitespace().collect::<Vec<_>>().join(" ");
        let kind = match first.kind {
            Kind::Counter | Kind::Seconds => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        let mut metric = encoder.encode_descriptor(first.name, &help, None, kind)?;
        for s in family {
            let value = (s.value)(metrics);
            match s.label {
                Some(label) => {
                    let labels = [label];
                    let member = metric.encode_family(&labels)?;
                    encode_value(s.kind, value, member)?;
                }
                None => encode_value(s.kind, value, metric.encode_family(&NO_LABELS)?)?,
            }
        }
    }
    Ok(())
}

const NO_LABELS: [(&str, &str); 0] = [];

fn encode_value(
    kind: Kind,
    value: u64,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(value).encode(encoder),
        Kind::Seconds => ConstCounter::new(value as f64 / 1e6).encode(encoder),
        // Gauges here are counts (files, a 0/1 flag): far below i64::MAX.
        Kind::Gauge => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder),
    }
}

/// The bulk latency histogram ([`telemetry::bulk_latency`]).
#[derive(Debug)]
struct BulkLatency;

impl Collector for BulkLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = telemetry::bulk_latency().snapshot();
        encoder
            .encode_descriptor(
                "logship_elasticsearch_request_duration_seconds",
                "How long bulk request attempts took until an answer, an error or the timeout.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(snap.sum, snap.count, &snap.buckets, None)
    }
}

/// What belongs to the running agent: its buffer and its loops.
#[derive(Debug)]
struct AgentState {
    /// The pipeline running now (a reload replaces it).
    current: super::Current,
}

impl Collector for AgentState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let budget = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .budget
            .clone();
        let gauges = [
            (
                "logship_buffer_used_bytes",
                "Bytes of records read and not acknowledged yet; reading waits when it nears the capacity.",
                budget.used(),
            ),
            (
                "logship_buffer_capacity_bytes",
                "The buffer's capacity, buffer.max_bytes.",
                budget.capacity(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let mut ages = encoder.encode_descriptor(
            "logship_heartbeat_age_seconds",
            "Seconds since each loop of the pipeline last turned; /healthz fails past 60.",
            None,
            MetricType::Gauge,
        )?;
        for which in Loop::ALL {
            if let Some(age) = telemetry::since_beat(which) {
                let labels = [("loop", which.name())];
                ConstGauge::new(age.as_secs_f64()).encode(ages.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint's view of a running pipeline with a local output and `budget`.
    fn current(budget: Budget) -> super::super::Current {
        std::sync::Arc::new(std::sync::RwLock::new(super::super::Pipeline {
            budget,
            headroom: 100,
            local_output: true,
            enrichment: false,
        }))
    }
    use crate::buffer::Budget;

    #[test]
    fn families_are_written_once_with_their_members() {
        let m = Metrics::default();
        telemetry::add(&m.es_responses_2xx, 3);
        telemetry::add(&m.es_transport_errors, 1);
        telemetry::add(&m.records_read, 42);
        m.files_current
            .store(2, std::sync::atomic::Ordering::Relaxed);
        #[derive(Debug)]
        struct Fixed(Metrics);
        impl Collector for Fixed {
            fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_series(&self.0, Metrics::SERIES, encoder)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(m)));
        let text = encode(&registry).unwrap();
        let expect = [
            "# HELP logship_read_records_total Records produced by the parsers.\n# TYPE logship_read_records_total counter\nlogship_read_records_total 42\n",
            "# TYPE logship_elasticsearch_responses_total counter\nlogship_elasticsearch_responses_total{class=\"2xx\"} 3\nlogship_elasticsearch_responses_total{class=\"4xx\"} 0\nlogship_elasticsearch_responses_total{class=\"5xx\"} 0\nlogship_elasticsearch_responses_total{class=\"none\"} 1\n",
            "# HELP logship_elasticsearch_responses_total Bulk request attempts by answer class: 2xx, 4xx, 5xx, and none (connection error or timeout).\n",
            "# TYPE logship_files_watched gauge\nlogship_files_watched 2\n",
            "logship_irregular_lines_total{reason=\"oversize_truncated\"} 0\n",
        ];
        for e in expect {
            assert!(text.contains(e), "{e:?} not in:\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE logship_irregular_lines_total ")
                .count(),
            1
        );
    }

    /// The README's metrics table has a row for every family the endpoint serves, and the row
    /// names each of the family's label values, so that an operator can look any series up.
    #[test]
    fn the_readme_explains_every_metric_and_label_value() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap();
        let rows: Vec<&str> = readme
            .split("\n## Metrics and probes\n")
            .nth(1)
            .expect("a section Metrics and probes")
            .lines()
            .filter(|l| l.starts_with("| `logship_"))
            .collect();
        let row = |name: &str| {
            rows.iter()
                .find(|r| r.contains(&format!("`{name}`")) || r.contains(&format!("`{name}{{")))
                .unwrap_or_else(|| panic!("no row for {name} in the README's metrics table"))
        };
        let text = encode(&registry(current(Budget::new(1000)))).unwrap();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(families.len() > 20, "{families:?}");
        for name in &families {
            row(name);
        }
        let mut labelled: Vec<(String, &str)> = Metrics::SERIES
            .iter()
            .filter_map(|s| {
                let (_, value) = s.label?;
                let name = match s.kind {
                    Kind::Counter | Kind::Seconds => format!("{}_total", s.name),
                    Kind::Gauge => s.name.to_string(),
                };
                Some((name, value))
            })
            .collect();
        labelled.extend(Loop::ALL.map(|l| ("logship_heartbeat_age_seconds".to_string(), l.name())));
        for (name, value) in labelled {
            assert!(
                row(&name).contains(&format!("`{value}`")),
                "the README's row for {name} does not name `{value}`"
            );
        }
    }

    #[test]
    fn the_endpoint_registry_has_build_info_buffer_and_latency() {
        let budget = Budget::new(1000);
        let _permit = budget.acquire(300, std::time::Duration::ZERO).unwrap();
        let text = encode(&registry(current(budget))).unwrap();
        let version = format!(
            "logship_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        for e in [
            version.as_str(),
            "logship_buffer_used_bytes 300\n",
            "logship_buffer_capacity_bytes 1000\n",
            "# TYPE logship_elasticsearch_request_duration_seconds histogram\n",
            "logship_elasticsearch_request_duration_seconds_bucket{le=\"0.005\"} ",
            "logship_elasticsearch_request_duration_seconds_bucket{le=\"+Inf\"} ",
            "# TYPE logship_sent_records_total counter\n",
        ] {
            assert!(text.contains(e), "{e:?} not in:\n{text}");
        }
    }
}
