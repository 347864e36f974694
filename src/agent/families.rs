//! The agent's metric families, each declared once, and the rendering of its
//! `/metrics`: the counters kept for the life of the process, and the gauges read
//! from its [`Status`] and pruning runs at each scrape (a collector).
//!
//! The image gauges describe the last successful `ListImages` (and the
//! `ImageFsInfo` answer read with it): while the runtime is unreachable they keep
//! that answer, and `imagecap_runtime_up` says 0. They have no series before the
//! first success.

use super::Status;
use crate::analysis::label_values;
use crate::metrics::counters::BUILD_INFO;
use crate::metrics::exposition::encode_part;
use crate::metrics::{Declared, TextFormat, register_build_info};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::UNIX_EPOCH;

pub const RUNTIME_UP: Declared = Declared::gauge(
    "imagecap_runtime_up",
    "1 when the container runtime answered the last ListImages, else 0",
);
pub const RUNTIME_IMAGES: Declared = Declared::gauge(
    "imagecap_runtime_images",
    "Images the container runtime holds (CRI ListImages), as of the last success",
);
pub const RUNTIME_IMAGE_BYTES: Declared = Declared::gauge(
    "imagecap_runtime_image_bytes",
    "Sum of the sizes of the images the container runtime holds, as of the last success",
);
pub const RUNTIME_IMAGE_FS_USED_BYTES: Declared = Declared::gauge(
    "imagecap_runtime_image_fs_used_bytes",
    "Bytes used on the image filesystems (CRI ImageFsInfo), as of the last success",
);
pub const RUNTIME_LAST_SUCCESS: Declared = Declared::gauge(
    "imagecap_runtime_last_success_timestamp_seconds",
    "Unix time of the last successful ListImages",
);
pub const RUNTIME_ERRORS: Declared = Declared::counter(
    "imagecap_runtime_errors",
    "CRI calls to the container runtime that failed, by call",
);
pub const PRUNE_ENABLED: Declared = Declared::gauge(
    "imagecap_prune_enabled",
    "1 when the agent's pruning is enabled (prune.enabled), else 0",
);
pub const PRUNE_DRY_RUN: Declared = Declared::gauge(
    "imagecap_prune_dry_run",
    "1 when pruning only plans and removes nothing (prune.dryRun), else 0",
);
pub const PRUNE_CANDIDATES: Declared = Declared::gauge(
    "imagecap_prune_candidates",
    "Images the last pruning plan removes (what a run would remove now)",
);
pub const PRUNE_REMOVED_IMAGES: Declared = Declared::counter(
    "imagecap_prune_removed_images",
    "Images the agent removed to keep the node under its cap",
);
pub const PRUNE_REMOVED_BYTES: Declared = Declared::counter(
    "imagecap_prune_removed_bytes",
    "Bytes of the images the agent removed, as the runtime sized them",
);
pub const PRUNE_ERRORS: Declared = Declared::counter(
    "imagecap_prune_errors",
    "Pruning runs or removals that went wrong, by reason (wanted: the wanted images were unknown and nothing was removed; runtime: a CRI read failed; remove: CRI RemoveImage failed)",
);
pub const PRUNE_LAST_RUN: Declared = Declared::gauge(
    "imagecap_prune_last_run_timestamp_seconds",
    "Unix time of the last pruning run",
);

/// Every family the agent serves, as the README lists them.
pub const AGENT_FAMILIES: &[&Declared] = &[
    &RUNTIME_UP,
    &RUNTIME_IMAGES,
    &RUNTIME_IMAGE_BYTES,
    &RUNTIME_IMAGE_FS_USED_BYTES,
    &RUNTIME_LAST_SUCCESS,
    &RUNTIME_ERRORS,
    &BUILD_INFO,
    &PRUNE_ENABLED,
    &PRUNE_DRY_RUN,
    &PRUNE_CANDIDATES,
    &PRUNE_REMOVED_IMAGES,
    &PRUNE_REMOVED_BYTES,
    &PRUNE_ERRORS,
    &PRUNE_LAST_RUN,
];

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
    pub enum PruneReason {
        /// The images wanted on the node are unknown (the exporter did not answer,
        /// or its answer is incomplete): the run removed nothing.
        Wanted = "wanted",
        /// A CRI call that reads (ListImages, ListContainers, ImageStatus) failed.
        Runtime = "runtime",
        /// CRI RemoveImage failed.
        Remove = "remove",
    }
}

/// `imagecap_prune_errors_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PruneErrorLabels {
    node: String,
    reason: PruneReason,
}

/// `imagecap_runtime_errors_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    node: String,
    call: Call,
}

