//! Wanted images from the prepullers, through the real binary: DaemonSets and
//! kube-fledged ImageCaches from the fake API server (list and watch), Nublado
//! from a fake controller endpoint on loopback that serves its `PrepullerStatus`.

mod support;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake_apiserver::{FakeApiServer, filler, node};
use support::{Exporter, kubeconfig, names, sample};

const LAB: &str = "ghcr.io/lsst-sqre/sciplat-lab";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn tainted(mut n: Value, key: &str, value: &str) -> Value {
    n["spec"]["taints"] = json!([{"key": key, "value": value, "effect": "NoSchedule"}]);
    n
}

fn daemonset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "continuous-image-puller", "namespace": "jhub",
                     "labels": {"component": "continuous-image-puller"}},
        "spec": {"selector": {"matchLabels": {"component": "continuous-image-puller"}},
                 "template": {"metadata": {"labels": {"component": "continuous-image-puller"}},
                   "spec": {
                     "nodeSelector": {"hub.jupyter.org/node-purpose": "user"},
                     "initContainers": [{"name": "image-pull-singleuser", "image": image}],
                     "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}}}
    })
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn daemonset_images_follow_the_daemonset_without_a_restart() {
    let user = [("hub.jupyter.org/node-purpose", "user")];
    let singleuser = |tag: &str| vec![format!("docker.io/jupyterhub/k8s-singleuser-sample:{tag}")];
    let fake = FakeApiServer::start(vec![
        node("user-a", &user, &[singleuser("4.0.0"), singleuser("4.1.0")]),
        node("user-b", &user, &[singleuser("4.0.0")]),
        tainted(node("user-gpu", &user, &[]), "nvidia.com/gpu", "present"),
        node("infra", &[], &[]),
    ])
    .await;
    fake.apply_object(
        "daemonsets",
        daemonset("jupyterhub/k8s-singleuser-sample:4.0.0"),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(
        dir.path(),
        "prepull:\n  sources:\n    - daemonSets: {namespace: jhub, selector: component=continuous-image-puller}\n",
    );
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let v400 = "docker.io/jupyterhub/k8s-singleuser-sample:4.0.0";
    let pause = "registry.k8s.io/pause:3.10";
    let m = exporter
        .wait_metrics("the DaemonSet's images", |m| {
            sample(m, "imagecap_prepull_image_nodes", &[("image", v400)]) == Some(2.0)
        })
        .await;
    assert_eq!(
        sample(
            m.as_str(),
            "imagecap_wanted_image_info",
            &[("image", v400), ("source", "daemonset")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_eligible_nodes",
            &[("image", v400)]
        ),
        Some(2.0),
        "not the tainted node, not the node outside the nodeSelector"
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "user-a"), ("image", pause)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "user-gpu"), ("image", pause)]
        ),
        None
    );
    assert_eq!(
        sample(&m, "imagecap_wanted_source_up", &[("source", "daemonset")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_source_images",
            &[("source", "daemonset")]
        ),
        Some(2.0)
    );

    // The chart upgrade changes the image: wanted at once, the old one no more,
    // and found on the node that has it once the nodes are listed again (their
    // summaries kept only the tags wanted before).
    fake.apply_object(
        "daemonsets",
        daemonset("jupyterhub/k8s-singleuser-sample:4.1.0"),
    );
    let v410 = "docker.io/jupyterhub/k8s-singleuser-sample:4.1.0";
    let m = exporter
        .wait_metrics("the changed image", |m| {
            sample(m, "imagecap_prepull_image_nodes", &[("image", v410)]) == Some(1.0)
                && sample(m, "imagecap_prepull_image_nodes", &[("image", v400)]).is_none()
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_prepull_image_nodes", &[("image", v410)]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "user-b"), ("image", v410)]
        ),
        Some(1.0)
    );

    fake.delete_object("daemonsets", "jhub", "continuous-image-puller");
    exporter
        .wait_metrics("no DaemonSet, nothing wanted", |m| {
            sample(
                m,
                "imagecap_wanted_source_images",
                &[("source", "daemonset")],
            ) == Some(0.0)
                && !m.contains("imagecap_wanted_image_info{")
        })
        .await;
}

