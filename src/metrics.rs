//! Every metric family, declared once, and the rendering of `/metrics`.
//!
//! Counters live for the life of the process. Per-node and per-image gauges are
//! built afresh from the current report on every scrape, so the series of a node that
//! is gone disappear with it and no stale series can linger.

use crate::analysis::Report;
use crate::analysis::cluster::{CapSource, MissingState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Kinds of source errors, created at zero so `rate()` works from the first scrape.
pub const SOURCE_ERROR_KINDS: &[&str] = &["list", "watch", "file", "decode", "configz"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    node: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeImageLabels {
    node: String,
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The process-lifetime metrics.
pub struct Metrics {
    registry: Registry,
    /// The encoded per-node families of the last report rendered.
    report_text: Mutex<Option<(Arc<Report>, String)>>,
    source_errors: Family<KindLabels, Counter>,
    invalid_node_data: Family<FieldLabels, Counter>,
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        let mut registry = Registry::default();
        let source_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "imagecap_source_errors",
            "Failed lists, watches and reads of node data, by kind",
            source_errors.clone(),
        );
        for kind in SOURCE_ERROR_KINDS {
            source_errors.get_or_create_owned(&KindLabels {
                kind: kind.to_string(),
            });
        }
        let invalid_node_data = Family::<FieldLabels, Counter>::default();
        registry.register(
            "imagecap_invalid_node_data",
            "Malformed node fields seen (bad quantity, bad image name, ...), by field",
            invalid_node_data.clone(),
        );
        for field in crate::analysis::node::PROBLEM_FIELDS {
            invalid_node_data.get_or_create_owned(&FieldLabels {
                field: field.to_string(),
            });
        }
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        registry.register(
            "imagecap_build_info",
            "Build information; the value is always 1",
            build_info,
        );
        Metrics {
            registry,
            report_text: Mutex::new(None),
            source_errors,
            invalid_node_data,
        }
    }

    pub fn source_error(&self, kind: &str) {
        self.source_errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn invalid_field(&self, field: &str) {
        self.invalid_node_data
            .get_or_create(&FieldLabels {
                field: field.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text for the current report.
    ///
    /// The per-node and per-image families depend on the report alone, so their
    /// text is kept for as long as the report is the same (the store hands out
    /// the same `Arc` until a node changes); only the counters and the refresh
    /// time are encoded on every scrape.
    pub fn render(&self, report: &Arc<Report>, last_update: Option<SystemTime>) -> String {
        let mut cache = self.report_text.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match cache.as_ref() {
            Some((cached, _)) => !Arc::ptr_eq(cached, report),
            None => true,
        };
        if fresh {
            let mut text = String::with_capacity(256 + report.nodes.len() * 1024);
            // Writing to a String cannot fail.
            let _ = encode_registry(&mut text, &node_registry(report));
            *cache = Some((report.clone(), text));
        }
        let report_text = cache.as_ref().map(|(_, t)| t.as_str()).unwrap_or_default();
        let mut out = String::with_capacity(4096 + report_text.len());
        let _ = encode_registry(&mut out, &self.registry);
        out.push_str(report_text);
        drop(cache);
        let _ = encode_registry(&mut out, &refresh_registry(last_update));
        let _ = encode_eof(&mut out);
        out
    }
}

/// The refresh time; no series before the first data: 0 would read as "stale
/// since 1970".
fn refresh_registry(last_update: Option<SystemTime>) -> Registry {
    let mut r = Registry::default();
    if let Some(t) = last_update {
        let updated = FloatGauge::default();
        r.register(
            "imagecap_last_update_timestamp_seconds",
            "Unix time at which node data was last refreshed successfully",
            updated.clone(),
        );
        updated.set(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
    }
    r
}

/// The per-scrape families. Each is declared here, once.
fn node_registry(report: &Report) -> Registry {
    let mut r = Registry::default();
    let node_gauge = |r: &mut Registry, name: &str, help: &str| {
        let f = Family::<NodeLabels, Gauge>::default();
        r.register(name, help, f.clone());
        f
    };
    let images = node_gauge(
        &mut r,
        "imagecap_node_images",
        "Entries the node reports in status.images",
    );
    let max_images = node_gauge(
        &mut r,
        "imagecap_node_max_images",
        "The cap in force (nodeStatusMaxImages); -1 is unlimited",
    );
    let known = node_gauge(
        &mut r,
        "imagecap_node_max_images_known",
        "1 when the cap was read from the kubelet's configz, 0 when it is assumed",
    );
    let ratio = Family::<NodeLabels, FloatGauge>::default();
    r.register(
        "imagecap_node_images_cap_ratio",
        "Images reported divided by the cap; 0 when unlimited",
        ratio.clone(),
    );
    let at_cap = node_gauge(
        &mut r,
        "imagecap_node_at_cap",
        "1 when the cap is positive and the node reports that many images or more",
    );
    let size = node_gauge(
        &mut r,
        "imagecap_node_image_size_bytes",
        "Sum of sizeBytes of the images the node reports",
    );
    let capacity = node_gauge(
        &mut r,
        "imagecap_node_ephemeral_storage_capacity_bytes",
        "status.capacity ephemeral-storage of the node",
    );
    let allocatable = node_gauge(
        &mut r,
        "imagecap_node_ephemeral_storage_allocatable_bytes",
        "status.allocatable ephemeral-storage of the node",
    );
    let recommended = node_gauge(
        &mut r,
        "imagecap_node_recommended_max_images",
        "Suggested nodeStatusMaxImages: ephemeral storage capacity in GB divided by 3, rounded up",
    );
    let missing = Family::<NodeStateLabels, Gauge>::default();
    r.register(
        "imagecap_node_prepull_missing_images",
        "Wanted images an eligible node does not report; absent when the node is under its cap, \
         unverifiable when it is at its cap",
        missing.clone(),
    );
    let image_missing = Family::<NodeImageLabels, Gauge>::default();
    r.register(
        "imagecap_node_prepull_image_missing",
        "1 for each wanted image an eligible node does not report",
        image_missing.clone(),
    );
    let image_nodes = Family::<ImageLabels, Gauge>::default();
    r.register(
        "imagecap_prepull_image_nodes",
        "Eligible nodes that report the wanted image",
        image_nodes.clone(),
    );
    let eligible = Gauge::<i64>::default();
    r.register(
        "imagecap_prepull_eligible_nodes",
        "Nodes eligible for prepulling: matching the node selector and not cordoned",
        eligible.clone(),
    );
    let nodes = Gauge::<i64>::default();
    r.register("imagecap_nodes", "Nodes known", nodes.clone());

    for n in &report.nodes {
        let l = NodeLabels {
            node: n.name.clone(),
        };
        images.get_or_create(&l).set(i64::from(n.images));
        max_images.get_or_create(&l).set(n.max_images);
        known
            .get_or_create(&l)
            .set(i64::from(n.max_images_source == CapSource::Kubelet));
        ratio.get_or_create(&l).set(n.cap_ratio);
        at_cap.get_or_create(&l).set(i64::from(n.at_cap));
        size.get_or_create(&l)
            .set(saturating_i64(n.image_size_bytes));
        if let Some(c) = n.ephemeral_storage_capacity_bytes {
            capacity.get_or_create(&l).set(saturating_i64(c));
        }
        if let Some(a) = n.ephemeral_storage_allocatable_bytes {
            allocatable.get_or_create(&l).set(saturating_i64(a));
        }
        if let Some(rec) = n.recommended_max_images {
            recommended.get_or_create(&l).set(saturating_i64(rec));
        }
        if n.eligible {
            for state in [MissingState::Absent, MissingState::Unverifiable] {
                let count = if n.missing_state == Some(state) {
                    n.missing_images.len() as i64
                } else {
                    0
                };
                missing
                    .get_or_create(&NodeStateLabels {
                        node: n.name.clone(),
                        state: state.as_str().to_string(),
                    })
                    .set(count);
            }
            for image in &n.missing_images {
                image_missing
                    .get_or_create(&NodeImageLabels {
                        node: n.name.clone(),
                        image: image.clone(),
                    })
                    .set(1);
            }
        }
    }
    for i in &report.images {
        image_nodes
            .get_or_create(&ImageLabels {
                image: i.image.clone(),
            })
            .set(i64::from(i.nodes));
    }
    eligible.set(i64::from(report.eligible_nodes));
    nodes.set(report.nodes.len() as i64);
    r
}

/// The same exposition in the Prometheus text format 0.0.4, for clients that do not
/// ask for OpenMetrics (curl, promtool). The formats differ, for the families used
/// here, only in that OpenMetrics names a counter family without its `_total`
/// suffix, and in the closing `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::cluster::{ImageReport, NodeReport};
    use std::time::Duration;

    fn node(name: &str, images: u32, missing: &[&str], state: Option<MissingState>) -> NodeReport {
        NodeReport {
            name: name.into(),
            images,
            max_images: 50,
            max_images_source: CapSource::Default,
            cap_ratio: f64::from(images) / 50.0,
            at_cap: images >= 50,
            image_size_bytes: 1 << 40,
            ephemeral_storage_capacity_bytes: Some(1_000_000_000_000),
            ephemeral_storage_allocatable_bytes: None,
            recommended_max_images: Some(334),
            eligible: true,
            missing_images: missing.iter().map(|s| s.to_string()).collect(),
            missing_state: state,
            invalid_fields: 0,
        }
    }

    #[test]
    fn renders_every_family_with_its_labels() {
        let m = Metrics::new("1.2.3");
        m.source_error("watch");
        m.invalid_field("image_name");
        m.invalid_field("image_name");
        let report = Report {
            nodes: vec![
                node("a", 50, &["x:1"], Some(MissingState::Unverifiable)),
                node("b", 10, &[], None),
            ],
            images: vec![ImageReport {
                image: "x:1".into(),
                nodes: 1,
                eligible_nodes: 2,
            }],
            eligible_nodes: 2,
        };
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let text = m.render(&Arc::new(report), Some(t));
        for line in [
            "imagecap_node_images{node=\"a\"} 50",
            "imagecap_node_max_images{node=\"a\"} 50",
            "imagecap_node_max_images_known{node=\"a\"} 0",
            "imagecap_node_images_cap_ratio{node=\"a\"} 1.0",
            "imagecap_node_images_cap_ratio{node=\"b\"} 0.2",
            "imagecap_node_at_cap{node=\"a\"} 1",
            "imagecap_node_at_cap{node=\"b\"} 0",
            "imagecap_node_image_size_bytes{node=\"a\"} 1099511627776",
            "imagecap_node_ephemeral_storage_capacity_bytes{node=\"a\"} 1000000000000",
            "imagecap_node_recommended_max_images{node=\"a\"} 334",
            "imagecap_node_prepull_missing_images{node=\"a\",state=\"unverifiable\"} 1",
            "imagecap_node_prepull_missing_images{node=\"a\",state=\"absent\"} 0",
            "imagecap_node_prepull_missing_images{node=\"b\",state=\"absent\"} 0",
            "imagecap_node_prepull_image_missing{node=\"a\",image=\"x:1\"} 1",
            "imagecap_prepull_image_nodes{image=\"x:1\"} 1",
            "imagecap_prepull_eligible_nodes 2",
            "imagecap_nodes 2",
            "imagecap_last_update_timestamp_seconds 1700000000.5",
            "imagecap_source_errors_total{kind=\"watch\"} 1",
            "imagecap_source_errors_total{kind=\"list\"} 0",
            "imagecap_invalid_node_data_total{field=\"image_name\"} 2",
            "imagecap_build_info{version=\"1.2.3\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("allocatable_bytes{node=\"a\"}"),
            "no series for an unknown value"
        );
        assert!(!text.contains("image_missing{node=\"b\""));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_deleted_node_leaves_no_series() {
        let m = Metrics::new("x");
        let one = Report {
            nodes: vec![node("gone", 50, &["x:1"], Some(MissingState::Unverifiable))],
            images: vec![],
            eligible_nodes: 1,
        };
        assert!(m.render(&Arc::new(one), None).contains("node=\"gone\""));
        let none = Report {
            nodes: vec![],
            images: vec![],
            eligible_nodes: 0,
        };
        let text = m.render(&Arc::new(none), None);
        assert!(!text.contains("gone"), "{text}");
        assert!(text.lines().any(|l| l == "imagecap_nodes 0"));
        assert!(
            !text.contains("imagecap_last_update_timestamp_seconds 0"),
            "no data, no timestamp"
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new("x");
        m.source_error("list");
        let om = m.render(
            &Arc::new(Report {
                nodes: vec![],
                images: vec![],
                eligible_nodes: 0,
            }),
            None,
        );
        assert!(om.contains("# TYPE imagecap_source_errors counter"));
        let text = to_prometheus_text(&om);
        assert!(
            text.contains("# TYPE imagecap_source_errors_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP imagecap_source_errors_total Failed lists"),
            "{text}"
        );
        assert!(text.contains("imagecap_source_errors_total{kind=\"list\"} 1\n"));
        assert!(text.contains("# TYPE imagecap_nodes gauge\n"));
        assert!(!text.contains("# EOF"));
        assert_eq!(
            om.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            "samples are unchanged"
        );
    }

    #[test]
    fn report_text_is_reused_but_counters_and_refresh_time_are_fresh() {
        let m = Metrics::new("x");
        let report = Arc::new(Report {
            nodes: vec![node("a", 50, &[], None)],
            images: vec![],
            eligible_nodes: 1,
        });
        let t1 = UNIX_EPOCH + Duration::from_secs(100);
        let first = m.render(&report, Some(t1));
        m.source_error("watch");
        let second = m.render(&report, Some(t1 + Duration::from_secs(5)));
        assert!(second.contains("imagecap_node_images{node=\"a\"} 50"));
        assert!(second.contains("imagecap_source_errors_total{kind=\"watch\"} 1"));
        assert!(
            second.contains("imagecap_last_update_timestamp_seconds 105.0"),
            "{second}"
        );
        assert!(first.contains("imagecap_last_update_timestamp_seconds 100.0"));
        // A new report (even with equal content) is encoded afresh.
        let changed = Arc::new(Report {
            nodes: vec![node("a", 10, &[], None)],
            images: vec![],
            eligible_nodes: 1,
        });
        assert!(
            m.render(&changed, None)
                .contains("imagecap_node_images{node=\"a\"} 10")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("x");
        let r = Report {
            nodes: vec![node("we\"ird\\node\n", 1, &[], None)],
            images: vec![],
            eligible_nodes: 0,
        };
        let text = m.render(&Arc::new(r), None);
        assert!(text.contains(r#"node="we\"ird\\node\n""#), "{text}");
    }
}
