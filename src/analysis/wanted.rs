//! What the prepuller wants: exact references, patterns, and the eligible nodes.

use super::reference::ImageRef;
use super::selector::LabelSelector;
use regex::RegexSet;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The prepull part of the configuration, validated and compiled.
#[derive(Debug, Clone)]
pub struct Wanted {
    exact: Vec<ImageRef>,
    patterns: RegexSet,
    /// `prepull.nodeSelector`: the nodes prepulling is for (`eligible` unless
    /// cordoned). Unlike `--node-selector`, nodes outside it are still reported.
    eligible_selector: LabelSelector,
    /// Repositories of the exact references, for the cheap relevance test.
    repos: HashSet<Arc<str>>,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted::new(Vec::new(), RegexSet::empty(), LabelSelector::default())
    }
}

impl Wanted {
    pub fn new(exact: Vec<ImageRef>, patterns: RegexSet, eligible_selector: LabelSelector) -> Self {
        let repos = exact.iter().map(|r| r.repo.clone()).collect();
        Wanted {
            exact,
            patterns,
            eligible_selector,
            repos,
        }
    }

    pub fn exact(&self) -> &[ImageRef] {
        &self.exact
    }

    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.eligible_selector.matches(labels)
    }

    /// Whether a tagged name (`repo:tag`) is wanted through a pattern.
    pub fn pattern_matches(&self, r: &ImageRef) -> bool {
        !self.patterns.is_empty()
            && r.tagged_name()
                .is_some_and(|name| self.patterns.is_match(&name))
    }

    /// Whether an image entry (all its names) can matter for prepull matching, and
    /// so is kept in the node's summary: a name is a wanted image or matches a
    /// pattern, or the entry may have lost names to the kubelet's cut (5 names,
    /// digests first) or has no tag at all, and could then be a wanted image known
    /// only by digest. Other entries of a wanted repository are complete lists of
    /// other images and are dropped, which keeps summaries small.
    pub fn is_relevant(&self, names: &[ImageRef]) -> bool {
        if self.is_empty() || names.is_empty() {
            return false;
        }
        if names
            .iter()
            .any(|r| self.exact.iter().any(|w| w.matches(r)) || self.pattern_matches(r))
        {
            return true;
        }
        let maybe_cut = names.len() >= MAX_NAMES_PER_IMAGE || names.iter().all(|r| r.tag.is_none());
        maybe_cut && (self.has_patterns() || names.iter().any(|r| self.repos.contains(&r.repo)))
    }
}

/// The kubelet's `MaxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn wanted(exact: &[&str], patterns: &[&str], selector: &[(&str, &str)]) -> Wanted {
        let exact = exact.iter().map(|s| ImageRef::parse(s).unwrap()).collect();
        let map = selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Wanted::new(
            exact,
            RegexSet::new(patterns).unwrap(),
            LabelSelector::from_map(&map).unwrap(),
        )
    }

    fn refs(names: &[&str]) -> Vec<ImageRef> {
        names.iter().map(|s| ImageRef::parse(s).unwrap()).collect()
    }

    #[test]
    fn relevance() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let w = wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]);
        assert!(
            w.is_relevant(&refs(&["docker.io/library/busybox:1.36"])),
            "a wanted image"
        );
        assert!(
            !w.is_relevant(&refs(&["docker.io/library/busybox:1.0"])),
            "another tag, complete"
        );
        assert!(w.is_relevant(&refs(&["ghcr.io/x/lab:w_1"])));
        assert!(!w.is_relevant(&refs(&["ghcr.io/x/lab:r_1"])));
        assert!(!w.is_relevant(&refs(&["nginx:1"])));
        let digest_only = format!("ghcr.io/x/other@{}", d(1));
        assert!(
            w.is_relevant(&refs(&[&digest_only])),
            "may be a cut-off pattern image"
        );
        // Five names: tags may have been cut, so the digests must be kept.
        let cut: Vec<String> = (1..=4)
            .map(|i| format!("docker.io/library/busybox@{}", d(i)))
            .chain(["docker.io/library/busybox:1.0".to_string()])
            .collect();
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        let w = wanted(&["busybox:1.36"], &[], &[]);
        assert!(w.is_relevant(&refs(&cut)));
        assert!(
            !w.is_relevant(&refs(&[&digest_only])),
            "no patterns, not a wanted repo"
        );
        assert!(
            w.is_relevant(&refs(&[&format!("busybox@{}", d(3))])),
            "untagged, in a wanted repo"
        );
        assert!(!wanted(&[], &[], &[]).is_relevant(&refs(&["busybox:1.36"])));
    }
}
