//! HTTP/1.1 GETs to many hosts, each read now and then (the node agents), over
//! connections kept from one exchange to the next.
//!
//! Between exchanges a kept connection is its socket alone (and its TLS state
//! with HTTPS): the HTTP client's buffers and its connection task live only while
//! an exchange is in flight. A pooling client keeps those for every idle
//! connection (tens of KB each once a large answer has grown the read buffer),
//! which at thousands of hosts costs more memory than the connections save in
//! CPU. A kept connection that the host has closed, or that has anything to read
//! while idle, is not used; a request that fails on a kept connection before an
//! answer begins is sent again on a new one.

use super::http::{CaError, read_ca_bundle};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use tokio_util::task::AbortOnDropHandle;

/// How long a connection is used at most: a host's renewed certificate is
/// checked within this time.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// How long the connection's task may take to hand the connection back once an
/// exchange is over (it needs only to see that no request follows).
const HAND_BACK: Duration = Duration::from_secs(1);

/// A connection, plain or TLS (boxed: a TLS stream is 1,112 bytes inline, a
/// plain one 40, and every kept connection would otherwise take the larger).
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A connection between exchanges, and the host it is to.
#[derive(Debug)]
pub struct Idle {
    authority: String,
    stream: Stream,
    /// When it was opened.
    since: Instant,
}

/// Why an exchange failed before its answer began.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("connecting: timed out after {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    #[error("invalid host for TLS: {0:?}")]
    ServerName(String),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("{}", crate::text::with_causes(.0.to_string(), std::error::Error::source(.0)))]
    Http(hyper::Error),
}

/// Why the client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{path}: {1}", path = .0.display())]
    BadCertificate(std::path::PathBuf, rustls::Error),
    #[error("cannot set up TLS: {0}")]
    Verifier(rustls::Error),
}

/// Opens and reuses connections; TLS when made with [`Connector::tls`].
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
    /// Counts the connections opened (TCP connected).
    opened: Counter,
    /// How long a connection is used at most.
    lifetime: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("opened", &self.opened.get())
            .finish()
    }
}

/// The answer's head and body, and what gives the connection back once the
/// body has been read to its end ([`Finish::idle`]).
pub struct Exchange {
    pub response: http::Response<Incoming>,
    pub finish: Finish,
}

/// The rest of an exchange: the connection's task, and whether the host lets
/// the connection be used again.
pub struct Finish {
    authority: String,
    since: Instant,
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: AbortOnDropHandle<Result<http1::Parts<TokioIo<Stream>>, hyper::Error>>,
    reusable: bool,
}

impl Connector {
    /// Plain HTTP.
    pub fn plain(connect_timeout: Duration) -> Connector {
        Connector {
            tls: None,
            connect_timeout,
            opened: Counter::default(),
            lifetime: LIFETIME,
        }
    }

    /// Counts the connections it opens in `opened` from now on.
    pub fn counting(self, opened: Counter) -> Connector {
        Connector { opened, ..self }
    }

    /// Uses a connection for `lifetime` at most ([`LIFETIME`] by default).
    pub fn lifetime(self, lifetime: Duration) -> Connector {
        Connector { lifetime, ..self }
    }

