//! What the container runtime holds on a node, as the node agent reports it.
//!
//! The agent (`imagecap-exporter agent`) asks the runtime over CRI
//! (`ImageService/ListImages`, `ImageService/ImageFsInfo`) and serves the answer at
//! `/v1/images` in this shape; the central exporter reads it back with the same
//! types, and `check --agents-file` reads a saved JSON array of them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
