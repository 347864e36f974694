//! The `/metrics` handler: the exposition format the client asks for.

use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the `Accept` header values prefer OpenMetrics to the Prometheus text
/// format: OpenMetrics with a quality above zero and not below that of any range
/// matching `text/plain` (`text/plain`, `text/*`, `*/*`). `q=0` means "not this".
fn wants_openmetrics<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    let mut openmetrics: Option<f32> = None;
    let mut text: Option<f32> = None;
    for range in accept.flat_map(|v| v.split(',')) {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" | "text/*" | "*/*" => &mut text,
            _ => continue,
        };
        // The most favourable range for each format counts.
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    match openmetrics {
        Some(q) if q > 0.0 => text.is_none_or(|t| q >= t),
        _ => false,
    }
}

/// OpenMetrics when the client asks for it (Prometheus does), else the Prometheus
/// text format, as client_golang negotiates. The report and its text are built on
/// a blocking thread: with thousands of nodes that takes a while.
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
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

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    fn om(accept: &[&str]) -> bool {
        wants_openmetrics(accept.iter().copied())
    }

    #[test]
    fn negotiation() {
        // What Prometheus sends.
        assert!(om(&[
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
             application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
             escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ]));
        assert!(om(&["application/openmetrics-text; version=1.0.0"]));
        assert!(!om(&[]));
        assert!(!om(&["*/*"]));
        assert!(!om(&["text/plain"]));
        assert!(!om(&["application/openmetrics-text;q=0, text/plain"]));
        assert!(!om(&["application/openmetrics-text; q=0.0"]));
        assert!(!om(&[
            "application/openmetrics-text;q=0.2",
            "text/plain;q=0.5"
        ]));
        assert!(om(&[
            "text/plain;q=0.5",
            "application/openmetrics-text;Q=0.9"
        ]));
        assert!(!om(&["application/openmetrics-text;q=zero"]));
    }
}