    /// HTTPS, verifying the hosts' certificates against the system's roots and
    /// the CA bundle (PEM) at `ca_file` when given, as the other HTTP clients do.
    pub fn tls(
        connect_timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Connector, TlsSetupError> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let verifier = match ca_file {
            None => rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(TlsSetupError::Verifier)?,
            Some(path) => {
                let certs = read_ca_bundle(path)?;
                // A certificate the file holds that cannot be a root names the file.
                rustls_platform_verifier::Verifier::new_with_extra_roots(certs, provider.clone())
                    .map_err(|e| match e {
                        rustls::Error::General(_) => TlsSetupError::Verifier(e),
                        e => TlsSetupError::BadCertificate(path.into(), e),
                    })?
            }
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Verifier)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            tls: Some(TlsConnector::from(Arc::new(config))),
            connect_timeout,
            opened: Counter::default(),
            lifetime: LIFETIME,
        })
    }

    /// Sends `request` to `authority` (`host:port`, IPv6 hosts in brackets) on
    /// `idle` when it is a usable connection to that host, else on a new one.
    /// A failure on the kept connection before the answer begins is retried
    /// once on a new one (the host may have closed it a moment ago).
    pub async fn send(
        &self,
        idle: Option<Idle>,
        authority: &str,
        request: http::Request<Empty<Bytes>>,
    ) -> Result<Exchange, SendError> {
        let idle = idle.filter(|i| i.since.elapsed() < self.lifetime);
        let request = match idle.and_then(|i| usable(i, authority)) {
            Some((stream, since)) => {
                let retry = clone_request(&request);
                match self.exchange(stream, since, authority, request).await {
                    Ok(exchange) => return Ok(exchange),
                    Err(_) => retry,
                }
            }
            None => request,
        };
        let stream = self.connect(authority).await?;
        self.exchange(stream, Instant::now(), authority, request)
            .await
    }

    async fn connect(&self, authority: &str) -> Result<Stream, SendError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Connect)?;
        self.opened.inc();
        // The request is written whole at once; nothing waits on a small segment.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        let host = host_of(authority);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| SendError::ServerName(host.to_string()))?;
        let handshake = tls.connect(name, tcp);
        let stream = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Tls)?;
        Ok(Either::Right(Box::new(stream)))
    }

    async fn exchange(
        &self,
        stream: Stream,
        since: Instant,
        authority: &str,
        request: http::Request<Empty<Bytes>>,
    ) -> Result<Exchange, SendError> {
        let (mut sender, conn) = http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        let driver = AbortOnDropHandle::new(tokio::spawn(conn.without_shutdown()));
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        let reusable = keeps_alive(&response);
        Ok(Exchange {
            response,
            finish: Finish {
                authority: authority.to_string(),
                since,
                sender,
                driver,
                reusable,
            },
        })
    }
}

impl Finish {
    /// The connection, idle, once the answer's body has been read to its end
    /// (and dropped): none when the host closes it after this answer, the
    /// exchange left anything unread, or the connection's task does not hand it
    /// back within [`HAND_BACK`].
    pub async fn idle(self) -> Option<Idle> {
        let Finish {
            authority,
            since,
            sender,
            driver,
            reusable,
        } = self;
        // With no more requests to send, the connection's task ends as soon as
        // the answer is done, and hands the connection back.
        drop(sender);
        if !reusable {
            return None;
        }
        match tokio::time::timeout(HAND_BACK, driver).await {
            Ok(Ok(Ok(parts))) if parts.read_buf.is_empty() => Some(Idle {
                authority,
                stream: parts.io.into_inner(),
                since,
            }),
            _ => None,
        }
    }
}

/// Whether the answer lets the connection be used again: HTTP/1.1 without
/// `Connection: close`.
fn keeps_alive(response: &http::Response<Incoming>) -> bool {
    response.version() == http::Version::HTTP_11
        && !response
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            })
}

/// The kept connection's stream when it is to `authority` and still open with
/// nothing to read (an idle HTTP/1.1 connection has nothing to read: bytes or
/// an end of stream mean the host closed it or broke the protocol).
fn usable(idle: Idle, authority: &str) -> Option<(Stream, Instant)> {
    if idle.authority != authority {
        return None;
    }
    let tcp = match &idle.stream {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    };
    match tcp.try_read(&mut [0u8; 1]) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some((idle.stream, idle.since)),
        _ => None,
    }
}

