//! What the prepuller wants: exact references, patterns, and the eligible nodes.

use super::reference::ImageRef;
use super::selector::LabelSelector;
use regex::RegexSet;
use std::collections::{BTreeMap, HashSet};

/// The prepull part of the configuration, validated and compiled.
#[derive(Debug, Clone)]
pub struct Wanted {
    exact: Vec<ImageRef>,
    patterns: RegexSet,
    selector: LabelSelector,
    /// Repositories of the exact references, for the cheap relevance test.
    repos: HashSet<String>,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted::new(Vec::new(), RegexSet::empty(), LabelSelector::default())
    }
}

impl Wanted {
    pub fn new(exact: Vec<ImageRef>, patterns: RegexSet, selector: LabelSelector) -> Self {
        let repos = exact.iter().map(|r| r.repo.clone()).collect();
        Wanted {
            exact,
            patterns,
            selector,
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
        self.selector.matches(labels)
    }

    /// Whether a tagged name (`repo:tag`) is wanted through a pattern.
    pub fn pattern_matches(&self, r: &ImageRef) -> bool {
        !self.patterns.is_empty()
            && r.tagged_name()
                .is_some_and(|name| self.patterns.is_match(&name))
    }

    /// Whether an image entry (all its names) can matter for prepull matching: it has
    /// a wanted repository, a name a pattern matches, or, when patterns are in use,
    /// no tag at all (it may be a pattern-matched image whose tags were cut off and
    /// that must then be matched by digest).
    pub fn is_relevant(&self, names: &[ImageRef]) -> bool {
        if self.is_empty() || names.is_empty() {
            return false;
        }
        names
            .iter()
            .any(|r| self.repos.contains(&r.repo) || self.pattern_matches(r))
            || (self.has_patterns() && names.iter().all(|r| r.tag.is_none()))
    }
}

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
        let w = wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]);
        assert!(
            w.is_relevant(&refs(&["docker.io/library/busybox:1.0"])),
            "same repo"
        );
        assert!(w.is_relevant(&refs(&["ghcr.io/x/lab:w_1"])));
        assert!(!w.is_relevant(&refs(&["ghcr.io/x/lab:r_1"])));
        assert!(!w.is_relevant(&refs(&["nginx:1"])));
        let digest_only = format!("ghcr.io/x/other@sha256:{}", "a".repeat(64));
        assert!(
            w.is_relevant(&refs(&[&digest_only])),
            "may be a cut-off pattern image"
        );
        let w = wanted(&["busybox:1.36"], &[], &[]);
        assert!(
            !w.is_relevant(&refs(&[&digest_only])),
            "no patterns, no need"
        );
        assert!(!wanted(&[], &[], &[]).is_relevant(&refs(&["busybox:1.36"])));
    }
}
