//! The agent's metric families, rendered from its [`Status`].
//!
//! The image gauges describe the last successful `ListImages` (and the
//! `ImageFsInfo` answer read with it): while the runtime is unreachable they keep
//! that answer, and `imagecap_runtime_up` says 0. They have no series before the
//! first success.

use super::Status;
use crate::analysis::label_values;
use crate::metrics::{Format, to_prometheus_text};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

label_values! {
    /// The CRI call that failed: the `call` label of `imagecap_runtime_errors_total`.
    pub enum Call {
        /// `runtime.v1.ImageService/ListImages`.
        ListImages = "list_images",
        /// `runtime.v1.ImageService/ImageFsInfo`.
        ImageFsInfo = "image_fs_info",
    }
}

label_values! {
    /// Why a pruning run went wrong: the `reason` label of
    /// `imagecap_prune_errors_total`.
    pub enum PruneError {
        /// The images wanted on the node are unknown (the exporter did not answer,
        /// or its answer is incomplete): the run removed nothing.
        Wanted = "wanted",
        /// A CRI call that reads (ListImages, ListContainers, ImageStatus) failed.
        Runtime = "runtime",
        /// CRI RemoveImage failed.
        Remove = "remove",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PruneErrorLabels {
    node: String,
    reason: PruneError,
}

/// The pruning figures kept between runs.
#[derive(Default)]
struct PruneState {
    candidates: AtomicU64,
    /// Unix time of the last run, as f64 bits; 0 before the first.
    last_run: AtomicU64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    node: String,
    call: Call,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The counters, for the life of the process, and the build information.
pub struct AgentMetrics {
    node: String,
    errors: Family<CallLabels, Counter>,
    /// `Some((enabled, dry run))` when the agent has a prune block.
    prune: Option<(bool, bool)>,
    prune_state: PruneState,
    removed_images: Family<NodeLabels, Counter>,
    removed_bytes: Family<NodeLabels, Counter>,
    prune_errors: Family<PruneErrorLabels, Counter>,
    registry: Registry,
}

impl AgentMetrics {
    pub fn new(node: &str, version: &str) -> AgentMetrics {
        let mut registry = Registry::default();
        let errors = Family::<CallLabels, Counter>::default();
        // Both series exist from the start, so rate() sees the first error.
        for &call in Call::ALL {
            let _ = errors.get_or_create(&CallLabels {
                node: node.to_string(),
                call,
            });
        }
        registry.register(
            "imagecap_runtime_errors",
            "CRI calls to the container runtime that failed, by call",
            errors.clone(),
        );
        let build_info = Family::<crate::metrics::VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&crate::metrics::VersionLabels::new(version))
            .set(1);
        registry.register(
            "imagecap_build_info",
            "Build information; the value is always 1",
            build_info,
        );
        AgentMetrics {
            node: node.to_string(),
            errors,
            prune: None,
            prune_state: PruneState::default(),
            removed_images: Family::default(),
            removed_bytes: Family::default(),
            prune_errors: Family::default(),
            registry,
        }
    }

    /// Adds the pruning families (enabled or not, dry run or not); their counters
    /// exist from the start, so rate() sees the first removal.
    pub fn with_prune(mut self, enabled: bool, dry_run: bool) -> AgentMetrics {
        let node = NodeLabels {
            node: self.node.clone(),
        };
        let _ = self.removed_images.get_or_create(&node);
        let _ = self.removed_bytes.get_or_create(&node);
        for &reason in PruneError::ALL {
            let _ = self.prune_errors.get_or_create(&PruneErrorLabels {
                node: self.node.clone(),
                reason,
            });
        }
        self.registry.register(
            "imagecap_prune_removed_images",
            "Images the agent removed to keep the node under its cap",
            self.removed_images.clone(),
        );
        self.registry.register(
            "imagecap_prune_removed_bytes",
            "Bytes of the images the agent removed, as the runtime sized them",
            self.removed_bytes.clone(),
        );
        self.registry.register(
            "imagecap_prune_errors",
            "Pruning runs or removals that went wrong, by reason (wanted: the wanted images were unknown and nothing was removed; runtime: a CRI read failed; remove: CRI RemoveImage failed)",
            self.prune_errors.clone(),
        );
        self.prune = Some((enabled, dry_run));
        self
    }

    pub fn prune_error(&self, reason: PruneError) {
        self.prune_errors
            .get_or_create(&PruneErrorLabels {
                node: self.node.clone(),
                reason,
            })
            .inc();
    }

    pub fn prune_removed(&self, bytes: u64) {
        let node = NodeLabels {
            node: self.node.clone(),
        };
        self.removed_images.get_or_create(&node).inc();
        self.removed_bytes.get_or_create(&node).inc_by(bytes);
    }

    pub fn prune_candidates(&self, n: u32) {
        self.prune_state
            .candidates
            .store(u64::from(n), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn prune_ran(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.prune_state
            .last_run
            .store(secs.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn error(&self, call: Call) {
        self.errors
            .get_or_create(&CallLabels {
                node: self.node.clone(),
                call,
            })
            .inc();
    }

    /// The exposition for `status` in `format`.
    pub fn render(&self, status: &Status, format: Format) -> String {
        let mut out = String::with_capacity(2048);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.status_registry(status));
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_eof(&mut out);
        match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => to_prometheus_text(&out),
        }
    }

    /// The pruning gauges, when the agent has a prune block.
    fn register_prune(&self, r: &mut Registry, node: &NodeLabels) {
        let int = |r: &mut Registry, name: &str, help: &str, value: Option<u64>| {
            int_gauge(r, node, name, help, value)
        };
        let Some((enabled, dry_run)) = self.prune else {
            return;
        };
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        int(
            r,
            "imagecap_prune_enabled",
            "1 when the agent's pruning is enabled (prune.enabled), else 0",
            Some(u64::from(enabled)),
        );
        int(
            r,
            "imagecap_prune_dry_run",
            "1 when pruning only plans and removes nothing (prune.dryRun), else 0",
            Some(u64::from(dry_run)),
        );
        let last_run = f64::from_bits(self.prune_state.last_run.load(relaxed));
        int(
            r,
            "imagecap_prune_candidates",
            "Images the last pruning plan removes (what a run would remove now)",
            (last_run > 0.0).then(|| self.prune_state.candidates.load(relaxed)),
        );
        let family = Family::<NodeLabels, FloatGauge>::default();
        if last_run > 0.0 {
            family.get_or_create(node).set(last_run);
        }
        r.register(
            "imagecap_prune_last_run_timestamp_seconds",
            "Unix time of the last pruning run",
            family,
        );
    }

    fn status_registry(&self, status: &Status) -> Registry {
        let mut r = Registry::default();
        let node = NodeLabels {
            node: self.node.clone(),
        };
        let int = |r: &mut Registry, name: &str, help: &str, value: Option<u64>| {
            int_gauge(r, &node, name, help, value)
        };
        let last = status.last.as_deref();
        int(
            &mut r,
            "imagecap_runtime_up",
            "1 when the container runtime answered the last ListImages, else 0",
            Some(u64::from(status.up)),
        );
        int(
            &mut r,
            "imagecap_runtime_images",
            "Images the container runtime holds (CRI ListImages), as of the last success",
            last.map(|s| s.images as u64),
        );
        int(
            &mut r,
            "imagecap_runtime_image_bytes",
            "Sum of the sizes of the images the container runtime holds, as of the last success",
            last.map(|s| s.image_bytes),
        );
        int(
            &mut r,
            "imagecap_runtime_image_fs_used_bytes",
            "Bytes used on the image filesystems (CRI ImageFsInfo), as of the last success",
            last.and_then(|s| s.image_fs_used_bytes),
        );
        let family = Family::<NodeLabels, FloatGauge>::default();
        if let Some(t) = last.and_then(|s| s.collected_at.duration_since(UNIX_EPOCH).ok()) {
            family.get_or_create(&node).set(t.as_secs_f64());
        }
        r.register(
            "imagecap_runtime_last_success_timestamp_seconds",
            "Unix time of the last successful ListImages",
            family,
        );
        self.register_prune(&mut r, &node);
        r
    }
}

/// Registers a gauge family with one series for `node`, when there is a value.
fn int_gauge(r: &mut Registry, node: &NodeLabels, name: &str, help: &str, value: Option<u64>) {
    let family = Family::<NodeLabels, Gauge>::default();
    if let Some(v) = value {
        family
            .get_or_create(node)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    r.register(name, help, family);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::report::Snapshot;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn before_the_first_answer_only_up_and_the_counters() {
        let m = AgentMetrics::new("worker-1", "1.2.3");
        m.error(Call::ListImages);
        m.error(Call::ListImages);
        let text = m.render(&Status::default(), Format::OpenMetrics);
        assert_eq!(
            sample(&text, r#"imagecap_runtime_up{node="worker-1"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"imagecap_runtime_errors_total{node="worker-1",call="list_images"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"imagecap_runtime_errors_total{node="worker-1",call="image_fs_info"}"#
            )
            .as_deref(),
            Some("0")
        );
        assert!(text.contains(&format!(
            "imagecap_build_info{{version=\"1.2.3\",revision=\"{}\",rustversion=\"{}\"}} 1",
            crate::version::REVISION,
            crate::version::rust_version(crate::version::RUSTC_VERSION)
        )));
        assert!(!text.contains("imagecap_runtime_images{"), "{text}");
        assert!(!text.contains("imagecap_runtime_last_success_timestamp_seconds{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_last_answer_stays_while_the_runtime_is_down() {
        let m = AgentMetrics::new("n1", "v");
        let snapshot = Snapshot {
            json: Bytes::new(),
            images: 60,
            image_bytes: 123_456,
            image_fs_used_bytes: Some(99),
            collected_at: UNIX_EPOCH + Duration::from_millis(1_764_064_800_500),
        };
        let mut status = Status {
            last: Some(Arc::new(snapshot)),
            up: true,
            last_error: None,
            plan: None,
        };
        let text = m.render(&status, Format::OpenMetrics);
        for (series, value) in [
            (r#"imagecap_runtime_up{node="n1"}"#, "1"),
            (r#"imagecap_runtime_images{node="n1"}"#, "60"),
            (r#"imagecap_runtime_image_bytes{node="n1"}"#, "123456"),
            (r#"imagecap_runtime_image_fs_used_bytes{node="n1"}"#, "99"),
            (
                r#"imagecap_runtime_last_success_timestamp_seconds{node="n1"}"#,
                "1764064800.5",
            ),
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series}");
        }
        status.up = false;
        status.last_error = Some("Unavailable".into());
        let text = m.render(&status, Format::PrometheusText);
        assert_eq!(
            sample(&text, r#"imagecap_runtime_up{node="n1"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            sample(&text, r#"imagecap_runtime_images{node="n1"}"#).as_deref(),
            Some("60")
        );
        assert!(text.contains("# TYPE imagecap_runtime_errors_total counter"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn prune_families_follow_the_runs() {
        let m = AgentMetrics::new("n1", "v").with_prune(true, false);
        let text = m.render(&Status::default(), Format::OpenMetrics);
        for (series, value) in [
            (r#"imagecap_prune_enabled{node="n1"}"#, "1"),
            (r#"imagecap_prune_dry_run{node="n1"}"#, "0"),
            (r#"imagecap_prune_removed_images_total{node="n1"}"#, "0"),
            (
                r#"imagecap_prune_errors_total{node="n1",reason="wanted"}"#,
                "0",
            ),
            (
                r#"imagecap_prune_errors_total{node="n1",reason="remove"}"#,
                "0",
            ),
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series}");
        }
        assert!(
            !text.contains("imagecap_prune_candidates{"),
            "no run yet: {text}"
        );
        assert!(!text.contains("imagecap_prune_last_run_timestamp_seconds{"));
        m.prune_candidates(3);
        m.prune_ran(UNIX_EPOCH + Duration::from_secs(100));
        m.prune_removed(1000);
        m.prune_removed(24);
        m.prune_error(PruneError::Wanted);
        let text = m.render(&Status::default(), Format::OpenMetrics);
        for (series, value) in [
            (r#"imagecap_prune_candidates{node="n1"}"#, "3"),
            (
                r#"imagecap_prune_last_run_timestamp_seconds{node="n1"}"#,
                "100.0",
            ),
            (r#"imagecap_prune_removed_images_total{node="n1"}"#, "2"),
            (r#"imagecap_prune_removed_bytes_total{node="n1"}"#, "1024"),
            (
                r#"imagecap_prune_errors_total{node="n1",reason="wanted"}"#,
                "1",
            ),
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series}");
        }
        let off = AgentMetrics::new("n1", "v").with_prune(false, true);
        let text = off.render(&Status::default(), Format::PrometheusText);
        assert_eq!(
            sample(&text, r#"imagecap_prune_enabled{node="n1"}"#).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn a_reading_without_fs_use_has_no_fs_series() {
        let m = AgentMetrics::new("n1", "v");
        let status = Status {
            last: Some(Arc::new(Snapshot {
                json: Bytes::new(),
                images: 0,
                image_bytes: u64::MAX,
                image_fs_used_bytes: None,
                collected_at: UNIX_EPOCH,
            })),
            up: true,
            last_error: None,
            plan: None,
        };
        let text = m.render(&status, Format::OpenMetrics);
        assert!(!text.contains("imagecap_runtime_image_fs_used_bytes{"));
        assert_eq!(
            sample(&text, r#"imagecap_runtime_image_bytes{node="n1"}"#).as_deref(),
            Some(i64::MAX.to_string().as_str()),
            "saturates rather than wrapping"
        );
    }
}
