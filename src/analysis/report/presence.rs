//! Whether a node reports a wanted image, and how large the image is, each
//! answered without a pass over every entry per wanted image.

use super::wanted_images::{FastHash, WantedImage, WantedSet};
use crate::analysis::node::NodeSummary;
use crate::analysis::reference::{Digest, ImageRef};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The names of a node's image entries (or its runtime's), indexed to tell in
/// constant time whether a wanted image is among them: what
/// [`WantedImage::is_in`] over every entry would say, without a pass over the
/// entries per wanted image.
pub(super) struct Present<'a> {
    tagged: HashSet<(&'a str, &'a str), FastHash>,
    digested: HashSet<(&'a str, &'a Digest), FastHash>,
}

impl<'a> Present<'a> {
    pub(super) fn new<E: std::ops::Deref<Target = [ImageRef]> + 'a>(
        entries: &'a [E],
    ) -> Present<'a> {
        let mut p = Present {
            tagged: HashSet::default(),
            digested: HashSet::default(),
        };
        for name in entries.iter().flat_map(|e| e.iter()) {
            if let Some(t) = &name.tag {
                p.tagged.insert((&name.repo, t));
            }
            if let Some(d) = &name.digest {
                p.digested.insert((&name.repo, d));
            }
        }
        p
    }

    /// As [`ImageRef::matches`]: a reference with a canonical digest matches by
    /// digest, one with another digest string by that string or its tag; a tag
    /// reference by tag, or by any digest the same image carries where its tag is
    /// visible.
    pub(super) fn has(&self, w: &WantedImage) -> bool {
        let repo: &str = &w.reference.repo;
        match (&w.reference.digest, &w.reference.tag) {
            (Some(d), tag) => {
                self.digested.contains(&(repo, d))
                    || (!d.is_canonical()
                        && tag
                            .as_ref()
                            .is_some_and(|t| self.tagged.contains(&(repo, &**t))))
            }
            (None, Some(t)) => {
                self.tagged.contains(&(repo, &**t))
                    || w.digests.iter().any(|d| self.digested.contains(&(repo, d)))
            }
            (None, None) => false,
        }
    }
}

/// The size of each wanted image as nodes report it: the `sizeBytes` of the
/// entries that are the image on nodes of the same container runtime version and
/// architecture (runtimes count sizes differently). When those disagree (a tag
/// that moved, a runtime that counts otherwise), the size is unknown.
///
/// Kept as counts of what the entries say, so that a node's entries can be taken
/// out again when the node changes.
#[derive(Default)]
pub(super) struct SizeBook {
    /// By runtime and wanted image: how many entries give each size (`None`: a
    /// malformed size).
    known: HashMap<(Arc<str>, usize), SizeCounts, FastHash>,
}

/// How many entries give each size (`None`: a malformed size).
type SizeCounts = BTreeMap<Option<u64>, u32>;

/// What one node's entries say of the wanted images' sizes: (wanted image, size)
/// pairs, one per entry that is the image.
pub(super) fn node_sizes(set: &WantedSet, node: &NodeSummary) -> Vec<(usize, Option<u64>)> {
    if node.runtime.is_none() {
        return Vec::new();
    }
    let mut sizes: Vec<(usize, Option<u64>)> = node
        .relevant_images
        .iter()
        .flat_map(|entry| {
            let size = entry.size().get();
            set.images_in(entry).into_iter().map(move |i| (i, size))
        })
        .collect();
    // Kept for as long as the node is unchanged: no spare room.
    sizes.shrink_to_fit();
    sizes
}

impl SizeBook {
    /// Counts (`add`) or takes out what a node of `runtime` says (`sizes`, from
    /// [`node_sizes`]).
    pub(super) fn count(
        &mut self,
        runtime: Option<&Arc<str>>,
        sizes: &[(usize, Option<u64>)],
        add: bool,
    ) {
        let Some(runtime) = runtime else { return };
        for &(i, size) in sizes {
            let key = (runtime.clone(), i);
            let counts = self.known.entry(key.clone()).or_default();
            if add {
                *counts.entry(size).or_default() += 1;
            } else if let Some(n) = counts.get_mut(&size) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&size);
                }
            }
            if counts.is_empty() {
                self.known.remove(&key);
            }
        }
    }

    /// What the entries of wanted image `i` on nodes of `runtime` say: `None` when
    /// no node of the runtime reports the image; `Some(None)` when they disagree,
    /// or an entry's size is malformed.
    pub(super) fn seen(&self, runtime: &Arc<str>, i: usize) -> Option<Option<u64>> {
        let counts = self.known.get(&(runtime.clone(), i))?;
        let mut sizes = counts.keys();
        let first = *sizes.next()?;
        Some(first.filter(|_| sizes.next().is_none()))
    }

    /// The size of wanted image `i` (`w`) on nodes of `runtime`; when no node of
    /// that runtime reports the image, the size Nublado gives.
    pub(super) fn size(
        &self,
        runtime: Option<&Arc<str>>,
        i: usize,
        w: &WantedImage,
    ) -> Option<u64> {
        match runtime.and_then(|r| self.seen(r, i)) {
            None => w.nublado_size,
            Some(size) => size,
        }
    }
}
