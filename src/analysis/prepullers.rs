//! What each prepuller wants, read from its own objects: Nublado's prepuller
//! status, kube-fledged `ImageCache`s and prepuller DaemonSets, turned into
//! [`WantGroup`]s. Pure: the sources fetch, this decodes.
//!
//! Every source is bounded: at most [`MAX_IMAGES_PER_SOURCE`] distinct images
//! (the first in the order the source lists them; the references beyond are
//! counted, not kept) and [`MAX_PROBLEMS`] problems kept for the log, so that a
//! huge answer costs time linear in its size and memory bounded by the cap.

use super::eligibility::{
    Eligibility, NodeSelectorRequirement, NodeSelectorTerm, Placement, Toleration,
    daemonset_tolerations,
};
use super::menu::{Menu, MenuImage};
use super::reference::ImageRef;
use super::selector::LabelSelector;
use super::wanted::{WantGroup, WantSource};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::PodSpec;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
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

/// Most node names kept from Nublado's `missing` lists, over all images of one
/// answer; past it, an image's list is not kept and the exporter's own missing
/// nodes stand in for it.
pub const MAX_MENU_MISSING: usize = 100_000;

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

/// An image of Nublado's `PrepullerStatus` (`NodeImage`), the fields read here;
/// `nodes` and the rest are skipped unread.
#[derive(Deserialize)]
struct NodeImage {
    reference: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    missing: Vec<String>,
}

/// A node as Nublado sees it (`Node`).
#[derive(Deserialize, Debug, Clone)]
pub struct NubladoNode {
    pub name: String,
    #[serde(default = "yes")]
    pub eligible: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

/// Nublado's wanted images (`GET /nublado/spawner/v1/prepulls`, a
/// `PrepullerStatus`): every image of `images.prepulled` and `images.pending`, in
/// the body's order, matched by digest when Nublado knows it, else by reference;
/// wanted on the nodes Nublado calls eligible. At most `max` distinct images are
/// kept; images whose reference cannot be read are problems.
///
/// Decoded as it is read, one image at a time, without holding the images'
/// other fields: time linear in the body, memory bounded by `max`.
pub fn nublado_wants(body: &[u8], max: usize) -> Result<Wants, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut state = NubladoRead {
        images: ImageSet::new(max),
        problems: Problems::default(),
        menu: Vec::new(),
        node_names: HashMap::new(),
        missing_kept: 0,
        odd_digests: 0,
        unreadable: 0,
        prepulled: false,
    };
    let nodes = (&mut state)
        .deserialize(&mut de)
        .and_then(|nodes| de.end().map(|()| nodes))
        .map_err(|e| format!("not a Nublado PrepullerStatus: {e}"))?;
    let (images, dropped) = state.images.finish();
    let group = WantGroup {
        source: WantSource::Nublado,
        images,
        eligibility: Arc::new(Eligibility::Named(Arc::new(nodes))),
    };
    let invalid = [
        (SourceField::Digest, state.odd_digests),
        (SourceField::Reference, state.unreadable),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    Ok(Wants {
        groups: vec![group],
        problems: state.problems.finish(),
        dropped,
        menu: Some(Arc::new(Menu { images: state.menu })),
        invalid,
    })
}

/// Nublado's verdict for each node: eligible, or why not.
type NubladoNodes = HashMap<String, Result<(), String>>;

fn nublado_nodes(nodes: Vec<NubladoNode>) -> NubladoNodes {
    nodes
        .into_iter()
        .map(|n| {
            let verdict = if n.eligible {
                Ok(())
            } else {
                Err(n
                    .comment
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "not eligible for Nublado".into()))
            };
            (n.name, verdict)
        })
        .collect()
}

/// The state of one read of a `PrepullerStatus`.
struct NubladoRead {
    images: ImageSet,
    problems: Problems,
    /// The menu's images, as many as `images` keeps.
    menu: Vec<MenuImage>,
    /// Node names of the `missing` lists, one shared string each.
    node_names: HashMap<String, Arc<str>>,
    /// Names kept from `missing` lists so far (at most [`MAX_MENU_MISSING`]).
    missing_kept: usize,
    odd_digests: u64,
    unreadable: u64,
    /// Reading `images.prepulled` (else `images.pending`).
    prepulled: bool,
}

