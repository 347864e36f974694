//! Node reports for the tests of what shows them (`/metrics`, `check`'s table,
//! the status page): a builder that starts from an eligible node with 1 TiB of
//! ephemeral storage and the default cap, and changes what a test needs.

use super::{
    CapReport, CapSource, ImageReport, MissingImage, MissingState, NodeReport, PrepullReport,
    Report, StorageReport, recommended_max_images,
};

/// Builds a [`NodeReport`]; [`node`] starts one.
pub(crate) struct NodeBuilder(NodeReport);

/// An eligible node named `name` reporting `images` entries under a cap of
/// `max_images` (-1: unlimited) from the default, with 1 TiB of ephemeral
/// storage, no images missing and nothing known from its runtime or kubelet.
pub(crate) fn node(name: &str, images: u32, max_images: i64) -> NodeBuilder {
    NodeBuilder(NodeReport {
        name: name.into(),
        cap: CapReport {
            image_count: images,
            max_images,
            max_images_source: CapSource::Default,
            cap_ratio: if max_images > 0 {
                f64::from(images) / max_images as f64
            } else {
                0.0
            },
            at_cap: max_images > 0 && i64::from(images) >= max_images,
            image_size_bytes: 0,
        },
        prepull: PrepullReport {
            eligible: true,
            ..PrepullReport::default()
        },
        ..NodeReport::default()
    })
    .ephemeral_storage(1 << 40)
}

impl NodeBuilder {
    /// Where the cap comes from.
    pub(crate) fn cap_source(mut self, source: CapSource) -> NodeBuilder {
        self.0.cap.max_images_source = source;
        self
    }

    /// The sum of the sizes of the images the node reports.
    pub(crate) fn image_size_bytes(mut self, bytes: u64) -> NodeBuilder {
        self.0.cap.image_size_bytes = bytes;
        self
    }

    /// The ephemeral storage capacity, and the cap it suggests.
    pub(crate) fn ephemeral_storage(mut self, capacity_bytes: u64) -> NodeBuilder {
        self.0.storage = StorageReport {
            ephemeral_storage_capacity_bytes: Some(capacity_bytes),
            ephemeral_storage_allocatable_bytes: None,
            recommended_max_images: Some(recommended_max_images(capacity_bytes)),
        };
        self
    }

    /// Wanted images the node does not report, all in `state`, after those
    /// given before.
    pub(crate) fn missing(mut self, images: &[&str], state: MissingState) -> NodeBuilder {
        let mut missing = std::mem::take(&mut self.0.prepull.missing);
        missing.extend(images.iter().map(|image| MissingImage {
            image: (*image).into(),
            state,
        }));
        self.0.prepull.set_missing(missing);
        self
    }

    pub(crate) fn build(self) -> NodeReport {
        self.0
    }
}

/// A report of `nodes` and `images`, the eligible nodes counted, with no sources
/// and no menu.
pub(crate) fn report(nodes: Vec<NodeReport>, images: Vec<ImageReport>) -> Report {
    let eligible = nodes.iter().filter(|n| n.prepull.eligible).count();
    Report {
        eligible_nodes: u32::try_from(eligible).unwrap_or(u32::MAX),
        nodes,
        images,
        sources: vec![],
        menu: None,
    }
}
