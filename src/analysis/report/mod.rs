//! All node summaries -> the report that `/metrics` and `check` both show.
//!
//! [`analyze`] builds it in phases: the wanted images (the sources' groups and the
//! configuration's patterns resolved against the nodes), then one report per
//! node, then from their counts the per-image and per-source reports and
//! Nublado's menu.

mod counts;
mod images;
mod incremental;
mod inputs;
mod node;
mod presence;
mod sources;
mod wanted_images;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use super::verdict::{MissingImage, MissingState};
pub use images::ImageReport;
pub use incremental::{Analysis, Inputs};
pub use inputs::{Assumptions, NodeExtra, NodeExtras, SourceState};
pub use node::{
    CapReport, CapSource, KUBELET_DEFAULT_MAX_IMAGES, KubeletReport, NEAR_CAP_RATIO, NodeReport,
    NodeStatus, PrepullReport, RuntimeReport, StorageReport, cap_in_force, recommended_max_images,
};
pub use sources::SourceReport;

use super::menu::{MenuReport, menu_report};
use super::node::NodeSummary;
use super::wanted::{WantSource, Wanted};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub nodes: Vec<NodeReport>,
    pub images: Vec<ImageReport>,
    /// Nodes eligible for at least one wanted image.
    pub eligible_nodes: u32,
    pub sources: Vec<SourceReport>,
    /// Nublado's spawner menu; only with a Nublado source that has answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub menu: Option<MenuReport>,
}

impl Report {
    /// Nodes at their cap, or wanted images missing: what `check` exits 1 for.
    pub fn has_findings(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.cap.at_cap || !n.prepull.missing_images.is_empty())
    }
}

/// The analysis of all nodes, sorted by name; images sorted by reference.
pub fn analyze<'a>(
    summaries: impl IntoIterator<Item = &'a NodeSummary>,
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
    assume: Assumptions,
    extras: &NodeExtras,
) -> Report {
    let nodes: Vec<&NodeSummary> = summaries.into_iter().collect();
    let inputs = Inputs {
        wanted,
        sources,
        assume,
        extras,
    };
    Analysis::new(&nodes, inputs).report(None, inputs)
}

/// Nublado's spawner menu as the nodes' missing images leave it; none without a
/// Nublado source that has answered.
fn menu(sources: &BTreeMap<WantSource, SourceState>, nodes: &[NodeReport]) -> Option<MenuReport> {
    let menu = sources.get(&WantSource::Nublado)?.menu.as_deref()?;
    let missing: Vec<(&str, &[MissingImage])> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.prepull.missing.as_slice()))
        .collect();
    Some(menu_report(menu, &missing))
}
