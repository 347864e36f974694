//! One report per wanted image: who wants it, and on how many of the nodes
//! eligible for it it is.

use super::counts::Counts;
use super::wanted_images::WantedSet;
use crate::analysis::verdict::WantedName;
use crate::analysis::wanted::WantSource;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub image: WantedName,
    /// Who wants it.
    pub sources: Vec<WantSource>,
    /// Eligible nodes that report the image.
    pub nodes: u32,
    /// Nodes eligible for this image.
    pub eligible_nodes: u32,
}

/// One report per wanted image: who wants it, the nodes eligible for it and
/// those of them that report it.
pub(super) fn image_reports(set: &WantedSet, counts: &Counts) -> Vec<ImageReport> {
    set.images
        .iter()
        .enumerate()
        .map(|(i, w)| ImageReport {
            image: set.names[i].clone(),
            sources: w.sources.iter().copied().collect(),
            nodes: counts.present_on[i],
            eligible_nodes: counts.eligible_on[i],
        })
        .collect()
}
