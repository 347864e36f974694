//! What should be on which nodes: the configuration's images and patterns, the
//! groups of images the prepullers' sources want, and which image entries a node
//! summary must keep to match them.

use super::eligibility::Eligibility;
use super::reference::{Digest, ImageRef};
use super::selector::LabelSelector;
use regex::{Regex, RegexSet};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

super::label_values! {
    /// Who wants an image: the `source` label of the wanted-image metrics.
    pub enum WantSource {
        /// `prepull.images` in the configuration.
        Config = "config",
        /// `prepull.patterns`: matching tags seen on eligible nodes.
        Pattern = "pattern",
        /// The Nublado controller's prepuller status.
        Nublado = "nublado",
        /// kube-fledged `ImageCache` objects.
        KubeFledged = "kube-fledged",
        /// DaemonSets that pull images (JupyterHub's continuous image puller).
        DaemonSet = "daemonset",
    }
}

impl WantSource {
    /// Whether the source is read (a `prepull.sources` entry), rather than the
    /// configuration's own lists.
    pub fn is_read(self) -> bool {
        !matches!(self, WantSource::Config | WantSource::Pattern)
    }
}

impl serde::Serialize for WantSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A `prepull.patterns` entry.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: Regex,
    /// Want only this many of the matching tags, the greatest in natural order.
    pub newest: Option<usize>,
}

/// The prepull part of the configuration, validated and compiled.
#[derive(Debug, Clone)]
pub struct Wanted {
    exact: Vec<ImageRef>,
    patterns: Vec<Pattern>,
    pattern_set: RegexSet,
    /// Where the configuration's images are wanted: `prepull.nodeSelector` and
    /// `prepull.tolerations`, Nublado's rule.
    eligibility: Arc<Eligibility>,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted::new(
            Vec::new(),
            Vec::new(),
            Eligibility::Config {
                selector: LabelSelector::default(),
                tolerations: Vec::new(),
            },
        )
    }
}

impl Wanted {
    pub fn new(exact: Vec<ImageRef>, patterns: Vec<Pattern>, eligibility: Eligibility) -> Self {
        let pattern_set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
            .expect("each pattern compiled on its own");
        Wanted {
            exact,
            patterns,
            pattern_set,
            eligibility: Arc::new(eligibility),
        }
    }