impl NubladoRead {
    fn add(&mut self, image: NodeImage) {
        let r = match nublado_ref(&image) {
            Ok(r) => r,
            Err(e) => {
                self.unreadable += 1;
                self.problems.push(|| e);
                return;
            }
        };
        if r.has_odd_digest() {
            self.odd_digests += 1;
        }
        let new = !self.images.contains(&r) && !self.images.is_full();
        self.images.insert(r.clone());
        if !new {
            return;
        }
        let missing = if self.missing_kept + image.missing.len() <= MAX_MENU_MISSING {
            self.missing_kept += image.missing.len();
            let names = &mut self.node_names;
            Some(
                image
                    .missing
                    .into_iter()
                    .map(|n| {
                        names
                            .entry(n)
                            .or_insert_with_key(|k| Arc::from(k.as_str()))
                            .clone()
                    })
                    .collect(),
            )
        } else {
            None
        };
        self.menu.push(MenuImage {
            image: r,
            name: image.name.filter(|n| !n.is_empty()),
            prepulled: self.prepulled,
            size: image.size,
            missing,
        });
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum StatusField {
    Images,
    Nodes,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ImagesField {
    Prepulled,
    Pending,
    #[serde(other)]
    Other,
}

/// The whole `PrepullerStatus`: the images into the state, the nodes returned.
impl<'de> DeserializeSeed<'de> for &mut NubladoRead {
    type Value = NubladoNodes;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<NubladoNodes, D::Error> {
        d.deserialize_map(StatusVisitor(self))
    }
}

struct StatusVisitor<'s>(&'s mut NubladoRead);

impl<'de> Visitor<'de> for StatusVisitor<'_> {
    type Value = NubladoNodes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PrepullerStatus object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NubladoNodes, A::Error> {
        let (mut images, mut nodes) = (false, None);
        while let Some(key) = map.next_key::<StatusField>()? {
            match key {
                StatusField::Images if images => {
                    return Err(serde::de::Error::duplicate_field("images"));
                }
                StatusField::Images => {
                    map.next_value_seed(ImagesSeed(&mut *self.0))?;
                    images = true;
                }
                StatusField::Nodes if nodes.is_some() => {
                    return Err(serde::de::Error::duplicate_field("nodes"));
                }
                StatusField::Nodes => nodes = Some(map.next_value::<Vec<NubladoNode>>()?),
                StatusField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !images {
            return Err(serde::de::Error::missing_field("images"));
        }
        let nodes = nodes.ok_or_else(|| serde::de::Error::missing_field("nodes"))?;
        Ok(nublado_nodes(nodes))
    }
}

/// `images`: `prepulled` and `pending`, each optional.
struct ImagesSeed<'s>(&'s mut NubladoRead);

impl<'de> DeserializeSeed<'de> for ImagesSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ImagesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PrepullerImageStatus object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<ImagesField>()? {
            match key {
                ImagesField::Prepulled | ImagesField::Pending => {
                    self.0.prepulled = matches!(key, ImagesField::Prepulled);
                    map.next_value_seed(ImageListSeed(&mut *self.0))?
                }
                ImagesField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A list of `NodeImage`s, each added to the state as it is decoded.
struct ImageListSeed<'s>(&'s mut NubladoRead);

impl<'de> DeserializeSeed<'de> for ImageListSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ImageListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of images")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(image) = seq.next_element::<NodeImage>()? {
            self.0.add(image);
        }
        Ok(())
    }
}

fn nublado_ref(image: &NodeImage) -> Result<ImageRef, String> {
    let mut r = ImageRef::parse(&image.reference)
        .map_err(|e| format!("Nublado image {:?}: {e}", image.reference))?;
    if let Some(d) = image.digest.as_deref().filter(|d| !d.is_empty()) {
        let with_digest = format!("{}@{d}", r.repo);
        let digest = ImageRef::parse(&with_digest)
            .map_err(|e| format!("Nublado image {:?} digest: {e}", image.reference))?
            .digest;
        r.digest = digest;
    }
    Ok(r)
}

