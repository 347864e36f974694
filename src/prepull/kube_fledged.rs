//! kube-fledged's `ImageCache` objects, watched: the
//! `prepull.sources[].kubeFledged` block, the images each cache wants and on
//! which nodes, and the resource they are read from.

use super::watch::Watched;
use super::{BlockError, Flags, Source, decode_block, nonempty};
use crate::analysis::WantSource;
use crate::analysis::eligibility::Eligibility;
use crate::analysis::reference::ImageRef;
use crate::analysis::selector::LabelSelector;
use crate::analysis::wanted::WantGroup;
use crate::analysis::wants::{ImageSet, MAX_IMAGES_PER_SOURCE, Problems, Wants};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The `kubeFledged` block of `prepull.sources`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawKubeFledged {
    #[serde(default, deserialize_with = "super::optional_text")]
    namespace: Option<String>,
}

/// The source a `kubeFledged` block configures: the ImageCaches of one
/// namespace, or of all.
pub fn from_block(block: &serde_json::Value, _: &Flags) -> Result<Box<dyn Source>, BlockError> {
    let raw: RawKubeFledged = decode_block(block)?;
    Ok(Box::new(source(nonempty(raw.namespace))))
}

/// The ImageCaches of `namespace` (or all), as a source of wanted images.
fn source(namespace: Option<String>) -> Watched<DynamicObject> {
    Watched {
        source: WantSource::KubeFledged,
        what: "ImageCaches",
        title: "kube-fledged ImageCaches",
        namespace,
        selector: None,
        api: imagecache_api,
        to_groups: imagecache_to_groups,
    }
}

/// kube-fledged's `ImageCache` resource.
pub fn imagecache_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubefledged.io", "v1alpha2", "ImageCache"),
        "imagecaches",
    )
}

pub fn imagecache_api(client: Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = imagecache_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

/// The groups an ImageCache wants.
pub fn imagecache_to_groups(o: &DynamicObject) -> Wants {
    let name = o.metadata.name.as_deref().unwrap_or("<unnamed>");
    match o.data.get("spec") {
        Some(spec) => imagecache_groups(name, spec, MAX_IMAGES_PER_SOURCE),
        None => Wants {
            problems: vec![format!("ImageCache {name}: no spec")],
            ..Wants::default()
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::eligibility::{NodeFacts, NodeLabels};
    use crate::prepull::tests::{assert_source_errors, sources};
    use serde_json::json;

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
    fn the_block_names_the_namespace() {
        let built = sources("prepull:\n  sources: [{kubeFledged: {namespace: ''}}]\n").unwrap();
        assert_eq!(built[0].name(), WantSource::KubeFledged);
        assert!(built[0].needs_cluster());
        let raw: RawKubeFledged = decode_block(&json!({})).unwrap();
        assert_eq!(source(nonempty(raw.namespace)).namespace, None);
        assert_source_errors(&[(
            "{kubeFledged: {namespaces: x}}",
            "prepull.sources[0].kubeFledged.namespaces: unknown field",
        )]);
    }
}
