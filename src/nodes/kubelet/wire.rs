//! The kubelet's answers as they come over the wire: configz
//! (`/api/v1/nodes/{name}/proxy/configz`) and the Summary API
//! (`/api/v1/nodes/{name}/proxy/stats/summary`), decoded into what the analysis
//! uses of them.

use crate::analysis::kubelet_settings::{ImageFs, KubeletSettings};
use serde::Deserialize;

#[derive(Deserialize)]
struct Configz {
    kubeletconfig: Option<KubeletConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfig {
    node_status_max_images: Option<serde_json::Value>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: Option<serde_json::Value>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    image_gc_low_threshold_percent: Option<serde_json::Value>,
}

/// Why a configz answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigzError {
    #[error("configz is not the expected JSON: {0}")]
    Json(serde_json::Error),
    #[error("configz has no kubeletconfig object")]
    NoKubeletConfig,
    #[error("kubeletconfig has no nodeStatusMaxImages")]
    NoMaxImages,
    #[error("nodeStatusMaxImages {0} is below -1")]
    MaxImagesBelowNoCap(i64),
    #[error("nodeStatusMaxImages {0} is not an integer")]
    MaxImagesNotInteger(serde_json::Value),
    #[error("{key} {value} is not an integer from 0 to 100")]
    Percent {
        key: &'static str,
        value: serde_json::Value,
    },
}

/// The settings from a configz answer. A missing or invalid cap is an error; a
/// missing GC threshold is `None`, an invalid one an error.
pub fn parse_configz(body: &[u8]) -> Result<KubeletSettings, ConfigzError> {
    let c: Configz = serde_json::from_slice(body).map_err(ConfigzError::Json)?;
    let kc = c.kubeletconfig.ok_or(ConfigzError::NoKubeletConfig)?;
    Ok(KubeletSettings {
        max_images: max_images(kc.node_status_max_images)?,
        image_gc_high_ratio: percent(
            "imageGCHighThresholdPercent",
            kc.image_gc_high_threshold_percent,
        )?,
        image_gc_low_ratio: percent(
            "imageGCLowThresholdPercent",
            kc.image_gc_low_threshold_percent,
        )?,
    })
}

fn percent(key: &'static str, v: Option<serde_json::Value>) -> Result<Option<f64>, ConfigzError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n @ 0..=100) => Ok(Some(n as f64 / 100.0)),
            _ => Err(ConfigzError::Percent { key, value: v }),
        },
    }
}

fn max_images(v: Option<serde_json::Value>) -> Result<i64, ConfigzError> {
    match v {
        None | Some(serde_json::Value::Null) => Err(ConfigzError::NoMaxImages),
        Some(v) => match v.as_i64() {
            Some(n) if n >= -1 => Ok(n),
            Some(n) => Err(ConfigzError::MaxImagesBelowNoCap(n)),
            None => Err(ConfigzError::MaxImagesNotInteger(v)),
        },
    }
}

/// `k8s.io/kubelet/pkg/apis/stats/v1alpha1.FsStats`, the fields read of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsStats {
    used_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct Summary {
    node: Option<SummaryNode>,
}

#[derive(Deserialize)]
struct SummaryNode {
    runtime: Option<RuntimeStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeStats {
    image_fs: Option<FsStats>,
}

/// Why a stats/summary answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("stats/summary is not the expected JSON: {0}")]
    Json(serde_json::Error),
    #[error("stats/summary has no node object")]
    NoNode,
    #[error("stats/summary has no node.runtime (the runtime reports no filesystems)")]
    NoRuntime,
    #[error("stats/summary has no node.runtime.imageFs")]
    NoImageFs,
    #[error("node.runtime.imageFs has neither usedBytes nor capacityBytes")]
    NoBytes,
}

