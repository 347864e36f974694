//! One Node -> one compact [`NodeSummary`].
//!
//! [`NodeView`] is the projection of a Node the exporter decodes: only the fields it
//! reads, each tolerant of malformed values. The summary keeps counts, sizes and the
//! few image entries that matter for prepull matching, never the whole image list.

use super::eligibility::{NodeFacts, NodeLabels, Taint};
pub use super::entry_size::EntrySize;
use super::held::{HeldSpan, hold, holding_for_node};
use super::intern::{intern, intern_entry, intern_str};
use super::reference::{ImageRef, NameSplit, RefError, split};
use super::wanted::{KnownDigests, Relevance, is_known};
use crate::decode::lenient::{Field, Lenient, LenientVec, Shape, Tolerant, fast, present, texts};
use crate::decode::quantity::parse_bytes;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The hasher of the name tables: names come from the cluster, but a table only
/// ever holds a bounded number of them.
type FastHash = foldhash::fast::RandomState;
use std::fmt;
use std::sync::Arc;

/// The parts of a `v1.Node` the exporter reads; the `nodes` resource to the client.
#[derive(Deserialize, Debug, Clone, Default, Resource)]
#[resource(inherit = "Node")]
pub struct NodeView {
    /// Absent from the items of a NodeList; set in watch events and in the items of
    /// a generic `List` (`kubectl get nodes,pods -o json`), where it tells a Node
    /// from other objects.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "read_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Field<NodeSpecView>,
    #[serde(default)]
    pub status: Option<NodeStatusView>,
}

/// Of a node's `metadata`, what the exporter reads: its name, its labels, and
/// the resourceVersion a watch continues from. A real node's metadata is mostly
/// annotations and `managedFields` (kilobytes of nested objects per node), which
/// are skipped as they are read, never built.
#[derive(Deserialize)]
struct MetadataView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

fn read_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<MetadataView>::deserialize(d)?;
    Ok(m.map_or_else(ObjectMeta::default, |m| ObjectMeta {
        name: m.name,
        resource_version: m.resource_version,
        labels: m.labels,
        ..ObjectMeta::default()
    }))
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct NodeSpecView {
    #[serde(default)]
    pub unschedulable: Field<bool>,
    #[serde(default, deserialize_with = "present")]
    pub taints: Option<LenientVec<TaintView>>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct TaintView {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct NodeStatusView {
    #[serde(default, deserialize_with = "present_images")]
    pub images: Option<ImagesView>,
    #[serde(default)]
    pub capacity: Field<ResourcesView>,
    #[serde(default)]
    pub allocatable: Field<ResourcesView>,
    #[serde(default, rename = "nodeInfo")]
    pub node_info: Field<NodeInfoView>,
}

/// `status.nodeInfo`: what tells whether two nodes count image sizes alike.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct NodeInfoView {
    #[serde(default, rename = "containerRuntimeVersion")]
    pub container_runtime_version: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct ResourcesView {
    #[serde(default, rename = "ephemeral-storage")]
    pub ephemeral_storage: Field<QuantityText>,
}

/// `status.images`: every entry as decoded, or, for a node decoded under
/// [`decoding_for`], only what its summary keeps of them (the entries are
/// summarized one by one as they are read, so a node of a million images is
/// never held whole).
#[derive(Debug, Clone, Default)]
pub struct ImagesView {
    /// The value was an explicit `null`.
    pub was_null: bool,
    /// Set when the value was not a list (nor null).
    pub invalid: Option<String>,
    /// Entries in the list, well-formed or not.
    pub count: usize,
    pub entries: ImageEntries,
}

#[derive(Debug, Clone)]
pub enum ImageEntries {
    /// Every entry, as decoded.
    All(Vec<Lenient<ImageView>>),
    /// What the summary keeps of the entries, decided while decoding.
    Folded(FoldedImages),
}

impl Default for ImageEntries {
    fn default() -> Self {
        ImageEntries::All(Vec::new())
    }
}

/// What [`summarize_with`] makes of a node's image entries.
#[derive(Debug, Clone, Default)]
pub struct FoldedImages {
    totals: ImageTotals,
    problems: Vec<Problem>,
    /// The entries held apart while they were read ([`super::held`]).
    held: Option<HeldSpan>,
}

/// What a summary keeps of a node's image entries, added one at a time.
#[derive(Debug, Clone)]
struct ImageTotals {
    /// Sum of the well-formed, non-negative sizes.
    size_bytes: u64,
    relevant: Vec<Entry>,
    /// The smallest size while every entry has a well-formed one (`u64::MAX`
    /// before the first entry).
    smallest: Option<u64>,
}

impl Default for ImageTotals {
    fn default() -> Self {
        ImageTotals {
            size_bytes: 0,
            relevant: Vec::new(),
            smallest: Some(u64::MAX),
        }
    }
}

impl FoldedImages {
    /// Adds entry `i`.
    fn add<S: AsRef<str>>(
        &mut self,
        i: usize,
        entry: &Lenient<ImageView<S>>,
        relevance: &Relevance,
        cache: &mut NameCache,
    ) {
        let problems = &mut self.problems;
        fold_entry(
            i,
            entry,
            relevance,
            cache,
            &mut self.totals,
            &mut |field, detail| problems.push(Problem { field, detail }),
        );
    }
}

thread_local! {
    /// Set while nodes are decoded for a summary ([`decoding_for`]).
    static DECODING_FOR: std::cell::RefCell<Option<Arc<Relevance>>> =
        const { std::cell::RefCell::new(None) };
    /// Image names already parsed and matched, per thread that summarizes.
    static NAMES: std::cell::RefCell<NameCache> = std::cell::RefCell::default();
}

/// Runs `f`, a batch of nodes decoded on this thread (a list page, a nodes
/// file), with the names seen lately remembered from node to node
/// ([`RecentNames`]): thousands of nodes in a batch repeat them. Outside a batch
/// (a watch event, one node at a time) each name is checked again, and the table
/// is not allocated. The table outlives the batch, for the next page of the same
/// list; [`forget_recent_names`] gives it back once the list is done.
pub fn remembering_names<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_remembering(self.0);
        }
    }
    let _restore = Restore(set_remembering(true));
    f()
}

/// Sets whether this thread's name cache uses its recent names; returns what it
/// was.
fn set_remembering(on: bool) -> bool {
    NAMES.with(|names| match names.try_borrow_mut() {
        Ok(mut names) => std::mem::replace(&mut names.remember, on),
        // Never: the cache is borrowed only while a node is summarized.
        Err(_) => on,
    })
}

/// Gives back this thread's table of recent names (about 1.4 MiB once full):
/// after a whole list, until the next one, it would only hold memory.
pub fn forget_recent_names() {
    NAMES.with(|names| {
        if let Ok(mut names) = names.try_borrow_mut() {
            names.recent.clear();
        }
    });
}

/// The bytes this thread's table of recent names holds (for tests).
#[cfg(test)]
fn recent_names_bytes() -> usize {
    NAMES.with_borrow(|names| {
        names.recent.slots.capacity() * std::mem::size_of::<RecentSlot>()
            + names.recent.text.capacity()
    })
}

/// Runs `f` with this thread's name cache, made to answer for `relevance`.
pub fn with_name_cache<R>(relevance: &Arc<Relevance>, f: impl FnOnce(&mut NameCache) -> R) -> R {
    NAMES.with(|names| match names.try_borrow_mut() {
        Ok(mut names) => {
            names.prepare(relevance);
            f(&mut names)
        }
        // Only if a summary were made while another is (never today).
        Err(_) => {
            let mut names = NameCache::default();
            names.prepare(relevance);
            f(&mut names)
        }
    })
}

/// Runs `f`, in which the nodes decoded on this thread keep of their image
/// entries only what their summaries for `relevance` need ([`ImageEntries::Folded`]):
/// the memory a node takes while it is decoded is then bounded by what its
/// summary keeps, not by its image count.
pub fn decoding_for<R>(relevance: Arc<Relevance>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Relevance>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            DECODING_FOR.with_borrow_mut(|r| *r = previous);
        }
    }
    let _restore = Restore(DECODING_FOR.with_borrow_mut(|r| r.replace(relevance)));
    f()
}

fn present_images<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ImagesView>, D::Error> {
    ImagesView::deserialize(d).map(Some)
}

impl<'de> Deserialize<'de> for ImagesView {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match DECODING_FOR.with_borrow(Clone::clone) {
            None => {
                let list = LenientVec::<ImageView>::deserialize(d)?;
                Ok(ImagesView {
                    was_null: list.was_null,
                    invalid: list.invalid,
                    count: list.items.len(),
                    entries: ImageEntries::All(list.items),
                })
            }
            Some(relevance) => d.deserialize_any(FoldingVisitor { relevance }),
        }
    }
}

/// Reads `status.images` as [`LenientVec`] does, folding each entry into the
/// summary's figures as soon as it is read.
struct FoldingVisitor {
    relevance: Arc<Relevance>,
}

