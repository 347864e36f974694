//! Wanted images from the prepullers themselves: Nublado's status endpoint
//! (polled), kube-fledged `ImageCache`s and prepuller DaemonSets (watched). Each
//! failed read is counted, the source keeps its last good list and shows as down,
//! and it is retried with backoff; the exporter stays ready on node data alone.

use crate::analysis::WantSource;
use crate::analysis::prepullers::{
    MAX_IMAGES_PER_SOURCE, Wants, cap_groups, daemonset_groups, imagecache_groups, nublado_wants,
};
use crate::client::http::{http_error, redirect_error};
use crate::client::kube_error::WatcherLine;
use crate::metrics::{Metrics, SourceErrorKind};
use crate::store::Store;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest Nublado status body read; a bigger one is an error.
pub const MAX_NUBLADO_BODY: usize = 32 << 20;

pub use crate::config::NubladoOptions;

fn read_token(path: &Path) -> Result<String, String> {
    let token =
        std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    Ok(token.trim().to_string())
}

/// One read of Nublado's prepuller status: the groups it wants, problems with
/// single images (logged; the rest is kept), and the references past the cap.
/// The body is decoded on a blocking thread, off the async workers.
pub async fn fetch_nublado(
    client: &reqwest::Client,
    opts: &NubladoOptions,
) -> Result<Wants, String> {
    let body = read_nublado(client, opts).await?;
    tokio::task::spawn_blocking(move || nublado_wants(&body, MAX_IMAGES_PER_SOURCE))
        .await
        .map_err(|e| format!("decoding the answer failed: {e}"))?
}

