//! A Kubernetes API server for nodes, faked at the HTTP level on 127.0.0.1.
//!
//! It speaks the wire protocol the `kube` client and watcher use: `GET
//! /api/v1/nodes` lists with `limit`/`continue` and `labelSelector`, and with
//! `watch=1` streams newline-delimited watch events (ADDED, MODIFIED, DELETED,
//! BOOKMARK when `allowWatchBookmarks` is set) from a `resourceVersion`, answering
//! with an ERROR event of status 410 when that version has been compacted away.
//! Tests change nodes, compact history and drop connections through its methods.
//!
//! Objects are kept encoded: each is serialized once when it is applied, so a list
//! page costs the server a memory copy, not a JSON encode, as an API server's
//! watch cache does, and 5,000 nodes of 500 images take about their JSON size.
//!
//! DaemonSets (`/apis/apps/v1/...daemonsets`), kube-fledged ImageCaches
//! (`/apis/kubefledged.io/v1alpha2/...imagecaches`) and EndpointSlices
//! (`/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`) are served the
//! same way, through [`FakeApiServer::apply_object`]. Each node's kubelet answers
//! `proxy/configz` and `proxy/stats/summary` (the Summary API's shape).

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use imagecap_exporter::analysis::selector::LabelSelector;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    kind: &'static str,
    /// The resource's plural name: nodes, daemonsets, imagecaches.
    resource: &'static str,
    object: Stored,
}

/// An object as stored: its JSON, and what requests select it by.
#[derive(Clone, Debug)]
struct Stored {
    json: Arc<str>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Stored {
    fn new(object: &Value) -> Stored {
        Stored {
            json: Arc::from(object.to_string()),
            namespace: object["metadata"]["namespace"].as_str().map(String::from),
            labels: serde_json::from_value(object["metadata"]["labels"].clone())
                .unwrap_or_default(),
        }
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.json).expect("stored JSON")
    }
}

/// The resources served besides nodes: plural, API path prefix, list kind.
const OTHER_RESOURCES: &[(&str, &str, &str)] = &[
    ("daemonsets", "/apis/apps/v1", "DaemonSetList"),
    (
        "imagecaches",
        "/apis/kubefledged.io/v1alpha2",
        "ImageCacheList",
    ),
    (
        "endpointslices",
        "/apis/discovery.k8s.io/v1",
        "EndpointSliceList",
    ),
];

/// Events the fake remembers for watches to resume from. A benchmark's node churn
/// (100 updates a second of 112 KB nodes) would otherwise keep every update.
const HISTORY_MAX: usize = 10_000;

#[derive(Default)]
struct Inner {
    rv: u64,
    nodes: BTreeMap<String, Stored>,
    /// DaemonSets and ImageCaches, by resource and `namespace/name`.
    others: BTreeMap<&'static str, BTreeMap<String, Stored>>,
    history: Vec<WatchEvent>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted_rv: u64,
    /// Remaining items of paginated lists, by continue token.
    pages: HashMap<String, (u64, Vec<Arc<str>>)>,
    next_token: u64,
    /// Every request's query string, in order, for assertions.
    requests: Vec<String>,
    /// Faults for the next requests (lists and watches alike), in order.
    faults: std::collections::VecDeque<Fault>,
    /// When each request to /api/v1/nodes arrived.
    request_times: Vec<std::time::Instant>,
    /// When each request answered with an injected fault arrived.
    fault_times: Vec<std::time::Instant>,
    /// What each node's kubelet answers on configz; absent: the default cap, 50.
    configz: HashMap<String, Configz>,
    configz_in_flight: usize,
    configz_max_in_flight: usize,
    configz_requests: usize,
    /// What each node's kubelet answers on stats/summary: (used, capacity) bytes
    /// of its image filesystem, or a raw body; absent: 40 GB of 100 GB.
    stats: HashMap<String, Stats>,
    /// Response body bytes sent for lists and watches.
    bytes_served: u64,
    /// (verb, resource) pairs RBAC denies: answered 403 as the API server does.
    forbidden: std::collections::HashSet<(&'static str, &'static str)>,
}

/// A way for one request to go wrong.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error status.
    Status(u16),
    /// 429 Too Many Requests with Retry-After, as API priority and fairness sends.
    TooManyRequests { retry_after_secs: u32 },
    /// Answer normally, after a delay.
    Slow(Duration),
    /// Send half of the answer, then drop the connection.
    Truncate,
}

