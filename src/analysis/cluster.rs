//! All node summaries -> the report that `/metrics` and `check` both show.

use super::eligibility::{Eligibility, NotEligible};
use super::kubelet_settings::{ImageFs, KubeletSettings};
use super::menu::{Menu, MenuReport, menu_report};
use super::node::NodeSummary;
use super::reference::{ImageRef, digest_is_canonical};
use super::runtime::RuntimeSummary;
pub use super::verdict::{MissingImage, MissingState};
use super::wanted::{WantGroup, WantSource, Wanted, natural_cmp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The kubelet's default `nodeStatusMaxImages`.
pub const KUBELET_DEFAULT_MAX_IMAGES: i64 = 50;

/// Where the cap in force comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapSource {
    /// Read from the kubelet's configuration (configz).
    Kubelet,
    /// The configured default (the kubelet's own, 50, unless changed).
    #[default]
    Default,
    /// The node reports more images than the default, so its kubelet must run with
    /// a larger cap or none: treated as unlimited.
    Inferred,
}

/// Share of the cap from which a node counts as near it.
pub const NEAR_CAP_RATIO: f64 = 0.9;

/// One word for a node, most urgent first: what the status page, `check`'s table
/// and anything else that ranks nodes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Reports as many images as its cap: images may be hidden.
    AtCap,
    /// At [`NEAR_CAP_RATIO`] of a positive cap or more.
    NearCap,
    /// Not eligible for prepulling (outside the selector, or cordoned).
    NotEligible,
    Ok,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::AtCap => "at cap",
            NodeStatus::NearCap => "near cap",
            NodeStatus::NotEligible => "not eligible",
            NodeStatus::Ok => "ok",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub name: String,
    /// Entries the node reports in `status.images`.
    #[serde(rename = "images")]
    pub image_count: u32,
    /// The cap in force; -1 is unlimited.
    pub max_images: i64,
    pub max_images_source: CapSource,
    /// images / cap; 0 when unlimited.
    pub cap_ratio: f64,
    pub at_cap: bool,
    pub image_size_bytes: u64,
    pub ephemeral_storage_capacity_bytes: Option<u64>,
    pub ephemeral_storage_allocatable_bytes: Option<u64>,
    pub recommended_max_images: Option<u64>,
    /// Eligible for at least one wanted image (with none wanted: under the
    /// configuration's rule).
    pub eligible: bool,
    /// Why not, when not eligible: `cordoned`, `selector`, `taint k=v:effect`,
    /// or the source's own comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_eligible_reason: Option<String>,
    /// Wanted images the node is eligible for and does not report.
    pub missing_images: Vec<String>,
    /// Set when `missing_images` is not empty: the most actionable of the images'
    /// states (`absent`, then `unlistable`, `hidden`, `unverifiable`).
    pub missing_state: Option<MissingState>,
    /// `missing_images`, each with its own state.
    pub missing: Vec<MissingImage>,
    pub invalid_fields: u32,
    /// Images the runtime holds, from a fresh node-agent report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_images: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_image_bytes: Option<u64>,
    /// Runtime images the API does not report (0 under the cap); with a fresh
    /// agent report only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_images: Option<u32>,
    /// Whether the node has a fresh agent report; `None` when no agents are
    /// configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_up: Option<bool>,
    /// The image filesystem, from the kubelet's Summary API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs_used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs_capacity_bytes: Option<u64>,
    /// The kubelet's image GC thresholds (configz), as ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_high_threshold_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_low_threshold_ratio: Option<f64>,
    /// The counts of the node agent's pruning plan, when it prunes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<super::plan::PlanSummary>,
    /// The wanted images this node is eligible for, present or not: indexes into
    /// [`Report::images`]. What the node agent's pruning must never remove.
    #[serde(skip)]
    pub wanted: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub image: String,
    /// Who wants it.
    pub sources: Vec<WantSource>,
    /// Eligible nodes that report the image.
    pub nodes: u32,
    /// Nodes eligible for this image.
    pub eligible_nodes: u32,
}

/// A source of wanted images and how its last read went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub source: WantSource,
    /// Wanted images it contributes.
    pub images: u32,
    /// Its last read succeeded (always, for the configuration).
    pub up: bool,
    /// Unix time of its last successful read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_seconds: Option<f64>,
    /// Image references its last successful read listed past the cap on the
    /// images one source may contribute (`MAX_IMAGES_PER_SOURCE`), not wanted.
    pub dropped_images: u64,
    /// (eligible node, wanted image) pairs at the node's cap where the image is
    /// `hidden` or `unlistable`: each a pull the prepuller schedules again on every
    /// pass, for nothing.
    pub loop_pairs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub nodes: Vec<NodeReport>,
    pub images: Vec<ImageReport>,
    /// Nodes eligible for at least one wanted image.
    pub eligible_nodes: u32,
    pub sources: Vec<SourceReport>,
    /// Nublado's spawner menu; only with a Nublado source that has answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub menu: Option<MenuReport>,
}

impl NodeReport {
    /// Sets the missing images: `missing`, and from it `missing_images` and the
    /// node's `missing_state`, the most actionable of the images' states.
    pub fn set_missing(&mut self, missing: Vec<MissingImage>) {
        self.missing_images = missing.iter().map(|m| m.image.clone()).collect();
        self.missing_state = [
            MissingState::Absent,
            MissingState::Unlistable,
            MissingState::Hidden,
            MissingState::Unverifiable,
        ]
        .into_iter()
        .find(|s| missing.iter().any(|m| m.state == *s));
        self.missing = missing;
    }

    pub fn status(&self) -> NodeStatus {
        if self.at_cap {
            NodeStatus::AtCap
        } else if self.max_images > 0 && self.cap_ratio >= NEAR_CAP_RATIO {
            NodeStatus::NearCap
        } else if !self.eligible {
            NodeStatus::NotEligible
        } else {
            NodeStatus::Ok
        }
    }
}

impl Report {
    /// Nodes at their cap, or wanted images missing: what `check` exits 1 for.
    pub fn has_findings(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.at_cap || !n.missing_images.is_empty())
    }
}

/// The cap in force for a node reporting `image_count` entries: the kubelet's own
/// when known, else the default, unless the node reports more than the default.
pub fn cap_in_force(
    image_count: u32,
    kubelet: Option<i64>,
    default_max_images: i64,
) -> (i64, CapSource) {
    if let Some(cap) = kubelet {
        (cap, CapSource::Kubelet)
    } else if default_max_images >= 0 && i64::from(image_count) > default_max_images {
        (-1, CapSource::Inferred)
    } else {
        (default_max_images, CapSource::Default)
    }
}