#[tokio::test]
async fn an_imagecache_added_is_wanted_on_the_nodes_its_selector_matches() {
    let lab = [("pool", "lab")];
    let fake = FakeApiServer::start(vec![
        node("lab-1", &lab, &[names(&["docker.io/library/busybox:1.36"])]),
        node("lab-2", &lab, &[]),
        node("other", &[], &[]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(dir.path(), "prepull:\n  sources:\n    - kubeFledged: {}\n");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    exporter
        .wait_metrics("kube-fledged synced with no caches", |m| {
            sample(
                m,
                "imagecap_wanted_source_up",
                &[("source", "kube-fledged")],
            ) == Some(1.0)
        })
        .await;

    fake.apply_object(
        "imagecaches",
        json!({"apiVersion": "kubefledged.io/v1alpha2", "kind": "ImageCache",
               "metadata": {"name": "lab-images", "namespace": "kube-fledged"},
               "spec": {"cacheSpec": [
                   {"images": ["busybox:1.36"], "nodeSelector": {"pool": "lab"}},
                   {"images": ["nginx:1.25"]}]}}),
    );
    let busybox = "docker.io/library/busybox:1.36";
    let nginx = "docker.io/library/nginx:1.25";
    let m = exporter
        .wait_metrics("the new ImageCache", |m| {
            sample(m, "imagecap_prepull_image_nodes", &[("image", busybox)]) == Some(1.0)
        })
        .await;
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_image_info",
            &[("image", busybox), ("source", "kube-fledged")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_eligible_nodes",
            &[("image", busybox)]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_eligible_nodes",
            &[("image", nginx)]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "lab-2"), ("image", busybox)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "other"), ("image", busybox)]
        ),
        None,
        "outside the group's selector"
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "other"), ("image", nginx)]
        ),
        Some(1.0)
    );
}

