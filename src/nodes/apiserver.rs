//! Nodes from the API server, through the `kube` client: a watch, or periodic
//! paginated lists.

//!
//! Nodes are decoded as [`NodeView`], the few fields the exporter reads, instead of
//! the whole `v1.Node`: the rest of each object is skipped while parsing.

use super::{About, Ingest, Loudness, report_failure};
use crate::analysis::list::{ListDigests, ListSummaries};
use crate::analysis::{NodeSummary, NodeView};
use crate::client::kube_error::{OneLine, StatusLine};
use crate::decode::stream;
use crate::metrics::{Failure, SourceErrorKind};
use futures::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use kube::Client;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a healthy but quiet watch marks the data as current.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(30);

pub use crate::config::ListOptions;

/// A one-line explanation for errors whose fix is known.
pub fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            " (RBAC: the service account needs get, list and watch on nodes, cluster-wide)"
        }
        kube::Error::Api(s) if s.code == 401 => " (the credentials were rejected)",
        _ => "",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{}{hint}", OneLine(.0), hint = hint(.0))]
    Api(#[from] kube::Error),
    #[error("timed out: no answer within {0:?}")]
    Timeout(Duration),
    #[error("reading the list failed: {0}")]
    Read(std::io::Error),
    #[error("the list page is not a readable NodeList: {0}")]
    Decode(serde_json::Error),
}

impl Failure for ListError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::List
    }
}

/// A watch request that failed or ended in an error, other than `410 Gone` and
/// `403 Forbidden` (see [`WatchRefused`]).
#[derive(Debug, thiserror::Error)]
#[error("{}{hint}", OneLine(.0), hint = hint(.0))]
pub struct WatchError(pub kube::Error);

impl Failure for WatchError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::Watch
    }
}

/// The identity may not watch nodes: they are listed every `interval` instead,
/// and the watch tried again every [`WATCH_RETRY`]. The first refusal says so
/// and names the missing permission; later ones, while it lasts, say less.
#[derive(Debug)]
pub struct WatchRefused<'a> {
    pub status: &'a kube::core::Status,
    pub interval: Duration,
    pub first: bool,
}

impl std::fmt::Display for WatchRefused<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = StatusLine(self.status);
        if !self.first {
            return write!(f, "watching nodes is still forbidden ({status})");
        }
        write!(
            f,
            "watching nodes is forbidden ({status}); listing all nodes every {:?} instead, \
             so the data stays fresh but changes show late. Fix: grant the exporter's \
             service account the watch verb on nodes (ClusterRole rule: apiGroups \
             [\"\"], resources [\"nodes\"], verbs [\"get\", \"list\", \"watch\"]); the \
             watch is tried again every {:?}",
            self.interval, WATCH_RETRY,
        )
    }
}

impl Failure for WatchRefused<'_> {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::Watch
    }
}

impl ListError {
    /// How long the API server asked us to wait (429 and 503 with Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ListError::Api(kube::Error::Api(s)) => s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            _ => None,
        }
    }
}

/// The most bytes of JSON one list page should carry. `--page-size` bounds a page
/// by nodes; a node with 500 images is about 90 KB, so 500 of them would make a
/// 45 MB page, which is held in memory while it is decoded. 4 MiB rather than 8:
/// in poll mode a list's page is held beside both the summaries served and the
/// new ones, and at 5,000 x 500 the smaller pages take that peak from 72 to 58 MiB
/// at no cost in time (docs/performance.md).
pub const PAGE_BYTES: usize = 4 << 20;
/// How many nodes the first page of a list asks for, before any node's size is known.
const FIRST_PAGE: u32 = 100;

/// Picks each page's `limit`: `--page-size` at most, fewer when the nodes are large,
/// so that a page stays near [`PAGE_BYTES`].
#[derive(Clone, Debug)]
pub struct PageSizer {
    max: u32,
    budget: usize,
    /// The mean size of a node in the last page that had any.
    bytes_per_node: Option<usize>,
    /// The limit of the last request.
    last: Option<u32>,
}

impl PageSizer {
    pub fn new(max: u32, budget: usize) -> PageSizer {
        PageSizer {
            max: max.max(1),
            budget,
            bytes_per_node: None,
            last: None,
        }
    }

