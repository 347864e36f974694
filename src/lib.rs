//! imagecap-exporter: how close each node is to the kubelet's `nodeStatusMaxImages`
//! cap, and which wanted (prepulled) images nodes fail to report.

pub mod analysis;
