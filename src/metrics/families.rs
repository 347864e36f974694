//! The report families: each a name, a help text and the function that reads its
//! samples from the current report, in the style of kube-state-metrics' family
//! generators. They are encoded afresh from each new report, so the series of a
//! node that is gone disappear with it and no stale series can linger.
//!
//! The per-node families ([`NODE_FAMILIES`]) read a value from one node's report;
//! as kube-state-metrics adds an object's labels once, the `node` label is added
//! to each of their series here, ahead of any label of the family's own.

use crate::analysis::menu::{MenuReport, MenuState};
use crate::analysis::report::{
    CapSource, ImageReport, MissingState, NodeReport, Report, SourceReport,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;

pub(crate) type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels of a report sample: name and value pairs.
pub type Labels = Vec<(&'static str, String)>;

/// How a family reads its samples from `T`: each call of `emit` is one sample.
pub enum Samples<T: 'static> {
    Int(fn(&T, &mut dyn FnMut(Labels, i64))),
    Float(fn(&T, &mut dyn FnMut(Labels, f64))),
}

/// A gauge family read from the report.
pub struct FamilySpec<T: 'static> {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Samples<T>,
}

/// A gauge family with one series per node (or more: per node and label of its
/// own), read from each node's report.
pub struct NodeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub value: NodeValue,
}

/// How a per-node family reads its value from a node's report. The `node` label
/// is not the family's to write: every series gets it first.
pub enum NodeValue {
    /// One series per node; none where the value is unknown.
    Int(fn(&NodeReport) -> Option<i64>),
    /// [`NodeValue::Int`] for a ratio.
    Float(fn(&NodeReport) -> Option<f64>),
    /// One series per node and missing state.
    ByState(fn(&NodeReport, &mut dyn FnMut(StateLabel, i64))),
    /// One series per node and wanted image the node lacks.
    ByImage(fn(&NodeReport, &mut dyn FnMut(MissingImageLabels, i64))),
}

/// The label every series of a per-node family starts with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// No label of the family's own: the series has `node` alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct NoOwnLabel;

