//! The API server's bad days: unreachable, throttling, slow, cut off. The exporter
//! keeps running, keeps its last data, counts the errors and recovers by itself.

mod support;

use std::time::{Duration, Instant};
use support::fake_apiserver::{FakeApiServer, Fault, filler, node};
use support::{DEADLINE, Exporter, kubeconfig, sample};

fn nodes() -> Vec<serde_json::Value> {
    vec![
        node("a", &[], &filler(3)),
        node("b", &[], &filler(50)),
        node("c", &[], &filler(7)),
    ]
}

fn list_errors(m: &str) -> f64 {
    sample(m, "imagecap_source_errors_total", &[("kind", "list")]).unwrap()
}

fn start(fake_url: &str, dir: &std::path::Path, args: &[&str]) -> Exporter {
    let kc = kubeconfig(dir, fake_url);
    Exporter::start(args, &[("KUBECONFIG", kc.as_path())])
}

#[tokio::test(flavor = "multi_thread")]
async fn api_unreachable_at_start_then_back() {
    for mode in ["watch", "poll"] {
        // A port nobody listens on, yet.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let exporter = start(
            &format!("http://{addr}"),
            dir.path(),
            &["--mode", mode, "--poll-interval", "1s"],
        );
        let m = exporter
            .wait_metrics("a failed list", |m| list_errors(m) >= 2.0)
            .await;
        assert_eq!(exporter.get("/readyz").await.0, 503, "{mode}");
        assert_eq!(exporter.get("/healthz").await.0, 200, "{mode}: alive");
        assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(0.0));
        assert_eq!(
            sample(&m, "imagecap_last_update_timestamp_seconds", &[]),
            None
        );

        let _fake = FakeApiServer::start_on(addr, nodes()).await;
        exporter.wait_ready().await;
        let m = exporter.metrics().await;
        assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(3.0), "{mode}");
    }
}

/// A throttled request (429 with Retry-After) is retried no sooner than the API
/// server asked; the kube client does it, so the poll loop does not even see an
/// error.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_after_the_requested_delay() {
    let fake = FakeApiServer::start(nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(
        &fake.url(),
        dir.path(),
        &["--mode", "poll", "--poll-interval", "100ms"],
    );
    exporter.wait_ready().await;
    fake.inject([Fault::TooManyRequests {
        retry_after_secs: 2,
    }]);
    let start = Instant::now();
    let gap = loop {
        if let Some(gap) = fake.retry_gap(0) {
            break gap;
        }
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, asked for 2 s"
    );
    assert!(gap < Duration::from_secs(5), "{gap:?}");
    assert_eq!(list_errors(&exporter.metrics().await), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_truncated_answers_are_errors_not_hangs() {
    let fake = FakeApiServer::start(nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(
        &fake.url(),
        dir.path(),
        &[
            "--mode",
            "poll",
            "--poll-interval",
            "100ms",
            "--request-timeout",
            "300ms",
        ],
    );
    exporter.wait_ready().await;
    fake.inject([
        Fault::Slow(Duration::from_secs(3)),
        Fault::Truncate,
        Fault::Status(500),
    ]);
    let m = exporter
        .wait_metrics("three failed lists", |m| list_errors(m) == 3.0)
        .await;
    assert_eq!(
        sample(&m, "imagecap_nodes", &[]),
        Some(3.0),
        "last data kept"
    );
    let logs = exporter.log_text();
    assert!(logs.contains("no answer within 300ms"), "{logs}");
    // And it recovers.
    fake.apply(node("d", &[], &filler(1)));
    exporter
        .wait_metrics("the next good list", |m| {
            sample(m, "imagecap_nodes", &[]) == Some(4.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_survives_a_truncated_list_and_throttling() {
    let fake = FakeApiServer::start(nodes()).await;
    fake.inject([
        Fault::Truncate,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(&fake.url(), dir.path(), &["--mode", "watch"]);
    exporter.wait_ready().await;
    let m = exporter.metrics().await;
    // The truncated list is an error; the 429 is retried inside the client.
    assert_eq!(list_errors(&m), 1.0);
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(3.0));
    let gap = fake.retry_gap(1).expect("the throttled list was retried");
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 honoured, retried after {gap:?}"
    );
}

/// While the API fails, /metrics keeps the last known values and the refresh
/// time shows their age; both move again once it answers.
#[tokio::test(flavor = "multi_thread")]
async fn stale_data_is_served_with_its_age() {
    let fake = FakeApiServer::start(nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(
        &fake.url(),
        dir.path(),
        &["--mode", "poll", "--poll-interval", "100ms"],
    );
    exporter.wait_ready().await;
    fake.fail_next(&[500; 10_000]);
    let m = exporter
        .wait_metrics("errors", |m| list_errors(m) >= 2.0)
        .await;
    let frozen = sample(&m, "imagecap_last_update_timestamp_seconds", &[]).unwrap();
    let m = exporter
        .wait_metrics("more errors", |m| list_errors(m) >= 4.0)
        .await;
    assert_eq!(
        sample(&m, "imagecap_last_update_timestamp_seconds", &[]),
        Some(frozen)
    );
    assert_eq!(
        sample(&m, "imagecap_node_images", &[("node", "b")]),
        Some(50.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_at_cap", &[("node", "b")]),
        Some(1.0)
    );
    assert_eq!(
        exporter.get("/readyz").await.0,
        200,
        "stale data is still data"
    );

    fake.clear_faults();
    exporter
        .wait_metrics("a fresh refresh", |m| {
            sample(m, "imagecap_last_update_timestamp_seconds", &[]).unwrap() > frozen
        })
        .await;
}
