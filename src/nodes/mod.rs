//! Where node data comes from: the API server (a watch or periodic lists), or a
//! `kubectl get nodes -o json` file, the kubelets (configz, stats/summary), the node
//! agents, and the prepullers that decide the wanted images.
//!
//! Every source turns each node into a compact summary as it arrives, through
//! [`Ingest`], and keeps the [`Store`] current. [`supervise`] runs the node source
//! and restarts it if it ever stops. A read that fails is counted, marked and
//! logged by [`report_failure`], under the kind its error names.

pub mod agents;
pub mod apiserver;

pub mod file;

pub mod kubelet;

use crate::analysis::held::holding;
use crate::analysis::list::ListSummaries;
use crate::analysis::node::{
    decoding_for, forget_recent_names, remembering_names, summarize_with, with_name_cache,
};
use crate::analysis::selector::LabelSelector;
use crate::analysis::{InvalidField, NodeSummary, NodeView, Relevance};
use crate::metrics::{Failure, Metrics};
use crate::store::Store;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Turns decoded nodes into summaries, counting and logging malformed data.
pub struct Ingest {
    /// `--node-selector`: nodes outside it are not looked at at all.
    pub node_selector: LabelSelector,
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
}

impl Ingest {
    /// The summary of a node, or `None` when the node is outside `--node-selector`,
    /// is not a Node, or has no name (counted and logged).
    pub fn summarize(&self, view: &NodeView) -> Option<NodeSummary> {
        self.summarize_against(view, &self.store.relevance())
    }

    /// [`Ingest::summarize`], for `relevance`.
    fn summarize_against(
        &self,
        view: &NodeView,
        relevance: &Arc<Relevance>,
    ) -> Option<NodeSummary> {
        let labels = view.metadata.labels.as_ref();
        if !self.node_selector.is_empty()
            && !self
                .node_selector
                .matches(labels.unwrap_or(&BTreeMap::new()))
        {
            return None;
        }
        let summary = with_name_cache(relevance, |names| summarize_with(view, relevance, names));
        let summary = match summary {
            Ok(s) => s,
            Err(problem) => {
                self.metrics.invalid_field(problem.field);
                tracing::warn!(field = %problem.field, "skipping item: {}", problem.detail);
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
                    tracing::warn!(node = %summary.name, field = %p.field, "malformed node data: {}", p.detail);
                }
            }
        }
        Some(summary)
    }

    /// Runs `f`, in which nodes decoded on this thread keep only what their
    /// summaries need (`analysis::node::decoding_for`): a node's memory while it
    /// is decoded is then bounded by its summary, not by its image count.
    pub fn decoding<R>(&self, f: impl FnOnce() -> R) -> R {
        decoding_for(self.store.relevance(), f)
    }

    /// Runs `f`, a batch of a list (a page or half of one, a nodes file)
    /// decoded and summarized on this thread ([`Batch::add`]), against the
    /// wanted images of now; returns what it made of them. Nodes decoded in it
    /// keep only what their summaries need (`analysis::node::decoding_for`): a
    /// node's memory while it is decoded is bounded by its summary, not by its
    /// image count. Names seen lately are remembered from node to node
    /// ([`remembering_names`]) until [`Ingest::list_done`]. Entries kept for a
    /// digest alone are held apart until the list is whole
    /// ([`crate::analysis::held`]).
    pub fn batch<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> R) -> (R, ListSummaries) {
        let relevance = self.store.relevance();
        let mut batch = Batch {
            ingest: self,
            relevance: relevance.clone(),
            out: ListSummaries::default(),
        };
        let (r, held) = decoding_for(relevance.clone(), || {
            let hold = relevance.known_digests().is_none();
            remembering_names(|| holding(hold, || f(&mut batch)))
        });
        let mut out = batch.out;
        out.batch_done(&relevance, held);
        (r, out)
    }

    /// The summaries of a list page's items (delimited, not yet decoded), in
    /// order; an item that cannot be decoded is counted and skipped. Decoding is
    /// most of the work of a list, and items are independent: with two CPUs or
    /// more (as the process's affinity and CPU quota allow), the two halves of a
    /// page are decoded at once, on two threads kept for it ([`decode_pool`]).
    pub fn summarize_items(&self, items: &[&RawValue]) -> ListSummaries {
        let decode = |items: &[&RawValue]| {
            let ((), out) = self.batch(|batch| {
                for raw in items {
                    match serde_json::from_str::<NodeView>(raw.get()) {
                        Ok(node) => {
                            batch.add(&node);
                        }
                        Err(e) => self.undecodable("in a list page", &e.to_string()),
                    }
                }
            });
            out
        };
        let pool = match decode_pool() {
            Some(pool) if items.len() >= SPLIT_MIN_ITEMS => pool,
            _ => return decode(items),
        };
        let (first, second) = items.split_at(items.len() / 2);
        let (mut out, rest) = pool.join(|| decode(first), || decode(second));
        out.append(rest);
        out
    }

    /// After a whole list (or nodes file), done or abandoned: gives back the
    /// tables of recent names ([`remembering_names`]) of the threads that
    /// decoded it. They repay themselves only over a list's thousands of nodes;
    /// kept until the next list, they would hold about 1.4 MiB per thread.
    pub fn list_done(&self) {
        if let Some(pool) = decode_pool() {
            pool.broadcast(|_| forget_recent_names());
        }
        forget_recent_names();
    }

    /// Counts a node that could not be used at all.
    pub fn undecodable(&self, what: &str, error: &str) {
        self.metrics.invalid_field(InvalidField::Node);
        tracing::warn!(field = %InvalidField::Node, "skipping undecodable node {what}: {error}");
    }
}

