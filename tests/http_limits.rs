//! The HTTP side under slow clients, floods and huge inputs, on loopback: each test
//! runs the real binary and asserts a number (README "Reliability").

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Exporter, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// These tests measure latency and memory: they run one at a time, so that one's
/// flood is not another's noise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nodes.json");

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// This test process opens many sockets: raise its own open-file limit.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// A raw HTTP/1.1 GET on a new connection; the status code and the time taken.
async fn timed_get(addr: &str, path: &str, headers: &str) -> (u16, Duration) {
    try_get(addr, path, headers, Duration::from_secs(10))
        .await
        .expect("no answer within 10 s")
}

/// [`timed_get`], giving up after `limit`.
async fn try_get(
    addr: &str,
    path: &str,
    headers: &str,
    limit: Duration,
) -> Option<(u16, Duration)> {
    let start = Instant::now();
    let status = tokio::time::timeout(limit, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).await.unwrap();
        let head = String::from_utf8_lossy(&response[..response.len().min(12)]).to_string();
        head[9..12].parse::<u16>().unwrap()
    })
    .await
    .ok()?;
    Some((status, start.elapsed()))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

/// Waits until `pred` holds, polling every 50 ms, for at most `limit`; the time taken.
async fn within(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_scrapes_go_on_and_memory_returns() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let header_timeout = Duration::from_secs(2);
    let ex = Exporter::start(
        &["--nodes-file", EXAMPLE, "--web.header-read-timeout", "2s"],
        &[],
    );
    ex.wait_ready().await;
    ex.metrics().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(ex.pid());

    // 1,000 clients send part of a request, then nothing.
    let closed_after = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(&ex.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let sent = Instant::now();
        let closed_after = closed_after.clone();
        clients.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // EOF or a reset: the server closed the connection.
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
            closed_after.lock().unwrap().push(sent.elapsed());
        }));
    }
    let peak_fds = open_fds(ex.pid());
    let mut scrapes = Vec::new();
    for _ in 0..10 {
        let (code, took) = timed_get(&ex.addr, "/metrics", "").await;
        assert_eq!(code, 200);
        scrapes.push(took);
    }
    for c in clients {
        c.await.unwrap();
    }
    let closed_after = closed_after.lock().unwrap().clone();
    let slowest_close = closed_after.iter().max().copied().unwrap();
    let slowest_scrape = scrapes.iter().max().copied().unwrap();

    // Memory of the closed connections is given back.
    let mut rss_after = 0.0;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rss_after = rss_mib(ex.pid());
            if rss_after <= rss_before + 5.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    eprintln!(
        "1000 stalled connections: slowest closed after {slowest_close:?}, slowest scrape \
         {slowest_scrape:?}, exporter fds at most {peak_fds}, RSS {rss_before:.1} -> {rss_after:.1} MiB"
    );
    assert_eq!(closed_after.len(), 1000);
    assert!(
        slowest_close <= header_timeout + Duration::from_secs(2),
        "a stalled connection stayed open {slowest_close:?}"
    );
    assert!(
        slowest_scrape < Duration::from_millis(200),
        "a scrape took {slowest_scrape:?} during the stall"
    );
    assert!(
        rss_after <= rss_before + 5.0,
        "RSS {rss_after:.1} MiB after, {rss_before:.1} MiB before"
    );
    assert!(open_fds(ex.pid()) < 32, "connections left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_new_scrape_is_still_answered() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    // Long timeouts: what frees a slot here is the cap's policy, not a timeout.
    let ex = Exporter::start(
        &[
            "--nodes-file",
            EXAMPLE,
            "--web.max-connections",
            "100",
            "--web.header-read-timeout",
            "60s",
            "--web.idle-timeout",
            "60s",
        ],
        &[],
    );
    ex.wait_ready().await;
    // 300 idle clients: 150 connect and send nothing, 150 make a request and keep
    // the connection open.
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&ex.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for _ in 0..20 {
        let (code, t) = timed_get(&ex.addr, "/metrics", "").await;
        assert_eq!(code, 200);
        took.push(t);
        assert!(
            open_fds(ex.pid()) <= 100 + 32,
            "more connections than the cap"
        );
    }
    let slowest = took.iter().max().copied().unwrap();
    eprintln!(
        "cap 100, 300 idle clients: slowest of 20 scrapes {slowest:?}, exporter fds {}",
        open_fds(ex.pid())
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a scrape took {slowest:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_fits_the_open_file_limit() {
    let _serial = SERIAL.lock().await;
    // An open-file limit of 128 (soft and hard): the cap is lowered to fit and
    // accepting does not fail with "Too many open files".
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n 128 && exec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_imagecap-exporter")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ex = Exporter::start_with(&script, &["--nodes-file", EXAMPLE], &[]);
    ex.wait_ready().await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&ex.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        let (code, took) = timed_get(&ex.addr, "/metrics", "").await;
        assert_eq!(code, 200);
        assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    }
    let logs = ex.log_text();
    assert!(logs.contains("lowered to 64"), "{logs}");
    assert!(!logs.contains("Too many open files"), "{logs}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_does_not_starve_probes_or_scrapes() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    // Cost 10, the usual one: about 50 ms a verification in a release build.
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let ex = Exporter::start(
        &[
            "--nodes-file",
            EXAMPLE,
            "--web.config.file",
            web.to_str().unwrap(),
        ],
        &[],
    );
    ex.wait_ready().await;
    let good = "Authorization: Basic cHJvbWV0aGV1czpzM2NyZXQ=\r\n"; // prometheus:s3cret
    assert_eq!(timed_get(&ex.addr, "/metrics", good).await.0, 200);

    // 64 clients send new wrong passwords as fast as they are answered, for 10 s.
    let stop = Instant::now() + Duration::from_secs(10);
    let mut flood = Vec::new();
    for client in 0..64 {
        let addr = ex.addr.clone();
        flood.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop {
                let header = format!(
                    "Authorization: Basic {}\r\n",
                    STANDARD.encode(format!("prometheus:wrong-{client}-{n}"))
                );
                // They queue for bcrypt: most wait past the end of the flood.
                let left = stop.saturating_duration_since(Instant::now());
                if let Some((code, _)) = try_get(&addr, "/metrics", &header, left).await {
                    assert_eq!(code, 401);
                    n += 1;
                }
            }
            n
        }));
    }
    let mut healthz = Vec::new();
    let mut scrapes = Vec::new();
    while Instant::now() < stop {
        let (code, t) = timed_get(&ex.addr, "/healthz", "").await;
        assert_eq!(code, 200);
        healthz.push(t);
        let (code, t) = timed_get(&ex.addr, "/metrics", good).await;
        assert_eq!(code, 200);
        scrapes.push(t);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut wrong = 0;
    for f in flood {
        wrong += f.await.unwrap();
    }
    let (h99, s99) = (
        percentile(&mut healthz, 0.99),
        percentile(&mut scrapes, 0.99),
    );
    eprintln!(
        "64 clients, {wrong} wrong passwords answered in 10 s: /healthz p99 {h99:?} ({} probes), \
         authenticated scrape p99 {s99:?} ({} scrapes)",
        healthz.len(),
        scrapes.len()
    );
    assert!(h99 < Duration::from_millis(100), "/healthz p99 {h99:?}");
    assert!(s99 < Duration::from_millis(500), "scrape p99 {s99:?}");
}

/// The names of image `i` of the huge node: 1,000,000 images make a 140 MB node.
fn huge_image_names(i: usize) -> [String; 2] {
    [
        format!("registry.example.com/team/image-{i}:v1"),
        format!("registry.example.com/team/image-{i}:latest-{i:07}"),
    ]
}

/// Peak memory (VmHWM) of the exporter while it reads one node of 1,000,000
/// images (140 MB) from a file: the file's bytes plus a bounded overhead
/// (README "Reliability" -> "Limits").
const HUGE_FILE_PEAK_MIB: f64 = 200.0;

/// Likewise through the API server: listed, the list page's bytes plus a
/// bounded overhead; watched, twice the event's bytes (the client's line buffer
/// and its copy as a string) plus a bounded overhead.
const HUGE_LIST_PEAK_MIB: f64 = 200.0;
const HUGE_WATCH_PEAK_MIB: f64 = 360.0;

/// A nodes file with one node reporting `images` images.
fn huge_nodes_file(path: &Path, images: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write!(
        f,
        r#"{{"kind":"List","items":[{{"metadata":{{"name":"huge"}},"status":{{"images":["#
    )
    .unwrap();
    for i in 0..images {
        if i > 0 {
            f.write_all(b",").unwrap();
        }
        let [a, b] = huge_image_names(i);
        write!(f, r#"{{"names":["{a}","{b}"],"sizeBytes":{}}}"#, 1000 + i).unwrap();
    }
    f.write_all(b"]}}]}").unwrap();
    f.flush().unwrap();
}

fn replace_file(from: &Path, to: &Path) {
    // A rename, as a ConfigMap update does: the new file is whole when seen.
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_a_huge_nodes_file() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.json");
    huge_nodes_file(&huge, 1_000_000);
    let nodes = dir.path().join("nodes.json");
    replace_file(Path::new(EXAMPLE), &nodes);
    let ex = Exporter::start(
        &[
            "--nodes-file",
            nodes.to_str().unwrap(),
            "--file-check-interval",
            "200ms",
        ],
        &[],
    );
    ex.wait_ready().await;
    let rss_start = rss_mib(ex.pid());

    replace_file(&huge, &nodes);
    // Memory is what this test is about, not how fast a debug build reads the file.
    ex.wait_metrics_for("the huge node", Duration::from_secs(180), |m| {
        sample(m, "imagecap_node_images", &[("node", "huge")]) == Some(1_000_000.0)
    })
    .await;
    let rss_huge = peak_rss_mib(ex.pid());
    let file_mb = std::fs::metadata(&huge).unwrap().len() as f64 / 1e6;

    replace_file(Path::new(EXAMPLE), &nodes);
    let swapped = Instant::now();
    ex.wait_metrics_for("the example nodes back", Duration::from_secs(180), |m| {
        sample(m, "imagecap_nodes", &[]) == Some(6.0)
    })
    .await;
    let pid = ex.pid();
    // Back near where it started: the ~1 GiB the huge file took is returned. (The
    // margin is for the per-thread name caches, which hold up to 20,000 names each,
    // and the allocator's own slack.)
    let settled = within(
        Duration::from_secs(10),
        "RSS within 16 MiB of its start",
        || rss_mib(pid) < rss_start + 16.0,
    )
    .await;
    eprintln!(
        "1,000,000-image file ({file_mb:.0} MB): RSS {rss_start:.1} MiB at start, {rss_huge:.1} MiB at its peak while reading it, \
         {:.1} MiB {:?} after the example file was loaded ({:?} after it was written)",
        rss_mib(pid),
        settled,
        swapped.elapsed()
    );
    assert!(
        rss_huge < HUGE_FILE_PEAK_MIB,
        "peak {rss_huge:.1} MiB reading a {file_mb:.0} MB node"
    );
}

/// The same node through the API server: listed (one page), then changed
/// through the watch. Each path is its own process, so that VmHWM is its peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_node_through_the_api_stays_within_its_peak() {
    use support::fake_apiserver::{FakeApiServer, node};
    let _serial = SERIAL.lock().await;
    let images: Vec<Vec<String>> = (0..1_000_000)
        .map(|i| huge_image_names(i).to_vec())
        .collect();
    let huge = node("huge", &[], &images);
    drop(images);
    let small = node("huge", &[], &[vec!["busybox:1.36".to_string()]]);
    let dir = tempfile::tempdir().unwrap();
    let slow = Duration::from_secs(240);
    for path in ["list", "watch"] {
        let first = if path == "list" {
            huge.clone()
        } else {
            small.clone()
        };
        let fake = FakeApiServer::start(vec![first]).await;
        let kc = support::kubeconfig(dir.path(), &fake.url());
        let ex = Exporter::start(&[], &[("KUBECONFIG", kc.as_path())]);
        ex.wait_metrics_for("the first list", slow, |m| {
            sample(m, "imagecap_node_images", &[("node", "huge")]).is_some()
        })
        .await;
        if path == "watch" {
            fake.apply(huge.clone());
        }
        ex.wait_metrics_for("the huge node", slow, |m| {
            sample(m, "imagecap_node_images", &[("node", "huge")]) == Some(1_000_000.0)
        })
        .await;
        let (pid, peak) = (ex.pid(), peak_rss_mib(ex.pid()));
        // The page buffer and the watch's line buffer are not kept.
        let settled = within(Duration::from_secs(10), "RSS back under 64 MiB", || {
            rss_mib(pid) < 64.0
        })
        .await;
        eprintln!(
            "1,000,000-image node through the API ({path}): peak {peak:.1} MiB, RSS {:.1} MiB {settled:?} after",
            rss_mib(pid)
        );
        let bound = if path == "list" {
            HUGE_LIST_PEAK_MIB
        } else {
            HUGE_WATCH_PEAK_MIB
        };
        assert!(peak < bound, "{path}: peak {peak:.1} MiB");
        assert_eq!(
            ex.metrics()
                .await
                .lines()
                .filter(|l| l.starts_with("imagecap_node_images{"))
                .count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_file_above_the_size_limit_is_an_error_and_the_last_data_is_kept() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.json");
    replace_file(Path::new(EXAMPLE), &nodes);
    let limit = std::fs::metadata(EXAMPLE).unwrap().len() + 100;
    let ex = Exporter::start(
        &[
            "--nodes-file",
            nodes.to_str().unwrap(),
            "--file-check-interval",
            "200ms",
            "--max-nodes-file-bytes",
            &limit.to_string(),
        ],
        &[],
    );
    ex.wait_ready().await;
    let big = dir.path().join("big.json");
    huge_nodes_file(&big, 10_000);
    assert!(std::fs::metadata(&big).unwrap().len() > limit);
    replace_file(&big, &nodes);
    let m = ex
        .wait_metrics("the file error", |m| {
            sample(m, "imagecap_source_errors_total", &[("kind", "file")]) == Some(1.0)
        })
        .await;
    assert_eq!(
        sample(&m, "imagecap_nodes", &[]),
        Some(6.0),
        "last data kept"
    );
    assert!(ex.log_text().contains("--max-nodes-file-bytes"));
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_client_accepts_it() {
    let _serial = SERIAL.lock().await;
    let ex = Exporter::start(&["--nodes-file", EXAMPLE], &[]);
    ex.wait_ready().await;
    let mut s = TcpStream::connect(&ex.addr).await.unwrap();
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    // The exporter knows the size of the body and sends Content-Length; the body
    // starts with the gzip magic number.
    assert!(head.contains("content-length:"), "{head}");
    let body = &response[split + 4..];
    assert_eq!(&body[..2], &[0x1f, 0x8b]);
    // One gzip member holds the whole text: a reader that stops after the first
    // member (curl's, reqwest's) reads every family and nothing is left over.
    let mut reader = flate2::read::GzDecoder::new(body);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    assert!(reader.into_inner().is_empty(), "one gzip member");

    // Without Accept-Encoding, plain text: the same families.
    let (code, plain) = ex.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(plain.contains("imagecap_nodes 6"));
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(String::from)
            .collect()
    };
    assert_eq!(families(&text), families(&plain));
    assert!(text.contains("imagecap_nodes 6"), "{text}");
}

/// `nodes` nodes with a few images each, none of them among the `wanted` images of
/// the config written next to it: every node misses every wanted image, so each has
/// a series per wanted image and `/metrics` grows by about 1.5 KB a node.
fn many_nodes_files(dir: &Path, nodes: usize, wanted: usize) -> (String, String) {
    let path = dir.join("nodes.json");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(br#"{"kind":"List","items":["#).unwrap();
    for n in 0..nodes {
        if n > 0 {
            f.write_all(b",").unwrap();
        }
        write!(
            f,
            r#"{{"metadata":{{"name":"node-{n:05}"}},"status":{{"capacity":{{"ephemeral-storage":"500Gi"}},"images":[{{"names":["registry.example.com/team/other-{n}:v1"],"sizeBytes":1000}},{{"names":["registry.example.com/team/base:v1"],"sizeBytes":2000}}]}}}}"#
        )
        .unwrap();
    }
    f.write_all(b"]}").unwrap();
    f.flush().unwrap();
    let config = dir.join("config.yaml");
    let images: Vec<String> = (0..wanted)
        .map(|i| format!("    - registry.example.com/team/wanted-{i}:v1\n"))
        .collect();
    std::fs::write(&config, format!("prepull:\n  images:\n{}", images.concat())).unwrap();
    (
        path.to_str().unwrap().to_string(),
        config.to_str().unwrap().to_string(),
    )
}

/// A GET of `/metrics` read to the end; the status, the body's size and the time taken.
async fn full_scrape(addr: &str, headers: &str) -> (u16, Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut response))
        .await
        .expect("no complete answer within 20 s")
        .unwrap();
    let took = start.elapsed();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let code = head[9..12].parse::<u16>().unwrap();
    let body = &response[split + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (code, body, took)
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line + 2..line + 2 + size]);
        body = &body[line + 2 + size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_metrics_share_one_copy_of_it() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let (nodes, config) = many_nodes_files(dir.path(), 3000, 8);
    let ex = Exporter::start(
        &[
            "--nodes-file",
            &nodes,
            "--config",
            &config,
            "--web.idle-timeout",
            "60s",
        ],
        &[],
    );
    ex.wait_ready().await;
    // Both formats once, gzip too, so whatever is kept between scrapes is there.
    let (code, plain, _) = full_scrape(&ex.addr, "").await;
    assert_eq!(code, 200);
    let om = "Accept: application/openmetrics-text; version=1.0.0\r\n";
    let gzip = "Accept-Encoding: gzip\r\n";
    assert_eq!(full_scrape(&ex.addr, om).await.0, 200);
    let (_, gzipped, _) = full_scrape(&ex.addr, &format!("{om}{gzip}")).await;
    let size_mib = plain.len() as f64 / 1024.0 / 1024.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(ex.pid());

    // 100 clients ask for /metrics, read the head of the answer, then nothing more:
    // first 50 that accept gzip, then 50 that do not; half of each ask for
    // OpenMetrics.
    const CLIENTS: usize = 50;
    let mut held = Vec::new();
    let mut rss = vec![rss_before];
    let start = Instant::now();
    for encoding in [gzip, ""] {
        for i in 0..CLIENTS {
            let format = if i % 2 == 0 { om } else { "" };
            held.push(stalled_scrape(&ex.addr, &format!("{encoding}{format}")).await);
        }
        // The server writes what the sockets take, then waits for the readers.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        rss.push(rss_mib(ex.pid()));
    }
    let answered = start.elapsed();

    // Meanwhile, a scrape is answered whole, and quickly.
    let (code, during, took) = full_scrape(&ex.addr, "").await;
    assert_eq!(code, 200);
    let lines = |b: &[u8]| b.split(|&c| c == b'\n').count();
    assert_eq!(lines(&during), lines(&plain));
    assert!(String::from_utf8_lossy(&during).contains("\nimagecap_nodes 3000\n"));

    let (gzip_each, plain_each) = (
        (rss[1] - rss[0]) / CLIENTS as f64,
        (rss[2] - rss[1]) / CLIENTS as f64,
    );
    eprintln!(
        "/metrics {size_mib:.1} MiB ({:.2} MiB gzipped); {CLIENTS} gzip then {CLIENTS} plain \
         clients that stop reading: RSS {:.1} -> {:.1} -> {:.1} MiB, {gzip_each:.2} MiB a gzip \
         client, {plain_each:.2} MiB a plain one (all answered in {answered:?}); a whole \
         scrape meanwhile in {took:?}",
        gzipped.len() as f64 / 1024.0 / 1024.0,
        rss[0],
        rss[1],
        rss[2],
    );
    // Each stalled client used to hold its own copy of the text (3.9 MiB a plain
    // client here, RSS up 204 MiB for the 100); now they share one, and a client
    // costs its connection's buffers: about 0.02 MiB.
    let growth = rss[2] - rss[0];
    assert!(
        growth < 20.0,
        "RSS grew {growth:.1} MiB for {} clients not reading {size_mib:.1} MiB",
        2 * CLIENTS
    );
    assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    // Nor does the kernel hold a copy per client: the exporter's side of each
    // stalled connection queues at most its bounded send buffer (it used to
    // queue about 2.8 MB here, charged to the pod's memory by cgroup v2).
    let port = ex.addr.rsplit(':').next().unwrap();
    let queued = send_queues(port);
    assert_eq!(
        queued.len(),
        2 * CLIENTS,
        "one socket per stalled client: {queued:?}"
    );
    let most = *queued.iter().max().unwrap();
    eprintln!("largest send queue of a stalled connection: {most} bytes");
    assert!(
        most <= 256 * 1024,
        "a stalled connection queues {most} bytes"
    );
    drop(held);
}

/// Send-Q of the server side of the established connections on `port`, from `ss`.
fn send_queues(port: &str) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args([
            "-tnH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// A connection that asks for `/metrics`, reads the head of the answer (so the body
/// is made), then reads nothing more.
async fn stalled_scrape(addr: &str, headers: &str) -> TcpStream {
    // A small receive window, as a slow client far away has: little of the answer
    // fits in the sockets, the rest waits in the exporter.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("no answer within 30 s")
            .unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    s
}
