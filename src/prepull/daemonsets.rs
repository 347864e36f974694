//! Prepuller DaemonSets (JupyterHub's continuous image puller), watched: the
//! `prepull.sources[].daemonSets` block, the images each DaemonSet's pods pull
//! and the nodes they can run on.

use super::watch::Watched;
use super::{BlockError, Flags, Source, decode_block, nonempty};
use crate::analysis::WantSource;
use crate::analysis::eligibility::{
    Eligibility, NodeSelectorRequirement, NodeSelectorTerm, Placement, Toleration, UnknownOperator,
    daemonset_tolerations,
};
use crate::analysis::reference::ImageRef;
use crate::analysis::selector::LabelSelector;
use crate::analysis::wanted::WantGroup;
use crate::analysis::wants::{ImageSet, MAX_IMAGES_PER_SOURCE, Problems, Wants};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::PodSpec;
use kube::Client;
use kube::api::Api;
use serde::Deserialize;
use std::sync::Arc;

/// The `daemonSets` block of `prepull.sources`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemonSets {
    #[serde(default, deserialize_with = "super::optional_text")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "super::optional_text")]
    selector: Option<String>,
}

/// The source a `daemonSets` block configures: the DaemonSets of one namespace
/// (or all) that match its label selector.
pub fn from_block(block: &serde_json::Value, _: &Flags) -> Result<Box<dyn Source>, BlockError> {
    let raw: RawDaemonSets = decode_block(block)?;
    let selector = nonempty(raw.selector);
    if let Some(s) = &selector {
        s.parse::<LabelSelector>()
            .map_err(|e| BlockError::field("selector", e.to_string()))?;
    }
    Ok(Box::new(source(nonempty(raw.namespace), selector)))
}

/// The DaemonSets of `namespace` (or all) matching `selector`, as a source of
/// wanted images.
fn source(namespace: Option<String>, selector: Option<String>) -> Watched<DaemonSet> {
    Watched {
        source: WantSource::DaemonSet,
        what: "DaemonSets",
        title: "prepuller DaemonSets",
        namespace,
        selector,
        api: daemonset_api,
        to_groups: daemonset_to_groups,
    }
}

pub fn daemonset_api(client: Client, namespace: Option<&str>) -> Api<DaemonSet> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The groups a prepuller DaemonSet wants.
pub fn daemonset_to_groups(ds: &DaemonSet) -> Wants {
    daemonset_groups(ds, MAX_IMAGES_PER_SOURCE)
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
fn required_terms(pod: &PodSpec) -> Result<Option<Vec<NodeSelectorTerm>>, UnknownOperator> {
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
) -> Result<Vec<NodeSelectorRequirement>, UnknownOperator> {
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
    use crate::prepull::tests::{assert_source_errors, sources};
    use serde_json::json;

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

    #[test]
    fn the_block_names_the_namespace_and_selector() {
        let built = sources(
            "prepull:\n  sources:\n    - daemonSets: {namespace: jhub, selector: 'component=continuous-image-puller'}\n",
        )
        .unwrap();
        assert_eq!(built[0].name(), WantSource::DaemonSet);
        assert!(built[0].needs_cluster());
        assert_source_errors(&[(
            "{daemonSets: {selector: 'a in (b'}}",
            "prepull.sources[0].daemonSets.selector",
        )]);
    }
}
