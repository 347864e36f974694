//! What the container runtime holds on a node, as the node agent reports it.
//!
//! The agent (`imagecap-exporter agent`) asks the runtime over CRI
//! (`ImageService/ListImages`, `ImageService/ImageFsInfo`) and serves the answer at
//! `/v1/images` in this shape; the central exporter reads it back with the same
//! types, and `check --agents-file` reads a saved JSON array of them.

use super::reference::{ImageRef, RefError};
use super::wanted::Relevance;
use serde::{Deserialize, Serialize};

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
/// images that can match a wanted image (as node summaries keep them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeSummary {
    /// Images the runtime holds.
    pub image_count: u32,
    /// Their sizes summed.
    pub image_bytes: u64,
    pub image_fs_used_bytes: Option<u64>,
    /// Per image, its digests and tags, for the images that can matter.
    pub relevant_images: Vec<Vec<ImageRef>>,
}

/// Summarizes an agent's report. Names that do not parse are skipped and
/// returned as messages (an image is still counted without them).
pub fn summarize(report: &AgentReport, relevance: &Relevance) -> (RuntimeSummary, Vec<String>) {
    let mut problems = Vec::new();
    let mut relevant_images = Vec::new();
    for (i, image) in report.images.iter().enumerate() {
        let mut names = Vec::with_capacity(image.repo_digests.len() + image.repo_tags.len());
        for (field, list) in [
            ("repoDigests", &image.repo_digests),
            ("repoTags", &image.repo_tags),
        ] {
            for name in list {
                match ImageRef::parse(name) {
                    Ok(r) => names.push(r),
                    Err(RefError::Placeholder(_)) => {}
                    Err(e) => problems.push(format!("images[{i}].{field}: {e}")),
                }
            }
        }
        if relevance.is_relevant(&names) {
            relevant_images.push(names.iter().map(ImageRef::interned).collect());
        }
    }
    relevant_images.shrink_to_fit();
    let summary = RuntimeSummary {
        image_count: u32::try_from(report.images.len()).unwrap_or(u32::MAX),
        image_bytes: report.image_bytes(),
        image_fs_used_bytes: report.image_fs_used_bytes,
        relevant_images,
    };
    (summary, problems)
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
        };
        let (s, problems) = summarize(&report, &relevance);
        assert_eq!(
            (s.image_count, s.image_bytes, s.image_fs_used_bytes),
            (4, 100, Some(7))
        );
        assert_eq!(s.relevant_images.len(), 1, "{:?}", s.relevant_images);
        assert_eq!(s.relevant_images[0].len(), 2, "digest and tag");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("images[3].repoTags"),
            "{problems:?}"
        );
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
