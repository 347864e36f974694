//! Container image references: parsing, Docker Hub normalization and matching.
//!
//! Follows the grammar of github.com/distribution/reference:
//! `[domain[:port]/]path[:tag][@algorithm:hex]`. A first path component is a domain
//! when it contains `.` or `:` or is `localhost`; otherwise the image is on Docker
//! Hub, whose one-component names live under `library/`. So `busybox`,
//! `library/busybox`, `docker.io/busybox` and `index.docker.io/library/busybox` are
//! all `docker.io/library/busybox`. A reference without tag or digest means `:latest`.

use std::fmt;
use std::sync::Arc;

const DOCKER_HUB: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("empty image reference")]
    Empty,
    /// `<none>:<none>` and `<none>@<none>`, which runtimes list for dangling images.
    #[error("placeholder name {0:?} of an untagged image")]
    Placeholder(String),
    #[error("image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// `domain/path`, e.g. `docker.io/library/busybox` or `localhost:5000/team/app`.
    pub repo: Arc<str>,
    pub tag: Option<Arc<str>>,
    /// `algorithm:hex`, hex in lower case.
    pub digest: Option<Digest>,
}

/// The digest of a reference. A sha256 digest in lower-case hex, what every
/// runtime and registry reports, is kept as its 32 bytes: on clusters whose
/// images are all their own, digests are most of what a summary keeps, and the
/// bytes take a third of the text's room with no allocation. Any other digest
/// is kept as the text it normalizes to ([`digest_string`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest(DigestRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum DigestRepr {
    Sha256([u8; 32]),
    Text(Arc<str>),
}

const SHA256_PREFIX: &str = "sha256:";

