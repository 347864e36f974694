//! The node agents' view of each runtime: agents are found through their
//! Service's EndpointSlices (watched; RBAC `list`/`watch` on `endpointslices` in
//! the agents' namespace only), and each agent's `/v1/images` is read every
//! interval, a few at a time, with a timeout and a bound on the body.
//!
//! A node gets the runtime's image list only from a fresh, well-formed report by
//! the agent on that node. Anything else (no agent endpoint, an agent that is
//! unreachable, slow, answers garbage or too much, or reports a runtime answer
//! older than the allowed age) is counted and logged, and the node falls back to
//! what the API alone shows (`unverifiable` at the cap).

use super::{About, Loudness, report_failure};
use crate::analysis::runtime::{
    AgentReport, COLLECTED_AT_HEADER, DecodedReport, IMAGE_FS_USED_HEADER, MAX_RUNTIME_NAMES,
    RuntimeSummary, decode_report,
};
use crate::analysis::{Relevance, intern};
use crate::client::http::{HttpError, timed_out};
use crate::client::kept::{Connector, Exchange, Idle, SendError, TlsSetupError};
use crate::client::kube_error::WatcherLine;
use crate::metrics::{Failure, Metrics, SourceErrorKind};
use crate::store::Store;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store as Reflected};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where the agents are and how to read them.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub namespace: String,
    pub service: String,
    /// The EndpointSlice port to use, by name; the only port when there is one.
    pub port_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_body_bytes: u64,
    /// Oldest runtime answer (`collectedAt`) still trusted.
    pub max_age: Duration,
    pub https: bool,
    pub ca_file: Option<PathBuf>,
    pub basic_auth: Option<(String, PathBuf)>,
}

/// Why `--agents` is not `NAMESPACE/SERVICE`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceRefError {
    #[error("{0:?} is not NAMESPACE/SERVICE")]
    NoSlash(String),
    #[error("{0:?}: namespace and service must be DNS labels (lower-case letters, digits, '-')")]
    NotDnsLabels(String),
}

/// `NAMESPACE/SERVICE`, as `--agents` takes it.
pub fn parse_service_ref(s: &str) -> Result<(String, String), ServiceRefError> {
    let (ns, svc) = s
        .split_once('/')
        .ok_or_else(|| ServiceRefError::NoSlash(s.to_string()))?;
    let dns_label = |x: &str| {
        !x.is_empty()
            && x.len() <= 63
            && x.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !x.starts_with('-')
            && !x.ends_with('-')
    };
    if !dns_label(ns) || !dns_label(svc) {
        return Err(ServiceRefError::NotDnsLabels(s.to_string()));
    }
    Ok((ns.to_string(), svc.to_string()))
}

/// One agent to read: the node it serves and its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub node: String,
    /// `host:port`, IPv6 hosts in brackets.
    pub authority: String,
}

/// The agents the EndpointSlices point at, one per node: ready endpoints with a
/// node name and an address, on the named port. Endpoints that cannot be used
/// are returned as messages.
pub fn targets(slices: &[Arc<EndpointSlice>], port_name: &str) -> (Vec<Target>, Vec<String>) {
    let mut by_node: BTreeMap<String, Target> = BTreeMap::new();
    let mut problems = Vec::new();
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or("<unnamed>");
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = match ports {
            [only] => only.port,
            many => many
                .iter()
                .find(|p| p.name.as_deref() == Some(port_name))
                .and_then(|p| p.port),
        };
        let Some(port) = port.filter(|p| (1..=65535).contains(p)) else {
            if !slice.endpoints.is_empty() {
                problems.push(format!(
                    "EndpointSlice {slice_name}: no port named {port_name:?}"
                ));
            }
            continue;
        };
        for endpoint in &slice.endpoints {
            // Not ready (starting, terminating): read it when it is.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(node) = endpoint.node_name.as_deref().filter(|n| !n.is_empty()) else {
                problems.push(format!(
                    "EndpointSlice {slice_name}: an endpoint without nodeName ({:?})",
                    endpoint.addresses
                ));
                continue;
            };
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let host = if slice.address_type == "IPv6" || address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            by_node.entry(node.to_string()).or_insert(Target {
                node: node.to_string(),
                authority: format!("{host}:{port}"),
            });
        }
    }
    (by_node.into_values().collect(), problems)
}

/// Why an agent's answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading the body failed (too large, cut off): that error, not a JSON one.
    #[error("{0}")]
    Read(std::io::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the answer is not an agent report: {0}")]
    NotAReport(serde_json::Error),
    #[error("the agent reports node {reported:?}, but its endpoint is on {node:?}")]
    OtherNode { reported: String, node: String },
    #[error("collectedAt {at:?}: {error}")]
    CollectedAt {
        at: String,
        error: humantime::TimestampError,
    },
    /// No exact age here: the message is logged again only when it changes.
    #[error(
        "the runtime's list was collected at {at}, more than {} ago: is the runtime down?",
        humantime::format_duration(*.max_age)
    )]
    Stale { at: String, max_age: Duration },
    #[error("decoding the answer failed: {0}")]
    Decoder(tokio::task::JoinError),
    /// A `304 Not Modified` that cannot stand for the remembered answer.
    #[error("304 Not Modified {0}")]
    NotModified(NotModifiedError),
}

