//! The central exporter reading node agents and kubelet stats, through the real
//! binary: agents are found through an EndpointSlice the fake API server serves
//! (`discovery.k8s.io/v1`, label `kubernetes.io/service-name`), and answer on
//! loopback. The agents here stand for well-behaved and misbehaving peers on the
//! network: one answers as an agent does, the others are slow, send garbage, send
//! 100 MB, report a stale runtime list, or are not there at all. (The agent
//! itself, against a real containerd, is tested in tests/e2e/test_agent.py.)

mod support;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::fake_apiserver::{Configz, FakeApiServer, Stats, filler, node};
use support::{Exporter, kubeconfig, sample};

const LAB: &str = "ghcr.io/lsst-sqre/sciplat-lab";

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What an agent on node `node` answers: 50 filler images (those the API shows),
/// 9 more, and the hidden wanted image.
fn agent_answer(node: &str, collected_at: &str) -> Value {
    let mut images: Vec<Value> = (0..59)
        .map(|i| {
            json!({"id": format!("sha256:{i:064x}"), "repoTags": [format!("docker.io/library/app{i}:1")],
                   "repoDigests": [], "size": 1_000_000 - i})
        })
        .collect();
    images.push(json!({
        "id": "sha256:aa", "repoTags": [format!("{LAB}:w_2026_47")],
        "repoDigests": [format!("{LAB}@sha256:{}", "a".repeat(64))], "size": 10
    }));
    json!({"node": node, "collectedAt": collected_at, "images": images,
           "imageFsUsedBytes": 123456})
}

/// Serves `router` on an ephemeral loopback port.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

fn endpoint_slice(name: &str, node: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "imagecap",
                     "labels": {"kubernetes.io/service-name": "imagecap-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-metrics", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": node,
                       "conditions": {"ready": true, "serving": true, "terminating": false}}]
    })
}