/// A kubelet's answer to `GET /api/v1/nodes/{name}/proxy/configz`.
#[derive(Clone, Debug)]
pub enum Configz {
    Cap(i64),
    /// An error status from the API server or the kubelet.
    Status(u16),
    /// A raw 200 body.
    Body(String),
    /// The cap, after a delay.
    Slow(Duration, i64),
}

/// A kubelet's answer to `GET /api/v1/nodes/{name}/proxy/stats/summary`.
#[derive(Clone, Debug)]
pub enum Stats {
    /// `node.runtime.imageFs` used and capacity bytes.
    ImageFs { used: u64, capacity: u64 },
    /// An error status.
    Status(u16),
    /// A raw 200 body.
    Body(String),
}

/// A Summary API answer (`k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary`) with
/// the fields a kubelet fills in, pods included.
pub fn stats_summary(node: &str, used: u64, capacity: u64) -> Value {
    let now = "2026-11-25T10:00:00Z";
    let fs = |used: u64, capacity: u64| {
        json!({"time": now, "availableBytes": capacity - used, "capacityBytes": capacity,
               "usedBytes": used, "inodesFree": 6_000_000, "inodes": 6_553_600, "inodesUsed": 553_600})
    };
    json!({
        "node": {
            "nodeName": node,
            "systemContainers": [{"name": "kubelet", "startTime": now,
                                  "cpu": {"time": now, "usageNanoCores": 21_000_000, "usageCoreNanoSeconds": 9_000_000_000u64},
                                  "memory": {"time": now, "workingSetBytes": 90_000_000, "rssBytes": 60_000_000}}],
            "startTime": now,
            "cpu": {"time": now, "usageNanoCores": 300_000_000, "usageCoreNanoSeconds": 90_000_000_000u64},
            "memory": {"time": now, "availableBytes": 8_000_000_000u64, "usageBytes": 4_000_000_000u64,
                       "workingSetBytes": 3_000_000_000u64, "rssBytes": 2_000_000_000u64},
            "network": {"time": now, "name": "eth0", "rxBytes": 1, "txBytes": 1, "interfaces": []},
            "fs": fs(used / 2, capacity),
            "runtime": {"imageFs": fs(used, capacity), "containerFs": fs(used, capacity)},
            "rlimit": {"time": now, "maxpid": 4_194_304, "curproc": 612}
        },
        "pods": [{
            "podRef": {"name": "jupyter-someone", "namespace": "nublado-someone", "uid": "5b0c1e8e"},
            "startTime": now,
            "containers": [{"name": "notebook", "startTime": now,
                            "rootfs": fs(1_000_000, capacity), "logs": fs(10_000, capacity)}],
            "volume": [], "ephemeral-storage": fs(1_010_000, capacity)
        }]
    })
}

#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WatchEvent>,
    /// Closing this ends every open watch stream (a dropped connection).
    drop_watches: broadcast::Sender<()>,
    pub addr: SocketAddr,
    bookmark_every: Duration,
}

#[derive(serde::Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    watch: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_: Option<String>,
    label_selector: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<bool>,
    timeout_seconds: Option<u64>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RBAC's answer to a request the identity may not make, as the API server words it.
