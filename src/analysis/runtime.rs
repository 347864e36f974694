//! What the container runtime holds on a node, as the node agent reports it.
//!
//! The agent (`imagecap-exporter agent`) asks the runtime over CRI
//! (`ImageService/ListImages`, `ImageService/ImageFsInfo`) and serves the answer at
//! `/v1/images` in this shape; the central exporter reads it back with the same
//! types, and `check --agents-file` reads a saved JSON array of them.

use super::entry_size::EntrySize;
use super::node::Entry;
use super::reference::{ImageRef, RefError};
use super::wanted::{Relevance, RuntimeKeep};
use serde::{Deserialize, Serialize};

/// The response header in which the agent repeats the report's `collectedAt`
/// (RFC 3339, UTC) on `/v1/images` answers, `200` and `304 Not Modified` alike:
/// a `304` has no body to read the time from, and the time is what tells a
/// fresh list from the last list of a runtime that stopped answering.
pub const COLLECTED_AT_HEADER: &str = "imagecap-collected-at";

/// The response header in which the agent repeats the report's
/// `imageFsUsedBytes` (absent when the report has none), as
/// [`COLLECTED_AT_HEADER`]: the runtime's figure moves with the containers'
/// writable layers, so it is sent with every answer rather than made part of
/// what a `304` says is unchanged.
pub const IMAGE_FS_USED_HEADER: &str = "imagecap-image-fs-used-bytes";

/// The body of an agent's `/v1/images`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// The node the agent runs on (`--node-name`, from the downward API).
    pub node: String,
    /// When the runtime answered, RFC 3339 (UTC).
    pub collected_at: String,
    /// Every image the runtime holds, in the runtime's order.
    pub images: Vec<RuntimeImage>,
    /// Bytes used on the image filesystem(s), from `ImageFsInfo`; absent when that
    /// call failed or the runtime reported no filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs_used_bytes: Option<u64>,
    /// The agent's last pruning plan, when pruning is on (dry run or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<super::plan::Plan>,
}

/// One image as CRI `ListImages` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeImage {
    pub id: String,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Size in bytes as the runtime reports it (CRI `uint64 size`).
    #[serde(default)]
    pub size: u64,
}

impl AgentReport {
    /// The sum of the images' sizes, saturating.
    pub fn image_bytes(&self) -> u64 {
        self.images
            .iter()
            .fold(0u64, |sum, image| sum.saturating_add(image.size))
    }
}

/// What the analysis keeps of an agent's report: counts, and the names of the
/// images that can match an image wanted now (at most [`MAX_RUNTIME_NAMES`]).
/// `Eq`, so that comparing two `Arc`s of the same summary (an agent answering
/// `304` every round) is a pointer comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSummary {
    /// Images the runtime holds.
    pub image_count: u32,
    /// Their sizes summed.
    pub image_bytes: u64,
    pub image_fs_used_bytes: Option<u64>,
    /// Per image, its digests and tags that can match an image wanted now, for
    /// the images that can matter; interned, so that the thousands of nodes
    /// holding the same image share one copy of its names.
    pub relevant_images: Vec<Entry>,
    /// Names that could matter but were not kept, past [`MAX_RUNTIME_NAMES`].
    pub names_dropped: u64,
    /// The counts of the agent's pruning plan, when it prunes.
    pub prune: Option<super::plan::PlanSummary>,
}

/// Most names a runtime summary keeps: what one node's agent can make the
/// exporter hold, whatever it sends. A node holds a few dozen images of the
/// wanted repositories; names past this are dropped and counted.
pub const MAX_RUNTIME_NAMES: usize = 1024;

/// Messages about unparsable names kept per report (the rest are counted).
const MAX_PROBLEMS: usize = 10;

/// Summarizes a runtime's list image by image, name by name, so that a list is
/// never held whole: used on a decoded report and while decoding one.
struct Summarizer<'r> {
    relevance: &'r Relevance,
    summary: RuntimeSummary,
    problems: Vec<String>,
    problems_dropped: usize,
    /// Names kept so far.
    kept: usize,
    // The image being read.
    names: usize,
    all_untagged: bool,
    any_matches: bool,
    pattern_tag: bool,
    /// Candidates to keep, digests and tags apart (digests first, as a report's
    /// `repoDigests` then `repoTags`), each with whether it needs the image to
    /// be a pattern's.
    digests: Vec<(ImageRef, bool)>,
    tags: Vec<ImageRef>,
    over_budget: u64,
}