/// Serves an EndpointSlice per agent (node, address) and starts the exporter
/// reading them every second, with the lab's `wanted` tags and `extra` flags;
/// returns it ready, with the directory of its files.
async fn start_with_agents(
    fake: &FakeApiServer,
    agents: &[(&str, SocketAddr)],
    wanted: &[&str],
    extra: &[&str],
) -> (Exporter, tempfile::TempDir) {
    for (name, addr) in agents {
        fake.apply_object(
            "endpointslices",
            endpoint_slice(&format!("imagecap-agent-{name}"), name, addr.port()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = dir.path().join("config.yaml");
    let images: String = wanted
        .iter()
        .map(|t| format!("    - {LAB}:{t}\n"))
        .collect();
    std::fs::write(&config, format!("prepull:\n  images:\n{images}")).unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--agents",
        "imagecap/imagecap-agent",
        "--agents-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    let exporter = Exporter::start(&args, &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    (exporter, dir)
}

#[tokio::test]
async fn agents_tell_hidden_from_absent_and_bad_agents_fall_back_to_unverifiable() {
    let nodes = [
        "full", "slow", "garbage", "huge", "stale", "gone", "no-agent",
    ];
    let fake =
        FakeApiServer::start(nodes.iter().map(|n| node(n, &[], &filler(50))).collect()).await;
    fake.set_configz(
        "full",
        Configz::Body(
            json!({"kubeletconfig": {"nodeStatusMaxImages": 50,
                   "imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80}})
            .to_string(),
        ),
    );
    fake.set_stats(
        "full",
        Stats::ImageFs {
            used: 82_000_000_000,
            capacity: 100_000_000_000,
        },
    );
    fake.set_stats("slow", Stats::Status(403));

    let good = serve(Router::new().route(
        "/v1/images",
        get(|| async { axum::Json(agent_answer("full", &now_rfc3339())) }),
    ))
    .await;
    let slow = serve(Router::new().route(
        "/v1/images",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            axum::Json(agent_answer("slow", &now_rfc3339()))
        }),
    ))
    .await;
    let garbage = serve(Router::new().route(
        "/v1/images",
        get(|| async { "<html><body>502 Bad Gateway</body></html>" }),
    ))
    .await;
    // 100 MB, produced as it is sent: a well-formed start that never ends early,
    // an image id that goes on and on (cheap to decode, so the size limit, not the
    // 1 s timeout, ends the read even on a loaded machine).
    let huge = serve(Router::new().route(
        "/v1/images",
        get(|| async {
            let head = futures::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from(
                    r#"{"node":"huge","collectedAt":"2026-11-25T10:00:00Z","images":[{"id":"sha256:"#,
                ))
            });
            let entry = axum::body::Bytes::from("0".repeat(64 * 1024));
            let n = 100_000_000 / entry.len();
            let body = futures::stream::StreamExt::chain(
                head,
                futures::stream::iter((0..n).map(move |_| Ok(entry.clone()))),
            );
            Body::from_stream(body)
        }),
    ))
    .await;
    let stale = serve(Router::new().route(
        "/v1/images",
        get(|| async { axum::Json(agent_answer("stale", "2026-01-01T00:00:00Z")) }),
    ))
    .await;
    // A port nothing listens on any more.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let agents = [
        ("full", good),
        ("slow", slow),
        ("garbage", garbage),
        ("huge", huge),
        ("stale", stale),
        ("gone", gone),
    ];
    let (exporter, _dir) = start_with_agents(
        &fake,
        &agents,
        &["w_2026_47", "w_2026_46"],
        &[
            "--agents-timeout",
            "1s",
            "--agents-max-bytes",
            "1MiB",
            "--kubelet-configz",
            "--kubelet-stats",
            "--kubelet-stats-interval",
            "1s",
        ],
    )
    .await;
    let w47 = format!("{LAB}:w_2026_47");
    let w46 = format!("{LAB}:w_2026_46");
    let m = exporter
        .wait_metrics("every agent tried twice", |m| {
            sample(m, "imagecap_node_hidden_images", &[("node", "full")]) == Some(10.0)
                && sample(m, "imagecap_source_errors_total", &[("kind", "agent")])
                    .is_some_and(|n| n >= 10.0)
        })
        .await;
    let m = m.as_str();
    assert_eq!(
        sample(m, "imagecap_node_runtime_images", &[("node", "full")]),
        Some(60.0)
    );
    assert_eq!(
        sample(m, "imagecap_node_agent_up", &[("node", "full")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_prepull_image_missing",
            &[("node", "full"), ("image", &w47), ("state", "hidden")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_prepull_image_missing",
            &[("node", "full"), ("image", &w46), ("state", "absent")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_prepull_missing_images",
            &[("node", "full"), ("state", "hidden")]
        ),
        Some(1.0)
    );
    for bad in ["slow", "garbage", "huge", "stale", "gone", "no-agent"] {
        assert_eq!(
            sample(m, "imagecap_node_agent_up", &[("node", bad)]),
            Some(0.0),
            "{bad}"
        );
        assert_eq!(
            sample(
                m,
                "imagecap_node_prepull_missing_images",
                &[("node", bad), ("state", "unverifiable")]
            ),
            Some(2.0),
            "{bad} falls back to unverifiable"
        );
        assert_eq!(
            sample(m, "imagecap_node_hidden_images", &[("node", bad)]),
            None
        );
    }
    // Kubelet stats and GC thresholds.
    assert_eq!(
        sample(m, "imagecap_node_image_fs_used_bytes", &[("node", "full")]),
        Some(82e9)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_image_fs_capacity_bytes",
            &[("node", "full")]
        ),
        Some(1e11)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_image_gc_high_threshold_ratio",
            &[("node", "full")]
        ),
        Some(0.85)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_image_gc_low_threshold_ratio",
            &[("node", "full")]
        ),
        Some(0.8)
    );
    assert_eq!(
        sample(
            m,
            "imagecap_node_image_fs_used_bytes",
            &[("node", "garbage")]
        ),
        Some(40e9),
        "the default answer"
    );
    assert_eq!(
        sample(m, "imagecap_node_image_fs_used_bytes", &[("node", "slow")]),
        None,
        "a 403 leaves no figure"
    );
    assert!(
        sample(
            m,
            "imagecap_source_errors_total",
            &[("kind", "kubelet-stats")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    let log = exporter.log_text();
    for needle in [
        "larger than 1048576 bytes",
        "not an agent report",
        "runtime down",
        "timed out after 1s without a complete answer",
        "RBAC",
    ] {
        assert!(log.contains(needle), "{needle:?} in\n{log}");
    }

    // Every family of the README's table is served here, as documented (but
    // for those only a Nublado source brings).
    let served = support::readme::exposed(m);
    let with_nublado = support::readme::with_nublado();
    for (name, shape) in support::readme::readme_table() {
        if with_nublado.contains(&name) {
            continue;
        }
        let got = served
            .get(&name)
            .map(|(kind, labels, _)| (kind.clone(), labels.clone()));
        assert_eq!(got, Some(shape), "{name}: served vs README");
    }

    // The status page shows the hidden segment.
    let (code, page) = exporter.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("50 / 50 &middot; 10 hidden"), "{page}");
    assert!(page.contains("<span class=\"state hidden\">hidden</span>"));

    // The agent's EndpointSlice goes away: its node falls back, through the watch.
    fake.delete_object("endpointslices", "imagecap", "imagecap-agent-full");
    exporter
        .wait_metrics("the node without its agent", |m| {
            sample(m, "imagecap_node_agent_up", &[("node", "full")]) == Some(0.0)
                && sample(
                    m,
                    "imagecap_node_prepull_missing_images",
                    &[("node", "full"), ("state", "unverifiable")],
                ) == Some(2.0)
        })
        .await;
}

/// An agent that redirects to another address (another port on loopback, which
/// serves a good answer): the redirect is not followed, the node has no agent
/// report, and the error is counted and names where it pointed.
#[tokio::test]
async fn an_agent_redirect_is_not_followed() {
    let fake = FakeApiServer::start(vec![node("moved", &[], &filler(50))]).await;
    let followed = Arc::new(AtomicUsize::new(0));
    let count = followed.clone();
    let elsewhere = serve(Router::new().route(
        "/v1/images",
        get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(agent_answer("moved", &now_rfc3339())) }
        }),
    ))
    .await;
    let target = format!("http://{elsewhere}/v1/images");
    let redirecting = serve(Router::new().route(
        "/v1/images",
        get(move || async move {
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, target)],
            )
        }),
    ))
    .await;
    fake.apply_object(
        "endpointslices",
        endpoint_slice("imagecap-agent-moved", "moved", redirecting.port()),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(
        &[
            "--agents",
            "imagecap/imagecap-agent",
            "--agents-interval",
            "1s",
        ],
        &[("KUBECONFIG", kc.as_path())],
    );
    exporter.wait_ready().await;
    let m = exporter
        .wait_metrics("two failed agent reads", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "agent")])
                .is_some_and(|n| n >= 2.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_node_agent_up", &[("node", "moved")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_runtime_images", &[("node", "moved")]),
        None
    );
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let log = exporter.log_text();
    assert!(
        log.contains("answered 302 Found redirecting to")
            && log.contains(&format!("http://{elsewhere}/v1/images"))
            && log.contains("redirects are not followed"),
        "{log}"
    );
}