/// A batch of a list being summarized ([`Ingest::batch`]).
pub struct Batch<'a> {
    ingest: &'a Ingest,
    relevance: Arc<Relevance>,
    out: ListSummaries,
}

impl Batch<'_> {
    /// Summarizes a node decoded in the batch ([`Ingest::summarize`]); returns
    /// its name when it is kept.
    pub fn add(&mut self, view: &NodeView) -> Option<&str> {
        let summary = self.ingest.summarize_against(view, &self.relevance)?;
        self.out.push(summary);
        self.out.nodes().last().map(|s| s.name.as_str())
    }
}

/// Fewer items than this are decoded on one thread: starting a second costs
/// more than it saves.
const SPLIT_MIN_ITEMS: usize = 16;

/// The two threads that decode list pages, when the process may run on two
/// CPUs at once (its affinity and CPU quota); `None` otherwise, or when the
/// threads could not be started (then pages are decoded where they are read).
/// The threads live as long as the process, so their name caches
/// (`analysis::node::NameCache`) stay warm from page to page, and their
/// repositories from list to list; between lists they sleep.
fn decode_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::LazyLock<Option<rayon::ThreadPool>> = std::sync::LazyLock::new(|| {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .thread_name(|i| format!("decode-{i}"))
            .build()
            .inspect_err(|e| tracing::warn!("decoding list pages on one thread: {e}"))
            .ok()
    });
    POOL.as_ref()
}

/// How loudly a failed read is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loudness {
    /// The source as a whole is unusable (a nodes file, the agents' client).
    Error,
    /// A read failed, or failed otherwise than the last time.
    Warn,
    /// The same failure as the last time, or an expected one.
    Debug,
    /// Counted and marked, not logged: said already.
    Quiet,
}

/// What a failed read was about, the field of its log line.
#[derive(Clone, Copy, Debug)]
pub enum About<'a> {
    /// The node source as a whole, tried again after this wait (`retry_in`).
    Retry(std::time::Duration),
    /// One node's kubelet or agent (`node`).
    Node(&'a str),
    /// The nodes file (`path`).
    File(&'a Path),
    /// The agents' Service (`namespace`, `service`).
    Service {
        namespace: &'a str,
        service: &'a str,
    },
    /// Nothing beyond the message.
    Source,
}

/// Logs `$($field)*` and the message at the given [`Loudness`].
macro_rules! log_at {
    ($loudness:expr, $($args:tt)+) => {
        match $loudness {
            Loudness::Error => tracing::error!($($args)+),
            Loudness::Warn => tracing::warn!($($args)+),
            Loudness::Debug => tracing::debug!($($args)+),
            Loudness::Quiet => {}
        }
    };
}

/// A failed read of node data, in one place: counts it in
/// `imagecap_source_errors_total` under its own kind, runs `mark` (what the
/// failure leaves stale or unknown: a node's kubelet data, its runtime view, the
/// source's health), and logs `{what}: {failure}` (the failure alone when `what`
/// is empty) at `loudness`, with the kind and what it was `about` as fields.
pub fn report_failure(
    metrics: &Metrics,
    failure: &impl Failure,
    mark: impl FnOnce(),
    loudness: Loudness,
    about: About<'_>,
    what: &str,
) {
    let kind = failure.kind();
    metrics.source_error(kind);
    mark();
    let line = Line { what, failure };
    match about {
        About::Retry(wait) => log_at!(loudness, %kind, retry_in = ?wait, "{line}"),
        About::Node(node) => log_at!(loudness, %kind, %node, "{line}"),
        About::File(path) => log_at!(loudness, %kind, path = %path.display(), "{line}"),
        About::Service { namespace, service } => {
            log_at!(loudness, %kind, %namespace, %service, "{line}")
        }
        About::Source => log_at!(loudness, %kind, "{line}"),
    }
}

/// `{what}: {failure}`, or the failure alone.
struct Line<'a, F> {
    what: &'a str,
    failure: &'a F,
}

