//! imagecap-exporter: how close each node is to the kubelet's `nodeStatusMaxImages`
//! cap, and which wanted (prepulled) images nodes fail to report.
//!
//! The flow, module by module:
//! - inputs: [`source`] (the API server, a nodes file, the kubelets, the node agents), set
//!   up from [`cli`] flags and the [`config`] file;
//! - [`store`]: the current node summaries and the cached report;
//! - [`analysis`]: pure functions, node data in, summaries and reports out;
//! - outputs: [`metrics`] (every metric family), [`serve`] (the HTTP side) and
//!   [`check`] (the report printed once);
//! - [`agent`]: the per-node process that asks the container runtime over CRI.

pub mod agent;
pub mod analysis;
pub mod check;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod process;
pub mod serve;
pub mod source;
pub mod store;
pub mod sys;
pub mod text;
pub mod version;