    pub fn exact(&self) -> &[ImageRef] {
        &self.exact
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn eligibility(&self) -> &Arc<Eligibility> {
        &self.eligibility
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }
}

/// Images one source wants, and the nodes it wants them on.
#[derive(Debug, Clone, PartialEq)]
pub struct WantGroup {
    pub source: WantSource,
    pub images: Vec<ImageRef>,
    pub eligibility: Arc<Eligibility>,
}

/// Which image entries, and which of their names, can matter for matching the
/// wanted images, and so are kept in a node's summary.
///
/// An entry is kept by its repositories and the patterns; of its names, the tags
/// wanted now or matched by a pattern, and the digests of wanted or pattern
/// repositories (a wanted tag may be known by its digest on another node). A
/// wanted repository's other tags are not kept: with per-build tags they are most
/// of a node's names, and none of them can match. So when the wanted tags, the
/// repositories or the patterns change, the nodes are summarized again (see
/// `Store`): a source's new weekly costs one relist. Of the entries kept for a
/// digest alone, only those a wanted image is known by are kept once the store
/// knows those digests ([`Relevance::with_known_digests`]).
#[derive(Debug, Clone, Default)]
pub struct Relevance {
    repos: HashSet<Arc<str>>,
    patterns: Option<RegexSet>,
    /// The tags wanted now, by repository: the tags of a node's (or a runtime's)
    /// entries that are kept.
    tags: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Which repositories the patterns can match a tag of (`None` with no
    /// patterns, or patterns it cannot tell for).
    repo_patterns: Option<Arc<RepoPatterns>>,
    /// The digests of the wanted references that name one.
    wanted_digests: Vec<Digest>,
    /// The digests the wanted images are known by, once the store has told them
    /// (`None`: every entry kept for a digest is).
    known_digests: Option<Arc<KnownDigests>>,
}

/// The digests the wanted images are known by: a wanted digest reference's, and
/// those of the entries that carry a wanted tag on some node
/// ([`Analysis::known_digests`](crate::analysis::report::Analysis::known_digests)).
pub type KnownDigests = HashSet<Digest, foldhash::fast::RandomState>;

/// Whether an entry's kept names can be a wanted image known by `known`
/// digests: one is a tag (only wanted and pattern tags are kept), one of
/// `known`, or a name without a digest.
pub fn is_known(names: &[ImageRef], known: &KnownDigests) -> bool {
    names
        .iter()
        .any(|n| n.tag.is_some() || n.digest.as_ref().is_none_or(|d| known.contains(d)))
}

/// The known digests are left out: the store follows them itself (a new one
/// has the nodes listed again, and one gone changes nothing that matters), so a
/// change of them alone calls for no new summaries. The wanted references'
/// digests are in: a list works out the known digests from them
/// ([`crate::analysis::list`]).
impl PartialEq for Relevance {
    fn eq(&self, other: &Self) -> bool {
        self.repos == other.repos
            && self.tags == other.tags
            && self.wanted_digests == other.wanted_digests
            && self.patterns.as_ref().map(RegexSet::patterns)
                == other.patterns.as_ref().map(RegexSet::patterns)
    }
}

impl Relevance {
    pub fn new<'a>(wanted: &Wanted, groups: impl IntoIterator<Item = &'a WantGroup>) -> Self {
        let mut repos = HashSet::new();
        let mut tags: HashMap<Arc<str>, HashSet<Arc<str>>> = HashMap::new();
        let mut wanted_digests = Vec::new();
        for r in wanted
            .exact
            .iter()
            .chain(groups.into_iter().flat_map(|g| &g.images))
        {
            repos.insert(r.repo.clone());
            if let Some(t) = &r.tag {
                tags.entry(r.repo.clone()).or_default().insert(t.clone());
            }
            wanted_digests.extend(r.digest.iter().cloned());
        }
        wanted_digests.sort_unstable();
        wanted_digests.dedup();
        let patterns = (!wanted.pattern_set.is_empty()).then(|| wanted.pattern_set.clone());
        let repo_patterns = patterns
            .as_ref()
            .and_then(|p| RepoPatterns::new(p.patterns()))
            .map(Arc::new);
        Relevance {
            repos,
            patterns,
            tags,
            repo_patterns,
            wanted_digests,
            known_digests: None,
        }
    }

    /// The digests the wanted references name (`repo@sha256:...`): wanted
    /// images known by them whatever the nodes say.
    pub fn wanted_digests(&self) -> &[Digest] {
        &self.wanted_digests
    }

    /// This relevance, keeping of the entries kept for a digest alone those a
    /// wanted image is known by: a digest of `known`. In a wanted repository
    /// whose images are each on one node (per-build tags) they are most of what
    /// summaries would keep, and none of them can be a wanted image.
    pub fn with_known_digests(&self, known: Option<Arc<KnownDigests>>) -> Relevance {
        Relevance {
            known_digests: known,
            ..self.clone()
        }
    }

    /// The digests the wanted images are known by, once told.
    pub fn known_digests(&self) -> Option<&Arc<KnownDigests>> {
        self.known_digests.as_ref()
    }

    /// Whether a node's entry with these kept names is kept: always, until the
    /// known digests are told ([`Relevance::with_known_digests`]).
    pub fn keeps_entry(&self, names: &[ImageRef]) -> bool {
        self.known_digests
            .as_ref()
            .is_none_or(|known| is_known(names, known))
    }

