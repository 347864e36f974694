//! Whether a node reports a wanted image, and how large the image is, each
//! answered without a pass over every entry per wanted image.

use super::wanted_images::{FastHash, WantedImage};
use crate::analysis::node::NodeSummary;
use crate::analysis::reference::{ImageRef, digest_is_canonical};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The names of a node's image entries (or its runtime's), indexed to tell in
/// constant time whether a wanted image is among them: what
/// [`WantedImage::is_in`] over every entry would say, without a pass over the
/// entries per wanted image.
pub(super) struct Present<'a> {
    tagged: HashSet<(&'a str, &'a str), FastHash>,
    digested: HashSet<(&'a str, &'a str), FastHash>,
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
                self.digested.contains(&(repo, &**d))
                    || (!digest_is_canonical(d)
                        && tag
                            .as_ref()
                            .is_some_and(|t| self.tagged.contains(&(repo, &**t))))
            }
            (None, Some(t)) => {
                self.tagged.contains(&(repo, &**t))
                    || w.digests
                        .iter()
                        .any(|d| self.digested.contains(&(repo, &**d)))
            }
            (None, None) => false,
        }
    }
}

/// The size of each wanted image as nodes report it, found when first asked for:
/// the `sizeBytes` of the entries that are the image on nodes of the same
/// container runtime version and architecture (runtimes count sizes differently).
/// When those disagree (a tag that moved, a runtime that counts otherwise), the
/// size is unknown.
pub(super) struct SizeBook<'a> {
    nodes: &'a [&'a NodeSummary],
    /// `None`: no node of the runtime reports the image; `Some(None)`: they
    /// disagree, or an entry's size is malformed.
    known: HashMap<(Arc<str>, usize), Option<Option<u64>>>,
}

impl<'a> SizeBook<'a> {
    pub(super) fn new(nodes: &'a [&'a NodeSummary]) -> SizeBook<'a> {
        SizeBook {
            nodes,
            known: HashMap::new(),
        }
    }

    /// The size of wanted image `i` (`w`) on nodes of `runtime`; when no node of
    /// that runtime reports the image, the size Nublado gives.
    pub(super) fn size(
        &mut self,
        runtime: Option<&Arc<str>>,
        i: usize,
        w: &WantedImage,
    ) -> Option<u64> {
        let Some(runtime) = runtime else {
            return w.nublado_size;
        };
        let nodes = self.nodes;
        let seen = *self.known.entry((runtime.clone(), i)).or_insert_with(|| {
            let mut sizes = nodes
                .iter()
                .filter(|n| n.runtime.as_ref() == Some(runtime))
                .flat_map(|n| n.relevant_images.iter().zip(&n.relevant_sizes))
                .filter(|(entry, _)| w.is_in(entry))
                .map(|(_, size)| *size);
            let first = sizes.next()?;
            Some(first.filter(|f| sizes.all(|s| s == Some(*f))))
        });
        match seen {
            None => w.nublado_size,
            Some(size) => size,
        }
    }
}