/// A fake Nublado controller: serves `body` with status `code`, records the
/// Authorization headers it got.
#[derive(Clone, Default)]
struct Nublado {
    answer: Arc<Mutex<(u16, String)>>,
    auth: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

impl Nublado {
    async fn start(body: Value) -> (Nublado, String) {
        let n = Nublado {
            answer: Arc::new(Mutex::new((200, body.to_string()))),
            ..Nublado::default()
        };
        let state = n.clone();
        let app = Router::new().route(
            "/nublado/spawner/v1/prepulls",
            get(move |headers: HeaderMap| {
                let state = state.clone();
                async move {
                    state.requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(a) = headers.get("authorization") {
                        state
                            .auth
                            .lock()
                            .unwrap()
                            .push(a.to_str().unwrap().to_string());
                    }
                    let (code, body) = state.answer.lock().unwrap().clone();
                    (StatusCode::from_u16(code).unwrap(), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/nublado/spawner/v1/prepulls",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (n, url)
    }

    fn answer(&self, code: u16, body: &str) {
        *self.answer.lock().unwrap() = (code, body.to_string());
    }
}

/// `PrepullerStatus` as Nublado's model (controller/models/v1/prepuller.py) has it:
/// w_2024_11 known by digest only on the nodes, pending on the at-cap node; one
/// node ineligible with Nublado's comment.
fn prepuller_status() -> Value {
    let image = |tag: &str, digest: Option<&str>, nodes: &[&str], missing: &[&str]| {
        json!({"reference": format!("{LAB}:{tag}"), "tag": tag, "name": format!("Weekly {tag}"),
               "digest": digest, "size": null, "nodes": nodes, "missing": missing})
    };
    json!({
        "config": {"source": {"type": "docker", "registry": "ghcr.io",
                              "repository": "lsst-sqre/sciplat-lab"},
                   "recommended_tag": "recommended", "num_releases": 1, "num_weeklies": 2,
                   "num_dailies": 3, "cycle": null, "pin": [], "alias_tags": []},
        "images": {
            "prepulled": [image("w_2024_10", None, &["full", "under", "has-both"], &[])],
            "pending": [image("w_2024_11", Some(DIGEST), &["has-both"], &["full", "under"])]
        },
        "nodes": [
            {"name": "full", "eligible": true, "comment": null, "cached": []},
            {"name": "under", "eligible": true, "comment": null, "cached": []},
            {"name": "has-both", "eligible": true, "comment": null, "cached": []},
            {"name": "gpu", "eligible": false, "comment": "Node is tainted (dedicated=gpu:NoSchedule)",
             "cached": []}
        ]
    })
}

#[tokio::test]
async fn nublado_decides_what_is_wanted_and_where_and_a_failure_keeps_the_list() {
    let w10 = vec![format!("{LAB}:w_2024_10")];
    // Known by digest only: the kubelet cut its tag (5 names, digests first).
    let w11_digest_only = vec![format!("{LAB}@{DIGEST}")];
    let mut full_images = vec![w10.clone()];
    full_images.extend(filler(49));
    let fake = FakeApiServer::start(vec![
        node("full", &[], &full_images),
        node("under", &[], std::slice::from_ref(&w10)),
        node("has-both", &[], &[w10, w11_digest_only]),
        node("gpu", &[], &[]),
    ])
    .await;
    let (nublado, url) = Nublado::start(prepuller_status()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(
        dir.path(),
        &format!(
            "prepull:\n  sources:\n    - nublado: {{url: '{url}', tokenFile: '{}', interval: 1s, timeout: 2s}}\n",
            token.display()
        ),
    );
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let w11 = format!("{LAB}:w_2024_11@{DIGEST}");
    let m = exporter
        .wait_metrics("Nublado's images", |m| {
            sample(m, "imagecap_prepull_image_nodes", &[("image", &w11)]) == Some(1.0)
        })
        .await;
    let missing = |m: &str, node: &str, state: &str| {
        sample(
            m,
            "imagecap_node_prepull_missing_images",
            &[("node", node), ("state", state)],
        )
    };
    assert_eq!(
        missing(&m, "full", "unverifiable"),
        Some(1.0),
        "pending on the at-cap node"
    );
    assert_eq!(missing(&m, "under", "absent"), Some(1.0));
    assert_eq!(
        missing(&m, "has-both", "absent"),
        Some(0.0),
        "matched by digest"
    );
    assert_eq!(
        missing(&m, "gpu", "absent"),
        None,
        "Nublado says not eligible"
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_image_missing",
            &[("node", "under"), ("image", &w11)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_eligible_nodes",
            &[("image", &w11)]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "imagecap_wanted_source_up", &[("source", "nublado")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_source_images",
            &[("source", "nublado")]
        ),
        Some(2.0)
    );
    assert!(
        nublado
            .auth
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == "Bearer s3cret"),
        "the token, trimmed"
    );

    // Nublado goes down: counted, shown as down, and the last list is kept.
    nublado.answer(503, "unavailable");
    let m = exporter
        .wait_metrics("Nublado down", |m| {
            sample(m, "imagecap_wanted_source_up", &[("source", "nublado")]) == Some(0.0)
        })
        .await;
    assert!(sample(&m, "imagecap_source_errors_total", &[("kind", "nublado")]).unwrap() >= 1.0);
    assert_eq!(
        missing(&m, "under", "absent"),
        Some(1.0),
        "the last list is kept"
    );
    assert_eq!(
        exporter.get("/readyz").await.0,
        200,
        "ready on node data alone"
    );

    // Garbage is an error too; then it comes back.
    nublado.answer(200, "{\"not\": \"a status\"}");
    let before = sample(&m, "imagecap_source_errors_total", &[("kind", "nublado")]).unwrap();
    exporter
        .wait_metrics("a bad body counted", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "nublado")]).unwrap() > before
        })
        .await;
    nublado.answer(200, &prepuller_status().to_string());
    exporter
        .wait_metrics("Nublado back", |m| {
            sample(m, "imagecap_wanted_source_up", &[("source", "nublado")]) == Some(1.0)
        })
        .await;
}

/// A `PrepullerStatus` with `n` pending images of short distinct references
/// (`r.io/i0:1`, ...), as an attacker or a broken controller could send; node `a`
/// eligible.
fn huge_status(n: usize) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(n * 32);
    body.push_str(r#"{"images":{"pending":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        write!(body, r#"{{"reference":"r.io/i{i}:1"}}"#).unwrap();
    }
    body.push_str(r#"]},"nodes":[{"name":"a"}]}"#);
    body
}

fn nublado_config(dir: &std::path::Path, url: &str, interval: &str, timeout: &str) -> String {
    write_config(
        dir,
        &format!(
            "prepull:\n  sources:\n    - nublado: {{url: '{url}', interval: {interval}, timeout: {timeout}}}\n"
        ),
    )
}

/// How long a SIGTERM may take to end the process: well under the 4 s grace of
/// open connections (none here), and far less than a huge read takes.
const PROMPT_EXIT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_image_nublado_answer_is_capped_in_seconds_and_sigterm_still_works() {
    let fake = FakeApiServer::start(vec![node("a", &[], &[names(&["r.io/i0:1"])])]).await;
    let (nublado, url) = Nublado::start(json!({})).await;
    let body = huge_status(1_000_000);
    assert!(
        body.len() < 32 << 20,
        "under the body limit: {}",
        body.len()
    );
    nublado.answer(200, &body);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = nublado_config(dir.path(), &url, "10m", "30s");
    let started = Instant::now();
    let mut exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let m = exporter
        .wait_metrics_for("the capped Nublado list", Duration::from_secs(60), |m| {
            sample(
                m,
                "imagecap_wanted_source_dropped_images",
                &[("source", "nublado")],
            ) == Some(990_000.0)
                // And the node summarized again for the new repositories.
                && sample(m, "imagecap_prepull_image_nodes", &[("image", "r.io/i0:1")])
                    == Some(1.0)
        })
        .await;
    eprintln!(
        "1,000,000-image Nublado answer ({} bytes) read, capped and analyzed {:?} after the start",
        body.len(),
        started.elapsed()
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_source_images",
            &[("source", "nublado")]
        ),
        Some(10_000.0)
    );
    assert_eq!(
        sample(&m, "imagecap_wanted_source_up", &[("source", "nublado")]),
        Some(1.0)
    );
    // The first images in the body's order are kept, the later ones are not.
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", "r.io/i0:1")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", "r.io/i9999:1")]
        )
        .is_some()
    );
    assert!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", "r.io/i10000:1")]
        )
        .is_none()
    );
    let log = exporter.log_text();
    assert_eq!(
        log.matches("990000 image references dropped").count(),
        1,
        "logged once: {log}"
    );

    let stopping = Instant::now();
    let status = exporter.terminate();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < PROMPT_EXIT, "SIGTERM took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_huge_nublado_answer_is_decoded_ends_the_process() {
    let fake = FakeApiServer::start(vec![node("a", &[], &[])]).await;
    let (nublado, url) = Nublado::start(json!({})).await;
    nublado.answer(200, &huge_status(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = nublado_config(dir.path(), &url, "10m", "30s");
    let mut exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let start = Instant::now();
    while nublado.requests.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Nublado never asked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The answer is on its way or being decoded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    let status = exporter.terminate();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}\n{}", exporter.log_text());
    eprintln!("exit {took:?} after SIGTERM during the read");
    assert!(took < PROMPT_EXIT, "SIGTERM took {took:?}");
    assert!(exporter.log_text().contains("stopped"));
}

