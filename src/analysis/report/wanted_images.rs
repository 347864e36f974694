//! The wanted images the nodes are checked against: the configuration's exact
//! references, the tags its patterns select on the nodes and the sources' groups,
//! each with the eligibility rules it is wanted under.

use super::inputs::SourceState;
use crate::analysis::eligibility::Eligibility;
use crate::analysis::node::NodeSummary;
use crate::analysis::reference::{Digest, ImageRef};
use crate::analysis::verdict::WantedName;
use crate::analysis::wanted::{WantSource, Wanted, natural_cmp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The hasher of the lookups by image name.
pub(super) type FastHash = foldhash::fast::RandomState;

/// A wanted image, who wants it, where, and the digests it is known by.
pub(super) struct WantedImage {
    pub(super) reference: ImageRef,
    pub(super) sources: BTreeSet<WantSource>,
    /// Indexes into the distinct eligibility rules; eligible under any of them.
    pub(super) rules: Vec<usize>,
    /// For a tag reference: digests of entries that carry the tag on some node, so
    /// that an entry whose tag names were cut (5 names at most) still matches.
    pub(super) digests: HashSet<Digest>,
    /// Who wants it under which rule.
    pub(super) wanted_by: Vec<(WantSource, usize)>,
    /// Its size as Nublado knows it.
    pub(super) nublado_size: Option<u64>,
}

impl WantedImage {
    /// Whether one entry's names are this image: [`ImageRef::matches`], or for a
    /// tag reference a digest the image carries where its tag is visible.
    pub(super) fn is_in(&self, entry: &[ImageRef]) -> bool {
        entry.iter().any(|name| {
            self.reference.matches(name)
                || (self.reference.digest.is_none()
                    && name.repo == self.reference.repo
                    && name
                        .digest
                        .as_ref()
                        .is_some_and(|d| self.digests.contains(d)))
        })
    }
}

/// The distinct eligibility rules, each decided once per node.
#[derive(Default)]
pub(super) struct Rules(pub(super) Vec<Arc<Eligibility>>);

impl Rules {
    fn index(&mut self, rule: &Arc<Eligibility>) -> usize {
        match self
            .0
            .iter()
            .position(|r| Arc::ptr_eq(r, rule) || **r == **rule)
        {
            Some(i) => i,
            None => {
                self.0.push(rule.clone());
                self.0.len() - 1
            }
        }
    }
}

/// Adds `reference`, wanted by `source` on the nodes of rule `rule`.
fn want(
    images: &mut BTreeMap<ImageRef, WantedImage>,
    reference: &ImageRef,
    source: WantSource,
    rule: usize,
) {
    let w = images
        .entry(reference.clone())
        .or_insert_with(|| WantedImage {
            reference: reference.clone(),
            sources: BTreeSet::new(),
            rules: Vec::new(),
            digests: HashSet::new(),
            wanted_by: Vec::new(),
            nublado_size: None,
        });
    w.sources.insert(source);
    if !w.rules.contains(&rule) {
        w.rules.push(rule);
    }
    if !w.wanted_by.contains(&(source, rule)) {
        w.wanted_by.push((source, rule));
    }
}

/// The tags of `node` each of `wanted`'s patterns matches, as (pattern's place,
/// tag) pairs, distinct, in order; none when the node is not eligible under the
/// configuration's rule.
pub(super) fn node_pattern_tags(wanted: &Wanted, node: &NodeSummary) -> Vec<(usize, ImageRef)> {
    if wanted.patterns().is_empty() || wanted.eligibility().check(&node.facts()).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (p, pattern) in wanted.patterns().iter().enumerate() {
        let mut seen: BTreeSet<ImageRef> = BTreeSet::new();
        for name in node.relevant_images.iter().flat_map(|e| e.iter()) {
            if name
                .tagged_name()
                .is_some_and(|n| pattern.regex.is_match(&n))
            {
                seen.insert(ImageRef {
                    repo: name.repo.clone(),
                    tag: name.tag.clone(),
                    digest: None,
                });
            }
        }
        out.extend(seen.into_iter().map(|t| (p, t)));
    }
    out.shrink_to_fit();
    out
}

/// The tags `wanted`'s patterns select, from the tags each pattern matches on the
/// nodes eligible under its rule (`found`, one set per pattern): every match, or
/// only the `newest` greatest in natural order.
fn pattern_images<'a>(
    wanted: &Wanted,
    found: impl Fn(usize) -> Box<dyn Iterator<Item = &'a ImageRef> + 'a>,
) -> Vec<ImageRef> {
    let mut out = Vec::new();
    for (p, pattern) in wanted.patterns().iter().enumerate() {
        let seen = found(p).cloned();
        match pattern.newest {
            None => out.extend(seen),
            Some(n) => {
                let mut named: Vec<(String, ImageRef)> = seen.map(|r| (r.to_string(), r)).collect();
                named.sort_by(|a, b| natural_cmp(&b.0, &a.0));
                out.extend(named.into_iter().take(n).map(|(_, r)| r));
            }
        }
    }
    out
}

