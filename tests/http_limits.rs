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
        write!(
            f,
            r#"{{"names":["registry.example.com/team/image-{i}:v1"],"sizeBytes":{}}}"#,
            1000 + i
        )
        .unwrap();
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
    ex.wait_metrics("the huge node", |m| {
        sample(m, "imagecap_node_images", &[("node", "huge")]) == Some(1_000_000.0)
    })
    .await;
    let rss_huge = peak_rss_mib(ex.pid());

    replace_file(Path::new(EXAMPLE), &nodes);
    let swapped = Instant::now();
    ex.wait_metrics("the example nodes back", |m| {
        sample(m, "imagecap_nodes", &[]) == Some(6.0)
    })
    .await;
    let pid = ex.pid();
    let settled = within(Duration::from_secs(10), "RSS under 40 MiB", || {
        rss_mib(pid) < 40.0
    })
    .await;
    eprintln!(
        "1,000,000-image file: RSS {rss_start:.1} MiB at start, {rss_huge:.1} MiB at its peak while reading it, \
         {:.1} MiB {:?} after the example file was loaded ({:?} after it was written)",
        rss_mib(pid),
        settled,
        swapped.elapsed()
    );
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
    // The body (chunked) starts with the gzip magic number after the chunk size.
    let body = &response[split + 4..];
    let line = body.windows(2).position(|w| w == b"\r\n").unwrap();
    assert_eq!(&body[line + 2..line + 4], &[0x1f, 0x8b]);

    // Without Accept-Encoding, plain text.
    let (code, plain) = ex.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(plain.contains("imagecap_nodes 6"));
}
