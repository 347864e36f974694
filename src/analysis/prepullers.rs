//! What each prepuller wants, read from its own objects: Nublado's prepuller
//! status, kube-fledged `ImageCache`s and prepuller DaemonSets, turned into
//! [`WantGroup`]s. Pure: the sources fetch, this decodes.

use super::eligibility::{
    Eligibility, NodeSelectorRequirement, NodeSelectorTerm, Placement, Toleration,
    daemonset_tolerations,
};
use super::reference::ImageRef;
use super::selector::LabelSelector;
use super::wanted::{WantGroup, WantSource};
use k8s_openapi::api::apps::v1::DaemonSet;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Nublado's `PrepullerStatus` (`GET /nublado/spawner/v1/prepulls`), the fields
/// read here; `config` and the rest are ignored.
#[derive(Deserialize, Debug, Clone)]
pub struct PrepullerStatus {
    pub images: PrepullerImageStatus,
    pub nodes: Vec<NubladoNode>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct PrepullerImageStatus {
    #[serde(default)]
    pub prepulled: Vec<NodeImage>,
    #[serde(default)]
    pub pending: Vec<NodeImage>,
}

/// An image Nublado prepulls (`NodeImage`).
#[derive(Deserialize, Debug, Clone)]
pub struct NodeImage {
    pub reference: String,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    /// Nodes where Nublado sees it; informational.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Eligible nodes where Nublado does not see it (from the same capped
    /// `status.images`, so it counts hidden images as missing).
    #[serde(default)]
    pub missing: Vec<String>,
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

/// Decodes a `PrepullerStatus` body.
pub fn parse_prepuller_status(body: &[u8]) -> Result<PrepullerStatus, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a Nublado PrepullerStatus: {e}"))
}

/// Nublado's wanted images: every prepulled and pending image, matched by digest
/// when Nublado knows it, else by reference; wanted on the nodes Nublado calls
/// eligible. Images whose reference cannot be read are returned as problems.
pub fn nublado_groups(status: &PrepullerStatus) -> (Vec<WantGroup>, Vec<String>) {
    let mut problems = Vec::new();
    let mut images = Vec::new();
    for image in status.images.prepulled.iter().chain(&status.images.pending) {
        match nublado_ref(image) {
            Ok(r) => {
                if !images.contains(&r) {
                    images.push(r);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    let nodes: HashMap<String, Result<(), String>> = status
        .nodes
        .iter()
        .map(|n| {
            let verdict = if n.eligible {
                Ok(())
            } else {
                Err(n
                    .comment
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "not eligible for Nublado".into()))
            };
            (n.name.clone(), verdict)
        })
        .collect();
    let group = WantGroup {
        source: WantSource::Nublado,
        images,
        eligibility: Arc::new(Eligibility::Named(Arc::new(nodes))),
    };
    (vec![group], problems)
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
pub fn imagecache_groups(name: &str, spec: &serde_json::Value) -> (Vec<WantGroup>, Vec<String>) {
    let mut problems = Vec::new();
    let mut groups = Vec::new();
    let Some(cache_spec) = spec.get("cacheSpec").and_then(|c| c.as_array()) else {
        problems.push(format!("ImageCache {name}: spec.cacheSpec is not a list"));
        return (groups, problems);
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
                problems.push(format!(
                    "ImageCache {name}: cacheSpec[{i}].nodeSelector: {e}"
                ));
                continue;
            }
        };
        let mut images = Vec::new();
        for (j, image) in entry
            .get("images")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            match image.as_str().map(ImageRef::parse) {
                Some(Ok(r)) => images.push(r),
                Some(Err(e)) => problems.push(format!(
                    "ImageCache {name}: cacheSpec[{i}].images[{j}]: {e}"
                )),
                None => problems.push(format!(
                    "ImageCache {name}: cacheSpec[{i}].images[{j}] is not a string"
                )),
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
    (groups, problems)
}

/// A prepuller DaemonSet: every container and init-container image of its pod
/// template, wanted where its pods can run.
pub fn daemonset_groups(ds: &DaemonSet) -> (Vec<WantGroup>, Vec<String>) {
    let name = ds.metadata.name.as_deref().unwrap_or("<unnamed>");
    let mut problems = Vec::new();
    let Some(pod) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return (
            Vec::new(),
            vec![format!("DaemonSet {name}: no pod template spec")],
        );
    };
    let mut images = Vec::new();
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
            Ok(r) if !images.contains(&r) => images.push(r),
            Ok(_) => {}
            Err(e) => problems.push(format!("DaemonSet {name}: container {}: {e}", c.name)),
        }
    }
    let node_selector = match pod.node_selector.as_ref() {
        None => LabelSelector::default(),
        Some(m) => match LabelSelector::from_map(m) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("DaemonSet {name}: nodeSelector: {e}"));
                return (Vec::new(), problems);
            }
        },
    };
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut required_terms = None;
    if let Some(selector) = required {
        let mut terms = Vec::new();
        for t in &selector.node_selector_terms {
            let convert =
                |reqs: &Option<Vec<k8s_openapi::api::core::v1::NodeSelectorRequirement>>| {
                    reqs.iter()
                        .flatten()
                        .map(|r| {
                            NodeSelectorRequirement::new(
                                &r.key,
                                &r.operator,
                                r.values.as_deref().unwrap_or_default(),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                };
            match (convert(&t.match_expressions), convert(&t.match_fields)) {
                (Ok(match_expressions), Ok(match_fields)) => terms.push(NodeSelectorTerm {
                    match_expressions,
                    match_fields,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("DaemonSet {name}: node affinity: {e}"));
                    return (Vec::new(), problems);
                }
            }
        }
        required_terms = Some(terms);
    }
    let mut tolerations = daemonset_tolerations(pod.host_network.unwrap_or(false));
    for (i, t) in pod.tolerations.iter().flatten().enumerate() {
        match Toleration::from_api(t) {
            Ok(t) => tolerations.push(t),
            Err(e) => problems.push(format!("DaemonSet {name}: tolerations[{i}]: {e}")),
        }
    }
    if images.is_empty() {
        return (Vec::new(), problems);
    }
    let group = WantGroup {
        source: WantSource::DaemonSet,
        images,
        eligibility: Arc::new(Eligibility::Placement(Placement {
            node_selector,
            required_terms,
            tolerations,
        })),
    };
    (vec![group], problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::eligibility::{Labels, NodeFacts, NotEligible, Taint};
    use serde_json::json;

    const DIGEST: &str = "sha256:e693782192ecef4f7846ad2b21b1574682e700747f94c5a256b5731331a2eec2";

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
        let status = parse_prepuller_status(body.to_string().as_bytes()).unwrap();
        let (groups, problems) = nublado_groups(&status);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("Not A Reference"));
        let g = &groups[0];
        assert_eq!(g.source, WantSource::Nublado);
        let refs: Vec<String> = g.images.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                format!("ghcr.io/lsst-sqre/sciplat-lab:w_2024_10@{DIGEST}"),
                "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11".to_string()
            ]
        );
        let labels = Labels::default();
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
        assert!(parse_prepuller_status(b"[]").is_err());
        assert!(
            parse_prepuller_status(b"{\"images\": {}}").is_err(),
            "nodes are required"
        );
    }

    #[test]
    fn imagecache_groups_follow_their_selectors() {
        let spec = json!({"cacheSpec": [
            {"images": ["nginx:1.25", "ghcr.io/x/lab:w_1"], "nodeSelector": {"pool": "lab"}},
            {"images": ["busybox:1.36", 7, "Bad Ref"]},
            {"images": ["a:1"], "nodeSelector": {"bad key": "x"}}
        ]});
        let (groups, problems) = imagecache_groups("cache", &spec);
        assert_eq!(groups.len(), 2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(
            groups[0].images[0].to_string(),
            "docker.io/library/nginx:1.25"
        );
        let lab = Labels::new(vec![("pool".into(), "lab".into())]);
        let other = Labels::default();
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
        assert!(imagecache_groups("x", &json!({})).1[0].contains("cacheSpec"));
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
        let (groups, problems) = daemonset_groups(&ds);
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
        let user = Labels::new(vec![
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
        let arm = Labels::new(vec![
            ("hub.jupyter.org/node-purpose".into(), "user".into()),
            ("kubernetes.io/arch".into(), "arm64".into()),
        ]);
        assert_eq!(rule.check(&facts(&[], &arm)), Err(NotEligible::Selector));
    }
}