#[test]
fn check_reads_saved_agent_answers() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = json!({"apiVersion": "v1", "kind": "List",
                       "items": [node("full", &[], &filler(50)), node("blind", &[], &filler(50))]});
    let nodes_file = dir.path().join("nodes.json");
    std::fs::write(&nodes_file, nodes.to_string()).unwrap();
    let agents_file = dir.path().join("agents.json");
    let answers = json!([
        agent_answer("full", "2026-01-01T00:00:00Z"),
        agent_answer("not-a-node", "2026-01-01T00:00:00Z")
    ]);
    std::fs::write(&agents_file, answers.to_string()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("prepull:\n  images:\n    - {LAB}:w_2026_47\n    - {LAB}:w_2026_46\n"),
    )
    .unwrap();
    let run = |format: &str, agents: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_imagecap-exporter"))
            .args(["check", "--format", format, "--config"])
            .arg(&config)
            .arg("--nodes-file")
            .arg(&nodes_file)
            .arg("--agents-file")
            .arg(agents)
            .output()
            .unwrap()
    };
    let out = run("json", &agents_file);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let full = &report["nodes"][1];
    assert_eq!(full["name"], "full");
    assert_eq!(full["hiddenImages"], 10);
    assert_eq!(full["runtimeImages"], 60);
    assert_eq!(full["agentUp"], true);
    assert_eq!(
        full["missing"],
        json!([{"image": format!("{LAB}:w_2026_46"), "state": "absent"},
               {"image": format!("{LAB}:w_2026_47"), "state": "hidden"}])
    );
    assert_eq!(full["missingState"], "absent");
    assert_eq!(full["missingImages"].as_array().unwrap().len(), 2);
    let blind = &report["nodes"][0];
    assert_eq!(blind["agentUp"], false);
    assert!(blind.get("hiddenImages").is_none());
    assert_eq!(blind["missingState"], "unverifiable");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-a-node"),
        "an answer for an unknown node is reported"
    );

    let out = run("table", &agents_file);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("HIDDEN"), "{text}");
    let line = text.lines().find(|l| l.starts_with("full")).unwrap();
    assert!(line.contains("50/50       10"), "{line}");
    assert!(
        line.contains("(hidden)") && line.contains("(absent)"),
        "{line}"
    );

    std::fs::write(&agents_file, "{\"node\": \"full\"}").unwrap();
    let out = run("json", &agents_file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("expected a JSON array of node-agent answers")
    );
}

