//! The `/metrics` handler: the exposition format the client asks for.

use super::AppState;
use crate::metrics::{Encoding, Format};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The entries of `Accept`-style header values (`name;param=..;q=0.5, ...`), each
/// lower-cased with its quality (1 when not given, 0 when unreadable).
fn qualities<'a>(values: impl Iterator<Item = &'a str>) -> impl Iterator<Item = (String, f32)> {
    values.flat_map(|v| v.split(',')).map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        (name, q)
    })
}

/// Whether the `Accept` header values prefer OpenMetrics to the Prometheus text
/// format: OpenMetrics with a quality above zero and not below that of any range
/// matching `text/plain` (`text/plain`, `text/*`, `*/*`). `q=0` means "not this".
pub(crate) fn wants_openmetrics<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    let mut openmetrics: Option<f32> = None;
    let mut text: Option<f32> = None;
    for (media, q) in qualities(accept) {
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

/// Largest piece of the body handed to the connection at once: a piece is a view of
/// the shared text, so whatever the connection buffers or copies (TLS, gzip) stays
/// this small.
const PIECE: usize = 64 * 1024;

/// The parts of an exposition ([`crate::metrics::Metrics::render_parts`]) as a
/// body, sent in pieces of at most [`PIECE`] bytes, each a view of its part: a
/// client that reads slowly holds the shared text of the report, not a copy.
struct Parts {
    parts: [Bytes; 3],
    next: usize,
}

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        while let Some(part) = this.parts.get_mut(this.next) {
            if part.is_empty() {
                this.next += 1;
                continue;
            }
            let piece = part.split_to(part.len().min(PIECE));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.parts.iter().map(|p| p.len() as u64).sum())
    }
}

/// Whether the `Accept-Encoding` header values accept gzip: `gzip` (or `*` when
/// gzip is not named) with a quality above zero.
fn accepts_gzip<'a>(accept_encoding: impl Iterator<Item = &'a str>) -> bool {
    let mut gzip: Option<f32> = None;
    let mut any: Option<f32> = None;
    for (name, q) in qualities(accept_encoding) {
        match name.as_str() {
            "gzip" | "x-gzip" => gzip = Some(gzip.map_or(q, |old: f32| old.max(q))),
            "*" => any = Some(any.map_or(q, |old: f32| old.max(q))),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// OpenMetrics when the client asks for it (Prometheus does), else the Prometheus
/// text format, as client_golang negotiates. The report and its text are built on
/// a blocking thread: with thousands of nodes that takes a while.
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = if wants_openmetrics(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    ) {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    };
    let encoding = if accepts_gzip(
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    ) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let parts = tokio::task::spawn_blocking(move || {
        let (report, last_update) = s.store.report();
        s.metrics
            .render_parts(&report, last_update, format, encoding)
    })
    .await;
    let content_type = match format {
        Format::OpenMetrics => OPENMETRICS,
        Format::PrometheusText => PROMETHEUS_TEXT,
    };
    match parts {
        Ok(parts) => {
            let body = Body::new(Parts { parts, next: 0 });
            match encoding {
                Encoding::Identity => {
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                }
                // Compressed here, once per report for the big part; the
                // compression layer leaves a response with a Content-Encoding be.
                Encoding::Gzip => (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CONTENT_ENCODING, "gzip"),
                        (header::VARY, "accept-encoding"),
                    ],
                    body,
                )
                    .into_response(),
            }
        }
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
    use super::{PIECE, Parts, accepts_gzip, wants_openmetrics};
    use bytes::Bytes;
    use http_body::Body;
    use std::pin::Pin;

    fn om(accept: &[&str]) -> bool {
        wants_openmetrics(accept.iter().copied())
    }

    #[test]
    fn gzip_negotiation() {
        let gz = |v: &[&str]| accepts_gzip(v.iter().copied());
        assert!(gz(&["gzip"]), "what Prometheus sends");
        assert!(gz(&["deflate, gzip;q=1.0, *;q=0.5"]));
        assert!(gz(&["*"]));
        assert!(gz(&["GZIP"]));
        assert!(!gz(&[]));
        assert!(!gz(&["identity"]));
        assert!(!gz(&["gzip;q=0"]));
        assert!(!gz(&["gzip;q=0, *"]), "gzip named and refused");
        assert!(!gz(&["br, deflate"]));
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

    #[tokio::test]
    async fn the_body_is_the_parts_in_pieces_that_share_them() {
        let big = Bytes::from(vec![b'x'; 3 * PIECE + 1]);
        let parts = [Bytes::from_static(b"head\n"), big.clone(), Bytes::new()];
        let mut body = Parts { parts, next: 0 };
        assert_eq!(body.size_hint().exact(), Some(5 + 3 * PIECE as u64 + 1));
        let mut pieces = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            pieces.push(frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        let sizes: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [5, PIECE, PIECE, PIECE, 1]);
        assert_eq!(pieces[1].as_ptr(), big.as_ptr(), "a view, not a copy");
        assert_eq!(pieces[1..].concat(), big);
    }
}