/// The body of Nublado's answer, at most [`MAX_NUBLADO_BODY`] bytes.
async fn read_nublado(client: &reqwest::Client, opts: &NubladoOptions) -> Result<Vec<u8>, String> {
    if let Some(path) = &opts.file {
        let text = crate::config::read_to_string_limited(path, MAX_NUBLADO_BODY as u64)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(text.into_bytes());
    }
    let mut request = client.get(&opts.url).timeout(opts.timeout);
    if let Some(path) = &opts.token_file {
        request = request.bearer_auth(read_token(path)?);
    }
    let error = |e: reqwest::Error| http_error(&e, opts.timeout);
    let mut response = request.send().await.map_err(error)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(redirect_error(&opts.url, &response));
    }
    if !status.is_success() {
        return Err(format!("{} answered {status}", opts.url));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_NUBLADO_BODY as u64)
    {
        return Err(format!(
            "the answer is larger than {MAX_NUBLADO_BODY} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(error)? {
        if body.len() + chunk.len() > MAX_NUBLADO_BODY {
            return Err(format!(
                "the answer is larger than {MAX_NUBLADO_BODY} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The client for Nublado: rustls with the process's crypto provider; redirects
/// are not followed (an answer that redirects is an error).
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Logs, once per change, that a source listed more images than it may
/// contribute.
pub fn log_dropped(source: WantSource, dropped: u64, logged: &mut u64) {
    if dropped == *logged {
        return;
    }
    if dropped > 0 {
        tracing::warn!(
            source = %source,
            dropped,
            "the source lists more than {MAX_IMAGES_PER_SOURCE} distinct images; keeping the \
             first {MAX_IMAGES_PER_SOURCE}, {dropped} image references dropped"
        );
    } else {
        tracing::info!(source = %source, "the source lists no more images than the cap again");
    }
    *logged = dropped;
}

/// Polls Nublado every `interval` until shutdown; after a failure, sooner, with
/// exponential backoff capped at the interval. Shutdown is honoured while an
/// answer is read or decoded.
pub async fn nublado(
    opts: NubladoOptions,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    store.add_source(WantSource::Nublado);
    metrics.expect_source_data(WantSource::Nublado);
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(source = "nublado", "{e}");
            metrics.source_error(SourceErrorKind::Nublado);
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let mut logged_problems: Vec<String> = Vec::new();
    let mut logged_dropped = 0;
    loop {
        let read = tokio::select! {
            r = fetch_nublado(&client, &opts) => r,
            _ = shutdown.cancelled() => return,
        };
        let wait = match read {
            Ok(mut wants) => {
                if wants.problems != logged_problems {
                    for p in &wants.problems {
                        tracing::warn!(source = "nublado", "skipping an image: {p}");
                    }
                    logged_problems = std::mem::take(&mut wants.problems);
                }
                log_dropped(WantSource::Nublado, wants.dropped, &mut logged_dropped);
                for &(field, n) in &wants.invalid {
                    metrics.invalid_source_data(WantSource::Nublado, field, n);
                }
                let images: usize = wants.groups.iter().map(|g| g.images.len()).sum();
                tracing::debug!(
                    source = "nublado",
                    images,
                    "read Nublado's prepuller status"
                );
                store.source_succeeded(WantSource::Nublado, wants);
                backoff = Duration::from_secs(1);
                opts.interval
            }
            Err(e) => {
                metrics.source_error(SourceErrorKind::Nublado);
                store.source_failed(WantSource::Nublado);
                let wait = backoff.min(opts.interval);
                tracing::warn!(source = "nublado", url = %opts.url, retry_in = ?wait,
                    "cannot read Nublado's prepuller status, keeping the last list: {e}");
                backoff = (backoff * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// kube-fledged's `ImageCache` resource.
pub fn imagecache_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubefledged.io", "v1alpha2", "ImageCache"),
        "imagecaches",
    )
}

pub fn imagecache_api(client: Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = imagecache_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

pub fn daemonset_api(client: Client, namespace: Option<&str>) -> Api<DaemonSet> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The groups an ImageCache wants.
pub fn imagecache_to_groups(o: &DynamicObject) -> Wants {
    let name = o.metadata.name.as_deref().unwrap_or("<unnamed>");
    match o.data.get("spec") {
        Some(spec) => imagecache_groups(name, spec, MAX_IMAGES_PER_SOURCE),
        None => Wants {
            problems: vec![format!("ImageCache {name}: no spec")],
            ..Wants::default()
        },
    }
}

/// The groups a prepuller DaemonSet wants.
pub fn daemonset_to_groups(ds: &DaemonSet) -> Wants {
    daemonset_groups(ds, MAX_IMAGES_PER_SOURCE)
}

/// The kinds of objects that say what is wanted, for [`watch_groups`].
pub struct Watched {
    pub source: WantSource,
    pub error_kind: SourceErrorKind,
    /// For messages: "ImageCaches", "DaemonSets".
    pub what: &'static str,
}

/// What all objects of a source want together: their groups in order, capped at
/// [`MAX_IMAGES_PER_SOURCE`] distinct images over all of them.
fn combine<'a>(objects: impl IntoIterator<Item = &'a Wants>) -> Wants {
    let objects: Vec<&Wants> = objects.into_iter().collect();
    let (groups, dropped) = cap_groups(
        objects.iter().flat_map(|w| &w.groups),
        MAX_IMAGES_PER_SOURCE,
    );
    Wants {
        groups,
        problems: objects.iter().flat_map(|w| w.problems.clone()).collect(),
        dropped: dropped + objects.iter().map(|w| w.dropped).sum::<u64>(),
        ..Wants::default()
    }
}

/// Lists every object of `api`, as `check` does: the groups they want.
pub async fn list_groups<K>(
    api: &Api<K>,
    label_selector: Option<&str>,
    to_groups: fn(&K) -> Wants,
) -> Result<Wants, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug,
{
    let mut lp = kube::api::ListParams::default();
    if let Some(s) = label_selector {
        lp = lp.labels(s);
    }
    let list = api.list(&lp).await?;
    let wants: Vec<Wants> = list.items.iter().map(to_groups).collect();
    Ok(combine(&wants))
}

fn object_key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

/// Follows the objects of `api` with a watch until shutdown, keeping the store's
/// groups for `watched.source` equal to what the live objects want. Each object
/// is turned into groups on a blocking thread, off the async workers.
pub async fn watch_groups<K>(
    api: Api<K>,
    label_selector: Option<String>,
    watched: Watched,
    to_groups: fn(&K) -> Wants,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    store.add_source(watched.source);
    let mut config = watcher::Config::default();
    if let Some(s) = &label_selector {
        config = config.labels(s);
    }
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut watch = GroupsWatch {
        watched,
        to_groups,
        store,
        metrics,
        shutdown,
        objects: BTreeMap::new(),
        buffer: BTreeMap::new(),
        logged_dropped: 0,
    };
    loop {
        let event = tokio::select! {
            e = stream.try_next() => e,
            _ = watch.shutdown.cancelled() => return,
        };
        if watch.apply(event).await.is_break() {
            return;
        }
    }
}

/// The state of one [`watch_groups`]: what it watches and where the groups go,
/// and the objects seen so far.
struct GroupsWatch<K> {
    watched: Watched,
    to_groups: fn(&K) -> Wants,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// What each live object wants, by [`object_key`].
    objects: BTreeMap<String, Wants>,
    /// The objects of a relist under way, replacing `objects` once complete.
    buffer: BTreeMap<String, Wants>,
    /// The dropped count last logged ([`log_dropped`]).
    logged_dropped: u64,
}

impl<K> GroupsWatch<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    /// Applies one watch event (or the watch's failure) to the objects, and
    /// the objects to the store. `Break` when the watch is over: on shutdown or
    /// when its stream ended.
    async fn apply(&mut self, event: Result<Option<Event<K>>, watcher::Error>) -> ControlFlow<()> {
        let source = self.watched.source;
        match event {
            Ok(Some(Event::Init)) => self.buffer.clear(),
            Ok(Some(Event::InitApply(o))) => {
                let Some((key, wants)) = self.wants_of(o).await else {
                    return ControlFlow::Break(());
                };
                self.buffer.insert(key, wants);
            }
            Ok(Some(Event::InitDone)) => {
                self.objects = std::mem::take(&mut self.buffer);
                tracing::info!(source = %source, objects = self.objects.len(), "{} synced", self.watched.what);
                self.publish();
            }
            Ok(Some(Event::Apply(o))) => {
                let Some((key, wants)) = self.wants_of(o).await else {
                    return ControlFlow::Break(());
                };
                self.objects.insert(key, wants);
                self.publish();
            }
            Ok(Some(Event::Delete(o))) => {
                self.objects.remove(&object_key(&o));
                self.publish();
            }
            Ok(None) => {
                tracing::error!(source = %source, "{} watch stream ended", self.watched.what);
                return ControlFlow::Break(());
            }
            Err(e) => self.failed(&e),
        }
        ControlFlow::Continue(())
    }

    /// The object's key and what it wants, read on a blocking thread; a panic
    /// there is counted and becomes the object's problem. `None` on shutdown.
    async fn wants_of(&self, o: K) -> Option<(String, Wants)> {
        let source = self.watched.source;
        let key = object_key(&o);
        let to_groups = self.to_groups;
        let read = tokio::task::spawn_blocking(move || to_groups(&o));
        let wants = tokio::select! {
            w = read => w,
            _ = self.shutdown.cancelled() => return None,
        };
        let wants = wants.unwrap_or_else(|e| {
            self.metrics.source_error(self.watched.error_kind);
            Wants {
                problems: vec![format!("{key}: cannot be read: {e}")],
                ..Wants::default()
            }
        });
        for p in &wants.problems {
            tracing::warn!(source = %source, "{p}");
        }
        Some((key, wants))
    }

    /// Gives the store what all live objects want together.
    fn publish(&mut self) {
        let source = self.watched.source;
        let all = combine(self.objects.values());
        log_dropped(source, all.dropped, &mut self.logged_dropped);
        self.store.source_succeeded(source, all);
    }

    /// Counts and logs a failed read, and marks the source down with its last
    /// list kept; the watcher retries with backoff. An expired resource version
    /// (410) is no failure: the watcher relists.
    fn failed(&self, e: &watcher::Error) {
        if matches!(e, watcher::Error::WatchError(s) if s.code == 410) {
            return;
        }
        let source = self.watched.source;
        self.metrics.source_error(self.watched.error_kind);
        self.store.source_failed(source);
        let hint = match e {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                if s.code == 403 =>
            {
                " (RBAC: the service account needs get, list and watch on them)"
            }
            _ => "",
        };
        tracing::warn!(source = %source, "reading {} failed, keeping the last list, retrying with backoff: {}{hint}", self.watched.what, WatcherLine(e));
    }
}

/// kube-fledged's ImageCaches, watched.
pub async fn kube_fledged(
    client: Client,
    namespace: Option<String>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let api = imagecache_api(client, namespace.as_deref());
    let watched = Watched {
        source: WantSource::KubeFledged,
        error_kind: SourceErrorKind::KubeFledged,
        what: "ImageCaches",
    };
    watch_groups(
        api,
        None,
        watched,
        imagecache_to_groups,
        store,
        metrics,
        shutdown,
    )
    .await
}

/// Prepuller DaemonSets, watched.
pub async fn daemonsets(
    client: Client,
    namespace: Option<String>,
    selector: Option<String>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let api = daemonset_api(client, namespace.as_deref());
    let watched = Watched {
        source: WantSource::DaemonSet,
        error_kind: SourceErrorKind::DaemonSets,
        what: "DaemonSets",
    };
    watch_groups(
        api,
        selector,
        watched,
        daemonset_to_groups,
        store,
        metrics,
        shutdown,
    )
    .await
}
