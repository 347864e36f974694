//! CRI answers to the agent's report: pure conversions, no I/O.

use super::cri::v1;
use super::error::ReadError;
use super::validator;
use crate::analysis::runtime::{AgentReport, RuntimeImage};
use bytes::Bytes;
use std::time::SystemTime;

/// The bytes used for images according to `ImageFsInfo`: the sum of the image
/// filesystems' `used_bytes` (saturating). `container_filesystems` is left out:
/// when a runtime keeps containers apart from images (CRI's split image
/// filesystem), those hold the containers' writable layers, not images. `None`
/// when no image filesystem reports a used size.
pub fn image_fs_used_bytes(fs: &v1::ImageFsInfoResponse) -> Option<u64> {
    fs.image_filesystems
        .iter()
        .filter_map(|f| f.used_bytes.as_ref().map(|u| u.value))
        .reduce(u64::saturating_add)
}

/// One CRI image as the report carries it.
pub fn runtime_image(i: v1::Image) -> RuntimeImage {
    RuntimeImage {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
    }
}

/// The report of one reading: every image `ListImages` returned, as it returned
/// it (an image without tags or digests is kept: it still takes room and counts
/// against the cap), with the image filesystem use when `ImageFsInfo` answered.
pub fn agent_report(
    node: &str,
    collected_at: SystemTime,
    images: v1::ListImagesResponse,
    fs: Option<&v1::ImageFsInfoResponse>,
) -> AgentReport {
    AgentReport {
        node: node.to_string(),
        collected_at: humantime::format_rfc3339_seconds(collected_at).to_string(),
        images: images.images.into_iter().map(runtime_image).collect(),
        image_fs_used_bytes: fs.and_then(image_fs_used_bytes),
        prune: None,
    }
}

/// The last successful reading, as every request serves it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The report's JSON, serialized once per reading and shared by every request.
    pub json: Bytes,
    /// Its entity tag ([`validator::entity_tag`]), quoted.
    pub etag: String,
    /// Its `collectedAt`, for the [`validator::COLLECTED_AT`] header.
    pub collected_at_text: String,
    pub images: usize,
    pub image_bytes: u64,
    pub image_fs_used_bytes: Option<u64>,
    pub collected_at: SystemTime,
}

impl Snapshot {
    pub fn new(report: &AgentReport, collected_at: SystemTime) -> Result<Snapshot, ReadError> {
        let json = serde_json::to_vec(report)?;
        Ok(Snapshot {
            json: Bytes::from(json),
            etag: validator::entity_tag(report)?,
            collected_at_text: report.collected_at.clone(),
            images: report.images.len(),
            image_bytes: report.image_bytes(),
            image_fs_used_bytes: report.image_fs_used_bytes,
            collected_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn usage(used: Option<u64>) -> v1::FilesystemUsage {
        v1::FilesystemUsage {
            timestamp: 1,
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: "/var/lib/containerd".into(),
            }),
            used_bytes: used.map(|value| v1::UInt64Value { value }),
            inodes_used: None,
        }
    }

    #[test]
    fn fs_use_sums_the_image_filesystems_only() {
        let fs = v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(Some(1000)), usage(None), usage(Some(24))],
            container_filesystems: vec![usage(Some(1 << 40))],
        };
        assert_eq!(image_fs_used_bytes(&fs), Some(1024));
        let none = v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(None)],
            container_filesystems: vec![usage(Some(5))],
        };
        assert_eq!(image_fs_used_bytes(&none), None);
        assert_eq!(image_fs_used_bytes(&Default::default()), None);
        let huge = v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(Some(u64::MAX)), usage(Some(2))],
            container_filesystems: vec![],
        };
        assert_eq!(image_fs_used_bytes(&huge), Some(u64::MAX));
    }

    #[test]
    fn cri_images_become_the_report() {
        let list = v1::ListImagesResponse {
            images: vec![
                v1::Image {
                    id: "sha256:aaa".into(),
                    repo_tags: vec!["docker.io/library/nginx:1.25".into()],
                    repo_digests: vec!["docker.io/library/nginx@sha256:bbb".into()],
                    size: 187_000_000,
                    pinned: false,
                },
                // No names at all (a dangling image): kept, it holds space.
                v1::Image {
                    id: "sha256:ccc".into(),
                    repo_tags: vec![],
                    repo_digests: vec![],
                    size: 0,
                    pinned: true,
                },
            ],
        };
        let fs = v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(Some(4096))],
            container_filesystems: vec![],
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_764_064_800);
        let report = agent_report("worker-1", at, list, Some(&fs));
        assert_eq!(report.node, "worker-1");
        assert_eq!(report.collected_at, "2025-11-25T10:00:00Z");
        assert_eq!(report.images.len(), 2);
        assert_eq!(report.images[0].id, "sha256:aaa");
        assert_eq!(report.images[0].repo_tags, ["docker.io/library/nginx:1.25"]);
        assert_eq!(
            report.images[0].repo_digests,
            ["docker.io/library/nginx@sha256:bbb"]
        );
        assert_eq!(report.images[0].size, 187_000_000);
        assert!(report.images[1].repo_tags.is_empty());
        assert_eq!(report.image_fs_used_bytes, Some(4096));

        let snap = Snapshot::new(&report, at).unwrap();
        assert_eq!((snap.images, snap.image_bytes), (2, 187_000_000));
        let back: AgentReport = serde_json::from_slice(&snap.json).unwrap();
        assert_eq!(back, report);

        let without_fs = agent_report("n", at, v1::ListImagesResponse::default(), None);
        assert_eq!(without_fs.image_fs_used_bytes, None);
        assert!(without_fs.images.is_empty());
    }

    #[test]
    fn garbage_from_the_runtime_is_carried_not_trusted() {
        // Empty ids, odd names, sizes summing past u64: no panic, no loss.
        let list = v1::ListImagesResponse {
            images: vec![
                v1::Image {
                    id: String::new(),
                    repo_tags: vec!["\u{0}weird name\n".into()],
                    repo_digests: vec![],
                    size: u64::MAX,
                    pinned: false,
                },
                v1::Image {
                    id: "x".into(),
                    repo_tags: vec![],
                    repo_digests: vec![],
                    size: 10,
                    pinned: false,
                },
            ],
        };
        let report = agent_report("n", UNIX_EPOCH, list, None);
        let snap = Snapshot::new(&report, UNIX_EPOCH).unwrap();
        assert_eq!(snap.image_bytes, u64::MAX);
        let back: AgentReport = serde_json::from_slice(&snap.json).unwrap();
        assert_eq!(back.images[0].repo_tags[0], "\u{0}weird name\n");
    }
}