    /// Whether a name of a runtime's image can match an image wanted now: a tag
    /// wanted now or one a pattern matches, a digest in a wanted repository (a
    /// wanted tag may be known by its digest); a digest elsewhere only if the
    /// image may be a pattern's ([`RuntimeKeep::IfPatternImage`]): a pattern may
    /// match a tag of its repository.
    pub fn runtime_keeps(&self, r: &ImageRef) -> RuntimeKeep {
        if let Some(t) = &r.tag
            && (self.tags.get(&r.repo).is_some_and(|ts| ts.contains(t)) || self.pattern_matches(r))
        {
            return RuntimeKeep::Yes;
        }
        match &r.digest {
            Some(_) if self.repos.contains(&r.repo) => RuntimeKeep::Yes,
            Some(_) if self.pattern_may_match_repo(&r.repo) => RuntimeKeep::IfPatternImage,
            _ => RuntimeKeep::No,
        }
    }

    /// Whether a tagged name matches a pattern.
    pub fn matches_pattern(&self, r: &ImageRef) -> bool {
        self.pattern_matches(r)
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty() && self.patterns.is_none()
    }

    /// Whether a tagged name (`repo:tag`) is wanted through a pattern.
    fn pattern_matches(&self, r: &ImageRef) -> bool {
        self.patterns
            .as_ref()
            .is_some_and(|p| r.tagged_name().is_some_and(|name| p.is_match(&name)))
    }

    /// Whether an image entry (all its names) can matter: a name is in a wanted
    /// repository or matches a pattern, or, with patterns, the entry may have lost
    /// its tags to the kubelet's cut (5 names, digests first) or has none, and
    /// could then be a pattern image known only by digest: only if a pattern can
    /// match a tag of one of its repositories, since wanted images are matched by
    /// repository and tag or digest.
    pub fn is_relevant(&self, names: &[ImageRef]) -> bool {
        self.entry_is_relevant_for_repos(
            names.len(),
            names.iter().all(|r| r.tag.is_none()),
            names.iter().any(|r| self.name_matches(r)),
            names.iter().any(|r| self.pattern_may_match_repo(&r.repo)),
        )
    }

    /// Whether one name is in a wanted repository or matches a pattern.
    pub fn name_matches(&self, r: &ImageRef) -> bool {
        self.repos.contains(&r.repo) || self.pattern_matches(r)
    }

    /// Whether `repo` is the repository of a wanted image.
    pub fn wants_repo(&self, repo: &str) -> bool {
        self.repos.contains(repo)
    }

    /// Whether `tag` of `repo` is the tag of an image wanted now.
    pub fn wants_tag(&self, repo: &str, tag: &str) -> bool {
        self.tags.get(repo).is_some_and(|ts| ts.contains(tag))
    }

    /// Whether a pattern matches `tagged`, a name in its `repo:tag` form.
    pub fn pattern_matches_tagged(&self, tagged: &str) -> bool {
        self.patterns.as_ref().is_some_and(|p| p.is_match(tagged))
    }

    /// Whether a pattern can match `repo:TAG` for some tag (`true` whenever that
    /// cannot be ruled out); never with no patterns.
    pub fn pattern_may_match_repo(&self, repo: &str) -> bool {
        match (&self.patterns, &self.repo_patterns) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(p)) => p.may_match(repo),
        }
    }

    /// [`Relevance::entry_is_relevant`], but an entry that matches nothing is
    /// kept only when a pattern may match a tag of one of its repositories
    /// (`any_pattern_repo`, [`Relevance::pattern_may_match_repo`]).
    pub fn entry_is_relevant_for_repos(
        &self,
        names: usize,
        all_untagged: bool,
        any_matches: bool,
        any_pattern_repo: bool,
    ) -> bool {
        self.entry_is_relevant(names, all_untagged, any_matches)
            && (any_matches || any_pattern_repo)
    }

    /// [`Relevance::is_relevant`] from what it looks at: how many names the entry
    /// has, whether none has a tag, and whether any [matches](Relevance::name_matches).
    pub fn entry_is_relevant(&self, names: usize, all_untagged: bool, any_matches: bool) -> bool {
        if names == 0 {
            return false;
        }
        if any_matches {
            return true;
        }
        let maybe_cut = names >= MAX_NAMES_PER_IMAGE || all_untagged;
        maybe_cut && self.patterns.is_some()
    }
}