/// Why a `304 Not Modified` cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotModifiedError {
    #[error("to a request without If-None-Match")]
    NotAsked,
    #[error("with ETag {got:?}, but If-None-Match was {sent:?}")]
    OtherTag { sent: String, got: Option<String> },
    #[error(
        "without the {} header: the list's age is unknown",
        COLLECTED_AT_HEADER
    )]
    NoTime,
    #[error("with {IMAGE_FS_USED_HEADER} {0:?}, not a number of bytes")]
    BadFsUse(String),
}

/// A failed read of one agent, counted as an `agent` source error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The client for the agents cannot be made.
    #[error("{0}")]
    Client(TlsSetupError),
    /// A request that cannot be made (a password that is not a header value).
    #[error("{url}: cannot make the request: {error}")]
    Request { url: String, error: http::Error },
    #[error("{url}: {error}")]
    Exchange { url: String, error: SendError },
    /// A redirect, which is not followed (the error names the URL).
    #[error("{0}")]
    Redirect(HttpError),
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error("{url}: {error}")]
    Answer { url: String, error: ReportError },
    /// The whole exchange, a body trickled in slowly included, took too long.
    #[error("{url}: {} without a complete answer", timed_out(*.timeout))]
    Timeout { url: String, timeout: Duration },
}

impl Failure for AgentError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::Agent
    }
}

/// The agents' EndpointSlices cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("{}", WatcherLine(.0))]
pub struct DiscoveryError(pub watcher::Error);

impl Failure for DiscoveryError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::AgentDiscovery
    }
}

/// Decodes an agent's answer as it is read and checks it: it must be about
/// `node` and its runtime answer no older than `max_age` at `now`. Only what can
/// match an image wanted now is kept ([`decode_report`]).
pub fn check_report(
    body: impl std::io::Read,
    node: &str,
    now: SystemTime,
    max_age: Duration,
    relevance: &Relevance,
) -> Result<DecodedReport, ReportError> {
    let report = decode_report(body, relevance).map_err(|e| match e.classify() {
        serde_json::error::Category::Io => ReportError::Read(std::io::Error::from(e)),
        _ => ReportError::NotAReport(e),
    })?;
    if report.node != node {
        return Err(ReportError::OtherNode {
            reported: report.node,
            node: node.to_string(),
        });
    }
    check_fresh(&report.collected_at, now, max_age)?;
    Ok(report)
}

/// Checks that a runtime answer collected at `at` (RFC 3339) is no older than
/// `max_age` at `now`: the body's `collectedAt` on a `200`, the
/// [`COLLECTED_AT_HEADER`] header on a `304`.
pub fn check_fresh(at: &str, now: SystemTime, max_age: Duration) -> Result<(), ReportError> {
    let collected =
        humantime::parse_rfc3339_weak(at).map_err(|error| ReportError::CollectedAt {
            at: at.to_string(),
            error,
        })?;
    let age = now.duration_since(collected).unwrap_or_default();
    if age > max_age {
        return Err(ReportError::Stale {
            at: at.to_string(),
            max_age,
        });
    }
    Ok(())
}

/// What one read of an agent brought.
#[derive(Debug)]
pub enum Answer {
    /// A whole report, and its `ETag` when the agent sent one.
    Full {
        report: Box<DecodedReport>,
        etag: Option<String>,
    },
    /// `304 Not Modified`: the report of the tag sent still holds, and is fresh;
    /// the image filesystem use, which the tag does not cover, is this now.
    Unchanged { image_fs_used_bytes: Option<u64> },
}

/// The headers of a `304 Not Modified` that tell what it stands for.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotModified<'a> {
    pub etag: Option<&'a str>,
    pub collected_at: Option<&'a str>,
    pub image_fs_used_bytes: Option<&'a str>,
}

