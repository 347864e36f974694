//! Pure analysis: node data in, summaries and reports out. No I/O here.

pub mod cluster;
pub mod intern;
pub mod kubelet;
pub mod lenient;
pub mod node;
pub mod quantity;
pub mod reference;
pub mod selector;
pub mod wanted;

pub use cluster::{Report, analyze};
pub use node::{NodeSummary, NodeView, summarize};
pub use wanted::Wanted;