/// `node.runtime.imageFs` from a Summary API answer. Pods' statistics, which
/// make up most of the body, are skipped without being kept.
pub fn parse_stats_summary(body: &[u8]) -> Result<ImageFs, SummaryError> {
    let s: Summary = serde_json::from_slice(body).map_err(SummaryError::Json)?;
    let fs = s
        .node
        .ok_or(SummaryError::NoNode)?
        .runtime
        .ok_or(SummaryError::NoRuntime)?
        .image_fs
        .ok_or(SummaryError::NoImageFs)?;
    if fs.used_bytes.is_none() && fs.capacity_bytes.is_none() {
        return Err(SummaryError::NoBytes);
    }
    Ok(ImageFs {
        used_bytes: fs.used_bytes,
        capacity_bytes: fs.capacity_bytes,
        available_bytes: fs.available_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_cap() {
        let body =
            br#"{"kubeletconfig":{"enableServer":true,"nodeStatusMaxImages":50,"podsPerCore":0}}"#;
        let cap = |b: &[u8]| {
            parse_configz(b)
                .map(|s| s.max_images)
                .map_err(|e| e.to_string())
        };
        assert_eq!(cap(body), Ok(50));
        assert_eq!(
            cap(br#"{"kubeletconfig":{"nodeStatusMaxImages":-1}}"#),
            Ok(-1)
        );
        assert_eq!(
            cap(br#"{"kubeletconfig":{"nodeStatusMaxImages":0}}"#),
            Ok(0)
        );
        assert_eq!(parse_configz(body).unwrap().image_gc_high_ratio, None);
    }

    #[test]
    fn reads_the_gc_thresholds() {
        let s = parse_configz(
            br#"{"kubeletconfig":{"nodeStatusMaxImages":50,"imageGCHighThresholdPercent":85,"imageGCLowThresholdPercent":80}}"#,
        )
        .unwrap();
        assert_eq!(s.image_gc_high_ratio, Some(0.85));
        assert_eq!(s.image_gc_low_ratio, Some(0.8));
        for bad in ["101", "-1", "\"85\"", "85.5"] {
            let body = format!(
                r#"{{"kubeletconfig":{{"nodeStatusMaxImages":50,"imageGCHighThresholdPercent":{bad}}}}}"#
            );
            let e = parse_configz(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("imageGCHighThresholdPercent"), "{e}");
        }
    }

    #[test]
    fn reads_the_image_filesystem_from_a_summary() {
        // The shape of k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary, trimmed.
        let body = br#"{
          "node": {
            "nodeName": "worker-1",
            "startTime": "2026-11-20T08:00:00Z",
            "cpu": {"time": "2026-11-25T10:00:00Z", "usageNanoCores": 1},
            "fs": {"availableBytes": 1, "capacityBytes": 2, "usedBytes": 1},
            "runtime": {
              "imageFs": {"time": "2026-11-25T10:00:00Z", "availableBytes": 60000000000,
                          "capacityBytes": 100000000000, "usedBytes": 40000000000,
                          "inodesFree": 100, "inodes": 200, "inodesUsed": 100},
              "containerFs": {"availableBytes": 1, "capacityBytes": 2, "usedBytes": 1}
            },
            "rlimit": {"time": "2026-11-25T10:00:00Z", "maxpid": 4194304, "curproc": 600}
          },
          "pods": [{"podRef": {"name": "p", "namespace": "n", "uid": "u"}, "containers": []}]
        }"#;
        let fs = parse_stats_summary(body).unwrap();
        assert_eq!(fs.used_bytes, Some(40_000_000_000));
        assert_eq!(fs.capacity_bytes, Some(100_000_000_000));
        assert_eq!(fs.available_bytes, Some(60_000_000_000));
        for (body, needle) in [
            (&br#"{"pods":[]}"#[..], "no node object"),
            (br#"{"node":{"nodeName":"n"}}"#, "no node.runtime"),
            (br#"{"node":{"runtime":{}}}"#, "no node.runtime.imageFs"),
            (br#"{"node":{"runtime":{"imageFs":{}}}}"#, "neither"),
            (
                br#"{"node":{"runtime":{"imageFs":{"usedBytes":-1}}}}"#,
                "not the expected JSON",
            ),
            (b"Forbidden", "not the expected JSON"),
        ] {
            let e = parse_stats_summary(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        for (body, needle) in [
            (&br#"{"kubeletconfig":{}}"#[..], "no nodeStatusMaxImages"),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":null}}"#,
                "no nodeStatusMaxImages",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":"50"}}"#,
                "not an integer",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":-7}}"#,
                "below -1",
            ),
            (
                br#"{"kubeletconfig":{"nodeStatusMaxImages":1.5}}"#,
                "not an integer",
            ),
            (br#"{}"#, "no kubeletconfig"),
            (b"<html>404</html>", "not the expected JSON"),
        ] {
            let e = parse_configz(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_configz(&body);
            let _ = parse_stats_summary(&body);
        }
    }
}