/// One agent answers 200,000 tags of a wanted repository (about 28 MB) on every
/// read: the exporter keeps only the names wanted now, so its memory stays
/// bounded (README "Reliability" -> "Limits") and the interner small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answering_200000_tags_leaves_memory_bounded() {
    const TAGS: usize = 200_000;
    let fake = FakeApiServer::start(vec![node("big", &[], &filler(50))]).await;
    // The images part is built once; each answer is fresh around it.
    let mut images = String::with_capacity(30 << 20);
    for i in 0..TAGS {
        images.push_str(&format!(
            r#"{{"id":"sha256:{i:040x}","repoTags":["{LAB}:tag_{i:07}"],"repoDigests":[],"size":{}}},"#,
            1_000_000 + i
        ));
    }
    images.push_str(&format!(
        r#"{{"id":"sha256:aa","repoTags":["{LAB}:w_2026_47"],"repoDigests":["{LAB}@sha256:{}"],"size":10}}"#,
        "a".repeat(64)
    ));
    let images = axum::body::Bytes::from(images);
    let body_bytes = images.len();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let agent = {
        let served = served.clone();
        serve(Router::new().route(
            "/v1/images",
            get(move || {
                let (images, served) = (images.clone(), served.clone());
                async move {
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let head = format!(
                        r#"{{"node":"big","collectedAt":"{}","imageFsUsedBytes":1,"images":["#,
                        now_rfc3339()
                    );
                    let parts = [head.into(), images, axum::body::Bytes::from_static(b"]}")];
                    Body::from_stream(futures::stream::iter(
                        parts.into_iter().map(Ok::<_, std::io::Error>),
                    ))
                }
            }),
        ))
        .await
    };
    let (exporter, _dir) = start_with_agents(
        &fake,
        &[("big", agent)],
        &["w_2026_47"],
        // A debug build reads 28 MB slowly; time is not what this is about.
        &["--agents-timeout", "60s", "--agents-max-bytes", "32MiB"],
    )
    .await;
    let pid = exporter.pid();
    let mut peak_rss: f64 = 0.0;
    let mut last = String::new();
    let start = std::time::Instant::now();
    // Five whole answers read and used.
    while served.load(std::sync::atomic::Ordering::Relaxed) < 6 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "the agent was read {} times in 300 s",
            served.load(std::sync::atomic::Ordering::Relaxed)
        );
        peak_rss = peak_rss.max(support::proc_status(pid).0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let m = exporter
        .wait_metrics("the agent's report used", |m| {
            sample(m, "imagecap_node_agent_up", &[("node", "big")]) == Some(1.0)
        })
        .await;
    last.push_str(&m);
    let (rss, hwm) = support::proc_status(pid);
    let strings = sample(&last, "imagecap_interned", &[("kind", "string")]).unwrap();
    eprintln!(
        "agent answering {TAGS} tags ({:.1} MB), 5 reads: RSS {rss:.1} MiB, sampled peak {:.1} MiB, \
         VmHWM {hwm:.1} MiB, {strings} interned strings",
        body_bytes as f64 / 1e6,
        peak_rss.max(rss)
    );
    assert_eq!(
        sample(&last, "imagecap_node_runtime_images", &[("node", "big")]),
        Some((TAGS + 1) as f64)
    );
    assert!(strings < 1000.0, "{strings} interned strings");
    assert!(hwm < 64.0, "peak RSS {hwm:.1} MiB");
}