/// The labels of the families with one series per node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// How the agent prunes: the values of `imagecap_prune_enabled` and
/// `imagecap_prune_dry_run`.
#[derive(Clone, Copy, Debug)]
pub struct Pruning {
    pub enabled: bool,
    pub dry_run: bool,
}

/// The pruning figures kept between runs.
#[derive(Debug, Default)]
struct PruneState {
    candidates: AtomicU64,
    /// Unix time of the last run, as f64 bits; 0 before the first.
    last_run: AtomicU64,
}

/// The gauges read at each scrape: from the agent's [`Status`], and, when the
/// agent has a prune block, from its pruning runs.
#[derive(Debug)]
struct Gauges {
    node: NodeLabels,
    status: Arc<RwLock<Status>>,
    /// `Some` when the agent has a prune block.
    prune: Option<Pruning>,
    prune_state: Arc<PruneState>,
}

/// A series for `node` when there is a value; none otherwise.
fn one<V>(node: &NodeLabels, value: Option<V>) -> Option<(NodeLabels, V)> {
    value.map(|v| (node.clone(), v))
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Gauges {
    fn encode_status(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        let node = &self.node;
        let last = status.last.as_deref();
        let int = |v: Option<u64>| one(node, v.map(saturating_i64));
        RUNTIME_UP.encode_gauges(encoder, int(Some(u64::from(status.up))))?;
        RUNTIME_IMAGES.encode_gauges(encoder, int(last.map(|s| s.images as u64)))?;
        RUNTIME_IMAGE_BYTES.encode_gauges(encoder, int(last.map(|s| s.image_bytes)))?;
        RUNTIME_IMAGE_FS_USED_BYTES
            .encode_gauges(encoder, int(last.and_then(|s| s.image_fs_used_bytes)))?;
        let success = last.and_then(|s| s.collected_at.duration_since(UNIX_EPOCH).ok());
        RUNTIME_LAST_SUCCESS.encode_gauges(encoder, one(node, success.map(|t| t.as_secs_f64())))
    }

    fn encode_prune(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(prune) = self.prune else {
            return Ok(());
        };
        let node = &self.node;
        let int = |v: Option<u64>| one(node, v.map(saturating_i64));
        PRUNE_ENABLED.encode_gauges(encoder, int(Some(u64::from(prune.enabled))))?;
        PRUNE_DRY_RUN.encode_gauges(encoder, int(Some(u64::from(prune.dry_run))))?;
        let last_run = f64::from_bits(self.prune_state.last_run.load(Ordering::Relaxed));
        let ran = last_run > 0.0;
        let candidates = ran.then(|| self.prune_state.candidates.load(Ordering::Relaxed));
        PRUNE_CANDIDATES.encode_gauges(encoder, int(candidates))?;
        PRUNE_LAST_RUN.encode_gauges(encoder, one(node, ran.then_some(last_run)))
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_status(&mut encoder)?;
        self.encode_prune(&mut encoder)
    }
}

/// The counters, for the life of the process, the build information, and the
/// gauges read at each scrape.
pub struct AgentMetrics {
    node: String,
    errors: Family<CallLabels, Counter>,
    prune_state: Arc<PruneState>,
    removed_images: Family<NodeLabels, Counter>,
    removed_bytes: Family<NodeLabels, Counter>,
    prune_errors: Family<PruneErrorLabels, Counter>,
    /// The gauges read at each scrape, sent first.
    gauges: Registry,
    /// The counters and the build information, sent after the gauges.
    registry: Registry,
}

impl AgentMetrics {
    /// The families of the agent on `node`, its gauges read from `status`; with
    /// the pruning families when it has a prune block (`prune`).
    pub fn new(
        node: &str,
        version: &str,
        status: Arc<RwLock<Status>>,
        prune: Option<Pruning>,
    ) -> AgentMetrics {
        let mut registry = Registry::default();
        let errors = Family::<CallLabels, Counter>::default();
        // Both series exist from the start, so rate() sees the first error.
        for &call in Call::ALL {
            let _ = errors.get_or_create(&CallLabels {
                node: node.to_string(),
                call,
            });
        }
        RUNTIME_ERRORS.register(&mut registry, errors.clone());
        register_build_info(&mut registry, version);
        let prune_state = Arc::new(PruneState::default());
        let mut gauges = Registry::default();
        gauges.register_collector(Box::new(Gauges {
            node: NodeLabels {
                node: node.to_string(),
            },
            status,
            prune,
            prune_state: prune_state.clone(),
        }));
        let mut metrics = AgentMetrics {
            node: node.to_string(),
            errors,
            prune_state,
            removed_images: Family::default(),
            removed_bytes: Family::default(),
            prune_errors: Family::default(),
            gauges,
            registry,
        };
        if prune.is_some() {
            metrics.register_prune_counters();
        }
        metrics
    }

    /// Adds the pruning counters; they exist from the start, so rate() sees the
    /// first removal.
    fn register_prune_counters(&mut self) {
        let node = NodeLabels {
            node: self.node.clone(),
        };
        let _ = self.removed_images.get_or_create(&node);
        let _ = self.removed_bytes.get_or_create(&node);
        for &reason in PruneReason::ALL {
            let _ = self.prune_errors.get_or_create(&PruneErrorLabels {
                node: self.node.clone(),
                reason,
            });
        }
        PRUNE_REMOVED_IMAGES.register(&mut self.registry, self.removed_images.clone());
        PRUNE_REMOVED_BYTES.register(&mut self.registry, self.removed_bytes.clone());
        PRUNE_ERRORS.register(&mut self.registry, self.prune_errors.clone());
    }

    pub fn prune_error(&self, reason: PruneReason) {
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
            .store(u64::from(n), Ordering::Relaxed);
    }

    pub fn prune_ran(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.prune_state
            .last_run
            .store(secs.to_bits(), Ordering::Relaxed);
    }

    pub fn error(&self, call: Call) {
        self.errors
            .get_or_create(&CallLabels {
                node: self.node.clone(),
                call,
            })
            .inc();
    }

    /// The exposition in `format`.
    pub fn render(&self, format: TextFormat) -> String {
        let mut text = encode_part(&self.gauges, format, false);
        text.push_str(&encode_part(&self.registry, format, true));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::report::Snapshot;
    use bytes::Bytes;
    use std::time::Duration;

    /// An agent's metrics, and the status they read.
    type Agent = (AgentMetrics, Arc<RwLock<Status>>);

    fn agent(node: &str, version: &str, prune: Option<Pruning>) -> Agent {
        let status = Arc::new(RwLock::new(Status::default()));
        (
            AgentMetrics::new(node, version, status.clone(), prune),
            status,
        )
    }

    /// The exposition of `m` while its agent's status is `status`.
    fn render(m: &Agent, status: &mut Status, format: TextFormat) -> String {
        std::mem::swap(&mut *m.1.write().unwrap(), status);
        let text = m.0.render(format);
        std::mem::swap(&mut *m.1.write().unwrap(), status);
        text
    }

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn before_the_first_answer_only_up_and_the_counters() {
        let m = agent("worker-1", "1.2.3", None);
        m.0.error(Call::ListImages);
        m.0.error(Call::ListImages);
        let text = render(&m, &mut Status::default(), TextFormat::OpenMetrics);
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
        let m = agent("n1", "v", None);
        let snapshot = Snapshot {
            json: Bytes::new(),
            etag: String::new(),
            collected_at_text: String::new(),
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
        let text = render(&m, &mut status, TextFormat::OpenMetrics);
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
        let text = render(&m, &mut status, TextFormat::PrometheusText);
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
        let m = agent(
            "n1",
            "v",
            Some(Pruning {
                enabled: true,
                dry_run: false,
            }),
        );
        let text = render(&m, &mut Status::default(), TextFormat::OpenMetrics);
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
        m.0.prune_candidates(3);
        m.0.prune_ran(UNIX_EPOCH + Duration::from_secs(100));
        m.0.prune_removed(1000);
        m.0.prune_removed(24);
        m.0.prune_error(PruneReason::Wanted);
        let text = render(&m, &mut Status::default(), TextFormat::OpenMetrics);
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
        let off = agent(
            "n1",
            "v",
            Some(Pruning {
                enabled: false,
                dry_run: true,
            }),
        );
        let text = render(&off, &mut Status::default(), TextFormat::PrometheusText);
        assert_eq!(
            sample(&text, r#"imagecap_prune_enabled{node="n1"}"#).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn a_reading_without_fs_use_has_no_fs_series() {
        let m = agent("n1", "v", None);
        let mut status = Status {
            last: Some(Arc::new(Snapshot {
                json: Bytes::new(),
                etag: String::new(),
                collected_at_text: String::new(),
                images: 0,
                image_bytes: u64::MAX,
                image_fs_used_bytes: None,
                collected_at: UNIX_EPOCH,
            })),
            up: true,
            last_error: None,
            plan: None,
        };
        let text = render(&m, &mut status, TextFormat::OpenMetrics);
        assert!(!text.contains("imagecap_runtime_image_fs_used_bytes{"));
        assert_eq!(
            sample(&text, r#"imagecap_runtime_image_bytes{node="n1"}"#).as_deref(),
            Some(i64::MAX.to_string().as_str()),
            "saturates rather than wrapping"
        );
    }
}