/// Checks a `304 Not Modified` to a request that sent `sent` as If-None-Match
/// (none: an unconditional request): it must repeat that tag and tell a fresh
/// collection time. The comparison is exact: the exporter sends only tags the
/// agent gave it, and the agent repeats them as they are. Returns the image
/// filesystem use it tells (none without the header, as a report without
/// `imageFsUsedBytes`).
pub fn check_not_modified(
    sent: Option<&str>,
    answer: NotModified<'_>,
    now: SystemTime,
    max_age: Duration,
) -> Result<Option<u64>, ReportError> {
    let fail = |e| Err(ReportError::NotModified(e));
    let Some(sent) = sent else {
        return fail(NotModifiedError::NotAsked);
    };
    if answer.etag != Some(sent) {
        return fail(NotModifiedError::OtherTag {
            sent: sent.to_string(),
            got: answer.etag.map(str::to_string),
        });
    }
    let Some(at) = answer.collected_at else {
        return fail(NotModifiedError::NoTime);
    };
    check_fresh(at, now, max_age)?;
    match answer
        .image_fs_used_bytes
        .map(|v| (v, v.trim().parse::<u64>()))
    {
        None => Ok(None),
        Some((_, Ok(used))) => Ok(Some(used)),
        Some((v, Err(_))) => fail(NotModifiedError::BadFsUse(v.to_string())),
    }
}

/// A reader that fails past `max` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: std::io::Read> std::io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte more than allowed tells a body of exactly `max` from a larger one.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(ReportError::TooLarge(self.max)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The body's chunks, as they arrive, to a reader on a blocking thread.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, BoxError>>,
    current: bytes::Bytes,
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                // The end of the body, or the reading side gave up (timeout,
                // shutdown): the decoder stops either way.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Chunks in flight between the network and the decoder.
const CHUNKS_IN_FLIGHT: usize = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a body, gzip-compressed or not (as `headers` say), into `decode` as it
/// arrives, failing past `max` bytes after decompression. `decode` runs on a
/// blocking thread and sees the body as a reader: the body is never held whole
/// (a few chunks are in flight), so an agent's answer costs what `decode` keeps
/// of it. (Decompressed here rather than by the HTTP client, so that the bound
/// applies to what is decoded as it is decoded.) Returns what `decode` made and
/// whether the body was read to its end (only then can the connection carry
/// another exchange).
async fn read_streaming<T, B>(
    headers: &http::HeaderMap,
    mut body: B,
    max: u64,
    decode: impl FnOnce(&mut dyn std::io::Read) -> Result<T, ReportError> + Send + 'static,
) -> Result<(T, bool), ReportError>
where
    T: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let gzip = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if !gzip && length.is_some_and(|n| n > max) {
        return Err(ReportError::TooLarge(max));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let decoder = tokio::task::spawn_blocking(move || {
        let chunks = Chunks {
            rx,
            current: bytes::Bytes::new(),
        };
        let body: Box<dyn std::io::Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                chunks,
            )))
        } else {
            Box::new(chunks)
        };
        let mut reader = std::io::BufReader::with_capacity(
            64 << 10,
            Bounded {
                inner: body,
                left: max,
                max,
            },
        );
        decode(&mut reader)
    });
    let mut ended = false;
    loop {
        let chunk = match body.frame().await {
            // Trailers carry nothing an agent sends.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Some(Err(e)) => Err(e.into()),
            None => {
                ended = true;
                break;
            }
        };
        let failed = chunk.is_err();
        // A closed channel: the decoder is done (it failed, or the body goes on
        // past the end of the JSON); its answer says which.
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let decoded = decoder.await.map_err(ReportError::Decoder)??;
    Ok((decoded, ended))
}

/// The connections to the agents: HTTPS with `--agents-https` (rustls with the
/// process's crypto provider, the system's roots and the CA when one is given).
///
/// Each agent's connection is kept from one round to the next (see
/// [`crate::client::kept`]): an agent whose list did not change then costs one
/// request and a `304` on an open connection, with no TCP or TLS handshake, and
/// an idle connection costs the exporter a socket, not an HTTP client's
/// buffers. Redirects are never followed: an answer that redirects is an error.
pub fn connector(opts: &AgentOptions) -> Result<Connector, TlsSetupError> {
    if opts.https {
        Connector::tls(opts.timeout, opts.ca_file.as_deref())
    } else {
        Ok(Connector::plain(opts.timeout))
    }
}

/// The request for an agent's list: conditional with `etag`, with basic auth
/// when both a user and a password are set.
fn request(
    target: &Target,
    etag: Option<&str>,
    basic_auth: Option<(&str, &str)>,
) -> Result<http::Request<http_body_util::Empty<bytes::Bytes>>, http::Error> {
    use base64::Engine;
    let mut request = http::Request::get("/v1/images")
        .header(http::header::HOST, &target.authority)
        .header(http::header::ACCEPT_ENCODING, "gzip")
        .header(http::header::USER_AGENT, crate::version::USER_AGENT);
    if let Some(etag) = etag {
        request = request.header(http::header::IF_NONE_MATCH, etag);
    }
    if let Some((user, password)) = basic_auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = http::HeaderValue::try_from(format!("Basic {token}"))?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    request.body(http_body_util::Empty::new())
}

