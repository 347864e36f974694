//! Every metric family the exporter exposes, each declared once with how its value
//! is read, and the rendering of `/metrics`.
//!
//! Three kinds live here:
//! - [`Metrics`]: counters the sources increment, for the life of the process,
//!   declared in [`counters`].
//! - Values read at each scrape through a collector: the process's figures and the
//!   interner's sizes ([`process`]), the refresh time ([`refresh`]).
//! - The report families ([`NODE_FAMILIES`], [`IMAGE_FAMILIES`], [`CLUSTER_FAMILIES`]):
//!   each is a name, a help text and the function that reads its samples from the
//!   current report, in the style of kube-state-metrics' family generators. Each
//!   report's text is made from that report alone (`pieces` keeps the text of
//!   the runs of nodes that did not change), so the series of a node that is gone
//!   disappear with it and no stale series can linger.
//!
//! [`exposition`] has the formats, their negotiation and gzip, for the exporter
//! and the node agent alike.

use crate::analysis::report::Report;
use crate::analysis::wants::SourceField;
use crate::analysis::{InvalidField, WantSource};
pub mod counters;
mod declared;
pub mod exposition;
pub mod families;
mod pieces;
pub mod process;
pub mod refresh;

pub use counters::KubeRequests;
pub(crate) use counters::register_build_info;
use counters::{FieldLabels, SourceErrorLabels, SourceFieldLabels};
pub use declared::Declared;
use exposition::{Encoded, deflate, encode_part, gzip_member};
pub use exposition::{Encoding, TextFormat, to_prometheus_text};
pub use families::{
    AGENT_AND_KUBELET_FAMILIES, CLUSTER_FAMILIES, FamilySpec, IMAGE_FAMILIES, Labels,
    MENU_FAMILIES, NODE_FAMILIES, SOURCE_FAMILIES, Samples,
};
use pieces::ReportPieces;
use refresh::RefreshTime;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Every family of the exporter but the report families, as declared.
pub const EXPORTER_FAMILIES: &[&Declared] = &[
    &counters::SOURCE_ERRORS,
    &counters::INVALID_NODE_DATA,
    &counters::INVALID_SOURCE_DATA,
    &counters::SOURCE_RESTARTS,
    &counters::AGENT_NAMES_DROPPED,
    &counters::AGENT_CONNECTIONS_OPENED,
    &counters::BUILD_INFO,
    &counters::KUBE_REQUESTS,
    &counters::KUBE_REQUEST_DURATION,
    &process::INTERNED,
    &process::CPU_SECONDS,
    &process::OPEN_FDS,
    &process::MAX_FDS,
    &process::VIRTUAL_MEMORY_BYTES,
    &process::VIRTUAL_MEMORY_MAX_BYTES,
    &process::RESIDENT_MEMORY_BYTES,
    &process::START_TIME_SECONDS,
    &refresh::LAST_UPDATE,
];

/// What failed to read: the `kind` label of `imagecap_source_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceErrorKind {
    /// A LIST of nodes (poll mode, `check`, or the watch's initial list).
    List,
    /// Starting or following a WATCH of nodes.
    Watch,
    /// Reading or decoding `--nodes-file`.
    File,
    /// Reading a kubelet's configz (one per node and attempt).
    Configz,
    /// Reading a source of wanted images (`prepull.sources`): the Nublado
    /// controller's prepuller status, kube-fledged ImageCaches, prepuller
    /// DaemonSets.
    Prepull(WantSource),
    /// Reading a kubelet's stats/summary (one per node and attempt).
    KubeletStats,
    /// Watching the agents' EndpointSlices.
    AgentDiscovery,
    /// Reading a node agent's /v1/images (one per agent and attempt).
    Agent,
}

impl SourceErrorKind {
    /// Every value, each series created at 0 in this order: the node-data reads,
    /// then every source of wanted images that is read (from
    /// [`WantSource::ALL`], so a new source has its series without a line here).
    pub fn all() -> impl Iterator<Item = SourceErrorKind> {
        use SourceErrorKind::*;
        let sources = WantSource::ALL
            .iter()
            .filter(|s| s.is_read())
            .map(|&s| Prepull(s));
        [List, Watch, File, Configz]
            .into_iter()
            .chain(sources)
            .chain([KubeletStats, AgentDiscovery, Agent])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceErrorKind::List => "list",
            SourceErrorKind::Watch => "watch",
            SourceErrorKind::File => "file",
            SourceErrorKind::Configz => "configz",
            // The one label value that differs from the source's name: published
            // as `daemonsets` (the key's plural) while the wanted-image metrics
            // name the source `daemonset`. Both stay as published.
            SourceErrorKind::Prepull(WantSource::DaemonSet) => "daemonsets",
            SourceErrorKind::Prepull(source) => source.as_str(),
            SourceErrorKind::KubeletStats => "kubelet-stats",
            SourceErrorKind::AgentDiscovery => "agent-discovery",
            SourceErrorKind::Agent => "agent",
        }
    }
}

