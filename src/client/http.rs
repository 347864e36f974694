//! Plain HTTP (prepullers, node agents): one-line errors, redirects refused and
//! named, extra CA bundles.

use std::time::Duration;

/// One line for a failed HTTP exchange with a prepuller or a node agent: "timed
/// out after 5s" when the error or any of its causes is a timeout (reqwest then
/// says "error sending request" or "error decoding response body"), else the
/// error and its causes.
pub fn http_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return timed_out(timeout);
    }
    let first = std::error::Error::source(e);
    let io_timeout = std::iter::successors(first, |c| c.source()).any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    if io_timeout {
        return timed_out(timeout);
    }
    crate::text::with_causes(e.to_string(), first)
}

/// An HTTP client builder that also trusts the CA bundle (PEM) at `path`, when
/// given: the system's roots stay. An unreadable file, or one without a
/// certificate, is an error naming it.
pub fn with_ca_file(
    mut builder: reqwest::ClientBuilder,
    path: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, String> {
    let Some(path) = path else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// "timed out after 5s".
pub fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}

/// The error for a redirect, which is never followed: it names where it
/// pointed (escaped, and cut if long).
pub fn redirect_error(url: &str, response: &reqwest::Response) -> String {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
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
    format!(
        "{url} answered {} redirecting to {location}; redirects are not followed",
        response.status()
    )
}
