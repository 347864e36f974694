//! One Node -> one compact [`NodeSummary`].
//!
//! [`NodeView`] is the projection of a Node the exporter decodes: only the fields it
//! reads, each tolerant of malformed values. The summary keeps counts, sizes and the
//! few image entries that matter for prepull matching, never the whole image list.

use super::eligibility::{Labels, NodeFacts, Taint};
use super::intern::intern;
use super::lenient::{Field, Lenient, LenientVec, present};
use super::quantity::parse_bytes;
use super::reference::{ImageRef, RefError};
use super::wanted::Relevance;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;
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
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Field<NodeSpecView>,
    #[serde(default)]
    pub status: Option<NodeStatusView>,
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
    #[serde(default, deserialize_with = "present")]
    pub images: Option<LenientVec<ImageView>>,
    #[serde(default)]
    pub capacity: Field<ResourcesView>,
    #[serde(default)]
    pub allocatable: Field<ResourcesView>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct ResourcesView {
    #[serde(default, rename = "ephemeral-storage")]
    pub ephemeral_storage: Field<QuantityText>,
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

#[derive(Deserialize, Debug, Clone, Default)]
pub struct ImageView {
    #[serde(default, deserialize_with = "present")]
    pub names: Option<LenientVec<String>>,
    #[serde(default, rename = "sizeBytes")]
    pub size_bytes: Field<i64>,
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
    }
}

/// A malformed field found in a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub field: InvalidField,
    pub detail: String,
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
    pub labels: Labels,
    pub taints: Vec<Taint>,
    /// The names of the image entries that can matter for prepull matching.
    pub relevant_images: Vec<Vec<ImageRef>>,
    pub problems: Vec<Problem>,
}

impl NodeSummary {
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

/// Summarizes a node. Returns `Err` only when the item is not a Node or has no
/// name; every other malformation is recorded in `problems` and the rest of the
/// node is kept.
pub fn summarize(node: &NodeView, relevance: &Relevance) -> Result<NodeSummary, Problem> {
    if let Some(kind) = node.kind.as_deref()
        && kind != "Node"
    {
        let name = node.metadata.name.as_deref().unwrap_or("<unnamed>");
        return Err(Problem {
            field: InvalidField::Node,
            detail: format!("{kind} {name:?} is not a Node"),
        });
    }
    let name = match node.metadata.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(Problem {
                field: InvalidField::Name,
                detail: "node without metadata.name".into(),
            });
        }
    };
    let mut problems = Vec::new();
    let mut problem =
        |field: InvalidField, detail: String| problems.push(Problem { field, detail });

    let spec = match &node.spec {
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
    let mut taints = Vec::new();
    if let Some(list) = spec.and_then(|s| s.taints.as_ref()) {
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
                Lenient::Invalid(e) => {
                    problem(InvalidField::Taints, format!("spec.taints[{i}]: {e}"))
                }
            }
        }
    }
    let labels = Labels::new(
        node.metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    intern(&Arc::from(k.as_str())),
                    intern(&Arc::from(v.as_str())),
                )
            })
            .collect(),
    );

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
        problems: Vec::new(),
    };

    let Some(status) = &node.status else {
        problem(InvalidField::Status, "node has no status".into());
        summary.problems = problems;
        return Ok(summary);
    };

    summary.ephemeral_storage_capacity_bytes = storage(
        status.capacity.as_ref(),
        InvalidField::EphemeralStorageCapacity,
        "status.capacity",
        &mut problem,
    );
    summary.ephemeral_storage_allocatable_bytes = storage(
        status.allocatable.as_ref(),
        InvalidField::EphemeralStorageAllocatable,
        "status.allocatable",
        &mut problem,
    );

    if let Some(images) = &status.images {
        if images.was_null {
            problem(InvalidField::Images, "status.images is null".into());
        }
        if let Some(e) = &images.invalid {
            problem(InvalidField::Images, format!("status.images: {e}"));
        }
        summary.image_count = u32::try_from(images.items.len()).unwrap_or(u32::MAX);
        for (i, entry) in images.items.iter().enumerate() {
            let entry = match entry {
                Lenient::Ok(e) => e,
                Lenient::Invalid(e) => {
                    problem(InvalidField::ImageEntry, format!("status.images[{i}]: {e}"));
                    continue;
                }
            };
            match &entry.size_bytes {
                Some(Lenient::Ok(n)) if *n >= 0 => {
                    summary.image_size_bytes = summary.image_size_bytes.saturating_add(*n as u64)
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
            let refs = entry_names(i, entry, &mut problem);
            if relevance.is_relevant(&refs) {
                summary
                    .relevant_images
                    .push(refs.iter().map(ImageRef::interned).collect());
            }
        }
    }
    summary.relevant_images.shrink_to_fit();
    summary.problems = problems;
    Ok(summary)
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

fn entry_names(
    i: usize,
    entry: &ImageView,
    problem: &mut impl FnMut(InvalidField, String),
) -> Vec<ImageRef> {
    let Some(names) = &entry.names else {
        problem(
            InvalidField::ImageNames,
            format!("status.images[{i}] has no names"),
        );
        return Vec::new();
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
    let mut refs = Vec::with_capacity(names.items.len());
    for (j, name) in names.items.iter().enumerate() {
        match name {
            Lenient::Ok(s) => match ImageRef::parse(s) {
                Ok(r) => refs.push(r),
                Err(RefError::Placeholder(_)) => {}
                Err(e) => problem(
                    InvalidField::ImageName,
                    format!("status.images[{i}].names[{j}]: {e}"),
                ),
            },
            Lenient::Invalid(e) => problem(
                InvalidField::ImageName,
                format!("status.images[{i}].names[{j}]: {e}"),
            ),
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::wanted::tests::wanted as config;
    use serde_json::json;

    fn wanted(exact: &[&str], patterns: &[&str], selector: &[(&str, &str)]) -> Relevance {
        Relevance::new(&config(exact, patterns, selector), [])
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
        assert!(s.problems.is_empty(), "{:?}", s.problems);
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

    #[test]
    fn node_view_is_the_nodes_resource() {
        assert_eq!(NodeView::url_path(&(), None), "/api/v1/nodes");
        assert_eq!(NodeView::api_version(&()), "v1");
        assert_eq!(NodeView::kind(&()), "Node");
    }
}