fn forbidden(verb: &str, scope: &Scope) -> Response {
    let group = scope.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let at = match &scope.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!(
            "{r} is forbidden: User \"system:serviceaccount:monitoring:imagecap-exporter\" \
             cannot {verb} resource \"{r}\" in API group \"{group}\" {at}",
            r = scope.resource
        ),
        "reason": "Forbidden", "details": {"kind": scope.resource}, "code": 403
    });
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FakeApiServer {
    pub async fn start(nodes: Vec<Value>) -> FakeApiServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), nodes).await
    }

    /// Starts on a given address (to come up where a client already points).
    pub async fn start_on(addr: SocketAddr, nodes: Vec<Value>) -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let (drop_watches, _) = broadcast::channel(16);
        let server = FakeApiServer {
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
            drop_watches,
            addr,
            bookmark_every: Duration::from_millis(200),
        };
        for n in nodes {
            server.apply(n);
        }
        let app = Router::new()
            // API discovery, as kubectl asks before anything else.
            .route("/api", get(|| async { axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})) }))
            .route("/apis", get(|| async { axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }))
            .route("/api/v1", get(|| async {
                axum::Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
                     "verbs": ["get", "list", "watch"], "shortNames": ["no"]}
                ]}))
            }))
            .route("/api/v1/nodes", get(nodes_handler))
            .route("/api/v1/nodes/{name}/proxy/configz", get(configz_handler))
            .route(
                "/api/v1/nodes/{name}/proxy/stats/summary",
                get(stats_handler),
            )
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(endpointslices_handler),
            )
            .route("/apis/apps/v1/daemonsets", get(daemonsets_handler))
            .route(
                "/apis/apps/v1/namespaces/{ns}/daemonsets",
                get(daemonsets_handler),
            )
            .route(
                "/apis/kubefledged.io/v1alpha2/imagecaches",
                get(imagecaches_handler),
            )
            .route(
                "/apis/kubefledged.io/v1alpha2/namespaces/{ns}/imagecaches",
                get(imagecaches_handler),
            )
            .with_state(server.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: &'static str,
        resource: &'static str,
        mut object: Value,
    ) {
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let (map, key) = if resource == "nodes" {
            (&mut inner.nodes, name)
        } else {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
            let key = format!("{ns}/{name}");
            (inner.others.entry(resource).or_default(), key)
        };
        let object = Stored::new(&object);
        if kind == "DELETED" {
            map.remove(&key);
        } else {
            map.insert(key, object.clone());
        }
        let ev = WatchEvent {
            rv,
            kind,
            resource,
            object,
        };
        inner.history.push(ev.clone());
        // A window of recent events, as the API server's watch cache keeps: a
        // watch from before it gets 410 Gone. Trimmed a tenth at a time.
        if inner.history.len() > HISTORY_MAX {
            let drop = inner.history.len() - HISTORY_MAX * 9 / 10;
            inner.history.drain(..drop);
            inner.compacted_rv = inner.history[0].rv - 1;
        }
        let _ = self.events.send(ev);
    }

    /// Creates or replaces a node (ADDED or MODIFIED).
    pub fn apply(&self, node: Value) {
        let mut inner = self.inner.lock().unwrap();
        let name = node["metadata"]["name"].as_str().unwrap();
        let kind = if inner.nodes.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(&mut inner, kind, "nodes", node);
    }

    pub fn delete(&self, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let node = inner.nodes.get(name).expect("no such node").value();
        self.record(&mut inner, "DELETED", "nodes", node);
    }

    /// Creates or replaces a DaemonSet, ImageCache or EndpointSlice (`resource` is
    /// its plural).
    pub fn apply_object(&self, resource: &str, object: Value) {
        let resource = OTHER_RESOURCES
            .iter()
            .find(|r| r.0 == resource)
            .expect("a served resource")
            .0;
        let mut inner = self.inner.lock().unwrap();
        let key = format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap()
        );
        let exists = inner
            .others
            .get(resource)
            .is_some_and(|m| m.contains_key(&key));
        let kind = if exists { "MODIFIED" } else { "ADDED" };
        self.record(&mut inner, kind, resource, object);
    }

    /// Deletes a DaemonSet, ImageCache or EndpointSlice.
    pub fn delete_object(&self, resource: &'static str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let object = inner
            .others
            .get(resource)
            .and_then(|m| m.get(&format!("{namespace}/{name}")))
            .expect("no such object")
            .value();
        self.record(&mut inner, "DELETED", resource, object);
    }

    /// Forgets history: resuming a watch from any version seen so far gets 410,
    /// and outstanding continue tokens expire.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.compacted_rv = inner.rv + 1;
        inner.history.clear();
        inner.pages.clear();
    }

    /// Ends every open watch stream, as a dropped connection would.
    pub fn drop_watches(&self) {
        let _ = self.drop_watches.send(());
    }

    /// Makes each of the next requests fail with the given status code, in order.
    pub fn fail_next(&self, codes: &[u16]) {
        self.inject(codes.iter().map(|c| Fault::Status(*c)));
    }

    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Denies `verb` ("list" or "watch") on `resource` ("nodes", "daemonsets", ...)
    /// from now on, as RBAC does: 403 with the API server's `Status` body.
    pub fn forbid(&self, verb: &'static str, resource: &'static str) {
        self.inner
            .lock()
            .unwrap()
            .forbidden
            .insert((verb, resource));
    }

    /// Grants again what [`FakeApiServer::forbid`] denied.
    pub fn permit(&self, verb: &'static str, resource: &'static str) {
        self.inner
            .lock()
            .unwrap()
            .forbidden
            .remove(&(verb, resource));
    }

    pub fn clear_faults(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    pub fn request_times(&self) -> Vec<std::time::Instant> {
        self.inner.lock().unwrap().request_times.clone()
    }

    /// When each request answered with an injected fault arrived, in order.
    pub fn fault_times(&self) -> Vec<std::time::Instant> {
        self.inner.lock().unwrap().fault_times.clone()
    }

    /// How long after the `n`th faulted request (0-based) the next request came,
    /// once both have arrived.
    pub fn retry_gap(&self, n: usize) -> Option<std::time::Duration> {
        let inner = self.inner.lock().unwrap();
        let fault = *inner.fault_times.get(n)?;
        let next = inner.request_times.iter().find(|t| **t > fault)?;
        Some(*next - fault)
    }

    pub fn set_configz(&self, node: &str, answer: Configz) {
        self.inner
            .lock()
            .unwrap()
            .configz
            .insert(node.to_string(), answer);
    }

    pub fn set_stats(&self, node: &str, answer: Stats) {
        self.inner
            .lock()
            .unwrap()
            .stats
            .insert(node.to_string(), answer);
    }

    /// (configz requests served, most in flight at once)
    pub fn configz_stats(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.configz_requests, inner.configz_max_in_flight)
    }

    /// Response body bytes sent so far for node lists and watch streams.
    pub fn bytes_served(&self) -> u64 {
        self.inner.lock().unwrap().bytes_served
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn resource_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    fn list(&self, p: &Params, scope: &Scope) -> Response {
        let mut inner = self.inner.lock().unwrap();
        let (rv, mut items) = match &p.continue_ {
            Some(token) if !token.is_empty() => match inner.pages.remove(token) {
                Some(page) => page,
                None => {
                    return status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result.",
                    );
                }
            },
            _ => {
                let selector: LabelSelector =
                    match p.label_selector.as_deref().unwrap_or("").parse() {
                        Ok(s) => s,
                        Err(e) => return status(400, "BadRequest", &e.to_string()),
                    };
                let all: Vec<&Stored> = match scope.resource {
                    "nodes" => inner.nodes.values().collect(),
                    r => inner
                        .others
                        .get(r)
                        .into_iter()
                        .flat_map(|m| m.values())
                        .filter(|o| scope.contains(o))
                        .collect(),
                };
                let items: Vec<Arc<str>> = all
                    .into_iter()
                    .filter(|n| selector.matches(&n.labels))
                    .map(|n| n.json.clone())
                    .collect();
                (inner.rv, items)
            }
        };
        let limit = p.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let rest = if items.len() > limit {
            items.split_off(limit)
        } else {
            Vec::new()
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if !rest.is_empty() {
            inner.next_token += 1;
            let token = format!("page-{}", inner.next_token);
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(rest.len());
            inner.pages.insert(token, (rv, rest));
        }
        // The items are copied as they were encoded when applied.
        let head = json!({"kind": scope.list_kind, "apiVersion": scope.api_version,
                          "metadata": metadata})
        .to_string();
        let len = head.len() + 11 + items.iter().map(|i| i.len() + 1).sum::<usize>();
        let mut body = String::with_capacity(len);
        body.push_str(&head[..head.len() - 1]);
        body.push_str(",\"items\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(item);
        }
        body.push_str("]}");
        inner.bytes_served += body.len() as u64;
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    fn watch(&self, p: &Params, scope: &Scope) -> Response {
        let from: u64 = p
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let bookmarks = p.allow_watch_bookmarks.unwrap_or(false);
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(60).min(60));
        let (tx, rx) = mpsc::channel::<String>(1024);
        let inner = self.inner.lock().unwrap();
        if from < inner.compacted_rv {
            let ev = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", inner.compacted_rv),
                "reason": "Expired", "code": 410}});
            let _ = tx.try_send(format!("{ev}\n"));
        } else {
            // Subscribe while holding the lock, so no event falls between the replay
            // and the live stream.
            let mut live = self.events.subscribe();
            let mut dropped = self.drop_watches.subscribe();
            let wanted = scope.clone();
            let replay: Vec<WatchEvent> = inner
                .history
                .iter()
                .filter(|e| e.rv > from && wanted.watches(e))
                .cloned()
                .collect();
            // The version this watch has delivered up to: a bookmark never claims
            // more, or a client resuming from it would miss the events still
            // queued for this watch when it ends (as the API server's watch
            // cache, which sends a bookmark only for what it has sent).
            let mut seen = from.max(inner.rv);
            let bookmark_every = self.bookmark_every;
            tokio::spawn(async move {
                let line = |e: &WatchEvent| {
                    format!("{{\"type\":\"{}\",\"object\":{}}}\n", e.kind, e.object.json)
                };
                for e in &replay {
                    if tx.send(line(e)).await.is_err() {
                        return;
                    }
                }
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut tick = tokio::time::interval(bookmark_every);
                loop {
                    tokio::select! {
                        ev = live.recv() => match ev {
                            Ok(e) if e.rv > from && wanted.watches(&e) => {
                                if tx.send(line(&e)).await.is_err() { return }
                                seen = seen.max(e.rv);
                            }
                            Ok(e) => seen = seen.max(e.rv),
                            Err(_) => return,
                        },
                        _ = tick.tick(), if bookmarks => {
                            let b = json!({"type": "BOOKMARK", "object": {
                                "kind": wanted.kind, "apiVersion": wanted.api_version,
                                "metadata": {"resourceVersion": seen.to_string()}}});
                            if tx.send(format!("{b}\n")).await.is_err() { return }
                        }
                        _ = dropped.recv() => return,
                        _ = &mut deadline => return,
                    }
                }
            });
        }
        drop(inner);
        let counter = self.inner.clone();
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let counter = counter.clone();
            async move {
                let line = rx.recv().await?;
                counter.lock().unwrap().bytes_served += line.len() as u64;
                Some((Ok::<_, Infallible>(line), rx))
            }
        });
        (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response()
    }
}

