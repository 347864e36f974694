//! The current node summaries, the configuration they were summarized against, and
//! the report that `/metrics`, the status page and `check` show.
//!
//! Sources write node summaries in; outputs read the report out. A store is made
//! for one configuration (wanted images, default cap), so summaries and reports are
//! always computed against the same one.

use crate::analysis::kubelet_settings::{ImageFs, KubeletSettings};
use crate::analysis::list::ListDigests;
use crate::analysis::node::Problem;
use crate::analysis::report::{Analysis, Assumptions, Inputs, NodeExtra, NodeExtras, SourceState};
use crate::analysis::runtime::RuntimeSummary;
use crate::analysis::wanted::KnownDigests;
use crate::analysis::wants::Wants;
use crate::analysis::{NodeSummary, Relevance, Report, WantSource, Wanted, intern};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

/// Least time between two clean-ups of the shared image-name strings after single
/// node changes (a complete list always cleans up).
const INTERN_GC_INTERVAL: Duration = Duration::from_secs(30);

/// The analysis of all nodes is cached and recomputed only when a summary or a
/// kubelet cap changed (nodes are re-sent every few minutes with nothing new), and
/// it runs outside the lock on a snapshot of shared summaries, so a scrape never
/// holds up the sources.
pub struct Store {
    wanted: Arc<Wanted>,
    default_max_images: i64,
    /// Node agents are expected: nodes without a fresh report say so.
    agents: std::sync::atomic::AtomicBool,
    inner: RwLock<Inner>,
    /// The last report, the analysis it came from and the generation it was
    /// computed for; held while a new one is computed, so concurrent readers wait
    /// for it instead of repeating it.
    cache: Mutex<Option<Cached>>,
    /// Counts arrivals of nodes not seen before; each reader of kubelets follows
    /// it with a receiver of its own.
    added: tokio::sync::watch::Sender<u64>,
    /// Counts the changes of what summaries keep (the sources' repositories and
    /// wanted tags, see [`Relevance`]): nodes must then be summarized again. Each
    /// reader of nodes follows it with [`Resyncs`] of its own.
    resync: tokio::sync::watch::Sender<u64>,
}

/// Relists for changed wanted images, at most [`RESYNC_BURST`] at once, then one
/// every [`RESYNC_EVERY`]: the sources' first answers at start each bring new
/// repositories and are followed at once, and a source whose answer keeps changing
/// cannot make the exporter list thousands of nodes more often than poll mode does.
pub const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// See [`RESYNC_EVERY`].
pub const RESYNC_BURST: u32 = 3;

/// One reader's view of the store's resync requests ([`Store::resyncs`]), paced
/// by [`RESYNC_EVERY`] and [`RESYNC_BURST`] (a generic cell rate: `next` is when
/// the next request would be due were they evenly spaced).
pub struct Resyncs {
    changes: tokio::sync::watch::Receiver<u64>,
    next: tokio::time::Instant,
}

impl Resyncs {
    fn new(changes: tokio::sync::watch::Receiver<u64>) -> Resyncs {
        Resyncs {
            changes,
            next: tokio::time::Instant::now(),
        }
    }

    /// Completes when the nodes must be summarized again, once per change or run
    /// of changes, paced. Cancel-safe: a change is not lost when the future is
    /// dropped before it completes.
    pub async fn requested(&mut self) {
        let tolerance = RESYNC_EVERY * (RESYNC_BURST - 1);
        let now = tokio::time::Instant::now();
        if self.next > now + tolerance {
            tokio::time::sleep_until(self.next - tolerance).await;
        }
        if self.changes.changed().await.is_err() {
            // The store is gone: nothing will change any more.
            std::future::pending::<()>().await;
        }
        self.next = self.next.max(tokio::time::Instant::now()) + RESYNC_EVERY;
    }
}

/// The last report and what it was made from.
struct Cached {
    generation: u64,
    report: Arc<Report>,
    /// Kept to be brought up to date with the nodes that change.
    analysis: Analysis,
}

struct Inner {
    /// The sources of wanted images beside the configuration, by kind.
    sources: BTreeMap<WantSource, SourceState>,
    /// When the configuration was read: the last success of `config` and
    /// `pattern`.
    configured_at: f64,
    /// Which image entries summaries keep; follows `wanted` and `sources`, and
    /// the digests the wanted images are known by ([`Store::follow_digests`]).
    relevance: Arc<Relevance>,
    nodes: BTreeMap<String, Arc<NodeSummary>>,
    /// What kubelets and node agents say of the nodes; kept apart from the
    /// summaries, which are rebuilt on every node update.
    extras: NodeExtras,
    /// Bumped on every change that can change the report.
    generation: u64,
    /// Nodes changed since the last report was computed (summary, extra facts,
    /// arrival or removal): only theirs need analyzing again.
    changed: BTreeSet<String>,
    /// Something every node's report depends on changed since the last report
    /// (every node, the sources, the assumptions): all are analyzed again.
    changed_all: bool,
    last_update: Option<SystemTime>,
    /// A first complete set of nodes is in.
    has_data: bool,
    /// A node source is running (see `nodes::supervise`).
    source_live: bool,
    /// Node changes since the shared strings were last cleaned up, and when that was.
    changes_since_gc: u64,
    last_gc: Instant,
}