impl Digest {
    /// The digest kept for `d`, a digest that passed [`validate_digest`] (or any
    /// string, kept as [`digest_string`] makes it).
    pub fn new(d: &str) -> Digest {
        match d.strip_prefix(SHA256_PREFIX).and_then(sha256_bytes) {
            Some(bytes) => Digest(DigestRepr::Sha256(bytes)),
            None => Digest(DigestRepr::Text(digest_string(d).into())),
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest(DigestRepr::Sha256(bytes))
    }

    /// Its 32 bytes, when it is a sha256 digest.
    pub fn sha256(&self) -> Option<&[u8; 32]> {
        match &self.0 {
            DigestRepr::Sha256(b) => Some(b),
            DigestRepr::Text(_) => None,
        }
    }

    /// Whether it is one a registry computes ([`digest_is_canonical`]).
    pub fn is_canonical(&self) -> bool {
        match &self.0 {
            DigestRepr::Sha256(_) => true,
            DigestRepr::Text(t) => digest_is_canonical(t),
        }
    }
}

/// The 32 bytes of 64 hex digits, either case.
fn sha256_bytes(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DigestRepr::Sha256(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut text = [0u8; 64];
                for (pair, byte) in text.chunks_exact_mut(2).zip(b) {
                    pair[0] = HEX[usize::from(byte >> 4)];
                    pair[1] = HEX[usize::from(byte & 15)];
                }
                f.write_str(SHA256_PREFIX)?;
                // Hex digits are ASCII.
                f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
            }
            DigestRepr::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// Digests sort as their text does: lower-case hex digits sort as the bytes
/// they spell, so two sha256 digests compare by their bytes.
impl Ord for Digest {
    fn cmp(&self, other: &Digest) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            (DigestRepr::Sha256(a), DigestRepr::Sha256(b)) => a.cmp(b),
            (DigestRepr::Text(a), DigestRepr::Text(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Digest) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, RefError> {
        scan(input).map(|parts| parts.to_ref())
    }

    /// `repo:tag` when the reference has a tag: the form patterns are matched against.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repo))
    }

    /// Whether `reported`, one name of an image on a node, is this wanted image.
    /// A reference with a canonical digest matches by digest (its tag, if any, is
    /// ignored: a moved tag is not the wanted image); one with any other digest
    /// string by that string as given or by its tag, as Nublado would find it;
    /// otherwise by tag.
    pub fn matches(&self, reported: &ImageRef) -> bool {
        if self.repo != reported.repo {
            return false;
        }
        let by_tag = |t: &Arc<str>| reported.tag.as_ref() == Some(t);
        match (&self.digest, &self.tag) {
            (Some(d), tag) => {
                reported.digest.as_ref() == Some(d)
                    || (!d.is_canonical() && tag.as_ref().is_some_and(by_tag))
            }
            (None, Some(t)) => by_tag(t),
            (None, None) => false,
        }
    }

    /// Whether the reference has a digest that is not canonical
    /// ([`digest_is_canonical`]).
    pub fn has_odd_digest(&self) -> bool {
        self.digest.as_ref().is_some_and(|d| !d.is_canonical())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// A well-formed image name's parts, borrowed from it: what [`ImageRef::parse`]
/// makes of the name, found without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// The registry; `docker.io` for Docker Hub however it was written.
    domain: &'a str,
    /// Whether Docker Hub's `library/` goes between the registry and the path.
    library: bool,
    path: &'a str,
    /// The tag as written.
    tag: Option<&'a str>,
    /// The digest as written (`algorithm:encoded`).
    digest: Option<&'a str>,
}

impl<'a> NameParts<'a> {
    /// The tag of the normalized reference (`latest` when it has neither tag nor
    /// digest).
    pub fn tag(&self) -> Option<&'a str> {
        normalized_tag(self.tag, self.digest)
    }

    /// Appends the normalized repository (`ImageRef::repo`) to `out`.
    pub fn push_repo(&self, out: &mut String) {
        out.push_str(self.domain);
        out.push('/');
        if self.library {
            out.push_str("library/");
        }
        out.push_str(self.path);
    }

    fn to_ref(self) -> ImageRef {
        let mut repo = String::with_capacity(self.domain.len() + self.path.len() + 9);
        self.push_repo(&mut repo);
        ImageRef {
            repo: repo.into(),
            tag: self.tag().map(Into::into),
            digest: self.digest.map(Digest::new),
        }
    }
}

/// Checks `input` against the reference grammar as [`ImageRef::parse`] does (the
/// same errors, in the same order) and returns its parts. Allocates only for an
/// error.
pub fn scan(input: &str) -> Result<NameParts<'_>, RefError> {
    split(input)?.parts()
}

/// A name split into its repository as written, tag and digest, the tag and the
/// digest checked: what [`scan`] does before it looks at the repository. Names
/// that differ only in their tag or digest have the same repository text, which
/// [`NameSplit::parts`] checks the same way each time, so a caller may remember
/// its verdict and skip it ([`NameSplit::repository`]).
#[derive(Debug, Clone, Copy)]
pub struct NameSplit<'a> {
    input: &'a str,
    /// The repository as written: `[domain/]path`, before any tag or digest.
    name: &'a str,
    /// The position of the first `/` in `name`.
    first_slash: Option<usize>,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Splits `input` and checks its tag and digest, with [`scan`]'s errors for them.
pub fn split(input: &str) -> Result<NameSplit<'_>, RefError> {
    let s = trimmed(input)?;
    let invalid = |why: &'static str| RefError::Invalid(input.to_string(), why);

    // One pass over the bytes finds what the grammar splits on (short strings:
    // searching for each separator on its own costs more than checking them).
    let (rest, digest) = match s.bytes().position(|b| b == b'@') {
        Some(at) => {
            let digest = &s[at + 1..];
            validate_digest(digest).map_err(invalid)?;
            (&s[..at], Some(digest))
        }
        None => (s, None),
    };
    let (mut first_slash, mut colon) = (None, None);
    for (i, b) in rest.bytes().enumerate() {
        match b {
            b'/' => {
                first_slash = first_slash.or(Some(i));
                colon = None;
            }
            b':' => colon = Some(i),
            _ => {}
        }
    }
    // The last `:` after the last `/`.
    let (name, tag) = match colon {
        Some(i) => {
            let tag = &rest[i + 1..];
            validate_tag(tag).map_err(invalid)?;
            (&rest[..i], Some(tag))
        }
        None => (rest, None),
    };
    Ok(NameSplit {
        input,
        name,
        first_slash,
        tag,
        digest,
    })
}