impl std::fmt::Display for SourceErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for SourceErrorKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A failed read of node data or of a source of wanted images: what it says, and
/// the `kind` it is counted under in `imagecap_source_errors_total`. Each layer's
/// error type implements it, so the label comes from the error, not the caller.
pub trait Failure: std::fmt::Display {
    fn kind(&self) -> SourceErrorKind;
}

/// The process-lifetime counters, and the rendering of `/metrics`.
pub struct Metrics {
    /// The counters, the build information, and the process's figures (read at
    /// each scrape): what comes before the report families.
    head: Registry,
    /// The refresh time: what comes after the report families. Scrapes encode it
    /// one at a time, each with the time of its own report.
    tail: Mutex<Registry>,
    refresh: Arc<RefreshTime>,
    /// The encoded report families of the last report rendered.
    report_text: Mutex<Option<ReportPieces>>,
    source_errors: Family<SourceErrorLabels, Counter>,
    invalid_node_data: Family<FieldLabels, Counter>,
    invalid_source_data: Family<SourceFieldLabels, Counter>,
    source_restarts: Counter,
    agent_names_dropped: Counter,
    agent_connections_opened: Counter,
    /// Requests to the Kubernetes API server; the layer of every client
    /// ([`crate::client::kubernetes::build`]).
    pub kube_requests: KubeRequests,
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        Metrics::reading_process(version, Some(crate::process::read))
    }

    /// With the `process_*` families, and the interner's sizes, read with
    /// `process` at each scrape (none in tests that compare the texts of two
    /// scrapes).
    fn reading_process(
        version: &str,
        process: Option<fn() -> Result<crate::process::Sample, String>>,
    ) -> Metrics {
        let mut head = Registry::default();
        let source_errors = Family::<SourceErrorLabels, Counter>::default();
        for kind in SourceErrorKind::all() {
            source_errors.get_or_create_owned(&SourceErrorLabels { kind });
        }
        counters::SOURCE_ERRORS.register(&mut head, source_errors.clone());
        let invalid_node_data = Family::<FieldLabels, Counter>::default();
        for &field in InvalidField::ALL {
            invalid_node_data.get_or_create_owned(&FieldLabels { field });
        }
        counters::INVALID_NODE_DATA.register(&mut head, invalid_node_data.clone());
        let invalid_source_data = Family::<SourceFieldLabels, Counter>::default();
        counters::INVALID_SOURCE_DATA.register(&mut head, invalid_source_data.clone());
        let source_restarts = Counter::default();
        counters::SOURCE_RESTARTS.register(&mut head, source_restarts.clone());
        let agent_names_dropped = Counter::default();
        counters::AGENT_NAMES_DROPPED.register(&mut head, agent_names_dropped.clone());
        let agent_connections_opened = Counter::default();
        counters::AGENT_CONNECTIONS_OPENED.register(&mut head, agent_connections_opened.clone());
        register_build_info(&mut head, version);
        let kube_requests = KubeRequests::register(&mut head);
        if let Some(read) = process {
            head.register_collector(Box::new(process::ProcessFigures { read }));
        }
        let refresh = Arc::new(RefreshTime::default());
        let mut tail = Registry::default();
        tail.register_collector(Box::new(refresh.clone()));
        Metrics {
            head,
            tail: Mutex::new(tail),
            refresh,
            report_text: Mutex::new(None),
            source_errors,
            invalid_node_data,
            invalid_source_data,
            source_restarts,
            agent_names_dropped,
            agent_connections_opened,
            kube_requests,
        }
    }

    pub fn source_error(&self, kind: SourceErrorKind) {
        self.source_errors
            .get_or_create(&SourceErrorLabels { kind })
            .inc();
    }

    pub fn invalid_field(&self, field: InvalidField) {
        self.invalid_node_data
            .get_or_create(&FieldLabels { field })
            .inc();
    }

    /// A source of wanted images is read: its malformed-field series exist from
    /// now on, at 0 until something is counted.
    pub fn expect_source_data(&self, source: WantSource) {
        for &field in SourceField::ALL {
            self.invalid_source_data
                .get_or_create_owned(&SourceFieldLabels { source, field });
        }
    }

    /// `n` malformed `field`s in one answer of `source`.
    pub fn invalid_source_data(&self, source: WantSource, field: SourceField, n: u64) {
        self.invalid_source_data
            .get_or_create(&SourceFieldLabels { source, field })
            .inc_by(n);
    }

    pub fn source_restarted(&self) {
        self.source_restarts.inc();
    }

    pub fn agent_names_dropped(&self, n: u64) {
        self.agent_names_dropped.inc_by(n);
    }

    /// The counter of connections opened to node agents, for their connector.
    pub fn agent_connections_opened(&self) -> Counter {
        self.agent_connections_opened.clone()
    }

    /// The OpenMetrics text for the current report, in one piece.
    pub fn render(&self, report: &Arc<Report>, last_update: Option<SystemTime>) -> String {
        let parts = self.render_parts(
            report,
            last_update,
            TextFormat::OpenMetrics,
            Encoding::Identity,
        );
        let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum::<usize>());
        for part in &parts {
            out.extend_from_slice(part);
        }
        // Every part was encoded from a String.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The exposition for the current report in `format`, in parts to be sent one
    /// after the other: the counters, build information and process figures (read
    /// afresh from `/proc`), the report families, the refresh time (and `# EOF` in
    /// OpenMetrics).
    ///
    /// The report families depend on the report alone, so their text is kept for
    /// as long as the report is the same (the store hands out the same `Arc` until
    /// a node changes), and every scrape of it shares that one copy; only the
    /// counters and the refresh time are encoded on every scrape.
    ///
    /// With [`Encoding::Gzip`] the parts are one gzip member, the report families
    /// in compressed pieces kept from report to report (only the nodes that
    /// changed are compressed again, see `pieces`): scrapes, which Prometheus
    /// always sends with gzip, then compress a few kilobytes each instead of the
    /// whole text, and a client that stops reading holds no compressor.
    pub fn render_parts(
        &self,
        report: &Arc<Report>,
        last_update: Option<SystemTime>,
        format: TextFormat,
        encoding: Encoding,
    ) -> Vec<Bytes> {
        let families = self.report_text(report, format, encoding);
        let head = encode_part(&self.head, format, false);
        let tail = {
            let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            self.refresh.set(last_update);
            encode_part(&tail, format, true)
        };
        // report_text answers in the encoding asked for.
        match families {
            Encoded::Gzip(pieces, crc) => gzip_member(
                &deflate(head.as_bytes(), false),
                &pieces,
                &crc,
                &deflate(tail.as_bytes(), true),
            ),
            Encoded::Plain(families) => vec![head.into(), families, tail.into()],
        }
    }

    /// Makes the gzipped report families of `report` ahead of a scrape (as
    /// Prometheus asks for them), so that the scrape finds them made.
    pub fn prepare(&self, report: &Arc<Report>) {
        self.report_text(report, TextFormat::OpenMetrics, Encoding::Gzip);
    }

    /// The encoded report families of `report` in `format` and `encoding`.
    ///
    /// Only what was asked for is kept: Prometheus asks for gzip, so the plain text
    /// (megabytes at thousands of nodes, ten times its gzip) is built and kept only
    /// once a client asks for it plain, until the report changes.
    fn report_text(&self, report: &Arc<Report>, format: TextFormat, encoding: Encoding) -> Encoded {
        let mut cache = self.report_text.lock().unwrap_or_else(|e| e.into_inner());
        let mut big = false;
        let kept = match cache.take() {
            Some(kept) if Arc::ptr_eq(&kept.report, report) => kept,
            old => {
                let (kept, made) = ReportPieces::new(report.clone(), old);
                big = made.chunks * 4 > made.of;
                kept
            }
        };
        let plain_before = kept.plain_count();
        let kept = cache.insert(kept);
        let text = kept.encoded(format, encoding == Encoding::Gzip);
        big |= kept.plain_count() > plain_before;
        drop(cache);
        if big {
            // Rendering much of the report made and freed many small allocations,
            // and maybe a plain text that was not kept: give the pages back rather
            // than keep them as the new steady size.
            crate::sys::release_free_memory();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::exposition::*;
    use super::families::*;
    use super::*;
    use crate::analysis::WantSource;
    use crate::analysis::report::fixtures;
    use crate::analysis::report::{ImageReport, MissingState, NodeReport, SourceReport};
    use std::time::{Duration, UNIX_EPOCH};

    /// A node under the default cap of 50, with 1 TiB of images and 1 TB of
    /// ephemeral storage, lacking `missing`, all in `state`.
    fn node(name: &str, images: u32, missing: &[&str], state: Option<MissingState>) -> NodeReport {
        let n = fixtures::node(name, images, 50)
            .image_size_bytes(1 << 40)
            .ephemeral_storage(1_000_000_000_000);
        match state {
            Some(state) => n.missing(missing, state),
            None => n,
        }
        .build()
    }

    fn empty() -> Arc<Report> {
        Arc::new(fixtures::report(vec![], vec![]))
    }

    #[test]
    fn source_error_kinds_keep_their_label_values() {
        let values: Vec<&str> = SourceErrorKind::all().map(|k| k.as_str()).collect();
        assert_eq!(
            values,
            [
                "list",
                "watch",
                "file",
                "configz",
                "nublado",
                "kube-fledged",
                "daemonsets",
                "kubelet-stats",
                "agent-discovery",
                "agent"
            ]
        );
    }

    #[test]
    fn every_source_read_has_its_error_series() {
        for &source in WantSource::ALL {
            let read = !matches!(source, WantSource::Config | WantSource::Pattern);
            assert_eq!(
                SourceErrorKind::all().any(|k| k == SourceErrorKind::Prepull(source)),
                read,
                "{source}"
            );
        }
    }

    #[test]
    fn renders_every_family_with_its_labels() {
        let m = Metrics::new("1.2.3");
        m.source_error(SourceErrorKind::Watch);
        m.invalid_field(InvalidField::ImageName);
        m.invalid_field(InvalidField::ImageName);
        m.source_restarted();
        let report = fixtures::report(
            vec![
                node("a", 50, &["x:1"], Some(MissingState::Unverifiable)),
                node("b", 10, &[], None),
            ],
            vec![ImageReport {
                image: "x:1".into(),
                sources: vec![],
                nodes: 1,
                eligible_nodes: 2,
            }],
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let text = m.render(&Arc::new(report), Some(t));
        let build_info = format!(
            "imagecap_build_info{{version=\"1.2.3\",revision=\"{}\",rustversion=\"{}\"}} 1",
            crate::version::REVISION,
            crate::version::rust_version(crate::version::RUSTC_VERSION)
        );
        #[cfg(target_os = "linux")]
        for family in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(&format!("\n{family}")), "{family} in\n{text}");
        }
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
            "imagecap_node_prepull_missing_images{node=\"a\",state=\"hidden\"} 0",
            "imagecap_node_prepull_image_missing{node=\"a\",image=\"x:1\",state=\"unverifiable\"} 1",
            "imagecap_prepull_image_nodes{image=\"x:1\"} 1",
            "imagecap_prepull_eligible_nodes 2",
            "imagecap_nodes 2",
            "imagecap_last_update_timestamp_seconds 1700000000.5",
            "imagecap_source_errors_total{kind=\"watch\"} 1",
            "imagecap_source_errors_total{kind=\"list\"} 0",
            "imagecap_source_errors_total{kind=\"configz\"} 0",
            "imagecap_invalid_node_data_total{field=\"image_name\"} 2",
            "imagecap_invalid_node_data_total{field=\"ephemeral_storage_capacity\"} 0",
            "imagecap_source_restarts_total 1",
            build_info.as_str(),
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
    fn every_declared_family_is_exposed_once() {
        let mut a = node("a", 50, &["x:1"], Some(MissingState::Hidden));
        a.storage.ephemeral_storage_allocatable_bytes = Some(1);
        a.runtime.runtime_images = Some(60);
        a.runtime.hidden_images = Some(10);
        a.runtime.agent_up = Some(true);
        a.kubelet.image_fs_used_bytes = Some(40);
        a.kubelet.image_fs_capacity_bytes = Some(100);
        a.kubelet.image_gc_high_threshold_ratio = Some(0.85);
        a.kubelet.image_gc_low_threshold_ratio = Some(0.8);
        let report = Report {
            nodes: vec![a, node("b", 1, &[], None)],
            images: vec![ImageReport {
                image: "x:1".into(),
                sources: vec![WantSource::Config, WantSource::Nublado],
                nodes: 1,
                eligible_nodes: 2,
            }],
            eligible_nodes: 2,
            sources: vec![SourceReport {
                source: WantSource::Nublado,
                images: 1,
                up: false,
                last_success_seconds: Some(1_700_000_000.0),
                dropped_images: 3,
                loop_pairs: 4,
            }],
            menu: None,
        };
        let text = Metrics::new("x").render(&Arc::new(report), None);
        let names = NODE_FAMILIES
            .iter()
            .chain(AGENT_AND_KUBELET_FAMILIES)
            .map(|f| f.name)
            .chain(IMAGE_FAMILIES.iter().map(|f| f.name))
            .chain(SOURCE_FAMILIES.iter().map(|f| f.name))
            .chain(CLUSTER_FAMILIES.iter().map(|f| f.name));
        for name in names {
            let help = format!("# HELP {name} ");
            assert_eq!(text.matches(&help).count(), 1, "{name}:\n{text}");
        }
        for line in [
            "imagecap_node_prepull_missing_images{node=\"a\",state=\"hidden\"} 1",
            "imagecap_node_prepull_image_missing{node=\"a\",image=\"x:1\",state=\"hidden\"} 1",
            "imagecap_node_runtime_images{node=\"a\"} 60",
            "imagecap_node_hidden_images{node=\"a\"} 10",
            "imagecap_node_agent_up{node=\"a\"} 1",
            "imagecap_node_image_fs_used_bytes{node=\"a\"} 40",
            "imagecap_node_image_fs_capacity_bytes{node=\"a\"} 100",
            "imagecap_node_image_gc_high_threshold_ratio{node=\"a\"} 0.85",
            "imagecap_node_image_gc_low_threshold_ratio{node=\"a\"} 0.8",
            "imagecap_wanted_image_info{image=\"x:1\",source=\"config\"} 1",
            "imagecap_wanted_image_info{image=\"x:1\",source=\"nublado\"} 1",
            "imagecap_prepull_image_eligible_nodes{image=\"x:1\"} 2",
            "imagecap_wanted_source_up{source=\"nublado\"} 0",
            "imagecap_wanted_source_images{source=\"nublado\"} 1",
            "imagecap_wanted_source_dropped_images{source=\"nublado\"} 3",
            "imagecap_wanted_source_last_success_timestamp_seconds{source=\"nublado\"} 1700000000.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_deleted_node_leaves_no_series() {
        let m = Metrics::new("x");
        let one = fixtures::report(
            vec![node("gone", 50, &["x:1"], Some(MissingState::Unverifiable))],
            vec![],
        );
        assert!(m.render(&Arc::new(one), None).contains("node=\"gone\""));
        let text = m.render(&empty(), None);
        assert!(!text.contains("gone"), "{text}");
        assert!(text.lines().any(|l| l == "imagecap_nodes 0"));
        assert!(
            !text.contains("imagecap_last_update_timestamp_seconds"),
            "no data, no timestamp"
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new("x");
        m.source_error(SourceErrorKind::List);
        let om = m.render(&empty(), None);
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
        let report = Arc::new(fixtures::report(vec![node("a", 50, &[], None)], vec![]));
        let t1 = UNIX_EPOCH + Duration::from_secs(100);
        let first = m.render(&report, Some(t1));
        m.source_error(SourceErrorKind::Watch);
        let second = m.render(&report, Some(t1 + Duration::from_secs(5)));
        assert!(second.contains("imagecap_node_images{node=\"a\"} 50"));
        assert!(second.contains("imagecap_source_errors_total{kind=\"watch\"} 1"));
        assert!(
            second.contains("imagecap_last_update_timestamp_seconds 105.0"),
            "{second}"
        );
        assert!(first.contains("imagecap_last_update_timestamp_seconds 100.0"));
        // A new report (even with equal content) is encoded afresh.
        let changed = Arc::new(fixtures::report(vec![node("a", 10, &[], None)], vec![]));
        assert!(
            m.render(&changed, None)
                .contains("imagecap_node_images{node=\"a\"} 10")
        );
    }

    #[test]
    fn scrapes_of_one_report_share_its_text_in_each_format() {
        // The process figures change from one scrape to the next.
        let m = Metrics::reading_process("x", None);
        m.source_error(SourceErrorKind::List);
        let report = Arc::new(fixtures::report(
            vec![node("a", 50, &["x:1"], Some(MissingState::Unverifiable))],
            vec![],
        ));
        let t = Some(UNIX_EPOCH + Duration::from_secs(100));
        let concat = |parts: Vec<Bytes>| parts.concat();
        let om = m.render(&report, t);
        let text = to_prometheus_text(&om);
        for _ in 0..2 {
            assert_eq!(
                concat(m.render_parts(&report, t, TextFormat::OpenMetrics, Encoding::Identity)),
                om.as_bytes()
            );
            assert_eq!(
                concat(m.render_parts(&report, t, TextFormat::PrometheusText, Encoding::Identity)),
                text.as_bytes()
            );
        }
        for format in [TextFormat::OpenMetrics, TextFormat::PrometheusText] {
            for encoding in [Encoding::Identity, Encoding::Gzip] {
                // The report's parts lie between the head and the tail.
                let report_parts = |p: Vec<Bytes>| p[1..p.len() - 1].to_vec();
                let a = report_parts(m.render_parts(&report, t, format, encoding));
                let b = report_parts(m.render_parts(&report, t, format, encoding));
                assert!(!a.is_empty() && a.iter().all(|p| !p.is_empty()));
                let at = |p: &[Bytes]| p.iter().map(|b| b.as_ptr()).collect::<Vec<_>>();
                assert_eq!(at(&a), at(&b), "{format:?} {encoding:?}: one copy");
            }
        }
    }

    #[test]
    fn gzip_parts_are_one_member_of_the_same_text() {
        use std::io::Read;
        let m = Metrics::reading_process("x", None);
        let report = Arc::new(fixtures::report(
            vec![node("a", 50, &["x:1"], Some(MissingState::Unverifiable))],
            vec![],
        ));
        let t = Some(UNIX_EPOCH + Duration::from_secs(100));
        for format in [TextFormat::OpenMetrics, TextFormat::PrometheusText] {
            let plain = m
                .render_parts(&report, t, format, Encoding::Identity)
                .concat();
            let parts = m.render_parts(&report, t, format, Encoding::Gzip);
            assert_eq!(&parts[0][..2], &[0x1f, 0x8b], "a gzip header first");
            let stream = parts.concat();
            // A single-member reader (curl's, reqwest's) reads the whole text, and
            // nothing follows the member.
            let mut reader = flate2::read::GzDecoder::new(stream.as_slice());
            let mut decoded = Vec::new();
            reader.read_to_end(&mut decoded).unwrap();
            assert_eq!(decoded, plain, "{format:?}");
            assert!(reader.into_inner().is_empty(), "one member");
            // The report's pieces are kept and reused by the next scrape.
            let again = m.render_parts(&report, t, format, Encoding::Gzip);
            assert_eq!(again.len(), parts.len());
            let n = parts.len();
            for (a, b) in again[1..n - 1].iter().zip(&parts[1..n - 1]) {
                assert_eq!(a.as_ptr(), b.as_ptr());
            }
        }
    }

    #[test]
    fn only_the_texts_asked_for_are_kept() {
        let m = Metrics::reading_process("x", None);
        let report = Arc::new(fixtures::report(
            vec![node("a", 50, &["x:1"], Some(MissingState::Absent))],
            vec![],
        ));
        // The gzip pieces, and each plain text kept.
        let kept = |m: &Metrics| {
            m.report_text
                .lock()
                .unwrap()
                .as_ref()
                .map(|k| 1 + k.plain_count())
        };
        m.render_parts(&report, None, TextFormat::OpenMetrics, Encoding::Gzip);
        assert_eq!(
            kept(&m),
            Some(1),
            "the plain text built for gzip is not kept"
        );
        m.render_parts(&report, None, TextFormat::OpenMetrics, Encoding::Gzip);
        assert_eq!(kept(&m), Some(1));
        m.render_parts(
            &report,
            None,
            TextFormat::PrometheusText,
            Encoding::Identity,
        );
        assert_eq!(kept(&m), Some(2));
        let next = Arc::new((*report).clone());
        m.render_parts(&next, None, TextFormat::OpenMetrics, Encoding::Gzip);
        assert_eq!(kept(&m), Some(1), "a new report starts afresh");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("x");
        let r = Report {
            nodes: vec![node("we\"ird\\node\n", 1, &[], None)],
            images: vec![],
            eligible_nodes: 0,
            sources: vec![],
            menu: None,
        };
        let text = m.render(&Arc::new(r), None);
        assert!(text.contains(r#"node="we\"ird\\node\n""#), "{text}");
    }
}