impl FoldingVisitor {
    fn not_a_list<E>(what: &str) -> Result<ImagesView, E> {
        Ok(ImagesView {
            invalid: Some(crate::decode::lenient::not_a_list_message(what)),
            ..ImagesView::default()
        })
    }
}

impl<'de> serde::de::Visitor<'de> for FoldingVisitor {
    type Value = ImagesView;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ImagesView, A::Error> {
        let mut folded = FoldedImages::default();
        let mut count = 0;
        let relevance = &self.relevance;
        let mut read = Ok(());
        folded.held = holding_for_node(|| {
            read = with_name_cache(relevance, |cache| -> Result<(), A::Error> {
                while let Some(entry) = seq.next_element_seed(FoldedEntry)? {
                    folded.add(count, &entry, relevance, cache);
                    count += 1;
                }
                Ok(())
            });
        });
        read?;
        folded.totals.relevant.shrink_to_fit();
        Ok(ImagesView {
            count,
            entries: ImageEntries::Folded(folded),
            ..ImagesView::default()
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<ImagesView, E> {
        Ok(ImagesView {
            was_null: true,
            ..ImagesView::default()
        })
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<ImagesView, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<ImagesView, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ImagesView, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Self::not_a_list("an object")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ImagesView, E> {
        Self::not_a_list("a boolean")
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ImagesView, E> {
        Self::not_a_list("a number")
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ImagesView, E> {
        Self::not_a_list("a number")
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ImagesView, E> {
        Self::not_a_list("a number")
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ImagesView, E> {
        Self::not_a_list("a string")
    }
}

/// A quantity as JSON has it: a string, or a bare number in hand-written files.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum QuantityText {
    Text(String),
    Number(serde_json::Number),
}

impl fmt::Display for QuantityText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityText::Text(s) => f.write_str(s),
            QuantityText::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One entry of `status.images`; its names are [`ImageName`]s, or, folded while
/// decoding, strings borrowed from the input where they can be.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(bound(deserialize = "S: Tolerant"))]
pub struct ImageView<S = ImageName> {
    #[serde(default, deserialize_with = "present")]
    pub names: Option<LenientVec<S>>,
    #[serde(default, rename = "sizeBytes")]
    pub size_bytes: Field<i64>,
}

impl<S> Default for ImageView<S> {
    fn default() -> Self {
        ImageView {
            names: None,
            size_bytes: None,
        }
    }
}

/// One name of an image entry, as reported. Thousands of nodes report the same
/// names: each distinct one is allocated once per decoding thread, and a node's
/// entries share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName(pub Arc<str>);

impl std::ops::Deref for ImageName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ImageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl ImageName {
    pub fn new(name: &str) -> ImageName {
        thread_local! {
            static SEEN: std::cell::RefCell<HashSet<Arc<str>, FastHash>> =
                std::cell::RefCell::default();
        }
        SEEN.with_borrow_mut(|seen| {
            if let Some(shared) = seen.get(name) {
                return ImageName(shared.clone());
            }
            if seen.len() >= NAME_CACHE_MAX {
                *seen = HashSet::default();
            }
            let shared: Arc<str> = Arc::from(name);
            seen.insert(shared.clone());
            ImageName(shared)
        })
    }
}

impl<'de> Deserialize<'de> for ImageName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ImageName::new(&s))
    }
}

impl Shape for ImageName {
    fn from_str(v: &str) -> Option<Self> {
        Some(ImageName::new(v))
    }
}

impl Tolerant for ImageName {
    fn tolerant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Lenient<Self>, D::Error> {
        fast(d)
    }
}

impl Tolerant for NodeSpecView {}
impl Tolerant for TaintView {}
impl Tolerant for ResourcesView {}
impl Tolerant for NodeInfoView {}
impl Tolerant for QuantityText {}
impl Tolerant for NodeView {}

/// An image entry is read in place when it is an object (one per image a node
/// reports: this is the bulk of a node); only another shape is buffered.
impl Shape for ImageView {
    fn from_map<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Lenient<Self>, A::Error> {
        read_entry(map, std::marker::PhantomData::<LenientVec<ImageName>>)
    }
}

/// Reads an image entry that is an object, its names with `names`: as the derived
/// Deserialize does on a buffered object, where a repeated key's last value wins.
fn read_entry<'de, S, A, N>(mut map: A, names: N) -> Result<Lenient<ImageView<S>>, A::Error>
where
    A: serde::de::MapAccess<'de>,
    N: serde::de::DeserializeSeed<'de, Value = LenientVec<S>> + Copy,
{
    let mut entry = ImageView::default();
    while let Some(key) = map.next_key::<ImageKey>()? {
        match key {
            ImageKey::Names => entry.names = Some(map.next_value_seed(names)?),
            ImageKey::SizeBytes => entry.size_bytes = map.next_value()?,
            ImageKey::Other => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(Lenient::Ok(entry))
}

/// Reads the names of an entry folded while decoding, without copying them where
/// the input allows.
#[derive(Clone, Copy)]
struct BorrowedNames;

impl<'de> serde::de::DeserializeSeed<'de> for BorrowedNames {
    type Value = LenientVec<Cow<'de, str>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        texts(d)
    }
}

/// An entry folded while decoding: an object is read with its names borrowed;
/// any other value is read as [`ImageView`] reads it.
struct FoldedEntry;

impl<'de> serde::de::DeserializeSeed<'de> for FoldedEntry {
    type Value = Lenient<ImageView<Cow<'de, str>>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// An entry that is not an object, read as [`ImageView`]: its names, if any,
/// as strings.
fn owned_names<'de>(entry: Lenient<ImageView>) -> Lenient<ImageView<Cow<'de, str>>> {
    let entry = match entry {
        Lenient::Ok(e) => e,
        Lenient::Invalid(e) => return Lenient::Invalid(e),
    };
    let names = entry.names.map(|list| LenientVec {
        items: list
            .items
            .into_iter()
            .map(|n| match n {
                Lenient::Ok(n) => Lenient::Ok(Cow::Owned(n.0.to_string())),
                Lenient::Invalid(e) => Lenient::Invalid(e),
            })
            .collect(),
        invalid: list.invalid,
        was_null: list.was_null,
    });
    Lenient::Ok(ImageView {
        names,
        size_bytes: entry.size_bytes,
    })
}

impl<'de> serde::de::Visitor<'de> for FoldedEntry {
    type Value = Lenient<ImageView<Cow<'de, str>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_entry(map, BorrowedNames)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.other(serde::de::value::BoolDeserializer::new(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.other(serde::de::value::I64Deserializer::new(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.other(serde::de::value::U64Deserializer::new(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.other(serde::de::value::F64Deserializer::new(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.other(serde::de::value::StrDeserializer::new(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.other(serde::de::value::UnitDeserializer::new())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.other(serde::de::value::SeqAccessDeserializer::new(seq))
    }
}

impl FoldedEntry {
    /// A value that is not an object, read as [`ImageView`] reads it.
    fn other<'de, D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> Result<Lenient<ImageView<Cow<'de, str>>>, D::Error> {
        Lenient::<ImageView>::deserialize(d).map(owned_names)
    }
}

/// The keys of an image entry, read without allocating.
enum ImageKey {
    Names,
    SizeBytes,
    Other,
}

impl<'de> Deserialize<'de> for ImageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ImageKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ImageKey, E> {
                Ok(match v {
                    "names" => ImageKey::Names,
                    "sizeBytes" => ImageKey::SizeBytes,
                    _ => ImageKey::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl Tolerant for ImageView {
    fn tolerant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Lenient<Self>, D::Error> {
        fast(d)
    }
}

super::label_values! {
    /// The part of a node that was malformed: the `field` label of
    /// `imagecap_invalid_node_data_total`.
    pub enum InvalidField {
        /// The whole item: undecodable, not a Node, or a duplicate name.
        Node = "node",
        Name = "name",
        Status = "status",
        Images = "images",
        ImageEntry = "image_entry",
        ImageNames = "image_names",
        ImageName = "image_name",
        ImageSize = "image_size",
        EphemeralStorageCapacity = "ephemeral_storage_capacity",
        EphemeralStorageAllocatable = "ephemeral_storage_allocatable",
        Unschedulable = "unschedulable",
        Taints = "taints",
        NodeInfo = "node_info",
    }
}

/// A malformed field found in a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub field: InvalidField,
    pub detail: String,
}

/// An image entry that can matter for prepull matching: its names and its
/// `sizeBytes`. Interned: the thousands of nodes that report the same entry
/// hold a pointer each (8 bytes), not a copy; the size travels with the names,
/// so a node keeps one pointer per entry and no list of sizes beside it.
#[derive(Clone)]
pub struct Entry(triomphe::ThinArc<EntrySize, ImageRef>);

impl Entry {
    /// The shared entry of `names` (already interned strings) and `size`.
    pub fn new(names: Vec<ImageRef>, size: EntrySize) -> Entry {
        Entry(intern_entry(size, names))
    }

    pub fn names(&self) -> &[ImageRef] {
        &self.0.slice
    }

    pub fn size(&self) -> EntrySize {
        self.0.header.header
    }

    /// Whether both are the one shared copy.
    pub fn ptr_eq(a: &Entry, b: &Entry) -> bool {
        std::ptr::eq(a.0.ptr(), b.0.ptr())
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        Entry::ptr_eq(self, other) || (self.size() == other.size() && self.names() == other.names())
    }
}

impl Eq for Entry {}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("names", &self.names())
            .field("size", &self.size())
            .finish()
    }
}

impl std::ops::Deref for Entry {
    type Target = [ImageRef];
    fn deref(&self) -> &[ImageRef] {
        self.names()
    }
}

impl<'a> IntoIterator for &'a Entry {
    type Item = &'a ImageRef;
    type IntoIter = std::slice::Iter<'a, ImageRef>;
    fn into_iter(self) -> Self::IntoIter {
        self.names().iter()
    }
}

/// What the exporter keeps of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub name: String,
    /// Entries in `status.images`, well-formed or not: the kubelet's count.
    pub image_count: u32,
    /// Sum of the well-formed, non-negative `sizeBytes`.
    pub image_size_bytes: u64,
    pub ephemeral_storage_capacity_bytes: Option<u64>,
    pub ephemeral_storage_allocatable_bytes: Option<u64>,
    pub unschedulable: bool,
    /// Every label: selectors and sources decide eligibility on them.
    pub labels: NodeLabels,
    pub taints: Vec<Taint>,
    /// The image entries that can matter for prepull matching, with their
    /// `sizeBytes`.
    pub relevant_images: Vec<Entry>,
    /// The smallest `sizeBytes` among the entries reported: where the kubelet cut
    /// its size-ordered list when the node is at its cap. `None` when the node
    /// reports no entry, or an entry without a well-formed size (the cut cannot be
    /// placed then).
    pub smallest_image_bytes: Option<u64>,
    /// `status.nodeInfo`'s container runtime version and architecture
    /// (`containerd://1.7.2 amd64`): runtimes count image sizes differently, so
    /// sizes are compared only between nodes that agree on it.
    pub runtime: Option<Arc<str>>,
    pub problems: Vec<Problem>,
    /// Every entry kept for a digest alone is here: the summary was made before
    /// the digests the wanted images are known by were told
    /// ([`Relevance::with_known_digests`]), and none was dropped since.
    pub all_digest_entries: bool,
    /// The entries held apart for this node while its list is read, until it is
    /// added to the list ([`ListSummaries::push`](super::list::ListSummaries::push)).
    pub held: Option<HeldSpan>,
}

impl NodeSummary {
    /// Drops the entries no wanted image can be while the wanted images are
    /// known by `known` digests: those kept for a digest in a wanted (or a
    /// pattern's) repository alone, that carry no tag kept and none of `known`.
    /// A wanted image is in an entry by a wanted tag or by one of `known`, so
    /// what the analysis reads of the node is the same without them. Where every
    /// node's images are its own (per-build tags), they are most of what a
    /// summary keeps. Returns whether any was dropped.
    pub fn drop_unknown_digests(&mut self, known: &KnownDigests) -> bool {
        if !self.has_unknown_digests(known) {
            return false;
        }
        self.relevant_images.retain(|e| is_known(e, known));
        self.relevant_images.shrink_to_fit();
        self.all_digest_entries = false;
        true
    }

    /// Whether [`NodeSummary::drop_unknown_digests`] would drop an entry.
    pub fn has_unknown_digests(&self, known: &KnownDigests) -> bool {
        self.relevant_images.iter().any(|e| !is_known(e, known))
    }

    /// What eligibility rules read.
    pub fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            name: &self.name,
            labels: &self.labels,
            taints: &self.taints,
            unschedulable: self.unschedulable,
        }
    }
}

/// What summarizing needs to know of image names, remembered from node to node:
/// per repository as written, that it is well-formed, its normalized form,
/// whether it is wanted and whether a pattern can match one of its tags. Names
/// are checked and matched without being copied: a name's tag and digest are
/// checked, its repository looked up here as written (checked and normalized
/// only the first time), and only a tag of a repository a pattern can match is
/// put to the patterns. Thousands of nodes report few repositories even when
/// every tag and digest is their own, so nothing here grows with the number of
/// distinct names.
#[derive(Default)]
pub struct NameCache {
    repos: HashMap<Box<str>, KnownRepo, FastHash>,
    /// What the facts were decided against.
    relevance: Option<Arc<Relevance>>,
    /// Where a name's normalized repository (and `repo:tag`) is assembled.
    buf: String,
    /// Whether `recent` is used ([`remembering_names`]).
    remember: bool,
    recent: RecentNames,
}

/// The verdicts of well-formed names seen lately, found by content: thousands
/// of nodes report the same names, and looking one up costs less than checking
/// it again. A fixed table of slots, one per hash, whose names are copied into
/// one buffer: a name never seen costs no allocation, and the memory is
/// bounded whatever the number of distinct names.
#[derive(Default)]
struct RecentNames {
    hasher: FastHash,
    /// Empty until the first name.
    slots: Vec<RecentSlot>,
    /// The names of the slots, one after the other; started over when full
    /// (a slot whose text is gone, or overwritten, no longer matches).
    text: String,
}

#[derive(Clone, Copy, Default)]
struct RecentSlot {
    hash: u64,
    start: u32,
    len: u32,
    tagged: bool,
    matches: bool,
    pattern_repo: bool,
    keep: bool,
}

/// Slots of the table (a power of two).
const RECENT_SLOTS: usize = 1 << 14;
/// Bytes of names the table keeps at most.
const RECENT_TEXT_MAX: usize = 1 << 20;
/// Names longer than this are checked each time.
const RECENT_NAME_MAX: usize = 512;

impl RecentNames {
    fn slot(&self, hash: u64) -> usize {
        (hash as usize) & (RECENT_SLOTS - 1)
    }

    fn get(&self, name: &str, hash: u64) -> Option<NameVerdict> {
        let slot = self.slots.get(self.slot(hash))?;
        let (start, end) = (slot.start as usize, slot.start as usize + slot.len as usize);
        (slot.hash == hash && self.text.get(start..end) == Some(name)).then_some(NameVerdict::Ok {
            tagged: slot.tagged,
            matches: slot.matches,
            pattern_repo: slot.pattern_repo,
            keep: slot.keep,
        })
    }

    fn put(&mut self, name: &str, hash: u64, verdict: &NameVerdict) {
        let &NameVerdict::Ok {
            tagged,
            matches,
            pattern_repo,
            keep,
        } = verdict
        else {
            return;
        };
        if name.len() > RECENT_NAME_MAX {
            return;
        }
        if self.slots.is_empty() {
            self.slots = vec![RecentSlot::default(); RECENT_SLOTS];
        }
        if self.text.len() + name.len() > RECENT_TEXT_MAX {
            self.text.clear();
        }
        let start = self.text.len();
        self.text.push_str(name);
        let i = self.slot(hash);
        self.slots[i] = RecentSlot {
            hash,
            start: start as u32,
            len: name.len() as u32,
            tagged,
            matches,
            pattern_repo,
            keep,
        };
    }

    fn clear(&mut self) {
        self.slots = Vec::new();
        self.text = String::new();
    }
}

/// A well-formed repository as written: its normalized form, and what it is to
/// the wanted images.
struct KnownRepo {
    normalized: Box<str>,
    facts: RepoFacts,
}

/// What a repository is to the wanted images.
#[derive(Clone, Copy)]
struct RepoFacts {
    /// [`Relevance::wants_repo`].
    wanted: bool,
    /// [`Relevance::pattern_may_match_repo`].
    pattern: bool,
}

/// What one name of an image entry is to its summary.
enum NameVerdict {
    /// Well-formed: whether it has a tag, whether it
    /// [matches](Relevance::name_matches), whether a pattern may match a tag of
    /// its repository, and whether the name is kept when its entry is: its tag
    /// is wanted now or matches a pattern, or it has a digest in a wanted or
    /// pattern repository (see [`Relevance`]).
    Ok {
        tagged: bool,
        matches: bool,
        pattern_repo: bool,
        keep: bool,
    },
    /// A runtime's placeholder for an untagged image: neither kept nor counted.
    Placeholder,
    Invalid(RefError),
}

/// Repositories a name cache holds at most; past that, repositories are
/// decided without being remembered.
const REPO_CACHE_MAX: usize = 4096;

/// Distinct names a name table holds at most (a few MB); past that, the table
/// starts over, so that one node with a million distinct images neither grows
/// it nor leaves it large.
const NAME_CACHE_MAX: usize = 20_000;

impl NameCache {
    /// Makes the cache answer for `relevance`, forgetting what it knew for another.
    pub fn prepare(&mut self, relevance: &Arc<Relevance>) {
        let same = self
            .relevance
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, relevance));
        if !same {
            self.repos = HashMap::default();
            self.recent.clear();
            self.relevance = Some(relevance.clone());
        }
    }

