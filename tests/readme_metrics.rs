//! The README's metric table and what `/metrics` exposes cannot drift apart: every
//! family served (on the shipped example data) is in the table with its type and
//! labels, and every family in the table is served, except those that need node
//! agents or kubelet reads ([`support::readme::with_agents_and_kubelets`]), which
//! tests/serve_agents.rs checks the same way, or a Nublado source
//! ([`support::readme::with_nublado`], tests/serve_sources.rs). The tables list
//! exactly the families the code declares, and the node agent serves its table.

mod support;

use imagecap_exporter::agent::Status;
use imagecap_exporter::agent::families::{AgentMetrics, Pruning};
use imagecap_exporter::agent::report::Snapshot;
use imagecap_exporter::metrics::TextFormat;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};
use support::fake_apiserver::{FakeApiServer, filler, node};
use support::readme::{
    agent_declared, exporter_declared, exposed, readme_agent_table, readme_table,
    with_agents_and_kubelets, with_nublado,
};
use support::{Exporter, kubeconfig};

/// name -> type of a README table.
fn kinds(
    table: std::collections::BTreeMap<String, support::readme::Shape>,
) -> Vec<(String, String)> {
    table
        .into_iter()
        .map(|(name, (kind, _))| (name, kind))
        .collect()
}

#[test]
fn the_readme_tables_list_the_declared_families() {
    let declared: Vec<_> = exporter_declared().into_iter().collect();
    assert_eq!(
        declared,
        kinds(readme_table()),
        "declared (left) vs in the README's Metrics table (right)"
    );
    let declared: Vec<_> = agent_declared().into_iter().collect();
    assert_eq!(
        declared,
        kinds(readme_agent_table()),
        "declared by the agent (left) vs in the README's agent table (right)"
    );
}

#[test]
fn the_agent_serves_its_readme_table_after_a_pruning_run() {
    let status = Arc::new(RwLock::new(Status {
        last: Some(Arc::new(Snapshot {
            json: Default::default(),
            etag: String::new(),
            collected_at_text: String::new(),
            images: 60,
            image_bytes: 1 << 30,
            image_fs_used_bytes: Some(1 << 31),
            collected_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        })),
        up: true,
        last_error: None,
        plan: None,
    }));
    let pruning = Pruning {
        enabled: true,
        dry_run: true,
    };
    let metrics = AgentMetrics::new("n1", "v", status, Some(pruning));
    metrics.prune_candidates(3);
    metrics.prune_ran(UNIX_EPOCH + Duration::from_secs(1_700_000_100));
    let served: std::collections::BTreeMap<_, _> =
        exposed(&metrics.render(TextFormat::PrometheusText))
            .into_iter()
            .map(|(name, (kind, labels, _))| (name, (kind, labels)))
            .collect();
    assert_eq!(
        served,
        readme_agent_table(),
        "served (left) vs README (right)"
    );
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
    let with_nublado = with_nublado();
    let with_agents_and_kubelets = with_agents_and_kubelets();
    let documented_names: BTreeSet<_> = documented
        .keys()
        .filter(|n| !with_agents_and_kubelets.contains(&n.as_str()))
        .filter(|n| !with_nublado.contains(n))
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