/// `serve --agents-file`: the saved answers `check --agents-file` reads, served:
/// /metrics and the status page show the hidden images the report shows, and an
/// edit of the file shows at the next interval.
#[tokio::test(flavor = "multi_thread")]
async fn serve_reads_saved_agent_answers() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = json!({"apiVersion": "v1", "kind": "List",
                       "items": [node("full", &[], &filler(50)), node("blind", &[], &filler(50))]});
    let nodes_file = dir.path().join("nodes.json");
    std::fs::write(&nodes_file, nodes.to_string()).unwrap();
    let agents_file = dir.path().join("agents.json");
    std::fs::write(
        &agents_file,
        json!([agent_answer("full", "2026-01-01T00:00:00Z")]).to_string(),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("prepull:\n  images:\n    - {LAB}:w_2026_47\n    - {LAB}:w_2026_46\n"),
    )
    .unwrap();
    let (nodes_arg, agents_arg, config_arg) = (
        nodes_file.display().to_string(),
        agents_file.display().to_string(),
        config.display().to_string(),
    );
    let exporter = Exporter::start(
        &[
            "--nodes-file",
            &nodes_arg,
            "--agents-file",
            &agents_arg,
            "--config",
            &config_arg,
            "--agents-interval",
            "300ms",
        ],
        &[],
    );
    exporter.wait_ready().await;
    let m = exporter
        .wait_metrics("the saved answer applied", |m| {
            sample(m, "imagecap_node_hidden_images", &[("node", "full")]) == Some(10.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_node_runtime_images", &[("node", "full")]),
        Some(60.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_missing_images",
            &[("node", "full"), ("state", "hidden")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "imagecap_node_hidden_images", &[("node", "blind")]),
        None
    );
    let (code, page) = exporter.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("10 hidden"), "{page}");

    // The file changes: the next read shows it.
    std::fs::write(
        &agents_file,
        json!([
            agent_answer("full", "2026-01-01T00:00:00Z"),
            agent_answer("blind", "2026-01-01T00:00:00Z")
        ])
        .to_string(),
    )
    .unwrap();
    exporter
        .wait_metrics("the edited file read again", |m| {
            sample(m, "imagecap_node_hidden_images", &[("node", "blind")]) == Some(10.0)
        })
        .await;
}

/// A request's `If-None-Match`, and the answer's status.
type Exchange = (Option<String>, u16);

/// The agent's own answer to `/v1/images` (its library code: tag, 304) for
/// `report`, behind a log of each request's `If-None-Match` and answer status,
/// and of the connection (the exporter's address) each came on.
struct ConditionalAgent {
    agent: imagecap_exporter::agent::Agent,
    exchanges: Arc<std::sync::Mutex<Vec<Exchange>>>,
    peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    addr: SocketAddr,
}

impl ConditionalAgent {
    async fn start(node: &str) -> ConditionalAgent {
        ConditionalAgent::serving(node, None).await
    }

    /// Served as the agent serves (its connection limits), closing a kept-alive
    /// connection idle for `idle_timeout`; no peer addresses are logged.
    async fn closing_idle(node: &str, idle_timeout: std::time::Duration) -> ConditionalAgent {
        ConditionalAgent::serving(node, Some(idle_timeout)).await
    }

    async fn serving(node: &str, idle_timeout: Option<std::time::Duration>) -> ConditionalAgent {
        use imagecap_exporter::agent::{Agent, router};
        use imagecap_exporter::serve::auth::BasicAuth;
        let settings = imagecap_exporter::config::agent::AgentConfig::default().prune;
        let agent = Agent::new(node, &settings);
        let exchanges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log, peer_log) = (exchanges.clone(), peers.clone());
        let app = router(agent.clone(), Arc::new(BasicAuth::new(Default::default()))).layer(
            axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (log, peer_log) = (log.clone(), peer_log.clone());
                    async move {
                        let peer = request
                            .extensions()
                            .get::<axum::extract::ConnectInfo<SocketAddr>>()
                            .map(|c| c.0);
                        peer_log.lock().unwrap().extend(peer);
                        let asked = request
                            .headers()
                            .get("if-none-match")
                            .map(|v| v.to_str().unwrap().to_string());
                        let response = next.run(request).await;
                        log.lock()
                            .unwrap()
                            .push((asked, response.status().as_u16()));
                        response
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        match idle_timeout {
            None => {
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
            Some(idle_timeout) => {
                use imagecap_exporter::serve::conn::{Limits, serve};
                let limits = Limits {
                    header_read_timeout: std::time::Duration::from_secs(10),
                    idle_timeout,
                    max_connections: 16,
                };
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(serve(listener, app, None, limits, stop));
            }
        }
        ConditionalAgent {
            agent,
            exchanges,
            peers,
            addr,
        }
    }

    /// A reading of the runtime, now, from an answer in the JSON shape.
    fn read(&self, answer: &Value) {
        use imagecap_exporter::agent::cri::v1;
        use imagecap_exporter::agent::report::{Snapshot, agent_report};
        let images = answer["images"].as_array().unwrap().iter();
        let names = |v: &Value| -> Vec<String> {
            let all = v.as_array().unwrap().iter();
            all.map(|n| n.as_str().unwrap().to_string()).collect()
        };
        let list = v1::ListImagesResponse {
            images: images
                .map(|i| v1::Image {
                    id: i["id"].as_str().unwrap().to_string(),
                    repo_tags: names(&i["repoTags"]),
                    repo_digests: names(&i["repoDigests"]),
                    size: i["size"].as_u64().unwrap(),
                    pinned: false,
                })
                .collect(),
        };
        let now = std::time::SystemTime::now();
        let report = agent_report(answer["node"].as_str().unwrap(), now, list, None);
        self.agent.record(Ok(Snapshot::new(&report, now).unwrap()));
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }

    /// The exporter's address for each exchange, in order.
    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

/// The samples about `node` that an agent's report decides.
fn node_view(m: &str, node: &str, image: &str) -> Vec<Option<f64>> {
    let n = [("node", node)];
    let mut v: Vec<Option<f64>> = [
        "imagecap_node_agent_up",
        "imagecap_node_runtime_images",
        "imagecap_node_hidden_images",
    ]
    .iter()
    .map(|name| sample(m, name, &n))
    .collect();
    for state in ["hidden", "absent", "unverifiable"] {
        let labels = [("node", node), ("image", image), ("state", state)];
        v.push(sample(m, "imagecap_node_prepull_image_missing", &labels));
    }
    v
}

#[tokio::test]
async fn an_unchanged_agent_answers_304_and_a_changed_one_is_read_again() {
    let fake = FakeApiServer::start(vec![
        node("full", &[], &filler(50)),
        node("eager", &[], &filler(50)),
        node("liar", &[], &filler(50)),
    ])
    .await;
    let agent = ConditionalAgent::start("full").await;
    agent.read(&agent_answer("full", &now_rfc3339()));
    // A 304 to a request that asked for none.
    let eager = serve(Router::new().route(
        "/v1/images",
        get(|| async {
            let at = now_rfc3339();
            let headers = [("etag", "\"e\"".to_string()), ("imagecap-collected-at", at)];
            (axum::http::StatusCode::NOT_MODIFIED, headers)
        }),
    ))
    .await;
    // A whole answer tagged "a", then 304s tagged "b".
    let asked = Arc::new(AtomicUsize::new(0));
    let liar = serve(Router::new().route(
        "/v1/images",
        get(move || {
            let first = asked.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let at = now_rfc3339();
                if first {
                    let body = agent_answer("liar", &at).to_string();
                    (axum::http::StatusCode::OK, [("etag", "\"a\"")], body)
                } else {
                    (
                        axum::http::StatusCode::NOT_MODIFIED,
                        [("etag", "\"b\"")],
                        String::new(),
                    )
                }
            }
        }),
    ))
    .await;
    let agents = [("full", agent.addr), ("eager", eager), ("liar", liar)];
    let (exporter, _dir) = start_with_agents(&fake, &agents, &["w_2026_47"], &[]).await;
    let w47 = format!("{LAB}:w_2026_47");
    let first = exporter
        .wait_metrics("the agent's list", |m| {
            sample(m, "imagecap_node_hidden_images", &[("node", "full")]) == Some(10.0)
        })
        .await;
    let seen = node_view(&first, "full", &w47);
    assert_eq!(
        seen,
        [Some(1.0), Some(60.0), Some(10.0), Some(1.0), None, None]
    );

    // Later reads of the same list (a newer reading of it, too): 304s.
    agent.read(&agent_answer("full", &now_rfc3339()));
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while agent.exchanges().iter().filter(|e| e.1 == 304).count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            agent.exchanges()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let m = exporter.metrics().await;
    assert_eq!(node_view(&m, "full", &w47), seen, "after 304s");
    let exchanges = agent.exchanges();
    assert_eq!(exchanges[0], (None, 200), "{exchanges:?}");
    let tag = exchanges[1].0.clone().expect("a conditional second read");
    assert!(
        exchanges[1..]
            .iter()
            .all(|e| *e == (Some(tag.clone()), 304)),
        "{exchanges:?}"
    );
    // All on the connection of the first read: a round costs no new one.
    let peers = agent.peers();
    assert!(
        peers.len() >= 3 && peers.iter().all(|p| *p == peers[0]),
        "{peers:?}"
    );

    // The list changes: the wanted image is gone from the runtime.
    let mut changed = agent_answer("full", &now_rfc3339());
    changed["images"].as_array_mut().unwrap().pop();
    agent.read(&changed);
    let m = exporter
        .wait_metrics("the changed list", |m| {
            sample(m, "imagecap_node_runtime_images", &[("node", "full")]) == Some(59.0)
        })
        .await;
    assert_eq!(
        node_view(&m, "full", &w47),
        [Some(1.0), Some(59.0), Some(9.0), None, Some(1.0), None]
    );
    let exchanges = agent.exchanges();
    let changed_at = exchanges.iter().position(|e| e.1 == 200 && e.0.is_some());
    let changed_at = changed_at.expect("the old tag got the new list");
    assert_eq!(exchanges[changed_at].0.as_deref(), Some(tag.as_str()));
    let new_tag = exchanges.get(changed_at + 1).and_then(|e| e.0.clone());
    assert!(new_tag.is_none_or(|t| t != tag), "{exchanges:?}");

    // The agents whose 304 cannot stand: counted, logged, no report.
    let m = exporter
        .wait_metrics("the bad 304s counted", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "agent")])
                .is_some_and(|n| n >= 3.0)
        })
        .await;
    for bad in ["eager", "liar"] {
        let up = sample(&m, "imagecap_node_agent_up", &[("node", bad)]);
        assert_eq!(up, Some(0.0), "{bad}");
    }
    let log = exporter.log_text();
    for needle in [
        "304 Not Modified to a request without If-None-Match",
        "304 Not Modified with ETag Some(\\\"\\\\\\\"b\\\\\\\"\\\"), but If-None-Match was",
    ] {
        assert!(log.contains(needle), "{needle:?} in\n{log}");
    }
}