/// Serves `app` on an ephemeral loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Nublado's URL answers 302 to another loopback port that serves a valid
/// status: the redirect is not followed, that data is not used, and the error is
/// counted.
#[tokio::test]
async fn a_nublado_redirect_is_not_followed() {
    let fake = FakeApiServer::start(vec![node("under", &[], &[])]).await;
    let (elsewhere, target) = Nublado::start(prepuller_status()).await;
    let location = target.clone();
    let redirecting = serve(Router::new().route(
        "/nublado/spawner/v1/prepulls",
        get(move || async move { (StatusCode::FOUND, [(axum::http::header::LOCATION, target)]) }),
    ))
    .await;
    let url = format!("{redirecting}/nublado/spawner/v1/prepulls");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = nublado_config(dir.path(), &url, "1s", "2s");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let m = exporter
        .wait_metrics("two failed Nublado reads", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "nublado")])
                .is_some_and(|n| n >= 2.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_wanted_source_up", &[("source", "nublado")]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_source_images",
            &[("source", "nublado")]
        ),
        Some(0.0),
        "nothing from the redirect's target"
    );
    assert_eq!(
        elsewhere.requests.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let log = exporter.log_text();
    assert!(
        log.contains("answered 302 Found redirecting to")
            && log.contains(&location)
            && log.contains("redirects are not followed"),
        "{log}"
    );
}

