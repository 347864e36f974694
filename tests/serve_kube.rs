//! `serve` against a fake API server, through the real `kube` client: nodes added,
//! changed and deleted show on /metrics, in watch and poll mode.

mod support;

use support::fake_apiserver::{FakeApiServer, filler, node};
use support::{Exporter, kubeconfig, names, sample};

const LAB: &str = "ghcr.io/x/lab";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!("prepull:\n  images: ['{LAB}:w_1']\n  nodeSelector:\n    pool: lab\n"),
    )
    .unwrap();
    path
}

fn lab_node(name: &str, with_lab: bool, extra: usize) -> serde_json::Value {
    let mut images = filler(extra);
    if with_lab {
        images.insert(0, names(&[&format!("{LAB}:w_1")]));
    }
    node(name, &[("pool", "lab")], &images)
}

fn images(text: &str, node: &str) -> Option<f64> {
    sample(text, "imagecap_node_images", &[("node", node)])
}

async fn lifecycle(mode: &str) {
    let fake = FakeApiServer::start(vec![
        lab_node("node-a", true, 3),
        lab_node("node-b", true, 10),
        lab_node("node-c", false, 5),
        node("other", &[("pool", "gpu")], &filler(2)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let cfg = config(dir.path());
    let exporter = Exporter::start(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--mode",
            mode,
            "--poll-interval",
            "200ms",
            "--page-size",
            "2",
        ],
        &[("KUBECONFIG", kc.as_path())],
    );
    exporter.wait_ready().await;

    let m = exporter.metrics().await;
    assert_eq!(images(&m, "node-a"), Some(4.0));
    assert_eq!(images(&m, "node-b"), Some(11.0));
    assert_eq!(images(&m, "other"), Some(2.0));
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(4.0));
    assert_eq!(
        sample(&m, "imagecap_prepull_eligible_nodes", &[]),
        Some(3.0)
    );
    let missing = [("node", "node-c"), ("image", "ghcr.io/x/lab:w_1")];
    assert_eq!(
        sample(&m, "imagecap_node_prepull_image_missing", &missing),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", "ghcr.io/x/lab:w_1")]
        ),
        Some(2.0)
    );
    assert!(sample(&m, "imagecap_last_update_timestamp_seconds", &[]).unwrap() > 1.7e9);

    // The list was paginated: 4 nodes, 2 a page.
    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .any(|q| q.contains("limit=2") && q.contains("continue=")),
        "{reqs:?}"
    );

    // Added.
    fake.apply(lab_node("node-d", true, 0));
    exporter
        .wait_metrics("node-d to appear", |m| images(m, "node-d") == Some(1.0))
        .await;

    // Changed: node-c pulls the wanted image and fills up to the default cap.
    fake.apply(lab_node("node-c", true, 49));
    let m = exporter
        .wait_metrics("node-c at its cap", |m| {
            sample(m, "imagecap_node_at_cap", &[("node", "node-c")]) == Some(1.0)
        })
        .await;
    assert_eq!(images(&m, "node-c"), Some(50.0));
    assert_eq!(
        sample(&m, "imagecap_node_images_cap_ratio", &[("node", "node-c")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_prepull_image_missing", &missing),
        None
    );

    // Past the default: the kubelet evidently has another cap.
    fake.apply(lab_node("node-c", true, 80));
    let m = exporter
        .wait_metrics("node-c unlimited", |m| {
            sample(m, "imagecap_node_max_images", &[("node", "node-c")]) == Some(-1.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_node_at_cap", &[("node", "node-c")]),
        Some(0.0)
    );

    // Deleted: every series of the node goes.
    fake.delete("node-b");
    let m = exporter
        .wait_metrics("node-b to disappear", |m| images(m, "node-b").is_none())
        .await;
    assert!(!m.contains("node=\"node-b\""), "{m}");
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(4.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_follows_nodes() {
    lifecycle("watch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_mode_follows_nodes() {
    lifecycle("poll").await;
}

/// History compacted and connections dropped while a node was deleted: the
/// watcher gets 410 Gone, relists, and ends with exactly the live nodes.
#[tokio::test(flavor = "multi_thread")]
async fn watch_relists_after_410_without_losing_or_doubling_nodes() {
    let fake = FakeApiServer::start(vec![
        lab_node("keep-1", true, 1),
        lab_node("keep-2", true, 1),
        lab_node("doomed", true, 1),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(&["--page-size", "1"], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    assert_eq!(
        sample(&exporter.metrics().await, "imagecap_nodes", &[]),
        Some(3.0)
    );

    // The deletion happens, then history is compacted and the watch connection
    // drops, so the DELETED event can never be replayed.
    fake.delete("doomed");
    fake.apply(lab_node("born-while-away", false, 2));
    fake.compact();
    fake.drop_watches();

    let m = exporter
        .wait_metrics("the relist", |m| {
            images(m, "doomed").is_none() && images(m, "born-while-away") == Some(2.0)
        })
        .await;
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(3.0));
    for n in ["keep-1", "keep-2", "born-while-away"] {
        assert_eq!(
            m.matches(&format!("imagecap_node_images{{node=\"{n}\"}}"))
                .count(),
            1,
            "{n}"
        );
    }
    let lists = fake
        .requests()
        .iter()
        .filter(|q| !q.contains("watch="))
        .count();
    assert!(lists >= 2, "expected a relist, saw {:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn node_selector_is_sent_to_the_api_server() {
    let fake = FakeApiServer::start(vec![
        lab_node("in", true, 1),
        node("out", &[("pool", "gpu")], &filler(1)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(
        &["--node-selector", "pool=lab", "--mode", "poll"],
        &[("KUBECONFIG", kc.as_path())],
    );
    exporter.wait_ready().await;
    let m = exporter.metrics().await;
    assert_eq!(images(&m, "in"), Some(2.0));
    assert_eq!(images(&m, "out"), None);
    assert!(
        fake.requests()
            .iter()
            .any(|q| q.contains("labelSelector=pool%3Dlab")),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_exporter_cleanly() {
    let fake = FakeApiServer::start(vec![lab_node("a", true, 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let mut exporter = Exporter::start(&[], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let start = std::time::Instant::now();
    let status = exporter.terminate();
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert!(exporter.log_text().contains("shutting down"));
}

/// API errors are counted, logged with a hint, retried, and the exporter recovers
/// without a restart; /readyz waits for the first complete list.
#[tokio::test(flavor = "multi_thread")]
async fn api_errors_are_retried_and_counted() {
    for mode in ["poll", "watch"] {
        let fake = FakeApiServer::start(vec![lab_node("a", true, 1)]).await;
        fake.fail_next(&[403, 500, 500]);
        let dir = tempfile::tempdir().unwrap();
        let kc = kubeconfig(dir.path(), &fake.url());
        let exporter = Exporter::start(
            &["--mode", mode, "--poll-interval", "100ms"],
            &[("KUBECONFIG", kc.as_path())],
        );
        let (code, _) = exporter.get("/readyz").await;
        assert_eq!(code, 503, "{mode}: not ready before the first list");
        let m = exporter
            .wait_metrics("recovery", |m| images(m, "a") == Some(2.0))
            .await;
        assert_eq!(
            sample(&m, "imagecap_source_errors_total", &[("kind", "list")]),
            Some(3.0),
            "{mode}"
        );
        exporter.wait_ready().await;
        let logs = exporter.log_text();
        assert!(
            logs.contains("RBAC: the service account needs get, list and watch on nodes"),
            "{mode}: {logs}"
        );
    }
}

/// --kubelet-configz: the kubelet's own cap replaces the assumed one; failures keep
/// the default, are counted, and do not stop the other nodes.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_configz_supplies_the_real_cap() {
    use support::fake_apiserver::Configz;
    let fake = FakeApiServer::start(vec![
        lab_node("raised", true, 59),
        lab_node("lowered", true, 19),
        lab_node("forbidden", true, 1),
        lab_node("omits", true, 1),
        lab_node("slow", true, 1),
        lab_node("default", true, 1),
    ])
    .await;
    fake.set_configz("raised", Configz::Cap(100));
    fake.set_configz("lowered", Configz::Cap(20));
    fake.set_configz("forbidden", Configz::Status(403));
    fake.set_configz(
        "omits",
        Configz::Body(r#"{"kubeletconfig":{"maxPods":110}}"#.into()),
    );
    fake.set_configz("slow", Configz::Slow(std::time::Duration::from_secs(5), 10));
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(
        &[
            "--kubelet-configz",
            "--kubelet-configz-concurrency",
            "2",
            "--kubelet-configz-timeout",
            "500ms",
        ],
        &[
            ("KUBECONFIG", kc.as_path()),
            // Each round of reads is logged: if a node is read twice, the log
            // says which round read it.
            (
                "RUST_LOG",
                std::path::Path::new("info,imagecap_exporter::nodes::kubelet=debug"),
            ),
        ],
    );
    exporter.wait_ready().await;
    let known = |m: &str, n: &str| sample(m, "imagecap_node_max_images_known", &[("node", n)]);
    let cap = |m: &str, n: &str| sample(m, "imagecap_node_max_images", &[("node", n)]);
    let m = exporter
        .wait_metrics("configz of every node", |m| {
            known(m, "raised") == Some(1.0)
                && known(m, "lowered") == Some(1.0)
                && known(m, "default") == Some(1.0)
                && sample(m, "imagecap_source_errors_total", &[("kind", "configz")]) == Some(3.0)
        })
        .await;
    assert_eq!(
        cap(&m, "raised"),
        Some(100.0),
        "not inferred unlimited any more"
    );
    assert_eq!(
        sample(&m, "imagecap_node_images_cap_ratio", &[("node", "raised")]),
        Some(0.6)
    );
    assert_eq!(cap(&m, "lowered"), Some(20.0));
    assert_eq!(
        sample(&m, "imagecap_node_at_cap", &[("node", "lowered")]),
        Some(1.0)
    );
    for n in ["forbidden", "omits", "slow"] {
        assert_eq!(known(&m, n), Some(0.0), "{n}");
        assert_eq!(cap(&m, n), Some(50.0), "{n} keeps the default");
    }
    let logs = exporter.log_text();
    assert!(logs.contains("get on nodes/proxy"), "{logs}");
    assert!(logs.contains("no nodeStatusMaxImages"), "{logs}");
    let (served, max_in_flight) = fake.configz_stats();
    assert_eq!(served, 6, "each node is read once:\n{logs}");
    assert!(max_in_flight <= 2, "at most 2 at once, saw {max_in_flight}");

    // A node that appears is read at once, not at the next interval (10m).
    fake.set_configz("late", Configz::Cap(-1));
    fake.apply(lab_node("late", true, 3));
    let m = exporter
        .wait_metrics("the new node's configz", |m| known(m, "late") == Some(1.0))
        .await;
    assert_eq!(cap(&m, "late"), Some(-1.0));

    // Its series go with the node.
    fake.delete("raised");
    exporter
        .wait_metrics("raised to disappear", |m| known(m, "raised").is_none())
        .await;
}

/// RBAC granting `list` but not `watch` on nodes: the exporter says so once, in
/// one line naming the missing verb and the fix, and keeps the data fresh with
/// periodic lists instead of freezing it at the first list.
#[tokio::test(flavor = "multi_thread")]
async fn a_forbidden_watch_falls_back_to_periodic_lists() {
    let fake = FakeApiServer::start(vec![lab_node("a", true, 1)]).await;
    fake.forbid("watch", "nodes");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(
        &["--mode", "watch", "--poll-interval", "300ms"],
        &[("KUBECONFIG", kc.as_path())],
    );
    exporter.wait_ready().await;
    // Changes arrive through the lists.
    fake.apply(lab_node("b", false, 4));
    exporter
        .wait_metrics("the new node, through a list", |m| {
            images(m, "b") == Some(4.0)
        })
        .await;
    fake.apply(lab_node("a", true, 9));
    let m = exporter
        .wait_metrics("the changed node, through a list", |m| {
            images(m, "a") == Some(10.0)
        })
        .await;
    let (code, _) = exporter.get("/readyz").await;
    assert_eq!(code, 200, "fresh data from lists is ready");
    assert!(
        sample(&m, "imagecap_source_errors_total", &[("kind", "watch")]).unwrap_or(0.0) >= 1.0,
        "the refused watch is counted"
    );
    let lists = fake
        .requests()
        .iter()
        .filter(|q| !q.contains("watch=true"))
        .count();
    assert!(lists >= 3, "lists every interval: {lists}");
    let logs = exporter.log_text();
    let forbidden: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("watching nodes is forbidden"))
        .collect();
    assert_eq!(forbidden.len(), 1, "said once: {logs}");
    let line = forbidden[0];
    for needle in [
        "Forbidden (403)",
        "cannot watch resource",
        "listing all nodes every 300ms",
        r#"verbs [\"get\", \"list\", \"watch\"]"#,
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(!logs.contains("Status {"), "no struct dump: {logs}");
}

/// After one outage the backoff has grown; a watch that works again must start it
/// over, so the first retry of the next outage comes after the shortest wait, not
/// after where the last outage left off.
#[tokio::test(flavor = "multi_thread")]
async fn a_working_watch_starts_the_backoff_over() {
    let fake = FakeApiServer::start(vec![lab_node("a", true, 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(&["--mode", "watch"], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // First outage: three failed watches, 0.8 + 1.6 + 3.2 s of backoff (and up to
    // as much again of jitter); the next wait would be at least 6.4 s.
    fake.fail_next(&[500, 500, 500]);
    fake.drop_watches();
    // Node b is added only once all three have failed: added sooner, it could
    // still reach the old watch before that one is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fake.fault_times().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch was not retried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fake.apply(lab_node("b", false, 2));
    exporter
        .wait_metrics_for(
            "the watch back after the first outage",
            std::time::Duration::from_secs(40),
            |m| images(m, "b") == Some(2.0),
        )
        .await;

    // Second outage: one failed watch.
    fake.fail_next(&[500]);
    fake.drop_watches();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let gap = loop {
        if let Some(gap) = fake.retry_gap(3) {
            break gap;
        }
        assert!(std::time::Instant::now() < deadline, "no retry");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        gap < std::time::Duration::from_secs(4),
        "the first retry of a new outage waited {gap:?}"
    );
    exporter
        .wait_metrics_for(
            "four failed watches counted",
            std::time::Duration::from_secs(10),
            |m| sample(m, "imagecap_source_errors_total", &[("kind", "watch")]) == Some(4.0),
        )
        .await;
}

/// kube's request builder leaves an empty pair at the start of each query; no
/// request reaches the API server with it.
#[tokio::test(flavor = "multi_thread")]
async fn queries_carry_no_stray_ampersand() {
    let fake = FakeApiServer::start(vec![lab_node("a", true, 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(&["--mode", "watch"], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    fake.apply(lab_node("b", true, 1));
    exporter
        .wait_metrics("the watch", |m| images(m, "b") == Some(2.0))
        .await;
    let reqs = fake.requests();
    assert!(reqs.iter().any(|q| q.contains("watch=true")), "{reqs:?}");
    assert!(reqs.iter().any(|q| q.contains("limit=")), "{reqs:?}");
    for q in &reqs {
        assert!(
            !q.starts_with('&') && !q.contains("&&"),
            "{q:?} in {reqs:?}"
        );
    }
}
