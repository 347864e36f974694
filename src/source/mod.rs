//! Where node data comes from, and the store the HTTP side reads.
//!
//! Sources (the API server, a file) turn each node into a compact summary as it
//! arrives, through [`Ingest`], and keep the [`Store`] current.

pub mod configz;
pub mod file;
pub mod kube;

use crate::analysis::cluster::KubeletCaps;
use crate::analysis::selector::LabelSelector;
use crate::analysis::{NodeSummary, NodeView, Report, Wanted, analyze};
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

/// The current node summaries and how fresh they are.
#[derive(Default)]
pub struct Store {
    inner: RwLock<Inner>,
    /// Signalled when a node not seen before arrives.
    added: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, NodeSummary>,
    /// Caps read from kubelets; kept apart from the summaries, which are rebuilt on
    /// every node update.
    kubelet_caps: KubeletCaps,
    last_update: Option<SystemTime>,
    ready: bool,
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written (every
        // write is a single insert, remove or swap), so a poisoned lock is usable.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every node: a complete list arrived.
    pub fn replace_all(&self, nodes: Vec<NodeSummary>) {
        let map: BTreeMap<String, NodeSummary> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let mut inner = self.write();
        let added = map.keys().any(|n| !inner.nodes.contains_key(n));
        inner.kubelet_caps.retain(|n, _| map.contains_key(n));
        inner.nodes = map;
        inner.last_update = Some(SystemTime::now());
        inner.ready = true;
        drop(inner);
        if added {
            self.added.notify_one();
        }
    }

    pub fn upsert(&self, node: NodeSummary) {
        let mut inner = self.write();
        let added = inner.nodes.insert(node.name.clone(), node).is_none();
        inner.last_update = Some(SystemTime::now());
        drop(inner);
        if added {
            self.added.notify_one();
        }
    }

    pub fn remove(&self, name: &str) {
        let mut inner = self.write();
        inner.nodes.remove(name);
        inner.kubelet_caps.remove(name);
        inner.last_update = Some(SystemTime::now());
    }

    /// Records the cap a node's kubelet runs with (`None`: unknown again). Ignored
    /// for a node that is gone.
    pub fn set_kubelet_cap(&self, name: &str, cap: Option<i64>) {
        let mut inner = self.write();
        if !inner.nodes.contains_key(name) {
            return;
        }
        match cap {
            Some(c) => inner.kubelet_caps.insert(name.to_string(), c),
            None => inner.kubelet_caps.remove(name),
        };
    }

    pub fn node_names(&self) -> Vec<String> {
        self.read().nodes.keys().cloned().collect()
    }

    /// Completes when a node not seen before has arrived since the last call.
    pub async fn node_added(&self) {
        self.added.notified().await
    }

    /// Marks the data as current without changing it: the source confirmed that
    /// nothing changed (an unchanged file, a healthy watch).
    pub fn touch(&self) {
        let mut inner = self.write();
        if inner.ready {
            inner.last_update = Some(SystemTime::now());
        }
    }

    /// Ready once a first complete set of nodes is in.
    pub fn ready(&self) -> bool {
        self.read().ready
    }

    pub fn last_update(&self) -> Option<SystemTime> {
        self.read().last_update
    }

    pub fn len(&self) -> usize {
        self.read().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The previous summary's problems, to log only what changed.
    fn previous_problems(&self, name: &str) -> Option<Vec<crate::analysis::node::Problem>> {
        self.read().nodes.get(name).map(|n| n.problems.clone())
    }

    /// Analyzes the current nodes.
    pub fn report(&self, wanted: &Wanted, default_max_images: i64) -> (Report, Option<SystemTime>) {
        let inner = self.read();
        (
            analyze(
                inner.nodes.values(),
                wanted,
                default_max_images,
                &inner.kubelet_caps,
            ),
            inner.last_update,
        )
    }
}

/// Turns decoded nodes into summaries, counting and logging malformed data.
pub struct Ingest {
    pub wanted: Arc<Wanted>,
    pub selector: LabelSelector,
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
}

impl Ingest {
    /// The summary of a node, or `None` when the node is outside `--node-selector`
    /// or has no name (counted and logged).
    pub fn summarize(&self, view: &NodeView) -> Option<NodeSummary> {
        let labels = view.metadata.labels.as_ref();
        if !self.selector.is_empty() && !self.selector.matches(labels.unwrap_or(&BTreeMap::new())) {
            return None;
        }
        let summary = match crate::analysis::summarize(view, &self.wanted) {
            Ok(s) => s,
            Err(problem) => {
                self.metrics.invalid_field(problem.field);
                tracing::warn!(field = problem.field, "skipping node: {}", problem.detail);
                return None;
            }
        };
        for p in &summary.problems {
            self.metrics.invalid_field(p.field);
        }
        if !summary.problems.is_empty() {
            let previous = self.store.previous_problems(&summary.name);
            if previous.as_ref() != Some(&summary.problems) {
                for p in &summary.problems {
                    tracing::warn!(node = %summary.name, field = p.field, "malformed node data: {}", p.detail);
                }
            }
        }
        Some(summary)
    }

    /// Counts a node that could not be decoded at all.
    pub fn undecodable(&self, what: &str, error: &str) {
        self.metrics.invalid_field("node");
        tracing::warn!(field = "node", "skipping undecodable node {what}: {error}");
    }
}