/// A Nublado that answers too slowly, first before its headers, then in the
/// middle of its body: both are counted and logged, in one line, as "timed out
/// after 1s".
#[tokio::test]
async fn a_slow_nublado_is_logged_as_timed_out() {
    let fake = FakeApiServer::start(vec![node("under", &[], &[])]).await;
    let stall_body = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mode = stall_body.clone();
    let slow = serve(Router::new().route(
        "/nublado/spawner/v1/prepulls",
        get(move || {
            let stall_body = mode.load(Ordering::SeqCst);
            async move {
                if !stall_body {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                // Headers now, half of the body, then nothing for 5 s.
                let text = prepuller_status().to_string();
                let (head, tail) = text.split_at(text.len() / 2);
                let (head, tail) = (head.to_string(), tail.to_string());
                let body = futures::StreamExt::chain(
                    futures::stream::iter([Ok::<_, std::io::Error>(head)]),
                    futures::stream::once(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(tail)
                    }),
                );
                axum::body::Body::from_stream(body)
            }
        }),
    ))
    .await;
    let url = format!("{slow}/nublado/spawner/v1/prepulls");
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = nublado_config(dir.path(), &url, "1s", "1s");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let errors = |m: &str| sample(m, "imagecap_source_errors_total", &[("kind", "nublado")]);
    let timed_out = |log: &str| log.matches("timed out after 1s").count();
    let m = exporter
        .wait_metrics("a slow answer counted", |m| {
            errors(m).is_some_and(|n| n >= 1.0)
        })
        .await;
    let log = exporter.log_text();
    assert!(timed_out(&log) >= 1, "{log}");
    assert!(!log.contains("error sending request"), "{log}");

    stall_body.store(true, Ordering::SeqCst);
    let before = (errors(&m).unwrap(), timed_out(&exporter.log_text()));
    exporter
        .wait_metrics("a stalled body counted", |m| {
            errors(m).is_some_and(|n| n >= before.0 + 2.0)
        })
        .await;
    let log = exporter.log_text();
    assert!(timed_out(&log) >= before.1 + 2, "{log}");
    assert!(!log.contains("error decoding response body"), "{log}");
    for line in log.lines().filter(|l| l.contains("timed out after")) {
        assert!(
            line.contains("cannot read Nublado's prepuller status"),
            "one line: {line}"
        );
    }
}

/// An ImageCache of 1,000,000 images (far past what etcd would store, but an
/// API server or a proxy could send it): capped at the first 10,000, counted,
/// within seconds; a second ImageCache's images are past the source's cap too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_image_imagecache_is_capped() {
    let fake = FakeApiServer::start(vec![node("a", &[], &[names(&["r.io/i0:1"])])]).await;
    let images: Vec<String> = (0..1_000_000).map(|i| format!("r.io/i{i}:1")).collect();
    let cache = |name: &str, images: &[String]| {
        json!({"apiVersion": "kubefledged.io/v1alpha2", "kind": "ImageCache",
               "metadata": {"name": name, "namespace": "kube-fledged"},
               "spec": {"cacheSpec": [{"images": images}]}})
    };
    fake.apply_object("imagecaches", cache("a-huge", &images));
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(dir.path(), "prepull:\n  sources:\n    - kubeFledged: {}\n");
    let started = Instant::now();
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let dropped = |m: &str| {
        sample(
            m,
            "imagecap_wanted_source_dropped_images",
            &[("source", "kube-fledged")],
        )
    };
    let m = exporter
        .wait_metrics_for("the capped ImageCache", Duration::from_secs(60), |m| {
            // And the node summarized again for the new repositories (a relist).
            dropped(m) == Some(990_000.0)
                && sample(m, "imagecap_prepull_image_nodes", &[("image", "r.io/i0:1")]) == Some(1.0)
        })
        .await;
    eprintln!(
        "1,000,000-image ImageCache capped {:?} after the start",
        started.elapsed()
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_wanted_source_images",
            &[("source", "kube-fledged")]
        ),
        Some(10_000.0)
    );
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", "r.io/i0:1")]
        ),
        Some(1.0)
    );
    // Another ImageCache, after the first in namespace/name order: its images are
    // past the source's cap, except those the first already wants.
    fake.apply_object(
        "imagecaches",
        cache("b-more", &["r.io/i0:1".into(), "r.io/other:1".into()]),
    );
    exporter
        .wait_metrics("the second ImageCache counted", |m| {
            dropped(m) == Some(990_001.0)
        })
        .await;
}