/// One read of one agent, decoded as it arrives into what `relevance` keeps,
/// on `idle` when it is a usable connection to the agent. With `etag` (the tag
/// of the report the exporter holds for the node), the read is conditional: a
/// `304 Not Modified` is [`Answer::Unchanged`] once checked
/// ([`check_not_modified`]). Returns the connection too, idle again, when the
/// exchange went well and the agent keeps it open.
pub async fn fetch(
    connector: &Connector,
    opts: &AgentOptions,
    target: &Target,
    password: Option<&str>,
    relevance: &Arc<Relevance>,
    etag: Option<&str>,
    idle: Option<Idle>,
) -> (Result<Answer, AgentError>, Option<Idle>) {
    let scheme = if opts.https { "https" } else { "http" };
    let url = format!("{scheme}://{}/v1/images", target.authority);
    let basic_auth = match (&opts.basic_auth, password) {
        (Some((user, _)), Some(password)) => Some((user.as_str(), password)),
        _ => None,
    };
    let request = match request(target, etag, basic_auth) {
        Ok(r) => r,
        Err(error) => return (Err(AgentError::Request { url, error }), None),
    };
    let (node, max_age, relevance) = (target.node.clone(), opts.max_age, relevance.clone());
    let work = async {
        let Exchange { response, finish } = connector
            .send(idle, &target.authority, request)
            .await
            .map_err(|error| AgentError::Exchange {
                url: url.clone(),
                error,
            })?;
        let (head, body) = response.into_parts();
        let answer_error = |error| AgentError::Answer {
            url: url.clone(),
            error,
        };
        let header = |name: &str| head.headers.get(name)?.to_str().ok();
        let sent_etag = header(http::header::ETAG.as_str());
        if head.status == http::StatusCode::NOT_MODIFIED {
            drop(body);
            let answer = NotModified {
                etag: sent_etag,
                collected_at: header(COLLECTED_AT_HEADER),
                image_fs_used_bytes: header(IMAGE_FS_USED_HEADER),
            };
            let image_fs_used_bytes = check_not_modified(etag, answer, SystemTime::now(), max_age)
                .map_err(answer_error)?;
            let answer = Answer::Unchanged {
                image_fs_used_bytes,
            };
            return Ok((answer, Some(finish)));
        }
        if head.status.is_redirection() {
            let error = HttpError::redirect(&url, head.status, &head.headers);
            return Err(AgentError::Redirect(error));
        }
        if !head.status.is_success() {
            let url = url.clone();
            return Err(AgentError::Status {
                url,
                status: head.status,
            });
        }
        let sent_etag = sent_etag.map(str::to_string);
        let (report, ended) =
            read_streaming(&head.headers, body, opts.max_body_bytes, move |body| {
                check_report(body, &node, SystemTime::now(), max_age, &relevance)
            })
            .await
            .map_err(answer_error)?;
        let answer = Answer::Full {
            report: Box::new(report),
            etag: sent_etag,
        };
        Ok((answer, ended.then_some(finish)))
    };
    // One limit for the whole exchange, a body trickled in slowly included.
    let timeout = opts.timeout;
    match tokio::time::timeout(timeout, work).await {
        // Taking the connection back is not part of the exchange: the answer
        // counts even if that fails.
        Ok(Ok((answer, finish))) => match finish {
            Some(finish) => (Ok(answer), finish.idle().await),
            None => (Ok(answer), None),
        },
        Ok(Err(e)) => (Err(e), None),
        Err(_) => (Err(AgentError::Timeout { url, timeout }), None),
    }
}

/// The last report an agent sent with a tag: what a `304` stands for.
#[derive(Debug)]
struct Remembered {
    etag: String,
    summary: Arc<RuntimeSummary>,
}

impl Remembered {
    /// The remembered summary with the image filesystem use of a `304`: the
    /// same when that did not change.
    fn with_fs_use(&mut self, image_fs_used_bytes: Option<u64>) -> Arc<RuntimeSummary> {
        if self.summary.image_fs_used_bytes != image_fs_used_bytes {
            self.summary = Arc::new(RuntimeSummary {
                image_fs_used_bytes,
                ..(*self.summary).clone()
            });
        }
        self.summary.clone()
    }
}

/// What the polling keeps between rounds, per node.
#[derive(Debug, Default)]
struct Memory {
    /// The last error logged, to log a repeated one quietly.
    last_error: HashMap<String, String>,
    /// The last tagged report. Summaries depend on the relevance they were made
    /// with: forgotten when it changes.
    reports: HashMap<String, Remembered>,
    /// Each agent's connection, idle between rounds.
    connections: HashMap<String, Idle>,
    /// The most connections kept: what the open-file limit leaves room for.
    connections_max: usize,
}

impl Memory {
    /// Forgets the nodes not in `reading`.
    fn keep_only(&mut self, reading: &HashSet<&str>) {
        self.last_error.retain(|n, _| reading.contains(n.as_str()));
        self.reports.retain(|n, _| reading.contains(n.as_str()));
        self.connections.retain(|n, _| reading.contains(n.as_str()));
    }
}