/// A kube-fledged `ImageCache`'s `spec.cacheSpec[]`: each group's images are
/// wanted on the nodes its `nodeSelector` matches, every node without one.
pub fn imagecache_groups(name: &str, spec: &serde_json::Value, max: usize) -> Wants {
    let mut problems = Problems::default();
    let mut groups = Vec::new();
    let mut all = ImageSet::new(max);
    let Some(cache_spec) = spec.get("cacheSpec").and_then(|c| c.as_array()) else {
        return Wants {
            problems: vec![format!("ImageCache {name}: spec.cacheSpec is not a list")],
            ..Wants::default()
        };
    };
    for (i, entry) in cache_spec.iter().enumerate() {
        let selector = match entry.get("nodeSelector") {
            None | Some(serde_json::Value::Null) => Ok(LabelSelector::default()),
            Some(v) => serde_json::from_value::<BTreeMap<String, String>>(v.clone())
                .map_err(|e| e.to_string())
                .and_then(|m| LabelSelector::from_map(&m).map_err(|e| e.to_string())),
        };
        let selector = match selector {
            Ok(s) => s,
            Err(e) => {
                problems.push(|| format!("ImageCache {name}: cacheSpec[{i}].nodeSelector: {e}"));
                continue;
            }
        };
        let mut images = Vec::new();
        let mut in_group = HashSet::new();
        for (j, image) in entry
            .get("images")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            match image.as_str().map(ImageRef::parse) {
                // Kept if wanted already (also in this group) or while there is room.
                Some(Ok(r)) if all.contains(&r) || !all.is_full() => {
                    all.insert(r.clone());
                    if in_group.insert(r.clone()) {
                        images.push(r);
                    }
                }
                Some(Ok(r)) => all.insert(r),
                Some(Err(e)) => {
                    problems.push(|| format!("ImageCache {name}: cacheSpec[{i}].images[{j}]: {e}"))
                }
                None => problems.push(|| {
                    format!("ImageCache {name}: cacheSpec[{i}].images[{j}] is not a string")
                }),
            }
        }
        if !images.is_empty() {
            groups.push(WantGroup {
                source: WantSource::KubeFledged,
                images,
                eligibility: Arc::new(Eligibility::Selector(selector)),
            });
        }
    }
    Wants {
        groups,
        problems: problems.finish(),
        dropped: all.finish().1,
        ..Wants::default()
    }
}

/// A prepuller DaemonSet: every container and init-container image of its pod
/// template, wanted where its pods can run.
pub fn daemonset_groups(ds: &DaemonSet, max: usize) -> Wants {
    let (groups, problems, dropped) = daemonset_parts(ds, max);
    Wants {
        groups,
        problems: problems.finish(),
        dropped,
        ..Wants::default()
    }
}

/// What [`daemonset_groups`] makes of a DaemonSet: its one group (none when it
/// has no image or its placement cannot be read), the problems, and the
/// references dropped past `max`.
fn daemonset_parts(ds: &DaemonSet, max: usize) -> (Vec<WantGroup>, Problems, u64) {
    let name = ds.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut problems = Problems::default();
    let Some(pod) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        problems.push(|| format!("DaemonSet {name}: no pod template spec"));
        return (Vec::new(), problems, 0);
    };
    let images = pod_images(pod, name, max, &mut problems);
    let Some(placement) = placement(pod, name, &mut problems) else {
        return (Vec::new(), problems, 0);
    };
    let (images, dropped) = images.finish();
    if images.is_empty() {
        return (Vec::new(), problems, dropped);
    }
    let group = WantGroup {
        source: WantSource::DaemonSet,
        images,
        eligibility: Arc::new(Eligibility::Placement(placement)),
    };
    (vec![group], problems, dropped)
}

