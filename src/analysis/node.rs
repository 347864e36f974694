//! One Node -> one compact [`NodeSummary`].
//!
//! [`NodeView`] is the projection of a Node the exporter decodes: only the fields it
//! reads, each tolerant of malformed values. The summary keeps counts, sizes and the
//! few image entries that matter for prepull matching, never the whole image list.

use super::lenient::{Field, Lenient, LenientVec, present};
use super::quantity::parse_bytes;
use super::reference::{ImageRef, RefError};
use super::wanted::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use std::fmt;

/// The parts of a `v1.Node` the exporter reads.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct NodeView {
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

/// A malformed field found in a node; `field` is the `field` label of
/// `imagecap_invalid_node_data_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub field: &'static str,
    pub detail: String,
}

/// The fields of [`Problem`], for documentation and for pre-creating counter series.
pub const PROBLEM_FIELDS: &[&str] = &[
    "node",
    "name",
    "status",
    "images",
    "image_entry",
    "image_names",
    "image_name",
    "image_size",
    "ephemeral_storage_capacity",
    "ephemeral_storage_allocatable",
    "unschedulable",
];

/// What the exporter keeps of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub name: String,
    /// Entries in `status.images`, well-formed or not: the kubelet's count.
    pub images: u32,
    /// Sum of the well-formed, non-negative `sizeBytes`.
    pub image_size_bytes: u64,
    pub ephemeral_storage_capacity_bytes: Option<u64>,
    pub ephemeral_storage_allocatable_bytes: Option<u64>,
    pub unschedulable: bool,
    /// Matches the prepull node selector (eligible unless also cordoned).
    pub prepull_selected: bool,
    /// The names of the image entries that can matter for prepull matching.
    pub relevant_images: Vec<Vec<ImageRef>>,
    pub problems: Vec<Problem>,
}

impl NodeSummary {
    /// Eligible for prepulling: selected and not cordoned.
    pub fn eligible(&self) -> bool {
        self.prepull_selected && !self.unschedulable
    }
}

