//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and the status page at `/`,
//! with the exporter-toolkit web configuration (TLS, basic auth).

pub mod auth;
pub mod metrics;
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
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
}

pub fn router(state: AppState, users: BTreeMap<String, String>) -> Router {
    // Probes stay open: they reveal nothing, and the kubelet cannot authenticate.
    let protected = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics::handler));
    let protected = if users.is_empty() {
        protected
    } else {
        protected.layer(middleware::from_fn_with_state(
            Arc::new(auth::BasicAuth::new(users)),
            auth::basic_auth,
        ))
    };
    Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// The status page, from the same cached report as `/metrics`, computed off the
/// async workers.
async fn status_page(State(s): State<AppState>) -> Response {
    match s.store.report_off_runtime().await {
        Ok((report, last_update)) => {
            Html(status_page::render(&report, last_update, SystemTime::now())).into_response()
        }
        Err(e) => {
            tracing::error!("rendering the status page failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish
/// (within [`SHUTDOWN_GRACE`] with TLS, where the server handle tracks
/// connections; the caller bounds the plain-HTTP case). Helper tasks go into
/// `tasks`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    web: WebConfig,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state, web.users.clone());
    match &web.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
        Some(settings) => {
            let config = tls::rustls_config(settings).map_err(std::io::Error::other)?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                stop.cancelled().await;
                stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
            });
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            tasks.spawn(tls::reload_certificates(
                settings.clone(),
                rustls.clone(),
                shutdown.clone(),
            ));
            axum_server::from_tcp_rustls(listener.into_std()?, rustls)?
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}