/// The distinct images of the pod's init containers then containers, at most
/// `max`; an image that cannot be parsed goes to `problems`.
fn pod_images(pod: &PodSpec, name: &str, max: usize, problems: &mut Problems) -> ImageSet {
    let mut images = ImageSet::new(max);
    for c in pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
    {
        let Some(image) = c.image.as_deref() else {
            continue;
        };
        match ImageRef::parse(image) {
            Ok(r) => images.insert(r),
            Err(e) => problems.push(|| format!("DaemonSet {name}: container {}: {e}", c.name)),
        }
    }
    images
}

/// Where the pod can run: its node selector, required node affinity and
/// tolerations (with those the DaemonSet controller adds). `None`, with the
/// reason in `problems`, when the selector or affinity cannot be read; a
/// toleration that cannot be read goes to `problems` and is left out.
fn placement(pod: &PodSpec, name: &str, problems: &mut Problems) -> Option<Placement> {
    let node_selector = match pod.node_selector.as_ref() {
        None => LabelSelector::default(),
        Some(m) => match LabelSelector::from_map(m) {
            Ok(s) => s,
            Err(e) => {
                problems.push(|| format!("DaemonSet {name}: nodeSelector: {e}"));
                return None;
            }
        },
    };
    let required_terms = match required_terms(pod) {
        Ok(terms) => terms,
        Err(e) => {
            problems.push(|| format!("DaemonSet {name}: node affinity: {e}"));
            return None;
        }
    };
    let mut tolerations = daemonset_tolerations(pod.host_network.unwrap_or(false));
    for (i, t) in pod.tolerations.iter().flatten().enumerate() {
        match Toleration::from_api(t) {
            Ok(t) => tolerations.push(t),
            Err(e) => problems.push(|| format!("DaemonSet {name}: tolerations[{i}]: {e}")),
        }
    }
    Some(Placement {
        node_selector,
        required_terms,
        tolerations,
    })
}

/// The terms of the pod's required node affinity
/// (`requiredDuringSchedulingIgnoredDuringExecution`); `None` when it has
/// none. The first requirement that cannot be read is the error.
fn required_terms(pod: &PodSpec) -> Result<Option<Vec<NodeSelectorTerm>>, String> {
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let Some(selector) = required else {
        return Ok(None);
    };
    let terms = selector.node_selector_terms.iter().map(|t| {
        Ok(NodeSelectorTerm {
            match_expressions: requirements(&t.match_expressions)?,
            match_fields: requirements(&t.match_fields)?,
        })
    });
    terms.collect::<Result<Vec<_>, _>>().map(Some)
}

