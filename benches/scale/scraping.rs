//! Scraping the exporter as Prometheus does, and node churn: what the runs and
//! the figures of scrapes while nodes change share.

use crate::fake_apiserver::FakeApiServer;
use crate::nodegen::Cluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// The `p`th percentile of `sorted` (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One scrape as Prometheus makes it (OpenMetrics, gzip): the text, the time until
/// the body arrived (without the decompression), and the gzipped size.
pub async fn scrape_timed(
    client: &reqwest::Client,
    addr: &str,
) -> Result<(String, Duration, usize), String> {
    let t = Instant::now();
    let r = client
        .get(format!("http://{addr}/metrics"))
        .header("Accept", OPENMETRICS)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("/metrics answered {}", r.status()));
    }
    let gzipped = r
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = r.bytes().await.map_err(|e| format!("/metrics body: {e}"))?;
    let received = t.elapsed();
    if !gzipped {
        return Err("/metrics was not gzipped for a client that accepts gzip".into());
    }
    let mut text = String::with_capacity(body.len() * 10);
    // One gzip member: a single-member reader must see the whole exposition.
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
        .map_err(|e| format!("/metrics gzip: {e}"))?;
    Ok((text, received, body.len()))
}

/// The text of one scrape.
pub async fn scrape(client: &reqwest::Client, addr: &str) -> Result<String, String> {
    Ok(scrape_timed(client, addr).await?.0)
}

/// Node status churn running on a thread of its own: node after node (but the
/// probes' nodes) gets a new heartbeat, `rate` per second, until [`Churn::finish`];
/// with `images`, each update also changes the node's images (one or two fewer
/// than it has, by round).
pub struct Churn {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl Churn {
    pub fn start(fake: FakeApiServer, cluster: Arc<Cluster>, rate: f64, images: bool) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let thread = churn_thread(fake, cluster, rate, stop.clone(), done.clone(), images);
        Churn { stop, done, thread }
    }

    /// The updates applied so far.
    pub fn updates(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the churn; returns the updates applied.
    pub fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "churn thread panicked".to_string())
    }
}

fn churn_thread(
    fake: FakeApiServer,
    cluster: Arc<Cluster>,
    rate: f64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    images: bool,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        // Updates applied, and the position in the round of nodes.
        let (mut k, mut position): (u64, u64) = (0, 0);
        let n = cluster.nodes as u64;
        while !stop.load(Ordering::Relaxed) {
            let due = start + period.mul_f64(k as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
            let i = (position % n) as usize;
            position += 1;
            if is_probe_node(i) {
                continue;
            }
            let round = position / n;
            let drop = if images { 1 + (round % 2) as usize } else { 0 };
            fake.apply(cluster.node_with(i, 1 + round, drop));
            k += 1;
            done.store(k, Ordering::Relaxed);
        }
        k
    })
}

/// The nodes the churn's update probes change (one in fifty), and the churn leaves
/// alone.
pub fn is_probe_node(i: usize) -> bool {
    i % 50 == 25
}