/// The patterns as one lazy DFA, asked whether any `repo:TAG` can match: the
/// DFA is walked over `repo:`, then every state reachable through bytes a tag
/// may hold is searched for a match. That search builds DFA states afresh, so
/// each answer is remembered per repository (repositories are few, tags are
/// not), for every caller: the node summaries, the runtime summaries and
/// [`Relevance::is_relevant`].
#[derive(Debug)]
struct RepoPatterns {
    dfa: regex_automata::hybrid::dfa::DFA,
    /// The answers so far, at most [`MAX_KNOWN_REPOS`]; past that, repositories
    /// are searched each time, so that a cluster's names cannot grow it.
    known: std::sync::Mutex<HashMap<Box<str>, bool>>,
}

/// Repositories whose answer [`RepoPatterns`] remembers.
const MAX_KNOWN_REPOS: usize = 4096;

/// States searched before giving up (the answer is then "may match").
const MAX_SEARCHED_STATES: usize = 4096;

/// The bytes of a tag (`[\w][\w.-]*`).
const TAG_BYTES: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";

impl RepoPatterns {
    /// `None` when the patterns cannot be made into a lazy DFA.
    fn new(patterns: &[String]) -> Option<RepoPatterns> {
        use regex_automata::{MatchKind, hybrid::dfa::DFA};
        let config = DFA::config()
            .match_kind(MatchKind::All)
            .unicode_word_boundary(true);
        let dfa = DFA::builder().configure(config).build_many(patterns).ok()?;
        Some(RepoPatterns {
            dfa,
            known: Default::default(),
        })
    }

    fn may_match(&self, repo: &str) -> bool {
        let memo = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&answer) = memo.get(repo) {
            return answer;
        }
        // Searched outside the lock: another thread may search the same
        // repository meanwhile, and both store the same answer.
        drop(memo);
        let mut cache = self.dfa.create_cache();
        let answer = self.search(&mut cache, repo).unwrap_or(true);
        let mut memo = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() < MAX_KNOWN_REPOS {
            memo.insert(repo.into(), answer);
        }
        answer
    }

    /// `None`: the DFA gave up (a quit byte, its cache cleared, too many states).
    fn search(&self, cache: &mut regex_automata::hybrid::dfa::Cache, repo: &str) -> Option<bool> {
        use regex_automata::{Anchored, util::start};
        let dfa = &self.dfa;
        let clears = cache.clear_count();
        let mut sid = dfa
            .start_state(cache, &start::Config::new().anchored(Anchored::No))
            .ok()?;
        for &b in repo.as_bytes().iter().chain(b":") {
            sid = dfa.next_state(cache, sid, b).ok()?;
            if sid.is_match() {
                return Some(true);
            }
            if sid.is_dead() {
                return Some(false);
            }
            if sid.is_quit() {
                return None;
            }
        }
        let mut seen = HashSet::from([sid]);
        let mut todo = vec![sid];
        while let Some(state) = todo.pop() {
            if dfa.next_eoi_state(cache, state).ok()?.is_match() {
                return Some(true);
            }
            if cache.clear_count() != clears {
                return None;
            }
            let mut classes = [false; 256];
            for &b in TAG_BYTES {
                let class = usize::from(dfa.byte_classes().get(b));
                if std::mem::replace(&mut classes[class], true) {
                    continue;
                }
                let next = dfa.next_state(cache, state, b).ok()?;
                if next.is_match() {
                    return Some(true);
                }
                if next.is_quit()
                    || cache.clear_count() != clears
                    || seen.len() > MAX_SEARCHED_STATES
                {
                    return None;
                }
                if !next.is_dead() && seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        Some(false)
    }
}

/// What a runtime summary keeps of one name ([`Relevance::runtime_keeps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKeep {
    No,
    Yes,
    /// A digest outside the wanted repositories, kept when the image has a tag a
    /// pattern matches or no tag at all (it may then be a pattern's image).
    IfPatternImage,
}