    /// How many repositories (as written) the cache knows.
    pub fn len(&self) -> usize {
        self.repos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }

    /// Checks `name` as [`ImageRef::parse`] does and matches it as
    /// [`Relevance::name_matches`] does, allocating nothing for a well-formed
    /// name of a known repository.
    fn judge(&mut self, name: &str, relevance: &Relevance) -> NameVerdict {
        use std::hash::BuildHasher;
        if !self.remember {
            return self.check(name, relevance);
        }
        let hash = self.recent.hasher.hash_one(name);
        if let Some(verdict) = self.recent.get(name, hash) {
            return verdict;
        }
        let verdict = self.check(name, relevance);
        self.recent.put(name, hash, &verdict);
        verdict
    }

    /// [`NameCache::judge`], without the recent names.
    fn check(&mut self, name: &str, relevance: &Relevance) -> NameVerdict {
        let (parts, facts) = match split(name).and_then(|s| Ok((s, self.known(s, relevance)?))) {
            Ok(known) => known,
            Err(RefError::Placeholder(_)) => return NameVerdict::Placeholder,
            Err(e) => return NameVerdict::Invalid(e),
        };
        let tag = parts.tag();
        let tag_wanted = facts.wanted && tag.is_some_and(|t| relevance.wants_tag(&self.buf, t));
        let tag_pattern = facts.pattern
            && tag.is_some_and(|t| {
                self.buf.push(':');
                self.buf.push_str(t);
                relevance.pattern_matches_tagged(&self.buf)
            });
        NameVerdict::Ok {
            tagged: tag.is_some(),
            matches: facts.wanted || tag_pattern,
            pattern_repo: facts.pattern,
            keep: tag_wanted
                || tag_pattern
                || (parts.has_digest() && (facts.wanted || facts.pattern)),
        }
    }