/// The agents' basic-auth password, read again every round.
fn read_password(opts: &AgentOptions) -> Option<String> {
    let (_, path) = opts.basic_auth.as_ref()?;
    match std::fs::read_to_string(path) {
        Ok(p) => Some(p.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the agents' password file: {e}");
            None
        }
    }
}

/// Reads every agent once and records what they hold as the answers arrive
/// (at most `--agents-concurrency` in flight, none held past its recording);
/// nodes without a usable report lose their runtime view. Returns the number of
/// agents read.
async fn read_all(
    connector: &Connector,
    opts: &AgentOptions,
    targets: &[Target],
    store: &Store,
    metrics: &Metrics,
    relevance: &Arc<Relevance>,
    memory: &mut Memory,
) -> usize {
    let password = read_password(opts);
    // Owned futures: borrowed ones make the task's future not `Send` for every
    // lifetime (a limit of the compiler's reasoning about higher-ranked bounds).
    let opts = Arc::new(opts.clone());
    let reads: Vec<(Target, Option<String>, Option<Idle>)> = targets
        .iter()
        .map(|t| {
            (
                t.clone(),
                memory.reports.get(&t.node).map(|r| r.etag.clone()),
                memory.connections.remove(&t.node),
            )
        })
        .collect();
    let mut answers = futures::stream::iter(reads)
        .map(|(t, etag, idle)| {
            let (connector, opts, password, relevance) = (
                connector.clone(),
                opts.clone(),
                password.clone(),
                relevance.clone(),
            );
            async move {
                let (password, etag) = (password.as_deref(), etag.as_deref());
                let (r, idle) =
                    fetch(&connector, &opts, &t, password, &relevance, etag, idle).await;
                (t.node, r, idle)
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    let mut ok = 0;
    while let Some((node, result, idle)) = answers.next().await {
        if let Some(idle) = idle
            && memory.connections.len() < memory.connections_max
        {
            memory.connections.insert(node.clone(), idle);
        }
        ok += usize::from(record(node, result, store, metrics, memory));
    }
    ok
}

/// Records one agent's answer: its summary in the store (the remembered one on
/// a `304`), or the failure. Returns whether the answer was usable.
fn record(
    node: String,
    result: Result<Answer, AgentError>,
    store: &Store,
    metrics: &Metrics,
    memory: &mut Memory,
) -> bool {
    let summary = match result {
        Ok(Answer::Full { report, etag }) => {
            for p in report.problems.iter().take(3) {
                tracing::debug!(%node, "agent report: skipping a name: {p}");
            }
            let summary = Arc::new(report.summary);
            match etag {
                Some(etag) => {
                    let summary = summary.clone();
                    memory
                        .reports
                        .insert(node.clone(), Remembered { etag, summary });
                }
                None => drop(memory.reports.remove(&node)),
            }
            summary
        }
        Ok(Answer::Unchanged {
            image_fs_used_bytes,
        }) => match memory.reports.get_mut(&node) {
            Some(remembered) => remembered.with_fs_use(image_fs_used_bytes),
            // Not reached: a 304 is accepted only to a tag sent, from memory.
            None => return false,
        },
        Err(e) => {
            // The next read asks for the whole list again.
            memory.reports.remove(&node);
            let msg = e.to_string();
            let loudness = if memory.last_error.get(&node) != Some(&msg) {
                Loudness::Warn
            } else {
                Loudness::Quiet
            };
            let unknown = || store.set_runtime(&node, None);
            let what = "cannot use the node agent's image list";
            report_failure(metrics, &e, unknown, loudness, About::Node(&node), what);
            memory.last_error.insert(node, msg);
            return false;
        }
    };
    if summary.names_dropped > 0 {
        metrics.agent_names_dropped(summary.names_dropped);
        tracing::warn!(%node, dropped = summary.names_dropped,
            "the agent's report has more names that may be wanted than are kept \
             ({MAX_RUNTIME_NAMES}); the rest are ignored");
    }
    store.set_runtime(&node, Some(summary));
    if memory.last_error.remove(&node).is_some() {
        tracing::info!(%node, "the node's agent answers again");
    }
    true
}

/// Why saved agent answers cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedAnswersError {
    #[error("{path}: {1}", path = .0.display())]
    Read(PathBuf, std::io::Error),
    #[error(
        "{path}: expected a JSON array of node-agent answers (/v1/images bodies): {1}",
        path = .0.display()
    )]
    Decode(PathBuf, serde_json::Error),
}

