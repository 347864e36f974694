//! The README's "Metrics" table, and families as a Prometheus text exposition
//! shows them, to compare the two.

use std::collections::{BTreeMap, BTreeSet};

/// Families served only with `--agents`, `--kubelet-stats` or `--kubelet-configz`
/// (not on the example data).
pub const WITH_AGENTS_AND_KUBELETS: &[&str] = &[
    "imagecap_node_agent_up",
    "imagecap_node_runtime_images",
    "imagecap_node_hidden_images",
    "imagecap_node_image_fs_used_bytes",
    "imagecap_node_image_fs_capacity_bytes",
    "imagecap_node_image_gc_high_threshold_ratio",
    "imagecap_node_image_gc_low_threshold_ratio",
];

/// Families served only with a Nublado source that has answered (not on the
/// example data, which has none); tests/serve_sources.rs checks them.
pub const WITH_NUBLADO: &[&str] = &[
    "imagecap_menu_images",
    "imagecap_menu_image_hidden",
    "imagecap_invalid_source_data_total",
];

/// A family's type and label keys.
pub type Shape = (String, BTreeSet<String>);

/// name -> (type, label keys), from the README's "Metrics" table.
pub fn readme_table() -> BTreeMap<String, Shape> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        rows.insert(name, (cells[2].to_string(), labels));
    }
    rows
}

/// name -> (type, label keys, whether it has samples), from a Prometheus text
/// exposition. A histogram's `_bucket`, `_sum` and `_count` samples belong to it,
/// and its `le` label is not one of its labels.
pub fn exposed(text: &str) -> BTreeMap<String, (String, BTreeSet<String>, bool)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>, bool)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), (kind.to_string(), BTreeSet::new(), false));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let sample = &line[..name_end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample.strip_suffix(suffix))
                .find(|base| families.get(*base).is_some_and(|f| f.0 == "histogram"))
                .unwrap_or(sample);
            let family = families
                .get_mut(name)
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            family.2 = true;
            if let Some(labels) = line[name_end..].strip_prefix('{') {
                let labels = &labels[..labels.rfind('}').unwrap()];
                for pair in labels.split("\",") {
                    let key = pair.split('=').next().unwrap();
                    if !(family.0 == "histogram" && key == "le") {
                        family.1.insert(key.to_string());
                    }
                }
            }
        }
    }
    families
}