impl<F: Display> Display for Line<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.what.is_empty() {
            self.failure.fmt(f)
        } else {
            write!(f, "{}: {}", self.what, self.failure)
        }
    }
}

/// First wait before restarting a source that stopped.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between restarts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A source that ran this long before stopping starts again at the first wait.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(300);

/// Runs the node source made by `start` until `shutdown`. A source only returns on
/// shutdown; if it stops otherwise, or panics, that is logged and counted, the
/// store reports not ready (its last data is still served), and the source is
/// started again with exponential backoff.
pub async fn supervise<F, Fut>(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        store.set_source_live(true);
        let started = Instant::now();
        let outcome = tokio::spawn(start()).await;
        if shutdown.is_cancelled() {
            return;
        }
        store.set_source_live(false);
        metrics.source_restarted();
        if started.elapsed() >= RESTART_BACKOFF_RESET {
            backoff = RESTART_BACKOFF_MIN;
        }
        match outcome {
            Ok(()) => tracing::error!(restart_in = ?backoff, "the node source stopped"),
            Err(e) if e.is_panic() => {
                tracing::error!(restart_in = ?backoff, "the node source panicked: {e}")
            }
            Err(e) => tracing::error!(restart_in = ?backoff, "the node source failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Wanted;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A page's items are summarized in their order, whether its halves were
    /// decoded on two threads or not, and an undecodable item is counted and
    /// skipped wherever it falls.
    #[test]
    fn a_page_is_summarized_in_order_and_its_bad_items_skipped() {
        let store = Arc::new(Store::new(Arc::new(Wanted::default()), 50));
        let metrics = Arc::new(Metrics::new("x"));
        let ingest = Ingest {
            node_selector: LabelSelector::default(),
            metrics: metrics.clone(),
            store,
        };
        for n in [0, 1, SPLIT_MIN_ITEMS - 1, SPLIT_MIN_ITEMS, 101] {
            let texts: Vec<String> = (0..n)
                .map(|i| match i % 7 {
                    3 => "[\"not a node\"]".to_string(),
                    _ => format!(r#"{{"metadata":{{"name":"n{i}"}},"status":{{}}}}"#),
                })
                .collect();
            let raws: Vec<Box<RawValue>> = texts
                .iter()
                .map(|t| RawValue::from_string(t.clone()).unwrap())
                .collect();
            let items: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
            let before = metrics.render(&ingest.store.report().0, None);
            let names: Vec<String> = ingest
                .summarize_items(&items)
                .finish()
                .0
                .into_iter()
                .map(|s| s.name)
                .collect();
            let want: Vec<String> = (0..n)
                .filter(|i| i % 7 != 3)
                .map(|i| format!("n{i}"))
                .collect();
            assert_eq!(names, want, "{n} items");
            let bad = (0..n).filter(|i| i % 7 == 3).count();
            let after = metrics.render(&ingest.store.report().0, None);
            assert_eq!(
                invalid_nodes(&after) - invalid_nodes(&before),
                bad as u64,
                "{n} items"
            );
        }
    }

    /// `imagecap_invalid_node_data_total{field="node"}` in a rendering.
    fn invalid_nodes(text: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("imagecap_invalid_node_data_total{field=\"node\"} "))
            .map_or(0, |v| v.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_dies_is_restarted_and_readiness_follows() {
        let store = Arc::new(Store::new(Arc::new(Wanted::default()), 50));
        store.replace_all(vec![]);
        let metrics = Arc::new(Metrics::new("x"));
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let (s, m, stop, n) = (
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
            starts.clone(),
        );
        let supervisor = tokio::spawn(supervise(s, m, stop.clone(), move || {
            let attempt = n.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                match attempt {
                    // The first run stops at once, the second panics, the third
                    // runs until shutdown as a source should.
                    0 => {}
                    1 => panic!("source bug"),
                    _ => stop.cancelled().await,
                }
            }
        }));
        // Let the first run end: not ready while waiting to restart.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(!store.ready(), "no live source");
        // 1 s later the second run starts and panics; 2 s after that the third.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(!store.ready());
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(store.ready(), "live again");
        let text = metrics.render(&store.report().0, None);
        assert!(
            text.lines()
                .any(|l| l == "imagecap_source_restarts_total 2"),
            "{text}"
        );
        shutdown.cancel();
        supervisor.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 3, "no restart on shutdown");
    }
}
