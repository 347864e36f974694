//! The Prometheus exporter-toolkit web configuration (`--web.config.file`), so the
//! files operators already have for node_exporter work here too:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12                             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hash
//! ```
//!
//! Relative paths are relative to the file's directory. Keys this exporter does not
//! implement are errors rather than silently ignored security settings.

use super::auth::BasicAuth;
use crate::config::{ConfigError, load_file};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name -> bcrypt hash.
    pub users: BTreeMap<String, String>,
}

/// Why a web config cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// Not YAML, or not of the web config's shape.
    #[error("{0}")]
    Yaml(crate::config::InvalidConfig),
    /// `cert_file` or `key_file` is missing.
    #[error("tls_server_config.{0} is required")]
    Required(&'static str),
    #[error("tls_server_config.client_ca_file is required to verify client certificates")]
    NoClientCa,
    #[error("tls_server_config.{key}: {version} is not supported; use TLS12 or TLS13")]
    OldTls { key: &'static str, version: String },
    #[error("tls_server_config.{key}: unknown TLS version {version:?} (TLS12, TLS13)")]
    UnknownTls { key: &'static str, version: String },
    #[error("tls_server_config: min_version is above max_version")]
    VersionsReversed,
    #[error(
        "tls_server_config.client_auth_type: {0} (accepting unverified client \
         certificates) is not supported; use VerifyClientCertIfGiven or \
         RequireAndVerifyClientCert"
    )]
    UnverifiedClients(String),
    #[error("tls_server_config.client_auth_type: unknown value {0:?}")]
    UnknownClientAuth(String),
    #[error("basic_auth_users: user name {0:?} contains ':'")]
    ColonInUser(String),
    #[error("basic_auth_users.{user}: not a bcrypt hash ({error})")]
    NotBcrypt {
        user: String,
        error: bcrypt::BcryptError,
    },
    #[error("basic_auth_users.{user}: bcrypt cost {cost} is outside 4-31")]
    BcryptCost { user: String, cost: u32 },
}

fn version(key: &'static str, v: &str) -> Result<TlsVersion, WebConfigError> {
    match v {
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS10" | "TLS11" => Err(WebConfigError::OldTls {
            key,
            version: v.to_string(),
        }),
        other => Err(WebConfigError::UnknownTls {
            key,
            version: other.to_string(),
        }),
    }
}

/// Largest web config file read (at start and at each reload): a real one is a
/// few hundred bytes per user.
pub const MAX_WEB_CONFIG_BYTES: u64 = 1 << 20;

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        load_file("web config file", path, MAX_WEB_CONFIG_BYTES, |text| {
            WebConfig::parse(text, base)
        })
    }

    /// Parses and validates; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawWebConfig =
            crate::config::file_from_yaml(text).map_err(WebConfigError::Yaml)?;
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => Some(tls_settings(t, base)?),
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        check_users(&users)?;
        Ok(WebConfig { tls, users })
    }
}

/// `tls_server_config`, validated, its paths resolved against `base` (the web
/// config file's folder).
fn tls_settings(t: RawTls, base: &Path) -> Result<TlsSettings, WebConfigError> {
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let cert_file = t
        .cert_file
        .filter(|s| !s.is_empty())
        .ok_or(WebConfigError::Required("cert_file"))?;
    let key_file = t
        .key_file
        .filter(|s| !s.is_empty())
        .ok_or(WebConfigError::Required("key_file"))?;
    let client_ca_file = t.client_ca_file.filter(|s| !s.is_empty());
    let client_auth = client_auth(t.client_auth_type.as_deref(), client_ca_file.is_some())?;
    if client_auth != ClientAuth::NoClientCert && client_ca_file.is_none() {
        return Err(WebConfigError::NoClientCa);
    }
    let min_version = match t.min_version.as_deref() {
        None | Some("") => TlsVersion::Tls12,
        Some(v) => version("min_version", v)?,
    };
    let max_version = match t.max_version.as_deref() {
        None | Some("") => TlsVersion::Tls13,
        Some(v) => version("max_version", v)?,
    };
    if min_version > max_version {
        return Err(WebConfigError::VersionsReversed);
    }
    Ok(TlsSettings {
        cert_file: resolve(&cert_file),
        key_file: resolve(&key_file),
        client_auth,
        client_ca_file: client_ca_file.as_deref().map(resolve),
        min_version,
        max_version,
    })
}

/// `client_auth_type`, given whether a client CA is set.
fn client_auth(kind: Option<&str>, has_ca: bool) -> Result<ClientAuth, WebConfigError> {
    Ok(match (kind, has_ca) {
        (None | Some(""), false) | (Some("NoClientCert"), _) => ClientAuth::NoClientCert,
        // As the exporter toolkit: a client CA alone means verify.
        (None | Some(""), true) | (Some("RequireAndVerifyClientCert"), _) => {
            ClientAuth::RequireAndVerifyClientCert
        }
        (Some("VerifyClientCertIfGiven"), _) => ClientAuth::VerifyClientCertIfGiven,
        (Some(other @ ("RequestClientCert" | "RequireAnyClientCert")), _) => {
            return Err(WebConfigError::UnverifiedClients(other.to_string()));
        }
        (Some(other), _) => {
            return Err(WebConfigError::UnknownClientAuth(other.to_string()));
        }
    })
}

/// `basic_auth_users`: names without ':', values bcrypt hashes of cost 4-31.
fn check_users(users: &std::collections::BTreeMap<String, String>) -> Result<(), WebConfigError> {
    for (user, hash) in users {
        if user.contains(':') {
            return Err(WebConfigError::ColonInUser(user.clone()));
        }
        let parts =
            hash.parse::<bcrypt::HashParts>()
                .map_err(|error| WebConfigError::NotBcrypt {
                    user: user.clone(),
                    error,
                })?;
        let cost = parts.get_cost();
        if !(4..=31).contains(&cost) {
            return Err(WebConfigError::BcryptCost {
                user: user.clone(),
                cost,
            });
        }
    }
    Ok(())
}

