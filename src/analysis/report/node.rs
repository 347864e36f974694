//! One node's report: the images it reports against its cap, its storage, the
//! wanted images it lacks, what its runtime and kubelet say; and how it is built
//! from the node's summary, what else is known of it and the wanted images.

use super::inputs::{Assumptions, NodeExtra};
use super::presence::{Present, SizeBook};
use super::wanted_images::{WantedImage, WantedSet};
use crate::analysis::eligibility::NotEligible;
use crate::analysis::kubelet_settings::ImageFs;
use crate::analysis::node::NodeSummary;
use crate::analysis::plan::PlanSummary;
use crate::analysis::runtime::RuntimeSummary;
use crate::analysis::verdict::{MissingImage, MissingState, WantedName};
use crate::analysis::wanted::WantSource;
use serde::Serialize;
use std::collections::BTreeMap;

/// The kubelet's default `nodeStatusMaxImages`.
pub const KUBELET_DEFAULT_MAX_IMAGES: i64 = 50;

/// Where the cap in force comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapSource {
    /// Read from the kubelet's configuration (configz).
    Kubelet,
    /// The configured default (the kubelet's own, 50, unless changed).
    #[default]
    Default,
    /// The node reports more images than the default, so its kubelet must run with
    /// a larger cap or none: treated as unlimited.
    Inferred,
}

/// Share of the cap from which a node counts as near it.
pub const NEAR_CAP_RATIO: f64 = 0.9;

/// One word for a node, most urgent first: what the status page, `check`'s table
/// and anything else that ranks nodes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Reports as many images as its cap: images may be hidden.
    AtCap,
    /// At [`NEAR_CAP_RATIO`] of a positive cap or more.
    NearCap,
    /// Not eligible for prepulling (outside the selector, or cordoned).
    NotEligible,
    Ok,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::AtCap => "at cap",
            NodeStatus::NearCap => "near cap",
            NodeStatus::NotEligible => "not eligible",
            NodeStatus::Ok => "ok",
        }
    }
}

/// One node as `/metrics`, the status page and `check` show it. Each part is a
/// subject of its own; in JSON their fields stand flat, in this order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub name: String,
    #[serde(flatten)]
    pub cap: CapReport,
    #[serde(flatten)]
    pub storage: StorageReport,
    #[serde(flatten)]
    pub prepull: PrepullReport,
    pub invalid_fields: u32,
    #[serde(flatten)]
    pub runtime: RuntimeReport,
    #[serde(flatten)]
    pub kubelet: KubeletReport,
    /// The counts of the node agent's pruning plan, when it prunes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PlanSummary>,
}

/// The images the node reports in `status.images`, and the cap on them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapReport {
    /// Entries the node reports in `status.images`.
    #[serde(rename = "images")]
    pub image_count: u32,
    /// The cap in force; -1 is unlimited.
    pub max_images: i64,
    pub max_images_source: CapSource,
    /// images / cap; 0 when unlimited.
    pub cap_ratio: f64,
    pub at_cap: bool,
    pub image_size_bytes: u64,
}

/// The node's ephemeral storage, and the cap it suggests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    pub ephemeral_storage_capacity_bytes: Option<u64>,
    pub ephemeral_storage_allocatable_bytes: Option<u64>,
    pub recommended_max_images: Option<u64>,
}

/// The wanted images on the node: whether it is eligible for any, and those it
/// does not report, each with its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepullReport {
    /// Eligible for at least one wanted image (with none wanted: under the
    /// configuration's rule).
    pub eligible: bool,
    /// Why not, when not eligible: `cordoned`, `selector`, `taint k=v:effect`,
    /// or the source's own comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_eligible_reason: Option<String>,
    /// Wanted images the node is eligible for and does not report.
    pub missing_images: Vec<WantedName>,
    /// Set when `missing_images` is not empty: the most actionable of the images'
    /// states (`absent`, then `unlistable`, `hidden`, `unverifiable`).
    pub missing_state: Option<MissingState>,
    /// `missing_images`, each with its own state.
    pub missing: Vec<MissingImage>,
    /// The wanted images this node is eligible for, present or not: indexes into
    /// [`Report::images`](super::Report::images). What the node agent's pruning
    /// must never remove.
    #[serde(skip)]
    pub wanted: Vec<u32>,
}

/// What the node's runtime holds, from its node agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeReport {
    /// Images the runtime holds, from a fresh node-agent report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_images: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_image_bytes: Option<u64>,
    /// Runtime images the API does not report (0 under the cap); with a fresh
    /// agent report only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_images: Option<u32>,
    /// Whether the node has a fresh agent report; `None` when no agents are
    /// configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_up: Option<bool>,
}

/// What the node's kubelet says of its image filesystem and image garbage
/// collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletReport {
    /// The image filesystem, from the kubelet's Summary API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs_used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs_capacity_bytes: Option<u64>,
    /// The kubelet's image GC thresholds (configz), as ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_high_threshold_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_low_threshold_ratio: Option<f64>,
}

