//! The README's metric table and what `/metrics` exposes cannot drift apart: every
//! family served (on the shipped example data) is in the table with its type and
//! labels, and every family in the table is served.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use support::fake_apiserver::{FakeApiServer, filler, node};
use support::{Exporter, kubeconfig};

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

/// name -> (type, label keys, whether it has samples), from a Prometheus text
/// exposition. A histogram's `_bucket`, `_sum` and `_count` samples belong to it,
/// and its `le` label is not one of its labels.
fn exposed(text: &str) -> BTreeMap<String, (String, BTreeSet<String>, bool)> {
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
    let mut served = exposed(&exporter.metrics().await);
    // The API client's families have samples once requests were made: from a
    // cluster (the fake API server), not from a file.
    let fake = FakeApiServer::start(vec![node("a", &[], &filler(2))]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let in_cluster = Exporter::start(&[], &[("KUBECONFIG", kc.as_path())]);
    let text = in_cluster
        .wait_metrics("a watch request counted", |t| {
            t.contains("imagecap_kube_requests_total{verb=\"watch\"")
        })
        .await;
    for (name, family) in exposed(&text) {
        if family.2 && !served.get(&name).is_some_and(|f| f.2) {
            served.insert(name, family);
        }
    }
    let documented = readme_table();
    assert!(served.len() >= 15, "{served:?}");
    let served_names: BTreeSet<_> = served.keys().collect();
    let documented_names: BTreeSet<_> = documented.keys().collect();
    assert_eq!(
        served_names, documented_names,
        "families served (left) vs in the README table (right)"
    );
    for (name, (kind, labels, has_samples)) in &served {
        let (doc_kind, doc_labels) = &documented[name];
        assert_eq!(
            doc_kind, kind,
            "{name}: type in the README (left) vs served (right)"
        );
        // A family without samples yet (no API request on file data) shows no labels.
        if *has_samples {
            assert_eq!(
                doc_labels, labels,
                "{name}: labels in the README (left) vs served (right)"
            );
        }
    }
}