/// Summarizes a node. Returns `Err` only when the node has no name; every other
/// malformation is recorded in `problems` and the rest of the node is kept.
pub fn summarize(node: &NodeView, wanted: &Wanted) -> Result<NodeSummary, Problem> {
    let name = match node.metadata.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(Problem {
                field: "name",
                detail: "node without metadata.name".into(),
            });
        }
    };
    let mut problems = Vec::new();
    let mut problem =
        |field: &'static str, detail: String| problems.push(Problem { field, detail });

    let unschedulable = match &node.spec {
        None => false,
        Some(Lenient::Invalid(e)) => {
            problem("unschedulable", format!("spec: {e}"));
            false
        }
        Some(Lenient::Ok(spec)) => match &spec.unschedulable {
            None => false,
            Some(Lenient::Ok(b)) => *b,
            Some(Lenient::Invalid(e)) => {
                problem("unschedulable", format!("spec.unschedulable: {e}"));
                false
            }
        },
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let prepull_selected = wanted.selects(&labels);

    let mut summary = NodeSummary {
        name,
        images: 0,
        image_size_bytes: 0,
        ephemeral_storage_capacity_bytes: None,
        ephemeral_storage_allocatable_bytes: None,
        unschedulable,
        prepull_selected,
        relevant_images: Vec::new(),
        problems: Vec::new(),
    };

    let Some(status) = &node.status else {
        problem("status", "node has no status".into());
        summary.problems = problems;
        return Ok(summary);
    };

    summary.ephemeral_storage_capacity_bytes = storage(
        status.capacity.as_ref(),
        "ephemeral_storage_capacity",
        "status.capacity",
        &mut problem,
    );
    summary.ephemeral_storage_allocatable_bytes = storage(
        status.allocatable.as_ref(),
        "ephemeral_storage_allocatable",
        "status.allocatable",
        &mut problem,
    );

    if let Some(images) = &status.images {
        if images.was_null {
            problem("images", "status.images is null".into());
        }
        if let Some(e) = &images.invalid {
            problem("images", format!("status.images: {e}"));
        }
        summary.images = u32::try_from(images.items.len()).unwrap_or(u32::MAX);
        for (i, entry) in images.items.iter().enumerate() {
            let entry = match entry {
                Lenient::Ok(e) => e,
                Lenient::Invalid(e) => {
                    problem("image_entry", format!("status.images[{i}]: {e}"));
                    continue;
                }
            };
            match &entry.size_bytes {
                Some(Lenient::Ok(n)) if *n >= 0 => {
                    summary.image_size_bytes = summary.image_size_bytes.saturating_add(*n as u64)
                }
                Some(Lenient::Ok(n)) => problem(
                    "image_size",
                    format!("status.images[{i}].sizeBytes is negative: {n}"),
                ),
                Some(Lenient::Invalid(e)) => {
                    problem("image_size", format!("status.images[{i}].sizeBytes: {e}"))
                }
                None => problem("image_size", format!("status.images[{i}] has no sizeBytes")),
            }
            let refs = entry_names(i, entry, &mut problem);
            if wanted.is_relevant(&refs) {
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
    field: &'static str,
    path: &str,
    problem: &mut impl FnMut(&'static str, String),
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
    problem: &mut impl FnMut(&'static str, String),
) -> Vec<ImageRef> {
    let Some(names) = &entry.names else {
        problem("image_names", format!("status.images[{i}] has no names"));
        return Vec::new();
    };
    if let Some(e) = &names.invalid {
        problem("image_names", format!("status.images[{i}].names: {e}"));
    }
    if names.items.is_empty() {
        problem("image_names", format!("status.images[{i}].names is empty"));
    }
    let mut refs = Vec::with_capacity(names.items.len());
    for (j, name) in names.items.iter().enumerate() {
        match name {
            Lenient::Ok(s) => match ImageRef::parse(s) {
                Ok(r) => refs.push(r),
                Err(RefError::Placeholder(_)) => {}
                Err(e) => problem("image_name", format!("status.images[{i}].names[{j}]: {e}")),
            },
            Lenient::Invalid(e) => {
                problem("image_name", format!("status.images[{i}].names[{j}]: {e}"))
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::wanted::tests::wanted;
    use serde_json::json;

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
        s.problems.iter().map(|p| p.field).collect()
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
        assert_eq!(s.images, 2);
        assert_eq!(s.image_size_bytes, 5_004_000_000);
        assert_eq!(s.ephemeral_storage_capacity_bytes, Some(1 << 40));
        assert_eq!(s.ephemeral_storage_allocatable_bytes, Some(900 << 30));
        assert!(!s.unschedulable);
        assert!(s.prepull_selected && s.eligible());
        assert_eq!(s.relevant_images.len(), 1, "only busybox's entry is kept");
        assert_eq!(
            s.relevant_images[0][0].to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn cordoned_or_unselected_nodes_are_not_eligible() {
        let w = wanted(&[], &[], &[("pool", "lab")]);
        let mut v = node(json!([]));
        v.spec = Some(Lenient::Ok(NodeSpecView {
            unschedulable: Some(Lenient::Ok(true)),
        }));
        let s = summarize(&v, &w).unwrap();
        assert!(s.unschedulable && s.prepull_selected && !s.eligible());
        let s = summarize(&node(json!([])), &wanted(&[], &[], &[("pool", "gpu")])).unwrap();
        assert!(!s.prepull_selected && !s.eligible());
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
        assert_eq!(s.images, 6, "every entry counts toward the cap");
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
        assert_eq!(s.images, 0);

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
        assert_eq!(s.images, 1);
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
        assert_eq!(s.images, 1);
    }

    #[test]
    fn a_node_without_a_name_is_an_error() {
        let e = summarize(&view(json!({"status": {}})), &wanted(&[], &[], &[])).unwrap_err();
        assert_eq!(e.field, "name");
    }
}