    /// The `limit` for the next request: what fits the budget at the last page's
    /// bytes per node, but at most twice the last limit, so that a page of small
    /// nodes (a pool of small infrastructure nodes) does not make the next page,
    /// of ordinary nodes, many times the budget.
    pub fn limit(&self) -> u32 {
        let fits = match self.bytes_per_node {
            None => FIRST_PAGE,
            Some(b) => u32::try_from(self.budget / b.max(1)).unwrap_or(u32::MAX),
        };
        let grown = self.last.map_or(u32::MAX, |l| l.saturating_mul(2));
        fits.min(grown).clamp(1, self.max)
    }

    /// The bytes to reserve for the next page's body.
    fn expected_bytes(&self) -> usize {
        let per_node = self.bytes_per_node.unwrap_or(32 << 10);
        (per_node.saturating_mul(self.limit() as usize) + (64 << 10)).min(self.budget * 2)
    }

    /// Learns from a page of `items` nodes in `bytes` bytes, asked for with
    /// the limit [`PageSizer::limit`] gave.
    pub fn observe(&mut self, bytes: usize, items: usize) {
        self.last = Some(self.limit());
        if items > 0 {
            self.bytes_per_node = Some(bytes.div_ceil(items));
        }
    }
}

/// A complete list: every node's summary, and the version to watch from.
#[derive(Debug)]
pub struct Listed {
    pub nodes: Vec<NodeSummary>,
    /// The digests the wanted images are known by, as the list showed them
    /// ([`ListSummaries::finish`]).
    pub digests: Option<ListDigests>,
    pub resource_version: Option<String>,
}

/// Lists every node, one page at a time (see [`list_nodes`]).
pub async fn list_all(
    api: &Api<NodeView>,
    opts: &ListOptions,
    ingest: &Ingest,
) -> Result<Listed, ListError> {
    let mut sizer = PageSizer::new(opts.page_size, PAGE_BYTES);
    list_nodes(api, opts, ingest, &mut sizer).await
}

/// Lists every node, one page at a time. Each page is read into one buffer and
/// decoded node by node straight into summaries (`analysis::stream`, on two
/// threads when the process has two CPUs: [`Ingest::summarize_items`]), and the
/// buffer is reused for the next page: the memory held is one page's JSON plus
/// the summaries. A node that cannot be decoded is counted and
/// skipped; a page that cannot be read fails the whole list.
pub async fn list_nodes(
    api: &Api<NodeView>,
    opts: &ListOptions,
    ingest: &Ingest,
    sizer: &mut PageSizer,
) -> Result<Listed, ListError> {
    /// Whichever way the list ends.
    struct Done<'a>(&'a Ingest);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.list_done();
        }
    }
    let _done = Done(ingest);
    let client = api.clone().into_client();
    let request = kube::core::Request::new(api.resource_url());
    let mut restarted = false;
    // One buffer for every page of the list.
    let mut body = Vec::new();
    'restart: loop {
        let mut out = ListSummaries::default();
        let mut resource_version = None;
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(sizer.limit());
            if let Some(sel) = &opts.label_selector {
                lp = lp.labels(sel);
            }
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let fetched = tokio::time::timeout(
                opts.request_timeout,
                fetch_page(&client, &request, &lp, &mut body, sizer.expected_bytes()),
            )
            .await;
            match fetched {
                Err(_) => return Err(ListError::Timeout(opts.request_timeout)),
                Ok(Ok(())) => {}
                // The continue token expired (410 Gone): start over, once.
                Ok(Err(ListError::Api(kube::Error::Api(s))))
                    if s.code == 410 && token.is_some() && !restarted =>
                {
                    tracing::info!("list continuation expired; listing again from the start");
                    restarted = true;
                    continue 'restart;
                }
                Ok(Err(e)) => return Err(e),
            }
            let (page, items) = stream::list_items(&body).map_err(ListError::Decode)?;
            out.append(ingest.summarize_items(&items));
            sizer.observe(body.len(), page.items);
            tracing::debug!(
                bytes = body.len(),
                nodes = page.items,
                next_limit = sizer.limit(),
                "read a list page"
            );
            if resource_version.is_none() {
                resource_version = page.resource_version;
            }
            match page.continue_token {
                Some(t) => token = Some(t),
                None => {
                    let held = out.held_names();
                    let (nodes, digests) = out.finish();
                    tracing::debug!(
                        nodes = nodes.len(),
                        held,
                        told = digests.is_some(),
                        "the list is whole; entries held by digest alone are settled"
                    );
                    return Ok(Listed {
                        nodes,
                        digests,
                        resource_version,
                    });
                }
            }
        }
    }
}

