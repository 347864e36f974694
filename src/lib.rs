//! imagecap-exporter: how close each node is to the kubelet's `nodeStatusMaxImages`
//! cap, and which wanted (prepulled) images nodes fail to report.
//!
//! The flow, module by module:
//! - inputs: [`nodes`] (node data: the API server, a nodes file, the kubelets, the
//!   node agents) and [`prepull`] (the sources of wanted images), both talking through
//!   [`client`], set up from [`cli`] flags and the [`config`] file;
//! - [`store`]: the current node summaries and the cached report;
//! - [`analysis`]: pure functions, node data in, summaries and reports out, on top
//!   of [`decode`] (lenient JSON, quantities, list pages read item by item);
//! - outputs: [`metrics`] (every metric family), [`serve`] (the HTTP side) and
//!   [`check`] (the report printed once);
//! - [`agent`]: the per-node process that asks the container runtime over CRI.

pub mod agent;
pub mod analysis;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod decode;
pub mod metrics;
pub mod nodes;
pub mod prepull;
pub mod process;
pub mod serve;
pub mod store;
pub mod sys;
pub mod text;
pub mod version;