impl<'r> Summarizer<'r> {
    fn new(relevance: &'r Relevance) -> Self {
        Summarizer {
            relevance,
            summary: RuntimeSummary::default(),
            problems: Vec::new(),
            problems_dropped: 0,
            kept: 0,
            names: 0,
            all_untagged: true,
            any_matches: false,
            pattern_tag: false,
            digests: Vec::new(),
            tags: Vec::new(),
            over_budget: 0,
        }
    }

    fn problem(&mut self, p: impl FnOnce() -> String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p());
        } else {
            self.problems_dropped += 1;
        }
    }

    /// One name of the current image, from its `field`.
    fn name(&mut self, image: usize, field: &str, name: &str) {
        let r = match ImageRef::parse(name) {
            Ok(r) => r,
            Err(RefError::Placeholder(_)) => return,
            Err(e) => return self.problem(|| format!("images[{image}].{field}: {e}")),
        };
        self.names += 1;
        self.all_untagged &= r.tag.is_none();
        self.any_matches |= self.relevance.name_matches(&r);
        if r.tag.is_some() && self.relevance.matches_pattern(&r) {
            self.pattern_tag = true;
        }
        let keep = self.relevance.runtime_keeps(&r);
        if keep == RuntimeKeep::No {
            return;
        }
        if self.kept + self.digests.len() + self.tags.len() >= MAX_RUNTIME_NAMES {
            self.over_budget += 1;
            return;
        }
        let pattern_only = keep == RuntimeKeep::IfPatternImage;
        match (&r.tag, &r.digest) {
            (None, Some(_)) => self.digests.push((r, pattern_only)),
            _ => self.tags.push(r),
        }
    }

    /// The end of the current image, of `size` bytes.
    fn end_image(&mut self, size: u64) {
        self.summary.image_count = self.summary.image_count.saturating_add(1);
        self.summary.image_bytes = self.summary.image_bytes.saturating_add(size);
        let relevant =
            self.relevance
                .entry_is_relevant(self.names, self.all_untagged, self.any_matches);
        let pattern_image = self.pattern_tag || self.all_untagged;
        let (digests, tags) = (
            std::mem::take(&mut self.digests),
            std::mem::take(&mut self.tags),
        );
        if relevant {
            let entry: Vec<ImageRef> = digests
                .into_iter()
                .filter(|(_, pattern_only)| !pattern_only || pattern_image)
                .map(|(r, _)| r)
                .chain(tags)
                .map(|r| r.interned())
                .collect();
            self.kept += entry.len();
            if !entry.is_empty() {
                self.summary
                    .relevant_images
                    .push(Entry::new(entry, EntrySize::new(Some(size))));
            }
            self.summary.names_dropped += self.over_budget;
        }
        self.names = 0;
        self.all_untagged = true;
        self.any_matches = false;
        self.pattern_tag = false;
        self.over_budget = 0;
    }

    fn finish(mut self) -> (RuntimeSummary, Vec<String>) {
        if self.problems_dropped > 0 {
            self.problems.push(format!(
                "and {} more unparsable names",
                self.problems_dropped
            ));
        }
        self.summary.relevant_images.shrink_to_fit();
        (self.summary, self.problems)
    }
}

/// Summarizes an agent's report. Names that do not parse are skipped and
/// returned as messages (an image is still counted without them).
pub fn summarize(report: &AgentReport, relevance: &Relevance) -> (RuntimeSummary, Vec<String>) {
    let mut s = Summarizer::new(relevance);
    for (i, image) in report.images.iter().enumerate() {
        for name in &image.repo_digests {
            s.name(i, "repoDigests", name);
        }
        for name in &image.repo_tags {
            s.name(i, "repoTags", name);
        }
        s.end_image(image.size);
    }
    s.summary.image_fs_used_bytes = report.image_fs_used_bytes;
    s.summary.prune = report.prune.as_ref().map(super::plan::PlanSummary::from);
    s.finish()
}

/// An agent's report decoded straight into its summary.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedReport {
    pub node: String,
    pub collected_at: String,
    pub summary: RuntimeSummary,
    /// Names that did not parse.
    pub problems: Vec<String>,
}