    /// The facts of `name`'s repository, whose normalized form is left in
    /// `self.buf`; or the error [`scan`](super::reference::scan) finds in it. A
    /// repository is checked and normalized the first time it is seen as written.
    fn known(&mut self, name: NameSplit<'_>, relevance: &Relevance) -> Result<RepoFacts, RefError> {
        self.buf.clear();
        if let Some(known) = self.repos.get(name.repository()) {
            self.buf.push_str(&known.normalized);
            return Ok(known.facts);
        }
        name.parts()?.push_repo(&mut self.buf);
        let facts = RepoFacts {
            wanted: relevance.wants_repo(&self.buf),
            pattern: relevance.pattern_may_match_repo(&self.buf),
        };
        if self.repos.len() < REPO_CACHE_MAX {
            let normalized = self.buf.as_str().into();
            self.repos
                .insert(name.repository().into(), KnownRepo { normalized, facts });
        }
        Ok(facts)
    }

    /// The normalized reference of a well-formed `name`, from shared copies of its
    /// strings.
    fn interned(&mut self, name: &str, relevance: &Relevance) -> Option<ImageRef> {
        let name = split(name).ok()?;
        self.known(name, relevance).ok()?;
        Some(name.interned(&self.buf))
    }
}

/// Summarizes a node. Returns `Err` only when the item is not a Node or has no
/// name; every other malformation is recorded in `problems` and the rest of the
/// node is kept.
pub fn summarize(node: &NodeView, relevance: &Relevance) -> Result<NodeSummary, Problem> {
    summarize_with(node, relevance, &mut NameCache::default())
}

/// [`summarize`], with names parsed and matched through `cache` (which
/// [`NameCache::prepare`] has made answer for `relevance`).
pub fn summarize_with(
    node: &NodeView,
    relevance: &Relevance,
    cache: &mut NameCache,
) -> Result<NodeSummary, Problem> {
    let name = node_name(node)?;
    let mut problems = Vec::new();
    let mut problem =
        |field: InvalidField, detail: String| problems.push(Problem { field, detail });

    let (unschedulable, taints) = spec_facts(node.spec.as_ref(), &mut problem);
    let labels = node_labels(&node.metadata);

    let mut summary = NodeSummary {
        name,
        image_count: 0,
        image_size_bytes: 0,
        ephemeral_storage_capacity_bytes: None,
        ephemeral_storage_allocatable_bytes: None,
        unschedulable,
        labels,
        taints,
        relevant_images: Vec::new(),
        smallest_image_bytes: None,
        runtime: None,
        problems: Vec::new(),
        all_digest_entries: relevance.known_digests().is_none(),
        held: None,
    };

    let Some(status) = &node.status else {
        problem(InvalidField::Status, "node has no status".into());
        summary.problems = problems;
        return Ok(summary);
    };

    (
        summary.ephemeral_storage_capacity_bytes,
        summary.ephemeral_storage_allocatable_bytes,
    ) = ephemeral_storage(status, &mut problem);
    summary.runtime = node_runtime(status.node_info.as_ref(), &mut problem);

    if let Some(images) = &status.images {
        let folding = ImageFolding {
            relevance,
            cache,
            summary: &mut summary,
        };
        folding.fold(images, &mut problem);
    }
    summary.relevant_images.shrink_to_fit();
    summary.problems = problems;
    Ok(summary)
}

/// The node's name, or the problem that keeps the item from being summarized
/// at all: it is not a Node (by its `kind`, when it has one), or it has no
/// name.
fn node_name(node: &NodeView) -> Result<String, Problem> {
    if let Some(kind) = node.kind.as_deref()
        && kind != "Node"
    {
        let name = node.metadata.name.as_deref().unwrap_or("<unnamed>");
        return Err(Problem {
            field: InvalidField::Node,
            detail: format!("{kind} {name:?} is not a Node"),
        });
    }
    match node.metadata.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(Problem {
            field: InvalidField::Name,
            detail: "node without metadata.name".into(),
        }),
    }
}

/// What eligibility reads of `spec`: whether the node is unschedulable
/// (`false` when unknown) and its well-formed taints (interned). A malformed
/// spec, flag or taint goes to `problem`.
fn spec_facts(
    spec: Option<&Lenient<NodeSpecView>>,
    problem: &mut impl FnMut(InvalidField, String),
) -> (bool, Vec<Taint>) {
    let spec = match spec {
        None => None,
        Some(Lenient::Invalid(e)) => {
            problem(InvalidField::Unschedulable, format!("spec: {e}"));
            None
        }
        Some(Lenient::Ok(spec)) => Some(spec),
    };
    let unschedulable = match spec.and_then(|s| s.unschedulable.as_ref()) {
        None => false,
        Some(Lenient::Ok(b)) => *b,
        Some(Lenient::Invalid(e)) => {
            problem(
                InvalidField::Unschedulable,
                format!("spec.unschedulable: {e}"),
            );
            false
        }
    };
    let taints = match spec.and_then(|s| s.taints.as_ref()) {
        None => Vec::new(),
        Some(list) => taints(list, problem),
    };
    (unschedulable, taints)
}

/// The well-formed taints of `spec.taints`, interned; what is malformed goes
/// to `problem`.
fn taints(
    list: &LenientVec<TaintView>,
    problem: &mut impl FnMut(InvalidField, String),
) -> Vec<Taint> {
    let mut taints = Vec::new();
    if let Some(e) = &list.invalid {
        problem(InvalidField::Taints, format!("spec.taints: {e}"));
    }
    for (i, t) in list.items.iter().enumerate() {
        match t {
            Lenient::Ok(t) => taints.push(Taint {
                key: intern(&Arc::from(t.key.as_str())),
                value: t
                    .value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .map(|v| intern(&Arc::from(v))),
                effect: intern(&Arc::from(t.effect.as_str())),
            }),
            Lenient::Invalid(e) => problem(InvalidField::Taints, format!("spec.taints[{i}]: {e}")),
        }
    }
    taints
}