/// Reads one list page's body into `buf` (emptied first), through the client's
/// middleware (authentication, retries, request metrics). The body's chunks are
/// appended as they come: no zero-filling of the buffer, which one list reuses
/// from page to page.
async fn fetch_page(
    client: &Client,
    request: &kube::core::Request,
    lp: &ListParams,
    buf: &mut Vec<u8>,
    capacity: usize,
) -> Result<(), ListError> {
    let mut req = request.list(lp).map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("list");
    let body = client.request_stream(req).await?;
    futures::pin_mut!(body);
    buf.clear();
    buf.reserve(capacity);
    loop {
        let chunk = body.fill_buf().await.map_err(ListError::Read)?;
        if chunk.is_empty() {
            return Ok(());
        }
        buf.extend_from_slice(chunk);
        let n = chunk.len();
        AsyncBufRead::consume(body.as_mut(), n);
    }
}

/// Lists all nodes every `interval` until shutdown. A failed list is counted and
/// retried with exponential backoff (capped at `interval`); the last good data is
/// served meanwhile.
pub async fn poll(
    client: Client,
    opts: ListOptions,
    interval: Duration,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) {
    let api: Api<NodeView> = Api::all(client);
    let mut backoff = Duration::from_secs(1);
    // Kept from list to list: a list after the first asks for pages sized by what
    // the last one learned, not for the first page's guess (100 nodes, 11 MB at
    // 500 images a node) while the summaries served are still held.
    let mut sizer = PageSizer::new(opts.page_size, PAGE_BYTES);
    let mut resyncs = ingest.store.resyncs();
    loop {
        let listed = list_nodes(&api, &opts, &ingest, &mut sizer).await;
        let wait = match listed {
            Ok(listed) => {
                tracing::debug!(nodes = listed.nodes.len(), "listed nodes");
                ingest.store.replace_list(listed.nodes, listed.digests);
                crate::sys::release_free_memory();
                backoff = Duration::from_secs(1);
                interval
            }
            Err(e) => {
                // Exponential, capped at the poll interval, and never sooner than
                // the API server asked.
                let wait = backoff
                    .min(interval)
                    .max(e.retry_after().unwrap_or_default());
                let about = About::Retry(wait);
                let what = "listing nodes failed";
                report_failure(&ingest.metrics, &e, || {}, Loudness::Warn, about, what);
                backoff = (backoff * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = resyncs.requested() => {
                tracing::info!("wanted images changed; listing nodes again");
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How long a forbidden watch is left alone before it is tried again: the rights
/// may have been granted meanwhile.
const WATCH_RETRY: Duration = Duration::from_secs(600);

/// A watch that ends this soon having delivered nothing is waited out with the
/// backoff before the next one, so a server or proxy that closes every watch at
/// once does not get one request after another.
const WATCH_MIN_LIFE: Duration = Duration::from_secs(1);

/// Follows the nodes with a watch until shutdown: a paginated list (as
/// [`list_nodes`]), then a watch with bookmarks from the list's resourceVersion.
/// A watch the server ends is resumed from the last version seen; on `410 Gone`
/// the nodes are listed again, and the store is swapped whole when that list is
/// complete, so nodes deleted while disconnected disappear and none is lost or
/// doubled meanwhile. Failures are counted and retried with backoff, which starts
/// over once a list or a watch has worked again.
///
/// When the watch is forbidden (RBAC grants `list` but not `watch`), the nodes are
/// listed every `interval` instead, so the data stays fresh, and the watch is tried
/// again every [`WATCH_RETRY`].
pub async fn watch(
    client: Client,
    opts: ListOptions,
    interval: Duration,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) {
    let resyncs = ingest.store.resyncs();
    let mut w = NodeWatch {
        api: Api::all(client),
        sizer: PageSizer::new(opts.page_size, PAGE_BYTES),
        opts,
        interval,
        ingest,
        backoff: DefaultBackoff::default(),
        version: None,
        healthy: false,
        watch_forbidden: false,
        heartbeat: tokio::time::interval(WATCH_HEARTBEAT),
        resyncs,
    };
    w.heartbeat
        .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if w.version.is_none() {
            if w.list(&shutdown).await.is_none() {
                return;
            }
            continue;
        }
        match w.follow(&shutdown).await {
            WatchEnd::Resume => {}
            WatchEnd::Relist => w.version = None,
            WatchEnd::Forbidden(status) => {
                if !w.list_only(&status, &shutdown).await {
                    return;
                }
            }
            WatchEnd::Shutdown => return,
        }
    }
}

/// How one watch request ended.
enum WatchEnd {
    /// Watch again from the last version seen.
    Resume,
    /// List again first: `410 Gone`, or the wanted images changed.
    Relist,
    /// The identity may not watch nodes.
    Forbidden(Box<kube::core::Status>),
    Shutdown,
}

/// The state of [`watch`].
struct NodeWatch {
    api: Api<NodeView>,
    opts: ListOptions,
    /// How often to list while the watch is forbidden.
    interval: Duration,
    ingest: Arc<Ingest>,
    sizer: PageSizer,
    backoff: DefaultBackoff,
    /// Where the watch continues from; `None`: list first.
    version: Option<String>,
    /// While the watch is healthy (the last thing it delivered was not an error),
    /// the data is current even when no node changes, and the refresh time says so.
    healthy: bool,
    /// The watch was forbidden, and said so in the log.
    watch_forbidden: bool,
    heartbeat: tokio::time::Interval,
    /// When the wanted images changed and the nodes must be listed again.
    resyncs: crate::store::Resyncs,
}

impl NodeWatch {
    /// Lists every node into the store. `Some(true)` when the list is complete,
    /// `Some(false)` when it failed (counted, logged, and the backoff waited out),
    /// `None` on shutdown.
    async fn list(&mut self, shutdown: &CancellationToken) -> Option<bool> {
        let listed = tokio::select! {
            r = list_nodes(&self.api, &self.opts, &self.ingest, &mut self.sizer) => r,
            _ = shutdown.cancelled() => return None,
        };
        match listed {
            Ok(listed) => {
                tracing::info!(nodes = listed.nodes.len(), "node list synced");
                self.ingest.store.replace_list(listed.nodes, listed.digests);
                crate::sys::release_free_memory();
                // A list without a version (not from a real API server) can only be
                // watched from "now".
                self.version = Some(listed.resource_version.unwrap_or_else(|| "0".into()));
                self.healthy = true;
                self.backoff.reset();
                Some(true)
            }
            Err(e) => {
                let wait = self
                    .backoff
                    .next()
                    .unwrap_or(Duration::from_secs(30))
                    .max(e.retry_after().unwrap_or_default());
                self.retry(&e, wait, shutdown).await.then_some(false)
            }
        }
    }

    /// One watch request, from the last version seen, followed until it ends.
    async fn follow(&mut self, shutdown: &CancellationToken) -> WatchEnd {
        let from = self.version.clone().unwrap_or_else(|| "0".into());
        let opened = tokio::select! {
            r = open_watch(&self.api, &self.opts, &from) => r,
            _ = shutdown.cancelled() => return WatchEnd::Shutdown,
        };
        let ingest = self.ingest.clone();
        let mut events = match opened {
            Ok(events) => Decoding {
                events: events.boxed(),
                ingest: &ingest,
            },
            Err(kube::Error::Api(s)) if s.code == 410 => {
                tracing::info!("watch expired (410 Gone); relisting nodes");
                return WatchEnd::Relist;
            }
            Err(kube::Error::Api(s)) if s.code == 403 => return WatchEnd::Forbidden(s),
            Err(e) => return self.failed(WatchError(e), shutdown).await,
        };
        if std::mem::take(&mut self.watch_forbidden) {
            tracing::info!("watching nodes is allowed again; following changes with a watch");
        }
        let started = std::time::Instant::now();
        let mut delivered = false;
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = self.heartbeat.tick() => {
                    if self.healthy {
                        self.ingest.store.touch();
                    }
                    continue;
                }
                _ = self.resyncs.requested() => {
                    // The summaries lack names the wanted images now need: list
                    // again (the store is swapped whole when the list is complete).
                    tracing::info!("wanted images changed; listing nodes again");
                    return WatchEnd::Relist;
                }
                _ = shutdown.cancelled() => return WatchEnd::Shutdown,
            };
            let event = match event {
                // The server ended the watch (its timeout, a dropped connection):
                // continue from the last version seen.
                None => return self.ended(delivered, started, shutdown).await,
                Some(event) => event,
            };
            if let Some(end) = self.apply(event, shutdown).await {
                // The client keeps a buffer the size of the largest event for as
                // long as the watch lasts: drop it, and return the memory.
                drop(events);
                crate::sys::release_free_memory();
                return end;
            }
            delivered = true;
        }
    }

    /// Applies one watch event to the store; `Some` when the watch is over.
    async fn apply(
        &mut self,
        event: kube::Result<WatchEvent<NodeView>>,
        shutdown: &CancellationToken,
    ) -> Option<WatchEnd> {
        let ingest = &self.ingest;
        let delivered = match event {
            Ok(WatchEvent::Added(node) | WatchEvent::Modified(node)) => {
                let mut huge = false;
                match ingest.summarize(&node) {
                    Some(s) => {
                        huge = s.image_count >= HUGE_EVENT_IMAGES;
                        ingest.store.upsert(s)
                    }
                    // Relabeled out of --node-selector, or nameless.
                    None => {
                        if let Some(name) = node.metadata.name.as_deref() {
                            ingest.store.remove(name);
                        }
                    }
                }
                if huge {
                    // Continue from this version on a new watch, so that the
                    // client's event buffer of this size is freed.
                    self.healthy = true;
                    self.backoff.reset();
                    self.version = node
                        .metadata
                        .resource_version
                        .clone()
                        .or(self.version.take());
                    return Some(WatchEnd::Resume);
                }
                node.metadata.resource_version.clone()
            }
            Ok(WatchEvent::Deleted(node)) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    ingest.store.remove(name);
                }
                node.metadata.resource_version.clone()
            }
            Ok(WatchEvent::Bookmark(b)) => Some(b.metadata.resource_version),
            Ok(WatchEvent::Error(s)) if s.code == 410 => {
                // Expected now and then: the resourceVersion was compacted away.
                tracing::info!("watch expired (410 Gone); relisting nodes");
                return Some(WatchEnd::Relist);
            }
            Ok(WatchEvent::Error(s)) if s.code == 403 => return Some(WatchEnd::Forbidden(s)),
            Ok(WatchEvent::Error(s)) => {
                return Some(self.failed(WatchError(kube::Error::Api(s)), shutdown).await);
            }
            // One event the projection cannot read: that node's update is lost,
            // the watch goes on.
            Err(kube::Error::SerdeError(e)) => {
                ingest.undecodable("in a watch event", &e.to_string());
                return None;
            }
            Err(e) => return Some(self.failed(WatchError(e), shutdown).await),
        };
        // The watch works: the next failure starts the backoff over.
        self.healthy = true;
        self.backoff.reset();
        if let Some(rv) = delivered {
            self.version = Some(rv);
        }
        None
    }

    /// The server ended a watch. One that ended at once with nothing delivered is
    /// waited out with the backoff, so such watches are not asked for in a loop.
    async fn ended(
        &mut self,
        delivered: bool,
        started: std::time::Instant,
        shutdown: &CancellationToken,
    ) -> WatchEnd {
        if delivered || started.elapsed() >= WATCH_MIN_LIFE {
            return WatchEnd::Resume;
        }
        let wait = self.backoff.next().unwrap_or(Duration::from_secs(30));
        tracing::debug!(retry_in = ?wait, "the watch ended at once; waiting before the next");
        if pause(wait, shutdown).await {
            WatchEnd::Resume
        } else {
            WatchEnd::Shutdown
        }
    }

    /// Counts and logs a failed list or watch (the data is no longer known to be
    /// current), then waits `wait`; `false` on shutdown.
    async fn retry(
        &mut self,
        failure: &impl Failure,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let what = format!("node {} failed, retrying with backoff", failure.kind());
        let unhealthy = || self.healthy = false;
        let about = About::Retry(wait);
        report_failure(
            &self.ingest.metrics,
            failure,
            unhealthy,
            Loudness::Warn,
            about,
            &what,
        );
        pause(wait, shutdown).await
    }

    /// Counts and logs a failed watch, then waits out the backoff.
    async fn failed(&mut self, e: WatchError, shutdown: &CancellationToken) -> WatchEnd {
        let wait = self.backoff.next().unwrap_or(Duration::from_secs(30));
        if self.retry(&e, wait, shutdown).await {
            WatchEnd::Resume
        } else {
            WatchEnd::Shutdown
        }
    }

    /// While the watch is forbidden: lists every `interval` for [`WATCH_RETRY`],
    /// then returns to try the watch again. The first refusal is logged as a
    /// warning naming the missing permission; later ones, while it lasts, at debug
    /// level. Each is counted. `false` on shutdown.
    async fn list_only(
        &mut self,
        status: &kube::core::Status,
        shutdown: &CancellationToken,
    ) -> bool {
        let refused = WatchRefused {
            status,
            interval: self.interval,
            first: !self.watch_forbidden,
        };
        let loudness = if refused.first {
            Loudness::Warn
        } else {
            Loudness::Debug
        };
        let said = || self.watch_forbidden = true;
        report_failure(
            &self.ingest.metrics,
            &refused,
            said,
            loudness,
            About::Source,
            "",
        );
        let retry_at = tokio::time::Instant::now() + WATCH_RETRY;
        while tokio::time::Instant::now() < retry_at {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.resyncs.requested() => {
                    tracing::info!("wanted images changed; listing nodes again");
                }
                _ = shutdown.cancelled() => return false,
            }
            if self.list(shutdown).await.is_none() {
                return false;
            }
        }
        true
    }
}