/// A node selector term's `matchExpressions` or `matchFields`, converted; the
/// first that cannot be is the error.
fn requirements(
    reqs: &Option<Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement>>,
) -> Result<Vec<NodeSelectorRequirement>, String> {
    reqs.iter()
        .flatten()
        .map(|r| {
            NodeSelectorRequirement::new(
                &r.key,
                &r.operator,
                r.values.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::eligibility::{NodeFacts, NodeLabels, NotEligible, Taint};
    use serde_json::json;

    const DIGEST: &str = "sha256:e693782192ecef4f7846ad2b21b1574682e700747f94c5a256b5731331a2eec2";

    #[test]
    fn odd_digests_are_kept_counted_and_wanted() {
        // As in Nublado's own test data.
        let body = json!({
            "images": {"prepulled": [
                {"reference": "lighthouse.ceres/library/sketchbook:w_2077_43", "tag": "w_2077_43",
                 "digest": "sha256:5678", "size": 65537, "nodes": ["node1"], "missing": []}],
                "pending": [
                {"reference": "lighthouse.ceres/library/sketchbook:d_2077_10_23",
                 "digest": "sha256:1234", "size": 69105, "nodes": ["node1"], "missing": ["node2"]}]},
            "nodes": [{"name": "node1", "eligible": true}, {"name": "node2", "eligible": true}]
        });
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let refs: Vec<String> = wants.groups[0]
            .images
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(refs.len(), 2, "none dropped: {refs:?}");
        assert!(
            refs.iter()
                .any(|r| r.ends_with(":d_2077_10_23@sha256:1234")),
            "{refs:?}"
        );
        assert!(wants.problems.is_empty(), "{:?}", wants.problems);
        assert_eq!(wants.invalid, [(SourceField::Digest, 2)]);
    }

    #[test]
    fn missing_lists_past_the_bound_are_not_kept() {
        let missing: Vec<String> = (0..MAX_MENU_MISSING / 2 + 1)
            .map(|i| format!("n{i}"))
            .collect();
        let image =
            |tag: &str| json!({"reference": format!("ghcr.io/x/lab:{tag}"), "missing": missing});
        let body =
            json!({"images": {"pending": [image("a"), image("b"), image("c")]}, "nodes": []});
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let kept: Vec<bool> = wants
            .menu
            .unwrap()
            .images
            .iter()
            .map(|m| m.missing.is_some())
            .collect();
        assert_eq!(kept, [true, false, false]);
    }

    #[test]
    fn nublado_status_as_the_controller_serves_it() {
        let body = json!({
            "config": {"source": {"type": "docker", "registry": "ghcr.io",
                                  "repository": "lsst-sqre/sciplat-lab"},
                       "recommended_tag": "recommended", "num_releases": 1,
                       "num_weeklies": 2, "num_dailies": 3, "cycle": null, "pin": [],
                       "alias_tags": []},
            "images": {
                "prepulled": [{"reference": "ghcr.io/lsst-sqre/sciplat-lab:w_2024_10",
                               "tag": "w_2024_10", "name": "Weekly 2024_10",
                               "digest": DIGEST, "size": 8675309,
                               "nodes": ["n1", "n2"], "missing": []}],
                "pending": [{"reference": "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11",
                             "tag": "w_2024_11", "name": "Weekly 2024_11",
                             "digest": null, "size": null, "nodes": ["n1"], "missing": ["n2"]},
                            {"reference": "Not A Reference", "tag": "x", "name": "x",
                             "nodes": [], "missing": []}]
            },
            "nodes": [{"name": "n1", "eligible": true, "comment": null, "cached": []},
                      {"name": "n2", "eligible": true, "cached": []},
                      {"name": "n3", "eligible": false, "comment": "Cordoned because of disk problems",
                       "cached": []}]
        });
        let Wants {
            groups,
            problems,
            dropped,
            ..
        } = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("Not A Reference"));
        let g = &groups[0];
        assert_eq!(g.source, WantSource::Nublado);
        let refs: Vec<String> = g.images.iter().map(|r| r.to_string()).collect();
        // In the body's order: `json!` sorts keys, so `pending` comes first.
        assert_eq!(
            refs,
            [
                "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11".to_string(),
                format!("ghcr.io/lsst-sqre/sciplat-lab:w_2024_10@{DIGEST}"),
            ]
        );
        let labels = NodeLabels::default();
        let facts = |name| NodeFacts {
            name,
            labels: &labels,
            taints: &[],
            unschedulable: false,
        };
        assert_eq!(g.eligibility.check(&facts("n1")), Ok(()));
        assert_eq!(
            g.eligibility.check(&facts("n3")),
            Err(NotEligible::Nublado(
                "Cordoned because of disk problems".into()
            ))
        );
        // The menu: what is shown, the display names, sizes and missing nodes.
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let menu = wants.menu.expect("Nublado's answer describes its menu");
        let shown: Vec<(String, bool, Option<u64>, Vec<String>)> = menu
            .images
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap(),
                    m.prepulled,
                    m.size,
                    m.missing.iter().flatten().map(|n| n.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("Weekly 2024_11".into(), false, None, vec!["n2".into()]),
                ("Weekly 2024_10".into(), true, Some(8675309), vec![]),
            ]
        );
        assert_eq!(wants.invalid, [(SourceField::Reference, 1)]);
        let parse = |b: &[u8]| nublado_wants(b, 10);
        assert!(
            parse(b"[]")
                .unwrap_err()
                .contains("not a Nublado PrepullerStatus")
        );
        assert!(parse(b"{\"images\": {}}").is_err(), "nodes are required");
        assert!(parse(b"{\"nodes\": []}").is_err(), "images are required");
        assert!(parse(b"{\"images\": {\"pending\": null}, \"nodes\": []}").is_err());
        assert!(
            parse(b"{\"images\": {}, \"nodes\": []} x").is_err(),
            "trailing data"
        );
        assert!(parse(b"{\"images\": {\"pending\": [{\"reference\": \"a:1\"}").is_err());
    }

    #[test]
    fn imagecache_groups_follow_their_selectors() {
        let spec = json!({"cacheSpec": [
            {"images": ["nginx:1.25", "ghcr.io/x/lab:w_1"], "nodeSelector": {"pool": "lab"}},
            {"images": ["busybox:1.36", 7, "Bad Ref"]},
            {"images": ["a:1"], "nodeSelector": {"bad key": "x"}}
        ]});
        let Wants {
            groups, problems, ..
        } = imagecache_groups("cache", &spec, MAX_IMAGES_PER_SOURCE);
        assert_eq!(groups.len(), 2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(
            groups[0].images[0].to_string(),
            "docker.io/library/nginx:1.25"
        );
        let lab = NodeLabels::new(vec![("pool".into(), "lab".into())]);
        let other = NodeLabels::default();
        let facts = |labels| NodeFacts {
            name: "n",
            labels,
            taints: &[],
            unschedulable: true,
        };
        assert!(groups[0].eligibility.check(&facts(&lab)).is_ok());
        assert!(groups[0].eligibility.check(&facts(&other)).is_err());
        assert!(
            groups[1].eligibility.check(&facts(&other)).is_ok(),
            "no selector: every node"
        );
        assert!(imagecache_groups("x", &json!({}), 10).problems[0].contains("cacheSpec"));
    }

    #[test]
    fn daemonset_images_and_placement() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "continuous-image-puller", "namespace": "jhub"},
            "spec": {"selector": {"matchLabels": {"app": "puller"}}, "template": {
                "metadata": {"labels": {"app": "puller"}},
                "spec": {
                    "nodeSelector": {"hub.jupyter.org/node-purpose": "user"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
                    "tolerations": [{"key": "hub.jupyter.org/dedicated", "operator": "Equal",
                                     "value": "user", "effect": "NoSchedule"}],
                    "initContainers": [
                        {"name": "image-pull-singleuser", "image": "jupyterhub/k8s-singleuser-sample:4.0.0"},
                        {"name": "image-pull-extra", "image": "ghcr.io/x/lab:w_1"}],
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]
                }}}
        }))
        .unwrap();
        let Wants {
            groups, problems, ..
        } = daemonset_groups(&ds, MAX_IMAGES_PER_SOURCE);
        assert!(problems.is_empty(), "{problems:?}");
        let refs: Vec<String> = groups[0].images.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "docker.io/jupyterhub/k8s-singleuser-sample:4.0.0",
                "ghcr.io/x/lab:w_1",
                "registry.k8s.io/pause:3.10"
            ]
        );
        let user = NodeLabels::new(vec![
            ("hub.jupyter.org/node-purpose".into(), "user".into()),
            ("kubernetes.io/arch".into(), "amd64".into()),
        ]);
        let dedicated = [Taint {
            key: "hub.jupyter.org/dedicated".into(),
            value: Some("user".into()),
            effect: "NoSchedule".into(),
        }];
        let gpu = [Taint {
            key: "nvidia.com/gpu".into(),
            value: None,
            effect: "NoSchedule".into(),
        }];
        let facts = |taints: &'static [Taint], labels| NodeFacts {
            name: "n",
            labels,
            taints,
            unschedulable: true,
        };
        let rule = &groups[0].eligibility;
        let dedicated: &'static [Taint] = Box::leak(Box::new(dedicated));
        let gpu: &'static [Taint] = Box::leak(Box::new(gpu));
        assert_eq!(
            rule.check(&facts(dedicated, &user)),
            Ok(()),
            "tolerated, cordoned ok"
        );
        assert_eq!(
            rule.check(&facts(gpu, &user)),
            Err(NotEligible::Taint("nvidia.com/gpu=:NoSchedule".into()))
        );
        let arm = NodeLabels::new(vec![
            ("hub.jupyter.org/node-purpose".into(), "user".into()),
            ("kubernetes.io/arch".into(), "arm64".into()),
        ]);
        assert_eq!(rule.check(&facts(&[], &arm)), Err(NotEligible::Selector));
    }

    fn pending(refs: impl IntoIterator<Item = String>) -> Vec<u8> {
        let images: Vec<_> = refs
            .into_iter()
            .map(|r| json!({"reference": r, "nodes": ["n1"], "missing": []}))
            .collect();
        json!({"images": {"pending": images}, "nodes": [{"name": "n1"}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn nublado_keeps_the_first_distinct_images_up_to_the_cap() {
        // Repeats of kept images are not dropped; the others past the cap are.
        let refs = [
            "a:1",
            "b:1",
            "a:1",
            "c:1",
            "docker.io/library/b:1",
            "d:1",
            "c:1",
        ];
        let w = nublado_wants(&pending(refs.map(String::from)), 2).unwrap();
        let kept: Vec<String> = w.groups[0].images.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            kept,
            ["docker.io/library/a:1", "docker.io/library/b:1"],
            "the first two, in the body's order"
        );
        assert_eq!(w.dropped, 3, "c:1 twice and d:1");
        // Prepulled and pending in the order the body has them.
        let body = br#"{"nodes": [], "images": {"pending": [{"reference": "p:1"}],
                        "prepulled": [{"reference": "q:1"}, {"reference": "p:1"}]}}"#;
        let w = nublado_wants(body, 10).unwrap();
        let kept: Vec<String> = w.groups[0].images.iter().map(|r| r.to_string()).collect();
        assert_eq!(kept, ["docker.io/library/p:1", "docker.io/library/q:1"]);
    }

    #[test]
    fn nublado_problems_are_bounded() {
        let body = pending((0..1000).map(|i| format!("Bad Ref {i}")));
        let w = nublado_wants(&body, 10).unwrap();
        assert_eq!(w.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            w.problems.last().unwrap(),
            &format!(
                "and {} more images that cannot be read",
                1000 - MAX_PROBLEMS
            )
        );
        assert!(w.groups[0].images.is_empty());
    }

    #[test]
    fn a_large_nublado_answer_is_read_in_linear_time() {
        // 200,000 distinct references: with a quadratic de-duplication this takes
        // minutes; linear, well under a second in a release build.
        let n = 200_000;
        let body = pending((0..n).map(|i| format!("r.io/i{i}:1")));
        let started = std::time::Instant::now();
        let w = nublado_wants(&body, MAX_IMAGES_PER_SOURCE).unwrap();
        assert_eq!(w.groups[0].images.len(), MAX_IMAGES_PER_SOURCE);
        assert_eq!(w.dropped, (n - MAX_IMAGES_PER_SOURCE) as u64);
        assert_eq!(w.groups[0].images[0].to_string(), "r.io/i0:1");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn imagecaches_are_capped_over_all_their_groups() {
        let spec = json!({"cacheSpec": [
            {"images": ["a:1", "b:1", "a:1"]},
            {"images": ["b:1", "c:1", "d:1"], "nodeSelector": {"pool": "lab"}}
        ]});
        let w = imagecache_groups("cache", &spec, 2);
        let kept =
            |g: &WantGroup| -> Vec<String> { g.images.iter().map(|r| r.to_string()).collect() };
        assert_eq!(
            kept(&w.groups[0]),
            ["docker.io/library/a:1", "docker.io/library/b:1"]
        );
        assert_eq!(
            kept(&w.groups[1]),
            ["docker.io/library/b:1"],
            "b:1 is kept and wanted by this group too"
        );
        assert_eq!(w.dropped, 2);
        assert!(w.problems.is_empty());
    }

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