/// Every label of the node, keys and values interned.
fn node_labels(metadata: &ObjectMeta) -> NodeLabels {
    NodeLabels::from_strs(
        metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// The node's ephemeral storage, in bytes: its capacity, then what is
/// allocatable. A malformed quantity goes to `problem` and counts as unknown.
fn ephemeral_storage(
    status: &NodeStatusView,
    problem: &mut impl FnMut(InvalidField, String),
) -> (Option<u64>, Option<u64>) {
    let capacity = storage(
        status.capacity.as_ref(),
        InvalidField::EphemeralStorageCapacity,
        "status.capacity",
        problem,
    );
    let allocatable = storage(
        status.allocatable.as_ref(),
        InvalidField::EphemeralStorageAllocatable,
        "status.allocatable",
        problem,
    );
    (capacity, allocatable)
}

/// The runtime key of `status.nodeInfo` ([`runtime_key`]); a malformed
/// `nodeInfo` goes to `problem`.
fn node_runtime(
    info: Option<&Lenient<NodeInfoView>>,
    problem: &mut impl FnMut(InvalidField, String),
) -> Option<Arc<str>> {
    match info {
        None => None,
        Some(Lenient::Ok(info)) => runtime_key(info),
        Some(Lenient::Invalid(e)) => {
            problem(InvalidField::NodeInfo, format!("status.nodeInfo: {e}"));
            None
        }
    }
}

/// What folding a node's `status.images` into its summary works with: names
/// are matched against `relevance` through `cache`, and the results land in
/// `summary`.
struct ImageFolding<'a> {
    relevance: &'a Relevance,
    cache: &'a mut NameCache,
    summary: &'a mut NodeSummary,
}

impl ImageFolding<'_> {
    /// Sets the summary's image count, total size, relevant entries and their
    /// sizes, and smallest size from `images`: folding each entry now, or
    /// taking what was folded while decoding. Malformations go to `problem`.
    fn fold(self, images: &ImagesView, problem: &mut impl FnMut(InvalidField, String)) {
        if images.was_null {
            problem(InvalidField::Images, "status.images is null".into());
        }
        if let Some(e) = &images.invalid {
            problem(InvalidField::Images, format!("status.images: {e}"));
        }
        self.summary.image_count = u32::try_from(images.count).unwrap_or(u32::MAX);
        let mut all = ImageTotals::default();
        let totals = match &images.entries {
            ImageEntries::All(items) => {
                self.summary.held = holding_for_node(|| {
                    for (i, entry) in items.iter().enumerate() {
                        fold_entry(i, entry, self.relevance, self.cache, &mut all, problem);
                    }
                });
                &all
            }
            // Decided while decoding (for the relevance of that moment: should
            // it have changed since, the nodes are summarized again anyway).
            ImageEntries::Folded(folded) => {
                for p in &folded.problems {
                    problem(p.field, p.detail.clone());
                }
                self.summary.held = folded.held;
                &folded.totals
            }
        };
        self.summary.image_size_bytes = totals.size_bytes;
        self.summary.relevant_images = totals.relevant.clone();
        self.summary.smallest_image_bytes = totals.smallest.filter(|_| images.count > 0);
    }
}

/// `containerd://1.7.2 amd64`, interned: the few distinct values a cluster has
/// are shared by all its nodes.
fn runtime_key(info: &NodeInfoView) -> Option<Arc<str>> {
    let version = info.container_runtime_version.as_deref().unwrap_or("");
    let arch = info.architecture.as_deref().unwrap_or("");
    if version.is_empty() && arch.is_empty() {
        return None;
    }
    Some(intern_str(&format!("{version} {arch}")))
}

