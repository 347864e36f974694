//! The `/metrics` handler: the exposition format the client asks for.

use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics when the client asks for it (Prometheus does), else the Prometheus
/// text format, as client_golang negotiates. The report and its text are built on
/// a blocking thread: with thousands of nodes that takes a while.
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        let (report, last_update) = s.store.report();
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