/// How often the web config file is checked for changes.
const CHECK_INTERVAL: Duration = Duration::from_secs(10);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Rereads `basic_auth_users` when the web config file changes (as the TLS files
/// are); a file that no longer loads is logged and the current users kept. The
/// TLS section is read at start only (the files it names are reloaded), and so is
/// the removal of every user: see [`apply_reload`].
pub async fn reload_users(
    path: PathBuf,
    loaded: WebConfig,
    auth: Arc<BasicAuth>,
    shutdown: CancellationToken,
) {
    let mut stamp = modified(&path);
    let mut current = loaded;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = modified(&path);
        if now == stamp {
            continue;
        }
        stamp = now;
        match WebConfig::load(&path) {
            Ok(new) => apply_reload(&path, &mut current, new, &auth),
            Err(e) => {
                tracing::error!(
                    "web config changed but cannot be loaded, keeping the current users: {e}"
                )
            }
        }
    }
}

/// Applies a reloaded web config to `auth`. Authentication is never turned off at
/// runtime: a file that now has no user while users are in force (emptied, a
/// comment only, `basic_auth_users:` without a value, as a non-atomic rewrite or a
/// removed Secret key leaves it) keeps the current users and logs an error; taking
/// authentication away takes a restart, as a changed `tls_server_config` does.
/// Another non-empty set of users replaces the current one at once.
pub fn apply_reload(path: &Path, current: &mut WebConfig, mut new: WebConfig, auth: &BasicAuth) {
    if new.tls != current.tls {
        tracing::warn!(
            path = %path.display(),
            "tls_server_config changed; it takes effect at restart"
        );
    }
    if new.users.is_empty() && !current.users.is_empty() {
        tracing::error!(
            path = %path.display(),
            users = current.users.len(),
            "web config now has no basic_auth_users: refused, the current users are kept; \
             turning basic auth off takes effect only at the next start"
        );
        new.users = std::mem::take(&mut current.users);
    } else if new.users != current.users {
        if auth.set_users(new.users.clone()) {
            tracing::info!(users = new.users.len(), "reloaded basic_auth_users");
        } else {
            // Not reached: the case is handled above; kept so that `auth` and
            // `current` cannot disagree.
            new.users = std::mem::take(&mut current.users);
        }
    }
    *current = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$KhLtLLb4v3aMZ3d4Z7sVnOhSg9q0nDzbsyL3gHr2fJ0Eh7UsLQvLa";

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/imagecap")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_config() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: /abs/tls.key\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/etc/imagecap/tls.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/tls.key"));
        assert_eq!(
            tls.client_auth,
            ClientAuth::RequireAndVerifyClientCert,
            "CA alone means verify"
        );
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(c.users.get("prometheus").map(String::as_str), Some(HASH));
    }

    #[test]
    fn empty_means_plain_http() {
        assert_eq!(parse("").unwrap(), WebConfig::default());
        assert_eq!(
            parse("basic_auth_users: {}\n").unwrap(),
            WebConfig::default()
        );
    }

    #[tokio::test]
    async fn a_reload_never_removes_every_user() {
        let path = Path::new("/etc/imagecap/web.yml");
        let users = parse(&format!("basic_auth_users:\n  prometheus: '{HASH}'\n")).unwrap();
        let auth = BasicAuth::new(users.users.clone());
        let mut current = users.clone();
        for text in [
            "",
            "# nothing here\n",
            "basic_auth_users:\n",
            "basic_auth_users: {}\n",
        ] {
            apply_reload(path, &mut current, parse(text).unwrap(), &auth);
            assert!(!auth.is_open(), "{text:?} opened the endpoint");
            assert_eq!(current.users, users.users, "{text:?}");
        }
        // Another set of users still applies at once.
        let other = "$2b$04$smuoz2zpwVhU2NgwlS6bFOPaFW51vl.s.oAvMSZE76LFW66EqtR5e";
        let rotated = parse(&format!("basic_auth_users:\n  scraper: '{other}'\n")).unwrap();
        apply_reload(path, &mut current, rotated.clone(), &auth);
        assert_eq!(current, rotated);
        assert!(!auth.is_open());
        // Users where there were none: applied (that closes, never opens).
        let open = BasicAuth::new(BTreeMap::new());
        let mut none = WebConfig::default();
        apply_reload(path, &mut none, rotated.clone(), &open);
        assert!(!open.is_open());
        assert_eq!(none, rotated);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, needle) in [
            ("tls_server_config:\n  key_file: k\n", "cert_file"),
            ("tls_server_config:\n  cert_file: c\n", "key_file"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [x]\n",
                "cipher_suites",
            ),
            (
                "http_server_config:\n  http2: false\n",
                "http_server_config",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
                "client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Sometimes\n",
                "client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
                "min_version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version",
            ),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "basic_auth_users.alice",
            ),
            ("basic_auth_users:\n  'a:b': x\n", "':'"),
            (
                "basic_auth_users:\n  bob: '$2y$03$KhLtLLb4v3aMZ3d4Z7sVnOhSg9q0nDzbsyL3gHr2fJ0Eh7UsLQvLa'\n",
                "basic_auth_users.bob: bcrypt cost 3 is outside 4-31",
            ),
            (
                "basic_auth_users:\n  bob: '$2y$32$KhLtLLb4v3aMZ3d4Z7sVnOhSg9q0nDzbsyL3gHr2fJ0Eh7UsLQvLa'\n",
                "basic_auth_users.bob",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