/// Adds image entry `i` to a summary's size and relevant entries, its
/// malformations to `problem`.
fn fold_entry<S: AsRef<str>>(
    i: usize,
    entry: &Lenient<ImageView<S>>,
    relevance: &Relevance,
    cache: &mut NameCache,
    totals: &mut ImageTotals,
    problem: &mut impl FnMut(InvalidField, String),
) {
    let entry = match entry {
        Lenient::Ok(e) => e,
        Lenient::Invalid(e) => {
            problem(InvalidField::ImageEntry, format!("status.images[{i}]: {e}"));
            totals.smallest = None;
            return;
        }
    };
    let size = match &entry.size_bytes {
        Some(Lenient::Ok(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    totals.smallest = totals.smallest.zip(size).map(|(a, b)| a.min(b));
    match &entry.size_bytes {
        Some(Lenient::Ok(n)) if *n >= 0 => {
            totals.size_bytes = totals.size_bytes.saturating_add(*n as u64)
        }
        Some(Lenient::Ok(n)) => problem(
            InvalidField::ImageSize,
            format!("status.images[{i}].sizeBytes is negative: {n}"),
        ),
        Some(Lenient::Invalid(e)) => problem(
            InvalidField::ImageSize,
            format!("status.images[{i}].sizeBytes: {e}"),
        ),
        None => problem(
            InvalidField::ImageSize,
            format!("status.images[{i}] has no sizeBytes"),
        ),
    }
    if let Some(refs) = entry_names(i, entry, relevance, cache, problem)
        && relevance.keeps_entry(&refs)
    {
        let size = EntrySize::new(size);
        // Until the digests the wanted images are known by are told, an entry
        // kept for its digests alone is held apart while a list is read.
        if relevance.known_digests().is_some() || !hold(&refs, size, totals.relevant.len()) {
            totals.relevant.push(Entry::new(refs, size));
        }
    }
}

fn storage(
    resources: Option<&Lenient<ResourcesView>>,
    field: InvalidField,
    path: &str,
    problem: &mut impl FnMut(InvalidField, String),
) -> Option<u64> {
    let resources = match resources {
        None => return None,
        Some(Lenient::Invalid(e)) => {
            problem(field, format!("{path}: {e}"));
            return None;
        }
        Some(Lenient::Ok(r)) => r,
    };
    match resources.ephemeral_storage.as_ref() {
        None => None,
        Some(Lenient::Ok(q)) => match parse_bytes(&q.to_string()) {
            Ok(b) => Some(b),
            Err(e) => {
                problem(field, format!("{path}[ephemeral-storage]: {e}"));
                None
            }
        },
        Some(Lenient::Invalid(e)) => {
            problem(field, format!("{path}[ephemeral-storage]: {e}"));
            None
        }
    }
}

/// The entry's names if it can matter for prepull matching (interned), else
/// `None`. Malformed names are reported as problems either way.
fn entry_names<S: AsRef<str>>(
    i: usize,
    entry: &ImageView<S>,
    relevance: &Relevance,
    cache: &mut NameCache,
    problem: &mut impl FnMut(InvalidField, String),
) -> Option<Vec<ImageRef>> {
    let Some(names) = &entry.names else {
        problem(
            InvalidField::ImageNames,
            format!("status.images[{i}] has no names"),
        );
        return None;
    };
    if let Some(e) = &names.invalid {
        problem(
            InvalidField::ImageNames,
            format!("status.images[{i}].names: {e}"),
        );
    }
    if names.items.is_empty() {
        problem(
            InvalidField::ImageNames,
            format!("status.images[{i}].names is empty"),
        );
    }
    // First what decides relevance, without copying any name, and which of the
    // first 64 names are kept (the kubelet reports 5 at most; past 64, a name is
    // judged again)...
    let (mut count, mut all_untagged, mut matches, mut pattern_repo) = (0, true, false, false);
    let mut kept = 0u64;
    for (j, name) in names.items.iter().enumerate() {
        let verdict = match name {
            Lenient::Ok(s) => cache.judge(s.as_ref(), relevance),
            Lenient::Invalid(e) => {
                problem(
                    InvalidField::ImageName,
                    format!("status.images[{i}].names[{j}]: {e}"),
                );
                continue;
            }
        };
        match verdict {
            NameVerdict::Ok {
                tagged,
                matches: m,
                pattern_repo: p,
                keep,
            } => {
                if keep && j < 64 {
                    kept |= 1 << j;
                }
                count += 1;
                all_untagged &= !tagged;
                matches |= m;
                pattern_repo |= p;
            }
            NameVerdict::Placeholder => {}
            NameVerdict::Invalid(e) => problem(
                InvalidField::ImageName,
                format!("status.images[{i}].names[{j}]: {e}"),
            ),
        }
    }
    if !relevance.entry_is_relevant_for_repos(count, all_untagged, matches, pattern_repo) {
        return None;
    }
    // ...then, for the few entries kept, the names kept (thousands of nodes keep
    // dozens of entries each, so no spare capacity), owned by the interner alone.
    let mut refs = Vec::with_capacity(kept.count_ones() as usize);
    for (j, name) in names.items.iter().enumerate() {
        let Lenient::Ok(s) = name else { continue };
        let keep = if j < 64 {
            kept & (1 << j) != 0
        } else {
            matches!(
                cache.judge(s.as_ref(), relevance),
                NameVerdict::Ok { keep: true, .. }
            )
        };
        if keep && let Some(r) = cache.interned(s.as_ref(), relevance) {
            refs.push(r);
        }
    }
    refs.shrink_to_fit();
    (!refs.is_empty()).then_some(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes of a summary's entries, in their order.
    fn sizes(s: &NodeSummary) -> Vec<Option<u64>> {
        s.relevant_images.iter().map(|e| e.size().get()).collect()
    }
    use crate::analysis::wanted::tests::wanted as config;
    use serde_json::json;

    fn wanted(exact: &[&str], patterns: &[&str], selector: &[(&str, &str)]) -> Relevance {
        Relevance::new(&config(exact, patterns, selector), [])
    }

    #[test]
    fn recent_names_are_remembered_in_a_batch_and_given_back_after() {
        let relevance = Arc::new(wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]));
        let node = view(json!({
            "metadata": {"name": "n"},
            "status": {"images": [
                {"names": ["busybox:1.36", "ghcr.io/x/lab:w_1"], "sizeBytes": 10},
                {"names": ["ghcr.io/x/lab:r_1"], "sizeBytes": 20},
                {"names": ["quay.io/y/z:2"], "sizeBytes": 30}]}
        }));
        let summary = || with_name_cache(&relevance, |c| summarize_with(&node, &relevance, c));
        // A test thread of its own: nothing remembered yet.
        forget_recent_names();
        // One node at a time (a watch event): each name checked, no table.
        let alone = summary().unwrap();
        assert_eq!(recent_names_bytes(), 0);
        // In a batch (a list page), the names are remembered for the next node,
        // which gets the same summary from them.
        let (first, again) = remembering_names(|| (summary().unwrap(), summary().unwrap()));
        assert!(recent_names_bytes() > 0);
        assert_eq!(first, alone);
        assert_eq!(again, alone);
        // The batch over, a node is summarized as alone; the list over, the table
        // is given back.
        assert_eq!(summary().unwrap(), alone);
        forget_recent_names();
        assert_eq!(recent_names_bytes(), 0);
    }

    #[test]
    fn entries_folded_while_decoding_give_the_same_summary() {
        let relevance = Arc::new(wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]));
        let digest = format!("ghcr.io/x/lab@sha256:{}", "ab".repeat(32));
        let other = format!("ghcr.io/x/other@sha256:{}", "cd".repeat(32));
        let text = json!({
            "metadata": {"name": "n"},
            "status": {
                "capacity": {"ephemeral-storage": "100Gi"},
                "images": [
                    {"names": ["docker.io/library/busybox:1.36"], "sizeBytes": 10},
                    {"names": ["busybox:1.0", "Bad Name"], "sizeBytes": -1},
                    {"names": ["ghcr.io/x/lab:w_1", "ghcr.io/x/lab:r_1"]},
                    {"names": [digest], "sizeBytes": "big"},
                    {"names": [other, "<none>@<none>"], "sizeBytes": 3},
                    {"names": ["reg\\u002fx/a:1", "nginx:1"], "sizeBytes": 3},
                    [["busybox:2", 5], 4],
                    {"names": ["nginx:1"], "sizeBytes": 5, "extra": [1]},
                    {"names": []},
                    {"sizeBytes": 1},
                    7,
                    {"names": "x", "sizeBytes": 2},
                ],
            },
        })
        .to_string();
        let whole: NodeView = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            whole
                .status
                .as_ref()
                .unwrap()
                .images
                .as_ref()
                .unwrap()
                .entries,
            ImageEntries::All(_)
        ));
        let folded: NodeView =
            decoding_for(relevance.clone(), || serde_json::from_str(&text).unwrap());
        assert!(matches!(
            folded
                .status
                .as_ref()
                .unwrap()
                .images
                .as_ref()
                .unwrap()
                .entries,
            ImageEntries::Folded(_)
        ));
        let (a, b) = (
            summarize(&whole, &relevance).unwrap(),
            summarize(&folded, &relevance).unwrap(),
        );
        assert_eq!(a.image_count, 12);
        // busybox:1.36, lab:w_1 without lab:r_1, the lab digest. Of busybox, only
        // the wanted tag: busybox:1.0 and busybox:2 (an entry written as a list, as
        // a buffered object would read it) cannot match, and have no digest.
        let kept: Vec<Vec<String>> = a
            .relevant_images
            .iter()
            .map(|e| e.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            kept,
            [
                vec!["docker.io/library/busybox:1.36".to_string()],
                vec!["ghcr.io/x/lab:w_1".to_string()],
                vec![digest.clone()],
            ]
        );
        assert_eq!(sizes(&a), [Some(10), None, None]);
        assert!(
            a.relevant_images
                .iter()
                .flatten()
                .all(|r| &*r.repo != "ghcr.io/x/other"),
            "a digest no pattern can match a tag of is not kept: {:?}",
            a.relevant_images
        );
        assert!(a.problems.len() >= 6, "{:?}", a.problems);
        assert_eq!(a, b);
        // Outside the scope, decoding keeps every entry again.
        let again: NodeView = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            again.status.unwrap().images.unwrap().entries,
            ImageEntries::All(_)
        ));
    }

    #[test]
    fn metadata_keeps_name_labels_and_version_and_skips_the_rest() {
        let text = json!({
            "metadata": {
                "name": "n", "resourceVersion": "42", "uid": "u",
                "labels": {"a": "1"},
                "annotations": {"x": "y"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {"f:images": {}}}}],
            },
        })
        .to_string();
        let node: NodeView = serde_json::from_str(&text).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("n"));
        assert_eq!(node.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(node.metadata.labels.unwrap()["a"], "1");
        assert_eq!(node.metadata.annotations, None, "not built");
        assert_eq!(node.metadata.managed_fields, None, "not built");
        // What is skipped cannot make the node unreadable; what is read can.
        let odd = json!({"metadata": {"name": "n", "annotations": 5, "managedFields": "x"}});
        let node: NodeView = serde_json::from_value(odd).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("n"));
        let bad = json!({"metadata": {"name": "n", "labels": 5}});
        assert!(serde_json::from_value::<NodeView>(bad).is_err());
        let null: NodeView = serde_json::from_value(json!({"metadata": null})).unwrap();
        assert_eq!(null.metadata, ObjectMeta::default());
    }

    #[test]
    fn past_64_names_an_entry_keeps_only_the_names_that_can_match() {
        let relevance = wanted(&["busybox:1.36"], &[], &[]);
        let mut names: Vec<String> = (0..70).map(|i| format!("busybox:old-{i}")).collect();
        names[3] = "busybox:1.36".into();
        names[66] = "busybox:1.36".into();
        names[67] = format!("busybox@sha256:{}", "ab".repeat(32));
        let entry = entry_of(&names);
        let mut cache = NameCache::default();
        let kept =
            entry_names(0, &entry, &relevance, &mut cache, &mut |_, d| panic!("{d}")).unwrap();
        let kept: Vec<String> = kept.iter().map(ToString::to_string).collect();
        let tag = "docker.io/library/busybox:1.36".to_string();
        let digest = format!("docker.io/library/busybox@sha256:{}", "ab".repeat(32));
        assert_eq!(kept, [tag.clone(), tag, digest]);
    }

    #[test]
    fn entry_sizes_take_8_bytes_and_keep_unknown_apart() {
        assert_eq!(std::mem::size_of::<EntrySize>(), 8);
        assert_eq!(EntrySize::new(None).get(), None);
        assert_eq!(EntrySize::new(Some(0)).get(), Some(0));
        let largest = u64::try_from(i64::MAX).unwrap();
        assert_eq!(EntrySize::new(Some(largest)).get(), Some(largest));
        assert_eq!(EntrySize::new(Some(u64::MAX)).get(), Some(u64::MAX - 1));
        assert_eq!(format!("{:?}", EntrySize::new(Some(7))), "Some(7)");
    }

    #[test]
    fn the_name_cache_remembers_repositories_not_names() {
        let relevance = wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]);
        let mut cache = NameCache::default();
        for i in 0..100 {
            let verdict = cache.judge(&format!("quay.io/a/b:v{i}"), &relevance);
            assert!(matches!(
                verdict,
                NameVerdict::Ok {
                    tagged: true,
                    matches: false,
                    pattern_repo: false,
                    keep: false,
                }
            ));
            let verdict = cache.judge(&format!("ghcr.io/x/lab:w_{i}"), &relevance);
            assert!(matches!(
                verdict,
                NameVerdict::Ok {
                    matches: true,
                    pattern_repo: true,
                    ..
                }
            ));
        }
        assert!(matches!(
            cache.judge("busybox@sha256:1234", &relevance),
            NameVerdict::Ok {
                tagged: false,
                matches: true,
                ..
            }
        ));
        assert!(matches!(
            cache.judge("ghcr.io/x/lab:r_1", &relevance),
            NameVerdict::Ok {
                matches: false,
                pattern_repo: true,
                ..
            }
        ));
        assert!(matches!(
            cache.judge("<none>:<none>", &relevance),
            NameVerdict::Placeholder
        ));
        assert!(matches!(
            cache.judge("Bad Name", &relevance),
            NameVerdict::Invalid(RefError::Invalid(..))
        ));
        assert_eq!(cache.len(), 3, "one per repository");
    }

    fn view(v: serde_json::Value) -> NodeView {
        serde_json::from_value(v).expect("decodes")
    }

    fn node(images: serde_json::Value) -> NodeView {
        view(json!({
            "metadata": {"name": "n1", "labels": {"pool": "lab"}},
            "status": {
                "capacity": {"ephemeral-storage": "1Ti"},
                "allocatable": {"ephemeral-storage": "900Gi"},
                "images": images
            }
        }))
    }

    fn fields(s: &NodeSummary) -> Vec<&'static str> {
        s.problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn every_summary_field() {
        let w = wanted(&["busybox:1.36"], &[], &[("pool", "lab")]);
        let s = summarize(
            &node(json!([
                {"names": ["ghcr.io/x/big@sha256:1111111111111111111111111111111111111111111111111111111111111111", "ghcr.io/x/big:v1"], "sizeBytes": 5_000_000_000i64},
                {"names": ["docker.io/library/busybox:1.36"], "sizeBytes": 4_000_000},
            ])),
            &w,
        )
        .unwrap();
        assert_eq!(s.name, "n1");
        assert_eq!(s.image_count, 2);
        assert_eq!(s.image_size_bytes, 5_004_000_000);
        assert_eq!(s.ephemeral_storage_capacity_bytes, Some(1 << 40));
        assert_eq!(s.ephemeral_storage_allocatable_bytes, Some(900 << 30));
        assert!(!s.unschedulable);
        assert_eq!(s.labels.get("pool"), Some("lab"));
        assert_eq!(s.relevant_images.len(), 1, "only busybox's entry is kept");
        assert_eq!(
            s.relevant_images[0][0].to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(sizes(&s), [Some(4_000_000)], "beside its entry");
        assert_eq!(s.smallest_image_bytes, Some(4_000_000));
        assert_eq!(s.runtime, None, "no nodeInfo");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn the_cut_and_the_runtime_for_the_size_rule() {
        let w = wanted(&["busybox:1.36"], &[], &[]);
        let view_of = |images: serde_json::Value, info: serde_json::Value| {
            view(json!({"metadata": {"name": "n"},
                        "status": {"images": images, "nodeInfo": info}}))
        };
        let info = json!({"containerRuntimeVersion": "containerd://1.7.2", "architecture": "amd64",
                          "kubeletVersion": "v1.29.0"});
        let s = summarize(
            &view_of(
                json!([{"names": ["a:1"], "sizeBytes": 300}, {"names": ["busybox:1.36"], "sizeBytes": 200},
                       {"names": ["b:1"], "sizeBytes": 900}]),
                info.clone(),
            ),
            &w,
        )
        .unwrap();
        assert_eq!(s.smallest_image_bytes, Some(200));
        assert_eq!(sizes(&s), [Some(200)]);
        assert_eq!(s.runtime.as_deref(), Some("containerd://1.7.2 amd64"));
        // An entry without a well-formed size: the cut cannot be placed.
        for bad in [json!(-1), json!("big"), serde_json::Value::Null] {
            let s = summarize(
                &view_of(
                    json!([{"names": ["a:1"], "sizeBytes": 300}, {"names": ["busybox:1.36"], "sizeBytes": bad}]),
                    info.clone(),
                ),
                &w,
            )
            .unwrap();
            assert_eq!(s.smallest_image_bytes, None, "{bad}");
            assert_eq!(sizes(&s), [None], "{bad}");
        }
        let s = summarize(&view_of(json!([]), info), &w).unwrap();
        assert_eq!(s.smallest_image_bytes, None, "no entry, no cut");
        // A malformed nodeInfo costs that field only.
        let s = summarize(
            &view_of(json!([{"names": ["a:1"], "sizeBytes": 3}]), json!("x")),
            &w,
        )
        .unwrap();
        assert_eq!(s.runtime, None);
        assert_eq!(s.smallest_image_bytes, Some(3));
        assert_eq!(
            s.problems.iter().map(|p| p.field).collect::<Vec<_>>(),
            [InvalidField::NodeInfo]
        );
    }

    #[test]
    fn taints_and_the_cordon_are_kept_for_eligibility() {
        let w = wanted(&[], &[], &[]);
        let s = summarize(
            &view(json!({
                "metadata": {"name": "t", "labels": {"pool": "lab"}},
                "spec": {"unschedulable": true, "taints": [
                    {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": "2024-01-01T00:00:00Z"},
                    {"effect": "NoSchedule"}
                ]},
                "status": {}
            })),
            &w,
        )
        .unwrap();
        assert!(s.unschedulable);
        let taints: Vec<String> = s.taints.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            taints,
            [
                "dedicated=gpu:NoSchedule",
                "node.kubernetes.io/unschedulable=:NoSchedule"
            ]
        );
        assert_eq!(
            fields(&s),
            vec!["taints"],
            "the taint without a key is counted"
        );
    }

    #[test]
    fn malformed_fields_are_counted_and_the_rest_is_kept() {
        let w = wanted(&[], &[], &[]);
        let s = summarize(
            &node(json!([
                {"names": [], "sizeBytes": 10},
                {"names": null, "sizeBytes": -5},
                {"names": ["", "Upper:1", "<none>@<none>", 7, "ok/image:1"], "sizeBytes": "big"},
                {"sizeBytes": 20, "unknownField": {"deep": [1, 2]}},
                "not an object",
                {"names": ["fine:1"]},
            ])),
            &w,
        )
        .unwrap();
        assert_eq!(s.image_count, 6, "every entry counts toward the cap");
        assert_eq!(s.image_size_bytes, 30);
        assert_eq!(
            fields(&s),
            vec![
                "image_names", // []
                "image_size",  // -5
                "image_names", // null
                "image_size",  // "big"
                "image_name",  // ""
                "image_name",  // Upper
                "image_name",  // 7
                "image_names", // missing
                "image_entry", // "not an object"
                "image_size",  // missing
            ]
        );
        assert_eq!(s.ephemeral_storage_capacity_bytes, Some(1 << 40));
    }

    #[test]
    fn missing_status_and_null_images() {
        let w = wanted(&[], &[], &[]);
        let s = summarize(&view(json!({"metadata": {"name": "bare"}})), &w).unwrap();
        assert_eq!(fields(&s), vec!["status"]);
        assert_eq!(s.image_count, 0);

        let s = summarize(&node(serde_json::Value::Null), &w).unwrap();
        assert_eq!(fields(&s), vec!["images"]);

        let s = summarize(&node(json!({"a": 1})), &w).unwrap();
        assert_eq!(fields(&s), vec!["images"]);
        assert_eq!(s.ephemeral_storage_capacity_bytes, Some(1 << 40));

        // Absent images (a kubelet with nodeStatusMaxImages: 0) are not malformed.
        let s = summarize(
            &view(json!({"metadata": {"name": "zero"}, "status": {"capacity": {}}})),
            &w,
        )
        .unwrap();
        assert!(s.problems.is_empty());
        assert_eq!(s.ephemeral_storage_capacity_bytes, None);
    }

    #[test]
    fn bad_quantities_cost_only_their_field() {
        let w = wanted(&[], &[], &[]);
        let s = summarize(
            &view(json!({
                "metadata": {"name": "q"},
                "spec": {"unschedulable": "yes"},
                "status": {
                    "capacity": {"ephemeral-storage": "12 parsecs"},
                    "allocatable": {"ephemeral-storage": 95551679124u64},
                    "images": [{"names": ["a:1"], "sizeBytes": 1}]
                }
            })),
            &w,
        )
        .unwrap();
        assert_eq!(
            fields(&s),
            vec!["unschedulable", "ephemeral_storage_capacity"]
        );
        assert_eq!(s.ephemeral_storage_capacity_bytes, None);
        assert_eq!(s.ephemeral_storage_allocatable_bytes, Some(95_551_679_124));
        assert_eq!(s.image_count, 1);
        let detail = &s.problems[1].detail;
        assert!(detail.contains("12 parsecs"), "{detail}");
    }

    #[test]
    fn resource_lists_and_spec_of_the_wrong_type() {
        let s = summarize(
            &view(json!({
                "metadata": {"name": "w"},
                "spec": [1],
                "status": {"capacity": false, "allocatable": "x", "images": [{"names": ["a:1"], "sizeBytes": 1}]}
            })),
            &wanted(&[], &[], &[]),
        )
        .unwrap();
        assert_eq!(
            fields(&s),
            vec![
                "unschedulable",
                "ephemeral_storage_capacity",
                "ephemeral_storage_allocatable"
            ]
        );
        assert_eq!(s.image_count, 1);
    }

    #[test]
    fn a_node_without_a_name_is_an_error() {
        let e = summarize(&view(json!({"status": {}})), &wanted(&[], &[], &[])).unwrap_err();
        assert_eq!(e.field, InvalidField::Name);
    }

    #[test]
    fn items_of_another_kind_are_not_nodes() {
        let w = wanted(&["busybox:1"], &[], &[]);
        let pod = view(json!({"kind": "Pod", "metadata": {"name": "web-0"}, "status": {}}));
        let e = summarize(&pod, &w).unwrap_err();
        assert_eq!(e.field, InvalidField::Node);
        assert!(e.detail.contains("Pod \"web-0\""), "{}", e.detail);
        let node = view(json!({"kind": "Node", "metadata": {"name": "n"}, "status": {}}));
        assert_eq!(summarize(&node, &w).unwrap().name, "n");
    }

    /// Image names of every kind: Docker Hub short forms, registries with ports
    /// and in upper case, tags, digests (canonical, upper-case, odd), runtime
    /// placeholders and malformed strings.
    fn image_name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let domain = "(|docker\\.io/|index\\.docker\\.io/|library/|ghcr\\.io/x/|GHCR\\.io/x/|localhost:5000/|localhost/|reg\\.io:123456/|\\[::1\\]:5000/|-a\\.io/)";
        let path = "(lab|busybox|a[0-9]|other|Up|a__b|a\\.\\.b)";
        let tag = "(|:w_[0-9]|:r_1|:1\\.36|:latest|:-x|:)";
        let digest = "(|@sha256:(ab){32}|@sha256:(AB){32}|@sha256:1234|@SHA256:ab|@sha256:|@x)";
        prop_oneof![
            4 => (domain, path, tag, digest).prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}")),
            1 => prop_oneof![
                Just("<none>@<none>".to_string()),
                Just("<none>:<none>".to_string()),
                Just(String::new()),
                Just("  ".to_string()),
            ],
            1 => "[a-zA-Z0-9./:@_\\-\\[\\] ]{0,30}",
        ]
    }

    fn relevance_for(k: usize) -> Relevance {
        let other = format!("ghcr.io/x/other@sha256:{}", "ab".repeat(32));
        match k {
            0 => wanted(&["busybox:1.36", &other], &["^ghcr\\.io/x/lab:w_"], &[]),
            1 => wanted(&["busybox:1.36"], &[], &[]),
            2 => wanted(&[], &["1$", "^docker\\.io/library/a"], &[]),
            _ => wanted(&[], &[], &[]),
        }
    }

    /// An image entry of `names`, well-formed, without a size.
    fn entry_of(names: &[String]) -> ImageView<Cow<'_, str>> {
        ImageView {
            names: Some(LenientVec {
                items: names
                    .iter()
                    .map(|n| Lenient::Ok(Cow::Borrowed(n.as_str())))
                    .collect(),
                invalid: None,
                was_null: false,
            }),
            size_bytes: None,
        }
    }

    /// Whether a name of a kept entry is kept, as a runtime summary decides it.
    fn keeps_name(relevance: &Relevance, r: &ImageRef) -> bool {
        relevance.runtime_keeps(r) != crate::analysis::wanted::RuntimeKeep::No
    }

    /// What summarizing makes of an entry's names, from every name parsed and
    /// matched one by one: the entry, if relevant, with the names that can
    /// match.
    fn entry_names_by_parsing(
        names: &[String],
        relevance: &Relevance,
    ) -> (Option<Vec<ImageRef>>, Vec<String>) {
        let mut problems = Vec::new();
        if names.is_empty() {
            problems.push("status.images[0].names is empty".to_string());
        }
        let mut refs = Vec::new();
        for (j, n) in names.iter().enumerate() {
            match ImageRef::parse(n) {
                Ok(r) => refs.push(r),
                Err(RefError::Placeholder(_)) => {}
                Err(e) => problems.push(format!("status.images[0].names[{j}]: {e}")),
            }
        }
        let kept = relevance.is_relevant(&refs).then(|| {
            let kept: Vec<ImageRef> = refs
                .into_iter()
                .filter(|r| keeps_name(relevance, r))
                .collect();
            kept
        });
        (kept.filter(|k| !k.is_empty()), problems)
    }

    /// A repository checked once as written answers for every tag and digest of
    /// it: each name is judged as parsing judges it, whatever came before, and
    /// a spelling of the same repository is a repository of its own.
    #[test]
    fn a_repository_checked_once_answers_for_all_its_names() {
        let relevance = relevance_for(0);
        let d = "ab".repeat(32);
        let names = [
            "ghcr.io/x/lab:w_1".to_string(),
            "ghcr.io/x/lab:r_1".to_string(),
            format!("ghcr.io/x/lab@sha256:{d}"),
            format!("ghcr.io/x/lab@sha256:{}", d.to_uppercase()),
            "ghcr.io/x/lab:-bad".to_string(),
            "ghcr.io/x/lab@sha256:".to_string(),
            "  ghcr.io/x/lab:w_2 ".to_string(),
            "ghcr.io/x/Lab:w_1".to_string(),
            "ghcr.io/x/Lab:w_2".to_string(),
            "busybox:1.36".to_string(),
            "docker.io/library/busybox:1.36".to_string(),
            "busybox".to_string(),
            format!("busybox@sha256:{d}"),
            "-a.io/busybox:1".to_string(),
            "-a.io/busybox:2".to_string(),
        ];
        let mut cache = NameCache::default();
        for n in &names {
            // `check`: without the recent names, so the repository is what answers.
            match (ImageRef::parse(n), cache.check(n, &relevance)) {
                (
                    Ok(r),
                    NameVerdict::Ok {
                        tagged,
                        matches,
                        keep,
                        ..
                    },
                ) => {
                    assert_eq!(tagged, r.tag.is_some(), "{n}");
                    assert_eq!(matches, relevance.name_matches(&r), "{n}");
                    assert_eq!(keep, keeps_name(&relevance, &r), "{n}");
                    assert_eq!(cache.interned(n, &relevance), Some(r), "{n}");
                }
                (Err(e), NameVerdict::Invalid(f)) => {
                    assert_eq!(e, f, "{n}");
                    assert_eq!(cache.interned(n, &relevance), None, "{n}");
                }
                (parsed, _) => panic!("{n}: parsed as {parsed:?}, judged otherwise"),
            }
        }
        // ghcr.io/x/lab, busybox, docker.io/library/busybox: the malformed
        // spellings are not kept.
        assert_eq!(cache.len(), 3);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Judging a name without parsing it says what parsing and matching it
        /// says, and an entry's names are kept (and reported) as then.
        #[test]
        fn names_judged_without_parsing_match_the_parsed_names(
            names in proptest::collection::vec(image_name(), 0..7),
            k in 0usize..4,
        ) {
            let relevance = relevance_for(k);
            let mut cache = NameCache { remember: true, ..NameCache::default() };
            // Twice: the second time from the recent names.
            for n in names.iter().chain(&names) {
                match (ImageRef::parse(n), cache.judge(n, &relevance)) {
                    (Ok(r), NameVerdict::Ok { tagged, matches, pattern_repo, keep }) => {
                        proptest::prop_assert_eq!(tagged, r.tag.is_some());
                        proptest::prop_assert_eq!(keep, keeps_name(&relevance, &r), "{}", n);
                        proptest::prop_assert_eq!(matches, relevance.name_matches(&r), "{}", n);
                        proptest::prop_assert_eq!(pattern_repo, relevance.pattern_may_match_repo(&r.repo));
                        proptest::prop_assert_eq!(cache.interned(n, &relevance), Some(r));
                    }
                    (Err(RefError::Placeholder(_)), NameVerdict::Placeholder) => {}
                    (Err(e), NameVerdict::Invalid(f)) => proptest::prop_assert_eq!(e, f),
                    (slow, _) => proptest::prop_assert!(false, "{n:?}: {slow:?}"),
                }
            }
            let entry = entry_of(&names);
            let mut problems = Vec::new();
            let fast = entry_names(0, &entry, &relevance, &mut cache, &mut |_, d| problems.push(d));
            let (slow, slow_problems) = entry_names_by_parsing(&names, &relevance);
            proptest::prop_assert_eq!(&fast, &slow);
            proptest::prop_assert_eq!(problems, slow_problems);
            // An entry kept before only in case it was a pattern's image cut
            // short: no tag of its repositories matches a pattern.
            let refs: Vec<ImageRef> = names.iter().filter_map(|n| ImageRef::parse(n).ok()).collect();
            let before = relevance.entry_is_relevant(
                refs.len(),
                refs.iter().all(|r| r.tag.is_none()),
                refs.iter().any(|r| relevance.name_matches(r)),
            );
            if before && slow.is_none() {
                for r in &refs {
                    for t in ["w_1", "r_1", "1", "1.36", "latest"] {
                        let tagged = format!("{}:{t}", r.repo);
                        proptest::prop_assert!(!relevance.pattern_matches_tagged(&tagged), "{}", tagged);
                    }
                }
            }
        }

        /// An image entry read in place is what buffering it would give.
        #[test]
        fn image_entries_match_buffering(
            v in crate::decode::lenient::tests::json_value(),
            names in proptest::prelude::any::<bool>(),
            size in proptest::prelude::any::<bool>(),
            twice in proptest::prelude::any::<bool>(),
        ) {
            let mut text = v.to_string();
            // Objects with the keys an entry has, holding arbitrary values.
            if names || size {
                let mut fields = Vec::new();
                if names { fields.push(format!("\"names\":{text}")); }
                if size { fields.push(format!("\"sizeBytes\":{text}")); }
                if twice { fields.push("\"names\":[\"a:1\"],\"other\":{\"x\":[]}".into()); }
                text = format!("{{{}}}", fields.join(","));
            }
            let buffered: serde_json::Value = serde_json::from_str(&text).unwrap();
            let fast: Lenient<ImageView> = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(
                fast,
                crate::decode::lenient::interpret::<ImageView>(buffered)
            );
        }
    }

    #[test]
    fn node_view_is_the_nodes_resource() {
        assert_eq!(NodeView::url_path(&(), None), "/api/v1/nodes");
        assert_eq!(NodeView::api_version(&()), "v1");
        assert_eq!(NodeView::kind(&()), "Node");
    }
}