impl<'a> NameSplit<'a> {
    /// The repository as written (`busybox`, `ghcr.io/x/lab`): what
    /// [`NameSplit::parts`] checks and normalizes.
    pub fn repository(&self) -> &'a str {
        self.name
    }

    /// The tag of the normalized reference, as [`NameParts::tag`].
    pub fn tag(&self) -> Option<&'a str> {
        normalized_tag(self.tag, self.digest)
    }

    /// Whether the name has a digest.
    pub fn has_digest(&self) -> bool {
        self.digest.is_some()
    }

    /// The digest of the normalized reference ([`ImageRef::digest`]).
    pub fn digest(&self) -> Option<Digest> {
        self.digest.map(Digest::new)
    }

    /// Checks the repository and returns the parts, as [`scan`] does.
    pub fn parts(self) -> Result<NameParts<'a>, RefError> {
        let invalid = |why: &'static str| RefError::Invalid(self.input.to_string(), why);
        let name = self.name;
        validate_name(name).map_err(invalid)?;

        // `name` ends before the tag's `:`, after every `/`: its first `/` is
        // `rest`'s.
        let (domain, path) = split_domain(name, self.first_slash);
        let domain = registry(domain).map_err(invalid)?;
        let mut components = 0;
        for component in path.as_bytes().split(|&b| b == b'/') {
            validate_path_component(component).map_err(invalid)?;
            components += 1;
        }
        Ok(NameParts {
            domain,
            library: domain == DOCKER_HUB && components == 1,
            path,
            tag: self.tag,
            digest: self.digest,
        })
    }
}

/// The tag of a normalized reference: `latest` when it has neither tag nor digest.
fn normalized_tag<'a>(tag: Option<&'a str>, digest: Option<&str>) -> Option<&'a str> {
    match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    }
}

/// The registry and the path of `name`, whose first `/` is at `first_slash`.
fn split_domain(name: &str, first_slash: Option<usize>) -> (Option<&str>, &str) {
    let Some(i) = first_slash else {
        return (None, name);
    };
    let (first, rest) = (&name[..i], &name[i + 1..]);
    let registry = first == "localhost"
        || first
            .bytes()
            .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase());
    if registry {
        (Some(first), rest)
    } else {
        (None, name)
    }
}

/// `input` without surrounding blanks, unless it is empty or a runtime's
/// placeholder.
fn trimmed(input: &str) -> Result<&str, RefError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(RefError::Empty);
    }
    if s.starts_with("<none>") {
        return Err(RefError::Placeholder(s.to_string()));
    }
    Ok(s)
}

/// Checks the repository name (before any tag) as a whole.
fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("no repository name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("repository name longer than 255 characters");
    }
    Ok(())
}

/// The registry of a name whose first component is `domain` (`None`: Docker
/// Hub), checked, and Docker Hub however it is written as `docker.io`.
fn registry(domain: Option<&str>) -> Result<&str, &'static str> {
    match domain {
        Some(d) => {
            validate_domain(d)?;
            Ok(if d == "index.docker.io" {
                DOCKER_HUB
            } else {
                d
            })
        }
        None => Ok(DOCKER_HUB),
    }
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // [IPv6]:port
        let (addr, after) = rest.split_once(']').ok_or("unterminated IPv6 address")?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err("invalid IPv6 address");
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("invalid registry port")?),
            ),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("empty registry host");
        }
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-';
            if !ok {
                return Err("invalid registry host");
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("invalid registry port");
    }
    Ok(())
}

