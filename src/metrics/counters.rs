//! The exporter's families kept for the life of the process: what the sources
//! count, the build information, and the Kubernetes API client's requests. Each
//! is declared here with its labels; [`super::Metrics`] registers them once.

use super::Declared;
use crate::analysis::wants::SourceField;
use crate::analysis::{InvalidField, WantSource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const SOURCE_ERRORS: Declared = Declared::counter(
    "imagecap_source_errors",
    "Failed lists, watches and reads of node data, by kind",
);

pub const INVALID_NODE_DATA: Declared = Declared::counter(
    "imagecap_invalid_node_data",
    "Malformed node fields seen (bad quantity, bad image name, ...), by field",
);

pub const INVALID_SOURCE_DATA: Declared = Declared::counter(
    "imagecap_invalid_source_data",
    "Malformed fields seen in the answers of the sources of wanted images (a digest \
     that is not canonical, kept as given; a reference that cannot be read), by \
     source and field",
);

pub const SOURCE_RESTARTS: Declared = Declared::counter(
    "imagecap_source_restarts",
    "Times the node source stopped unexpectedly and was restarted",
);

pub const AGENT_NAMES_DROPPED: Declared = Declared::counter(
    "imagecap_agent_names_dropped",
    "Image names in node-agent reports that could match a wanted image but were not kept, past the per-node limit",
);

pub const AGENT_CONNECTIONS_OPENED: Declared = Declared::counter(
    "imagecap_agent_connections_opened",
    "Connections opened to node agents; each is kept for the next round, so this grows \
     with new, restarted or reconnecting agents, not with rounds",
);

/// Served by the exporter and by the node agent alike.
pub const BUILD_INFO: Declared = Declared::gauge(
    "imagecap_build_info",
    "Build information; the value is always 1",
);

pub const KUBE_REQUESTS: Declared = Declared::counter(
    "imagecap_kube_requests",
    "Requests to the Kubernetes API server, by verb (list, watch, get, ...) and HTTP \
     status code (error: no response)",
);

pub const KUBE_REQUEST_DURATION: Declared = Declared::histogram(
    "imagecap_kube_request_duration_seconds",
    "Time from sending a request to the Kubernetes API server to its response \
     headers, by verb; for a watch, the time until the stream starts",
);

/// `imagecap_source_errors_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceErrorLabels {
    pub(crate) kind: super::SourceErrorKind,
}

/// `imagecap_invalid_node_data_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FieldLabels {
    pub(crate) field: InvalidField,
}

/// `imagecap_invalid_source_data_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceFieldLabels {
    pub(crate) source: WantSource,
    pub(crate) field: SourceField,
}

/// `imagecap_build_info`'s labels, as every `*_build_info` has them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabels {
    version: String,
    revision: &'static str,
    rustversion: &'static str,
}

impl VersionLabels {
    /// This build's labels, for `version`.
    pub(crate) fn new(version: &str) -> VersionLabels {
        VersionLabels {
            version: version.to_string(),
            revision: crate::version::REVISION,
            rustversion: crate::version::rust_version(crate::version::RUSTC_VERSION),
        }
    }
}

/// Registers `imagecap_build_info` for `version` in `registry`.
pub(crate) fn register_build_info(registry: &mut Registry, version: &str) {
    let build_info = Family::<VersionLabels, prometheus_client::metrics::gauge::Gauge>::default();
    build_info
        .get_or_create(&VersionLabels::new(version))
        .set(1);
    BUILD_INFO.register(registry, build_info);
}

/// `imagecap_kube_requests_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    code: String,
}

/// `imagecap_kube_request_duration_seconds`' labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// Buckets of the request duration histogram, in seconds: client-go's
/// `rest_client_request_duration_seconds` buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The Kubernetes API client's request counter and duration histogram; the
/// client's layer (`client::kubernetes`) records every request in them. Clones
/// share the same series.
#[derive(Clone, Debug)]
pub struct KubeRequests {
    total: Family<RequestLabels, Counter>,
    duration: Family<VerbLabels, Histogram, fn() -> Histogram>,
}

impl KubeRequests {
    /// Registers both families in `registry`.
    pub fn register(registry: &mut Registry) -> KubeRequests {
        let requests = KubeRequests {
            total: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        };
        KUBE_REQUESTS.register(registry, requests.total.clone());
        KUBE_REQUEST_DURATION.register(registry, requests.duration.clone());
        requests
    }

    /// Requests counted with this verb and status code.
    #[cfg(test)]
    pub fn count(&self, verb: &'static str, code: &str) -> u64 {
        self.total
            .get_or_create(&RequestLabels {
                verb,
                code: code.into(),
            })
            .get()
    }

    /// Counts one request and its time to the response headers.
    pub fn observe(&self, verb: &'static str, code: String, seconds: f64) {
        self.total
            .get_or_create(&RequestLabels { verb, code })
            .inc();
        self.duration
            .get_or_create(&VerbLabels { verb })
            .observe(seconds);
    }
}
