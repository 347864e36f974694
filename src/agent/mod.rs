//! The node agent (`imagecap-exporter agent`): asks the container runtime over
//! CRI for every image it holds, since the kubelet reports at most
//! `nodeStatusMaxImages` of them, and serves the answer.
//!
//! Every `--interval` it makes the two read-only CRI calls `ListImages` and
//! `ImageFsInfo` ([`cri`]), turns the answer into an [`AgentReport`]
//! ([`report`]), serialized once, and serves:
//!
//! - `/v1/images`: the last successful report as JSON (gzip when accepted), with
//!   its `ETag`, and its `collectedAt` and `imageFsUsedBytes` in headers; `304
//!   Not Modified` (no body, the same headers) to an `If-None-Match` naming the
//!   tag ([`validator`]); 503 with a JSON error before the first success;
//! - `/metrics`: [`families`];
//! - `/healthz`: the process serves;
//! - `/readyz`: 200 once a `ListImages` has succeeded, and from then on: while the
//!   runtime restarts the agent keeps serving its last answer with
//!   `imagecap_runtime_up 0`, and leaving the Service would hide exactly that.
//!
//! It uses no Kubernetes API. The HTTP side is that of `serve`: the same
//! connection limits, web configuration (TLS, basic auth) and layers; the probes
//! need no auth.

pub mod cri;
pub mod error;
pub mod families;
pub mod prune;
pub mod report;
pub mod validator;

use crate::analysis::runtime::AgentReport;
use crate::cli::AgentArgs;
use crate::metrics::TextFormat;
use crate::serve::conn::{self, RateLimited};
use crate::serve::{self, auth};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::ReadError;
use families::{AgentMetrics, Call, Pruning};
use report::Snapshot;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Least time between two logged failures of the runtime.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the agent knows of the runtime.
#[derive(Debug, Default)]
pub struct Status {
    /// The last successful reading.
    pub last: Option<Arc<Snapshot>>,
    /// The last `ListImages` succeeded.
    pub up: bool,
    /// Why the last `ListImages` failed, while it does.
    pub last_error: Option<String>,
    /// The last pruning plan, when pruning is enabled.
    pub plan: Option<crate::analysis::prune::Plan>,
}

/// The state the routes share.
#[derive(Clone)]
pub struct Agent {
    status: Arc<RwLock<Status>>,
    metrics: Arc<AgentMetrics>,
}

impl Agent {
    pub fn new(node: &str, prune: &crate::analysis::prune::PruneSettings) -> Agent {
        let status = Arc::<RwLock<Status>>::default();
        let pruning = Pruning {
            enabled: prune.enabled,
            dry_run: prune.dry_run,
        };
        Agent {
            metrics: Arc::new(AgentMetrics::new(
                node,
                env!("CARGO_PKG_VERSION"),
                status.clone(),
                Some(pruning),
            )),
            status,
        }
    }

