//! The README's metric table and what `/metrics` exposes cannot drift apart: every
//! family served (on the shipped example data) is in the table with its type and
//! labels, and every family in the table is served.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use support::Exporter;

/// name -> (type, label keys), from the README's "Metrics" table.
fn readme_table() -> BTreeMap<String, (String, BTreeSet<String>)> {
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

/// name -> (type, label keys), from a Prometheus text exposition.
fn exposed(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), (kind.to_string(), BTreeSet::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let family = families
                .get_mut(&line[..name_end])
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            if let Some(labels) = line[name_end..].strip_prefix('{') {
                let labels = &labels[..labels.rfind('}').unwrap()];
                for pair in labels.split("\",") {
                    family.1.insert(pair.split('=').next().unwrap().to_string());
                }
            }
        }
    }
    families
}

#[tokio::test]
async fn the_readme_metric_table_matches_what_is_served() {
    let root = env!("CARGO_MANIFEST_DIR");
    let exporter = Exporter::start(
        &[
            "--config",
            &format!("{root}/examples/config.yaml"),
            "--nodes-file",
            &format!("{root}/examples/nodes.json"),
        ],
        &[],
    );
    exporter.wait_ready().await;
    let served = exposed(&exporter.metrics().await);
    let documented = readme_table();
    assert!(served.len() >= 15, "{served:?}");
    let served_names: BTreeSet<_> = served.keys().collect();
    let documented_names: BTreeSet<_> = documented.keys().collect();
    assert_eq!(
        served_names, documented_names,
        "families served (left) vs in the README table (right)"
    );
    for (name, (kind, labels)) in &served {
        assert_eq!(
            &documented[name],
            &(kind.clone(), labels.clone()),
            "{name}: README (left) vs served (right)"
        );
    }
}