/// The operators' rule of thumb: a third of the ephemeral storage in GB (10^9 bytes).
pub fn recommended_max_images(capacity_bytes: u64) -> u64 {
    capacity_bytes.div_ceil(3_000_000_000)
}

/// A wanted image, who wants it, where, and the digests it is known by.
struct WantedImage {
    reference: ImageRef,
    sources: BTreeSet<WantSource>,
    /// Indexes into the distinct eligibility rules; eligible under any of them.
    rules: Vec<usize>,
    /// For a tag reference: digests of entries that carry the tag on some node, so
    /// that an entry whose tag names were cut (5 names at most) still matches.
    digests: HashSet<Arc<str>>,
    /// Who wants it under which rule.
    wanted_by: Vec<(WantSource, usize)>,
    /// Its size as Nublado knows it.
    nublado_size: Option<u64>,
}

impl WantedImage {
    /// Whether one entry's names are this image: [`ImageRef::matches`], or for a
    /// tag reference a digest the image carries where its tag is visible.
    fn is_in(&self, entry: &[ImageRef]) -> bool {
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

/// The names of a node's image entries (or its runtime's), indexed to tell in
/// constant time whether a wanted image is among them: what
/// [`WantedImage::is_in`] over every entry would say, without a pass over the
/// entries per wanted image.
struct Present<'a> {
    tagged: HashSet<(&'a str, &'a str), FastHash>,
    digested: HashSet<(&'a str, &'a str), FastHash>,
}

type FastHash = foldhash::fast::RandomState;

impl<'a> Present<'a> {
    fn new<E: std::ops::Deref<Target = [ImageRef]> + 'a>(entries: &'a [E]) -> Present<'a> {
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
    fn has(&self, w: &WantedImage) -> bool {
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
struct SizeBook<'a> {
    nodes: &'a [&'a NodeSummary],
    /// `None`: no node of the runtime reports the image; `Some(None)`: they
    /// disagree, or an entry's size is malformed.
    known: std::collections::HashMap<(Arc<str>, usize), Option<Option<u64>>>,
}

impl<'a> SizeBook<'a> {
    fn new(nodes: &'a [&'a NodeSummary]) -> SizeBook<'a> {
        SizeBook {
            nodes,
            known: std::collections::HashMap::new(),
        }
    }

    /// The size of wanted image `i` (`w`) on nodes of `runtime`; when no node of
    /// that runtime reports the image, the size Nublado gives.
    fn size(&mut self, runtime: Option<&Arc<str>>, i: usize, w: &WantedImage) -> Option<u64> {
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

/// What is known of a node besides its Node object, each part from its own
/// source: its kubelet's settings (configz), its image filesystem (the Summary
/// API) and what its runtime holds (a fresh node-agent report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeExtra {
    pub kubelet: Option<KubeletSettings>,
    pub image_fs: Option<ImageFs>,
    pub runtime: Option<Arc<RuntimeSummary>>,
}

impl NodeExtra {
    pub fn is_empty(&self) -> bool {
        *self == NodeExtra::default()
    }
}

/// [`NodeExtra`] by node name.
pub type NodeExtras = std::collections::HashMap<String, NodeExtra>;

/// How to read the inputs: the cap assumed when a kubelet's is unknown, and
/// whether node agents are expected (then a node without a fresh report says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assumptions {
    pub default_max_images: i64,
    pub agents: bool,
}

/// What the sources of wanted images provide: their groups, and how their last
/// read went (`up`, Unix time of the last success).
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    pub groups: Vec<WantGroup>,
    pub up: bool,
    pub last_success_seconds: Option<f64>,
    /// References dropped past the per-source cap in the last successful read.
    pub dropped_images: u64,
    /// Nublado's spawner menu, from its last successful read.
    pub menu: Option<Arc<Menu>>,
}

/// The distinct eligibility rules, each decided once per node.
#[derive(Default)]
struct Rules(Vec<Arc<Eligibility>>);

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