/// The host of `host:port`, without an IPv6 host's brackets.
fn host_of(authority: &str) -> &str {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn clone_request(r: &http::Request<Empty<Bytes>>) -> http::Request<Empty<Bytes>> {
    let mut copy = http::Request::new(Empty::new());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.version_mut() = r.version();
    *copy.headers_mut() = r.headers().clone();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn hosts_lose_their_port_and_brackets() {
        assert_eq!(host_of("10.0.0.1:9101"), "10.0.0.1");
        assert_eq!(host_of("[fd00::1]:9101"), "fd00::1");
        assert_eq!(host_of("agent.example:443"), "agent.example");
    }

    /// What the scripted server does with the `n`th request (from 0) on the
    /// `c`th connection (from 0).
    #[derive(Clone, Copy, Debug)]
    enum Act {
        /// Answers with this body and keeps the connection.
        Answer(&'static str),
        /// Answers with `Connection: close`, then closes.
        AnswerAndClose(&'static str),
        /// Answers without saying so, then closes.
        AnswerThenDrop(&'static str),
        /// Reads the request and closes without an answer.
        Drop,
    }

    /// A loopback HTTP/1.1 server that follows `script(connection, request)`
    /// and counts the connections it accepted.
    async fn scripted(script: fn(usize, usize) -> Act) -> (String, Arc<AtomicUsize>) {
        scripted_over(script, None).await
    }

    /// [`scripted`], over TLS with `tls`.
    async fn scripted_over(
        script: fn(usize, usize) -> Act,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let c = count.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut socket: Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>> =
                        match tls {
                            None => Either::Left(tcp),
                            Some(tls) => match tls.accept(tcp).await {
                                Ok(s) => Either::Right(s),
                                Err(_) => return,
                            },
                        };
                    let mut seen = Vec::new();
                    for n in 0.. {
                        let mut buf = [0u8; 1024];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => seen.extend_from_slice(&buf[..k]),
                            }
                        }
                        seen.clear();
                        let (body, close, drop) = match script(c, n) {
                            Act::Answer(b) => (b, false, false),
                            Act::AnswerAndClose(b) => (b, true, true),
                            Act::AnswerThenDrop(b) => (b, false, true),
                            Act::Drop => return,
                        };
                        let connection = if close { "Connection: close\r\n" } else { "" };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\n{connection}Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        socket.write_all(answer.as_bytes()).await.unwrap();
                        socket.flush().await.unwrap();
                        if drop {
                            return;
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    /// One GET: the body, and the connection when it can be kept.
    async fn get(
        connector: &Connector,
        authority: &str,
        idle: Option<Idle>,
    ) -> (String, Option<Idle>) {
        let request = http::Request::get("/v1/images")
            .header(http::header::HOST, authority)
            .body(Empty::new())
            .unwrap();
        let Exchange { response, finish } = connector.send(idle, authority, request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        (body, finish.idle().await)
    }

    #[tokio::test]
    async fn a_connection_carries_one_exchange_after_another() {
        let (authority, accepted) =
            scripted(|_, n| Act::Answer(["one", "two", "three"][n % 3])).await;
        let connector = Connector::plain(Duration::from_secs(5));
        let mut idle = None;
        for want in ["one", "two", "three"] {
            let (body, kept) = get(&connector, &authority, idle).await;
            assert_eq!(body, want);
            assert!(kept.is_some(), "kept after {want}");
            idle = kept;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(connector.opened.get(), 1);
        // Past its lifetime, a connection is not used again.
        let short = Connector::plain(Duration::from_secs(5)).lifetime(Duration::ZERO);
        let (body, kept) = get(&short, &authority, idle).await;
        // The first answer of a new connection, kept for a connector whose
        // lifetime allows it.
        assert_eq!((body.as_str(), kept.is_some()), ("one", true));
        assert_eq!(
            (accepted.load(Ordering::SeqCst), short.opened.get()),
            (2, 1)
        );
        let (body, idle) = get(&connector, &authority, kept).await;
        assert_eq!((body.as_str(), accepted.load(Ordering::SeqCst)), ("two", 2));
        // Another host's connection is not used for this one.
        let (other, other_accepted) = scripted(|_, _| Act::Answer("other")).await;
        let (body, _) = get(&connector, &other, idle).await;
        assert_eq!(body, "other");
        assert_eq!(other_accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_host_closes_is_not_used_again() {
        let connector = Connector::plain(Duration::from_secs(5));
        // Said so: not kept at all.
        let (authority, accepted) = scripted(|_, _| Act::AnswerAndClose("bye")).await;
        let (body, kept) = get(&connector, &authority, None).await;
        assert_eq!((body.as_str(), kept.is_none()), ("bye", true));
        let (body, _) = get(&connector, &authority, kept).await;
        assert_eq!(body, "bye");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Closed without a word, then left idle: seen closed before it is used.
        let (authority, accepted) = scripted(|c, _| match c {
            0 => Act::AnswerThenDrop("a"),
            _ => Act::Answer("b"),
        })
        .await;
        let (body, kept) = get(&connector, &authority, None).await;
        assert_eq!((body.as_str(), kept.is_some()), ("a", true));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(usable(kept.unwrap(), &authority).is_none(), "seen closed");
        let (body, kept) = get(&connector, &authority, None).await;
        assert_eq!(body, "b");
        assert!(usable(kept.unwrap(), &authority).is_some(), "open and idle");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_lost_on_a_kept_connection_is_sent_again_on_a_new_one() {
        // The first connection answers once, then drops the second request
        // unanswered, as a host closing an idle connection at that moment does.
        let (authority, accepted) = scripted(|c, n| match (c, n) {
            (0, 0) => Act::Answer("first"),
            (0, _) => Act::Drop,
            _ => Act::Answer("again"),
        })
        .await;
        let connector = Connector::plain(Duration::from_secs(5));
        let (body, kept) = get(&connector, &authority, None).await;
        assert_eq!((body.as_str(), kept.is_some()), ("first", true));
        let (body, kept) = get(&connector, &authority, kept).await;
        assert_eq!((body.as_str(), kept.is_some()), ("again", true));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connecting_fails_with_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        drop(listener);
        let connector = Connector::plain(Duration::from_secs(5));
        let request = http::Request::get("/").body(Empty::new()).unwrap();
        let Err(e) = connector.send(None, &authority, request).await else {
            panic!("connected to a closed port");
        };
        assert!(e.to_string().starts_with("connecting: "), "{e}");
    }

    /// A CA, and a key and certificate it signed for 127.0.0.1.
    fn pki() -> (String, rustls::ServerConfig) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        (ca.pem(), server)
    }

    #[tokio::test]
    async fn over_tls_a_connection_is_kept_and_the_ca_file_is_trusted() {
        let (ca_pem, server) = pki();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (authority, accepted) =
            scripted_over(|_, n| Act::Answer(["one", "two"][n % 2]), Some(tls)).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let connector = Connector::tls(Duration::from_secs(5), Some(&ca_file)).unwrap();
        let (body, kept) = get(&connector, &authority, None).await;
        assert_eq!((body.as_str(), kept.is_some()), ("one", true));
        let (body, kept) = get(&connector, &authority, kept).await;
        assert_eq!((body.as_str(), kept.is_some()), ("two", true));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Without the CA, the agent's certificate is refused.
        let untrusting = Connector::tls(Duration::from_secs(5), None).unwrap();
        let request = http::Request::get("/").body(Empty::new()).unwrap();
        let Err(e) = untrusting.send(None, &authority, request).await else {
            panic!("a certificate from an unknown CA was accepted");
        };
        assert!(e.to_string().starts_with("TLS handshake: "), "{e}");

        // A certificate that cannot be a root: an error that names the file.
        let garbage = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, garbage.as_ref())
        );
        std::fs::write(&ca_file, pem).unwrap();
        let e = Connector::tls(Duration::from_secs(5), Some(&ca_file)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", ca_file.display())),
            "{e}"
        );

        // A CA file without a certificate is an error that names it.
        std::fs::write(&ca_file, "not a certificate\n").unwrap();
        let e = Connector::tls(Duration::from_secs(5), Some(&ca_file)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no certificate", ca_file.display())
        );
    }
}
