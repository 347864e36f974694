//! The `/metrics` handler: the exposition in the format and encoding the client
//! asks for ([`crate::metrics::exposition`]), sent in pieces of shared text.

use super::AppState;
use crate::metrics::{Encoding, TextFormat};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often, while nodes change, the report and its compressed text are brought
/// up to date ahead of the scrapes: a scrape then analyzes and compresses only
/// what changed since, a fraction of a second's worth.
const PREPARE_EVERY: Duration = Duration::from_millis(250);

/// Largest piece of the body handed to the connection at once: a piece is a view of
/// the shared text, so whatever the connection buffers or copies (TLS, gzip) stays
/// this small.
const PIECE: usize = 64 * 1024;

/// The parts of an exposition ([`crate::metrics::Metrics::render_parts`]) as a
/// body, sent in pieces of at most [`PIECE`] bytes, each a view of its part: a
/// client that reads slowly holds the shared text of the report, not a copy.
struct Parts {
    parts: Vec<Bytes>,
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

/// OpenMetrics when the client asks for it (Prometheus does), else the Prometheus
/// text format, as client_golang negotiates. The report and its text are built on
/// a blocking thread: with thousands of nodes that takes a while.
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let values =
        |name: header::HeaderName| headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let format = TextFormat::negotiate(values(header::ACCEPT));
    let encoding = Encoding::negotiate(values(header::ACCEPT_ENCODING));
    let parts = tokio::task::spawn_blocking(move || {
        let (report, last_update) = s.store.report();
        s.metrics
            .render_parts(&report, last_update, format, encoding)
    })
    .await;
    let content_type = format.content_type();
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

/// Until `shutdown`: every [`PREPARE_EVERY`], when something changed, makes the
/// report and its gzipped text on a blocking thread, as the next scrape would.
/// Under steady node churn a scrape (every 15 s or more) would otherwise analyze
/// and compress at once everything that changed since the last one.
pub async fn prepare_ahead(s: AppState, shutdown: CancellationToken) {
    let mut made = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PREPARE_EVERY) => {}
        }
        let generation = s.store.generation();
        if made == Some(generation) || !s.store.ready() {
            continue;
        }
        let state = s.clone();
        let done = tokio::task::spawn_blocking(move || {
            let (report, _) = state.store.report();
            state.metrics.prepare(&report);
        })
        .await;
        if let Err(e) = done {
            tracing::error!("preparing the report failed: {e}");
        }
        made = Some(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::{PIECE, Parts};
    use bytes::Bytes;
    use http_body::Body;
    use std::pin::Pin;

    #[tokio::test]
    async fn the_body_is_the_parts_in_pieces_that_share_them() {
        let big = Bytes::from(vec![b'x'; 3 * PIECE + 1]);
        let parts = vec![Bytes::from_static(b"head\n"), big.clone(), Bytes::new()];
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