async fn configz_handler(
    State(server): State<FakeApiServer>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let answer = {
        let mut inner = server.inner.lock().unwrap();
        inner.configz_requests += 1;
        inner.configz_in_flight += 1;
        inner.configz_max_in_flight = inner.configz_max_in_flight.max(inner.configz_in_flight);
        if !inner.nodes.contains_key(&name) {
            None
        } else {
            Some(
                inner
                    .configz
                    .get(&name)
                    .cloned()
                    .unwrap_or(Configz::Cap(50)),
            )
        }
    };
    let cap_body = |cap: i64| {
        json!({"kubeletconfig": {"enableServer": true, "nodeStatusMaxImages": cap, "podsPerCore": 0,
                                 "imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80}})
            .to_string()
    };
    let response = match answer {
        None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
        Some(Configz::Cap(c)) => cap_body(c).into_response(),
        Some(Configz::Body(b)) => b.into_response(),
        Some(Configz::Status(code)) => status(code, "Forbidden", &format!("configz: {code}")),
        Some(Configz::Slow(d, c)) => {
            tokio::time::sleep(d).await;
            cap_body(c).into_response()
        }
    };
    server.inner.lock().unwrap().configz_in_flight -= 1;
    response
}

/// Which objects a request is about.
#[derive(Clone, Debug)]
struct Scope {
    resource: &'static str,
    namespace: Option<String>,
    kind: &'static str,
    list_kind: &'static str,
    api_version: &'static str,
}

impl Scope {
    fn nodes() -> Scope {
        Scope {
            resource: "nodes",
            namespace: None,
            kind: "Node",
            list_kind: "NodeList",
            api_version: "v1",
        }
    }

    fn other(resource: &'static str, namespace: Option<String>) -> Scope {
        let (kind, list_kind, api_version) = match resource {
            "daemonsets" => ("DaemonSet", "DaemonSetList", "apps/v1"),
            "endpointslices" => ("EndpointSlice", "EndpointSliceList", "discovery.k8s.io/v1"),
            _ => ("ImageCache", "ImageCacheList", "kubefledged.io/v1alpha2"),
        };
        Scope {
            resource,
            namespace,
            kind,
            list_kind,
            api_version,
        }
    }

    fn contains(&self, o: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o.namespace.as_deref() == Some(ns))
    }

    fn watches(&self, e: &WatchEvent) -> bool {
        e.resource == self.resource && self.contains(&e.object)
    }
}

async fn daemonsets_handler(
    State(server): State<FakeApiServer>,
    ns: Option<axum::extract::Path<String>>,
    Query(p): Query<Params>,
    uri: axum::http::Uri,
) -> Response {
    let scope = Scope::other("daemonsets", ns.map(|n| n.0));
    serve_scope(server, p, uri, scope).await
}

async fn imagecaches_handler(
    State(server): State<FakeApiServer>,
    ns: Option<axum::extract::Path<String>>,
    Query(p): Query<Params>,
    uri: axum::http::Uri,
) -> Response {
    let scope = Scope::other("imagecaches", ns.map(|n| n.0));
    serve_scope(server, p, uri, scope).await
}

async fn endpointslices_handler(
    State(server): State<FakeApiServer>,
    axum::extract::Path(ns): axum::extract::Path<String>,
    Query(p): Query<Params>,
    uri: axum::http::Uri,
) -> Response {
    let scope = Scope::other("endpointslices", Some(ns));
    serve_scope(server, p, uri, scope).await
}

async fn stats_handler(
    State(server): State<FakeApiServer>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let answer = {
        let inner = server.inner.lock().unwrap();
        inner.nodes.contains_key(&name).then(|| {
            inner.stats.get(&name).cloned().unwrap_or(Stats::ImageFs {
                used: 40_000_000_000,
                capacity: 100_000_000_000,
            })
        })
    };
    match answer {
        None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
        Some(Stats::ImageFs { used, capacity }) => (
            [(header::CONTENT_TYPE, "application/json")],
            stats_summary(&name, used, capacity).to_string(),
        )
            .into_response(),
        Some(Stats::Body(b)) => b.into_response(),
        Some(Stats::Status(code)) => status(code, "Forbidden", &format!("stats: {code}")),
    }
}

async fn nodes_handler(
    State(server): State<FakeApiServer>,
    Query(p): Query<Params>,
    uri: axum::http::Uri,
) -> Response {
    serve_scope(server, p, uri, Scope::nodes()).await
}

/// Lists or watches `scope`, after the next injected fault if any.
async fn serve_scope(
    server: FakeApiServer,
    p: Params,
    uri: axum::http::Uri,
    scope: Scope,
) -> Response {
    let fault = {
        let mut inner = server.inner.lock().unwrap();
        inner.requests.push(uri.query().unwrap_or("").to_string());
        let now = std::time::Instant::now();
        inner.request_times.push(now);
        let fault = inner.faults.pop_front();
        if fault.is_some() {
            inner.fault_times.push(now);
        }
        fault
    };
    let watch = matches!(p.watch.as_deref(), Some("true") | Some("1"));
    let verb = if watch { "watch" } else { "list" };
    if server
        .inner
        .lock()
        .unwrap()
        .forbidden
        .contains(&(verb, scope.resource))
    {
        return forbidden(verb, &scope);
    }
    match fault {
        None => {}
        Some(Fault::Status(code)) => {
            let reason = match code {
                403 => "Forbidden",
                429 => "TooManyRequests",
                _ => "InternalError",
            };
            return status(code, reason, &format!("injected fault {code}"));
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too many requests, please try again later", "reason": "TooManyRequests",
                "details": {"retryAfterSeconds": retry_after_secs}, "code": 429
            });
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (header::RETRY_AFTER, retry_after_secs.to_string()),
                ],
                body.to_string(),
            )
                .into_response();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncate) if !watch => {
            let full = axum::body::to_bytes(server.list(&p, &scope).into_body(), usize::MAX)
                .await
                .unwrap();
            let half = full.slice(..full.len() / 2);
            let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected",
                )),
            ];
            return (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response();
        }
        Some(Fault::Truncate) => {}
    }
    if watch {
        server.watch(&p, &scope)
    } else {
        server.list(&p, &scope)
    }
}

/// A node as the API server returns it, with `images` entries of the given names.
pub fn node(name: &str, labels: &[(&str, &str)], images: &[Vec<String>]) -> Value {
    let labels: BTreeMap<_, _> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let images: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, names)| json!({"names": names, "sizeBytes": 1_000_000_000u64 - i as u64}))
        .collect();
    json!({
        "metadata": {"name": name, "labels": labels, "uid": format!("uid-{name}")},
        "spec": {},
        "status": {
            "capacity": {"ephemeral-storage": "1Ti"},
            "allocatable": {"ephemeral-storage": "900Gi"},
            "images": images
        }
    })
}

/// `n` ordinary images, for filling a node to its cap.
pub fn filler(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| vec![format!("registry.example.com/app{i}:v{i}")])
        .collect()
}