impl NodeReport {
    pub fn status(&self) -> NodeStatus {
        if self.cap.at_cap {
            NodeStatus::AtCap
        } else if self.cap.max_images > 0 && self.cap.cap_ratio >= NEAR_CAP_RATIO {
            NodeStatus::NearCap
        } else if !self.prepull.eligible {
            NodeStatus::NotEligible
        } else {
            NodeStatus::Ok
        }
    }
}

impl CapReport {
    /// The node's images against the cap in force: the kubelet's when known
    /// (`kubelet`), else `default_max_images` or what the count implies.
    pub fn new(node: &NodeSummary, kubelet: Option<i64>, default_max_images: i64) -> CapReport {
        let (max_images, max_images_source) =
            cap_in_force(node.image_count, kubelet, default_max_images);
        CapReport {
            image_count: node.image_count,
            max_images,
            max_images_source,
            cap_ratio: if max_images > 0 {
                f64::from(node.image_count) / max_images as f64
            } else {
                0.0
            },
            at_cap: max_images > 0 && i64::from(node.image_count) >= max_images,
            image_size_bytes: node.image_size_bytes,
        }
    }

    /// At the cap, or a cap of 0 (which hides every image): the node's list may
    /// leave images out, and what it lacks cannot simply be called absent.
    pub fn saturated(&self) -> bool {
        self.at_cap || self.max_images == 0
    }
}

impl StorageReport {
    pub fn new(node: &NodeSummary) -> StorageReport {
        StorageReport {
            ephemeral_storage_capacity_bytes: node.ephemeral_storage_capacity_bytes,
            ephemeral_storage_allocatable_bytes: node.ephemeral_storage_allocatable_bytes,
            recommended_max_images: node
                .ephemeral_storage_capacity_bytes
                .map(recommended_max_images),
        }
    }
}

impl PrepullReport {
    /// Sets the missing images: `missing`, and from it `missing_images` and the
    /// node's `missing_state`, the most actionable of the images' states.
    pub fn set_missing(&mut self, missing: Vec<MissingImage>) {
        self.missing_images = missing.iter().map(|m| m.image.clone()).collect();
        self.missing_state = [
            MissingState::Absent,
            MissingState::Unlistable,
            MissingState::Hidden,
            MissingState::Unverifiable,
        ]
        .into_iter()
        .find(|s| missing.iter().any(|m| m.state == *s));
        self.missing = missing;
    }
}

impl RuntimeReport {
    /// What `runtime` (a fresh agent report, if any) holds on a node with `cap`;
    /// with `agents` expected, whether there is one.
    pub fn new(runtime: Option<&RuntimeSummary>, cap: &CapReport, agents: bool) -> RuntimeReport {
        RuntimeReport {
            runtime_images: runtime.map(|rt| rt.image_count),
            runtime_image_bytes: runtime.map(|rt| rt.image_bytes),
            hidden_images: runtime.map(|rt| {
                if cap.saturated() {
                    rt.image_count.saturating_sub(cap.image_count)
                } else {
                    0
                }
            }),
            agent_up: agents.then_some(runtime.is_some()),
        }
    }
}

impl KubeletReport {
    pub fn new(extra: &NodeExtra) -> KubeletReport {
        let fs: Option<ImageFs> = extra.image_fs;
        KubeletReport {
            image_fs_used_bytes: fs.and_then(|f| f.used_bytes),
            image_fs_capacity_bytes: fs.and_then(|f| f.capacity_bytes),
            image_gc_high_threshold_ratio: extra.kubelet.and_then(|k| k.image_gc_high_ratio),
            image_gc_low_threshold_ratio: extra.kubelet.and_then(|k| k.image_gc_low_ratio),
        }
    }
}

/// The cap in force for a node reporting `image_count` entries: the kubelet's own
/// when known, else the default, unless the node reports more than the default.
pub fn cap_in_force(
    image_count: u32,
    kubelet: Option<i64>,
    default_max_images: i64,
) -> (i64, CapSource) {
    if let Some(cap) = kubelet {
        (cap, CapSource::Kubelet)
    } else if default_max_images >= 0 && i64::from(image_count) > default_max_images {
        (-1, CapSource::Inferred)
    } else {
        (default_max_images, CapSource::Default)
    }
}

/// The operators' rule of thumb: a third of the ephemeral storage in GB (10^9 bytes).
pub fn recommended_max_images(capacity_bytes: u64) -> u64 {
    capacity_bytes.div_ceil(3_000_000_000)
}

/// What one node adds to the per-image and per-source counts, besides the
/// images it is eligible for ([`PrepullReport::wanted`]).
#[derive(Default, Clone, Debug, PartialEq)]
pub(super) struct NodeTally {
    /// The wanted images the node is eligible for and reports: indexes into
    /// [`WantedSet::images`](super::wanted_images::WantedSet::images).
    pub(super) present: Vec<usize>,
    /// Its (node, wanted image) pairs of the prepull loop, by source.
    pub(super) loop_pairs: BTreeMap<WantSource, u32>,
}

