//! `serve --nodes-file`: reloads, bad versions of the file, malformed nodes.

mod support;

use serde_json::json;
use support::{Exporter, sample};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn start(nodes: &std::path::Path) -> Exporter {
    Exporter::start(
        &[
            "--nodes-file",
            nodes.to_str().unwrap(),
            "--config",
            &format!("{EXAMPLES}/config.yaml"),
            "--file-check-interval",
            "100ms",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_reloads_and_survives_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.json");
    std::fs::copy(format!("{EXAMPLES}/nodes.json"), &path).unwrap();
    let exporter = start(&path);
    exporter.wait_ready().await;

    let m = exporter.metrics().await;
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(6.0));
    assert_eq!(
        sample(&m, "imagecap_node_at_cap", &[("node", "nublado-worker-1")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_max_images",
            &[("node", "nublado-worker-2")]
        ),
        Some(-1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_missing_images",
            &[("node", "nublado-worker-3"), ("state", "absent")]
        ),
        Some(1.0)
    );
    let t0 = sample(&m, "imagecap_last_update_timestamp_seconds", &[]).unwrap();

    // Unchanged but readable: the refresh time moves on.
    exporter
        .wait_metrics("the refresh time to advance", |m| {
            sample(m, "imagecap_last_update_timestamp_seconds", &[]).unwrap() > t0
        })
        .await;

    // A broken version is counted; the last good data stays.
    std::fs::write(&path, b"{ not json").unwrap();
    let m = exporter
        .wait_metrics("the file error", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "file")]) == Some(1.0)
        })
        .await;
    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(6.0));
    let stale = sample(&m, "imagecap_last_update_timestamp_seconds", &[]).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let m = exporter.metrics().await;
    assert_eq!(
        sample(&m, "imagecap_last_update_timestamp_seconds", &[]),
        Some(stale),
        "a broken file does not count as a refresh"
    );
    assert_eq!(
        sample(&m, "imagecap_source_errors_total", &[("kind", "file")]),
        Some(1.0),
        "the same broken version is reported once"
    );

    // A good version with one node left replaces everything.
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{EXAMPLES}/nodes.json")).unwrap()).unwrap();
    list["items"].as_array_mut().unwrap().drain(..4); // keeps control-plane-1, nublado-gpu-1
    std::fs::write(&path, list.to_string()).unwrap();
    let m = exporter
        .wait_metrics("the reload", |m| {
            sample(m, "imagecap_nodes", &[]) == Some(2.0)
        })
        .await;
    assert!(
        !m.contains("nublado-worker-1"),
        "deleted nodes leave no series"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_nodes_are_counted_and_the_rest_exported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.json");
    let nodes = json!({"kind": "List", "items": [
        {"metadata": {"name": "good"}, "status": {"images": [{"names": ["a:1"], "sizeBytes": 10}],
            "capacity": {"ephemeral-storage": "100Gi"}}},
        {"metadata": {"name": "no-status"}},
        {"metadata": {"name": "null-images"}, "status": {"images": null}},
        {"metadata": {"name": "odd"}, "unknownTopLevel": true, "status": {
            "capacity": {"ephemeral-storage": "lots"},
            "allocatable": {"ephemeral-storage": "1Gi"},
            "images": [
                {"names": [""], "sizeBytes": -1},
                {"names": ["Bad Name"], "sizeBytes": 5},
                {"names": ["ok:1"], "sizeBytes": 7, "someNewField": [1]}
            ]}},
        {"metadata": {"name": 12}},
        "garbage",
        {"status": {}}
    ]});
    std::fs::write(&path, nodes.to_string()).unwrap();
    let exporter = start(&path);
    exporter.wait_ready().await;
    let m = exporter.metrics().await;

    assert_eq!(sample(&m, "imagecap_nodes", &[]), Some(4.0));
    assert_eq!(
        sample(&m, "imagecap_node_images", &[("node", "good")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_images", &[("node", "no-status")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_images", &[("node", "null-images")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_images", &[("node", "odd")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_image_size_bytes", &[("node", "odd")]),
        Some(12.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_ephemeral_storage_capacity_bytes",
            &[("node", "odd")]
        ),
        None
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_ephemeral_storage_allocatable_bytes",
            &[("node", "odd")]
        ),
        Some(1073741824.0)
    );
    let invalid = |field| sample(&m, "imagecap_invalid_node_data_total", &[("field", field)]);
    assert_eq!(invalid("status"), Some(1.0));
    assert_eq!(invalid("images"), Some(1.0));
    assert_eq!(invalid("image_name"), Some(2.0));
    assert_eq!(invalid("image_size"), Some(1.0));
    assert_eq!(invalid("ephemeral_storage_capacity"), Some(1.0));
    assert_eq!(invalid("node"), Some(2.0), "name 12 and \"garbage\"");
    assert_eq!(invalid("name"), Some(1.0));
    let logs = exporter.log_text();
    assert!(
        logs.contains("lots"),
        "the log names the bad value:\n{logs}"
    );
}

/// A scrape in flight when SIGTERM arrives is completed; a client that stops
/// reading does not hold the exit for more than a few seconds.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_completes_in_flight_scrapes_within_bounds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Enough nodes for a /metrics body larger than the socket buffers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.json");
    let items: Vec<_> = (0..10_000)
        .map(|i| {
            json!({"metadata": {"name": format!("node-with-a-long-name-{i:05}")},
                   "status": {"images": [{"names": ["a:1"], "sizeBytes": 1}],
                              "capacity": {"ephemeral-storage": "100Gi"},
                              "allocatable": {"ephemeral-storage": "90Gi"}}})
        })
        .collect();
    std::fs::write(&path, json!({"kind": "List", "items": items}).to_string()).unwrap();
    let mut exporter = start(&path);
    exporter.wait_ready().await;

    let connect = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket
            .connect(exporter.addr.parse().unwrap())
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut first = vec![0u8; 1024];
        s.read_exact(&mut first).await.unwrap();
        (s, first)
    };
    let (mut reader, first) = connect().await;
    let (_stalled, _) = connect().await; // never read again

    let pid = exporter.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    let response = String::from_utf8([first, rest].concat()).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.parse().unwrap())
        })
        .expect("content-length");
    assert!(
        length > 6 << 20,
        "the body ({length} bytes) must outgrow the socket buffers"
    );
    assert_eq!(body.len(), length, "the in-flight scrape was completed");
    assert!(body.ends_with("# EOF\n"));

    let start = std::time::Instant::now();
    let status = exporter.wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(exporter.log_text().contains("connections still open"));
}