/// Nodes at their cap where Nublado's sizes prove the loop, with no agent: the
/// spawner menu's hidden images and the prepull loop show on /metrics, and the
/// Nublado-only families are as the README's table says.
#[tokio::test]
async fn the_menu_and_the_prepull_loop_from_sizes_with_no_agent() {
    let w10 = format!("{LAB}:w_2024_10");
    let w12 = format!("{LAB}:w_2024_12");
    let w10_digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let w10_entry = vec![format!("{LAB}@{w10_digest}"), w10.clone()];
    let mut full_images = vec![w10_entry.clone()];
    full_images.extend(filler(49));
    let fake = FakeApiServer::start(vec![
        node("full", &[], &full_images),
        node(
            "roomy",
            &[],
            &[
                w10_entry,
                vec![format!("{LAB}@{DIGEST}")],
                vec![w12.clone()],
            ],
        ),
    ])
    .await;
    let image = |tag: &str, digest: &str, size: u64, missing: &[&str]| {
        json!({"reference": format!("{LAB}:{tag}"), "tag": tag, "name": format!("Weekly {tag}"),
               "digest": digest, "size": size, "nodes": ["roomy"], "missing": missing})
    };
    let body = json!({
        "config": {"refresh_interval": 60},
        "images": {
            "prepulled": [image("w_2024_10", w10_digest, 500_000_000, &[])],
            // Far smaller than the smallest image `full` reports: never listable there.
            "pending": [image("w_2024_11", DIGEST, 10, &["full"]),
                        // Nublado's own test data has such digests.
                        image("w_2024_12", "sha256:1234", 10, &["full"])]
        },
        "nodes": [{"name": "full", "eligible": true, "comment": null, "cached": []},
                  {"name": "roomy", "eligible": true, "comment": null, "cached": []}]
    });
    let (_nublado, url) = Nublado::start(body).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = nublado_config(dir.path(), &url, "1s", "5s");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let w10_wanted = format!("{LAB}:w_2024_10@{w10_digest}");
    // Once the nodes are summarized for Nublado's repository, both report w10.
    let m = exporter
        .wait_metrics("the menu", |m| {
            sample(m, "imagecap_prepull_image_nodes", &[("image", &w10_wanted)]) == Some(2.0)
                && sample(m, "imagecap_menu_images", &[("state", "hidden_by_cap")]) == Some(2.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_menu_images", &[("state", "shown")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "imagecap_menu_images", &[("state", "pulling")]),
        Some(0.0)
    );
    let w11_wanted = format!("{LAB}:w_2024_11@{DIGEST}");
    let w12_wanted = format!("{LAB}:w_2024_12@sha256:1234");
    for wanted in [&w11_wanted, &w12_wanted] {
        assert_eq!(
            sample(
                &m,
                "imagecap_menu_image_hidden",
                &[("image", wanted.as_str()), ("state", "hidden_by_cap")]
            ),
            Some(1.0),
            "{wanted}"
        );
        assert_eq!(
            sample(
                &m,
                "imagecap_node_prepull_image_missing",
                &[
                    ("node", "full"),
                    ("image", wanted.as_str()),
                    ("state", "unlistable")
                ]
            ),
            Some(1.0),
            "{wanted}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "imagecap_node_prepull_missing_images",
            &[("node", "full"), ("state", "unlistable")]
        ),
        Some(2.0),
        "{}",
        m.lines()
            .filter(|l| l.contains("image_missing{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        sample(&m, "imagecap_prepull_loop_pairs", &[("source", "nublado")]),
        Some(2.0)
    );
    // The odd digest is wanted, found on `roomy` by tag, and counted.
    assert_eq!(
        sample(
            &m,
            "imagecap_prepull_image_nodes",
            &[("image", w12_wanted.as_str())]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "imagecap_invalid_source_data_total",
            &[("source", "nublado"), ("field", "digest")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    // What only a Nublado source serves is in the README's table as served.
    let documented = support::readme::readme_table();
    let served = support::readme::exposed(&m);
    for name in &support::readme::with_nublado() {
        let (kind, labels, has_samples) = &served[name];
        assert!(has_samples, "{name}");
        assert_eq!(documented[name], (kind.clone(), labels.clone()), "{name}");
    }
}

/// Node summaries keep only the tags wanted now: a tag a source comes to want
/// later is found by summarizing the nodes again (a relist), not lost.
#[tokio::test]
async fn a_tag_wanted_later_is_found_on_the_nodes() {
    let fake = FakeApiServer::start(vec![node(
        "a",
        &[],
        &[names(&["r.io/app:1"]), names(&["r.io/app:2"])],
    )])
    .await;
    let cache = |images: &[&str]| {
        json!({"apiVersion": "kubefledged.io/v1alpha2", "kind": "ImageCache",
               "metadata": {"name": "apps", "namespace": "kube-fledged"},
               "spec": {"cacheSpec": [{"images": images}]}})
    };
    fake.apply_object("imagecaches", cache(&["r.io/app:1"]));
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(dir.path(), "prepull:\n  sources:\n    - kubeFledged: {}\n");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let on_nodes =
        |m: &str, image: &str| sample(m, "imagecap_prepull_image_nodes", &[("image", image)]);
    let m = exporter
        .wait_metrics("r.io/app:1 on the node", |m| {
            on_nodes(m, "r.io/app:1") == Some(1.0)
        })
        .await;
    assert_eq!(on_nodes(&m, "r.io/app:2"), None, "not wanted yet");

    fake.apply_object("imagecaches", cache(&["r.io/app:1", "r.io/app:2"]));
    let m = exporter
        .wait_metrics("r.io/app:2 on the node", |m| {
            on_nodes(m, "r.io/app:2") == Some(1.0)
        })
        .await;
    assert_eq!(on_nodes(&m, "r.io/app:1"), Some(1.0));
    assert_eq!(
        sample(&m, "imagecap_node_prepull_missing_images", &[("node", "a")]),
        Some(0.0)
    );
}

/// An image a node reports by digest alone, under a tag nobody wants, is the
/// wanted image once that tag turns up with the same digest on another node:
/// summaries keep such entries only while a wanted image is known by their
/// digest, so the nodes are listed again and the first node has it.
#[tokio::test]
async fn a_digest_a_wanted_tag_turns_up_with_is_found_on_the_nodes() {
    let digest = |c: &str| format!("r.io/app@sha256:{}", c.repeat(64));
    let (d1, d2) = (digest("1"), digest("2"));
    let fake = FakeApiServer::start(vec![
        node("a", &[], &[names(&["r.io/app:1", &d1])]),
        node("b", &[], &[names(&["r.io/app:pr-7", &d2])]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let config = write_config(dir.path(), "prepull:\n  images:\n    - r.io/app:1\n");
    let exporter = Exporter::start(&["--config", &config], &[("KUBECONFIG", kc.as_path())]);
    exporter.wait_ready().await;
    let missing =
        |m: &str, n: &str| sample(m, "imagecap_node_prepull_missing_images", &[("node", n)]);
    exporter
        .wait_metrics("b misses r.io/app:1", |m| {
            missing(m, "a") == Some(0.0) && missing(m, "b") == Some(1.0)
        })
        .await;
    let lists = || {
        fake.requests()
            .iter()
            .filter(|q| !q.contains("watch="))
            .count()
    };
    let before = lists();

    fake.apply(node("c", &[], &[names(&["r.io/app:1", &d2])]));
    let m = exporter
        .wait_metrics("b has r.io/app:1 by digest", |m| {
            missing(m, "b") == Some(0.0)
        })
        .await;
    assert_eq!(missing(&m, "c"), Some(0.0));
    assert!(lists() > before, "listed again: {:?}", fake.requests());
    assert!(
        exporter.log_text().contains("known by a new digest"),
        "{}",
        exporter.log_text()
    );
}
