//! Plain HTTP (prepullers, node agents): one-line errors, redirects refused and
//! named, extra CA bundles.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failed HTTP exchange with a prepuller or a node agent.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer, or no complete one, within the limit.
    #[error("{}", timed_out(*.0))]
    Timeout(Duration),
    /// An answer redirecting elsewhere: redirects are never followed. It names
    /// where it pointed (escaped, and cut if long).
    #[error("{url} answered {status} redirecting to {location}; redirects are not followed")]
    Redirect {
        url: String,
        status: http::StatusCode,
        location: String,
    },
    /// The connection or the exchange failed: the error and its causes.
    #[error("{}", one_line(.0))]
    Transport(reqwest::Error),
}

impl HttpError {
    /// The error for a failed exchange: [`HttpError::Timeout`] when the error or
    /// any of its causes is a timeout (reqwest then says "error sending request" or
    /// "error decoding response body").
    pub fn exchange(e: reqwest::Error, timeout: Duration) -> HttpError {
        if is_timeout(&e) {
            HttpError::Timeout(timeout)
        } else {
            HttpError::Transport(e)
        }
    }

    /// The error for an answer that redirects to elsewhere.
    pub fn redirect(url: &str, status: http::StatusCode, headers: &http::HeaderMap) -> HttpError {
        let location = headers
            .get(http::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let location = match location {
            Some(l) if l.len() > 200 => {
                let cut = (0..=200)
                    .rev()
                    .find(|&i| l.is_char_boundary(i))
                    .unwrap_or(0);
                format!("{:?}...", &l[..cut])
            }
            Some(l) => format!("{l:?}"),
            None => "no Location".into(),
        };
        HttpError::Redirect {
            url: url.to_string(),
            status,
            location,
        }
    }
}

/// Whether the error or any of its causes is a timeout.
fn is_timeout(e: &reqwest::Error) -> bool {
    e.is_timeout()
        || std::iter::successors(std::error::Error::source(e), |c| c.source()).any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        })
}

/// The error and its causes, on one line.
fn one_line(e: &reqwest::Error) -> String {
    crate::text::with_causes(e.to_string(), std::error::Error::source(e))
}

/// "timed out after 5s".
pub fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}

/// Why an HTTP client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{path}: {1}", path = .0.display())]
    CaCertificate(PathBuf, reqwest::Error),
    #[error("cannot build an HTTP client: {0}")]
    Build(reqwest::Error),
}

/// Why a CA bundle (PEM) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {1}", path = .0.display())]
    Read(PathBuf, std::io::Error),
    #[error("{path}: {1}", path = .0.display())]
    Pem(PathBuf, rustls_pki_types::pem::Error),
    #[error("{path}: no certificate", path = .0.display())]
    NoCertificate(PathBuf),
}

/// The certificates of the CA bundle (PEM) at `path`: an unreadable file, one
/// that is not PEM, or one without a certificate, is an error naming it.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let pem = std::fs::read(path).map_err(|e| CaError::Read(path.into(), e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem(path.into(), e))?;
    if certs.is_empty() {
        return Err(CaError::NoCertificate(path.into()));
    }
    Ok(certs)
}

/// The client from `builder`, trusting the CA bundle (PEM) at `ca_file` too
/// when given ([`read_ca_bundle`]): the system's roots stay.
pub fn build_with_ca(
    mut builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ClientError> {
    if let Some(path) = ca_file {
        for der in read_ca_bundle(path)? {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|e| ClientError::CaCertificate(path.into(), e))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_is_read_whole_and_its_errors_name_the_file() {
        // As main does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(&path, format!("{}{}", ca.pem(), ca.pem())).unwrap();
        assert_eq!(read_ca_bundle(&path).unwrap(), vec![ca.der().clone(); 2]);
        let client = build_with_ca(reqwest::Client::builder(), Some(&path));
        assert!(client.is_ok(), "{:?}", client.err());

        let named = |e: &dyn std::fmt::Display| {
            let e = e.to_string();
            assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
            e
        };
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = named(&build_with_ca(reqwest::Client::builder(), Some(&path)).unwrap_err());
        assert!(e.ends_with("no certificate"), "{e}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        named(&read_ca_bundle(&path).unwrap_err());
        std::fs::remove_file(&path).unwrap();
        named(&read_ca_bundle(&path).unwrap_err());
    }
}