impl Inner {
    /// One node changed: its report must be made again.
    fn changed_node(&mut self, name: &str) {
        self.generation += 1;
        if !self.changed_all {
            self.changed.insert(name.to_string());
        }
    }

    /// A complete list is in and every summary holds each entry kept for a
    /// digest alone: the known digests can be told from a report of them
    /// ([`Store::follow_digests`]).
    fn holds_all_digest_entries(&self) -> bool {
        self.has_data && self.nodes.values().all(|n| n.all_digest_entries)
    }

    /// Something every report depends on changed: all must be made again.
    fn changed_everything(&mut self) {
        self.generation += 1;
        self.changed_all = true;
        self.changed.clear();
    }
}

impl Store {
    pub fn new(wanted: Arc<Wanted>, default_max_images: i64) -> Store {
        let relevance = Arc::new(Relevance::new(&wanted, []));
        Store {
            wanted,
            default_max_images,
            agents: std::sync::atomic::AtomicBool::new(false),
            inner: RwLock::new(Inner {
                sources: BTreeMap::new(),
                configured_at: unix_now(),
                relevance,
                nodes: BTreeMap::new(),
                extras: NodeExtras::new(),
                generation: 0,
                changed: BTreeSet::new(),
                changed_all: true,
                last_update: None,
                has_data: false,
                source_live: true,
                changes_since_gc: 0,
                last_gc: Instant::now(),
            }),
            cache: Mutex::new(None),
            added: tokio::sync::watch::Sender::new(0),
            resync: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The configuration's wanted images.
    pub fn wanted(&self) -> &Arc<Wanted> {
        &self.wanted
    }

    /// Which image entries node summaries must keep now.
    pub fn relevance(&self) -> Arc<Relevance> {
        self.read().relevance.clone()
    }

    /// Declares a source of wanted images: it shows as down, with no images,
    /// until its first successful read.
    pub fn add_source(&self, source: WantSource) {
        let mut inner = self.write();
        inner.sources.entry(source).or_default();
        inner.changed_everything();
    }

    /// A source read succeeded: what it wants replaces what it wanted before
    /// (its groups, the references dropped past the per-source cap, and for
    /// Nublado its menu).
    pub fn source_succeeded(&self, source: WantSource, wants: Wants) {
        let now = Some(unix_now());
        let mut inner = self.write();
        let state = inner.sources.entry(source).or_default();
        // Only the groups and the menu go into every node's report; the rest
        // shows in the source's own report.
        let same_wants = state.groups == wants.groups && state.menu == wants.menu;
        state.groups = wants.groups;
        state.dropped_images = wants.dropped;
        state.menu = wants.menu;
        state.up = true;
        state.last_success_seconds = now;
        if same_wants {
            inner.generation += 1;
        } else {
            inner.changed_everything();
        }
        let relevance = Arc::new(Relevance::new(
            &self.wanted,
            inner.sources.values().flat_map(|s| &s.groups),
        ));
        // Kept when equal: the name caches of the decoding threads, and what the
        // patterns' DFA learned of repositories, belong to that one.
        let resync = *relevance != *inner.relevance;
        if resync {
            inner.relevance = relevance;
        }
        drop(inner);
        if resync {
            self.resync.send_modify(|n| *n += 1);
        }
    }

    /// A source read failed: it keeps its last good groups and shows as down.
    pub fn source_failed(&self, source: WantSource) {
        let mut inner = self.write();
        let state = inner.sources.entry(source).or_default();
        if state.up {
            state.up = false;
            // It keeps its groups: only its own report changes.
            inner.generation += 1;
        }
    }

    /// What a reader of nodes follows to learn when the nodes must be summarized
    /// again: the changes from now on.
    pub fn resyncs(&self) -> Resyncs {
        Resyncs::new(self.resync.subscribe())
    }

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
        self.replace_list(nodes, None);
    }

    /// Replaces every node with a complete list's, and learns from `digests`
    /// the digests the wanted images are known by, when the list was summarized
    /// against the relevance in force, which did not know them
    /// ([`ListSummaries::finish`](crate::analysis::list::ListSummaries::finish)):
    /// from then on, summaries keep of the entries kept for a digest alone only
    /// those. Should a report find a digest not among them, the nodes are
    /// listed again ([`Store::follow_digests`]).
    pub fn replace_list(&self, mut nodes: Vec<NodeSummary>, digests: Option<ListDigests>) {
        let mut inner = self.write();
        if let Some(d) = digests
            && inner.relevance.known_digests().is_none()
            && Arc::ptr_eq(&inner.relevance, &d.relevance)
        {
            tracing::debug!(
                digests = d.known.len(),
                "the list tells the digests the wanted images are known by"
            );
            let relevance = inner.relevance.with_known_digests(Some(Arc::new(d.known)));
            inner.relevance = Arc::new(relevance);
        }
        if let Some(known) = inner.relevance.known_digests() {
            // Summarized before the digests were known, or against others.
            for n in &mut nodes {
                n.drop_unknown_digests(known);
            }
        }
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
            inner.extras.retain(|n, _| map.contains_key(n));
            inner.nodes = map;
            inner.changed_everything();
        }
        inner.last_update = Some(SystemTime::now());
        inner.has_data = true;
        // The replaced summaries may have held the last use of some image names.
        inner.changes_since_gc = 0;
        inner.last_gc = Instant::now();
        drop(inner);
        if !unchanged {
            // The cached report is outdated: let it go now, so that the memory it
            // holds is freed with the replaced summaries. (Not while a report is
            // being computed: that one replaces it.)
            match self.cache.try_lock() {
                Ok(mut cache) => *cache = None,
                Err(std::sync::TryLockError::Poisoned(p)) => *p.into_inner() = None,
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        intern::collect_garbage();
        if added {
            self.added.send_modify(|n| *n += 1);
        }
    }

    pub fn upsert(&self, mut node: NodeSummary) {
        let mut inner = self.write();
        if let Some(known) = inner.relevance.known_digests() {
            node.drop_unknown_digests(known);
        }
        inner.last_update = Some(SystemTime::now());
        let added = match inner.nodes.get(&node.name) {
            Some(old) if **old == node => return,
            Some(_) => false,
            None => true,
        };
        inner.changed_node(&node.name);
        inner.nodes.insert(node.name.clone(), Arc::new(node));
        let collect = Self::changed(&mut inner);
        drop(inner);
        if collect {
            intern::collect_garbage();
        }
        if added {
            self.added.send_modify(|n| *n += 1);
        }
    }

    pub fn remove(&self, name: &str) {
        let mut inner = self.write();
        inner.last_update = Some(SystemTime::now());
        inner.extras.remove(name);
        if inner.nodes.remove(name).is_none() {
            return;
        }
        inner.changed_node(name);
        let collect = Self::changed(&mut inner);
        drop(inner);
        if collect {
            intern::collect_garbage();
        }
    }

    /// Counts a single-node change; true when the shared strings are due for a
    /// clean-up.
    fn changed(inner: &mut Inner) -> bool {
        inner.changes_since_gc += 1;
        Self::gc_due(inner)
    }

    /// True, and the clock restarted, when nodes changed since the last clean-up
    /// of the shared strings and it was [`INTERN_GC_INTERVAL`] ago or more (so a
    /// busy watch does not scan the set on every event).
    fn gc_due(inner: &mut Inner) -> bool {
        if inner.changes_since_gc == 0 || inner.last_gc.elapsed() < INTERN_GC_INTERVAL {
            return false;
        }
        inner.changes_since_gc = 0;
        inner.last_gc = Instant::now();
        true
    }

    /// Node agents are expected from now on (`serve --agents`, `check
    /// --agents-file`): a node without a fresh report shows that it has none.
    pub fn expect_agents(&self) {
        self.agents
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.write().changed_everything();
    }

    /// Records the settings a node's kubelet runs with (`None`: unknown again).
    pub fn set_kubelet_settings(&self, name: &str, settings: Option<KubeletSettings>) {
        self.update_extra(name, |e| e.kubelet = settings);
    }

    /// Records a node's image filesystem use from its kubelet (`None`: unknown).
    pub fn set_image_fs(&self, name: &str, fs: Option<ImageFs>) {
        self.update_extra(name, |e| e.image_fs = fs);
    }

    /// Records what a node's runtime holds, from a fresh agent report (`None`: no
    /// fresh report).
    pub fn set_runtime(&self, name: &str, runtime: Option<Arc<RuntimeSummary>>) {
        self.update_extra(name, |e| e.runtime = runtime);
    }

    /// Changes a node's extra facts; ignored for a node that is gone, and a change
    /// to the same value leaves the cached report alone.
    fn update_extra(&self, name: &str, change: impl FnOnce(&mut NodeExtra)) {
        let mut inner = self.write();
        if !inner.nodes.contains_key(name) {
            return;
        }
        let mut extra = inner.extras.get(name).cloned().unwrap_or_default();
        change(&mut extra);
        if inner.extras.get(name).is_some_and(|old| *old == extra)
            || (extra.is_empty() && !inner.extras.contains_key(name))
        {
            return;
        }
        if extra.is_empty() {
            inner.extras.remove(name);
        } else {
            inner.extras.insert(name.to_string(), extra);
        }
        inner.changed_node(name);
    }

    pub fn node_names(&self) -> Vec<String> {
        self.read().nodes.keys().cloned().collect()
    }

    /// Follows arrivals of nodes not seen before: `changed()` completes when one
    /// has arrived since the receiver last looked.
    pub fn nodes_added(&self) -> tokio::sync::watch::Receiver<u64> {
        self.added.subscribe()
    }

    /// Marks the data as current without changing it: the source confirmed that
    /// nothing changed (an unchanged file, a healthy watch).
    pub fn touch(&self) {
        let mut inner = self.write();
        if inner.has_data {
            inner.last_update = Some(SystemTime::now());
        }
        let collect = Self::gc_due(&mut inner);
        drop(inner);
        if collect {
            intern::collect_garbage();
        }
    }

    /// Whether a node source is running; set by the task that supervises it.
    pub fn set_source_live(&self, live: bool) {
        self.write().source_live = live;
    }

    /// Ready once a first complete set of nodes is in, and while a source runs to
    /// keep it current.
    pub fn ready(&self) -> bool {
        let inner = self.read();
        inner.has_data && inner.source_live
    }

    /// Why [`Store::ready`] is false, for `/readyz`.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        let inner = self.read();
        if !inner.source_live {
            Some("the node source stopped and is being restarted")
        } else if !inner.has_data {
            Some("waiting for the first complete node list")
        } else {
            None
        }
    }

    /// The previous summary's problems, to log only what changed.
    pub fn previous_problems(&self, name: &str) -> Option<Vec<Problem>> {
        self.read().nodes.get(name).map(|n| n.problems.clone())
    }

    /// The analysis of the current nodes (cached until they change) and the time
    /// they were last known current. Can take a while for many nodes when all must
    /// be analyzed again (a complete list, a source's new wants); after a few
    /// nodes changed, only those are: call it off the async runtime's workers.
    pub fn report(&self) -> (Arc<Report>, Option<SystemTime>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, nodes, changed, extras, sources, configured_at, last_update, complete) = {
            let mut inner = self.write();
            if let Some(c) = cache.as_ref()
                && c.generation == inner.generation
            {
                return (c.report.clone(), inner.last_update);
            }
            let everything = std::mem::take(&mut inner.changed_all) || cache.is_none();
            let changed = std::mem::take(&mut inner.changed);
            // Only what is known of the changed nodes, unless all are analyzed.
            let extras: NodeExtras = if everything {
                inner.extras.clone()
            } else {
                changed
                    .iter()
                    .filter_map(|n| Some((n.clone(), inner.extras.get(n)?.clone())))
                    .collect()
            };
            (
                inner.generation,
                inner.nodes.values().cloned().collect::<Vec<_>>(),
                (!everything).then_some(changed),
                extras,
                inner.sources.clone(),
                inner.configured_at,
                inner.last_update,
                inner.relevance.known_digests().is_none() && inner.holds_all_digest_entries(),
            )
        };
        let refs: Vec<&NodeSummary> = nodes.iter().map(|n| n.as_ref()).collect();
        let inputs = Inputs {
            wanted: &self.wanted,
            sources: &sources,
            assume: Assumptions {
                default_max_images: self.default_max_images,
                agents: self.agents.load(std::sync::atomic::Ordering::Relaxed),
                configured_at: Some(configured_at),
            },
            extras: &extras,
        };
        let everything = changed.is_none();
        let updated = match (cache.take(), changed) {
            (Some(c), Some(changed)) => c
                .analysis
                .update(&refs, &changed, inputs)
                .map(|a| (a, Some(c.report))),
            // Let the old analysis go before the new one is made.
            _ => None,
        };
        let (mut analysis, last) = match updated {
            Some(updated) => updated,
            // Made whole: with what is known of every node.
            None if everything => (Analysis::new(&refs, inputs), None),
            None => {
                let extras = self.read().extras.clone();
                let inputs = Inputs {
                    extras: &extras,
                    ..inputs
                };
                (Analysis::new(&refs, inputs), None)
            }
        };
        let report = Arc::new(analysis.report(last.as_deref(), inputs));
        drop(last);
        let known = analysis.known_digests();
        *cache = Some(Cached {
            generation,
            report: report.clone(),
            analysis,
        });
        drop(cache);
        drop(refs);
        drop(nodes);
        self.follow_digests(known, complete);
        (report, last_update)
    }

