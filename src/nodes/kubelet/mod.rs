//! What each kubelet says of itself, through the API server proxy (RBAC `get` on
//! `nodes/proxy`): the settings it runs with (`/api/v1/nodes/{name}/proxy/configz`:
//! the cap in force and the image GC thresholds) and its image filesystem's use
//! (`/api/v1/nodes/{name}/proxy/stats/summary`, the Summary API).
//!
//! A few requests at a time, every node on an interval and new nodes as they
//! appear. A node whose read fails keeps what was known (configz) or loses it
//! (stats, which go stale); the failure is counted and logged, and the other
//! nodes go on.
//!
//! [`wire`] decodes the answers.

pub mod wire;

use self::wire::{ConfigzError, SummaryError, parse_configz, parse_stats_summary};
use super::{About, Loudness, report_failure};
use crate::client::kube_error::OneLine;
use crate::metrics::{Failure, Metrics, SourceErrorKind};
use crate::store::Store;
use futures::StreamExt;
use kube::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which kubelet endpoint to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `configz`: `nodeStatusMaxImages`, `imageGC{High,Low}ThresholdPercent`.
    Configz,
    /// `stats/summary`: `node.runtime.imageFs`.
    StatsSummary,
}

impl Endpoint {
    fn path(self, node: &str) -> String {
        match self {
            Endpoint::Configz => format!("/api/v1/nodes/{node}/proxy/configz"),
            Endpoint::StatsSummary => format!("/api/v1/nodes/{node}/proxy/stats/summary"),
        }
    }

    fn error_kind(self) -> SourceErrorKind {
        match self {
            Endpoint::Configz => SourceErrorKind::Configz,
            Endpoint::StatsSummary => SourceErrorKind::KubeletStats,
        }
    }

    /// What a failure means, for log lines.
    pub fn what(self) -> &'static str {
        match self {
            Endpoint::Configz => "cannot read the kubelet's configz, assuming the default cap",
            Endpoint::StatsSummary => "cannot read the kubelet's stats/summary",
        }
    }

    /// Parses an answer and records it for the node.
    fn apply(self, store: &Store, node: &str, body: &[u8]) -> Result<(), Fault> {
        match self {
            Endpoint::Configz => {
                store.set_kubelet_settings(node, Some(parse_configz(body)?));
            }
            Endpoint::StatsSummary => store.set_image_fs(node, Some(parse_stats_summary(body)?)),
        }
        Ok(())
    }

    /// What is forgotten when a read fails: a kubelet's settings rarely change and
    /// stay; disk use is only worth showing while it is current.
    fn forget(self, store: &Store, node: &str) {
        if self == Endpoint::StatsSummary {
            store.set_image_fs(node, None);
        }
    }
}

#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// Time between reads of every node.
    pub interval: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Limit for one request.
    pub timeout: Duration,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            interval: Duration::from_secs(600),
            concurrency: 4,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A failed read of one kubelet's endpoint, counted under the endpoint's kind.
#[derive(Debug, thiserror::Error)]
#[error("{fault}")]
pub struct KubeletError {
    pub endpoint: Endpoint,
    pub fault: Fault,
}

impl Failure for KubeletError {
    fn kind(&self) -> SourceErrorKind {
        self.endpoint.error_kind()
    }
}

/// What went wrong reading a kubelet's endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{}{hint}", OneLine(.0), hint = hint(.0))]
    Api(kube::Error),
    #[error("timed out: no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Request(http::Error),
    #[error(transparent)]
    Configz(#[from] ConfigzError),
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            " (RBAC: reading kubelets through the API server needs get on nodes/proxy; \
             with the Helm chart, set kubeletConfigz.enabled or kubeletStats.enabled)"
        }
        _ => "",
    }
}

/// Reads one node's endpoint and records the answer in the store.
pub async fn read(
    client: &Client,
    store: &Store,
    endpoint: Endpoint,
    node: &str,
    timeout: Duration,
) -> Result<(), KubeletError> {
    let read = async {
        let request = http::Request::get(endpoint.path(node))
            .body(Vec::new())
            .map_err(Fault::Request)?;
        let body = tokio::time::timeout(timeout, client.request_text(request))
            .await
            .map_err(|_| Fault::Timeout(timeout))?
            .map_err(Fault::Api)?;
        endpoint.apply(store, node, body.as_bytes())
    };
    read.await.map_err(|fault| KubeletError { endpoint, fault })
}

/// Reads the given nodes, `concurrency` at a time, recording each answer.
pub async fn read_all(
    client: &Client,
    store: &Store,
    endpoint: Endpoint,
    nodes: Vec<String>,
    opts: &KubeletOptions,
) -> Vec<(String, Result<(), KubeletError>)> {
    futures::stream::iter(nodes)
        .map(|name| async move {
            let r = read(client, store, endpoint, &name, opts.timeout).await;
            (name, r)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await
}

/// Keeps the store's view of one kubelet endpoint current until shutdown.
pub async fn run(
    client: Client,
    endpoint: Endpoint,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    opts: KubeletOptions,
    shutdown: CancellationToken,
) {
    let mut attempted: HashSet<String> = HashSet::new();
    // The last error logged per node, so a node failing the same way every
    // interval is logged once at warn level.
    let mut last_error: HashMap<String, String> = HashMap::new();
    let mut added = store.nodes_added();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The interval's first tick is at once: taken before a change of the node
        // list that is also ready, so that the nodes already known are read once,
        // not once as new and again as everyone.
        let everyone = tokio::select! {
            biased;
            _ = tick.tick() => true,
            r = added.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            _ = shutdown.cancelled() => return,
        };
        let names: Vec<String> = store
            .node_names()
            .into_iter()
            .filter(|n| everyone || !attempted.contains(n))
            .collect();
        if names.is_empty() {
            continue;
        }
        let results = tokio::select! {
            r = read_all(&client, &store, endpoint, names, &opts) => r,
            _ = shutdown.cancelled() => return,
        };
        let (mut ok, mut failed) = (0, 0);
        for (name, result) in results {
            attempted.insert(name.clone());
            match result {
                Ok(()) => {
                    ok += 1;
                    last_error.remove(&name);
                }
                Err(e) => {
                    failed += 1;
                    let msg = e.to_string();
                    let (loudness, what) = if last_error.get(&name) != Some(&msg) {
                        (Loudness::Warn, endpoint.what())
                    } else {
                        (Loudness::Debug, "still failing")
                    };
                    let forget = || endpoint.forget(&store, &name);
                    report_failure(&metrics, &e, forget, loudness, About::Node(&name), what);
                    last_error.insert(name, msg);
                }
            }
        }
        // Which round it was: every node on the interval, or the new ones.
        tracing::debug!(?endpoint, everyone, ok, failed, "read kubelets");
        let live: HashSet<String> = store.node_names().into_iter().collect();
        attempted.retain(|n| live.contains(n));
        last_error.retain(|n, _| live.contains(n));
    }
}
