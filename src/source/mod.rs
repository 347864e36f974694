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
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

/// The current node summaries and how fresh they are.
///
/// The analysis of all nodes is cached and recomputed only when a summary or a
/// kubelet cap changed (nodes are re-sent every few minutes with nothing new), and
/// it runs outside the lock on a snapshot of shared summaries, so a scrape never
/// holds up the watch. A store serves one configuration: `report` must always be
/// called with the same wanted images and default cap.
#[derive(Default)]
pub struct Store {
    inner: RwLock<Inner>,
    /// The last report and the generation it was computed for; held while a new
    /// one is computed, so concurrent scrapes wait for it instead of repeating it.
    cache: Mutex<Option<(u64, Arc<Report>)>>,
    /// Signalled when a node not seen before arrives.
    added: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, Arc<NodeSummary>>,
    /// Caps read from kubelets; kept apart from the summaries, which are rebuilt on
    /// every node update.
    kubelet_caps: KubeletCaps,
    /// Bumped on every change that can change the report.
    generation: u64,
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
        let mut inner = self.write();
        let unchanged = nodes.len() == inner.nodes.len()
            && nodes
                .iter()
                .all(|n| inner.nodes.get(&n.name).is_some_and(|old| **old == *n));
        let added = nodes.iter().any(|n| !inner.nodes.contains_key(&n.name));
        if !unchanged {
            let map: BTreeMap<String, Arc<NodeSummary>> = nodes
                .into_iter()
                .map(|n| (n.name.clone(), Arc::new(n)))
                .collect();
            inner.kubelet_caps.retain(|n, _| map.contains_key(n));
            inner.nodes = map;
            inner.generation += 1;
        }
        inner.last_update = Some(SystemTime::now());
        inner.ready = true;
        drop(inner);
        // The replaced summaries may have held the last use of some image names.
        crate::analysis::intern::collect_garbage();
        if added {
            self.added.notify_one();
        }
    }

    pub fn upsert(&self, node: NodeSummary) {
        let mut inner = self.write();
        inner.last_update = Some(SystemTime::now());
        let added = match inner.nodes.get(&node.name) {
            Some(old) if **old == node => return,
            Some(_) => false,
            None => true,
        };
        inner.nodes.insert(node.name.clone(), Arc::new(node));
        inner.generation += 1;
        drop(inner);
        if added {
            self.added.notify_one();
        }
    }

    pub fn remove(&self, name: &str) {
        let mut inner = self.write();
        if inner.nodes.remove(name).is_some() {
            inner.generation += 1;
        }
        inner.kubelet_caps.remove(name);
        inner.last_update = Some(SystemTime::now());
    }

    /// Records the cap a node's kubelet runs with (`None`: unknown again). Ignored
    /// for a node that is gone.
    pub fn set_kubelet_cap(&self, name: &str, cap: Option<i64>) {
        let mut inner = self.write();
        if !inner.nodes.contains_key(name) || inner.kubelet_caps.get(name).copied() == cap {
            return;
        }
        match cap {
            Some(c) => inner.kubelet_caps.insert(name.to_string(), c),
            None => inner.kubelet_caps.remove(name),
        };
        inner.generation += 1;
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

    /// The previous summary's problems, to log only what changed.
    fn previous_problems(&self, name: &str) -> Option<Vec<crate::analysis::node::Problem>> {
        self.read().nodes.get(name).map(|n| n.problems.clone())
    }

    /// The analysis of the current nodes (cached until they change) and the time
    /// they were last known current.
    pub fn report(
        &self,
        wanted: &Wanted,
        default_max_images: i64,
    ) -> (Arc<Report>, Option<SystemTime>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, nodes, caps, last_update) = {
            let inner = self.read();
            if let Some((g, report)) = cache.as_ref()
                && *g == inner.generation
            {
                return (report.clone(), inner.last_update);
            }
            (
                inner.generation,
                inner.nodes.values().cloned().collect::<Vec<_>>(),
                inner.kubelet_caps.clone(),
                inner.last_update,
            )
        };
        let report = Arc::new(analyze(
            nodes.iter().map(|n| n.as_ref()),
            wanted,
            default_max_images,
            &caps,
        ));
        *cache = Some((generation, report.clone()));
        (report, last_update)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::wanted::tests::wanted;

    fn node(name: &str, images: u32) -> NodeSummary {
        NodeSummary {
            name: name.into(),
            images,
            image_size_bytes: 0,
            ephemeral_storage_capacity_bytes: None,
            ephemeral_storage_allocatable_bytes: None,
            unschedulable: false,
            prepull_selected: true,
            relevant_images: vec![],
            problems: vec![],
        }
    }

    #[test]
    fn the_report_is_cached_until_something_changes() {
        let w = wanted(&[], &[], &[]);
        let store = Store::default();
        store.replace_all(vec![node("a", 50), node("b", 3)]);
        let (first, _) = store.report(&w, 50);
        assert!(first.nodes[0].at_cap);

        // Re-sent unchanged, by a relist or an update event: same report.
        store.replace_all(vec![node("b", 3), node("a", 50)]);
        store.upsert(node("a", 50));
        store.touch();
        let (again, _) = store.report(&w, 50);
        assert!(Arc::ptr_eq(&first, &again), "no recomputation");

        store.upsert(node("a", 49));
        let (changed, _) = store.report(&w, 50);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(!changed.nodes[0].at_cap);

        store.set_kubelet_cap("a", Some(49));
        let (capped, _) = store.report(&w, 50);
        assert!(
            capped.nodes[0].at_cap,
            "the kubelet's cap invalidates the cache"
        );
        store.set_kubelet_cap("a", Some(49));
        assert!(
            Arc::ptr_eq(&capped, &store.report(&w, 50).0),
            "same cap, same report"
        );

        store.remove("b");
        assert_eq!(store.report(&w, 50).0.nodes.len(), 1);
        store.remove("b");
        store.set_kubelet_cap("gone", Some(1));
        assert_eq!(store.report(&w, 50).0.nodes.len(), 1);
    }

    #[test]
    fn refresh_time_moves_without_invalidating() {
        let w = wanted(&[], &[], &[]);
        let store = Store::default();
        store.touch();
        assert_eq!(store.report(&w, 50).1, None, "not before the first data");
        store.replace_all(vec![node("a", 1)]);
        let (r1, t1) = store.report(&w, 50);
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.touch();
        let (r2, t2) = store.report(&w, 50);
        assert!(Arc::ptr_eq(&r1, &r2));
        assert!(t2 > t1);
    }
}