    /// Brings what summaries keep of the entries kept for a digest alone
    /// ([`Relevance::with_known_digests`]) in line with `known`, the digests the
    /// wanted images were known by in the last report. These come from the nodes
    /// (the entries that carry a wanted tag) and change with them.
    ///
    /// A list read by a source tells them when it is whole
    /// ([`Store::replace_list`]). Otherwise (summaries made one by one), the
    /// first report made of a complete set whose summaries kept every such
    /// entry (`complete`) tells them: every summary drops the entries known by
    /// other digests alone, and later ones are made without. When a digest
    /// not known before appears, an entry another node
    /// has by that digest alone may have been dropped: the relevance keeps them
    /// all again and the nodes are listed again (a node that changed while the
    /// report was made may bring such a digest too: the next report tells it).
    /// A digest that goes stays known: it only keeps a few entries more.
    fn follow_digests(&self, known: KnownDigests, complete: bool) {
        let mut inner = self.write();
        match inner.relevance.known_digests() {
            // Wait for a list that brings them all.
            None if !complete || !inner.holds_all_digest_entries() => {}
            None => {
                let mut dropped = false;
                for node in inner.nodes.values_mut() {
                    if node.has_unknown_digests(&known) {
                        dropped |= Arc::make_mut(node).drop_unknown_digests(&known);
                    }
                }
                let relevance = inner.relevance.with_known_digests(Some(Arc::new(known)));
                inner.relevance = Arc::new(relevance);
                drop(inner);
                if dropped {
                    intern::collect_garbage();
                    crate::sys::release_free_memory();
                }
            }
            Some(old) if known.is_subset(old) => {}
            Some(_) => {
                inner.relevance = Arc::new(inner.relevance.with_known_digests(None));
                drop(inner);
                tracing::info!("a wanted image is known by a new digest; listing the nodes again");
                self.resync.send_modify(|n| *n += 1);
            }
        }
    }

