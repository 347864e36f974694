//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and the status page at `/`.

use crate::analysis::Wanted;
use crate::metrics::Metrics;
use crate::source::Store;
use crate::web_config::{ClientAuth, TlsSettings, TlsVersion, WebConfig};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
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

pub fn router(state: AppState, users: BTreeMap<String, String>) -> Router {
    // Probes stay open: they reveal nothing, and the kubelet cannot authenticate.
    let protected = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics));
    let protected = if users.is_empty() {
        protected
    } else {
        protected.layer(middleware::from_fn_with_state(
            Arc::new(BasicAuth::new(users)),
            basic_auth,
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

/// Checks HTTP basic auth against bcrypt hashes. Verified credentials are cached
/// (bcrypt is slow by design and Prometheus sends the same ones every scrape); an
/// unknown user costs a bcrypt run too, so timing does not tell users apart.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<String>>,
    dummy_hash: String,
}

const AUTH_CACHE_SIZE: usize = 256;

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        // Any valid hash of the configured cost serves for unknown users.
        let dummy_hash = users.values().next().cloned().unwrap_or_default();
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            dummy_hash,
        }
    }

    fn check(&self, header_value: &str) -> bool {
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(header_value)
        {
            return true;
        }
        let Some(encoded) = header_value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy_hash);
                false
            }
        };
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= AUTH_CACHE_SIZE {
                cache.clear();
            }
            cache.insert(header_value.to_string());
        }
        ok
    }
}

async fn basic_auth(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = match header {
        Some(h) => tokio::task::spawn_blocking(move || auth.check(&h))
            .await
            .unwrap_or(false),
        None => false,
    };
    if ok {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"imagecap-exporter\"",
            )],
            "unauthorized\n",
        )
            .into_response()
    }
}

fn read_pem<T: PemObject>(path: &Path, what: &str) -> Result<Vec<T>, String> {
    let items: Vec<T> = T::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if items.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(items)
}

/// The rustls server configuration for `tls_server_config`.
pub fn rustls_config(t: &TlsSettings) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = read_pem(&t.cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&t.key_file)
        .map_err(|e| format!("key_file {}: {e}", t.key_file.display()))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= t.min_version && *v <= t.max_version)
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (t.client_auth, &t.client_ca_file) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca_file)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_pem::<CertificateDer<'static>>(ca_file, "client_ca_file")? {
                roots
                    .add(ca)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// How often the certificate, key and client CA files are checked for changes.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Modification times of the TLS files, to notice a rotation.
fn tls_stamp(t: &TlsSettings) -> Vec<Option<std::time::SystemTime>> {
    [
        Some(&t.cert_file),
        Some(&t.key_file),
        t.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// Reloads the TLS configuration when its files change (cert-manager rotates
/// them in place); a broken new set is logged and the current one kept.
async fn reload_certificates(
    tls: TlsSettings,
    rustls: axum_server::tls_rustls::RustlsConfig,
    shutdown: CancellationToken,
) {
    let mut stamp = tls_stamp(&tls);
    let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = tls_stamp(&tls);
        if now == stamp {
            continue;
        }
        stamp = now;
        match rustls_config(&tls) {
            Ok(config) => {
                rustls.reload_from_config(Arc::new(config));
                tracing::info!("reloaded the TLS certificate and key");
            }
            Err(e) => tracing::error!(
                "TLS files changed but cannot be loaded, keeping the current ones: {e}"
            ),
        }
    }
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish (4 s
/// at most with TLS, where connections are tracked by the server handle).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    web: WebConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state, web.users.clone());
    match &web.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
        Some(tls) => {
            let config = rustls_config(tls).map_err(std::io::Error::other)?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                stopper.graceful_shutdown(Some(Duration::from_secs(4)));
            });
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            tokio::spawn(reload_certificates(
                tls.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches_successes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prometheus".to_string(), hash)]));
        assert!(auth.check(&header("prometheus", "s3cret")));
        assert!(
            auth.verified
                .lock()
                .unwrap()
                .contains(&header("prometheus", "s3cret"))
        );
        assert!(
            auth.check(&header("prometheus", "s3cret")),
            "from the cache"
        );
        assert!(!auth.check(&header("prometheus", "wrong")));
        assert!(!auth.check(&header("nobody", "s3cret")));
        assert!(!auth.check("Bearer abc"));
        assert!(!auth.check("Basic !!!not-base64"));
        assert!(!auth.check(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon")
        )));
        assert_eq!(
            auth.verified.lock().unwrap().len(),
            1,
            "failures are not cached"
        );
    }

    #[test]
    fn missing_tls_files_are_named() {
        let t = TlsSettings {
            cert_file: "/nonexistent/tls.crt".into(),
            key_file: "/nonexistent/tls.key".into(),
            client_auth: ClientAuth::NoClientCert,
            client_ca_file: None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        };
        let e = rustls_config(&t).unwrap_err();
        assert!(e.starts_with("cert_file /nonexistent/tls.crt"), "{e}");
    }
}