impl EncodeLabelSet for NoOwnLabel {
    fn encode(&self, _: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// A missing image's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// A wanted image a node lacks, and its state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissingImageLabels {
    pub image: String,
    pub state: &'static str,
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One series per node (per node and label value for the prepull families).
pub const NODE_FAMILIES: &[NodeFamily] = &[
    NodeFamily {
        name: "imagecap_node_images",
        help: "Entries the node reports in status.images",
        value: NodeValue::Int(|n| Some(i64::from(n.cap.image_count))),
    },
    NodeFamily {
        name: "imagecap_node_max_images",
        help: "The cap in force (nodeStatusMaxImages); -1 is unlimited",
        value: NodeValue::Int(|n| Some(n.cap.max_images)),
    },
    NodeFamily {
        name: "imagecap_node_max_images_known",
        help: "1 when the cap was read from the kubelet's configz, 0 when it is assumed",
        value: NodeValue::Int(|n| Some(i64::from(n.cap.max_images_source == CapSource::Kubelet))),
    },
    NodeFamily {
        name: "imagecap_node_images_cap_ratio",
        help: "Images reported divided by the cap; 0 when unlimited",
        value: NodeValue::Float(|n| Some(n.cap.cap_ratio)),
    },
    NodeFamily {
        name: "imagecap_node_at_cap",
        help: "1 when the cap is positive and the node reports that many images or more",
        value: NodeValue::Int(|n| Some(i64::from(n.cap.at_cap))),
    },
    NodeFamily {
        name: "imagecap_node_image_size_bytes",
        help: "Sum of sizeBytes of the images the node reports",
        value: NodeValue::Int(|n| Some(saturating_i64(n.cap.image_size_bytes))),
    },
    NodeFamily {
        name: "imagecap_node_ephemeral_storage_capacity_bytes",
        help: "status.capacity ephemeral-storage of the node",
        value: NodeValue::Int(|n| {
            n.storage
                .ephemeral_storage_capacity_bytes
                .map(saturating_i64)
        }),
    },
    NodeFamily {
        name: "imagecap_node_ephemeral_storage_allocatable_bytes",
        help: "status.allocatable ephemeral-storage of the node",
        value: NodeValue::Int(|n| {
            n.storage
                .ephemeral_storage_allocatable_bytes
                .map(saturating_i64)
        }),
    },
    NodeFamily {
        name: "imagecap_node_recommended_max_images",
        help: "Suggested nodeStatusMaxImages: ephemeral storage capacity in GB divided by 3, \
               rounded up",
        value: NodeValue::Int(|n| n.storage.recommended_max_images.map(saturating_i64)),
    },
    NodeFamily {
        name: "imagecap_node_prepull_missing_images",
        help: "Wanted images an eligible node does not report, by state: absent (under its \
               cap; at it, larger than the smallest image listed or not in its runtime), \
               unlistable (at its cap, smaller than the smallest image listed: never listable \
               there), hidden (at its cap and in its runtime), unverifiable (at its cap, size \
               unknown, no node-agent report)",
        value: NodeValue::ByState(|n, emit| {
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
    NodeFamily {
        name: "imagecap_node_prepull_image_missing",
        help: "1 for each wanted image an eligible node does not report, with its state",
        value: NodeValue::ByImage(|n, emit| {
            if n.prepull.eligible {
                for m in &n.prepull.missing {
                    let labels = MissingImageLabels {
                        image: m.image.clone(),
                        state: m.state.as_str(),
                    };
                    emit(labels, 1);
                }
            }
        }),
    },
    NodeFamily {
        name: "imagecap_node_agent_up",
        help: "1 when the node has a fresh report from its node agent, 0 when not (only with \
               --agents)",
        value: NodeValue::Int(|n| n.runtime.agent_up.map(i64::from)),
    },
    NodeFamily {
        name: "imagecap_node_runtime_images",
        help: "Images the container runtime holds on the node, from its node agent",
        value: NodeValue::Int(|n| n.runtime.runtime_images.map(i64::from)),
    },
    NodeFamily {
        name: "imagecap_node_hidden_images",
        help: "Runtime images the API does not report because of the cap (0 under the cap), \
               from the node agent",
        value: NodeValue::Int(|n| n.runtime.hidden_images.map(i64::from)),
    },
    NodeFamily {
        name: "imagecap_node_image_fs_used_bytes",
        help: "Bytes used on the node's image filesystem (kubelet stats/summary \
               node.runtime.imageFs)",
        value: NodeValue::Int(|n| n.kubelet.image_fs_used_bytes.map(saturating_i64)),
    },
    NodeFamily {
        name: "imagecap_node_image_fs_capacity_bytes",
        help: "Size of the node's image filesystem (kubelet stats/summary node.runtime.imageFs)",
        value: NodeValue::Int(|n| n.kubelet.image_fs_capacity_bytes.map(saturating_i64)),
    },
    NodeFamily {
        name: "imagecap_node_image_gc_high_threshold_ratio",
        help: "Image filesystem use at which the kubelet starts image garbage collection \
               (configz imageGCHighThresholdPercent / 100)",
        value: NodeValue::Float(|n| n.kubelet.image_gc_high_threshold_ratio),
    },
    NodeFamily {
        name: "imagecap_node_image_gc_low_threshold_ratio",
        help: "Image filesystem use the kubelet's image garbage collection frees down to \
               (configz imageGCLowThresholdPercent / 100)",
        value: NodeValue::Float(|n| n.kubelet.image_gc_low_threshold_ratio),
    },
];

/// One series per wanted image (per image and source for the info family).
pub const IMAGE_FAMILIES: &[FamilySpec<ImageReport>] = &[
    FamilySpec {
        name: "imagecap_prepull_image_nodes",
        help: "Nodes eligible for the wanted image that report it",
        samples: Samples::Int(|i, emit| emit(vec![("image", i.image.clone())], i64::from(i.nodes))),
    },
    FamilySpec {
        name: "imagecap_prepull_image_eligible_nodes",
        help: "Nodes eligible for the wanted image: where the sources that want it want it",
        samples: Samples::Int(|i, emit| {
            emit(
                vec![("image", i.image.clone())],
                i64::from(i.eligible_nodes),
            )
        }),
    },
    FamilySpec {
        name: "imagecap_wanted_image_info",
        help: "1 for each wanted image and each source that wants it",
        samples: Samples::Int(|i, emit| {
            for source in &i.sources {
                emit(
                    vec![("image", i.image.clone()), ("source", source.to_string())],
                    1,
                );
            }
        }),
    },
];

/// One series per source of wanted images.
pub const SOURCE_FAMILIES: &[FamilySpec<SourceReport>] = &[
    FamilySpec {
        name: "imagecap_wanted_source_up",
        help: "1 when the source's last read succeeded; a source that fails keeps its last list",
        samples: Samples::Int(|s, emit| {
            emit(vec![("source", s.source.to_string())], i64::from(s.up))
        }),
    },
    FamilySpec {
        name: "imagecap_wanted_source_last_success_timestamp_seconds",
        help: "Unix time of the source's last successful read",
        samples: Samples::Float(|s, emit| {
            if let Some(t) = s.last_success_seconds {
                emit(vec![("source", s.source.to_string())], t);
            }
        }),
    },
    FamilySpec {
        name: "imagecap_wanted_source_images",
        help: "Wanted images the source contributes",
        samples: Samples::Int(|s, emit| {
            emit(vec![("source", s.source.to_string())], i64::from(s.images))
        }),
    },
    FamilySpec {
        name: "imagecap_wanted_source_dropped_images",
        help: "Image references the source's last read listed past the cap on the images one \
               source may contribute, not wanted",
        samples: Samples::Int(|s, emit| {
            emit(
                vec![("source", s.source.to_string())],
                i64::try_from(s.dropped_images).unwrap_or(i64::MAX),
            )
        }),
    },
    FamilySpec {
        name: "imagecap_prepull_loop_pairs",
        help: "Eligible (node, wanted image) pairs at the node's cap where the image is hidden \
               or unlistable: pulls the prepuller schedules again on every pass, for nothing",
        samples: Samples::Int(|s, emit| {
            emit(
                vec![("source", s.source.to_string())],
                i64::from(s.loop_pairs),
            )
        }),
    },
];

/// Nublado's spawner menu; no series without a Nublado source that has answered.
pub const MENU_FAMILIES: &[FamilySpec<MenuReport>] = &[
    FamilySpec {
        name: "imagecap_menu_images",
        help: "Images Nublado prepulls, by where they stand with its spawner menu: shown, \
               hidden_by_cap (every node missing it is at its cap and holds it hidden or can \
               never list it), maybe_hidden_by_cap (at the cap, some unverifiable), pulling",
        samples: Samples::Int(|m, emit| {
            for &state in MenuState::ALL {
                emit(
                    vec![("state", state.to_string())],
                    i64::from(m.count(state)),
                );
            }
        }),
    },
    FamilySpec {
        name: "imagecap_menu_image_hidden",
        help: "1 for each image the spawner menu leaves out because of the cap, for sure \
               (hidden_by_cap) or maybe (maybe_hidden_by_cap)",
        samples: Samples::Int(|m, emit| {
            for h in &m.hidden {
                emit(
                    vec![("image", h.image.clone()), ("state", h.state.to_string())],
                    1,
                );
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
        samples: Samples::Int(|r, emit| emit(vec![], i64::from(r.eligible_nodes))),
    },
    FamilySpec {
        name: "imagecap_nodes",
        help: "Nodes known",
        samples: Samples::Int(|r, emit| emit(vec![], r.nodes.len() as i64)),
    },
];

/// A gauge's value type, with the gauge that holds it.
trait GaugeValue: Copy {
    type Gauge: Default + EncodeMetric + TypedMetric + Debug + Send + Sync + 'static;
    fn set(gauge: &Self::Gauge, value: Self);
}

impl GaugeValue for i64 {
    type Gauge = Gauge;
    fn set(gauge: &Gauge, value: i64) {
        gauge.set(value);
    }
}

impl GaugeValue for f64 {
    type Gauge = FloatGauge;
    fn set(gauge: &FloatGauge, value: f64) {
        gauge.set(value);
    }
}

/// Registers in `registry` a gauge family of the samples `read` emits.
fn register<S, V: GaugeValue>(
    registry: &mut Registry,
    name: &'static str,
    help: &'static str,
    read: impl FnOnce(&mut dyn FnMut(S, V)),
) where
    S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    let family = Family::<S, V::Gauge>::default();
    read(&mut |labels, value| V::set(&family.get_or_create(&labels), value));
    registry.register(name, help, family);
}

/// Registers `specs` in `registry`, with the samples of every item of `items`.
pub(crate) fn register_all<T>(registry: &mut Registry, specs: &[FamilySpec<T>], items: &[T]) {
    for spec in specs {
        let (name, help) = (spec.name, spec.help);
        match spec.samples {
            Samples::Int(read) => register(registry, name, help, |emit| {
                items.iter().for_each(|item| read(item, emit))
            }),
            Samples::Float(read) => register(registry, name, help, |emit| {
                items.iter().for_each(|item| read(item, emit))
            }),
        }
    }
}

/// Registers a per-node family in `registry`: the samples `read` emits for
/// each of `nodes`, each series labelled with its node, then with its own labels.
fn register_per_node<E, V: GaugeValue>(
    registry: &mut Registry,
    family: &NodeFamily,
    nodes: &[NodeReport],
    read: impl Fn(&NodeReport, &mut dyn FnMut(E, V)),
) where
    E: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    register(registry, family.name, family.help, |emit| {
        for n in nodes {
            let node = NodeLabel {
                node: n.name.clone(),
            };
            read(n, &mut |own: E, value| emit((node.clone(), own), value));
        }
    });
}

/// Registers [`NODE_FAMILIES`] in `registry`, with the series of every node.
fn register_nodes(registry: &mut Registry, nodes: &[NodeReport]) {
    for f in NODE_FAMILIES {
        match f.value {
            NodeValue::Int(read) => register_per_node(registry, f, nodes, |n, emit| {
                read(n).into_iter().for_each(|v| emit(NoOwnLabel, v))
            }),
            NodeValue::Float(read) => register_per_node(registry, f, nodes, |n, emit| {
                read(n).into_iter().for_each(|v| emit(NoOwnLabel, v))
            }),
            NodeValue::ByState(read) => register_per_node(registry, f, nodes, read),
            NodeValue::ByImage(read) => register_per_node(registry, f, nodes, read),
        }
    }
}

/// The report families for one report.
pub(crate) fn report_registry(report: &Report) -> Registry {
    let mut r = Registry::default();
    register_nodes(&mut r, &report.nodes);
    register_all(&mut r, IMAGE_FAMILIES, &report.images);
    register_all(&mut r, SOURCE_FAMILIES, &report.sources);
    register_all(&mut r, CLUSTER_FAMILIES, std::slice::from_ref(report));
    if let Some(menu) = &report.menu {
        register_all(&mut r, MENU_FAMILIES, std::slice::from_ref(menu));
    }
    r
}