    /// Moves on every change that can change the report: a report made for this
    /// generation is current.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// [`Store::report`] on a blocking thread, for async callers.
    pub async fn report_off_runtime(
        self: &Arc<Self>,
    ) -> Result<(Arc<Report>, Option<SystemTime>), tokio::task::JoinError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.report()).await
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::wanted::tests::wanted;

    fn node(name: &str, image_count: u32) -> NodeSummary {
        NodeSummary {
            name: name.into(),
            image_count,
            image_size_bytes: 0,
            ephemeral_storage_capacity_bytes: None,
            ephemeral_storage_allocatable_bytes: None,
            unschedulable: false,
            labels: Default::default(),
            taints: vec![],
            relevant_images: vec![],
            smallest_image_bytes: None,
            all_digest_entries: true,
            held: None,
            runtime: None,
            problems: vec![],
        }
    }

    fn store() -> Store {
        Store::new(Arc::new(wanted(&[], &[], &[])), 50)
    }

    #[test]
    fn the_report_is_cached_until_something_changes() {
        let store = store();
        store.replace_all(vec![node("a", 50), node("b", 3)]);
        let (first, _) = store.report();
        assert!(first.nodes[0].cap.at_cap);

        // Re-sent unchanged, by a relist or an update event: same report.
        store.replace_all(vec![node("b", 3), node("a", 50)]);
        store.upsert(node("a", 50));
        store.touch();
        let (again, _) = store.report();
        assert!(Arc::ptr_eq(&first, &again), "no recomputation");

        store.upsert(node("a", 49));
        let (changed, _) = store.report();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(!changed.nodes[0].cap.at_cap);

        let cap = |c| {
            Some(KubeletSettings {
                max_images: c,
                image_gc_high_ratio: None,
                image_gc_low_ratio: None,
            })
        };
        store.set_kubelet_settings("a", cap(49));
        let (capped, _) = store.report();
        assert!(
            capped.nodes[0].cap.at_cap,
            "the kubelet's cap invalidates the cache"
        );
        store.set_kubelet_settings("a", cap(49));
        assert!(
            Arc::ptr_eq(&capped, &store.report().0),
            "same cap, same report"
        );

        store.remove("b");
        assert_eq!(store.report().0.nodes.len(), 1);
        store.remove("b");
        store.set_kubelet_settings("gone", cap(1));
        assert_eq!(store.report().0.nodes.len(), 1);

        // A runtime report invalidates; the same one again does not.
        let rt = Arc::new(RuntimeSummary {
            image_count: 70,
            ..RuntimeSummary::default()
        });
        store.set_runtime("a", Some(rt.clone()));
        let (with_rt, _) = store.report();
        assert_eq!(with_rt.nodes[0].runtime.runtime_images, Some(70));
        store.set_runtime("a", Some(rt));
        assert!(Arc::ptr_eq(&with_rt, &store.report().0));
        store.set_runtime("a", None);
        assert_eq!(store.report().0.nodes[0].runtime.runtime_images, None);
        assert_eq!(
            store.report().0.nodes[0].cap.max_images,
            49,
            "the cap stays"
        );
        store.expect_agents();
        assert_eq!(store.report().0.nodes[0].runtime.agent_up, Some(false));
    }

    /// What a read of `source` wanting `image` alone, on the configuration's
    /// nodes, gives.
    fn wants_one(store: &Store, source: WantSource, image: &str) -> Wants {
        use crate::analysis::reference::ImageRef;
        use crate::analysis::wanted::WantGroup;
        Wants {
            groups: vec![WantGroup {
                source,
                images: vec![ImageRef::parse(image).unwrap()],
                eligibility: store.wanted().eligibility().clone(),
            }],
            ..Wants::default()
        }
    }

    #[test]
    fn a_source_read_again_shows_in_the_report_as_a_whole_analysis_would() {
        let store = store();
        store.replace_all(vec![node("a", 3), node("b", 60)]);
        store.add_source(WantSource::Nublado);
        let wants = |image: &str| wants_one(&store, WantSource::Nublado, image);
        store.source_succeeded(WantSource::Nublado, wants("ghcr.io/x/lab:1"));
        let first = store.report().0;
        assert_eq!(*first, whole(&store));
        assert_eq!(first.nodes[0].prepull.missing_images, ["ghcr.io/x/lab:1"]);
        store.upsert(node("a", 4));
        store.source_succeeded(WantSource::Nublado, wants("ghcr.io/x/lab:1"));
        let again = store.report().0;
        assert_eq!(*again, whole(&store));
        assert_eq!(again.nodes[0].cap.image_count, 4);
        store.source_failed(WantSource::Nublado);
        let failed = store.report().0;
        assert!(!failed.sources[0].up, "{:?}", failed.sources);
        assert_eq!(*failed, whole(&store));
        store.source_succeeded(WantSource::Nublado, wants("ghcr.io/x/lab:2"));
        let moved = store.report().0;
        assert_eq!(moved.nodes[1].prepull.missing_images, ["ghcr.io/x/lab:2"]);
        assert_eq!(*moved, whole(&store));
    }

    /// Whether `resyncs` has a request now (or once the paused clock is
    /// advanced by what is left of `within`).
    async fn requested_within(resyncs: &mut Resyncs, within: Duration) -> bool {
        tokio::time::timeout(within, resyncs.requested())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn every_reader_of_nodes_hears_of_a_new_wanted_tag_once() {
        let store = store();
        let (mut lister, mut saved) = (store.resyncs(), store.resyncs());
        let wants = |image: &str| wants_one(&store, WantSource::KubeFledged, image);
        let second = Duration::from_secs(1);
        store.source_succeeded(WantSource::KubeFledged, wants("r.io/app:1"));
        assert!(requested_within(&mut lister, second).await);
        assert!(requested_within(&mut saved, second).await, "both readers");
        assert!(!requested_within(&mut lister, second).await, "once");
        // The same images again: nothing to summarize again, and the same
        // relevance kept.
        let before = store.relevance();
        store.source_succeeded(WantSource::KubeFledged, wants("r.io/app:1"));
        assert!(!requested_within(&mut lister, second).await);
        assert!(Arc::ptr_eq(&before, &store.relevance()));
        // Another tag of the same repository: summaries kept only the tags
        // wanted before.
        store.source_succeeded(WantSource::KubeFledged, wants("r.io/app:2"));
        assert!(requested_within(&mut lister, second).await);
    }

    #[tokio::test(start_paused = true)]
    async fn resyncs_come_in_a_burst_then_one_a_minute() {
        let store = store();
        let mut resyncs = store.resyncs();
        let change = || store.resync.send_modify(|n| *n += 1);
        let start = tokio::time::Instant::now();
        for _ in 0..RESYNC_BURST {
            change();
            assert!(requested_within(&mut resyncs, Duration::from_millis(1)).await);
        }
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "a burst at once"
        );
        // Several changes meanwhile make one request, when the pace allows.
        change();
        change();
        assert!(!requested_within(&mut resyncs, RESYNC_EVERY - Duration::from_secs(1)).await);
        assert!(requested_within(&mut resyncs, Duration::from_secs(2)).await);
        assert!(
            !requested_within(&mut resyncs, RESYNC_EVERY * 5).await,
            "one request"
        );
        // A quiet spell earns the burst back.
        for _ in 0..RESYNC_BURST {
            change();
            assert!(requested_within(&mut resyncs, Duration::from_millis(1)).await);
        }
    }

    #[test]
    fn refresh_time_moves_without_invalidating() {
        let store = store();
        store.touch();
        assert_eq!(store.report().1, None, "not before the first data");
        store.replace_all(vec![node("a", 1)]);
        let (r1, t1) = store.report();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.touch();
        let (r2, t2) = store.report();
        assert!(Arc::ptr_eq(&r1, &r2));
        assert!(t2 > t1);
    }

    #[test]
    fn ready_needs_data_and_a_live_source() {
        let store = store();
        assert!(!store.ready());
        assert_eq!(
            store.not_ready_reason(),
            Some("waiting for the first complete node list")
        );
        store.replace_all(vec![node("a", 1)]);
        assert!(store.ready() && store.not_ready_reason().is_none());
        store.set_source_live(false);
        assert!(!store.ready());
        assert!(store.not_ready_reason().unwrap().contains("restarted"));
        assert_eq!(store.report().0.nodes.len(), 1, "the data is still served");
        store.set_source_live(true);
        assert!(store.ready());
    }

    /// The summary of a node reporting `images` (names, size), as the sources
    /// make it: against the store's relevance.
    fn summarized(store: &Store, name: &str, images: &[&[&str]]) -> NodeSummary {
        let images: Vec<serde_json::Value> = images
            .iter()
            .map(|names| serde_json::json!({"names": names, "sizeBytes": 1000}))
            .collect();
        let view: crate::analysis::NodeView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"images": images},
        }))
        .unwrap();
        crate::analysis::summarize(&view, &store.relevance()).unwrap()
    }

    /// The report of the store's summaries, made whole.
    fn whole(store: &Store) -> Report {
        let inner = store.read();
        crate::analysis::analyze(
            inner.nodes.values().map(|n| n.as_ref()),
            &store.wanted,
            &inner.sources,
            Assumptions {
                default_max_images: 50,
                agents: false,
                configured_at: Some(inner.configured_at),
            },
            &inner.extras,
        )
    }

    fn kept_digests(store: &Store, node: &str) -> Vec<String> {
        let inner = store.read();
        let mut d: Vec<String> = inner.nodes[node]
            .relevant_images
            .iter()
            .flat_map(|e| e.iter())
            .filter(|n| n.tag.is_none())
            .map(|n| n.to_string())
            .collect();
        d.sort();
        d
    }

    /// Entries known by a digest alone are kept while a wanted image may be
    /// known by it: dropped after the first report (which they do not change),
    /// and listed again when a wanted tag turns up with their digest.
    #[tokio::test(start_paused = true)]
    async fn entries_known_by_digest_alone_are_kept_while_a_wanted_image_can_be_them() {
        let store = Store::new(Arc::new(wanted(&["ghcr.io/x/app:1"], &[], &[])), 50);
        let mut resyncs = store.resyncs();
        let d = |c: char| format!("ghcr.io/x/app@sha256:{}", c.to_string().repeat(64));
        let (d1, d2, d3) = (d('1'), d('2'), d('3'));
        let a: &[&[&str]] = &[&["ghcr.io/x/app:1", &d1]];
        // A build of its own (its tag is nobody's), and a dangling image.
        let b: &[&[&str]] = &[&["ghcr.io/x/app:pr-7", &d2], &[&d3]];
        store.replace_all(vec![summarized(&store, "a", a), summarized(&store, "b", b)]);
        assert_eq!(kept_digests(&store, "b"), [d2.as_str(), d3.as_str()]);

        let first = store.report().0;
        assert_eq!(first.nodes[1].prepull.missing_images, ["ghcr.io/x/app:1"]);
        assert!(
            kept_digests(&store, "b").is_empty(),
            "no wanted image is known by them"
        );
        assert_eq!(kept_digests(&store, "a"), [d1.as_str()], "a wanted tag's");
        assert_eq!(*first, whole(&store), "the same report without them");
        assert!(
            !requested_within(&mut resyncs, Duration::from_secs(1)).await,
            "nothing to list again"
        );
        // Summaries made from now on keep them not.
        let b_now = summarized(&store, "b", b);
        assert!(b_now.relevant_images.is_empty() && !b_now.all_digest_entries);
        store.upsert(b_now);
        assert_eq!(store.report().0, first, "unchanged");

        // The wanted tag turns up on another node as the image b has by digest:
        // b's entry may be that image, so the nodes are listed again.
        let c: &[&[&str]] = &[&["ghcr.io/x/app:1", &d2]];
        store.upsert(summarized(&store, "c", c));
        let _ = store.report();
        assert!(requested_within(&mut resyncs, Duration::from_secs(1)).await);
        assert!(
            store.relevance().known_digests().is_none(),
            "all kept again"
        );
        let relisted = [("a", a), ("b", b), ("c", c)].map(|(n, i)| summarized(&store, n, i));
        store.replace_all(relisted.to_vec());
        let listed = store.report().0;
        assert!(
            listed.nodes[1].prepull.missing_images.is_empty(),
            "b has it by digest: {:?}",
            listed.nodes[1].prepull
        );
        assert_eq!(kept_digests(&store, "b"), [d2], "the dangling one goes");
        assert_eq!(*listed, whole(&store));
        assert!(!requested_within(&mut resyncs, Duration::from_secs(120)).await);
    }

    /// Nodes listed as a source lists them: entries kept for a digest alone
    /// are held until the list is whole ([`crate::analysis::held`]).
    fn listed(
        store: &Store,
        nodes: &[(&str, &[&[&str]])],
    ) -> (Vec<NodeSummary>, Option<ListDigests>) {
        use crate::analysis::held::holding;
        use crate::analysis::list::ListSummaries;
        let relevance = store.relevance();
        let mut list = ListSummaries::default();
        let ((), held) = holding(relevance.known_digests().is_none(), || {
            for (name, images) in nodes {
                list.push(summarized(store, name, images));
            }
        });
        list.batch_done(&relevance, held);
        list.finish()
    }

    /// A whole list tells the digests the wanted images are known by: the
    /// entries known by none of them never reach the store, the report is
    /// the one the entries made one by one give, and nothing is listed again.
    /// A list read against another relevance tells nothing.
    #[tokio::test(start_paused = true)]
    async fn a_list_tells_the_digests_the_wanted_images_are_known_by() {
        let wanted = Arc::new(wanted(&["ghcr.io/x/app:1"], &[], &[]));
        let store = Store::new(wanted.clone(), 50);
        let mut resyncs = store.resyncs();
        let d = |c: char| format!("ghcr.io/x/app@sha256:{}", c.to_string().repeat(64));
        let (d1, d2, d3) = (d('1'), d('2'), d('3'));
        let a: &[&[&str]] = &[&["ghcr.io/x/app:1", &d1]];
        let b: &[&[&str]] = &[&["ghcr.io/x/app:pr-7", &d2], &[&d3], &[&d1]];
        let (nodes, digests) = listed(&store, &[("a", a), ("b", b)]);
        let told = digests.as_ref().expect("told").known.clone();
        store.replace_list(nodes, digests);
        assert_eq!(kept_digests(&store, "b"), [d1.as_str()]);
        let known = store.relevance().known_digests().cloned().expect("known");
        assert_eq!(*known, told);

        let one_by_one = Store::new(wanted, 50);
        one_by_one.replace_all(vec![
            summarized(&one_by_one, "a", a),
            summarized(&one_by_one, "b", b),
        ]);
        let report = store.report().0;
        assert!(
            report.nodes[1].prepull.missing_images.is_empty(),
            "b has it by digest"
        );
        assert_eq!(report.nodes, one_by_one.report().0.nodes);
        assert_eq!(*report, whole(&store));
        assert!(
            !requested_within(&mut resyncs, Duration::from_secs(120)).await,
            "the report knows no digest the list did not"
        );

        let fresh = Store::new(Arc::new(Wanted::default()), 50);
        let (nodes, digests) = listed(&fresh, &[("b", b)]);
        let digests = digests.map(|d| ListDigests {
            relevance: Arc::new(Relevance::default()),
            ..d
        });
        fresh.replace_list(nodes, digests);
        assert!(
            fresh.relevance().known_digests().is_none(),
            "made against another relevance"
        );
    }

    #[test]
    fn the_store_cleans_up_image_names_nothing_uses() {
        use crate::analysis::reference::ImageRef;
        let store = store();
        let mut n = node("a", 1);
        let name = ImageRef::parse("ghcr.io/store-gc-test/only-here:1")
            .unwrap()
            .interned();
        use crate::analysis::node::{Entry, EntrySize};
        n.relevant_images = vec![Entry::new(vec![name], EntrySize::new(Some(1)))];
        store.replace_all(vec![n]);
        let held = |s: &str| intern::contains(s);
        assert!(held("ghcr.io/store-gc-test/only-here"));
        store.replace_all(vec![node("a", 1)]);
        assert!(
            !held("ghcr.io/store-gc-test/only-here"),
            "a complete list cleans up"
        );
    }
}