/// Decodes an agent's `/v1/images` answer as it is read, into what
/// [`summarize`] makes of it: the list is never held, only the names kept, so
/// the memory used is bounded whatever the answer holds. Accepts what
/// [`AgentReport`] does (unknown fields are ignored).
pub fn decode_report(
    reader: impl std::io::Read,
    relevance: &Relevance,
) -> Result<DecodedReport, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let report = serde::Deserializer::deserialize_map(
        &mut de,
        wire::ReportVisitor {
            summarizer: Summarizer::new(relevance),
        },
    )?;
    de.end()?;
    Ok(report)
}

/// The streaming decoding of [`decode_report`].
mod wire {
    use super::{DecodedReport, Summarizer};
    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };
    use std::fmt;

    /// Field names, read without allocating.
    enum Key {
        Node,
        CollectedAt,
        Images,
        ImageFsUsedBytes,
        Id,
        RepoTags,
        RepoDigests,
        Size,
        Prune,
        Other,
    }

    impl<'de> de::Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(match v {
                        "node" => Key::Node,
                        "collectedAt" => Key::CollectedAt,
                        "images" => Key::Images,
                        "imageFsUsedBytes" => Key::ImageFsUsedBytes,
                        "id" => Key::Id,
                        "repoTags" => Key::RepoTags,
                        "repoDigests" => Key::RepoDigests,
                        "size" => Key::Size,
                        "prune" => Key::Prune,
                        _ => Key::Other,
                    })
                }
            }
            d.deserialize_identifier(V)
        }
    }

    pub(super) struct ReportVisitor<'r> {
        pub(super) summarizer: Summarizer<'r>,
    }

    impl<'de> Visitor<'de> for ReportVisitor<'_> {
        type Value = DecodedReport;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an agent report")
        }

        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<DecodedReport, A::Error> {
            let (mut node, mut collected_at, mut images, mut fs) = (None, None, false, None);
            let mut prune = None;
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Node => once(&mut node, "node", map.next_value::<String>()?)?,
                    Key::CollectedAt => once(
                        &mut collected_at,
                        "collectedAt",
                        map.next_value::<String>()?,
                    )?,
                    Key::Images => {
                        if images {
                            return Err(de::Error::duplicate_field("images"));
                        }
                        images = true;
                        map.next_value_seed(Images(&mut self.summarizer))?;
                    }
                    Key::ImageFsUsedBytes => once(
                        &mut fs,
                        "imageFsUsedBytes",
                        map.next_value::<Option<u64>>()?,
                    )?,
                    // The plan's counts; its image list is skipped unread.
                    Key::Prune => once(
                        &mut prune,
                        "prune",
                        map.next_value::<Option<super::super::plan::PlanSummary>>()?,
                    )?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let node = node.ok_or_else(|| de::Error::missing_field("node"))?;
            let collected_at =
                collected_at.ok_or_else(|| de::Error::missing_field("collectedAt"))?;
            if !images {
                return Err(de::Error::missing_field("images"));
            }
            self.summarizer.summary.image_fs_used_bytes = fs.flatten();
            self.summarizer.summary.prune = prune.flatten().map(|p| p.bounded());
            let (summary, problems) = self.summarizer.finish();
            Ok(DecodedReport {
                node,
                collected_at,
                summary,
                problems,
            })
        }
    }

    /// Sets a field once; a repeated one is an error, as for a derived struct.
    fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
        if slot.replace(v).is_some() {
            return Err(E::duplicate_field(name));
        }
        Ok(())
    }

    struct Images<'a, 'r>(&'a mut Summarizer<'r>);

    impl<'de> DeserializeSeed<'de> for Images<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Images<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of images")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Image {
                    s: &mut *self.0,
                    index: i,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
    }

    struct Image<'a, 'r> {
        s: &'a mut Summarizer<'r>,
        index: usize,
    }

    impl<'de> DeserializeSeed<'de> for Image<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Image<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an image")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (mut id, mut tags, mut digests, mut size) = (false, false, false, None);
            while let Some(key) = map.next_key::<Key>()? {
                let (seen, field) = match key {
                    Key::Id => {
                        map.next_value_seed(Text)?;
                        (&mut id, "id")
                    }
                    Key::RepoTags => {
                        if tags {
                            return Err(de::Error::duplicate_field("repoTags"));
                        }
                        map.next_value_seed(Names {
                            s: &mut *self.s,
                            image: self.index,
                            field: "repoTags",
                        })?;
                        (&mut tags, "repoTags")
                    }
                    Key::RepoDigests => {
                        if digests {
                            return Err(de::Error::duplicate_field("repoDigests"));
                        }
                        map.next_value_seed(Names {
                            s: &mut *self.s,
                            image: self.index,
                            field: "repoDigests",
                        })?;
                        (&mut digests, "repoDigests")
                    }
                    Key::Size => {
                        once(&mut size, "size", map.next_value::<u64>()?)?;
                        continue;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                };
                if std::mem::replace(seen, true) {
                    return Err(de::Error::duplicate_field(field));
                }
            }
            if !id {
                return Err(de::Error::missing_field("id"));
            }
            self.s.end_image(size.unwrap_or(0));
            Ok(())
        }
    }

    /// A string, read and dropped.
    struct Text;

    impl<'de> DeserializeSeed<'de> for Text {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for Text {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
    }

    /// A list of names, each handed to the summarizer as it is read.
    struct Names<'a, 'r> {
        s: &'a mut Summarizer<'r>,
        image: usize,
        field: &'static str,
    }

    impl<'de> DeserializeSeed<'de> for Names<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Names<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of image names")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(()) = seq.next_element_seed(Name {
                s: &mut *self.s,
                image: self.image,
                field: self.field,
            })? {}
            Ok(())
        }
    }

    struct Name<'a, 'r> {
        s: &'a mut Summarizer<'r>,
        image: usize,
        field: &'static str,
    }

    impl<'de> DeserializeSeed<'de> for Name<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for Name<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an image name")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.s.name(self.image, self.field, v);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::wanted::tests::wanted;

    #[test]
    fn keeps_counts_and_only_the_names_that_can_matter() {
        let w = wanted(&["ghcr.io/x/lab:w_1"], &[], &[]);
        let relevance = Relevance::new(&w, []);
        let image = |id: &str, tags: &[&str], digests: &[&str], size| RuntimeImage {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size,
        };
        let digest = format!("ghcr.io/x/lab@sha256:{}", "ab".repeat(32));
        let report = AgentReport {
            node: "n".into(),
            collected_at: "t".into(),
            images: vec![
                image("a", &["ghcr.io/x/lab:w_2"], &[&digest], 10),
                image("b", &["nginx:1.25"], &[], 20),
                image("c", &[], &[], 30),
                image("d", &["Not A Name!"], &[], 40),
            ],
            image_fs_used_bytes: Some(7),
            prune: None,
        };
        let (s, problems) = summarize(&report, &relevance);
        assert_eq!(
            (s.image_count, s.image_bytes, s.image_fs_used_bytes),
            (4, 100, Some(7))
        );
        assert_eq!(s.relevant_images.len(), 1, "{:?}", s.relevant_images);
        assert_eq!(
            s.relevant_images[0].len(),
            1,
            "the digest, not a tag no one wants now"
        );
        assert!(s.relevant_images[0][0].digest.is_some());
        // Kept for every node until its next list, shared with every node that
        // holds the same image.
        let (decoded_summary, _) = decoded(&report, &relevance);
        assert!(Entry::ptr_eq(
            &s.relevant_images[0],
            &decoded_summary.relevant_images[0]
        ));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("images[3].repoTags"),
            "{problems:?}"
        );
    }

    fn decoded(report: &AgentReport, relevance: &Relevance) -> (RuntimeSummary, Vec<String>) {
        let body = serde_json::to_vec(report).unwrap();
        let d = decode_report(&body[..], relevance).unwrap();
        assert_eq!(
            (&d.node, &d.collected_at),
            (&report.node, &report.collected_at)
        );
        (d.summary, d.problems)
    }

    #[test]
    fn only_names_wanted_now_are_kept() {
        let w = wanted(&["ghcr.io/x/lab:w_1"], &[r"^ghcr\.io/x/pat:keep"], &[]);
        let relevance = Relevance::new(&w, []);
        let d = |repo: &str, n: u8| format!("{repo}@sha256:{}", format!("{n:02x}").repeat(32));
        let image = |tags: Vec<String>, digests: Vec<String>| RuntimeImage {
            id: "x".into(),
            repo_tags: tags,
            repo_digests: digests,
            size: 1,
        };
        let report = AgentReport {
            node: "n".into(),
            collected_at: "t".into(),
            images: vec![
                // Every tag of the wanted repository but the one wanted now: dropped.
                image(
                    (0..1000).map(|i| format!("ghcr.io/x/lab:t{i}")).collect(),
                    vec![],
                ),
                image(
                    vec!["ghcr.io/x/lab:w_1".into(), "ghcr.io/x/lab:t".into()],
                    vec![d("ghcr.io/x/lab", 1)],
                ),
                // A pattern's tag, with a digest in its own repository.
                image(
                    vec!["ghcr.io/x/pat:keep1".into()],
                    vec![d("ghcr.io/x/pat", 2)],
                ),
                // Another repository's digest, the image tagged but not a pattern's.
                image(vec!["nginx:1".into()], vec![d("ghcr.io/x/other", 3)]),
                // Untagged: a pattern's image known by digest only if a pattern
                // can match a tag of its repository, which none can here.
                image(vec![], vec![d("ghcr.io/x/other", 4)]),
                image(vec![], vec![d("ghcr.io/x/pat", 5)]),
            ],
            image_fs_used_bytes: None,
            prune: None,
        };
        let (s, _) = summarize(&report, &relevance);
        let names: Vec<Vec<String>> = s
            .relevant_images
            .iter()
            .map(|e| e.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec![d("ghcr.io/x/lab", 1), "ghcr.io/x/lab:w_1".into()],
                vec![d("ghcr.io/x/pat", 2), "ghcr.io/x/pat:keep1".into()],
                vec![d("ghcr.io/x/pat", 5)],
            ]
        );
        assert_eq!((s.image_count, s.names_dropped), (6, 0));
        assert_eq!(decoded(&report, &relevance).0, s);
    }

    #[test]
    fn names_kept_per_node_are_bounded_and_the_rest_counted() {
        let w = wanted(&["ghcr.io/x/lab:w_1"], &[], &[]);
        let relevance = Relevance::new(&w, []);
        let images = (0..3000u32)
            .map(|i| RuntimeImage {
                id: format!("{i}"),
                repo_tags: vec!["ghcr.io/x/lab:w_1".into()],
                repo_digests: vec![format!("ghcr.io/x/lab@sha256:{i:064x}")],
                size: 1,
            })
            .collect();
        let report = AgentReport {
            node: "n".into(),
            collected_at: "t".into(),
            images,
            image_fs_used_bytes: Some(1),
            prune: None,
        };
        let (s, _) = summarize(&report, &relevance);
        let kept: usize = s.relevant_images.iter().map(|e| e.len()).sum();
        assert_eq!(kept, MAX_RUNTIME_NAMES);
        assert_eq!(s.names_dropped, 6000 - MAX_RUNTIME_NAMES as u64);
        assert_eq!((s.image_count, s.image_bytes), (3000, 3000));
        assert_eq!(decoded(&report, &relevance).0, s);
    }

    #[test]
    fn decoding_checks_the_shape_as_the_report_type_does() {
        let r = Relevance::default();
        for good in [
            r#"{"node":"n","collectedAt":"t","images":[],"extra":{"a":[1]}}"#,
            r#"{"images":[{"id":"a","size":3,"other":null}],"collectedAt":"t","node":"n","imageFsUsedBytes":null}"#,
            r#"{"node":"n","collectedAt":"t","images":[],"prune":{"held":3,"target":1,"remove":2,"removeBytes":9,"deferred":0,"shortBy":0,"images":[{"id":"a","name":"a","size":1,"action":"remove","reason":"r"}]}}"#,
            r#"{"node":"n","collectedAt":"t","images":[],"prune":null}"#,
        ] {
            let whole: AgentReport = serde_json::from_str(good).unwrap();
            let d = decode_report(good.as_bytes(), &r).unwrap();
            assert_eq!(d.summary, summarize(&whole, &r).0, "{good}");
        }
        for bad in [
            "",
            "[]",
            r#"{"node":"n","collectedAt":"t"}"#,
            r#"{"node":"n","images":[]}"#,
            r#"{"node":1,"collectedAt":"t","images":[]}"#,
            r#"{"node":"n","collectedAt":"t","images":null}"#,
            r#"{"node":"n","collectedAt":"t","images":[{"size":1}]}"#,
            r#"{"node":"n","collectedAt":"t","images":[{"id":"a","repoTags":"x"}]}"#,
            r#"{"node":"n","collectedAt":"t","images":[{"id":"a","repoTags":[1]}]}"#,
            r#"{"node":"n","collectedAt":"t","images":[{"id":"a","size":-1}]}"#,
            r#"{"node":"n","node":"m","collectedAt":"t","images":[]}"#,
            r#"{"node":"n","collectedAt":"t","images":[]} trailing"#,
            r#"{"node":"n","collectedAt":"t","images":[],"prune":{"held":-1,"remove":0}}"#,
            r#"{"node":"n","collectedAt":"t","images":[],"prune":{},"prune":{}}"#,
        ] {
            assert!(
                serde_json::from_str::<AgentReport>(bad).is_err(),
                "the report type refuses {bad}"
            );
            assert!(decode_report(bad.as_bytes(), &r).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_counts_are_kept_and_its_reason_bounded() {
        let long = "x".repeat(10_000);
        let body = format!(
            r#"{{"node":"n","collectedAt":"t","images":[],"prune":{{"held":9,"target":null,"remove":0,"blocked":"{long}","images":[]}}}}"#
        );
        let d = decode_report(body.as_bytes(), &Relevance::default()).unwrap();
        let p = d.summary.prune.unwrap();
        assert_eq!((p.held, p.target, p.remove), (9, None, 0));
        let blocked = p.blocked.unwrap();
        assert_eq!(
            blocked.chars().count(),
            super::super::plan::MAX_BLOCKED_CHARS + 1
        );
        assert!(blocked.ends_with('…'));
    }

    proptest::proptest! {
        /// Decoding as the answer is read gives what summarizing the whole
        /// report gives.
        #[test]
        fn streaming_decode_matches_summarizing_the_report(
            images in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::sample::select(vec![
                        "ghcr.io/x/lab:w_1", "ghcr.io/x/lab:w_2", "ghcr.io/x/pat:a1",
                        "nginx:1", "Bad Name!", "<none>:<none>", "",
                    ]), 0..4),
                    proptest::collection::vec(proptest::sample::select(vec![
                        "ghcr.io/x/lab@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                        "ghcr.io/x/other@sha256:2222222222222222222222222222222222222222222222222222222222222222",
                        "<none>@<none>", "bad@digest",
                    ]), 0..3),
                    proptest::prelude::any::<u64>(),
                ),
                0..12,
            ),
            fs in proptest::option::of(proptest::prelude::any::<u64>()),
            patterns in proptest::prelude::any::<bool>(),
        ) {
            let pats: &[&str] = if patterns { &[r"^ghcr\.io/x/pat:a"] } else { &[] };
            let relevance = Relevance::new(&wanted(&["ghcr.io/x/lab:w_1"], pats, &[]), []);
            let report = AgentReport {
                node: "n".into(),
                collected_at: "t".into(),
                images: images
                    .into_iter()
                    .enumerate()
                    .map(|(i, (tags, digests, size))| RuntimeImage {
                        id: format!("{i}"),
                        repo_tags: tags.into_iter().map(String::from).collect(),
                        repo_digests: digests.into_iter().map(String::from).collect(),
                        size,
                    })
                    .collect(),
                image_fs_used_bytes: fs,
                prune: None,
            };
            let (whole, _) = summarize(&report, &relevance);
            let (streamed, _) = decoded(&report, &relevance);
            proptest::prop_assert_eq!(streamed, whole);
        }
    }

    #[test]
    fn wire_shape_is_camel_case_and_round_trips() {
        let report = AgentReport {
            node: "worker-1".into(),
            collected_at: "2026-11-25T10:00:00Z".into(),
            images: vec![RuntimeImage {
                id: "sha256:aa".into(),
                repo_tags: vec!["ghcr.io/lsst-sqre/sciplat-lab:w_2026_47".into()],
                repo_digests: vec![],
                size: u64::MAX,
            }],
            image_fs_used_bytes: None,
            prune: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["collectedAt"], "2026-11-25T10:00:00Z");
        assert_eq!(
            json["images"][0]["repoTags"][0],
            "ghcr.io/lsst-sqre/sciplat-lab:w_2026_47"
        );
        assert_eq!(json["images"][0]["size"], u64::MAX);
        assert!(json.get("imageFsUsedBytes").is_none());
        let back: AgentReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn missing_lists_default_to_empty_and_bytes_saturate() {
        let report: AgentReport = serde_json::from_str(
            r#"{"node":"n","collectedAt":"t","images":[{"id":"a","size":18446744073709551615},{"id":"b","size":5}]}"#,
        )
        .unwrap();
        assert!(report.images[0].repo_tags.is_empty());
        assert_eq!(report.image_bytes(), u64::MAX);
    }
}
