//! The report families: each a name, a help text and the function that reads its
//! samples from the current report, in the style of kube-state-metrics' family
//! generators. Each report's text is made from that report alone (the runs of
//! nodes whose reports did not change keep their text, see `pieces`), so the
//! series of a node that is gone disappear with it and no stale series can
//! linger. The series are written as prometheus-client's text encoder writes
//! gauges, in the order of the report's subjects.
//!
//! A family is declared over a subject (a node, a wanted image, a source, the
//! menu, the cluster) and reads one value from it, or one per label value of its
//! own; as kube-state-metrics adds an object's labels once, the subject's label
//! (`node`, `image`, `source`) is added to each series here, ahead of the
//! family's own. Adding a per-node metric is one declaration and its value.

use crate::analysis::WantSource;
use crate::analysis::menu::{MenuReport, MenuState};
use crate::analysis::report::{
    CapSource, ImageReport, MissingState, NodeReport, Report, SourceReport,
};
#[cfg(test)]
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
#[cfg(test)]
use prometheus_client::metrics::TypedMetric;
#[cfg(test)]
use prometheus_client::metrics::family::Family;
#[cfg(test)]
use prometheus_client::metrics::gauge::Gauge;
#[cfg(test)]
use prometheus_client::registry::Registry;
use std::fmt::Debug;
use std::hash::Hash;
#[cfg(test)]
use std::sync::atomic::AtomicU64;

#[cfg(test)]
pub(crate) type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels every series of a family over `T` starts with: the subject's
/// own (`node`, `image`, `source`, or none).
pub type Labels<T> = <T as Subject>::Label;

/// What a report family has one series (or more) per: a node, a wanted image, a
/// source, Nublado's menu or the whole cluster. As kube-state-metrics adds an
/// object's labels once, each series is labelled with its subject's labels
/// first, then with those the family adds of its own.
pub trait Subject: 'static {
    type Label: LabelSet;
    fn label(&self) -> Self::Label;
    /// Writes the subject's labels as [`Subject::label`] has them.
    fn write_label(&self, out: &mut LabelWriter);
}

/// A label set of a report series.
pub trait LabelSet:
    EncodeLabelSet + TextLabels + Clone + Hash + Eq + Debug + Send + Sync + 'static
{
}

impl<S: EncodeLabelSet + TextLabels + Clone + Hash + Eq + Debug + Send + Sync + 'static> LabelSet
    for S
{
}

/// A label set written straight into the text exposition, as prometheus-client
/// encodes it: `name="value"` pairs in order, the value escaped.
pub trait TextLabels {
    fn write_labels(&self, out: &mut LabelWriter);
}

/// Writes one series' labels: `{`, the pairs separated by `,`, `}`; nothing when
/// there are none.
pub struct LabelWriter<'a> {
    out: &'a mut String,
    pairs: usize,
}

impl LabelWriter<'_> {
    pub fn pair(&mut self, name: &str, value: &str) {
        self.out.push(if self.pairs == 0 { '{' } else { ',' });
        self.pairs += 1;
        self.out.push_str(name);
        self.out.push_str("=\"");
        let mut last = 0;
        for (i, b) in value.bytes().enumerate() {
            let escaped = match b {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                b'\n' => "\\n",
                _ => continue,
            };
            self.out.push_str(&value[last..i]);
            self.out.push_str(escaped);
            last = i + 1;
        }
        self.out.push_str(&value[last..]);
        self.out.push('"');
    }
}

/// A gauge family read from the report: a name, a help text and how each
/// subject's value is read.
pub struct FamilySpec<T: 'static> {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Samples<T>,
}

/// How a family reads its value from one subject. The subject's labels are not
/// the family's to write: every series gets them first.
pub enum Samples<T: 'static> {
    /// One series per subject; none where the value is unknown.
    Int(fn(&T) -> Option<i64>),
    /// [`Samples::Int`] for a ratio or a time.
    Float(fn(&T) -> Option<f64>),
    /// One series per subject and state.
    ByState(fn(&T, &mut dyn FnMut(StateLabel, i64))),
    /// One series per subject, image and its state.
    ByImage(fn(&T, &mut dyn FnMut(ImageStateLabels, i64))),
    /// One series per subject and source.
    BySource(fn(&T, &mut dyn FnMut(SourceLabel, i64))),
}

