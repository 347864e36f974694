//! The README's metric table and what `/metrics` exposes cannot drift apart: every
//! family served (on the shipped example data) is in the table with its type and
//! labels, and every family in the table is served, except those that need node
//! agents or kubelet reads ([`support::readme::WITH_AGENTS_AND_KUBELETS`]), which
//! tests/serve_agents.rs checks the same way.

mod support;

use std::collections::BTreeSet;
use support::Exporter;
use support::readme::{WITH_AGENTS_AND_KUBELETS, exposed, readme_table};

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
    let documented_names: BTreeSet<_> = documented
        .keys()
        .filter(|n| !WITH_AGENTS_AND_KUBELETS.contains(&n.as_str()))
        .collect();
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