/// Reads saved agent answers (a JSON array of `/v1/images` bodies) into the
/// store, as if the agents had answered: each answer is summarized against the
/// wanted images of now. A file that is not such an array is an error; an
/// answer for a node the store does not hold is logged and skipped.
pub fn load_saved(
    path: &std::path::Path,
    store: &Store,
) -> Result<Vec<AgentReport>, SavedAnswersError> {
    let body = std::fs::read(path).map_err(|e| SavedAnswersError::Read(path.to_path_buf(), e))?;
    let reports: Vec<AgentReport> = serde_json::from_slice(&body)
        .map_err(|e| SavedAnswersError::Decode(path.to_path_buf(), e))?;
    store.expect_agents();
    let known: HashSet<String> = store.node_names().into_iter().collect();
    let relevance = store.relevance();
    for report in &reports {
        if !known.contains(&report.node) {
            tracing::warn!(node = %report.node, "an agent answer for a node not in the node list; skipped");
            continue;
        }
        let (summary, problems) = crate::analysis::runtime::summarize(report, &relevance);
        for p in problems {
            tracing::warn!(node = %report.node, "agent answer: skipping a name: {p}");
        }
        store.set_runtime(&report.node, Some(Arc::new(summary)));
    }
    Ok(reports)
}

/// `serve --agents-file`: [`load_saved`] once the first node list is in, then
/// every `interval` and whenever the wanted images change, until
/// `shutdown`. A read that fails is logged; the last answers stay.
pub async fn run_saved(
    path: PathBuf,
    interval: Duration,
    store: Arc<Store>,
    shutdown: CancellationToken,
) {
    while !store.ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
    let mut resyncs = store.resyncs();
    loop {
        let (p, s) = (path.clone(), store.clone());
        match tokio::task::spawn_blocking(move || load_saved(&p, &s)).await {
            Ok(Ok(reports)) => {
                tracing::debug!(answers = reports.len(), "saved agent answers read")
            }
            Ok(Err(e)) => tracing::warn!("saved agent answers: {e}"),
            Err(e) => tracing::warn!("saved agent answers: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = resyncs.requested() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Follows the agents' EndpointSlices and reads every agent each interval (and
/// soon after the wanted images change) until shutdown.
pub async fn run(
    client: Client,
    opts: AgentOptions,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    store.expect_agents();
    let http = match connector(&opts) {
        Ok(c) => c.counting(metrics.agent_connections_opened()),
        Err(e) => {
            let e = AgentError::Client(e);
            report_failure(
                &metrics,
                &e,
                || {},
                Loudness::Error,
                About::Source,
                "node agents",
            );
            return;
        }
    };
    let api: Api<EndpointSlice> = Api::namespaced(client, &opts.namespace);
    let config =
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", opts.service));
    let (reader, writer) = reflector::store();
    let discovery = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let (ns, svc) = (opts.namespace.clone(), opts.service.clone());
        async move {
            let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
            futures::pin_mut!(stream);
            let mut failing = false;
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(_)) => failing = false,
                    Some(Err(e)) => {
                        let loudness = if failing {
                            Loudness::Quiet
                        } else {
                            Loudness::Warn
                        };
                        let about = About::Service {
                            namespace: &ns,
                            service: &svc,
                        };
                        report_failure(
                            &metrics,
                            &DiscoveryError(e),
                            || failing = true,
                            loudness,
                            about,
                            "cannot watch the agents' EndpointSlices (RBAC: list and watch \
                             endpointslices in that namespace), retrying",
                        );
                    }
                    None => return,
                }
            }
        }
    };
    let polling = poll(http, opts, reader, store, metrics, shutdown.clone());
    tokio::join!(discovery, polling);
}

async fn poll(
    http: Connector,
    opts: AgentOptions,
    reader: Reflected<EndpointSlice>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // The first read waits for the first list of EndpointSlices.
    tokio::select! {
        r = reader.wait_until_ready() => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
    }
    let mut memory = Memory {
        connections_max: kept_connections_max(crate::sys::raise_open_file_limit()),
        ..Memory::default()
    };
    let mut logged_problems: Vec<String> = Vec::new();
    let mut relevance = store.relevance();
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.cancelled() => return,
            // The wanted images changed: the kept names may miss some.
            _ = relevance_changed(&store, &relevance) => {}
        }
        let now_relevant = store.relevance();
        if *now_relevant != *relevance {
            // The remembered summaries kept the names relevant before.
            memory.reports.clear();
        }
        relevance = now_relevant;
        let (targets, problems) = targets(&reader.state(), &opts.port_name);
        if problems != logged_problems {
            for p in &problems {
                tracing::warn!("node agents: {p}");
            }
            logged_problems = problems;
        }
        let reading: HashSet<&str> = targets.iter().map(|t| t.node.as_str()).collect();
        for node in store.node_names() {
            if !reading.contains(node.as_str()) {
                store.set_runtime(&node, None);
            }
        }
        memory.keep_only(&reading);
        let read = tokio::select! {
            n = read_all(&http, &opts, &targets, &store, &metrics, &relevance, &mut memory) => n,
            _ = shutdown.cancelled() => return,
        };
        tracing::debug!(
            agents = targets.len(),
            read,
            kept = memory.connections.len(),
            "read the node agents"
        );
        intern::collect_garbage();
        // A round's buffers were freed between the connections kept for the
        // next: give back the pages they leave empty.
        let _ = tokio::task::spawn_blocking(crate::sys::release_free_memory).await;
        next = tokio::time::Instant::now() + opts.interval;
    }
}

