//! What the analysis knows of a kubelet beyond its node object: the settings it
//! runs with (the cap in force, the image GC thresholds) and its image
//! filesystem's use. `nodes::kubelet` reads them from each kubelet.

/// What the analysis uses of a kubelet's configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KubeletSettings {
    /// `nodeStatusMaxImages`: -1 (no cap), 0 or a positive cap.
    pub max_images: i64,
    /// `imageGCHighThresholdPercent` / 100: disk use at which image garbage
    /// collection starts.
    pub image_gc_high_ratio: Option<f64>,
    /// `imageGCLowThresholdPercent` / 100: disk use it collects down to.
    pub image_gc_low_ratio: Option<f64>,
}

/// The image filesystem's use, as the kubelet's Summary API reports it
/// (`node.runtime.imageFs`); at least one of the used and capacity bytes is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageFs {
    pub used_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}