/// `node`: a node's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    node: String,
}

/// `image`: a wanted image's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabel {
    image: String,
}

/// `source`: a source of wanted images.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    source: WantSource,
}

/// No label: a subject of which there is one (the cluster, Nublado's menu).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NoLabel;

impl EncodeLabelSet for NoLabel {
    fn encode(&self, _: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// `state`: a missing image's state, or where an image stands with the menu.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    state: &'static str,
}

impl StateLabel {
    fn of(state: &'static str) -> StateLabel {
        StateLabel { state }
    }
}

/// `image` and `state`: an image and where it stands.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageStateLabels {
    image: String,
    state: &'static str,
}

impl ImageStateLabels {
    fn of(image: &str, state: &'static str) -> ImageStateLabels {
        ImageStateLabels {
            image: image.to_string(),
            state,
        }
    }
}

impl TextLabels for NodeLabel {
    fn write_labels(&self, out: &mut LabelWriter) {
        out.pair("node", &self.node);
    }
}

impl TextLabels for ImageLabel {
    fn write_labels(&self, out: &mut LabelWriter) {
        out.pair("image", &self.image);
    }
}

impl TextLabels for SourceLabel {
    fn write_labels(&self, out: &mut LabelWriter) {
        out.pair("source", self.source.as_str());
    }
}

impl TextLabels for NoLabel {
    fn write_labels(&self, _: &mut LabelWriter) {}
}

impl TextLabels for StateLabel {
    fn write_labels(&self, out: &mut LabelWriter) {
        out.pair("state", self.state);
    }
}

impl TextLabels for ImageStateLabels {
    fn write_labels(&self, out: &mut LabelWriter) {
        out.pair("image", &self.image);
        out.pair("state", self.state);
    }
}

impl Subject for NodeReport {
    type Label = NodeLabel;
    fn label(&self) -> NodeLabel {
        NodeLabel {
            node: self.name.clone(),
        }
    }
    fn write_label(&self, out: &mut LabelWriter) {
        out.pair("node", &self.name);
    }
}

impl Subject for ImageReport {
    type Label = ImageLabel;
    fn label(&self) -> ImageLabel {
        ImageLabel {
            image: self.image.to_string(),
        }
    }
    fn write_label(&self, out: &mut LabelWriter) {
        out.pair("image", &self.image);
    }
}

impl Subject for SourceReport {
    type Label = SourceLabel;
    fn label(&self) -> SourceLabel {
        SourceLabel {
            source: self.source,
        }
    }
    fn write_label(&self, out: &mut LabelWriter) {
        out.pair("source", self.source.as_str());
    }
}

impl Subject for MenuReport {
    type Label = NoLabel;
    fn label(&self) -> NoLabel {
        NoLabel
    }
    fn write_label(&self, _: &mut LabelWriter) {}
}

