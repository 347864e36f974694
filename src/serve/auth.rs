//! HTTP basic auth against the web config's bcrypt hashes.
//!
//! bcrypt is slow by design, so that a flood of wrong passwords cannot starve the
//! process: one verification runs at a time (at most one core), and outcomes are
//! cached, failures as well as successes, keyed by a SHA-256 of the presented
//! header. Successes have their own cache, so a flood of new wrong passwords cannot
//! push out the scraper's entry and make it wait behind the flood.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};

/// Verified credentials kept; only valid ones get here, so this is plenty.
const SUCCESS_CACHE_SIZE: usize = 64;
/// Rejected credentials kept; the cache is cleared when full.
const FAILURE_CACHE_SIZE: usize = 4096;

type Key = [u8; 32];

/// The configured users, replaced when the web config file changes.
struct Users {
    hashes: BTreeMap<String, String>,
    /// Picks the hash an unknown user name is verified against (see [`Users::decoy`]).
    decoy_key: RandomState,
}

#[derive(Default)]
struct Cache {
    verified: HashSet<Key>,
    rejected: HashSet<Key>,
}

pub struct BasicAuth {
    users: RwLock<Arc<Users>>,
    /// A secret key of this process, kept across reloads.
    decoy_key: RandomState,
    cache: Mutex<Cache>,
    /// One bcrypt verification at a time.
    bcrypt: tokio::sync::Semaphore,
}

fn key(header_value: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, header_value.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The user and password of a `Basic` authorization header (the scheme name is
/// case-insensitive, RFC 7617).
fn credentials(header_value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header_value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let decoy_key = RandomState::new();
        BasicAuth {
            users: RwLock::new(Arc::new(Users::new(users, decoy_key.clone()))),
            decoy_key,
            cache: Mutex::new(Cache::default()),
            bcrypt: tokio::sync::Semaphore::new(1),
        }
    }

    /// No user configured: every request is let through.
    pub fn is_open(&self) -> bool {
        self.current().hashes.is_empty()
    }

    fn current(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the users (web config reload); cached outcomes are forgotten.
    ///
    /// Never opens what is protected: no user in place of some is refused (the
    /// current users stay, and `false` is returned), so that a truncated file or a
    /// removed Secret key cannot turn authentication off. That takes a restart.
    #[must_use = "the new users may be refused"]
    pub fn set_users(&self, users: BTreeMap<String, String>) -> bool {
        let mut current = self.users.write().unwrap_or_else(|e| e.into_inner());
        if users.is_empty() && !current.hashes.is_empty() {
            return false;
        }
        *current = Arc::new(Users::new(users, self.decoy_key.clone()));
        drop(current);
        *self.cache() = Cache::default();
        true
    }

    /// The cached outcome for this header, if any.
    fn cached(&self, key: &Key) -> Option<bool> {
        let cache = self.cache();
        if cache.verified.contains(key) {
            Some(true)
        } else if cache.rejected.contains(key) {
            Some(false)
        } else {
            None
        }
    }

    fn remember(&self, key: Key, ok: bool) {
        let mut cache = self.cache();
        let (set, cap) = if ok {
            (&mut cache.verified, SUCCESS_CACHE_SIZE)
        } else {
            (&mut cache.rejected, FAILURE_CACHE_SIZE)
        };
        if set.len() >= cap {
            set.clear();
        }
        set.insert(key);
    }

    /// Checks an `Authorization` header: from the cache, else with bcrypt on a
    /// blocking thread, one at a time.
    pub async fn check(self: &Arc<Self>, header_value: &str) -> bool {
        let key = key(header_value);
        if let Some(ok) = self.cached(&key) {
            return ok;
        }
        let Some((user, password)) = credentials(header_value) else {
            self.remember(key, false);
            return false;
        };
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        // Another request may have verified the same header while this one waited.
        if let Some(ok) = self.cached(&key) {
            return ok;
        }
        let users = self.current();
        let checked = users.clone();
        let ok = tokio::task::spawn_blocking(move || checked.verify(&user, &password))
            .await
            .unwrap_or(false);
        // Users replaced meanwhile: the outcome is not cached for the new ones.
        if Arc::ptr_eq(&users, &self.current()) {
            self.remember(key, ok);
        }
        ok
    }
}

impl Users {
    fn new(hashes: BTreeMap<String, String>, decoy_key: RandomState) -> Users {
        Users { hashes, decoy_key }
    }

    /// The hash an unknown user name is verified against, so that its answer takes
    /// as long as a known user's: one of the configured hashes, chosen by a keyed
    /// hash (SipHash under a random key of this process) of the name. With users of
    /// different bcrypt costs, unknown names are then spread over the costs as the
    /// users are, and one unknown name always costs the same; without the key, a
    /// client cannot tell which hash a name maps to. (The first user's hash for
    /// every unknown name would make any name faster or slower than that cost stand
    /// out as a real user.)
    fn decoy(&self, user: &str) -> Option<&str> {
        let n = self.hashes.len();
        if n == 0 {
            return None;
        }
        let pick = (self.decoy_key.hash_one(user) % n as u64) as usize;
        self.hashes.values().nth(pick).map(String::as_str)
    }

    fn verify(&self, user: &str, password: &str) -> bool {
        match self.hashes.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                if let Some(decoy) = self.decoy(user) {
                    let _ = bcrypt::verify(password, decoy);
                }
                false
            }
        }
    }
}

