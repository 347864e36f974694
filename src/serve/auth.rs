//! HTTP basic auth against the web config's bcrypt hashes.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

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

pub async fn basic_auth(
    State(auth): State<Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
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
}