impl Subject for Report {
    type Label = NoLabel;
    fn label(&self) -> NoLabel {
        NoLabel
    }
    fn write_label(&self, _: &mut LabelWriter) {}
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One series per node (per node and label value for the prepull families).
pub const NODE_FAMILIES: &[FamilySpec<NodeReport>] = &[
    FamilySpec {
        name: "imagecap_node_images",
        help: "Entries the node reports in status.images",
        samples: Samples::Int(|n| Some(i64::from(n.cap.image_count))),
    },
    FamilySpec {
        name: "imagecap_node_max_images",
        help: "The cap in force (nodeStatusMaxImages); -1 is unlimited",
        samples: Samples::Int(|n| Some(n.cap.max_images)),
    },
    FamilySpec {
        name: "imagecap_node_max_images_known",
        help: "1 when the cap was read from the kubelet's configz, 0 when it is assumed",
        samples: Samples::Int(|n| Some(i64::from(n.cap.max_images_source == CapSource::Kubelet))),
    },
    FamilySpec {
        name: "imagecap_node_images_cap_ratio",
        help: "Images reported divided by the cap; 0 when unlimited",
        samples: Samples::Float(|n| Some(n.cap.cap_ratio)),
    },
    FamilySpec {
        name: "imagecap_node_at_cap",
        help: "1 when the cap is positive and the node reports that many images or more",
        samples: Samples::Int(|n| Some(i64::from(n.cap.at_cap))),
    },
    FamilySpec {
        name: "imagecap_node_image_size_bytes",
        help: "Sum of sizeBytes of the images the node reports",
        samples: Samples::Int(|n| Some(saturating_i64(n.cap.image_size_bytes))),
    },
    FamilySpec {
        name: "imagecap_node_ephemeral_storage_capacity_bytes",
        help: "status.capacity ephemeral-storage of the node",
        samples: Samples::Int(|n| {
            n.storage
                .ephemeral_storage_capacity_bytes
                .map(saturating_i64)
        }),
    },
    FamilySpec {
        name: "imagecap_node_ephemeral_storage_allocatable_bytes",
        help: "status.allocatable ephemeral-storage of the node",
        samples: Samples::Int(|n| {
            n.storage
                .ephemeral_storage_allocatable_bytes
                .map(saturating_i64)
        }),
    },
    FamilySpec {
        name: "imagecap_node_recommended_max_images",
        help: "Suggested nodeStatusMaxImages: ephemeral storage capacity in GB divided by 3, \
               rounded up",
        samples: Samples::Int(|n| n.storage.recommended_max_images.map(saturating_i64)),
    },
    FamilySpec {
        name: "imagecap_node_prepull_missing_images",
        help: "Wanted images an eligible node does not report, by state: absent (under its \
               cap; at it, larger than the smallest image listed or not in its runtime), \
               unlistable (at its cap, smaller than the smallest image listed: never listable \
               there), hidden (at its cap and in its runtime), unverifiable (at its cap, size \
               unknown, no node-agent report)",
        samples: Samples::ByState(|n, emit| {
            if !n.prepull.eligible {
                return;
            }
            for state in MissingState::ALL {
                let count = n
                    .prepull
                    .missing
                    .iter()
                    .filter(|m| m.state == state)
                    .count();
                emit(
                    StateLabel {
                        state: state.as_str(),
                    },
                    count as i64,
                );
            }
        }),
    },
    FamilySpec {
        name: "imagecap_node_prepull_image_missing",
        help: "1 for each wanted image an eligible node does not report, with its state",
        samples: Samples::ByImage(|n, emit| {
            if n.prepull.eligible {
                for m in &n.prepull.missing {
                    emit(ImageStateLabels::of(&m.image, m.state.as_str()), 1);
                }
            }
        }),
    },
];

/// The node families read from the node agents (`--agents`) and the kubelets
/// (`--kubelet-stats`, `--kubelet-configz`): without those readers they have no
/// series. Registered after [`NODE_FAMILIES`]; a family that needs an agent or a
/// kubelet is declared here, and the tests take the list from here.
pub const AGENT_AND_KUBELET_FAMILIES: &[FamilySpec<NodeReport>] = &[
    FamilySpec {
        name: "imagecap_node_agent_up",
        help: "1 when the node has a fresh report from its node agent, 0 when not (only with \
               --agents)",
        samples: Samples::Int(|n| n.runtime.agent_up.map(i64::from)),
    },
    FamilySpec {
        name: "imagecap_node_runtime_images",
        help: "Images the container runtime holds on the node, from its node agent",
        samples: Samples::Int(|n| n.runtime.runtime_images.map(i64::from)),
    },
    FamilySpec {
        name: "imagecap_node_hidden_images",
        help: "Runtime images the API does not report because of the cap (0 under the cap), \
               from the node agent",
        samples: Samples::Int(|n| n.runtime.hidden_images.map(i64::from)),
    },
    FamilySpec {
        name: "imagecap_node_image_fs_used_bytes",
        help: "Bytes used on the node's image filesystem (kubelet stats/summary \
               node.runtime.imageFs)",
        samples: Samples::Int(|n| n.kubelet.image_fs_used_bytes.map(saturating_i64)),
    },
    FamilySpec {
        name: "imagecap_node_image_fs_capacity_bytes",
        help: "Size of the node's image filesystem (kubelet stats/summary node.runtime.imageFs)",
        samples: Samples::Int(|n| n.kubelet.image_fs_capacity_bytes.map(saturating_i64)),
    },
    FamilySpec {
        name: "imagecap_node_image_gc_high_threshold_ratio",
        help: "Image filesystem use at which the kubelet starts image garbage collection \
               (configz imageGCHighThresholdPercent / 100)",
        samples: Samples::Float(|n| n.kubelet.image_gc_high_threshold_ratio),
    },
    FamilySpec {
        name: "imagecap_node_image_gc_low_threshold_ratio",
        help: "Image filesystem use the kubelet's image garbage collection frees down to \
               (configz imageGCLowThresholdPercent / 100)",
        samples: Samples::Float(|n| n.kubelet.image_gc_low_threshold_ratio),
    },
];

/// One series per wanted image (per image and source for the info family).
pub const IMAGE_FAMILIES: &[FamilySpec<ImageReport>] = &[
    FamilySpec {
        name: "imagecap_prepull_image_nodes",
        help: "Nodes eligible for the wanted image that report it",
        samples: Samples::Int(|i| Some(i64::from(i.nodes))),
    },
    FamilySpec {
        name: "imagecap_prepull_image_eligible_nodes",
        help: "Nodes eligible for the wanted image: where the sources that want it want it",
        samples: Samples::Int(|i| Some(i64::from(i.eligible_nodes))),
    },
    FamilySpec {
        name: "imagecap_wanted_image_info",
        help: "1 for each wanted image and each source that wants it",
        samples: Samples::BySource(|i, emit| {
            for &source in &i.sources {
                emit(SourceLabel { source }, 1);
            }
        }),
    },
];

/// One series per source of wanted images.
pub const SOURCE_FAMILIES: &[FamilySpec<SourceReport>] = &[
    FamilySpec {
        name: "imagecap_wanted_source_up",
        help: "1 when the source's last read succeeded; a source that fails keeps its last list",
        samples: Samples::Int(|s| Some(i64::from(s.up))),
    },
    FamilySpec {
        name: "imagecap_wanted_source_last_success_timestamp_seconds",
        help: "Unix time of the source's last successful read",
        samples: Samples::Float(|s| s.last_success_seconds),
    },
    FamilySpec {
        name: "imagecap_wanted_source_images",
        help: "Wanted images the source contributes",
        samples: Samples::Int(|s| Some(i64::from(s.images))),
    },
    FamilySpec {
        name: "imagecap_wanted_source_dropped_images",
        help: "Image references the source's last read listed past the cap on the images one \
               source may contribute, not wanted",
        samples: Samples::Int(|s| Some(saturating_i64(s.dropped_images))),
    },
    FamilySpec {
        name: "imagecap_prepull_loop_pairs",
        help: "Eligible (node, wanted image) pairs at the node's cap where the image is hidden \
               or unlistable: pulls the prepuller schedules again on every pass, for nothing",
        samples: Samples::Int(|s| Some(i64::from(s.loop_pairs))),
    },
];

/// Nublado's spawner menu; no series without a Nublado source that has answered.
pub const MENU_FAMILIES: &[FamilySpec<MenuReport>] = &[
    FamilySpec {
        name: "imagecap_menu_images",
        help: "Images Nublado prepulls, by where they stand with its spawner menu: shown, \
               hidden_by_cap (every node missing it is at its cap and holds it hidden or can \
               never list it), maybe_hidden_by_cap (at the cap, some unverifiable), pulling",
        samples: Samples::ByState(|m, emit| {
            for &state in MenuState::ALL {
                emit(StateLabel::of(state.as_str()), i64::from(m.count(state)));
            }
        }),
    },
    FamilySpec {
        name: "imagecap_menu_image_hidden",
        help: "1 for each image the spawner menu leaves out because of the cap, for sure \
               (hidden_by_cap) or maybe (maybe_hidden_by_cap)",
        samples: Samples::ByImage(|m, emit| {
            for h in &m.hidden {
                emit(ImageStateLabels::of(&h.image, h.state.as_str()), 1);
            }
        }),
    },
];

/// One series for the whole cluster.
pub const CLUSTER_FAMILIES: &[FamilySpec<Report>] = &[
    FamilySpec {
        name: "imagecap_prepull_eligible_nodes",
        help: "Nodes eligible for at least one wanted image (with none wanted: matching the \
               node selector and tolerations, not cordoned)",
        samples: Samples::Int(|r| Some(i64::from(r.eligible_nodes))),
    },
    FamilySpec {
        name: "imagecap_nodes",
        help: "Nodes known",
        samples: Samples::Int(|r| Some(r.nodes.len() as i64)),
    },
];

/// A gauge's value type, with the gauge that holds it.
trait GaugeValue: Copy {
    #[cfg(test)]
    type Gauge: Default + EncodeMetric + TypedMetric + Debug + Send + Sync + 'static;
    #[cfg(test)]
    fn set(gauge: &Self::Gauge, value: Self);
    /// Writes the value as prometheus-client encodes the gauge's.
    fn write(self, out: &mut String);
}

impl GaugeValue for i64 {
    #[cfg(test)]
    type Gauge = Gauge;
    #[cfg(test)]
    fn set(gauge: &Gauge, value: i64) {
        gauge.set(value);
    }
    fn write(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl GaugeValue for f64 {
    #[cfg(test)]
    type Gauge = FloatGauge;
    #[cfg(test)]
    fn set(gauge: &FloatGauge, value: f64) {
        gauge.set(value);
    }
    fn write(self, out: &mut String) {
        out.push_str(dtoa::Buffer::new().format(self));
    }
}

/// Writes one series of `spec`: its name, the subject's labels then its own,
/// and the value, as prometheus-client's text encoder writes a gauge's.
fn write_series<T: Subject, E: TextLabels, V: GaugeValue>(
    out: &mut String,
    spec: &FamilySpec<T>,
    item: &T,
    own: &E,
    value: V,
) {
    out.push_str(spec.name);
    let mut labels = LabelWriter { out, pairs: 0 };
    item.write_label(&mut labels);
    own.write_labels(&mut labels);
    if labels.pairs > 0 {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// Writes the series `spec` has for `item`, in the order it reads them.
pub(crate) fn write_samples<T: Subject>(out: &mut String, spec: &FamilySpec<T>, item: &T) {
    match spec.samples {
        Samples::Int(read) => {
            if let Some(v) = read(item) {
                write_series(out, spec, item, &NoLabel, v);
            }
        }
        Samples::Float(read) => {
            if let Some(v) = read(item) {
                write_series(out, spec, item, &NoLabel, v);
            }
        }
        Samples::ByState(read) => read(item, &mut |own, v| write_series(out, spec, item, &own, v)),
        Samples::ByImage(read) => read(item, &mut |own, v| write_series(out, spec, item, &own, v)),
        Samples::BySource(read) => read(item, &mut |own, v| write_series(out, spec, item, &own, v)),
    }
}

/// Writes the HELP and TYPE lines of `spec`, as a registry does (the help ends
/// with a full stop).
pub(crate) fn write_header<T>(out: &mut String, spec: &FamilySpec<T>) {
    for part in [
        "# HELP ",
        spec.name,
        " ",
        spec.help,
        ".\n# TYPE ",
        spec.name,
        " gauge\n",
    ] {
        out.push_str(part);
    }
}

/// Writes every family of `specs` that has series for `items`: its HELP and TYPE
/// lines, then its series, item by item.
pub(crate) fn write_families<'a, T: Subject>(
    out: &mut String,
    specs: impl IntoIterator<Item = &'a FamilySpec<T>>,
    items: &[T],
) {
    let mut series = String::new();
    for spec in specs {
        series.clear();
        for item in items {
            write_samples(&mut series, spec, item);
        }
        if !series.is_empty() {
            write_header(out, spec);
            out.push_str(&series);
        }
    }
}

/// Every report family over nodes, in the order they are exposed.
pub(crate) fn node_families() -> impl Iterator<Item = &'static FamilySpec<NodeReport>> {
    NODE_FAMILIES.iter().chain(AGENT_AND_KUBELET_FAMILIES)
}

/// Writes the report families that are not over nodes: per wanted image, per
/// source, for the cluster and Nublado's menu.
pub(crate) fn write_other_families(out: &mut String, report: &Report) {
    write_families(out, IMAGE_FAMILIES, &report.images);
    write_families(out, SOURCE_FAMILIES, &report.sources);
    write_families(out, CLUSTER_FAMILIES, std::slice::from_ref(report));
    if let Some(menu) = &report.menu {
        write_families(out, MENU_FAMILIES, std::slice::from_ref(menu));
    }
}

/// The report families of `report`, whole, in the text both formats share (they
/// are gauges, which the formats write alike).
pub(crate) fn report_text(report: &Report) -> String {
    let mut out = String::with_capacity(256 + report.nodes.len() * 1024);
    write_families(&mut out, node_families(), &report.nodes);
    write_other_families(&mut out, report);
    out
}

#[cfg(test)]
/// Registers `spec`'s family in `registry`: the samples `read` emits for each of
/// `items`, each series labelled with its subject's labels, then with its own.
fn register<T: Subject, E: LabelSet, V: GaugeValue>(
    registry: &mut Registry,
    spec: &FamilySpec<T>,
    items: &[T],
    read: impl Fn(&T, &mut dyn FnMut(E, V)),
) {
    let family = Family::<(Labels<T>, E), V::Gauge>::default();
    for item in items {
        let subject = item.label();
        read(item, &mut |own, value| {
            V::set(&family.get_or_create(&(subject.clone(), own)), value)
        });
    }
    registry.register(spec.name, spec.help, family);
}

/// Registers `specs` in `registry`, with the samples of every item of `items`.
#[cfg(test)]
pub(crate) fn register_all<T: Subject>(
    registry: &mut Registry,
    specs: &[FamilySpec<T>],
    items: &[T],
) {
    for spec in specs {
        match spec.samples {
            Samples::Int(read) => register(registry, spec, items, |item, emit| {
                read(item).into_iter().for_each(|v| emit(NoLabel, v))
            }),
            Samples::Float(read) => register(registry, spec, items, |item, emit| {
                read(item).into_iter().for_each(|v| emit(NoLabel, v))
            }),
            Samples::ByState(read) => register(registry, spec, items, read),
            Samples::ByImage(read) => register(registry, spec, items, read),
            Samples::BySource(read) => register(registry, spec, items, read),
        }
    }
}

/// The report families for one report, as a registry: what the text written
/// above is checked against.
#[cfg(test)]
pub(crate) fn report_registry(report: &Report) -> Registry {
    let mut r = Registry::default();
    register_all(&mut r, NODE_FAMILIES, &report.nodes);
    register_all(&mut r, AGENT_AND_KUBELET_FAMILIES, &report.nodes);
    register_all(&mut r, IMAGE_FAMILIES, &report.images);
    register_all(&mut r, SOURCE_FAMILIES, &report.sources);
    register_all(&mut r, CLUSTER_FAMILIES, std::slice::from_ref(report));
    if let Some(menu) = &report.menu {
        register_all(&mut r, MENU_FAMILIES, std::slice::from_ref(menu));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::{MissingState, fixtures};

    /// Each family's HELP and TYPE lines, and its series sorted.
    fn by_family(text: &str) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") {
                out.push((line.to_string(), Vec::new()));
            } else if let Some((_, series)) = out.last_mut() {
                series.push(line.to_string());
            }
        }
        for (_, series) in &mut out {
            series.sort();
        }
        out
    }