impl NodeTally {
    /// Counts a (node, image) pair of the prepull loop for each source that wants
    /// the image on that node.
    fn count_loop(&mut self, w: &WantedImage, decided: &[Result<(), NotEligible>]) {
        let mut counted: Vec<WantSource> = Vec::new();
        for &(source, rule) in &w.wanted_by {
            if decided[rule].is_ok() && !counted.contains(&source) {
                counted.push(source);
                *self.loop_pairs.entry(source).or_default() += 1;
            }
        }
    }
}

/// One node as its wanted images are checked on it: every rule decided on it,
/// whether its cap hides images, and what its runtime holds.
struct NodeCheck<'a> {
    node: &'a NodeSummary,
    decided: Vec<Result<(), NotEligible>>,
    /// At its cap, or a cap of 0.
    saturated: bool,
    runtime: Option<&'a RuntimeSummary>,
}

/// One node's report, whole: its cap in force, its storage, whether it is
/// eligible (and why not), the wanted images it is eligible for and those it does
/// not report, each with its state, what its runtime and kubelet say; and what
/// the node adds to the per-image and per-source counts.
pub(super) fn node_report(
    node: &NodeSummary,
    set: &WantedSet,
    extra: &NodeExtra,
    assume: Assumptions,
    sizes: &SizeBook,
) -> (NodeReport, NodeTally) {
    let runtime = extra.runtime.as_deref();
    let cap = CapReport::new(
        node,
        extra.kubelet.map(|k| k.max_images),
        assume.default_max_images,
    );
    let facts = node.facts();
    let check = NodeCheck {
        node,
        decided: set.rules.0.iter().map(|r| r.check(&facts)).collect(),
        saturated: cap.saturated(),
        runtime,
    };
    let (prepull, tally) = prepull_report(&check, set, sizes);
    let report = NodeReport {
        name: node.name.clone(),
        storage: StorageReport::new(node),
        prepull,
        invalid_fields: node.problems.len() as u32,
        runtime: RuntimeReport::new(runtime, &cap, assume.agents),
        kubelet: KubeletReport::new(extra),
        prune: runtime.and_then(|rt| rt.prune.clone()),
        cap,
    };
    (report, tally)
}

/// The wanted images on `check`'s node: whether it is eligible for any (and why
/// not), those it is eligible for and those of them it does not report, each with
/// its state; and what it adds to the counts.
fn prepull_report(
    check: &NodeCheck,
    set: &WantedSet,
    sizes: &SizeBook,
) -> (PrepullReport, NodeTally) {
    let (wanted, missing, tally) = wanted_on(check, set, sizes);
    let decided = &check.decided;
    let eligible =
        !wanted.is_empty() || (set.images.is_empty() && decided[set.config_rule].is_ok());
    let not_eligible_reason = (!eligible)
        .then(|| {
            set.explaining
                .iter()
                .find_map(|&r| decided[r].as_ref().err())
                .map(ToString::to_string)
        })
        .flatten();
    let mut report = PrepullReport {
        eligible,
        not_eligible_reason,
        wanted,
        ..PrepullReport::default()
    };
    report.set_missing(missing);
    (report, tally)
}

/// The wanted images `check`'s node is eligible for (indexes into
/// [`WantedSet::images`]), those of them it does not report, each with its state,
/// and what it adds to the counts: the images it reports, its loop pairs.
fn wanted_on(
    check: &NodeCheck,
    set: &WantedSet,
    sizes: &SizeBook,
) -> (Vec<u32>, Vec<MissingImage>, NodeTally) {
    let node = check.node;
    let mut tally = NodeTally::default();
    let mut missing = Vec::new();
    let mut wanted_here = Vec::new();
    let present = Present::new(&node.relevant_images);
    let in_runtime = check
        .runtime
        .filter(|_| check.saturated)
        .map(|rt| Present::new(&rt.relevant_images));
    for (i, w) in set.images.iter().enumerate() {
        if !w.rules.iter().any(|&r| check.decided[r].is_ok()) {
            continue;
        }
        wanted_here.push(i as u32);
        if present.has(w) {
            tally.present.push(i);
            continue;
        }
        let state = if check.saturated {
            let held = in_runtime.as_ref().map(|rt| rt.has(w));
            let size = sizes.size(node.runtime.as_ref(), i, w);
            MissingState::decide(true, held, size, node.smallest_image_bytes)
        } else {
            MissingState::Absent
        };
        if matches!(state, MissingState::Hidden | MissingState::Unlistable) {
            tally.count_loop(w, &check.decided);
        }
        missing.push(MissingImage {
            image: set.names[i].clone(),
            state,
        });
    }
    // The tally is kept for as long as the node is unchanged: no spare room.
    tally.present.shrink_to_fit();
    (wanted_here, missing, tally)
}