/// An agent that closes idle connections sooner than the exporter reads it again
/// (its --web.idle-timeout under --agents-interval): each read finds the kept
/// connection closed and opens a new one, and nothing fails.
#[tokio::test]
async fn connections_the_agent_closed_while_idle_are_replaced_without_an_error() {
    let fake = FakeApiServer::start(vec![node("brief", &[], &filler(50))]).await;
    let agent =
        ConditionalAgent::closing_idle("brief", std::time::Duration::from_millis(300)).await;
    agent.read(&agent_answer("brief", &now_rfc3339()));
    let agents = [("brief", agent.addr)];
    let (exporter, _dir) = start_with_agents(&fake, &agents, &["w_2026_47"], &[]).await;
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while agent.exchanges().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            agent.exchanges()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = agent.exchanges().len();
    let m = exporter.metrics().await;
    let after = agent.exchanges().len();
    let errors = sample(&m, "imagecap_source_errors_total", &[("kind", "agent")]);
    assert_eq!(errors, Some(0.0));
    let up = sample(&m, "imagecap_node_agent_up", &[("node", "brief")]);
    assert_eq!(up, Some(1.0));
    // One connection per read: the kept one was seen closed each time.
    let opened = sample(&m, "imagecap_agent_connections_opened_total", &[]).unwrap();
    assert!(
        (before as f64) <= opened && opened <= after as f64,
        "{opened} connections for {before}-{after} reads"
    );
    // Conditional reads go on across connections.
    let exchanges = agent.exchanges();
    assert_eq!(exchanges[0], (None, 200), "{exchanges:?}");
    assert!(exchanges[1..].iter().all(|e| e.1 == 304), "{exchanges:?}");
}
