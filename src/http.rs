//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and the status page at `/`.

use crate::analysis::Wanted;
use crate::metrics::Metrics;
use crate::source::Store;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests taking longer than this are answered 503 rather than piling up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub wanted: Arc<Wanted>,
    pub default_max_images: i64,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// OpenMetrics when the client asks for it (Prometheus does), else the Prometheus
/// text format, as client_golang negotiates.
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        let (report, last_update) = s.store.report(&s.wanted, s.default_max_images);
        let text = s.metrics.render(&report, last_update);
        if openmetrics {
            text
        } else {
            crate::metrics::to_prometheus_text(&text)
        }
    })
    .await;
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => {
            tracing::error!("rendering metrics failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.store.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first complete node list\n",
        )
            .into_response()
    }
}

async fn status_page(State(s): State<AppState>) -> Html<String> {
    let (report, last_update) = s.store.report(&s.wanted, s.default_max_images);
    Html(crate::status_page::render(
        &report,
        last_update,
        SystemTime::now(),
    ))
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
