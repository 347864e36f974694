//! What every HTTP answer carries, and what answering costs the log: security
//! headers on the status page and every other answer, and readiness probes that
//! are refused before the first data without an error logged for each.

mod support;

use std::time::Duration;
use support::{Exporter, init_tls, kubeconfig};

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers() {
    init_tls();
    let exporter = Exporter::start(
        &[
            "--nodes-file",
            "examples/nodes.json",
            "--config",
            "examples/config.yaml",
        ],
        &[],
    );
    exporter.wait_ready().await;
    let client = reqwest::Client::new();
    for path in ["/", "/metrics", "/healthz", "/readyz", "/nowhere"] {
        // gzip where the body is not read: the headers survive compression.
        let encoding = if path == "/" { "identity" } else { "gzip" };
        let r = client
            .get(format!("http://{}{path}", exporter.addr))
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .unwrap();
        let h = r.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        assert_eq!(
            get("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(get("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            get("content-security-policy").as_deref(),
            Some(CSP),
            "{path}"
        );
        if path == "/" {
            assert_eq!(r.status(), 200);
            assert!(get("content-type").unwrap().starts_with("text/html"));
            let body = r.text().await.unwrap();
            // The policy allows what the page uses, and the page uses nothing else.
            assert!(body.contains("<style>"));
            for other in ["<script", "<img", "<iframe", "<form", "<link", "url("] {
                assert!(!body.contains(other), "the page uses {other}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_probes_before_the_first_data_are_not_logged_as_errors() {
    // An API server that takes connections and never answers: not ready, and no
    // error of its own to log meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://{addr}"));
    let exporter = Exporter::start(
        &["--mode", "poll", "--poll-interval", "1s"],
        &[("KUBECONFIG", kc.as_path())],
    );
    for _ in 0..5 {
        let (code, body) = exporter.get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.starts_with("not ready"), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probes were served and traced (an access line at DEBUG is not shown at
    // INFO), and no ERROR line came of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = exporter.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    drop(silent);
}
