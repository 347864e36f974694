//! What the analysis reads besides the node summaries and the configuration's
//! wanted images: what else is known of each node, the sources of wanted images
//! as they stand, and how to read it all.

use crate::analysis::kubelet_settings::{ImageFs, KubeletSettings};
use crate::analysis::menu::Menu;
use crate::analysis::runtime::RuntimeSummary;
use crate::analysis::wanted::WantGroup;
use std::sync::Arc;

/// What is known of a node besides its Node object, each part from its own
/// source: its kubelet's settings (configz), its image filesystem (the Summary
/// API) and what its runtime holds (a fresh node-agent report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeExtra {
    pub kubelet: Option<KubeletSettings>,
    pub image_fs: Option<ImageFs>,
    pub runtime: Option<Arc<RuntimeSummary>>,
}

impl NodeExtra {
    pub fn is_empty(&self) -> bool {
        *self == NodeExtra::default()
    }
}

/// [`NodeExtra`] by node name.
pub type NodeExtras = std::collections::HashMap<String, NodeExtra>;

/// How to read the inputs: the cap assumed when a kubelet's is unknown, whether
/// node agents are expected (then a node without a fresh report says so), and
/// when the configuration was read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assumptions {
    pub default_max_images: i64,
    pub agents: bool,
    /// Unix time at which the configuration was read: the last success of the
    /// `config` and `pattern` sources (none: not shown).
    pub configured_at: Option<f64>,
}

/// What the sources of wanted images provide: their groups, and how their last
/// read went (`up`, Unix time of the last success).
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    pub groups: Vec<WantGroup>,
    pub up: bool,
    pub last_success_seconds: Option<f64>,
    /// References dropped past the per-source cap in the last successful read.
    pub dropped_images: u64,
    /// Nublado's spawner menu, from its last successful read.
    pub menu: Option<Arc<Menu>>,
}