/// What the nodes are checked against: the wanted images with their names, the
/// distinct eligibility rules they are wanted under, and the rules that say why
/// a node eligible for nothing is not.
pub(super) struct WantedSet {
    /// Sorted by reference.
    pub(super) images: Vec<WantedImage>,
    /// Each wanted image's name, made once.
    pub(super) names: Vec<WantedName>,
    pub(super) rules: Rules,
    /// The configuration's rule.
    pub(super) config_rule: usize,
    /// Rules some wanted image uses, in order (the configuration's when none is):
    /// the first that rejects a node eligible for nothing says why.
    pub(super) explaining: Vec<usize>,
    /// The wanted tag references (no digest), by repository and tag.
    by_tag: HashMap<(Arc<str>, Arc<str>), usize, FastHash>,
    /// The wanted images by repository: the only ones a name of that repository
    /// can be.
    by_repo: HashMap<Arc<str>, Vec<usize>, FastHash>,
}

/// The wanted images: the configuration's exact references, the tags its
/// patterns select (from `found`, the tags each pattern matches on the nodes
/// eligible under the configuration's rule) and the sources' groups, each with
/// the size Nublado gives; with their names, the distinct rules and the rules
/// that explain. The digests tag references are found with on the nodes are
/// added apart ([`WantedSet::add_digests`]).
pub(super) fn wanted_set<'a>(
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
    found: impl Fn(usize) -> Box<dyn Iterator<Item = &'a ImageRef> + 'a>,
) -> WantedSet {
    // Every distinct rule, decided once per node. The configuration's comes first.
    let mut rules = Rules::default();
    let config_rule = rules.index(wanted.eligibility());
    let mut images: BTreeMap<ImageRef, WantedImage> = BTreeMap::new();
    for r in wanted.exact() {
        want(&mut images, r, WantSource::Config, config_rule);
    }
    for r in &pattern_images(wanted, found) {
        want(&mut images, r, WantSource::Pattern, config_rule);
    }
    for group in sources.values().flat_map(|s| &s.groups) {
        let rule = rules.index(&group.eligibility);
        for r in &group.images {
            want(&mut images, r, group.source, rule);
        }
    }
    for image in sources
        .values()
        .filter_map(|s| s.menu.as_deref())
        .flat_map(|m| &m.images)
    {
        if let Some(w) = images.get_mut(&image.image) {
            w.nublado_size = w.nublado_size.or(image.size);
        }
    }
    let wanted_images: Vec<WantedImage> = images.into_values().collect();
    // Each wanted image's name, made once.
    let names: Vec<WantedName> = wanted_images
        .iter()
        .map(|w| w.reference.to_string().into())
        .collect();
    // Rules some wanted image uses, in order (the configuration's when none is):
    // the first that rejects a node eligible for nothing says why.
    let mut used = vec![false; rules.0.len()];
    for &r in wanted_images.iter().flat_map(|w| &w.rules) {
        used[r] = true;
    }
    let mut explaining: Vec<usize> = (0..rules.0.len()).filter(|&i| used[i]).collect();
    if explaining.is_empty() {
        explaining.push(config_rule);
    }
    let mut by_repo: HashMap<Arc<str>, Vec<usize>, FastHash> = HashMap::default();
    for (i, w) in wanted_images.iter().enumerate() {
        by_repo.entry(w.reference.repo.clone()).or_default().push(i);
    }
    WantedSet {
        by_tag: wanted_images
            .iter()
            .enumerate()
            .filter(|(_, w)| w.reference.digest.is_none())
            .filter_map(|(i, w)| Some(((w.reference.repo.clone(), w.reference.tag.clone()?), i)))
            .collect(),
        by_repo,
        images: wanted_images,
        names,
        rules,
        config_rule,
        explaining,
    }
}

impl WantedSet {
    /// The digests of `node`'s entries that carry a wanted tag: (wanted image,
    /// digest) pairs, once for each time they are seen.
    pub(super) fn node_tag_digests(&self, node: &NodeSummary) -> Vec<(usize, Digest)> {
        let mut found = Vec::new();
        if self.by_tag.is_empty() {
            return found;
        }
        for entry in &node.relevant_images {
            for name in entry.iter() {
                let Some(tag) = &name.tag else { continue };
                let Some(&i) = self.by_tag.get(&(name.repo.clone(), tag.clone())) else {
                    continue;
                };
                found.extend(
                    entry
                        .iter()
                        .filter(|other| other.repo == name.repo)
                        .filter_map(|other| other.digest.clone())
                        .map(|d| (i, d)),
                );
            }
        }
        // Kept for as long as the node is unchanged: once each, no spare room.
        found.sort_unstable();
        found.dedup();
        found.shrink_to_fit();
        found
    }

    /// Adds to each wanted tag reference the digests of the entries that carry its
    /// tag on some node: (wanted image, digest) pairs.
    pub(super) fn add_digests<'a>(&mut self, found: impl IntoIterator<Item = (usize, &'a Digest)>) {
        for (i, d) in found {
            self.images[i].digests.insert(d.clone());
        }
    }

    /// The wanted images one entry (an image's names on a node) is: what
    /// [`WantedImage::is_in`] says of each, asked only of the images of the
    /// entry's repositories.
    pub(super) fn images_in(&self, entry: &[ImageRef]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for name in entry {
            for &i in self.by_repo.get(&name.repo).into_iter().flatten() {
                if !out.contains(&i) && self.images[i].is_in(entry) {
                    out.push(i);
                }
            }
        }
        out
    }
}