    /// Publishes a pruning plan: in the next `/v1/images` answer.
    pub fn set_plan(&self, plan: crate::analysis::prune::Plan) {
        self.write().plan = Some(plan);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Status> {
        self.status.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Status> {
        self.status.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a reading: the report on success, the reason otherwise.
    pub fn record(&self, reading: Result<Snapshot, ReadError>) {
        let mut status = self.write();
        match reading {
            Ok(snapshot) => {
                status.last = Some(Arc::new(snapshot));
                status.up = true;
                status.last_error = None;
            }
            Err(reason) => {
                status.up = false;
                status.last_error = Some(reason.to_string());
            }
        }
    }
}

/// Reads the runtime once: both calls at once; the report needs `ListImages`,
/// `ImageFsInfo` only adds to it. Failures are counted and logged (rate-limited).
async fn read_runtime(
    client: &cri::Client,
    node: &str,
    agent: &Agent,
    warn: &RateLimited,
) -> Result<Snapshot, ReadError> {
    let (images, fs) = tokio::join!(client.list_images(), client.image_fs_info());
    let fs = match fs {
        Ok(fs) => Some(fs),
        Err(e) => {
            agent.metrics.error(Call::ImageFsInfo);
            if images.is_ok()
                && let Some(skipped) = warn.check(WARN_EVERY)
            {
                tracing::warn!(
                    similar_since_last = skipped,
                    "CRI ImageFsInfo on {} failed: {e}",
                    client.socket().display()
                );
            }
            None
        }
    };
    let images = images.map_err(|source| {
        agent.metrics.error(Call::ListImages);
        ReadError::ListImages {
            socket: client.socket().to_path_buf(),
            source,
        }
    })?;
    let now = SystemTime::now();
    let mut report: AgentReport = report::agent_report(node, now, images, fs.as_ref());
    report.prune = agent.read().plan.clone();
    Snapshot::new(&report, now)
}

/// Reads the runtime every `interval` until `shutdown`.
async fn read_every(
    client: cri::Client,
    node: String,
    agent: Agent,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (list_warning, fs_warning) = (RateLimited::new(), RateLimited::new());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let reading = tokio::select! {
            r = read_runtime(&client, &node, &agent, &fs_warning) => r,
            _ = shutdown.cancelled() => return,
        };
        let was_up = agent.read().up;
        match &reading {
            Ok(s) if !was_up => {
                tracing::info!(images = s.images, "the container runtime answers")
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(skipped) = list_warning.check(WARN_EVERY) {
                    tracing::warn!(similar_since_last = skipped, "{e}");
                }
            }
        }
        agent.record(reading);
    }
}

/// The routes; `/metrics` and `/v1/images` behind `auth`.
pub fn router(agent: Agent, auth: Arc<auth::BasicAuth>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/v1/images", get(images_handler))
        .layer(middleware::from_fn_with_state(auth, auth::basic_auth));
    let routes = Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    serve::with_common_layers(routes).with_state(agent)
}

async fn metrics_handler(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let format = TextFormat::negotiate(accept);
    let text = agent.metrics.render(format);
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

/// The last report, its JSON shared with every other request.
async fn images_handler(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    let (last, error) = {
        let status = agent.read();
        (status.last.clone(), status.last_error.clone())
    };
    match last {
        Some(snapshot) => images_answer(&snapshot, &headers),
        None => {
            let reason = error.unwrap_or_else(|| "the runtime was not read yet".into());
            let body = serde_json::json!({ "error": format!("no image list yet: {reason}") });
            serve::unavailable(axum::Json(body))
        }
    }
}

/// The answer to `GET /v1/images` with `snapshot` at hand: `304` with the tag,
/// reading time and filesystem use when `If-None-Match` names the tag, else the
/// JSON with them.
pub fn images_answer(snapshot: &Snapshot, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    // Both are made by the agent (hex, RFC 3339): a value that cannot be a header
    // would only leave the header out, and the exporter then reads the body.
    if let Ok(tag) = header::HeaderValue::from_str(&snapshot.etag) {
        headers.insert(header::ETAG, tag);
    }
    if let Ok(at) = header::HeaderValue::from_str(&snapshot.collected_at_text) {
        headers.insert(validator::COLLECTED_AT, at);
    }
    if let Some(used) = snapshot.image_fs_used_bytes {
        headers.insert(validator::IMAGE_FS_USED, header::HeaderValue::from(used));
    }
    let asked = request.get_all(header::IF_NONE_MATCH).iter();
    if validator::none_match(asked.map(|v| v.as_bytes()), &snapshot.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let json = header::HeaderValue::from_static("application/json");
    headers.insert(header::CONTENT_TYPE, json);
    (headers, snapshot.json.clone()).into_response()
}

async fn readyz(State(agent): State<Agent>) -> Response {
    let status = agent.read();
    if status.last.is_some() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let reason = status
        .last_error
        .as_deref()
        .unwrap_or("the runtime was not read yet");
    serve::unavailable(format!("not ready: {reason}\n"))
}

/// The node agent, from its flags until a signal stops it, as `serve` stops.
pub async fn run(args: AgentArgs) -> std::process::ExitCode {
    let w = &args.web;
    let limits = conn::fit_limits(w.max_connections, w.header_read_timeout, w.idle_timeout);
    let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let server = match start(args, limits, &tasks, &shutdown).await {
        Ok(server) => server,
        Err(e @ StartError::BadInput(_)) => return crate::cli::exit_bad_input(e),
        Err(e) => {
            eprintln!("imagecap-exporter: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    serve::until_stopped(server, tasks, shutdown).await
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag or file is wrong (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {0}")]
    Listen(String),
}

/// Loads the web configuration, binds the listener, starts reading the runtime
/// into `tasks`, and returns the HTTP server, which runs until `shutdown` (the
/// caller bounds the wait for in-flight requests).
pub async fn start(
    args: AgentArgs,
    limits: conn::Limits,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<impl Future<Output = std::io::Result<()>> + use<>, StartError> {
    let web =
        serve::start_web_config(args.web.config_file.as_deref()).map_err(StartError::BadInput)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| StartError::Listen(format!("{}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %addr,
        node = %args.node_name,
        cri_endpoint = %args.cri_endpoint.display(),
        interval = ?args.interval,
        tls = web.tls.is_some(),
        basic_auth = !web.users.is_empty(),
        "node agent listening"
    );
    let config = match &args.config {
        Some(path) => crate::config::agent::AgentConfig::load(path)
            .map_err(|e| StartError::BadInput(e.to_string()))?,
        None => crate::config::agent::AgentConfig::default(),
    };
    let settings = config.prune;
    let agent = Agent::new(&args.node_name, &settings);
    let client = cri::Client::new(&args.cri_endpoint, args.cri_timeout);
    if settings.enabled {
        let pruner = pruner(&args, settings, &client, &agent)?;
        tasks.spawn(pruner.run(agent.clone(), shutdown.clone()));
    }
    tasks.spawn(read_every(
        client,
        args.node_name.clone(),
        agent.clone(),
        args.interval,
        shutdown.clone(),
    ));
    let app = move |auth| router(agent, auth);
    Ok(serve::serve_app(
        listener,
        app,
        web,
        args.web.config_file.clone(),
        limits,
        tasks.clone(),
        shutdown.clone(),
    ))
}

/// The pruning runs of an agent whose `prune.enabled` is set.
fn pruner(
    args: &AgentArgs,
    settings: crate::analysis::prune::PruneSettings,
    client: &cri::Client,
    agent: &Agent,
) -> Result<prune::Pruner, StartError> {
    let exporter = args.exporter_url.clone().map(|url| prune::ExporterOptions {
        url,
        username: args.exporter_username.clone(),
        password_file: args.exporter_password_file.clone(),
        ca_file: args.exporter_ca_file.clone(),
        timeout: args.exporter_timeout,
    });
    if exporter.is_none() {
        tracing::warn!(
            "pruning is enabled without --exporter-url: the images wanted on this node \
             are unknown, so no run removes anything"
        );
    }
    tracing::info!(
        dry_run = settings.dry_run,
        target = ?settings.target,
        interval = ?settings.interval,
        max_removals_per_run = settings.max_removals_per_run,
        keep_rules = settings.keep.len(),
        "pruning enabled"
    );
    prune::Pruner::new(
        client.clone(),
        exporter,
        args.node_name.clone(),
        settings,
        agent.metrics.clone(),
    )
    .map_err(|e| StartError::BadInput(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cri::v1;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::{Duration, UNIX_EPOCH};
    use tower::ServiceExt;

    /// A reading at `at_secs` of one image of `size`, the image filesystem at `fs`.
    fn snapshot(at_secs: u64, size: u64, fs: u64) -> Snapshot {
        let images = v1::ListImagesResponse {
            images: vec![v1::Image {
                id: "sha256:aaa".into(),
                repo_tags: vec!["docker.io/library/nginx:1.25".into()],
                repo_digests: vec![],
                size,
                pinned: false,
            }],
        };
        let fs = v1::ImageFsInfoResponse {
            image_filesystems: vec![v1::FilesystemUsage {
                used_bytes: Some(v1::UInt64Value { value: fs }),
                ..Default::default()
            }],
            container_filesystems: vec![],
        };
        let at = UNIX_EPOCH + Duration::from_secs(at_secs);
        Snapshot::new(&report::agent_report("n", at, images, Some(&fs)), at).unwrap()
    }

    fn agent() -> (Agent, Router) {
        let settings = crate::config::agent::AgentConfig::default().prune;
        let agent = Agent::new("n", &settings);
        let auth = Arc::new(auth::BasicAuth::new(Default::default()));
        (agent.clone(), router(agent, auth))
    }

    /// One answer to `GET /v1/images`.
    struct Answer {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> &str {
            let value = self.headers.get(name).map(|v| v.to_str().unwrap());
            value.unwrap_or_default()
        }

        /// The report in the body, gzip'd or not.
        fn report(&self) -> crate::analysis::runtime::AgentReport {
            let mut json = self.body.clone();
            if self.headers.contains_key(header::CONTENT_ENCODING) {
                json.clear();
                let mut gz = flate2::read::GzDecoder::new(&self.body[..]);
                std::io::Read::read_to_end(&mut gz, &mut json).unwrap();
            }
            serde_json::from_slice(&json).unwrap()
        }
    }

    async fn get_images(app: &Router, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::get("/v1/images");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX);
        let body = body.await.unwrap().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    #[tokio::test]
    async fn an_unchanged_list_costs_a_304() {
        let (agent, app) = agent();
        assert_eq!(get_images(&app, &[]).await.status, 503);
        let first = snapshot(1_764_064_800, 10, 4096);
        let tag = first.etag.clone();
        agent.record(Ok(first));

        let a = get_images(&app, &[]).await;
        assert_eq!((a.status, a.header("etag")), (200, tag.as_str()));
        assert_eq!(a.header(validator::COLLECTED_AT), "2025-11-25T10:00:00Z");
        assert_eq!(a.header(validator::IMAGE_FS_USED), "4096");
        assert_eq!(a.report().collected_at, "2025-11-25T10:00:00Z");

        // A later reading of the same list, the filesystem use moved: same tag,
        // and a 304 with the new time and use.
        agent.record(Ok(snapshot(1_764_064_860, 10, 5000)));
        let weak = format!("\"other\", W/{tag}");
        for asked in [tag.as_str(), &weak, "*"] {
            let gzip = ("accept-encoding", "gzip");
            let a = get_images(&app, &[("if-none-match", asked), gzip]).await;
            assert_eq!((a.status, a.header("etag")), (304, tag.as_str()), "{asked}");
            assert_eq!(a.header(validator::COLLECTED_AT), "2025-11-25T10:01:00Z");
            assert_eq!(a.header(validator::IMAGE_FS_USED), "5000");
            assert!(a.header("content-encoding").is_empty() && a.body.is_empty());
        }

        // Another tag, or none: the whole list, gzip when asked.
        let asked = [("if-none-match", "\"other\""), ("accept-encoding", "gzip")];
        let a = get_images(&app, &asked).await;
        assert_eq!((a.status, a.header("etag")), (200, tag.as_str()));
        assert_eq!(a.header("content-encoding"), "gzip");
        assert_eq!(a.report().collected_at, "2025-11-25T10:01:00Z");
        assert_eq!(a.report().image_fs_used_bytes, Some(5000));

        // The list changed: the old tag gets the new list and its tag.
        agent.record(Ok(snapshot(1_764_064_920, 11, 5000)));
        let a = get_images(&app, &[("if-none-match", &tag)]).await;
        assert_eq!(a.status, 200);
        assert_ne!(a.header("etag"), tag);
        assert_eq!(a.report().images[0].size, 11);
        let new_tag = a.header("etag").to_string();
        let a = get_images(&app, &[("if-none-match", &new_tag)]).await;
        assert_eq!((a.status, a.header("etag")), (304, new_tag.as_str()));
    }
}
