//! TLS for the HTTP side: the rustls configuration from the web config, and its
//! reload when the certificate files change.

use super::web_config::{ClientAuth, TlsSettings, TlsVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
pub async fn reload_certificates(
    tls: TlsSettings,
    rustls: super::conn::TlsConfig,
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
                *rustls.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!("reloaded the TLS certificate and key");
            }
            Err(e) => tracing::error!(
                "TLS files changed but cannot be loaded, keeping the current ones: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
