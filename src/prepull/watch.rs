//! The sources whose objects in the cluster say what is wanted (kube-fledged
//! `ImageCache`s, prepuller DaemonSets): listed once by `check`, watched by
//! `serve`, what all live objects want together kept in the store.

use super::{PrepullError, Sink, Source, SourceError, cluster, log_dropped};
use crate::analysis::WantSource;
use crate::analysis::wants::{MAX_IMAGES_PER_SOURCE, Wants, cap_groups};
use crate::metrics::SourceErrorKind;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::ControlFlow;

/// What a watched source's objects are and how they are read.
pub struct Watched<K> {
    pub source: WantSource,
    /// For messages: "ImageCaches", "DaemonSets".
    pub what: &'static str,
    /// For the start-up line: "kube-fledged ImageCaches".
    pub title: &'static str,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Only the objects with these labels.
    pub selector: Option<String>,
    /// The objects' API, in one namespace or all.
    pub api: fn(Client, Option<&str>) -> Api<K>,
    /// What one object wants.
    pub to_groups: fn(&K) -> Wants,
}

impl<K> Watched<K> {
    fn api(&self, client: Client) -> Api<K> {
        (self.api)(client, self.namespace.as_deref())
    }
}

/// The objects a watched source reads: deserialized, cloned and sent between
/// tasks.
pub trait Object:
    Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K: Object> Source for Watched<K> {
    fn name(&self) -> WantSource {
        self.source
    }

    fn needs_cluster(&self) -> bool {
        true
    }

    fn read_once<'a>(
        &'a self,
        client: Option<&'a Client>,
    ) -> BoxFuture<'a, Result<Wants, SourceError>> {
        async move {
            let client = cluster(client).map_err(|e| e.of(self.source))?;
            list_groups(
                &self.api(client.clone()),
                self.selector.as_deref(),
                self.to_groups,
            )
            .await
            .map_err(|e| PrepullError::List(e).of(self.source))
        }
        .boxed()
    }

    fn run(self: Box<Self>, client: Option<Client>, sink: Sink) -> BoxFuture<'static, ()> {
        async move {
            let Some(client) = client else {
                return;
            };
            tracing::info!(namespace = ?self.namespace, selector = ?self.selector, "watching {}", self.title);
            let api = self.api(client);
            watch_groups(api, *self, sink).await
        }
        .boxed()
    }
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
pub async fn watch_groups<K: Object>(api: Api<K>, watched: Watched<K>, sink: Sink) {
    sink.store.add_source(watched.source);
    let mut config = watcher::Config::default();
    if let Some(s) = &watched.selector {
        config = config.labels(s);
    }
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut watch = GroupsWatch {
        watched,
        sink,
        objects: BTreeMap::new(),
        buffer: BTreeMap::new(),
        logged_dropped: 0,
    };
    loop {
        let event = tokio::select! {
            e = stream.try_next() => e,
            _ = watch.sink.shutdown.cancelled() => return,
        };
        if watch.apply(event).await.is_break() {
            return;
        }
    }
}

/// The state of one [`watch_groups`]: what it watches and where the groups go,
/// and the objects seen so far.
struct GroupsWatch<K> {
    watched: Watched<K>,
    sink: Sink,
    /// What each live object wants, by [`object_key`].
    objects: BTreeMap<String, Wants>,
    /// The objects of a relist under way, replacing `objects` once complete.
    buffer: BTreeMap<String, Wants>,
    /// The dropped count last logged ([`log_dropped`]).
    logged_dropped: u64,
}

impl<K: Object> GroupsWatch<K> {
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
            Err(e) => self.failed(e),
        }
        ControlFlow::Continue(())
    }

    /// The object's key and what it wants, read on a blocking thread; a panic
    /// there is counted and becomes the object's problem. `None` on shutdown.
    async fn wants_of(&self, o: K) -> Option<(String, Wants)> {
        let source = self.watched.source;
        let key = object_key(&o);
        let to_groups = self.watched.to_groups;
        let read = tokio::task::spawn_blocking(move || to_groups(&o));
        let wants = tokio::select! {
            w = read => w,
            _ = self.sink.shutdown.cancelled() => return None,
        };
        let wants = wants.unwrap_or_else(|e| {
            self.sink
                .metrics
                .source_error(SourceErrorKind::Prepull(source));
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
        self.sink.store.source_succeeded(source, all);
    }

    /// Counts and logs a failed read, and marks the source down with its last
    /// list kept; the watcher retries with backoff. An expired resource version
    /// (410) is no failure: the watcher relists.
    fn failed(&self, e: watcher::Error) {
        if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
            return;
        }
        let heading = format!(
            "reading {} failed, keeping the last list, retrying with backoff",
            self.watched.what
        );
        let e = PrepullError::Watch(e).of(self.watched.source);
        self.sink.failed(&e, &heading, None, None);
    }
}