/// Open files left for everything but the agents' kept connections: the
/// server's connections, the API clients, files read.
const FILES_FOR_THE_REST: u64 = 1024;

/// How many agents' connections may stay open between rounds with `limit` open
/// files (unknown: no bound). Agents past that are read on a new connection
/// each round.
fn kept_connections_max(limit: Option<u64>) -> usize {
    limit.map_or(usize::MAX, |n| {
        usize::try_from(n.saturating_sub(FILES_FOR_THE_REST)).unwrap_or(usize::MAX)
    })
}

/// Completes when the store's relevance differs from `seen` (checked every few
/// seconds: it changes when a prepuller's list does).
async fn relevance_changed(store: &Store, seen: &Relevance) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if *store.relevance() != *seen {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn service_refs() {
        assert_eq!(
            parse_service_ref("imagecap/imagecap-agent"),
            Ok(("imagecap".into(), "imagecap-agent".into()))
        );
        for bad in ["imagecap", "/x", "x/", "a/b/c", "A/b", "a/-b", "a b/c"] {
            assert!(parse_service_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_ready_agent_per_node_on_the_named_port() {
        let s = slice(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "agent-abc", "namespace": "imagecap",
                         "labels": {"kubernetes.io/service-name": "agent"}},
            "addressType": "IPv4",
            "ports": [{"name": "other", "port": 1}, {"name": "http-metrics", "port": 9755}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "a", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.9"], "nodeName": "a"},
                {"addresses": ["10.0.0.2"], "nodeName": "b", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]},
                {"addresses": [], "nodeName": "d"}
            ]
        }));
        let v6 = slice(json!({
            "metadata": {"name": "agent-v6"}, "addressType": "IPv6",
            "ports": [{"port": 9755}],
            "endpoints": [{"addresses": ["fd00::1"], "nodeName": "c"}]
        }));
        let (t, problems) = targets(&[s, v6], "http-metrics");
        assert_eq!(
            t,
            [
                Target {
                    node: "a".into(),
                    authority: "10.0.0.1:9755".into()
                },
                Target {
                    node: "c".into(),
                    authority: "[fd00::1]:9755".into()
                },
            ]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("without nodeName"));

        let unnamed = slice(json!({
            "metadata": {"name": "x"}, "addressType": "IPv4",
            "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "a"}]
        }));
        let (t, problems) = targets(&[unnamed], "http-metrics");
        assert!(t.is_empty());
        assert!(problems[0].contains("no port named"), "{problems:?}");
    }

    /// An answer's headers and body, with a Content-Length as a server sends it.
    fn response(
        body: Vec<u8>,
        gzip: bool,
    ) -> (http::HeaderMap, http_body_util::Full<bytes::Bytes>) {
        let mut headers = http::HeaderMap::new();
        if gzip {
            headers.insert("content-encoding", http::HeaderValue::from_static("gzip"));
        }
        headers.insert("content-length", body.len().into());
        (headers, http_body_util::Full::new(body.into()))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The whole body, as the decoder would read it.
    async fn read_bounded(
        (headers, body): (http::HeaderMap, http_body_util::Full<bytes::Bytes>),
        max: u64,
    ) -> Result<Vec<u8>, String> {
        let (read, ended) = read_streaming(&headers, body, max, |body| {
            let mut buf = Vec::new();
            body.read_to_end(&mut buf).map_err(ReportError::Read)?;
            Ok(buf)
        })
        .await
        .map_err(|e| e.to_string())?;
        assert!(ended, "a body read whole was read to its end");
        Ok(read)
    }

    #[tokio::test]
    async fn bodies_are_bounded_after_decompression() {
        let json = br#"{"node":"a"}"#.to_vec();
        assert_eq!(
            read_bounded(response(json.clone(), false), 100)
                .await
                .unwrap(),
            json
        );
        assert_eq!(
            read_bounded(response(gzip(&json), true), 100)
                .await
                .unwrap(),
            json
        );
        // Two gzip members, as a server compressing parts on its own would send.
        let two = [gzip(b"{\"node\":"), gzip(b"\"a\"}")].concat();
        assert_eq!(read_bounded(response(two, true), 100).await.unwrap(), json);
        // 10 MB of zeros in about 10 kB: refused at the bound, not after inflating.
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        let e = read_bounded(response(bomb, true), 1 << 20)
            .await
            .unwrap_err();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
        let e = read_bounded(response(vec![0u8; 101], false), 100)
            .await
            .unwrap_err();
        assert!(e.contains("larger than 100 bytes"), "{e}");
        let e = read_bounded(response(b"not gzip".to_vec(), true), 100)
            .await
            .unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn kept_connections_leave_1024_open_files_for_the_rest() {
        assert_eq!(kept_connections_max(Some(1_048_576)), 1_047_552);
        assert_eq!(kept_connections_max(Some(4096)), 3072);
        // A low limit keeps none: every read opens its own connection.
        assert_eq!(kept_connections_max(Some(1024)), 0);
        assert_eq!(kept_connections_max(Some(256)), 0);
        assert_eq!(kept_connections_max(None), usize::MAX);
    }

    #[test]
    fn reports_must_be_about_the_node_and_fresh() {
        let now = humantime::parse_rfc3339("2026-11-25T10:05:00Z").unwrap();
        let body = |node: &str, at: &str| {
            json!({"node": node, "collectedAt": at, "images": []}).to_string()
        };
        let max = Duration::from_secs(180);
        let r = &Relevance::default();
        let check = |body: &str, node| {
            check_report(body.as_bytes(), node, now, max, r).map_err(|e| e.to_string())
        };
        assert!(check(&body("a", "2026-11-25T10:04:00Z"), "a").is_ok());
        // A clock slightly ahead is no age.
        assert!(check(&body("a", "2026-11-25T10:05:30Z"), "a").is_ok());
        let stale = check(&body("a", "2026-11-25T09:00:00Z"), "a");
        assert!(stale.unwrap_err().contains("runtime down"));
        let other = check(&body("b", "2026-11-25T10:04:00Z"), "a");
        assert!(other.unwrap_err().contains("reports node \"b\""));
        let bad_time = check(&body("a", "yesterday"), "a");
        assert!(bad_time.unwrap_err().contains("collectedAt"));
        for garbage in ["<html>", "[]", "{\"node\":1}", ""] {
            let e = check(garbage, "a").unwrap_err();
            assert!(e.contains("not an agent report"), "{e}");
        }
    }

    #[test]
    fn a_304_must_repeat_the_tag_sent_and_be_fresh() {
        let now = humantime::parse_rfc3339("2026-11-25T10:05:00Z").unwrap();
        let max = Duration::from_secs(180);
        let fresh = NotModified {
            etag: Some("\"t\""),
            collected_at: Some("2026-11-25T10:04:00Z"),
            image_fs_used_bytes: None,
        };
        let check =
            |sent, answer| check_not_modified(sent, answer, now, max).map_err(|e| e.to_string());
        assert_eq!(check(Some("\"t\""), fresh), Ok(None));
        let with_fs = |v| NotModified {
            image_fs_used_bytes: Some(v),
            ..fresh
        };
        assert_eq!(check(Some("\"t\""), with_fs("4096")), Ok(Some(4096)));
        let e = check(Some("\"t\""), with_fs("-1")).unwrap_err();
        assert!(
            e.contains("imagecap-image-fs-used-bytes \"-1\", not a number"),
            "{e}"
        );

        let e = check(None, fresh).unwrap_err();
        assert!(
            e.contains("304 Not Modified to a request without If-None-Match"),
            "{e}"
        );
        let other = |etag| NotModified { etag, ..fresh };
        let e = check(Some("\"t\""), other(Some("\"u\""))).unwrap_err();
        assert!(
            e.contains("with ETag Some(\"\\\"u\\\"\"), but If-None-Match was"),
            "{e}"
        );
        let e = check(Some("\"t\""), other(None)).unwrap_err();
        assert!(e.contains("with ETag None"), "{e}");
        // A weak form of the tag is not the tag sent.
        assert!(check(Some("\"t\""), other(Some("W/\"t\""))).is_err());
        let at = |collected_at| NotModified {
            collected_at,
            ..fresh
        };
        let e = check(Some("\"t\""), at(None)).unwrap_err();
        assert!(e.contains("imagecap-collected-at header"), "{e}");
        let e = check(Some("\"t\""), at(Some("2026-11-25T09:00:00Z"))).unwrap_err();
        assert!(e.contains("runtime down"), "{e}");
        let e = check(Some("\"t\""), at(Some("soon"))).unwrap_err();
        assert!(e.contains("collectedAt \"soon\""), "{e}");
    }

    #[test]
    fn a_304_updates_only_the_fs_use() {
        let summary = Arc::new(RuntimeSummary {
            image_count: 3,
            image_fs_used_bytes: Some(1),
            ..Default::default()
        });
        let mut r = Remembered {
            etag: "\"t\"".into(),
            summary: summary.clone(),
        };
        assert!(Arc::ptr_eq(&r.with_fs_use(Some(1)), &summary));
        let moved = r.with_fs_use(Some(2));
        assert_eq!(moved.image_fs_used_bytes, Some(2));
        assert_eq!(moved.image_count, 3);
        assert!(Arc::ptr_eq(&r.summary, &moved));
        assert_eq!(r.with_fs_use(None).image_fs_used_bytes, None);
    }
}
