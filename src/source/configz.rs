//! The cap each kubelet really runs with, from `GET
//! /api/v1/nodes/{name}/proxy/configz` (needs RBAC `get` on `nodes/proxy`).
//!
//! A few requests at a time, every node on a slow interval and new nodes as they
//! appear. A node whose configz fails keeps the assumed cap; the failure is
//! counted and logged, and the other nodes go on.

use crate::analysis::cluster::KubeletCaps;
use crate::analysis::kubelet::parse_configz;
use crate::metrics::Metrics;
use crate::store::Store;
use futures::StreamExt;
use kube::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct ConfigzOptions {
    /// Time between reads of every node's configz.
    pub interval: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Limit for one request.
    pub timeout: Duration,
}

impl Default for ConfigzOptions {
    fn default() -> Self {
        ConfigzOptions {
            interval: Duration::from_secs(600),
            concurrency: 4,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigzError {
    #[error("{0}{hint}", hint = hint(.0))]
    Api(kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}

fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            " (RBAC: reading the kubelet's configz needs get on nodes/proxy; \
             with the Helm chart, set kubeletConfigz.enabled)"
        }
        _ => "",
    }
}

/// Reads one node's `nodeStatusMaxImages`.
pub async fn fetch(client: &Client, node: &str, timeout: Duration) -> Result<i64, ConfigzError> {
    let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy/configz"))
        .body(Vec::new())
        .map_err(|e| ConfigzError::Invalid(e.to_string()))?;
    let body = tokio::time::timeout(timeout, client.request_text(request))
        .await
        .map_err(|_| ConfigzError::Timeout(timeout))?
        .map_err(ConfigzError::Api)?;
    parse_configz(body.as_bytes()).map_err(ConfigzError::Invalid)
}

/// Reads the given nodes' caps, `concurrency` at a time.
pub async fn fetch_all(
    client: &Client,
    nodes: Vec<String>,
    opts: &ConfigzOptions,
) -> Vec<(String, Result<i64, ConfigzError>)> {
    futures::stream::iter(nodes)
        .map(|name| async move {
            let r = fetch(client, &name, opts.timeout).await;
            (name, r)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await
}

/// Caps of all nodes, for `check`; failures are returned beside them.
pub async fn caps(
    client: &Client,
    nodes: Vec<String>,
    opts: &ConfigzOptions,
) -> (KubeletCaps, Vec<(String, ConfigzError)>) {
    let mut caps = KubeletCaps::new();
    let mut failed = Vec::new();
    for (name, r) in fetch_all(client, nodes, opts).await {
        match r {
            Ok(c) => {
                caps.insert(name, c);
            }
            Err(e) => failed.push((name, e)),
        }
    }
    (caps, failed)
}

/// Keeps the store's kubelet caps current until shutdown.
pub async fn run(
    client: Client,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    opts: ConfigzOptions,
    shutdown: CancellationToken,
) {
    let mut attempted: HashSet<String> = HashSet::new();
    // The last error logged per node, so a node failing the same way every
    // interval is logged once at warn level.
    let mut last_error: HashMap<String, String> = HashMap::new();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let everyone = tokio::select! {
            _ = tick.tick() => true,
            _ = store.node_added() => false,
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
            r = fetch_all(&client, names, &opts) => r,
            _ = shutdown.cancelled() => return,
        };
        let (mut ok, mut failed) = (0, 0);
        for (name, result) in results {
            attempted.insert(name.clone());
            match result {
                Ok(cap) => {
                    ok += 1;
                    store.set_kubelet_cap(&name, Some(cap));
                    last_error.remove(&name);
                }
                Err(e) => {
                    failed += 1;
                    metrics.source_error(crate::metrics::SourceErrorKind::Configz);
                    let msg = e.to_string();
                    if last_error.get(&name) != Some(&msg) {
                        tracing::warn!(node = %name, "cannot read the kubelet's nodeStatusMaxImages, assuming the default: {msg}");
                        last_error.insert(name, msg);
                    } else {
                        tracing::debug!(node = %name, "configz still failing: {msg}");
                    }
                }
            }
        }
        tracing::debug!(ok, failed, "read kubelet configz");
        let live: HashSet<String> = store.node_names().into_iter().collect();
        attempted.retain(|n| live.contains(n));
        last_error.retain(|n, _| live.contains(n));
    }
}