/// The kubelet's `MaxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// Natural order: runs of digits compare as numbers, so `w_2024_9 < w_2024_10`,
/// `r27_0_0 < r28_0_0` and `d_2024_01_02 < d_2024_01_10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let strip = |s: &'_ [u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
                let (da, db) = (&a[strip(&a[..na])..na], &b[strip(&b[..nb])..nb]);
                let by_value = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                // Equal values: fewer leading zeros first, so the order is total.
                let order = by_value.then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn wanted(exact: &[&str], patterns: &[&str], selector: &[(&str, &str)]) -> Wanted {
        let exact = exact.iter().map(|s| ImageRef::parse(s).unwrap()).collect();
        let map: BTreeMap<String, String> = selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let patterns = patterns
            .iter()
            .map(|p| Pattern {
                regex: Regex::new(p).unwrap(),
                newest: None,
            })
            .collect();
        Wanted::new(
            exact,
            patterns,
            Eligibility::Config {
                selector: LabelSelector::from_map(&map).unwrap(),
                tolerations: Vec::new(),
            },
        )
    }

    fn refs(names: &[&str]) -> Vec<ImageRef> {
        names.iter().map(|s| ImageRef::parse(s).unwrap()).collect()
    }

    #[test]
    fn relevance() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let w = wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]);
        let r = Relevance::new(&w, []);
        assert!(r.is_relevant(&refs(&["docker.io/library/busybox:1.36"])));
        assert!(
            r.is_relevant(&refs(&["docker.io/library/busybox:1.0"])),
            "another tag of a wanted repository: a source may want it next week"
        );
        assert!(r.is_relevant(&refs(&["ghcr.io/x/lab:w_1"])));
        assert!(!r.is_relevant(&refs(&["ghcr.io/x/lab:r_1"])));
        assert!(!r.is_relevant(&refs(&["nginx:1"])));
        let digest_only = format!("ghcr.io/x/lab@{}", d(1));
        assert!(
            r.is_relevant(&refs(&[&digest_only])),
            "may be a cut-off pattern image"
        );
        let elsewhere = format!("ghcr.io/x/other@{}", d(1));
        assert!(
            !r.is_relevant(&refs(&[&elsewhere])),
            "no pattern can match a tag of its repository"
        );
        let cut: Vec<String> = (0..5)
            .map(|n| format!("ghcr.io/x/other@{}", d(n)))
            .collect();
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        assert!(!r.is_relevant(&refs(&cut)));
        let unanchored = Relevance::new(&wanted(&[], &["w_"], &[]), []);
        assert!(unanchored.is_relevant(&refs(&[&elsewhere])));
        let r = Relevance::new(&wanted(&["busybox:1.36"], &[], &[]), []);
        assert!(
            !r.is_relevant(&refs(&[&digest_only])),
            "no patterns, not a wanted repo"
        );
        assert!(Relevance::new(&wanted(&[], &[], &[]), []).is_empty());
    }

    /// Told the digests the wanted images are known by, a relevance keeps of the
    /// entries kept for a digest alone those with one of them, and is still the
    /// same relevance (nodes need not be summarized again for it).
    #[test]
    fn known_digests_keep_the_entries_a_wanted_image_can_be() {
        let r = Relevance::new(&wanted(&["ghcr.io/x/app:1"], &[], &[]), []);
        let d = |c: char| format!("ghcr.io/x/app@sha256:{}", c.to_string().repeat(64));
        let by_digest = refs(&[&d('1')]);
        let other = refs(&[&d('2')]);
        let tagged = refs(&["ghcr.io/x/app:1", &d('2')]);
        assert!(
            r.keeps_entry(&by_digest) && r.keeps_entry(&other),
            "all, untold"
        );
        let known: KnownDigests = [by_digest[0].digest.clone().unwrap()].into_iter().collect();
        let told = r.with_known_digests(Some(Arc::new(known)));
        assert!(told.keeps_entry(&by_digest));
        assert!(!told.keeps_entry(&other));
        assert!(told.keeps_entry(&tagged), "a kept tag keeps its entry");
        assert!(told == r, "the same relevance");
        assert!(told.known_digests().is_some() && r.known_digests().is_none());
        // A wanted reference's digest is known whatever the nodes say, and a
        // new one makes another relevance (its list tells it).
        let pinned = Relevance::new(&wanted(&["ghcr.io/x/app:1", &d('3')], &[], &[]), []);
        assert_eq!(pinned.wanted_digests(), &[Digest::new(&d('3')[14..])][..]);
        assert!(pinned != r);
    }

    #[test]
    fn sources_add_their_repositories() {
        let w = wanted(&[], &[], &[]);
        let group = WantGroup {
            source: WantSource::Nublado,
            images: refs(&["ghcr.io/lsst-sqre/sciplat-lab:w_2024_10"]),
            eligibility: w.eligibility().clone(),
        };
        let r = Relevance::new(&w, [&group]);
        assert!(r.is_relevant(&refs(&["ghcr.io/lsst-sqre/sciplat-lab:w_2024_11"])));
        assert!(!r.is_relevant(&refs(&["ghcr.io/lsst-sqre/other:1"])));
        // Another weekly of the same repository: summaries keep only the tags
        // wanted now, so the relevance differs and nodes are summarized again.
        let next_week = WantGroup {
            images: refs(&["ghcr.io/lsst-sqre/sciplat-lab:w_2024_12"]),
            ..group.clone()
        };
        assert!(r.wants_tag("ghcr.io/lsst-sqre/sciplat-lab", "w_2024_10"));
        assert!(!r.wants_tag("ghcr.io/lsst-sqre/sciplat-lab", "w_2024_11"));
        assert_ne!(r, Relevance::new(&w, [&next_week]));
        assert_eq!(r, Relevance::new(&w, [&group.clone()]));
        assert_ne!(r, Relevance::new(&w, []));
    }

    #[test]
    fn natural_order() {
        let mut tags = vec![
            "w_2024_10",
            "w_2024_9",
            "w_2023_52",
            "r28_0_0",
            "r27_0_0",
            "d_2024_01_10",
            "d_2024_01_02",
            "w_2024_09",
        ];
        tags.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            tags,
            [
                "d_2024_01_02",
                "d_2024_01_10",
                "r27_0_0",
                "r28_0_0",
                "w_2023_52",
                "w_2024_9",
                "w_2024_09",
                "w_2024_10"
            ]
        );
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_eq!(natural_cmp("a1", "a"), Ordering::Greater);
        assert_eq!(natural_cmp("a10b", "a10c"), Ordering::Less);
        assert_eq!(
            natural_cmp("x99999999999999999999999", "x100000000000000000000000"),
            Ordering::Less
        );
    }

    #[test]
    fn which_repositories_a_pattern_can_match_a_tag_of() {
        let r = |patterns: &[&str]| Relevance::new(&wanted(&[], patterns, &[]), []);
        let lab = "ghcr.io/x/lab";
        let anchored = r(&["^ghcr\\.io/x/lab:w_"]);
        assert!(anchored.pattern_may_match_repo(lab));
        assert!(!anchored.pattern_may_match_repo("ghcr.io/x/other"));
        assert!(!anchored.pattern_may_match_repo("ghcr.io/x/lab2"));
        assert!(!anchored.pattern_may_match_repo("docker.io/library/ghcr.io"));
        // A match that may start in the tag, or end before it.
        assert!(r(&["w_[0-9]+$"]).pattern_may_match_repo("quay.io/a/b"));
        assert!(r(&["x/la"]).pattern_may_match_repo(lab));
        assert!(r(&["(?i)^GHCR\\.IO/"]).pattern_may_match_repo(lab));
        // Only what a tag can hold follows the colon.
        assert!(!r(&["^ghcr\\.io/x/lab:w/"]).pattern_may_match_repo(lab));
        assert!(r(&["^ghcr\\.io/x/lab:\\w+$"]).pattern_may_match_repo(lab));
        assert!(r(&["\\blab\\b"]).pattern_may_match_repo(lab));
        // Any of several patterns.
        let two = r(&["^quay\\.io/a:", "^ghcr\\.io/x/lab:r"]);
        assert!(two.pattern_may_match_repo("quay.io/a"));
        assert!(two.pattern_may_match_repo(lab));
        assert!(!two.pattern_may_match_repo("quay.io/b"));
        assert!(!r(&[]).pattern_may_match_repo(lab), "no patterns");
    }

    #[test]
    fn answers_are_remembered_per_repository_up_to_a_bound() {
        let r = Relevance::new(&wanted(&[], &["^ghcr\\.io/x/lab:w_"], &[]), []);
        let known = || {
            let p = r.repo_patterns.as_ref().unwrap();
            p.known.lock().unwrap().clone()
        };
        for _ in 0..3 {
            assert!(r.pattern_may_match_repo("ghcr.io/x/lab"));
            assert!(!r.pattern_may_match_repo("ghcr.io/x/other"));
        }
        assert_eq!(
            known(),
            HashMap::from([
                ("ghcr.io/x/lab".into(), true),
                ("ghcr.io/x/other".into(), false)
            ])
        );
        // A clone shares what is known.
        assert!(r.clone().pattern_may_match_repo("ghcr.io/x/lab"));
        for i in 0..2 * MAX_KNOWN_REPOS {
            assert!(!r.pattern_may_match_repo(&format!("quay.io/n{i}")));
        }
        assert_eq!(known().len(), MAX_KNOWN_REPOS);
        assert!(r.pattern_may_match_repo("ghcr.io/x/lab"));
    }

    fn pattern() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            proptest::strategy::Just("^ghcr\\.io/x/lab:w_".to_string()),
            proptest::strategy::Just("^docker\\.io/library/a[0-9]*:".to_string()),
            proptest::strategy::Just("(?i)^QUAY\\.io/".to_string()),
            proptest::strategy::Just("b:1$".to_string()),
            proptest::strategy::Just("^[a-z.]+/x/[a-z]+:(w|r)_[0-9]+$".to_string()),
            proptest::strategy::Just("lab\\b".to_string()),
            "\\^?[a-z./:_1]{1,12}\\$?",
        ]
    }

    proptest::proptest! {
        /// A repository ruled out has no tag a pattern matches.
        #[test]
        fn a_repository_ruled_out_has_no_matching_tag(
            patterns in proptest::collection::vec(pattern(), 1..3),
            repo in "(ghcr\\.io|quay\\.io|docker\\.io/library)/[abx]{1,2}(/lab)?",
            tags in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,6}", 1..8),
        ) {
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            proptest::prop_assume!(patterns.iter().all(|p| Regex::new(p).is_ok()));
            let r = Relevance::new(&wanted(&[], &patterns, &[]), []);
            if !r.pattern_may_match_repo(&repo) {
                for tag in &tags {
                    proptest::prop_assert!(!r.pattern_matches_tagged(&format!("{repo}:{tag}")), "{repo}:{tag}");
                }
            }
        }

        #[test]
        fn natural_order_is_a_total_order(a in "[a-z_0-9]{0,12}", b in "[a-z_0-9]{0,12}", c in "[a-z_0-9]{0,12}") {
            proptest::prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            proptest::prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                proptest::prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn natural_order_agrees_with_numbers(x in 0u64..1_000_000, y in 0u64..1_000_000) {
            proptest::prop_assert_eq!(
                natural_cmp(&format!("w_{x}"), &format!("w_{y}")),
                x.cmp(&y)
            );
        }
    }
}
