//! Nodes from the API server, through the `kube` client: a watch, or periodic
//! paginated lists.

//!
//! Nodes are decoded as [`NodeView`], the few fields the exporter reads, instead of
//! the whole `v1.Node`: the rest of each object is skipped while parsing.

use super::Ingest;
use crate::analysis::{NodeSummary, NodeView};
use crate::metrics::SourceErrorKind;
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a healthy but quiet watch marks the data as current.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(30);

/// How the nodes are listed.
#[derive(Clone, Debug)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub page_size: u32,
    /// Limit for one page request.
    pub request_timeout: Duration,
}

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
    #[error("{0}{hint}", hint = hint(.0))]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
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

/// Lists every node, one page at a time, summarizing each page before the next is
/// fetched so that only one page of decoded nodes is held at once.
pub async fn list_all(
    api: &Api<NodeView>,
    opts: &ListOptions,
    ingest: &Ingest,
) -> Result<Vec<NodeSummary>, ListError> {
    let mut restarted = false;
    'restart: loop {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(opts.page_size);
            if let Some(sel) = &opts.label_selector {
                lp = lp.labels(sel);
            }
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = match tokio::time::timeout(opts.request_timeout, api.list(&lp)).await {
                Err(_) => return Err(ListError::Timeout(opts.request_timeout)),
                Ok(Ok(p)) => p,
                // The continue token expired (410 Gone): start over, once.
                Ok(Err(kube::Error::Api(s))) if s.code == 410 && token.is_some() && !restarted => {
                    tracing::info!("list continuation expired; listing again from the start");
                    restarted = true;
                    continue 'restart;
                }
                Ok(Err(e)) => return Err(e.into()),
            };
            out.extend(page.items.iter().filter_map(|n| ingest.summarize(n)));
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
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
    loop {
        let wait = match list_all(&api, &opts, &ingest).await {
            Ok(nodes) => {
                tracing::debug!(nodes = nodes.len(), "listed nodes");
                ingest.store.replace_all(nodes);
                crate::sys::release_free_memory();
                backoff = Duration::from_secs(1);
                interval
            }
            Err(e) => {
                ingest.metrics.source_error(SourceErrorKind::List);
                // Exponential, capped at the poll interval, and never sooner than
                // the API server asked.
                let wait = backoff
                    .min(interval)
                    .max(e.retry_after().unwrap_or_default());
                tracing::warn!(retry_in = ?wait, "listing nodes failed: {e}");
                backoff = (backoff * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ingest.store.resync_requested() => {
                tracing::info!("wanted repositories changed; listing nodes again");
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Follows the nodes with a watch until shutdown. The watcher lists (paginated),
/// then watches with bookmarks; on `410 Gone` or a broken stream it relists, and
/// the store is swapped whole when the relist is complete, so nodes deleted while
/// disconnected disappear and none is lost or doubled meanwhile.
pub async fn watch(
    client: Client,
    opts: ListOptions,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) {
    let api: Api<NodeView> = Api::all(client);
    let mut config = watcher::Config::default().page_size(opts.page_size);
    if let Some(sel) = &opts.label_selector {
        config = config.labels(sel);
    }
    let start = || {
        watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let mut stream = start();
    let mut buffer: Vec<NodeSummary> = Vec::new();
    // The watcher does not surface bookmarks, so a quiet but healthy watch shows
    // no events: while the last thing it yielded was not an error, the data is
    // current, and the refresh time says so.
    let mut healthy = false;
    let mut heartbeat = tokio::time::interval(WATCH_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            e = stream.try_next() => e,
            _ = heartbeat.tick() => {
                if healthy {
                    ingest.store.touch();
                }
                continue;
            }
            _ = ingest.store.resync_requested() => {
                // The summaries lack entries the wanted images now need: list
                // again (the store is swapped whole when the list is complete).
                tracing::info!("wanted repositories changed; listing nodes again");
                stream = start();
                buffer.clear();
                continue;
            }
            _ = shutdown.cancelled() => return,
        };
        healthy = event.is_ok();
        match event {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(node))) => buffer.extend(ingest.summarize(&node)),
            Ok(Some(Event::InitDone)) => {
                let nodes = std::mem::take(&mut buffer);
                tracing::info!(nodes = nodes.len(), "node list synced");
                ingest.store.replace_all(nodes);
                crate::sys::release_free_memory();
            }
            Ok(Some(Event::Apply(node))) => match ingest.summarize(&node) {
                Some(s) => ingest.store.upsert(s),
                // Relabeled out of --node-selector, or nameless.
                None => {
                    if let Some(name) = node.metadata.name.as_deref() {
                        ingest.store.remove(name);
                    }
                }
            },
            Ok(Some(Event::Delete(node))) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    ingest.store.remove(name);
                }
            }
            Ok(None) => {
                tracing::error!("node watch stream ended");
                return;
            }
            Err(e) => record_watch_error(&ingest, &e),
        }
    }
}

fn record_watch_error(ingest: &Ingest, e: &watcher::Error) {
    let (kind, api_error) = match e {
        watcher::Error::InitialListFailed(e) => (SourceErrorKind::List, Some(e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            (SourceErrorKind::Watch, Some(e))
        }
        watcher::Error::WatchError(s) if s.code == 410 => {
            // Expected now and then: the resourceVersion was compacted away.
            tracing::info!("watch expired (410 Gone); relisting nodes");
            return;
        }
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => {
            (SourceErrorKind::Watch, None)
        }
    };
    ingest.metrics.source_error(kind);
    let hint = api_error.map(hint).unwrap_or("");
    tracing::warn!(%kind, "node {kind} failed, retrying with backoff: {e}{hint}");
}

#[cfg(test)]
mod tests {
    use super::*;

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
