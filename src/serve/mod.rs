//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and the status page at `/`,
//! with the exporter-toolkit web configuration (TLS, basic auth).

pub mod auth;
pub mod conn;
pub mod scrape;
pub mod sources;
pub mod start;
pub mod status_page;
pub mod tls;
pub mod web_config;

use crate::metrics::Metrics;
use crate::store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::CompressionLevel;
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, NeverClassifyEos, ServerErrorsAsFailures,
    ServerErrorsFailureClass, SharedClassifier,
};
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use web_config::WebConfig;

/// Requests taking longer than this are answered 503 rather than piling up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long in-flight requests may take to finish after shutdown begins: a
/// client that stops reading must not hold the exit beyond the pod's grace period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Where the metrics are served (`--web.telemetry-path`, `/metrics` by default).
    pub telemetry_path: Arc<str>,
}

/// The routes; `/` and the metrics behind `auth` (open while it has no user).
pub fn router(state: AppState, auth: Arc<auth::BasicAuth>) -> Router {
    // Probes stay open: they reveal nothing, and the kubelet cannot authenticate.
    let protected = Router::new()
        .route("/", get(status_page))
        .route(&state.telemetry_path, get(scrape::handler))
        .route("/v1/wanted", get(wanted))
        .layer(middleware::from_fn_with_state(auth, auth::basic_auth));
    let routes = Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    with_common_layers(routes).with_state(state)
}

/// What the status page needs, and nothing more: its inline `<style>` and
/// `style=` attributes; no script, image, font, frame or form, and no framing by
/// another site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The layers every route of `serve` and `agent` goes through: the request
/// timeout, gzip, request tracing, and the security headers of the answers.
pub fn with_common_layers<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    use axum::http::{HeaderName, HeaderValue, header};
    let always = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // gzip when the client accepts it, as client_golang does: Prometheus always
        // asks, and the exposition shrinks about tenfold. The fastest level keeps
        // the CPU cost per scrape small.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        // On every answer, whatever its type: harmless on the text and JSON ones,
        // and no HTML answer can be left without them.
        .layer(always(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(always(header::X_FRAME_OPTIONS, "DENY"))
        .layer(TraceLayer::new(SharedClassifier::new(Classifier)))
}

/// Marks a 5xx answer that is expected, such as `/readyz`'s 503 before the first
/// data: request tracing logs it at DEBUG, not as a failure at ERROR on every
/// probe. Unmarked 5xx answers (a handler's 500, the request timeout's 503) stay
/// failures.
#[derive(Clone, Copy, Debug)]
pub struct Expected;

/// An expected 503: the answer with the [`Expected`] mark.
pub fn unavailable(body: impl IntoResponse) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response.extensions_mut().insert(Expected);
    response
}

/// tower-http's [`ServerErrorsAsFailures`], except for answers marked [`Expected`].
#[derive(Clone, Copy, Debug, Default)]
struct Classifier;

impl ClassifyResponse for Classifier {
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn classify_response<B>(
        self,
        res: &http::Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        if res.extensions().get::<Expected>().is_some() {
            ClassifiedResponse::Ready(Ok(()))
        } else {
            ServerErrorsAsFailures::new().classify_response(res)
        }
    }

    fn classify_error<E: std::fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        ServerErrorsAsFailures::new().classify_error(error)
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => unavailable(format!("not ready: {reason}\n")),
    }
}