pub async fn basic_auth(
    State(auth): State<Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.is_open() {
        return next.run(request).await;
    }
    let ok = match request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(h) => auth.check(h).await,
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

    fn auth() -> Arc<BasicAuth> {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Arc::new(BasicAuth::new(BTreeMap::from([(
            "prometheus".to_string(),
            hash,
        )])))
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_caches_both_outcomes() {
        let auth = auth();
        assert!(!auth.is_open());
        assert!(auth.check(&header("prometheus", "s3cret")).await);
        assert_eq!(
            auth.cached(&key(&header("prometheus", "s3cret"))),
            Some(true)
        );
        assert!(
            auth.check(&header("prometheus", "s3cret")).await,
            "from the cache"
        );
        assert!(!auth.check(&header("prometheus", "wrong")).await);
        assert_eq!(
            auth.cached(&key(&header("prometheus", "wrong"))),
            Some(false),
            "failures are cached too"
        );
        assert!(!auth.check(&header("nobody", "s3cret")).await);
        assert!(!auth.check("Bearer abc").await);
        assert!(!auth.check("Basic !!!not-base64").await);
        assert!(
            !auth
                .check(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("no-colon")
                ))
                .await
        );
        let cache = auth.cache();
        assert_eq!(cache.verified.len(), 1);
        assert_eq!(cache.rejected.len(), 5);
    }

    #[tokio::test]
    async fn the_scheme_name_is_case_insensitive() {
        let auth = auth();
        let good = header("prometheus", "s3cret");
        let encoded = good.strip_prefix("Basic ").unwrap();
        for scheme in ["basic", "BASIC", "bAsIc"] {
            assert!(auth.check(&format!("{scheme} {encoded}")).await, "{scheme}");
        }
        assert!(!auth.check(&format!("Basicx {encoded}")).await);
    }

    #[tokio::test]
    async fn the_caches_are_bounded_and_failures_do_not_evict_successes() {
        let auth = auth();
        let good = header("prometheus", "s3cret");
        assert!(auth.check(&good).await);
        for i in 0..FAILURE_CACHE_SIZE + 10 {
            // Malformed headers are rejected without bcrypt, and cached all the same.
            assert!(!auth.check(&format!("Basic x{i}")).await);
        }
        let cache = auth.cache();
        assert!(cache.rejected.len() <= FAILURE_CACHE_SIZE);
        assert!(cache.verified.contains(&key(&good)));
    }

    #[tokio::test]
    async fn new_users_replace_the_old_ones_and_the_cache() {
        let auth = auth();
        let good = header("prometheus", "s3cret");
        assert!(auth.check(&good).await);
        assert!(auth.set_users(BTreeMap::from([(
            "prometheus".to_string(),
            bcrypt::hash("other", 4).unwrap(),
        )])));
        assert!(!auth.check(&good).await, "the old password no longer works");
        assert!(auth.check(&header("prometheus", "other")).await);
    }

    #[tokio::test]
    async fn no_user_in_place_of_some_is_refused() {
        let auth = auth();
        let good = header("prometheus", "s3cret");
        assert!(auth.check(&good).await);
        assert!(!auth.set_users(BTreeMap::new()), "refused");
        assert!(!auth.is_open(), "still protected");
        assert!(!auth.check(&header("prometheus", "wrong")).await);
        assert!(auth.check(&good).await, "the current users stay");

        // Adding users to an open endpoint protects it.
        let open = BasicAuth::new(BTreeMap::new());
        assert!(open.is_open());
        assert!(open.set_users(BTreeMap::from([(
            "p".to_string(),
            bcrypt::hash("x", 4).unwrap()
        )])));
        assert!(!open.is_open());
    }

    #[test]
    fn unknown_names_cost_as_the_users_do() {
        // Two users of cost 4 and two of cost 5: unknown names must be verified
        // against each cost about half the time, and one name always the same way.
        let hashes: BTreeMap<String, String> = [("a", 4), ("b", 5), ("c", 4), ("d", 5)]
            .into_iter()
            .map(|(u, cost)| (u.to_string(), bcrypt::hash("pw", cost).unwrap()))
            .collect();
        let users = Users::new(hashes.clone(), RandomState::new());
        let cost = |h: &str| h.parse::<bcrypt::HashParts>().unwrap().get_cost();
        let mut per_hash: BTreeMap<&str, usize> = BTreeMap::new();
        let names = 4000;
        for i in 0..names {
            let name = format!("unknown-{i}");
            let decoy = users.decoy(&name).unwrap();
            assert!(hashes.values().any(|h| h == decoy), "a configured hash");
            assert_eq!(users.decoy(&name), Some(decoy), "the same every time");
            *per_hash.entry(decoy).or_default() += 1;
        }
        assert_eq!(per_hash.len(), 4, "every user's hash serves as a decoy");
        for (hash, n) in &per_hash {
            // Each hash 1/4 of the names: 1000 expected, far from the bounds.
            assert!((700..1300).contains(n), "{hash}: {n} of {names}");
        }
        let cost4: usize = per_hash
            .iter()
            .filter(|(h, _)| cost(h) == 4)
            .map(|(_, n)| n)
            .sum();
        assert!(
            (1700..2300).contains(&cost4),
            "cost 4 for {cost4} of {names}"
        );
        assert_eq!(
            Users::new(BTreeMap::new(), RandomState::new()).decoy("x"),
            None
        );
    }
}
