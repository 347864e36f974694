//! imagecap-exporter: how close each node is to the kubelet's `nodeStatusMaxImages`
//! cap, and which wanted (prepulled) images nodes fail to report.

pub mod analysis;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod report;
pub mod source;
pub mod status_page;
pub mod sys;
pub mod web_config;
