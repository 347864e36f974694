//! Talking to the cluster and to plain HTTP endpoints: the Kubernetes client with
//! its request metrics, one-line API errors, and the HTTP helpers the prepuller
//! and node-agent readers share.

pub mod http;
pub mod kept;
pub mod kube_error;
pub mod kubernetes;

pub use self::kubernetes::{BuildError, ClientOptions, build};
