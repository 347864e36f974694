//! The accept loop and every connection's limits, for plain HTTP and TLS alike.
//!
//! Each connection is watched by its own task, which closes it when its current
//! phase overruns:
//!
//! - a new connection (TLS handshake included) must deliver complete request
//!   headers within the header-read timeout, and so must a request that has begun
//!   arriving on a kept-alive connection;
//! - a kept-alive connection may wait for its next request for the idle timeout;
//! - a response that makes no progress (the client stopped reading) for the idle
//!   timeout is dropped.
//!
//! While a request is being handled there is no connection deadline: the router's
//! request timeout bounds that. At most `max_connections` are open at once. At the
//! cap, a new connection takes the place of the connection that has waited
//! longest without a request in flight (stalled or idle), so a flood of
//! connections that send nothing cannot lock scrapes out; when every connection has
//! a request in flight, new ones wait in the listen backlog. Running out of file
//! descriptors is handled the same way, with a short back-off instead of a busy loop.

use axum::Router;
use axum::body::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Kernel send buffer of an accepted connection (Linux doubles it for its own
/// bookkeeping). Enough for a scrape at in-cluster round-trip times; a stalled
/// reader holds no more than this in the kernel.
const SEND_BUFFER_BYTES: usize = 64 * 1024;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use axum::body::Bytes;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Largest request head (request line and headers) buffered per HTTP/1 connection;
/// beyond it the request is answered 431. Scrapes send well under 1 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Pause after an `accept` error (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two warnings of the same kind from the accept loop.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How often the heap is trimmed after many connections have closed.
const TRIM_CHECK: Duration = Duration::from_secs(2);
/// Connections closed since the last trim that make a trim worth it: each held
/// tens of KiB (buffers, TLS state) that the allocator keeps otherwise.
const TRIM_AFTER_CLOSED: usize = 64;

/// The TLS configuration in force; replaced when the certificate files change.
pub type TlsConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Logs at most once per [`WARN_EVERY`], counting what it did not log.
pub struct RateLimited {
    last: Mutex<Option<std::time::Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    pub const fn new() -> RateLimited {
        RateLimited {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when it is time to log again, `n` being how many were skipped.
    pub fn check(&self, every: Duration) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        RateLimited::new()
    }
}

/// What a connection is doing, to know its deadline.
struct Phase {
    accepted: Instant,
    /// At least one request's headers arrived.
    served: bool,
    /// Requests whose handler is running.
    handling: usize,
    /// Requests whose response is not completely sent (handlers included).
    open: usize,
    /// When `open` last fell to zero.
    idle_since: Instant,
    /// First byte read since the connection became idle: a request is arriving.
    first_read: Option<Instant>,
    /// Last byte read or written.
    progress: Instant,
}

/// A connection's state, shared by its I/O, its service and its watchdog.
struct ConnState {
    phase: Mutex<Phase>,
    /// Something changed that can move the deadline, or eviction was asked.
    wake: Notify,
    evict: AtomicBool,
}

impl ConnState {
    fn new(now: Instant) -> ConnState {
        ConnState {
            phase: Mutex::new(Phase {
                accepted: now,
                served: false,
                handling: 0,
                open: 0,
                idle_since: now,
                first_read: None,
                progress: now,
            }),
            wake: Notify::new(),
            evict: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_read(&self) {
        let now = Instant::now();
        let mut p = self.lock();
        p.progress = now;
        if p.open == 0 && p.served && p.first_read.is_none() {
            p.first_read = Some(now);
            drop(p);
            self.wake.notify_one();
        }
    }

    fn on_write(&self) {
        self.lock().progress = Instant::now();
    }

    fn request_started(&self) {
        let mut p = self.lock();
        p.served = true;
        p.first_read = None;
        p.handling += 1;
        p.open += 1;
        drop(p);
        self.wake.notify_one();
    }

    fn handler_done(&self) {
        let mut p = self.lock();
        p.handling -= 1;
        p.progress = Instant::now();
        drop(p);
        self.wake.notify_one();
    }

    fn response_done(&self) {
        let mut p = self.lock();
        p.open -= 1;
        if p.open == 0 {
            p.idle_since = Instant::now();
            p.first_read = None;
        }
        drop(p);
        self.wake.notify_one();
    }

    /// When the connection is to be closed if nothing changes; `None` while a
    /// handler runs.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let p = self.lock();
        if p.handling > 0 {
            None
        } else if p.open > 0 {
            Some(p.progress + limits.idle_timeout)
        } else if !p.served {
            Some(p.accepted + limits.header_read_timeout)
        } else if let Some(t) = p.first_read {
            Some(t + limits.header_read_timeout)
        } else {
            Some(p.idle_since + limits.idle_timeout)
        }
    }

    /// Since when the connection has been waiting for a request, if it has no
    /// request in flight (a candidate for eviction at the cap).
    fn waiting_since(&self) -> Option<Instant> {
        let p = self.lock();
        if p.open > 0 {
            None
        } else if !p.served {
            Some(p.accepted)
        } else {
            Some(p.first_read.unwrap_or(p.idle_since))
        }
    }
}

/// The open connections, to pick one to evict at the cap.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    /// Most connections open at once since [`trim_after_bursts`] last looked.
    peak: std::sync::atomic::AtomicUsize,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn insert(&self, state: Arc<ConnState>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.lock();
        conns.insert(id, state);
        self.peak.fetch_max(conns.len(), Ordering::Relaxed);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection that has waited longest without a request in flight to
    /// close. False when every connection has a request in flight.
    fn evict_one(&self) -> bool {
        let conns = self.lock();
        let oldest = conns
            .values()
            .filter(|c| !c.evict.load(Ordering::Relaxed))
            .filter_map(|c| c.waiting_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.evict.store(true, Ordering::Relaxed);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Returns the memory of closed connections to the system after a burst: the
/// allocator would otherwise keep the peak (a flood of connections must not leave
/// the process at its size during the flood).
async fn trim_after_bursts(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let open = registry.len();
        peak = peak
            .max(open)
            .max(registry.peak.swap(open, Ordering::Relaxed));
        if peak >= open + TRIM_AFTER_CLOSED {
            let _ = tokio::task::spawn_blocking(crate::sys::release_free_memory).await;
            peak = open;
        }
    }
}

/// A stream that reports its reads and writes to the connection's state.
struct Tracked<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks a handler finished when it returns or is dropped (a reset stream).
struct HandlerGuard(Arc<ConnState>);

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        self.0.handler_done();
    }
}

/// Marks a response finished when the body is sent or dropped.
struct ResponseGuard(Arc<ConnState>);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// A response body that holds its connection's [`ResponseGuard`].
struct TrackedBody {
    inner: Body,
    _guard: ResponseGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish
/// their requests; returns when all are closed (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Hyper's own header timeout would also cut idle keep-alive connections at the
    // header timeout; the watchdog below does both with their own durations.
    builder.http1().max_buf_size(MAX_HEAD_BYTES);
    builder.http2().max_concurrent_streams(32);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let connections = TaskTracker::new();
    let accept_warning = RateLimited::new();
    let cap_warning = RateLimited::new();
    connections.spawn(trim_after_bursts(registry.clone(), shutdown.clone()));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if paused_after_accept_error(&e, &registry, &accept_warning, &shutdown).await {
                    continue;
                }
                break;
            }
        };
        let Some(permit) =
            connection_slot(&permits, &registry, &limits, &cap_warning, &shutdown).await
        else {
            break;
        };
        tune_socket(&stream);
        let state = Arc::new(ConnState::new(Instant::now()));
        let id = registry.insert(state.clone());
        let (registry, builder, app, tls, shutdown) = (
            registry.clone(),
            builder.clone(),
            app.clone(),
            tls.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            connection(stream, state, &builder, app, tls, limits, shutdown).await;
            registry.remove(id);
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// After an accept error that is not one connection's (out of file descriptors,
/// EMFILE or ENFILE, or memory): makes room by closing a connection that waits
/// for nothing, and pauses. `false` when `shutdown` came meanwhile.
async fn paused_after_accept_error(
    e: &io::Error,
    registry: &Registry,
    warning: &RateLimited,
    shutdown: &CancellationToken,
) -> bool {
    let evicted = registry.evict_one();
    if let Some(skipped) = warning.check(WARN_EVERY) {
        tracing::warn!(
            open = registry.len(),
            evicted,
            similar_since_last = skipped,
            "accept error: {e}; retrying in {ACCEPT_BACKOFF:?}"
        );
    }
    tokio::select! {
        _ = tokio::time::sleep(ACCEPT_BACKOFF) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// A place for one more connection under `limits.max_connections`: at once, or
/// after closing the connection that waited longest for a request, or, when every
/// connection has a request in flight, once one ends. `None` on shutdown.
async fn connection_slot(
    permits: &Arc<Semaphore>,
    registry: &Registry,
    limits: &Limits,
    warning: &RateLimited,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(p) = permits.clone().try_acquire_owned() {
        return Some(p);
    }
    let evicted = registry.evict_one();
    if let Some(skipped) = warning.check(WARN_EVERY) {
        tracing::warn!(
            max_connections = limits.max_connections,
            evicted,
            similar_since_last = skipped,
            "connection limit reached; {}",
            if evicted {
                "closing the connection that waited longest for a request"
            } else {
                "every connection has a request in flight, waiting for one to finish"
            }
        );
    }
    tokio::select! {
        p = permits.clone().acquire_owned() => p.ok(),
        _ = shutdown.cancelled() => None,
    }
}

/// No Nagle delay, and a bounded send buffer: a client that stops reading leaves
/// what was written in the kernel's send buffer, which autotuning grows to
/// megabytes and cgroup v2 charges to the pod; bounded, the memory limit holds
/// whatever the connections do.
fn tune_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER_BYTES) {
        tracing::debug!("SO_SNDBUF: {e}");
    }
}

/// Errors about one connection that went away before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    stream: TcpStream,
    state: Arc<ConnState>,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    tls: Option<TlsConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let io = Tracked {
        inner: stream,
        state: state.clone(),
    };
    match tls {
        None => http(io, state, builder, app, limits, shutdown).await,
        Some(tls) => {
            let config = tls.read().unwrap_or_else(|e| e.into_inner()).clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let deadline = state.lock().accepted + limits.header_read_timeout;
            let handshake = tokio::select! {
                r = tokio::time::timeout_at(deadline, acceptor.accept(io)) => r,
                _ = shutdown.cancelled() => return,
                _ = evicted(&state) => return,
            };
            match handshake {
                Ok(Ok(io)) => http(io, state, builder, app, limits, shutdown).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Resolves once the connection was asked to make room.
async fn evicted(state: &ConnState) {
    while !state.evict.load(Ordering::Relaxed) {
        state.wake.notified().await;
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io`, closing it at its deadline.
async fn http<I>(
    io: I,
    state: Arc<ConnState>,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let state = svc_state.clone();
        state.request_started();
        let handling = HandlerGuard(state.clone());
        let guard = ResponseGuard(state);
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(handling);
            response.map(|r| {
                r.map(|inner| TrackedBody {
                    inner,
                    _guard: guard,
                })
            })
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = state.deadline(&limits);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = sleep => {
                if state.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection past its deadline");
                    return;
                }
            }
            _ = state.wake.notified() => {
                if state.evict.load(Ordering::Relaxed) && state.waiting_since().is_some() {
                    tracing::debug!("closing a waiting connection to make room for a new one");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Open files kept for other uses than connections: the listener, the runtime,
/// logs, the nodes or configuration files, the API server client.
const RESERVED_FILES: u64 = 64;

/// The connection limits from the flags, the cap lowered to fit the open-file limit
/// (raised to its hard limit first) so that accepting never fails for lack of
/// descriptors.
pub fn fit_limits(
    max_connections: u32,
    header_read_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
) -> Limits {
    let mut max_connections = u64::from(max_connections);
    if let Some(files) = crate::sys::raise_open_file_limit() {
        let fit = files.saturating_sub(RESERVED_FILES).max(1);
        if fit < max_connections {
            tracing::warn!(
                open_file_limit = files,
                "--web.max-connections {max_connections} lowered to {fit} to fit the open-file limit"
            );
            max_connections = fit;
        }
    }
    Limits {
        header_read_timeout,
        idle_timeout,
        max_connections: max_connections as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        max_connections: 4,
    };

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline() {
        let t0 = Instant::now();
        let c = ConnState::new(t0);
        assert_eq!(
            c.deadline(&LIMITS),
            Some(t0 + LIMITS.header_read_timeout),
            "new: headers (and the TLS handshake) within the header timeout"
        );
        c.on_read();
        assert_eq!(
            c.deadline(&LIMITS),
            Some(t0 + LIMITS.header_read_timeout),
            "bytes trickling in do not extend it"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        c.request_started();
        assert_eq!(c.deadline(&LIMITS), None, "a handler is running");
        tokio::time::advance(Duration::from_secs(1)).await;
        c.handler_done();
        let t2 = Instant::now();
        assert_eq!(
            c.deadline(&LIMITS),
            Some(t2 + LIMITS.idle_timeout),
            "a response being sent must make progress"
        );
        c.response_done();
        assert_eq!(c.deadline(&LIMITS), Some(t2 + LIMITS.idle_timeout), "idle");
        tokio::time::advance(Duration::from_secs(30)).await;
        c.on_read();
        assert_eq!(
            c.deadline(&LIMITS),
            Some(Instant::now() + LIMITS.header_read_timeout),
            "the next request has begun: its headers within the header timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_waiting_connection_goes_never_one_in_flight() {
        let registry = Registry::default();
        let busy = Arc::new(ConnState::new(Instant::now()));
        busy.request_started();
        registry.insert(busy.clone());
        tokio::time::advance(Duration::from_secs(1)).await;
        let older = Arc::new(ConnState::new(Instant::now()));
        registry.insert(older.clone());
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = Arc::new(ConnState::new(Instant::now()));
        registry.insert(newer.clone());

        assert!(registry.evict_one());
        assert!(older.evict.load(Ordering::Relaxed));
        assert!(registry.evict_one());
        assert!(newer.evict.load(Ordering::Relaxed));
        assert!(!registry.evict_one(), "only a connection in flight is left");
        assert!(!busy.evict.load(Ordering::Relaxed));
    }

    #[test]
    fn rate_limited_logs_once_per_period() {
        let r = RateLimited::new();
        assert_eq!(r.check(Duration::from_secs(60)), Some(0));
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::ZERO), Some(2), "counts what it skipped");
    }
}