/// Opens a watch of the nodes from `from`, with bookmarks and the server-side
/// timeout, through the client's middleware.
async fn open_watch(
    api: &Api<NodeView>,
    opts: &ListOptions,
    from: &str,
) -> kube::Result<impl futures::Stream<Item = kube::Result<WatchEvent<NodeView>>> + use<>> {
    let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    if let Some(sel) = &opts.label_selector {
        wp = wp.labels(sel);
    }
    api.watch(&wp, from).await
}

/// The server-side timeout asked for each watch request, as kube's watcher does.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Sleeps for `d`; `false` if shutdown came first.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// A node with this many images (an event of about 14 MB) ends the watch after
/// it, which then continues from its version: see the watch loop.
const HUGE_EVENT_IMAGES: u32 = 100_000;

/// Watch events, each decoded under [`Ingest::decoding`] (the client decodes an
/// event while the stream is polled): a node's image entries are summarized as
/// they are read.
struct Decoding<'a, S> {
    events: S,
    ingest: &'a Ingest,
}

impl<S: futures::Stream + Unpin> futures::Stream for Decoding<'_, S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = &mut *self;
        this.ingest
            .decoding(|| std::pin::Pin::new(&mut this.events).poll_next(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_bytes_per_node() {
        let mut s = PageSizer::new(500, 8 << 20);
        assert_eq!(s.limit(), 100, "first page, sizes unknown");
        // 112 KB nodes (500 images each): 74 a page.
        s.observe(100 * 112_000, 100);
        assert_eq!(s.limit(), 74);
        // A page of small nodes lets the next grow, but only to twice the last.
        s.observe(70 * 10_000, 70);
        assert_eq!(s.limit(), 148);
        s.observe(148 * 10_000, 148);
        assert_eq!(s.limit(), 296);
        // Back to large nodes: shrinks at once.
        s.observe(296 * 112_000, 296);
        assert_eq!(s.limit(), 74);
        // Small nodes everywhere: --page-size caps it.
        for _ in 0..5 {
            let l = s.limit() as usize;
            s.observe(l * 3_000, l);
        }
        assert_eq!(s.limit(), 500);
        // An empty page teaches nothing; a huge node still gets a page of one.
        s.observe(0, 0);
        assert_eq!(s.limit(), 500);
        s.observe(50 << 20, 1);
        assert_eq!(s.limit(), 1);
        assert_eq!(PageSizer::new(0, 8 << 20).limit(), 1, "--page-size 0 is 1");
        assert_eq!(PageSizer::new(20, 8 << 20).limit(), 20);
    }

    #[test]
    fn hints_name_the_missing_permission() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(hint(&status(403)).contains("list and watch on nodes"));
        assert_eq!(hint(&status(500)), "");
    }
}
