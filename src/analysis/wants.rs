//! What one source of wanted images wants, as one read of it found: its groups,
//! the problems with single images, and the bounds every source keeps to.
//!
//! Every source is bounded: at most [`MAX_IMAGES_PER_SOURCE`] distinct images
//! (the first in the order the source lists them; the references beyond are
//! counted, not kept) and [`MAX_PROBLEMS`] problems kept for the log, so that a
//! huge answer costs time linear in its size and memory bounded by the cap.

use super::menu::Menu;
use super::reference::ImageRef;
use super::wanted::WantGroup;
use std::collections::HashSet;
use std::sync::Arc;

/// Most distinct wanted images one source may contribute (Nublado wants tens, a
/// prepuller DaemonSet a handful); the references beyond are dropped, counted in
/// `imagecap_wanted_source_dropped_images` and logged.
pub const MAX_IMAGES_PER_SOURCE: usize = 10_000;

/// Most problems with single images kept for the log per read; the rest are
/// summed up in one last line.
pub const MAX_PROBLEMS: usize = 20;

/// What one read of a source wants: its groups, the problems with single images
/// (logged; the rest is kept), and how many image references were dropped past
/// the cap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wants {
    pub groups: Vec<WantGroup>,
    pub problems: Vec<String>,
    pub dropped: u64,
    /// Nublado only: what its spawner menu shows and hides.
    pub menu: Option<Arc<Menu>>,
    /// Malformed fields of the answer that cost nothing else (a digest that is
    /// not canonical, kept as given): counted in
    /// `imagecap_invalid_source_data_total{source, field}`.
    pub invalid: Vec<(SourceField, u64)>,
}

super::label_values! {
    /// The part of a source's answer that was malformed: the `field` label of
    /// `imagecap_invalid_source_data_total`.
    pub enum SourceField {
        /// A digest that is not sha256 with 64 hex digits (or sha512 with 128):
        /// kept as given and matched as Nublado matches it.
        Digest = "digest",
        /// An image reference that cannot be read: the image is skipped.
        Reference = "reference",
    }
}

/// Distinct images in the order first seen, at most `max` of them; references
/// to other images past the cap are counted.
#[derive(Debug)]
pub struct ImageSet {
    images: Vec<ImageRef>,
    seen: HashSet<ImageRef>,
    max: usize,
    dropped: u64,
}

impl ImageSet {
    pub fn new(max: usize) -> ImageSet {
        ImageSet {
            images: Vec::new(),
            seen: HashSet::new(),
            max,
            dropped: 0,
        }
    }

    /// Keeps `r` unless it is already kept or the set is full (then it counts).
    pub fn insert(&mut self, r: ImageRef) {
        if self.seen.contains(&r) {
            return;
        }
        if self.images.len() >= self.max {
            self.dropped += 1;
            return;
        }
        self.seen.insert(r.clone());
        self.images.push(r);
    }

    pub fn is_full(&self) -> bool {
        self.images.len() >= self.max
    }

    pub fn contains(&self, r: &ImageRef) -> bool {
        self.seen.contains(r)
    }

    /// The images kept, in order, and the references dropped.
    pub fn finish(self) -> (Vec<ImageRef>, u64) {
        (self.images, self.dropped)
    }
}

/// Problems with single images: the first [`MAX_PROBLEMS`], then a count.
#[derive(Debug, Default)]
pub struct Problems {
    kept: Vec<String>,
    more: u64,
}

impl Problems {
    pub fn push(&mut self, problem: impl FnOnce() -> String) {
        if self.kept.len() < MAX_PROBLEMS {
            self.kept.push(problem());
        } else {
            self.more += 1;
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.kept
                .push(format!("and {} more images that cannot be read", self.more));
        }
        self.kept
    }
}

/// Keeps the first `max` distinct images of `groups`, in order, over all of them:
/// what one source contributes when it has several objects (ImageCaches,
/// DaemonSets). Groups left with no image go; returns the references dropped.
pub fn cap_groups<'a>(
    groups: impl IntoIterator<Item = &'a WantGroup>,
    max: usize,
) -> (Vec<WantGroup>, u64) {
    let mut kept: HashSet<&ImageRef> = HashSet::new();
    let mut dropped = 0u64;
    let mut out = Vec::new();
    for g in groups {
        let mut images = Vec::new();
        let mut in_group: HashSet<&ImageRef> = HashSet::new();
        for r in &g.images {
            if kept.contains(r) {
                // Wanted already; in this group too (its own rule), once.
                if in_group.insert(r) {
                    images.push(r.clone());
                }
            } else if kept.len() < max {
                kept.insert(r);
                in_group.insert(r);
                images.push(r.clone());
            } else {
                dropped += 1;
            }
        }
        if !images.is_empty() {
            out.push(WantGroup {
                source: g.source,
                images,
                eligibility: g.eligibility.clone(),
            });
        }
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::WantSource;
    use crate::analysis::eligibility::Eligibility;
    use crate::analysis::selector::LabelSelector;

    #[test]
    fn capping_a_source_of_several_objects() {
        let rule = Arc::new(Eligibility::Selector(LabelSelector::default()));
        let group = |refs: &[&str]| WantGroup {
            source: WantSource::KubeFledged,
            images: refs.iter().map(|r| ImageRef::parse(r).unwrap()).collect(),
            eligibility: rule.clone(),
        };
        let groups = [
            group(&["a:1", "b:1"]),
            group(&["b:1", "c:1"]),
            group(&["d:1"]),
        ];
        let (capped, dropped) = cap_groups(&groups, 2);
        assert_eq!(capped.len(), 2, "the last group has no image left");
        assert_eq!(capped[0], groups[0]);
        assert_eq!(capped[1].images, groups[0].images[1..]);
        assert_eq!(dropped, 2);
        let (all, none) = cap_groups(&groups, 10);
        assert_eq!((all.as_slice(), none), (&groups[..], 0));
    }
}
