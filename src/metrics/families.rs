//! The report families: each a name, a help text and the function that reads its
//! samples from the current report, in the style of kube-state-metrics' family
//! generators. They are encoded afresh from each new report, so the series of a
//! node that is gone disappear with it and no stale series can linger.

use crate::analysis::cluster::{
    CapSource, ImageReport, MissingState, NodeReport, Report, SourceReport,
};
use crate::analysis::menu::{MenuReport, MenuState};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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

fn node(n: &NodeReport) -> Labels {
    vec![("node", n.name.clone())]
}

fn node_and(n: &NodeReport, key: &'static str, value: &str) -> Labels {
    vec![("node", n.name.clone()), (key, value.to_string())]
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The node's sample of a value that may be unknown: none when it is.
fn known(n: &NodeReport, value: Option<u64>, emit: &mut dyn FnMut(Labels, i64)) {
    if let Some(v) = value {
        emit(node(n), saturating_i64(v));
    }
}

/// [`known`] for a ratio.
fn known_ratio(n: &NodeReport, value: Option<f64>, emit: &mut dyn FnMut(Labels, f64)) {
    if let Some(v) = value {
        emit(node(n), v);
    }
}

/// One series per node (per node and label value for the prepull families).
pub const NODE_FAMILIES: &[FamilySpec<NodeReport>] = &[
    FamilySpec {
        name: "imagecap_node_images",
        help: "Entries the node reports in status.images",
        samples: Samples::Int(|n, emit| emit(node(n), i64::from(n.cap.image_count))),
    },
    FamilySpec {
        name: "imagecap_node_max_images",
        help: "The cap in force (nodeStatusMaxImages); -1 is unlimited",
        samples: Samples::Int(|n, emit| emit(node(n), n.cap.max_images)),
    },
    FamilySpec {
        name: "imagecap_node_max_images_known",
        help: "1 when the cap was read from the kubelet's configz, 0 when it is assumed",
        samples: Samples::Int(|n, emit| {
            emit(
                node(n),
                i64::from(n.cap.max_images_source == CapSource::Kubelet),
            )
        }),
    },
    FamilySpec {
        name: "imagecap_node_images_cap_ratio",
        help: "Images reported divided by the cap; 0 when unlimited",
        samples: Samples::Float(|n, emit| emit(node(n), n.cap.cap_ratio)),
    },
    FamilySpec {
        name: "imagecap_node_at_cap",
        help: "1 when the cap is positive and the node reports that many images or more",
        samples: Samples::Int(|n, emit| emit(node(n), i64::from(n.cap.at_cap))),
    },
    FamilySpec {
        name: "imagecap_node_image_size_bytes",
        help: "Sum of sizeBytes of the images the node reports",
        samples: Samples::Int(|n, emit| emit(node(n), saturating_i64(n.cap.image_size_bytes))),
    },
    FamilySpec {
        name: "imagecap_node_ephemeral_storage_capacity_bytes",
        help: "status.capacity ephemeral-storage of the node",
        samples: Samples::Int(|n, emit| known(n, n.storage.ephemeral_storage_capacity_bytes, emit)),
    },
    FamilySpec {
        name: "imagecap_node_ephemeral_storage_allocatable_bytes",
        help: "status.allocatable ephemeral-storage of the node",
        samples: Samples::Int(|n, emit| {
            known(n, n.storage.ephemeral_storage_allocatable_bytes, emit)
        }),
    },
    FamilySpec {
        name: "imagecap_node_recommended_max_images",
        help: "Suggested nodeStatusMaxImages: ephemeral storage capacity in GB divided by 3, \
               rounded up",
        samples: Samples::Int(|n, emit| known(n, n.storage.recommended_max_images, emit)),
    },
    FamilySpec {
        name: "imagecap_node_prepull_missing_images",
        help: "Wanted images an eligible node does not report, by state: absent (under its \
               cap; at it, larger than the smallest image listed or not in its runtime), \
               unlistable (at its cap, smaller than the smallest image listed: never listable \
               there), hidden (at its cap and in its runtime), unverifiable (at its cap, size \
               unknown, no node-agent report)",
        samples: Samples::Int(|n, emit| {
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
                emit(node_and(n, "state", state.as_str()), count as i64);
            }
        }),
    },
    FamilySpec {
        name: "imagecap_node_prepull_image_missing",
        help: "1 for each wanted image an eligible node does not report, with its state",
        samples: Samples::Int(|n, emit| {
            if n.prepull.eligible {
                for m in &n.prepull.missing {
                    emit(
                        vec![
                            ("node", n.name.clone()),
                            ("image", m.image.clone()),
                            ("state", m.state.as_str().to_string()),
                        ],
                        1,
                    );
                }
            }
        }),
    },
    FamilySpec {
        name: "imagecap_node_agent_up",
        help: "1 when the node has a fresh report from its node agent, 0 when not (only with \
               --agents)",
        samples: Samples::Int(|n, emit| known(n, n.runtime.agent_up.map(u64::from), emit)),
    },
    FamilySpec {
        name: "imagecap_node_runtime_images",
        help: "Images the container runtime holds on the node, from its node agent",
        samples: Samples::Int(|n, emit| known(n, n.runtime.runtime_images.map(u64::from), emit)),
    },
    FamilySpec {
        name: "imagecap_node_hidden_images",
        help: "Runtime images the API does not report because of the cap (0 under the cap), \
               from the node agent",
        samples: Samples::Int(|n, emit| known(n, n.runtime.hidden_images.map(u64::from), emit)),
    },
    FamilySpec {
        name: "imagecap_node_image_fs_used_bytes",
        help: "Bytes used on the node's image filesystem (kubelet stats/summary \
               node.runtime.imageFs)",
        samples: Samples::Int(|n, emit| known(n, n.kubelet.image_fs_used_bytes, emit)),
    },
    FamilySpec {
        name: "imagecap_node_image_fs_capacity_bytes",
        help: "Size of the node's image filesystem (kubelet stats/summary node.runtime.imageFs)",
        samples: Samples::Int(|n, emit| known(n, n.kubelet.image_fs_capacity_bytes, emit)),
    },
    FamilySpec {
        name: "imagecap_node_image_gc_high_threshold_ratio",
        help: "Image filesystem use at which the kubelet starts image garbage collection \
               (configz imageGCHighThresholdPercent / 100)",
        samples: Samples::Float(|n, emit| {
            known_ratio(n, n.kubelet.image_gc_high_threshold_ratio, emit)
        }),
    },
    FamilySpec {
        name: "imagecap_node_image_gc_low_threshold_ratio",
        help: "Image filesystem use the kubelet's image garbage collection frees down to \
               (configz imageGCLowThresholdPercent / 100)",
        samples: Samples::Float(|n, emit| {
            known_ratio(n, n.kubelet.image_gc_low_threshold_ratio, emit)
        }),
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

/// Registers `specs` in `registry`, with the samples of every item of `items`.
pub(crate) fn register_all<T>(registry: &mut Registry, specs: &[FamilySpec<T>], items: &[T]) {
    for spec in specs {
        match spec.samples {
            Samples::Int(read) => {
                let family = Family::<Labels, Gauge>::default();
                for item in items {
                    read(item, &mut |labels, v| {
                        family.get_or_create(&labels).set(v);
                    });
                }
                registry.register(spec.name, spec.help, family);
            }
            Samples::Float(read) => {
                let family = Family::<Labels, FloatGauge>::default();
                for item in items {
                    read(item, &mut |labels, v| {
                        family.get_or_create(&labels).set(v);
                    });
                }
                registry.register(spec.name, spec.help, family);
            }
        }
    }
}

/// The report families for one report.
pub(crate) fn report_registry(report: &Report) -> Registry {
    let mut r = Registry::default();
    register_all(&mut r, NODE_FAMILIES, &report.nodes);
    register_all(&mut r, IMAGE_FAMILIES, &report.images);
    register_all(&mut r, SOURCE_FAMILIES, &report.sources);
    register_all(&mut r, CLUSTER_FAMILIES, std::slice::from_ref(report));
    if let Some(menu) = &report.menu {
        register_all(&mut r, MENU_FAMILIES, std::slice::from_ref(menu));
    }
    r
}
