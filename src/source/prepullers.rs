//! Wanted images from the prepullers themselves: Nublado's status endpoint
//! (polled), kube-fledged `ImageCache`s and prepuller DaemonSets (watched). Each
//! failed read is counted, the source keeps its last good list and shows as down,
//! and it is retried with backoff; the exporter stays ready on node data alone.

use crate::analysis::WantGroup;
use crate::analysis::WantSource;
use crate::analysis::prepullers::{
    daemonset_groups, imagecache_groups, nublado_groups, parse_prepuller_status,
};
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest Nublado status body read; a bigger one is an error.
const MAX_NUBLADO_BODY: usize = 32 << 20;

/// Where and how to read Nublado (`prepull.sources[].nublado`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NubladoOptions {
    pub url: String,
    /// Sent as a bearer token; read again on every request (rotation).
    pub token_file: Option<PathBuf>,
    pub interval: Duration,
    pub timeout: Duration,
}

fn read_token(path: &Path) -> Result<String, String> {
    let token =
        std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    Ok(token.trim().to_string())
}

/// One read of Nublado's prepuller status: the groups it wants, and problems with
/// single images (logged; the rest is kept).
pub async fn fetch_nublado(
    client: &reqwest::Client,
    opts: &NubladoOptions,
) -> Result<(Vec<WantGroup>, Vec<String>), String> {
    let mut request = client.get(&opts.url).timeout(opts.timeout);
    if let Some(path) = &opts.token_file {
        request = request.bearer_auth(read_token(path)?);
    }
    let mut response = request.send().await.map_err(|e| format!("{e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{} answered {status}", opts.url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_NUBLADO_BODY {
            return Err(format!(
                "the answer is larger than {MAX_NUBLADO_BODY} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let status = parse_prepuller_status(&body)?;
    Ok(nublado_groups(&status))
}

/// The client for Nublado: rustls with the process's crypto provider.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Polls Nublado every `interval` until shutdown; after a failure, sooner, with
/// exponential backoff capped at the interval.
pub async fn nublado(
    opts: NubladoOptions,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    store.add_source(WantSource::Nublado);
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
    loop {
        let wait = match fetch_nublado(&client, &opts).await {
            Ok((groups, problems)) => {
                if problems != logged_problems {
                    for p in &problems {
                        tracing::warn!(source = "nublado", "skipping an image: {p}");
                    }
                    logged_problems = problems;
                }
                let images: usize = groups.iter().map(|g| g.images.len()).sum();
                tracing::debug!(
                    source = "nublado",
                    images,
                    "read Nublado's prepuller status"
                );
                store.source_succeeded(WantSource::Nublado, groups);
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
pub fn imagecache_to_groups(o: &DynamicObject) -> (Vec<WantGroup>, Vec<String>) {
    let name = o.metadata.name.as_deref().unwrap_or("<unnamed>");
    match o.data.get("spec") {
        Some(spec) => imagecache_groups(name, spec),
        None => (Vec::new(), vec![format!("ImageCache {name}: no spec")]),
    }
}

/// The kinds of objects that say what is wanted, for [`watch_groups`].
pub struct Watched {
    pub source: WantSource,
    pub error_kind: SourceErrorKind,
    /// For messages: "ImageCaches", "DaemonSets".
    pub what: &'static str,
}

/// Lists every object of `api`, as `check` does: the groups they want.
pub async fn list_groups<K>(
    api: &Api<K>,
    label_selector: Option<&str>,
    to_groups: fn(&K) -> (Vec<WantGroup>, Vec<String>),
) -> Result<(Vec<WantGroup>, Vec<String>), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug,
{
    let mut lp = kube::api::ListParams::default();
    if let Some(s) = label_selector {
        lp = lp.labels(s);
    }
    let list = api.list(&lp).await?;
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for o in &list.items {
        let (g, p) = to_groups(o);
        groups.extend(g);
        problems.extend(p);
    }
    Ok((groups, problems))
}

fn object_key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

/// Follows the objects of `api` with a watch until shutdown, keeping the store's
/// groups for `watched.source` equal to what the live objects want.
pub async fn watch_groups<K>(
    api: Api<K>,
    label_selector: Option<String>,
    watched: Watched,
    to_groups: fn(&K) -> (Vec<WantGroup>, Vec<String>),
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
    let mut objects: BTreeMap<String, Vec<WantGroup>> = BTreeMap::new();
    let mut buffer: BTreeMap<String, Vec<WantGroup>> = BTreeMap::new();
    let source = watched.source;
    let publish = |objects: &BTreeMap<String, Vec<WantGroup>>| {
        store.source_succeeded(source, objects.values().flatten().cloned().collect());
    };
    let groups_of = |o: &K| {
        let (groups, problems) = to_groups(o);
        for p in problems {
            tracing::warn!(source = %source, "{p}");
        }
        groups
    };
    loop {
        let event = tokio::select! {
            e = stream.try_next() => e,
            _ = shutdown.cancelled() => return,
        };
        match event {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(o))) => {
                buffer.insert(object_key(&o), groups_of(&o));
            }
            Ok(Some(Event::InitDone)) => {
                objects = std::mem::take(&mut buffer);
                tracing::info!(source = %source, objects = objects.len(), "{} synced", watched.what);
                publish(&objects);
            }
            Ok(Some(Event::Apply(o))) => {
                objects.insert(object_key(&o), groups_of(&o));
                publish(&objects);
            }
            Ok(Some(Event::Delete(o))) => {
                objects.remove(&object_key(&o));
                publish(&objects);
            }
            Ok(None) => {
                tracing::error!(source = %source, "{} watch stream ended", watched.what);
                return;
            }
            Err(e) => {
                if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                    continue;
                }
                metrics.source_error(watched.error_kind);
                store.source_failed(source);
                let hint = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        if s.code == 403 =>
                    {
                        " (RBAC: the service account needs get, list and watch on them)"
                    }
                    _ => "",
                };
                tracing::warn!(source = %source, "reading {} failed, keeping the last list, retrying with backoff: {e}{hint}", watched.what);
            }
        }
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
        daemonset_groups,
        store,
        metrics,
        shutdown,
    )
    .await
}