/// The status page, from the same cached report as `/metrics`, computed off the
/// async workers.
async fn status_page(State(s): State<AppState>) -> Response {
    match s.store.report_off_runtime().await {
        Ok((report, last_update)) => Html(status_page::render_with_metrics_at(
            &report,
            last_update,
            SystemTime::now(),
            &s.telemetry_path,
        ))
        .into_response(),
        Err(e) => {
            tracing::error!("rendering the status page failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct WantedQuery {
    node: Option<String>,
}

/// `GET /v1/wanted?node=NAME`: the images wanted on a node, which its agent's
/// pruning keeps ([`crate::analysis::prune::WantedOnNode`]). 503 before the first
/// node list, 404 for a node the exporter does not know, 400 without a node.
async fn wanted(
    State(s): State<AppState>,
    query: Result<axum::extract::Query<WantedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let error = |code: StatusCode, message: String| {
        (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let Some(node) = query.ok().and_then(|q| q.0.node).filter(|n| !n.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the node: /v1/wanted?node=NAME".into(),
        );
    };
    if let Some(reason) = s.store.not_ready_reason() {
        return unavailable(axum::Json(
            serde_json::json!({ "error": format!("not ready: {reason}") }),
        ));
    }
    match s.store.report_off_runtime().await {
        Ok((report, _)) => match crate::analysis::prune::wanted_on_node(&report, &node) {
            Some(answer) => axum::Json(answer).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no node {:?} in the exporter's view",
                    crate::text::shown(&node)
                ),
            ),
        },
        Err(e) => {
            tracing::error!("computing the report failed: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "computing the report failed".into(),
            )
        }
    }
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish (the
/// caller bounds that wait by [`SHUTDOWN_GRACE`]). Every connection, plain or TLS,
/// goes through [`conn::serve`] and its `limits`. Helper tasks (certificate and
/// user reloads) go into `tasks`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    web: WebConfig,
    web_config_file: Option<PathBuf>,
    limits: conn::Limits,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = |auth| router(state, auth);
    serve_app(listener, app, web, web_config_file, limits, tasks, shutdown).await
}

/// [`serve`] for any router: `app` builds it around the basic auth of `web`.
pub async fn serve_app(
    listener: TcpListener,
    app: impl FnOnce(Arc<auth::BasicAuth>) -> Router,
    web: WebConfig,
    web_config_file: Option<PathBuf>,
    limits: conn::Limits,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let auth = Arc::new(auth::BasicAuth::new(web.users.clone()));
    let tls = match &web.tls {
        None => None,
        Some(settings) => {
            let config = tls::rustls_config(settings).map_err(std::io::Error::other)?;
            let shared: conn::TlsConfig = Arc::new(RwLock::new(Arc::new(config)));
            tasks.spawn(tls::reload_certificates(
                settings.clone(),
                shared.clone(),
                shutdown.clone(),
            ));
            Some(shared)
        }
    };
    if let Some(path) = web_config_file {
        tasks.spawn(web_config::reload_users(
            path,
            web,
            auth.clone(),
            shutdown.clone(),
        ));
    }
    conn::serve(listener, app(auth), tls, limits, shutdown).await
}

/// The web configuration a server starts with: the file's when there is one
/// (its certificates and keys read now, so a bad one stops the start), else
/// plain HTTP without auth.
pub fn start_web_config(path: Option<&std::path::Path>) -> Result<WebConfig, String> {
    let Some(path) = path else {
        return Ok(WebConfig::default());
    };
    let web = WebConfig::load(path).map_err(|e| e.to_string())?;
    if let Some(tls) = &web.tls {
        tls::rustls_config(tls).map_err(|e| format!("web config: {e}"))?;
    }
    Ok(web)
}

/// Runs `server` until it fails or `shutdown` begins (SIGTERM or SIGINT cancel
/// it); then stops every task, letting in-flight requests finish within
/// [`SHUTDOWN_GRACE`]. The one way `serve` and `agent` end.
pub async fn until_stopped(
    server: impl std::future::Future<Output = std::io::Result<()>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> std::process::ExitCode {
    tasks.spawn(stop_on_signal(shutdown.clone()));
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                    Ok(())
                }
            }
        }
    };
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("HTTP server failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot handle SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(response: Response) -> bool {
        match Classifier.classify_response(&response) {
            ClassifiedResponse::Ready(r) => r.is_err(),
            ClassifiedResponse::RequiresEos(_) => unreachable!("never classifies at the end"),
        }
    }

    #[test]
    fn expected_unavailability_is_no_failure_and_real_errors_are() {
        assert!(!failed(unavailable("not ready\n")));
        assert!(failed(StatusCode::SERVICE_UNAVAILABLE.into_response()));
        assert!(failed(StatusCode::INTERNAL_SERVER_ERROR.into_response()));
        assert!(!failed(StatusCode::OK.into_response()));
        assert!(!failed(StatusCode::NOT_FOUND.into_response()));
    }
}