    #[test]
    fn the_text_is_what_a_registry_encodes() {
        let mut a = fixtures::node("a\"\\\n", 50, 50)
            .missing(&["x:1", "y@sha256:1"], MissingState::Hidden)
            .build();
        a.runtime.runtime_images = Some(60);
        a.runtime.agent_up = Some(true);
        a.kubelet.image_gc_high_threshold_ratio = Some(0.85);
        a.kubelet.image_gc_low_threshold_ratio = Some(1e-7);
        a.storage.ephemeral_storage_capacity_bytes = Some(u64::MAX);
        let b = fixtures::node("b", 3, -1).build();
        let mut r = fixtures::report(
            vec![a, b],
            vec![ImageReport {
                image: "x:1".into(),
                sources: vec![WantSource::Config, WantSource::Nublado],
                nodes: 1,
                eligible_nodes: 2,
            }],
        );
        r.sources = vec![SourceReport {
            source: WantSource::Nublado,
            images: 1,
            up: true,
            last_success_seconds: Some(1_700_000_000.25),
            dropped_images: 0,
            loop_pairs: 2,
        }];
        let mut expected = String::new();
        prometheus_client::encoding::text::encode_registry(&mut expected, &report_registry(&r))
            .unwrap();
        let text = report_text(&r);
        assert_eq!(by_family(&text), by_family(&expected), "{text}\n{expected}");
        assert_eq!(text.len(), expected.len());
    }
}
