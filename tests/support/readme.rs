//! The README's metric tables, the families the code declares, and families as
//! a Prometheus text exposition shows them, to compare them.

use imagecap_exporter::agent::families::AGENT_FAMILIES;
use imagecap_exporter::metrics::counters::INVALID_SOURCE_DATA;
use imagecap_exporter::metrics::{
    AGENT_AND_KUBELET_FAMILIES, CLUSTER_FAMILIES, EXPORTER_FAMILIES, IMAGE_FAMILIES, MENU_FAMILIES,
    NODE_FAMILIES, SOURCE_FAMILIES,
};
use std::collections::{BTreeMap, BTreeSet};

/// Families served only with `--agents`, `--kubelet-stats` or `--kubelet-configz`
/// (not on the example data): as declared.
pub fn with_agents_and_kubelets() -> Vec<&'static str> {
    AGENT_AND_KUBELET_FAMILIES.iter().map(|f| f.name).collect()
}

/// Families served only with a Nublado source that has answered (not on the
/// example data, which has none): the menu's families, and the malformed-field
/// counter, which has series once a source of wanted images is read;
/// tests/serve_sources.rs checks them.
pub fn with_nublado() -> Vec<String> {
    MENU_FAMILIES
        .iter()
        .map(|f| f.name.to_string())
        .chain([INVALID_SOURCE_DATA.text_name()])
        .collect()
}

/// name -> type of every family the exporter declares, by the name the
/// Prometheus text format gives it. The report families are all gauges.
pub fn exporter_declared() -> BTreeMap<String, String> {
    let report = NODE_FAMILIES
        .iter()
        .chain(AGENT_AND_KUBELET_FAMILIES)
        .map(|f| f.name)
        .chain(IMAGE_FAMILIES.iter().map(|f| f.name))
        .chain(SOURCE_FAMILIES.iter().map(|f| f.name))
        .chain(CLUSTER_FAMILIES.iter().map(|f| f.name))
        .chain(MENU_FAMILIES.iter().map(|f| f.name))
        .map(|name| (name.to_string(), "gauge".to_string()));
    EXPORTER_FAMILIES
        .iter()
        .map(|f| (f.text_name(), f.kind.as_str().to_string()))
        .chain(report)
        .collect()
}

/// name -> type of every family the node agent declares.
pub fn agent_declared() -> BTreeMap<String, String> {
    AGENT_FAMILIES
        .iter()
        .map(|f| (f.text_name(), f.kind.as_str().to_string()))
        .collect()
}

/// A family's type and label keys.
pub type Shape = (String, BTreeSet<String>);

/// name -> (type, label keys), from the README's "Metrics" table.
pub fn readme_table() -> BTreeMap<String, Shape> {
    let readme = readme();
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    table_rows(section)
}

/// name -> (type, label keys), from the README's table of the node agent's
/// metrics.
pub fn readme_agent_table() -> BTreeMap<String, Shape> {
    let readme = readme();
    let section = readme
        .split("\n## Node agent\n")
        .nth(1)
        .expect("a Node agent section")
        .split("\n## ")
        .next()
        .unwrap();
    let table = section
        .split("| metric | type | labels | meaning |")
        .nth(1)
        .expect("a metric table")
        .split("\n\n")
        .next()
        .unwrap();
    table_rows(table)
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The rows of the metric tables in `section`: name -> (type, label keys).
fn table_rows(section: &str) -> BTreeMap<String, Shape> {
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
