//! The README's metric table and what `/metrics` exposes cannot drift apart: every
//! family served (on the shipped example data) is in the table with its type and
//! labels, and every family in the table is served, except those that need node
//! agents or kubelet reads ([`support::readme::WITH_AGENTS_AND_KUBELETS`]), which
//! tests/serve_agents.rs checks the same way, or a Nublado source
//! ([`support::readme::WITH_NUBLADO`], tests/serve_sources.rs).

mod support;

use std::collections::BTreeSet;
use support::fake_apiserver::{FakeApiServer, filler, node};
use support::readme::{WITH_AGENTS_AND_KUBELETS, WITH_NUBLADO, exposed, readme_table};
use support::{Exporter, kubeconfig};

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
    let documented_names: BTreeSet<_> = documented
        .keys()
        .filter(|n| !WITH_AGENTS_AND_KUBELETS.contains(&n.as_str()))
        .filter(|n| !WITH_NUBLADO.contains(&n.as_str()))
        .collect();
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