/// The tags `wanted`'s patterns select on the nodes eligible under its rule: every
/// match, or only the `newest` greatest in natural order.
fn pattern_images(wanted: &Wanted, nodes: &[&NodeSummary], config_ok: &[bool]) -> Vec<ImageRef> {
    let mut out = Vec::new();
    for pattern in wanted.patterns() {
        let mut seen: BTreeSet<ImageRef> = BTreeSet::new();
        for (node, _) in nodes.iter().zip(config_ok).filter(|(_, ok)| **ok) {
            for name in node.relevant_images.iter().flatten() {
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
        }
        match pattern.newest {
            None => out.extend(seen),
            Some(n) => {
                let mut named: Vec<(String, ImageRef)> =
                    seen.into_iter().map(|r| (r.to_string(), r)).collect();
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
struct WantedSet {
    /// Sorted by reference.
    images: Vec<WantedImage>,
    /// Each wanted image's name, made once.
    names: Vec<String>,
    rules: Rules,
    /// The configuration's rule.
    config_rule: usize,
    /// Rules some wanted image uses, in order (the configuration's when none is):
    /// the first that rejects a node eligible for nothing says why.
    explaining: Vec<usize>,
}

/// What one node adds to the per-image and per-source counts, besides the
/// images it is eligible for ([`NodeReport::wanted`]).
#[derive(Default)]
struct NodeTally {
    /// The wanted images the node is eligible for and reports: indexes into
    /// [`WantedSet::images`].
    present: Vec<usize>,
    /// Its (node, wanted image) pairs of the prepull loop, by source.
    loop_pairs: BTreeMap<WantSource, u32>,
}

/// The counts over all nodes, per wanted image and per source.
struct Counts {
    /// Eligible nodes that report each wanted image.
    present_on: Vec<u32>,
    /// Nodes eligible for each wanted image.
    eligible_on: Vec<u32>,
    /// Nodes eligible for at least one wanted image.
    eligible_nodes: u32,
    /// (eligible node, wanted image) pairs of the prepull loop, by source.
    loop_pairs: BTreeMap<WantSource, u32>,
}

impl Counts {
    fn new(images: usize) -> Counts {
        Counts {
            present_on: vec![0; images],
            eligible_on: vec![0; images],
            eligible_nodes: 0,
            loop_pairs: BTreeMap::new(),
        }
    }

    /// Adds one node: its report and what [`node_report`] tallied on it.
    fn add(&mut self, report: &NodeReport, tally: NodeTally) {
        for &i in &report.wanted {
            self.eligible_on[i as usize] += 1;
        }
        for i in tally.present {
            self.present_on[i] += 1;
        }
        for (source, pairs) in tally.loop_pairs {
            *self.loop_pairs.entry(source).or_default() += pairs;
        }
        self.eligible_nodes += u32::from(report.eligible);
    }
}

/// One node as its wanted images are checked on it: every rule decided on it,
/// whether its cap hides images, and what its runtime holds.
struct NodeCheck<'a> {
    node: &'a NodeSummary,
    decided: Vec<Result<(), NotEligible>>,
    /// At its cap, or a cap of 0.
    saturated: bool,
    runtime: Option<&'a RuntimeSummary>,
}

/// The analysis of all nodes, sorted by name; images sorted by reference.
pub fn analyze<'a>(
    summaries: impl IntoIterator<Item = &'a NodeSummary>,
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
    assume: Assumptions,
    extras: &NodeExtras,
) -> Report {
    let no_extra = NodeExtra::default();
    let mut nodes: Vec<&NodeSummary> = summaries.into_iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let set = wanted_set(&nodes, wanted, sources);
    let mut sizes = SizeBook::new(&nodes);
    let mut counts = Counts::new(set.images.len());
    let mut reports = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let extra = extras.get(&node.name).unwrap_or(&no_extra);
        let (report, tally) = node_report(node, &set, extra, assume, &mut sizes);
        counts.add(&report, tally);
        reports.push(report);
    }
    let images = image_reports(&set, &counts);
    let source_reports = source_reports(&set, wanted, sources, &counts.loop_pairs);
    let menu = sources
        .get(&WantSource::Nublado)
        .and_then(|s| s.menu.as_deref())
        .map(|m| {
            let missing: Vec<(&str, &[MissingImage])> = reports
                .iter()
                .map(|n| (n.name.as_str(), n.missing.as_slice()))
                .collect();
            menu_report(m, &missing)
        });
    Report {
        nodes: reports,
        images,
        eligible_nodes: counts.eligible_nodes,
        sources: source_reports,
        menu,
    }
}

/// The wanted images: the configuration's exact references, the tags its
/// patterns select on `nodes` and the sources' groups, each with the size Nublado
/// gives and the digests its tag is found with on `nodes`; with their names, the
/// distinct rules and the rules that explain.
fn wanted_set(
    nodes: &[&NodeSummary],
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
) -> WantedSet {
    // Every distinct rule, decided once per node. The configuration's comes first.
    let mut rules = Rules::default();
    let config_rule = rules.index(wanted.eligibility());
    let config_ok: Vec<bool> = nodes
        .iter()
        .map(|n| wanted.eligibility().check(&n.facts()).is_ok())
        .collect();

    let mut images: BTreeMap<ImageRef, WantedImage> = BTreeMap::new();
    for r in wanted.exact() {
        want(&mut images, r, WantSource::Config, config_rule);
    }
    let from_patterns = pattern_images(wanted, nodes, &config_ok);
    for r in &from_patterns {
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
    let mut wanted_images: Vec<WantedImage> = images.into_values().collect();
    add_tag_digests(&mut wanted_images, nodes);
    // Each wanted image's name, made once.
    let names: Vec<String> = wanted_images
        .iter()
        .map(|w| w.reference.to_string())
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
    WantedSet {
        images: wanted_images,
        names,
        rules,
        config_rule,
        explaining,
    }
}

/// Adds to each wanted tag reference the digests of the entries that carry its
/// tag on some node.
fn add_tag_digests(wanted_images: &mut [WantedImage], nodes: &[&NodeSummary]) {
    // The digests of the entries that carry a wanted tag, in one pass over the
    // entries: (wanted image, digest) pairs, then added.
    let mut found = Vec::new();
    {
        let by_tag: HashMap<(&str, &str), usize, FastHash> = wanted_images
            .iter()
            .enumerate()
            .filter(|(_, w)| w.reference.digest.is_none())
            .filter_map(|(i, w)| Some(((&*w.reference.repo, &**w.reference.tag.as_ref()?), i)))
            .collect();
        for entry in nodes.iter().flat_map(|n| &n.relevant_images) {
            for name in entry.iter() {
                let Some(tag) = &name.tag else { continue };
                let Some(&i) = by_tag.get(&(&*name.repo, &**tag)) else {
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
    }
    for (i, d) in found {
        wanted_images[i].digests.insert(d);
    }
}

/// One node's report: its cap in force, whether it is eligible (and why not),
/// the wanted images it is eligible for and those it does not report, each with
/// its state; and what the node adds to the per-image and per-source counts.
fn node_report(
    node: &NodeSummary,
    set: &WantedSet,
    extra: &NodeExtra,
    assume: Assumptions,
    sizes: &mut SizeBook,
) -> (NodeReport, NodeTally) {
    let facts = node.facts();
    let runtime = extra.runtime.as_deref();
    let (max_images, max_images_source) = cap_in_force(
        node.image_count,
        extra.kubelet.map(|k| k.max_images),
        assume.default_max_images,
    );
    let at_cap = max_images > 0 && i64::from(node.image_count) >= max_images;
    // A cap of 0 hides every image: nothing can be verified either.
    let saturated = at_cap || max_images == 0;
    let cap_ratio = if max_images > 0 {
        f64::from(node.image_count) / max_images as f64
    } else {
        0.0
    };
    let check = NodeCheck {
        node,
        decided: set.rules.0.iter().map(|r| r.check(&facts)).collect(),
        saturated,
        runtime,
    };
    let (wanted_here, missing, tally) = wanted_on(&check, set, sizes);
    let decided = &check.decided;
    let eligible_for_any = !wanted_here.is_empty();
    let eligible = eligible_for_any || (set.images.is_empty() && decided[set.config_rule].is_ok());
    let not_eligible_reason = (!eligible)
        .then(|| {
            set.explaining
                .iter()
                .find_map(|&r| decided[r].as_ref().err())
                .map(ToString::to_string)
        })
        .flatten();
    let hidden_images = runtime.map(|rt| {
        if saturated {
            rt.image_count.saturating_sub(node.image_count)
        } else {
            0
        }
    });
    let mut report = NodeReport {
        name: node.name.clone(),
        image_count: node.image_count,
        max_images,
        max_images_source,
        cap_ratio,
        at_cap,
        image_size_bytes: node.image_size_bytes,
        ephemeral_storage_capacity_bytes: node.ephemeral_storage_capacity_bytes,
        ephemeral_storage_allocatable_bytes: node.ephemeral_storage_allocatable_bytes,
        recommended_max_images: node
            .ephemeral_storage_capacity_bytes
            .map(recommended_max_images),
        eligible,
        not_eligible_reason,
        missing_images: Vec::new(),
        missing_state: None,
        missing: Vec::new(),
        invalid_fields: node.problems.len() as u32,
        runtime_images: runtime.map(|rt| rt.image_count),
        runtime_image_bytes: runtime.map(|rt| rt.image_bytes),
        hidden_images,
        agent_up: assume.agents.then_some(runtime.is_some()),
        image_fs_used_bytes: extra.image_fs.and_then(|f| f.used_bytes),
        image_fs_capacity_bytes: extra.image_fs.and_then(|f| f.capacity_bytes),
        image_gc_high_threshold_ratio: extra.kubelet.and_then(|k| k.image_gc_high_ratio),
        image_gc_low_threshold_ratio: extra.kubelet.and_then(|k| k.image_gc_low_ratio),
        prune: runtime.and_then(|rt| rt.prune.clone()),
        wanted: wanted_here,
    };
    report.set_missing(missing);
    (report, tally)
}

/// The wanted images `check`'s node is eligible for (indexes into
/// [`WantedSet::images`]), those of them it does not report, each with its state,
/// and what it adds to the counts: the images it reports, its loop pairs.
fn wanted_on(
    check: &NodeCheck,
    set: &WantedSet,
    sizes: &mut SizeBook,
) -> (Vec<u32>, Vec<MissingImage>, NodeTally) {
    let node = check.node;
    let mut tally = NodeTally::default();
    let mut missing = Vec::new();
    let mut wanted_here = Vec::new();
    let present = Present::new(&node.relevant_images);
    let in_runtime = check
        .runtime
        .filter(|_| check.saturated)
        .map(|rt| Present::new(&rt.relevant_images));
    for (i, w) in set.images.iter().enumerate() {
        if !w.rules.iter().any(|&r| check.decided[r].is_ok()) {
            continue;
        }
        wanted_here.push(i as u32);
        if present.has(w) {
            tally.present.push(i);
            continue;
        }
        let state = if check.saturated {
            let held = in_runtime.as_ref().map(|rt| rt.has(w));
            let size = sizes.size(node.runtime.as_ref(), i, w);
            MissingState::decide(true, held, size, node.smallest_image_bytes)
        } else {
            MissingState::Absent
        };
        if matches!(state, MissingState::Hidden | MissingState::Unlistable) {
            count_loop(&mut tally.loop_pairs, w, &check.decided);
        }
        missing.push(MissingImage {
            image: set.names[i].clone(),
            state,
        });
    }
    (wanted_here, missing, tally)
}

/// One report per wanted image: who wants it, the nodes eligible for it and
/// those of them that report it.
fn image_reports(set: &WantedSet, counts: &Counts) -> Vec<ImageReport> {
    set.images
        .iter()
        .enumerate()
        .map(|(i, w)| ImageReport {
            image: set.names[i].clone(),
            sources: w.sources.iter().copied().collect(),
            nodes: counts.present_on[i],
            eligible_nodes: counts.eligible_on[i],
        })
        .collect()
}

/// One report per source of wanted images: the configuration's exact references
/// and its patterns when it has any, then each of `sources`, with the wanted
/// images it contributes and its loop pairs.
fn source_reports(
    set: &WantedSet,
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
    loop_pairs: &BTreeMap<WantSource, u32>,
) -> Vec<SourceReport> {
    let count = |source: WantSource| {
        set.images
            .iter()
            .filter(|w| w.sources.contains(&source))
            .count() as u32
    };
    let mut source_reports = Vec::new();
    if !wanted.exact().is_empty() {
        source_reports.push(SourceReport {
            source: WantSource::Config,
            images: count(WantSource::Config),
            up: true,
            last_success_seconds: None,
            dropped_images: 0,
            loop_pairs: loop_pairs.get(&WantSource::Config).copied().unwrap_or(0),
        });
    }
    if !wanted.patterns().is_empty() {
        source_reports.push(SourceReport {
            source: WantSource::Pattern,
            images: count(WantSource::Pattern),
            up: true,
            last_success_seconds: None,
            dropped_images: 0,
            loop_pairs: loop_pairs.get(&WantSource::Pattern).copied().unwrap_or(0),
        });
    }
    for (&source, state) in sources {
        source_reports.push(SourceReport {
            source,
            images: count(source),
            up: state.up,
            last_success_seconds: state.last_success_seconds,
            dropped_images: state.dropped_images,
            loop_pairs: loop_pairs.get(&source).copied().unwrap_or(0),
        });
    }
    source_reports
}

/// Counts a (node, image) pair of the prepull loop for each source that wants the
/// image on that node.
fn count_loop(
    loop_pairs: &mut BTreeMap<WantSource, u32>,
    w: &WantedImage,
    decided: &[Result<(), NotEligible>],
) {
    let mut counted: Vec<WantSource> = Vec::new();
    for &(source, rule) in &w.wanted_by {
        if decided[rule].is_ok() && !counted.contains(&source) {
            counted.push(source);
            *loop_pairs.entry(source).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Relevance;
    use crate::analysis::node::{NodeView, summarize};
    use crate::analysis::wanted::tests::wanted;
    use serde_json::json;

    const LAB: &str = "ghcr.io/x/lab";

    fn d(seed: u8) -> String {
        format!("sha256:{}", format!("{seed:02x}").repeat(32))
    }

    fn summary(
        name: &str,
        labels: serde_json::Value,
        images: Vec<Vec<String>>,
        w: &Wanted,
    ) -> NodeSummary {
        let images: Vec<_> = images
            .into_iter()
            .map(|names| json!({"names": names, "sizeBytes": 1000}))
            .collect();
        let v: NodeView = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"images": images, "capacity": {"ephemeral-storage": "1T"}}
        }))
        .unwrap();
        summarize(&v, &Relevance::new(w, [])).unwrap()
    }

    fn none() -> BTreeMap<WantSource, SourceState> {
        BTreeMap::new()
    }

    fn assume(default_max_images: i64) -> Assumptions {
        Assumptions {
            default_max_images,
            agents: false,
        }
    }

    fn filler(n: usize) -> Vec<Vec<String>> {
        (0..n)
            .map(|i| vec![format!("docker.io/library/app{i}:1")])
            .collect()
    }

    #[test]
    fn cap_rules() {
        assert_eq!(cap_in_force(50, None, 50), (50, CapSource::Default));
        assert_eq!(cap_in_force(49, None, 50), (50, CapSource::Default));
        assert_eq!(cap_in_force(51, None, 50), (-1, CapSource::Inferred));
        assert_eq!(cap_in_force(500, None, -1), (-1, CapSource::Default));
        assert_eq!(cap_in_force(100, Some(100), 50), (100, CapSource::Kubelet));
        assert_eq!(cap_in_force(30, Some(-1), 50), (-1, CapSource::Kubelet));
        assert_eq!(recommended_max_images(1_000_000_000_000), 334);
        assert_eq!(recommended_max_images(3_000_000_000), 1);
        assert_eq!(recommended_max_images(3_000_000_001), 2);
        assert_eq!(recommended_max_images(0), 0);
    }

    #[test]
    fn at_cap_near_and_unlimited_nodes() {
        let w = wanted(&[], &[], &[]);
        let s = [
            summary("full", json!({}), filler(50), &w),
            summary("near", json!({}), filler(49), &w),
            summary("big", json!({}), filler(120), &w),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
        let full = by("full");
        assert!(full.at_cap);
        assert_eq!(full.status(), NodeStatus::AtCap);
        assert_eq!(by("near").status(), NodeStatus::NearCap);
        assert_eq!(
            by("big").status(),
            NodeStatus::Ok,
            "unlimited is never near"
        );
        assert_eq!((full.max_images, full.cap_ratio), (50, 1.0));
        let near = by("near");
        assert!(!near.at_cap);
        assert_eq!(near.cap_ratio, 0.98);
        let big = by("big");
        assert!(!big.at_cap);
        assert_eq!((big.max_images, big.cap_ratio), (-1, 0.0));
        assert_eq!(big.max_images_source, CapSource::Inferred);
        assert_eq!(full.recommended_max_images, Some(334));
        assert_eq!(full.image_size_bytes, 50_000);
        assert!(r.has_findings());
        assert_eq!(
            r.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["big", "full", "near"]
        );
    }

    #[test]
    fn missing_is_absent_under_the_cap_and_unverifiable_at_it() {
        let w = wanted(&["busybox:1.36"], &[], &[("pool", "lab")]);
        let lab = json!({"pool": "lab"});
        let s = [
            summary("under", lab.clone(), filler(10), &w),
            summary("full", lab.clone(), filler(50), &w),
            summary(
                "has",
                lab.clone(),
                vec![vec!["docker.io/library/busybox:1.36".into()]],
                &w,
            ),
            summary("other-pool", json!({"pool": "gpu"}), filler(3), &w),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(
            by("under").missing_images,
            ["docker.io/library/busybox:1.36"]
        );
        assert_eq!(by("under").missing_state, Some(MissingState::Absent));
        assert_eq!(by("full").missing_state, Some(MissingState::Unverifiable));
        assert!(by("has").missing_images.is_empty() && by("has").missing_state.is_none());
        assert!(
            by("other-pool").missing_images.is_empty(),
            "not eligible, nothing wanted"
        );
        assert_eq!(r.eligible_nodes, 3);
        assert_eq!(
            r.images,
            [ImageReport {
                image: "docker.io/library/busybox:1.36".into(),
                sources: vec![WantSource::Config],
                nodes: 1,
                eligible_nodes: 3
            }]
        );
    }

    #[test]
    fn patterns_discover_images_on_eligible_nodes_only() {
        let w = wanted(&[], &["^ghcr\\.io/x/lab:w_"], &[("pool", "lab")]);
        let lab = json!({"pool": "lab"});
        let s = [
            summary("a", lab.clone(), vec![vec![format!("{LAB}:w_1")]], &w),
            summary(
                "b",
                lab.clone(),
                vec![vec![format!("{LAB}:w_2")], vec![format!("{LAB}:r_1")]],
                &w,
            ),
            summary(
                "gpu",
                json!({"pool": "gpu"}),
                vec![vec![format!("{LAB}:w_3")]],
                &w,
            ),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let images: Vec<_> = r
            .images
            .iter()
            .map(|i| (i.image.as_str(), i.nodes))
            .collect();
        assert_eq!(images, [("ghcr.io/x/lab:w_1", 1), ("ghcr.io/x/lab:w_2", 1)]);
        assert_eq!(r.nodes[0].missing_images, ["ghcr.io/x/lab:w_2"]);
        assert_eq!(r.nodes[1].missing_images, ["ghcr.io/x/lab:w_1"]);
    }

    #[test]
    fn an_entry_cut_to_five_digests_matches_by_digest() {
        let w = wanted(&[&format!("{LAB}:w_1")], &[], &[]);
        let full_entry = vec![format!("{LAB}@{}", d(1)), format!("{LAB}:w_1")];
        // The kubelet keeps 5 names, digests first: here the tag was cut.
        let cut_entry: Vec<String> = (1..=5).map(|i| format!("{LAB}@{}", d(i))).collect();
        let s = [
            summary("tagged", json!({}), vec![full_entry], &w),
            summary("cut", json!({}), vec![cut_entry], &w),
            summary(
                "other-digest",
                json!({}),
                vec![vec![format!("{LAB}@{}", d(9))]],
                &w,
            ),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
        assert!(by("tagged").missing_images.is_empty());
        assert!(
            by("cut").missing_images.is_empty(),
            "found through the shared digest"
        );
        assert_eq!(by("other-digest").missing_images, [format!("{LAB}:w_1")]);
        assert_eq!(r.images[0].nodes, 2);
    }

    #[test]
    fn digest_references_match_by_digest_only() {
        let both = format!("{LAB}:w_1@{}", d(1));
        let w = wanted(&[&both], &[], &[]);
        let s = [
            summary(
                "digest",
                json!({}),
                vec![vec![format!("{LAB}@{}", d(1))]],
                &w,
            ),
            summary("tag-only", json!({}), vec![vec![format!("{LAB}:w_1")]], &w),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        assert!(r.nodes[0].missing_images.is_empty());
        assert_eq!(r.nodes[1].missing_images, [both]);
    }

    #[test]
    fn a_known_kubelet_cap_wins_over_the_default_and_the_inference() {
        let w = wanted(&[], &[], &[]);
        let s = [
            summary("raised", json!({}), filler(100), &w),
            summary("lowered", json!({}), filler(20), &w),
        ];
        let settings = |cap| NodeExtra {
            kubelet: Some(KubeletSettings {
                max_images: cap,
                image_gc_high_ratio: Some(0.85),
                image_gc_low_ratio: Some(0.8),
            }),
            ..NodeExtra::default()
        };
        let extras = NodeExtras::from([
            ("raised".to_string(), settings(100)),
            ("lowered".to_string(), settings(20)),
        ]);
        let r = analyze(&s, &w, &none(), assume(50), &extras);
        assert_eq!(r.nodes[0].image_gc_high_threshold_ratio, Some(0.85));
        assert_eq!(r.nodes[0].image_gc_low_threshold_ratio, Some(0.8));
        let lowered = &r.nodes[0];
        assert_eq!(
            (
                lowered.max_images,
                lowered.at_cap,
                lowered.max_images_source
            ),
            (20, true, CapSource::Kubelet)
        );
        let raised = &r.nodes[1];
        assert_eq!(
            (raised.max_images, raised.at_cap, raised.cap_ratio),
            (100, true, 1.0)
        );
    }

    #[test]
    fn cordoned_nodes_are_not_counted() {
        let w = wanted(&["busybox:1"], &[], &[]);
        let mut s = summary("cordoned", json!({}), filler(1), &w);
        s.unschedulable = true;
        let r = analyze([&s], &w, &none(), assume(50), &NodeExtras::new());
        assert_eq!(r.eligible_nodes, 0);
        assert!(r.nodes[0].missing_images.is_empty());
        assert!(!r.has_findings());
        assert_eq!(r.nodes[0].status(), NodeStatus::NotEligible);
    }

    #[test]
    fn a_zero_cap_makes_everything_unverifiable() {
        let w = wanted(&["busybox:1"], &[], &[]);
        let s = summary("zero", json!({}), vec![], &w);
        let r = analyze([&s], &w, &none(), assume(0), &NodeExtras::new());
        assert_eq!(r.nodes[0].max_images, 0);
        assert!(!r.nodes[0].at_cap);
        assert_eq!(r.nodes[0].missing_state, Some(MissingState::Unverifiable));
    }

    fn runtime(w: &Wanted, count: u32, tagged: &[&str]) -> Arc<RuntimeSummary> {
        use crate::analysis::runtime::{AgentReport, RuntimeImage, summarize};
        let mut images: Vec<RuntimeImage> = tagged
            .iter()
            .map(|t| RuntimeImage {
                id: format!("sha256:{t}"),
                repo_tags: vec![t.to_string()],
                repo_digests: vec![],
                size: 1,
            })
            .collect();
        images.resize_with(count as usize, || RuntimeImage {
            id: "sha256:other".into(),
            repo_tags: vec!["docker.io/library/other:1".into()],
            repo_digests: vec![],
            size: 1,
        });
        let report = AgentReport {
            node: "n".into(),
            collected_at: "t".into(),
            images,
            image_fs_used_bytes: Some(99),
            prune: None,
        };
        Arc::new(summarize(&report, &Relevance::new(w, [])).0)
    }

    #[test]
    fn an_agent_report_tells_hidden_from_absent_at_the_cap() {
        let hidden = format!("{LAB}:w_1");
        let absent = format!("{LAB}:w_2");
        let w = wanted(&[&hidden, &absent], &[], &[]);
        let s = [
            summary("full-agent", json!({}), filler(50), &w),
            summary("full-blind", json!({}), filler(50), &w),
            summary("roomy-agent", json!({}), filler(10), &w),
        ];
        let extras = NodeExtras::from([
            (
                "full-agent".to_string(),
                NodeExtra {
                    runtime: Some(runtime(&w, 60, &[&hidden])),
                    image_fs: Some(ImageFs {
                        used_bytes: Some(5),
                        capacity_bytes: Some(10),
                        available_bytes: None,
                    }),
                    ..NodeExtra::default()
                },
            ),
            (
                "roomy-agent".to_string(),
                NodeExtra {
                    runtime: Some(runtime(&w, 10, &[])),
                    ..NodeExtra::default()
                },
            ),
        ]);
        let assume = Assumptions {
            default_max_images: 50,
            agents: true,
        };
        let r = analyze(&s, &w, &none(), assume, &extras);
        let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
        let states = |n: &NodeReport| -> Vec<(String, MissingState)> {
            n.missing
                .iter()
                .map(|m| (m.image.clone(), m.state))
                .collect()
        };

        let full = by("full-agent");
        assert_eq!(
            states(&full),
            [
                (hidden.clone(), MissingState::Hidden),
                (absent.clone(), MissingState::Absent)
            ]
        );
        assert_eq!(
            full.missing_state,
            Some(MissingState::Absent),
            "absent first"
        );
        assert_eq!(full.missing_images, [hidden.clone(), absent.clone()]);
        assert_eq!(
            (full.runtime_images, full.hidden_images, full.agent_up),
            (Some(60), Some(10), Some(true))
        );
        assert_eq!(full.runtime_image_bytes, Some(60));
        assert_eq!(
            (full.image_fs_used_bytes, full.image_fs_capacity_bytes),
            (Some(5), Some(10))
        );

        let blind = by("full-blind");
        assert!(
            states(&blind)
                .iter()
                .all(|(_, s)| *s == MissingState::Unverifiable)
        );
        assert_eq!((blind.hidden_images, blind.agent_up), (None, Some(false)));

        let roomy = by("roomy-agent");
        assert_eq!(
            roomy.hidden_images,
            Some(0),
            "nothing is hidden under the cap"
        );
        assert!(
            states(&roomy)
                .iter()
                .all(|(_, s)| *s == MissingState::Absent)
        );

        // Only hidden images missing: the node's state is hidden.
        let w1 = wanted(&[&hidden], &[], &[]);
        let r = analyze(&s[..1], &w1, &none(), assume, &extras);
        assert_eq!(r.nodes[0].missing_state, Some(MissingState::Hidden));
        // Without agents configured, nothing says so.
        let r = analyze(&s[1..2], &w1, &none(), self::assume(50), &NodeExtras::new());
        assert_eq!(r.nodes[0].agent_up, None);
    }

    /// A node of `runtime` reporting `entries` (names, sizeBytes).
    fn sized(name: &str, runtime: &str, entries: &[(Vec<String>, i64)], w: &Wanted) -> NodeSummary {
        let (version, arch) = runtime.split_once(' ').unwrap();
        let images: Vec<_> = entries
            .iter()
            .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
            .collect();
        let v: NodeView = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"images": images,
                       "nodeInfo": {"containerRuntimeVersion": version, "architecture": arch}}
        }))
        .unwrap();
        summarize(&v, &Relevance::new(w, [])).unwrap()
    }

    /// `n` filler entries of `size` bytes each.
    fn sized_filler(n: usize, size: i64) -> Vec<(Vec<String>, i64)> {
        filler(n).into_iter().map(|names| (names, size)).collect()
    }

    const CONTAINERD: &str = "containerd://1.7.2 amd64";

    #[test]
    fn the_size_order_proves_absent_and_unlistable_at_the_cap() {
        let [big, small, tie, unknown] = [1, 2, 3, 4].map(|i| format!("{LAB}@{}", d(i)));
        let w = wanted(&[&big, &small, &tie, &unknown], &[], &[]);
        // A node under its cap that holds three of them tells their sizes.
        let mut reference = sized_filler(5, 100);
        reference.push((vec![big.clone()], 5_000));
        reference.push((vec![small.clone()], 500));
        reference.push((vec![tie.clone()], 1_000));
        let s = [
            sized("reference", CONTAINERD, &reference, &w),
            sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
            sized(
                "full-crio",
                "cri-o://1.28.1 amd64",
                &sized_filler(50, 1_000),
                &w,
            ),
            sized(
                "full-arm",
                "containerd://1.7.2 arm64",
                &sized_filler(50, 1_000),
                &w,
            ),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let states = |n: &str| -> Vec<MissingState> {
            let node = r.nodes.iter().find(|x| x.name == n).unwrap();
            node.missing.iter().map(|m| m.state).collect()
        };
        assert_eq!(
            states("full"),
            [
                MissingState::Absent,       // 5,000 > 1,000: it would be listed
                MissingState::Unlistable,   // 500 < 1,000: it never can be
                MissingState::Unverifiable, // a tie proves nothing
                MissingState::Unverifiable, // no size known
            ]
        );
        let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
        assert_eq!(full.missing_state, Some(MissingState::Absent));
        // Sizes from another runtime or architecture prove nothing.
        for other in ["full-crio", "full-arm"] {
            assert!(
                states(other)
                    .iter()
                    .all(|s| *s == MissingState::Unverifiable),
                "{other}: {:?}",
                states(other)
            );
        }
        // Under its cap the node's list is complete: the one it lacks is absent.
        assert_eq!(states("reference"), [MissingState::Absent]);
    }

    #[test]
    fn sizes_that_disagree_or_an_unplaceable_cut_prove_nothing() {
        let image = format!("{LAB}:w_1");
        let w = wanted(&[&image], &[], &[]);
        let s = [
            // The tag moved: two nodes hold images of different sizes under it.
            sized("a", CONTAINERD, &[(vec![image.clone()], 500)], &w),
            sized("b", CONTAINERD, &[(vec![image.clone()], 700)], &w),
            sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
        ];
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
        assert_eq!(full.missing_state, Some(MissingState::Unverifiable));

        // One entry without a size: where the kubelet cut the list is unknown.
        let mut entries = sized_filler(49, 1_000);
        entries.push((vec!["docker.io/library/odd:1".into()], -1));
        let s = [
            sized("a", CONTAINERD, &[(vec![image.clone()], 500)], &w),
            sized("full", CONTAINERD, &entries, &w),
        ];
        assert_eq!(s[1].smallest_image_bytes, None);
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
        assert_eq!(full.missing_state, Some(MissingState::Unverifiable));
    }

    #[test]
    fn an_agent_report_turns_unlistable_into_hidden_only_when_the_runtime_holds_it() {
        let small = format!("{LAB}:w_1");
        let small_too = format!("{LAB}:w_2");
        let w = wanted(&[&small, &small_too], &[], &[]);
        let s = [
            sized(
                "reference",
                CONTAINERD,
                &[(vec![small.clone()], 500), (vec![small_too.clone()], 400)],
                &w,
            ),
            sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
        ];
        let extras = NodeExtras::from([(
            "full".to_string(),
            NodeExtra {
                runtime: Some(runtime(&w, 60, &[&small])),
                ..NodeExtra::default()
            },
        )]);
        let assume = Assumptions {
            default_max_images: 50,
            agents: true,
        };
        let r = analyze(&s, &w, &none(), assume, &extras);
        let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
        let states: Vec<_> = full.missing.iter().map(|m| m.state).collect();
        assert_eq!(states, [MissingState::Hidden, MissingState::Unlistable]);
        assert_eq!(full.missing_state, Some(MissingState::Unlistable));
    }

    #[test]
    fn an_odd_digest_is_found_by_its_string_or_its_tag_as_nublado_finds_it() {
        use crate::analysis::wanted::WantGroup;
        let odd = ImageRef::parse(&format!("{LAB}:d_1@sha256:1234")).unwrap();
        let w = wanted(&[], &[], &[]);
        let group = WantGroup {
            source: WantSource::Nublado,
            images: vec![odd.clone()],
            eligibility: w.eligibility().clone(),
        };
        let relevance = Relevance::new(&w, [&group]);
        let sources = BTreeMap::from([(
            WantSource::Nublado,
            SourceState {
                groups: vec![group],
                up: true,
                last_success_seconds: None,
                dropped_images: 0,
                menu: None,
            },
        )]);
        let node = |name: &str, names: &[&str]| {
            let v: NodeView = serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"images": [{"names": names, "sizeBytes": 1}]}
            }))
            .unwrap();
            summarize(&v, &relevance).unwrap()
        };
        let s = [
            node("by-string", &[&format!("{LAB}@sha256:1234")]),
            node("by-tag", &[&format!("{LAB}:d_1")]),
            node("neither", &[&format!("{LAB}:d_2")]),
        ];
        let r = analyze(&s, &w, &sources, assume(50), &NodeExtras::new());
        let lacking: Vec<&str> = r
            .nodes
            .iter()
            .filter(|n| !n.missing.is_empty())
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(lacking, ["neither"]);
        assert_eq!(r.images[0].nodes, 2);
        assert!(s.iter().all(|n| n.problems.is_empty()), "no invalid name");
    }

    /// Nublado wanting `images` (all eligible nodes: `nodes`), with its menu.
    fn nublado(
        images: &[(&str, bool, Option<u64>, &[&str])],
        nodes: &[&str],
    ) -> BTreeMap<WantSource, SourceState> {
        use crate::analysis::menu::{Menu, MenuImage};
        use crate::analysis::wanted::WantGroup;
        let refs: Vec<ImageRef> = images
            .iter()
            .map(|(r, ..)| ImageRef::parse(r).unwrap())
            .collect();
        let named = nodes.iter().map(|n| (n.to_string(), Ok(()))).collect();
        let menu = Menu {
            images: images
                .iter()
                .zip(&refs)
                .map(|((_, prepulled, size, missing), r)| MenuImage {
                    image: r.clone(),
                    name: Some(format!("Lab {}", r.tag.as_deref().unwrap_or("?"))),
                    prepulled: *prepulled,
                    size: *size,
                    missing: Some(missing.iter().map(|n| Arc::from(*n)).collect()),
                })
                .collect(),
        };
        BTreeMap::from([(
            WantSource::Nublado,
            SourceState {
                groups: vec![WantGroup {
                    source: WantSource::Nublado,
                    images: refs,
                    eligibility: Arc::new(Eligibility::Named(Arc::new(named))),
                }],
                up: true,
                last_success_seconds: None,
                dropped_images: 0,
                menu: Some(Arc::new(menu)),
            },
        )])
    }

    #[test]
    fn the_menu_and_the_prepull_loop_from_sizes_alone() {
        let shown = format!("{LAB}:w_1");
        let small = format!("{LAB}:w_2");
        let big = format!("{LAB}:w_3");
        let only_nublado_knows = format!("{LAB}:w_4");
        let sources = nublado(
            &[
                (&shown, true, Some(900), &[]),
                (&small, false, Some(1), &["full"]),
                (&big, false, Some(9_000), &["full"]),
                (&only_nublado_knows, false, Some(10), &["full"]),
            ],
            &["full", "roomy"],
        );
        // The configuration wants the small image too: its pair counts for both.
        let w = wanted(&[&small], &[], &[]);
        let group_relevance: Vec<_> = sources.values().flat_map(|s| &s.groups).collect();
        let relevance = Relevance::new(&w, group_relevance);
        let node = |name: &str, entries: Vec<(Vec<String>, i64)>| {
            let images: Vec<_> = entries
                .iter()
                .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
                .collect();
            let v: NodeView = serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"images": images, "nodeInfo":
                    {"containerRuntimeVersion": "containerd://1.7.2", "architecture": "amd64"}}
            }))
            .unwrap();
            summarize(&v, &relevance).unwrap()
        };
        let mut full = sized_filler(49, 1_000);
        full.push((vec![shown.clone()], 1_500));
        let s = [
            node("full", full),
            node(
                "roomy",
                vec![
                    (vec![shown.clone()], 1_500),
                    (vec![small.clone()], 400),
                    (vec![big.clone()], 5_000),
                    (vec![only_nublado_knows.clone()], 5_000),
                ],
            ),
        ];
        // Another runtime's sizes would not count; here roomy shares full's.
        let r = analyze(&s, &w, &sources, assume(50), &NodeExtras::new());
        let full = r.nodes.iter().find(|n| n.name == "full").unwrap();
        let states: Vec<(&str, MissingState)> = full
            .missing
            .iter()
            .map(|m| (m.image.as_str(), m.state))
            .collect();
        assert_eq!(
            states,
            [
                (small.as_str(), MissingState::Unlistable),
                (big.as_str(), MissingState::Absent),
                (only_nublado_knows.as_str(), MissingState::Absent),
            ],
            "sizes from the node of the same runtime, not Nublado's"
        );
        let pairs: Vec<(WantSource, u32)> =
            r.sources.iter().map(|s| (s.source, s.loop_pairs)).collect();
        assert_eq!(pairs, [(WantSource::Config, 1), (WantSource::Nublado, 1)]);
        let menu = r.menu.as_ref().expect("a Nublado source with a menu");
        assert_eq!(
            (
                menu.shown,
                menu.hidden_by_cap,
                menu.maybe_hidden_by_cap,
                menu.pulling
            ),
            (1, 1, 0, 2)
        );
        assert_eq!(menu.hidden[0].name, "Lab w_2");
        assert_eq!(menu.hidden[0].nodes, ["full"]);

        // Without nodeInfo, Nublado's size stands in.
        let bare: Vec<NodeSummary> = s
            .iter()
            .map(|n| NodeSummary {
                runtime: None,
                ..n.clone()
            })
            .collect();
        let r = analyze(&bare, &w, &sources, assume(50), &NodeExtras::new());
        let full = r.nodes.iter().find(|n| n.name == "full").unwrap();
        let states: Vec<MissingState> = full.missing.iter().map(|m| m.state).collect();
        assert_eq!(
            states,
            [
                MissingState::Unlistable,
                MissingState::Absent,
                MissingState::Unlistable
            ]
        );
        // No Nublado source: no menu.
        let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
        assert!(r.menu.is_none());
        assert!(!serde_json::to_string(&r).unwrap().contains("\"menu\""));
    }

    #[test]
    fn the_state_ladder() {
        use MissingState::*;
        for (saturated, held, size, smallest, want) in [
            (false, None, Some(1), Some(9), Absent),
            (false, Some(true), None, None, Absent),
            (true, None, Some(10), Some(5), Absent),
            (true, None, Some(1), Some(5), Unlistable),
            (true, None, Some(5), Some(5), Unverifiable),
            (true, None, None, Some(5), Unverifiable),
            (true, None, Some(5), None, Unverifiable),
            (true, Some(true), Some(1), Some(5), Hidden),
            (true, Some(true), Some(10), Some(5), Hidden),
            (true, Some(false), Some(1), Some(5), Unlistable),
            (true, Some(false), Some(10), Some(5), Absent),
            (true, Some(false), None, Some(5), Absent),
        ] {
            assert_eq!(
                MissingState::decide(saturated, held, size, smallest),
                want,
                "{saturated} {held:?} {size:?} {smallest:?}"
            );
        }
    }

    proptest::proptest! {
        /// Under the cap nothing but `absent`; at it, a size on either side of the
        /// cut decides unless the runtime holds the image.
        #[test]
        fn the_size_rule_holds_for_any_sizes(
            saturated: bool,
            held in proptest::option::of(proptest::bool::ANY),
            size in proptest::option::of(0u64..2_000),
            smallest in proptest::option::of(0u64..2_000),
        ) {
            let state = MissingState::decide(saturated, held, size, smallest);
            if !saturated {
                proptest::prop_assert_eq!(state, MissingState::Absent);
            } else if held == Some(true) {
                proptest::prop_assert_eq!(state, MissingState::Hidden);
            } else if let (Some(s), Some(m)) = (size, smallest) {
                if s > m {
                    proptest::prop_assert_eq!(state, MissingState::Absent);
                } else if s < m {
                    proptest::prop_assert_eq!(state, MissingState::Unlistable);
                }
            }
            if state == MissingState::Unverifiable {
                proptest::prop_assert!(saturated && held.is_none());
            }
        }
    }

    #[test]
    fn the_runtime_matches_by_digest_as_well_as_by_tag() {
        use crate::analysis::runtime::{AgentReport, RuntimeImage, summarize};
        let pinned = format!("{LAB}@{}", d(7));
        let w = wanted(&[&pinned], &[], &[]);
        let s = [summary("full", json!({}), filler(50), &w)];
        let report = AgentReport {
            node: "full".into(),
            collected_at: "t".into(),
            images: vec![RuntimeImage {
                id: "sha256:x".into(),
                repo_tags: vec![],
                repo_digests: vec![pinned.clone()],
                size: 1,
            }],
            image_fs_used_bytes: None,
            prune: None,
        };
        let rt = Arc::new(summarize(&report, &Relevance::new(&w, [])).0);
        let extras = NodeExtras::from([(
            "full".to_string(),
            NodeExtra {
                runtime: Some(rt),
                ..NodeExtra::default()
            },
        )]);
        let r = analyze(&s, &w, &none(), assume(50), &extras);
        assert_eq!(r.nodes[0].missing[0].state, MissingState::Hidden);
        // 1 runtime image against 50 reported: the lists disagree, nothing negative.
        assert_eq!(r.nodes[0].hidden_images, Some(0));
    }
}