/// A set of bytes, as a table: names are checked byte by byte, and a table
/// lookup has no branch to mispredict on the mix of letters and digits.
const fn byte_set(ranges: &[(u8, u8)], singles: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < ranges.len() {
        let (mut b, last) = ranges[i];
        while b <= last {
            set[b as usize] = true;
            b += 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < singles.len() {
        set[singles[i] as usize] = true;
        i += 1;
    }
    set
}

/// Letters and digits.
const ALNUM: &[(u8, u8)] = &[(b'a', b'z'), (b'A', b'Z'), (b'0', b'9')];
/// `[a-z0-9]`
const PATH_ALNUM: [bool; 256] = byte_set(&[(b'a', b'z'), (b'0', b'9')], b"");
/// `[\w.-]`
const TAG_BYTES: [bool; 256] = byte_set(ALNUM, b"_.-");
/// `[a-zA-Z0-9=_-]`
const DIGEST_BYTES: [bool; 256] = byte_set(ALNUM, b"=_-");

/// Whether every byte of `b` is in `set`.
fn all_in(b: &[u8], set: &[bool; 256]) -> bool {
    b.iter().fold(true, |ok, &x| ok & set[usize::from(x)])
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_path_component(b: &[u8]) -> Result<(), &'static str> {
    if b.is_empty() {
        return Err("empty path component");
    }
    if b.iter().any(|x| x.is_ascii_uppercase()) {
        return Err("repository name must be lowercase");
    }
    let alnum = |x: u8| PATH_ALNUM[usize::from(x)];
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("path component must start and end with a letter or digit");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return Err("invalid character in repository name");
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("empty tag");
    }
    if b.len() > MAX_TAG_LEN {
        return Err("tag longer than 128 characters");
    }
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if !word(b[0]) || !all_in(b, &TAG_BYTES) {
        return Err("invalid tag");
    }
    Ok(())
}

/// Checks a digest, `algorithm:encoded` in the OCI image spec's grammar
/// (`[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`).
fn validate_digest(d: &str) -> Result<(), &'static str> {
    let colon = d.bytes().position(|b| b == b':');
    let (alg, encoded) = colon
        .map(|i| (&d.as_bytes()[..i], &d.as_bytes()[i + 1..]))
        .ok_or("digest lacks an algorithm")?;
    let alg_ok = alg == b"sha256"
        || alg
            .split(|b| matches!(b, b'+' | b'.' | b'_' | b'-'))
            .all(|part| {
                !part.is_empty()
                    && part
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
    if !alg_ok {
        return Err("invalid digest algorithm");
    }
    if encoded.is_empty() || !all_in(encoded, &DIGEST_BYTES) {
        return Err("invalid digest");
    }
    Ok(())
}

/// The digest kept for a well-formed digest `d`: one of a registered algorithm
/// (sha256, sha512) with the right number of hex digits lower-cased; any other as
/// given, as Nublado compares digests: its own test data says `sha256:1234`, and
/// sanitized real node dumps carry such strings too. See [`digest_is_canonical`].
fn digest_string(d: &str) -> String {
    let canonical = d.to_ascii_lowercase();
    if digest_is_canonical(&canonical) {
        canonical
    } else {
        d.to_string()
    }
}

/// Whether `digest` is one a registry computes: `sha256:` and 64 lower-case hex
/// digits, or `sha512:` and 128. Only such a digest names one image for sure; a
/// reference with any other is matched by its digest string and by its tag.
pub fn digest_is_canonical(digest: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match digest.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_forms_are_one_repo() {
        for s in [
            "busybox",
            "library/busybox",
            "docker.io/busybox",
            "docker.io/library/busybox",
            "index.docker.io/library/busybox",
            "index.docker.io/busybox",
            "busybox:latest",
        ] {
            assert_eq!(r(s).to_string(), "docker.io/library/busybox:latest", "{s}");
        }
        assert_eq!(&*r("grafana/grafana:10").repo, "docker.io/grafana/grafana");
    }

    #[test]
    fn keeps_registries_and_ports() {
        let x = r("localhost:5000/x");
        assert_eq!(&*x.repo, "localhost:5000/x");
        assert_eq!(x.tag.as_deref(), Some("latest"));
        assert_eq!(&*r("localhost/x:1").repo, "localhost/x");
        assert_eq!(
            r("ghcr.io/lsst-sqre/sciplat-lab:w_2024_10").to_string(),
            "ghcr.io/lsst-sqre/sciplat-lab:w_2024_10"
        );
        assert_eq!(
            &*r("registry.example.com:443/a/b/c:v1").repo,
            "registry.example.com:443/a/b/c"
        );
        assert_eq!(&*r("[::1]:5000/app:1").repo, "[::1]:5000/app");
    }

    #[test]
    fn tag_and_digest() {
        let both = r(&format!("ghcr.io/a/b:v1@{D}"));
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert_eq!(
            both.digest.as_ref().map(ToString::to_string).as_deref(),
            Some(D)
        );
        let digest_only = r(&format!(
            "busybox@{}",
            D.to_uppercase().replace("SHA256", "sha256")
        ));
        assert_eq!(
            digest_only.tag, None,
            "a digest reference gets no default tag"
        );
        assert_eq!(
            digest_only
                .digest
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(D),
            "hex is lower-cased"
        );
        assert_eq!(digest_only.tagged_name(), None);
    }

    #[test]
    fn matching() {
        let tag_ref = r("busybox:1.36");
        assert!(tag_ref.matches(&r("docker.io/library/busybox:1.36")));
        assert!(!tag_ref.matches(&r("docker.io/library/busybox:1.35")));
        assert!(!tag_ref.matches(&r(&format!("docker.io/library/busybox@{D}"))));
        assert!(!tag_ref.matches(&r("quay.io/library/busybox:1.36")));

        let digest_ref = r(&format!("busybox@{D}"));
        assert!(digest_ref.matches(&r(&format!("docker.io/library/busybox@{D}"))));
        assert!(!digest_ref.matches(&r("docker.io/library/busybox:1.36")));

        // With both, the digest decides: a moved tag is not the wanted image.
        let both = r(&format!("busybox:1.36@{D}"));
        assert!(both.matches(&r(&format!("busybox@{D}"))));
        assert!(!both.matches(&r("busybox:1.36")));
        assert!(!both.matches(&r(&format!("nginx@{D}"))));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "Busybox",
            "ghcr.io/Org/x",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:",
            "busybox@sha256:a.b",
            "busybox@SHA256:abc",
            "busybox@:00000000000000000000000000000000",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a..b",
            "a b",
            "reg:port/x",
            "[zz]/x",
            ":tag",
            "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                matches!(ImageRef::parse(bad), Err(RefError::Invalid(..))),
                "{bad:?} should be invalid, got {:?}",
                ImageRef::parse(bad)
            );
        }
        assert_eq!(ImageRef::parse("  "), Err(RefError::Empty));
        assert!(matches!(
            ImageRef::parse("<none>@<none>"),
            Err(RefError::Placeholder(_))
        ));
        assert!(matches!(
            ImageRef::parse("<none>:<none>"),
            Err(RefError::Placeholder(_))
        ));
        let long_tag = format!("x:{}", "a".repeat(129));
        assert!(ImageRef::parse(&long_tag).is_err());
    }

    #[test]
    fn odd_digests_are_kept_as_given_and_matched_by_string_or_tag() {
        // Nublado's own test data, and a sanitized real node dump.
        for odd in [
            "sha256:1234",
            "sha256:asdfdasfdasfdafd",
            "sha256:ABC",
            "sha256:zz23",
        ] {
            let wanted = r(&format!("lighthouse.ceres/library/sketchbook:d_1@{odd}"));
            assert_eq!(
                wanted.digest.as_ref().map(ToString::to_string).as_deref(),
                Some(odd),
                "as given"
            );
            assert!(wanted.has_odd_digest());
            assert!(!digest_is_canonical(odd));
            assert!(wanted.matches(&r(&format!("lighthouse.ceres/library/sketchbook@{odd}"))));
            assert!(
                wanted.matches(&r("lighthouse.ceres/library/sketchbook:d_1")),
                "by tag"
            );
            assert!(!wanted.matches(&r("lighthouse.ceres/library/sketchbook:d_2")));
            assert!(!wanted.matches(&r(&format!("lighthouse.ceres/library/other@{odd}"))));
        }
        // A canonical digest is lower-cased, and only it decides.
        let upper = format!("busybox:1.36@sha256:{}", &D[7..].to_uppercase());
        let canonical = r(&upper);
        assert_eq!(
            canonical
                .digest
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(D)
        );
        assert!(!canonical.has_odd_digest());
        assert!(!canonical.matches(&r("busybox:1.36")));
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert!(digest_is_canonical(&sha512));
        assert!(!digest_is_canonical(&format!("sha512:{}", "ab".repeat(32))));
    }

    #[test]
    fn error_names_the_reference_and_reason() {
        let e = ImageRef::parse("Not A Ref").unwrap_err();
        assert_eq!(
            e.to_string(),
            "image reference \"Not A Ref\": repository name must be lowercase"
        );
    }

    fn component() -> impl Strategy<Value = String> {
        // No dots: a dotted first component would be a registry (see the unit tests).
        "[a-z0-9]{1,8}([_-][a-z0-9]{1,8}){0,2}"
    }

    /// [`ImageRef::parse`] as it was written before [`scan`]: each separator
    /// searched for on its own, the digest's algorithm split by `str::split`.
    fn parse_before(input: &str) -> Result<ImageRef, RefError> {
        let s = trimmed(input)?;
        let invalid = |why: &'static str| RefError::Invalid(input.to_string(), why);
        let digest_before = |d: &str| -> Result<String, &'static str> {
            let (alg, encoded) = d.split_once(':').ok_or("digest lacks an algorithm")?;
            let alg_ok = alg.split(['+', '.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            if !alg_ok {
                return Err("invalid digest algorithm");
            }
            let enc_ok = encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
            if encoded.is_empty() || !enc_ok {
                return Err("invalid digest");
            }
            let canonical = format!("{alg}:{}", encoded.to_ascii_lowercase());
            Ok(if digest_is_canonical(&canonical) {
                canonical
            } else {
                d.to_string()
            })
        };
        let (rest, digest) = match s.split_once('@') {
            Some((name, digest)) => (name, Some(digest_before(digest).map_err(invalid)?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag).map_err(invalid)?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        validate_name(name).map_err(invalid)?;
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        let domain = registry(domain).map_err(invalid)?;
        for component in path.split('/') {
            validate_path_component(component.as_bytes()).map_err(invalid)?;
        }
        let repo = if domain == DOCKER_HUB && !path.contains('/') {
            format!("{DOCKER_HUB}/library/{path}")
        } else {
            format!("{domain}/{path}")
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            repo: repo.into(),
            tag: tag.map(Into::into),
            digest: digest.as_deref().map(Digest::new),
        })
    }

    /// Digests as names carry them: sha256 in either case, sha512, and odd ones.
    fn digest_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "sha256:[0-9a-f]{64}",
            "sha256:[0-9a-fA-F]{64}",
            "sha256:[0-9a-f]{60,68}",
            "sha512:[0-9a-fA-F]{128}",
            "[a-z0-9]{1,8}:[a-zA-Z0-9=_-]{1,70}",
        ]
    }

    fn name_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9./:@_\\-\\[\\]<> ]{0,40}",
            "(|[a-zA-Z0-9.-]{1,8}(:[0-9]{0,6})?/|\\[[0-9a-f:]{0,6}\\](:[0-9]{1,5})?/)[a-z0-9._/-]{1,20}(:[a-zA-Z0-9_.-]{0,8})?(@[a-zA-Z0-9+._-]{0,8}:[a-zA-Z0-9=_-]{0,70})?",
        ]
    }

    #[test]
    fn sha256_digests_are_kept_as_bytes_and_others_as_text() {
        let upper = format!(
            "sha256:{}",
            D.strip_prefix("sha256:").unwrap().to_uppercase()
        );
        let d = Digest::new(&upper);
        assert!(matches!(d.0, DigestRepr::Sha256(_)), "{d:?}");
        assert_eq!(d, Digest::new(D));
        assert_eq!(d.to_string(), D, "hex is lower-cased");
        for odd in [
            "sha256:1234",
            "md5:ABCD",
            &format!("sha512:{}", "Ab".repeat(64)),
        ] {
            let kept = Digest::new(odd);
            assert!(matches!(kept.0, DigestRepr::Text(_)), "{odd}");
            assert_eq!(kept.to_string(), digest_string(odd));
        }
        assert!(!Digest::new("sha256:1234").is_canonical());
        assert!(Digest::new(&format!("sha512:{}", "ab".repeat(64))).is_canonical());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parses_as_before(s in name_like()) {
            prop_assert_eq!(ImageRef::parse(&s), parse_before(&s));
        }

        #[test]
        fn digests_read_and_sort_as_their_text(
            a in digest_like(),
            b in digest_like(),
        ) {
            let (da, db) = (Digest::new(&a), Digest::new(&b));
            prop_assert_eq!(da.to_string(), digest_string(&a));
            prop_assert_eq!(da.is_canonical(), digest_is_canonical(&digest_string(&a)));
            prop_assert_eq!(da.cmp(&db), digest_string(&a).cmp(&digest_string(&b)));
            prop_assert_eq!(da == db, digest_string(&a) == digest_string(&b));
            prop_assert_eq!(Digest::new(&da.to_string()), da);
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn never_panics_on_reference_like_strings(s in "[a-zA-Z0-9./:@_\\-\\[\\]]{0,60}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn any_digest_string_round_trips_and_matches_itself(
            encoded in "[a-zA-Z0-9=_-]{1,80}",
            tag in prop::option::of("[a-z0-9_]{1,10}"),
        ) {
            let d = format!("sha256:{encoded}");
            let s = match &tag {
                Some(t) => format!("ghcr.io/a/b:{t}@{d}"),
                None => format!("ghcr.io/a/b@{d}"),
            };
            let parsed = ImageRef::parse(&s).unwrap();
            let again = ImageRef::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(&parsed, &again);
            let on_node = ImageRef::parse(&format!("ghcr.io/a/b@{}", d)).unwrap();
            prop_assert!(parsed.matches(&on_node));
            prop_assert_eq!(parsed.has_odd_digest(), !digest_is_canonical(parsed.digest.as_ref().map(ToString::to_string).as_deref().unwrap()));
        }

        #[test]
        fn canonical_form_is_a_fixed_point(
            domain in prop_oneof![Just(String::new()), Just("ghcr.io/".to_string()), Just("localhost:5000/".to_string()), Just("docker.io/".to_string())],
            path in prop::collection::vec(component(), 1..4),
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            digest in prop::option::of("[0-9a-f]{64}"),
        ) {
            let mut s = format!("{domain}{}", path.join("/"));
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            if let Some(d) = &digest { s.push_str("@sha256:"); s.push_str(d); }
            let parsed = ImageRef::parse(&s).unwrap();
            let again = ImageRef::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(&parsed, &again);
            let want_tag = match (&tag, &digest) {
                (Some(t), _) => Some(t.clone()),
                (None, None) => Some("latest".to_string()),
                (None, Some(_)) => None,
            };
            prop_assert_eq!(parsed.tag.as_deref().map(str::to_string), want_tag);
            prop_assert_eq!(&parsed.interned(), &parsed);
            prop_assert!(parsed.matches(&again));
        }
    }
}
