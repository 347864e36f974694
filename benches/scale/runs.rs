//! The measurements: the decode floor, and one run of the exporter per scenario and
//! mode (ready time, memory, scrapes, update latency, churn).

use crate::args::{Args, Mode};
use crate::fake_apiserver::FakeApiServer;
use crate::nodegen::Cluster;
use crate::process::{ExporterProcess, cpu_seconds, kubeconfig_text, proc_status, rss_file_anon};
use crate::scrape_cost::{self, OneNodeChanged, PacedChurn};
use crate::scraping::{Churn, is_probe_node, percentile, scrape, scrape_timed};
use crate::{EXPORTER, PAGE_SIZE};
use imagecap_exporter::analysis::NodeView;
use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for any single wait.
const DEADLINE: Duration = Duration::from_secs(600);

/// Downloading and decoding the node list without the exporter: the floor.
#[derive(Clone, Debug, Default)]
pub struct Floor {
    /// Download + decode into [`FloorList`], the least a summary needs.
    pub total: Duration,
    pub download: Duration,
    pub decode_min: Duration,
    /// Decoding the same pages into the exporter's NodeView (information only).
    pub decode_view: Duration,
    pub bytes: u64,
    pub pages: usize,
    pub nodes: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Run {
    pub scenario: String,
    pub mode: &'static str,
    pub nodes: usize,
    pub floor_s: f64,
    pub floor_download_s: f64,
    pub floor_decode_s: f64,
    pub floor_view_s: f64,
    pub ready_s: f64,
    pub ready_cpu_s: f64,
    pub rss_ready_mib: f64,
    pub rss_steady_mib: f64,
    /// Of the steady RSS: mapped from files (the binary), and anonymous.
    pub rss_steady_file_mib: f64,
    pub rss_steady_anon_mib: f64,
    pub hwm_steady_mib: f64,
    pub scrape_p50_ms: f64,
    pub scrape_p99_ms: f64,
    pub scrape_max_ms: f64,
    pub scrape_cpu_ms: f64,
    /// The first scrape of a report: rendered and compressed, then sent.
    pub render_ms: f64,
    pub render_cpu_ms: f64,
    pub body_kib: f64,
    pub gzip_kib: f64,
    pub series: usize,
    pub wanted_seen: usize,
    pub rss_after_scrapes_mib: f64,
    pub update_p50_ms: Option<f64>,
    pub update_max_ms: Option<f64>,
    pub store_p50_ms: Option<f64>,
    pub store_max_ms: Option<f64>,
    pub list_mb: f64,
    pub bytes_per_hour_mb: f64,
    pub churn_updates: u64,
    pub churn_window_s: f64,
    pub churn_cpu_pct: Option<f64>,
    /// Changes made during the churn and how long each took to show on /metrics.
    pub churn_visible_p50_ms: Option<f64>,
    pub churn_visible_p99_ms: Option<f64>,
    pub churn_probes: usize,
    /// The first scrape after one node changed (watch mode).
    pub one_node: Option<OneNodeChanged>,
    /// Churn with a scrape every `--scrape-every` (watch mode, when asked).
    pub paced: Option<PacedChurn>,
    /// RSS after 20% of the churn window (2 min of 10) and at its end.
    pub churn_rss_early_mib: Option<f64>,
    pub churn_rss_late_mib: Option<f64>,
    /// `imagecap_interned` (strings, entries) at those two times.
    pub churn_interned_early: Option<(u64, u64)>,
    pub churn_interned_late: Option<(u64, u64)>,
    pub rss_end_mib: f64,
    pub hwm_end_mib: f64,
}

#[derive(serde::Deserialize)]
struct ViewList {
    items: Vec<NodeView>,
}

/// The floor's decoding target: what a node summary is made of, borrowed from the
/// page (name, labels, cordon, taints, ephemeral-storage, image names and sizes).
#[derive(serde::Deserialize)]
struct FloorList<'a> {
    #[serde(borrow)]
    metadata: FloorListMeta<'a>,
    #[serde(borrow)]
    items: Vec<FloorNode<'a>>,
}

#[derive(serde::Deserialize)]
struct FloorListMeta<'a> {
    #[serde(borrow, default, rename = "continue")]
    continue_: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // decoded, never read: the floor measures the decoding
struct FloorNode<'a> {
    #[serde(borrow)]
    metadata: FloorMeta<'a>,
    #[serde(borrow, default)]
    spec: Option<FloorSpec<'a>>,
    #[serde(borrow, default)]
    status: Option<FloorStatus<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorMeta<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "label_pairs")]
    labels: Labels<'a>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorSpec<'a> {
    #[serde(default)]
    unschedulable: bool,
    #[serde(borrow, default)]
    taints: Vec<FloorTaint<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorTaint<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
    #[serde(borrow)]
    effect: Cow<'a, str>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorStatus<'a> {
    #[serde(borrow, default)]
    capacity: Option<FloorResources<'a>>,
    #[serde(borrow, default)]
    allocatable: Option<FloorResources<'a>>,
    #[serde(borrow, default)]
    images: Vec<FloorImage<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorResources<'a> {
    #[serde(borrow, default, rename = "ephemeral-storage")]
    ephemeral_storage: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FloorImage<'a> {
    #[serde(borrow, default)]
    names: Vec<&'a str>,
    #[serde(default, rename = "sizeBytes")]
    size_bytes: i64,
}

type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

#[derive(serde::Deserialize)]
struct BorrowedCow<'a>(#[serde(borrow)] Cow<'a, str>);

/// Labels as a list of pairs, in the order they come.
fn label_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Labels<'de>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Labels<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of labels")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<BorrowedCow, BorrowedCow>()? {
                out.push((k.0, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

async fn measure_floor(client: &reqwest::Client, base: &str) -> Result<Floor, String> {
    let mut f = Floor::default();
    let start = Instant::now();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/nodes?limit={PAGE_SIZE}");
        if let Some(t) = &token {
            url.push_str(&format!("&continue={t}"));
        }
        let t0 = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("floor list: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("floor list body: {e}"))?;
        f.download += t0.elapsed();
        let t1 = Instant::now();
        let list: FloorList =
            serde_json::from_slice(&body).map_err(|e| format!("decoding a NodeList: {e}"))?;
        f.decode_min += t1.elapsed();
        f.bytes += body.len() as u64;
        f.pages += 1;
        let page_nodes = list.items.len();
        f.nodes += page_nodes;
        token = list
            .metadata
            .continue_
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(String::from);
        drop(list);
        // Not part of the floor: the exporter's own projection, for comparison.
        let paused = Instant::now();
        let view: ViewList = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if view.items.len() != page_nodes {
            return Err("NodeView decoded a different number of nodes".into());
        }
        drop(view);
        f.decode_view += paused.elapsed();
        if token.is_none() {
            break;
        }
    }
    f.total = start.elapsed() - f.decode_view;
    Ok(f)
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The value of an unlabelled sample in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(v, 50.0)
}

// ---------------------------------------------------------------------------------
// The exporter process

/// Exporters running, for the memory guard to stop before it exits.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The shared [`ExporterProcess`], registered with the memory guard.
struct Exporter {
    process: ExporterProcess,
}

impl Exporter {
    fn start(
        kubeconfig: &Path,
        config: &Path,
        mode: Mode,
        env: &[(String, String)],
    ) -> Result<Exporter, String> {
        let page_size = PAGE_SIZE.to_string();
        let args: Vec<&OsStr> = [
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--mode"),
            OsStr::new(mode.as_str()),
            OsStr::new("--page-size"),
            OsStr::new(&page_size),
        ]
        .to_vec();
        let envs = env
            .iter()
            .map(|(k, v)| (OsStr::new(k), OsStr::new(v)))
            .chain([(OsStr::new("KUBECONFIG"), kubeconfig.as_os_str())]);
        let process = ExporterProcess::start(EXPORTER, &args, envs)?;
        CHILDREN.lock().unwrap().push(process.pid());
        Ok(Exporter { process })
    }

    fn addr(&self) -> &str {
        &self.process.addr
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.process.exited() {
            Some(status) => Err(format!(
                "exporter exited with {status}:\n{}",
                self.process.log_text()
            )),
            None => Ok(()),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let pid = self.process.pid();
        CHILDREN.lock().unwrap().retain(|p| *p != pid);
    }
}

/// A scrape as Prometheus sends it: OpenMetrics, gzip. The text, and how long the
/// whole (compressed) body took to arrive: the exporter's part, without the
/// client's decompression.
/// `imagecap_interned` (strings, entries) in a scrape's text.
fn interned(body: &str) -> Option<(u64, u64)> {
    let value = |kind: &str| {
        let prefix = format!("imagecap_interned{{kind=\"{kind}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((value("string")?, value("entry")?))
}

/// Drops the fake's event history, which holds every node applied (sharing the
/// stored JSON, but a long list of events), then applies one node again so that lists report a resourceVersion that watches can
/// start from.
pub fn forget_history(fake: &FakeApiServer, cluster: &Cluster) {
    fake.compact();
    fake.apply(cluster.node(0, 0));
}

/// Stops the benchmark before it makes the machine swap or the OOM killer strike
/// (the fake API server holds each node list as its JSON: 0.5 GB at 5,000 x 500).
fn start_memory_guard() {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(f64::INFINITY);
    std::thread::spawn(move || {
        loop {
            let available_kib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemAvailable:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                })
                .unwrap_or(f64::INFINITY);
            if available_kib < total_kib * 0.08 {
                eprintln!(
                    "scale: stopping: only {:.0} MiB of memory left (this process: {:.0} MiB)",
                    available_kib / 1024.0,
                    proc_status(std::process::id()).0
                );
                for pid in CHILDREN.lock().unwrap().iter() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

struct Scenario {
    nodes: usize,
    images: usize,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{}x{}", self.nodes, self.images)
    }
}

pub async fn run(args: &Args) -> Result<Vec<Run>, String> {
    let scenarios: Vec<Scenario> = match (args.nodes, args.images) {
        (Some(nodes), Some(images)) => vec![Scenario { nodes, images }],
        (None, None) if args.quick => vec![Scenario {
            nodes: 200,
            images: 50,
        }],
        (None, None) => vec![
            Scenario {
                nodes: 5000,
                images: 100,
            },
            Scenario {
                nodes: 5000,
                images: 500,
            },
        ],
        _ => return Err("give both --nodes and --images, or neither".into()),
    };
    let (steady_secs, scrapes, trials, floor_runs) = if args.quick {
        (
            args.steady_secs.min(2),
            args.scrapes.min(30),
            args.trials.min(10),
            1,
        )
    } else {
        (args.steady_secs, args.scrapes, args.trials, args.floor_runs)
    };
    let churn_secs = args.churn_secs.unwrap_or(if args.quick { 6 } else { 60 });

    println!("== imagecap-exporter scale benchmark ==");
    println!("machine: {}", machine());
    println!("exporter: {EXPORTER}");
    for (k, v) in &args.exporter_env {
        println!("exporter environment: {k}={v}");
    }
    println!(
        "seed {}, {} names, page size {PAGE_SIZE}, {scrapes} scrapes, {trials} update trials, churn window {churn_secs} s{}",
        args.seed,
        args.names.as_str(),
        if args.quick { " (quick)" } else { "" }
    );

    start_memory_guard();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut runs: Vec<Run> = Vec::new();
    for sc in &scenarios {
        let cluster = Arc::new(Cluster::with_names(
            sc.nodes, sc.images, args.seed, args.names,
        ));
        let t = Instant::now();
        let fake = FakeApiServer::start(Vec::new()).await;
        for i in 0..sc.nodes {
            fake.apply(cluster.node(i, 0));
        }
        forget_history(&fake, &cluster);
        let load_s = t.elapsed().as_secs_f64();
        let eligible = (0..sc.nodes)
            .filter(|&i| cluster.profile(i).eligible())
            .count();
        let at_cap = (0..sc.nodes).filter(|&i| cluster.profile(i).at_cap).count();
        let kubeconfig = dir.path().join(format!("kubeconfig-{}", sc.label()));
        std::fs::write(&kubeconfig, kubeconfig_text(&fake.url())).map_err(|e| e.to_string())?;
        let config = dir.path().join(format!("config-{}.yaml", sc.label()));
        std::fs::write(&config, cluster.config_yaml()).map_err(|e| e.to_string())?;

        let mut floors = Vec::new();
        for _ in 0..floor_runs {
            floors.push(measure_floor(&client, &fake.url()).await?);
        }
        floors.sort_by_key(|f| f.total);
        let floor = floors[floors.len() / 2].clone();
        println!(
            "\nscenario {}: generated and loaded in {load_s:.1} s; NodeList {:.1} MB in {} pages \
             ({:.1} KB/node), {eligible} eligible nodes, {at_cap} at the default cap; \
             bench process RSS {:.0} MiB",
            sc.label(),
            floor.bytes as f64 / 1e6,
            floor.pages,
            floor.bytes as f64 / 1e3 / sc.nodes as f64,
            proc_status(std::process::id()).0,
        );
        if floor.nodes != sc.nodes {
            return Err(format!(
                "listed {} nodes, expected {}",
                floor.nodes, sc.nodes
            ));
        }
        println!(
            "  floor (median of {floor_runs}): {:.3} s = download {:.3} s + decode into a borrowed minimal struct {:.3} s; \
             decoding into NodeView instead: {:.3} s",
            floor.total.as_secs_f64(),
            floor.download.as_secs_f64(),
            floor.decode_min.as_secs_f64(),
            floor.decode_view.as_secs_f64()
        );
        if args.peers {
            measure_peers(&kubeconfig, &config, dir.path())?;
            measure_check_file(&cluster, &config, dir.path(), args.names)?;
        }
        for &mode in &args.modes {
            let opts = RunOpts {
                exporter_env: args.exporter_env.clone(),
                steady_secs,
                scrapes,
                trials,
                churn_secs,
                churn_rate: args.churn_rate,
                second_poll: !args.quick,
                scrape_every: args.scrape_every,
            };
            let r = run_mode(
                &client,
                &fake,
                &cluster,
                sc,
                mode,
                &kubeconfig,
                &config,
                &floor,
                &opts,
            )
            .await?;
            runs.push(r);
            // The churn's events are history the next run does not need.
            forget_history(&fake, &cluster);
        }
    }

    Ok(runs)
}

struct RunOpts {
    exporter_env: Vec<(String, String)>,
    steady_secs: u64,
    scrapes: usize,
    trials: usize,
    churn_secs: u64,
    churn_rate: Option<f64>,
    second_poll: bool,
    scrape_every: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
async fn run_mode(
    client: &reqwest::Client,
    fake: &FakeApiServer,
    cluster: &Arc<Cluster>,
    sc: &Scenario,
    mode: Mode,
    kubeconfig: &Path,
    config: &Path,
    floor: &Floor,
    o: &RunOpts,
) -> Result<Run, String> {
    let label = format!("{} {}", sc.label(), mode.as_str());
    println!("  running {label} (load average {}) ...", loadavg());
    let mut r = Run {
        scenario: sc.label(),
        mode: mode.as_str(),
        nodes: sc.nodes,
        floor_s: floor.total.as_secs_f64(),
        floor_download_s: floor.download.as_secs_f64(),
        floor_decode_s: floor.decode_min.as_secs_f64(),
        floor_view_s: floor.decode_view.as_secs_f64(),
        ..Run::default()
    };

    // a. time to ready
    let bytes_before = fake.bytes_served();
    let t0 = Instant::now();
    let mut ex = Exporter::start(kubeconfig, config, mode, &o.exporter_env)?;
    let pid = ex.pid();
    let readyz = format!("http://{}/readyz", ex.addr());
    loop {
        if let Ok(resp) = client.get(&readyz).send().await
            && resp.status().as_u16() == 200
        {
            break;
        }
        ex.check_alive()?;
        if t0.elapsed() > DEADLINE {
            return Err(format!("{label}: never ready:\n{}", ex.process.log_text()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.ready_s = t0.elapsed().as_secs_f64();
    r.ready_cpu_s = cpu_seconds(pid);
    let list_bytes = fake.bytes_served() - bytes_before;
    r.list_mb = list_bytes as f64 / 1e6;
    r.rss_ready_mib = proc_status(pid).0;

    // b. steady RSS
    tokio::time::sleep(Duration::from_secs(o.steady_secs)).await;
    (r.rss_steady_mib, r.hwm_steady_mib) = proc_status(pid);
    (r.rss_steady_file_mib, r.rss_steady_anon_mib) = rss_file_anon(pid);

    // c. /metrics: the first scrape of a report renders it; the next ones send it.
    let cpu0 = cpu_seconds(pid);
    let (_, first, _) = scrape_timed(client, ex.addr()).await?;
    r.render_ms = first.as_secs_f64() * 1e3;
    r.render_cpu_ms = (cpu_seconds(pid) - cpu0) * 1e3;
    let mut times = Vec::with_capacity(o.scrapes);
    let mut body = String::new();
    let cpu0 = cpu_seconds(pid);
    for _ in 0..o.scrapes {
        let (text, received, gzipped) = scrape_timed(client, ex.addr()).await?;
        times.push(received.as_secs_f64() * 1e3);
        (body, r.gzip_kib) = (text, gzipped as f64 / 1024.0);
    }
    r.scrape_cpu_ms = (cpu_seconds(pid) - cpu0) * 1e3 / o.scrapes as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    r.scrape_p50_ms = percentile(&times, 50.0);
    r.scrape_p99_ms = percentile(&times, 99.0);
    r.scrape_max_ms = *times.last().unwrap();
    r.body_kib = body.len() as f64 / 1024.0;
    r.series = body.lines().filter(|l| !l.starts_with('#')).count();
    r.wanted_seen = body
        .lines()
        .filter(|l| l.starts_with("imagecap_prepull_image_nodes{"))
        .count();
    let nodes_line = format!("imagecap_nodes {}", sc.nodes);
    if !body.lines().any(|l| l == nodes_line) {
        return Err(format!("{label}: /metrics lacks {nodes_line:?}"));
    }
    r.rss_after_scrapes_mib = proc_status(pid).0;

    match mode {
        Mode::Watch => {
            // d. a MODIFIED node visible on /metrics
            let eligible: Vec<usize> = (0..sc.nodes)
                .filter(|&i| cluster.profile(i).eligible())
                .collect();
            let mut delays = Vec::new();
            let mut store_delays = Vec::new();
            for t in 0..o.trials {
                let i = eligible[(t * 7919) % eligible.len()];
                let name = cluster.node_name(i);
                let count = cluster.image_count(i) - 1;
                let want = format!("imagecap_node_images{{node=\"{name}\"}} {count}");
                let applied_at = unix_seconds(SystemTime::now());
                let start = Instant::now();
                fake.apply(cluster.node_with(i, 0, 1));
                loop {
                    let body = scrape(client, ex.addr()).await?;
                    if body.lines().any(|l| l == want) {
                        // The store's refresh time is when the event was applied
                        // (unless the watch heartbeat touched it since: rare, and the
                        // median ignores it).
                        if let Some(ts) = sample(&body, "imagecap_last_update_timestamp_seconds") {
                            store_delays.push((ts - applied_at) * 1e3);
                        }
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(60) {
                        return Err(format!("{label}: {want:?} not visible after 60 s"));
                    }
                }
                delays.push(start.elapsed().as_secs_f64() * 1e3);
            }
            if !store_delays.is_empty() {
                r.store_max_ms = store_delays.iter().copied().reduce(f64::max);
                r.store_p50_ms = Some(median(&mut store_delays));
            }
            r.update_max_ms = delays.iter().copied().reduce(f64::max);
            r.update_p50_ms = Some(median(&mut delays));
            r.one_node = Some(
                scrape_cost::one_node_changed(client, ex.addr(), fake, cluster, pid, o.trials)
                    .await?,
            );

            // e. watch traffic under node status churn: every node once per 5 minutes
            // unless --churn-rate says otherwise. Meanwhile, one node at a time of
            // the probes' own (one in fifty, which the churn leaves alone) reports
            // one or two images fewer, and the time until /metrics shows it is
            // recorded.
            let rate = o.churn_rate.unwrap_or(sc.nodes as f64 / 300.0);
            let b0 = fake.bytes_served();
            let c0 = cpu_seconds(pid);
            let t = Instant::now();
            let churn = Churn::start(fake.clone(), cluster.clone(), rate, false);
            let window = Duration::from_secs(o.churn_secs);
            let probe_nodes: Vec<usize> = (0..sc.nodes)
                .filter(|&i| is_probe_node(i) && cluster.profile(i).eligible())
                .collect();
            let mut probes = Vec::new();
            let mut probe = 0usize;
            let n = sc.nodes;
            let mut last_body = String::new();
            while t.elapsed() < window {
                if r.churn_rss_early_mib.is_none() && t.elapsed() >= window.mul_f64(0.2) {
                    r.churn_rss_early_mib = Some(proc_status(pid).0);
                    r.churn_interned_early = interned(&last_body);
                }
                // The probes' own nodes, which the churn leaves alone: a probe is
                // never overwritten by a churn update before it shows, however late.
                let Some(&i) = probe_nodes.get(probe % probe_nodes.len().max(1)) else {
                    break;
                };
                // Each visit of a node changes its count: one image fewer, then
                // two, then one...
                let drop = 1 + (probe / probe_nodes.len()) % 2;
                probe += 1;
                let name = cluster.node_name(i);
                let generation = 1 + probe as u64;
                let want = format!(
                    "imagecap_node_images{{node=\"{name}\"}} {}",
                    cluster.image_count(i) - drop
                );
                let start = Instant::now();
                fake.apply(cluster.node_with(i, generation, drop));
                loop {
                    let body = scrape(client, ex.addr()).await?;
                    let seen = body.lines().any(|l| l == want);
                    last_body = body;
                    if seen {
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(60) {
                        let log = ex.process.log_text();
                        let tail: Vec<&str> = log.lines().rev().take(20).collect();
                        // What the exporter shows of the node and of its sources,
                        // and where the churn is.
                        let shown: Vec<&str> = last_body
                            .lines()
                            .filter(|l| {
                                l.contains(&format!("node=\"{name}\"}}"))
                                    && l.starts_with("imagecap_node_images")
                                    || l.starts_with("imagecap_kube_requests_total")
                                    || l.starts_with("imagecap_source_errors_total")
                                        && !l.ends_with(" 0")
                                    || l.starts_with("imagecap_last_update_timestamp_seconds")
                            })
                            .collect();
                        return Err(format!(
                            "{label}: {want:?} not visible under churn after 60 s \
                             ({} probes seen before; node {i}, churn at update {} of \
                             {n} a round, {} s into the window); /metrics shows:\n{}\n\
                             the exporter's last log lines:\n{}",
                            probes.len(),
                            churn.updates(),
                            t.elapsed().as_secs(),
                            shown.join("\n"),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        ));
                    }
                }
                probes.push(start.elapsed().as_secs_f64() * 1e3);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r.churn_rss_late_mib = Some(proc_status(pid).0);
            r.churn_interned_late = interned(&last_body);
            r.churn_probes = probes.len();
            if !probes.is_empty() {
                probes.sort_by(|a, b| a.total_cmp(b));
                r.churn_visible_p50_ms = Some(percentile(&probes, 50.0));
                r.churn_visible_p99_ms = Some(percentile(&probes, 99.0));
            }
            let updates = churn.finish()?;
            // Let the last events through before reading the counter.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let window = t.elapsed().as_secs_f64();
            r.churn_updates = updates;
            r.churn_window_s = window;
            r.churn_cpu_pct = Some((cpu_seconds(pid) - c0) / window * 100.0);
            r.bytes_per_hour_mb = (fake.bytes_served() - b0) as f64 * 3600.0 / window / 1e6;
            if let Some(every) = o.scrape_every {
                println!(
                    "    churn with a scrape every {} s ...",
                    every.as_secs_f64()
                );
                r.paced = Some(
                    scrape_cost::paced_churn(
                        client,
                        ex.addr(),
                        fake,
                        cluster,
                        pid,
                        rate,
                        every,
                        Duration::from_secs(o.churn_secs),
                    )
                    .await?,
                );
            }
            ex.check_alive()?;
        }
        Mode::Poll => {
            // e. one list per poll, 60 polls an hour at the default --poll-interval.
            r.bytes_per_hour_mb = list_bytes as f64 * 60.0 / 1e6;
            if o.second_poll {
                // Wait for the second list (60 s after the first) to see RSS after it.
                let b0 = fake.bytes_served();
                let start = Instant::now();
                while fake.bytes_served() < b0 + list_bytes {
                    ex.check_alive()?;
                    if start.elapsed() > Duration::from_secs(180) {
                        return Err(format!("{label}: no second poll within 180 s"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    (r.rss_end_mib, r.hwm_end_mib) = proc_status(pid);
    ex.check_alive()?;
    drop(ex);
    println!(
        "    ready {:.2} s, steady RSS {:.1} MiB, peak {:.1} MiB, /metrics p50 {:.1} ms (load average {})",
        r.ready_s,
        r.rss_steady_mib,
        r.hwm_end_mib,
        r.scrape_p50_ms,
        loadavg()
    );
    Ok(r)
}

/// Wall time and peak RSS (GNU time's `%M`: the largest process's, MiB) of a
/// command run to completion, with its output in `out`. Through /usr/bin/time, so
/// that the peak is not the benchmark's own, which a forked child inherits.
fn run_measured(
    program: &Path,
    args: &[&OsStr],
    kubeconfig: &Path,
    out: &Path,
    ok_codes: &[i32],
) -> Result<(f64, f64), String> {
    let file = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let stats = out.with_extension("time");
    let start = Instant::now();
    let result = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&stats)
        .arg(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(file)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("/usr/bin/time {program:?}: {e}"))?;
    let wall = start.elapsed().as_secs_f64();
    let code = result.status.code().unwrap_or(-1);
    if !ok_codes.contains(&code) {
        let err = String::from_utf8_lossy(&result.stderr);
        return Err(format!(
            "{program:?} exited {code}: {}",
            &err[err.len().saturating_sub(1500)..]
        ));
    }
    let kib: f64 = std::fs::read_to_string(&stats)
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse().ok())
        .ok_or("no %M from /usr/bin/time")?;
    Ok((wall, kib / 1024.0))
}

/// `check` side by side with what Nublado's prepuller does (kubernetes_asyncio,
/// one list_node) and `kubectl get nodes -o json | jq`, on the same nodes from the
/// same fake API server, one after the other (benches/peers/).
fn measure_peers(kubeconfig: &Path, config: &Path, dir: &Path) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let out = dir.join("peer-output");
    let config_arg = config.as_os_str();
    let (check_s, check_mib) = run_measured(
        Path::new(EXPORTER),
        &[
            OsStr::new("check"),
            OsStr::new("--format"),
            OsStr::new("json"),
            OsStr::new("--config"),
            config_arg,
        ],
        kubeconfig,
        &out,
        &[0, 1],
    )?;
    println!(
        "  peers: imagecap-exporter check: {check_s:.2} s, peak RSS {check_mib:.1} MiB (load average {})",
        loadavg()
    );
    let prepuller = root.join("benches/peers/prepuller.py");
    let kubectl = root.join("benches/peers/kubectl-jq.sh");
    let mut peers: Vec<(&str, PathBuf, Vec<&OsStr>)> = Vec::new();
    if python.exists() {
        peers.push((
            "Nublado prepuller (kubernetes_asyncio list_node)",
            python.clone(),
            vec![prepuller.as_os_str()],
        ));
    } else {
        println!("  peers: no .venv (make test sets it up): prepuller skipped");
    }
    peers.push((
        "kubectl get nodes -o json | jq",
        PathBuf::from("/bin/sh"),
        vec![kubectl.as_os_str()],
    ));
    for (name, program, args) in peers {
        match run_measured(&program, &args, kubeconfig, &out, &[0]) {
            Ok((s, mib)) => {
                let seen = std::fs::read_to_string(&out).unwrap_or_default();
                println!(
                    "  peers: {name}: {s:.2} s ({:.1}x check), peak RSS {mib:.1} MiB ({:.1}x check); printed {:?} (nodes, image names)",
                    s / check_s,
                    mib / check_mib,
                    seen.trim()
                );
            }
            Err(e) => println!("  peers: {name}: failed: {e}"),
        }
    }
    Ok(())
}

/// `check --nodes-file` on the same nodes written as `kubectl get nodes -o json`
/// would: wall time, peak RSS and the file's size, for the `--names` setting.
fn measure_check_file(
    cluster: &Cluster,
    config: &Path,
    dir: &Path,
    names: crate::nodegen::Names,
) -> Result<(), String> {
    let file = dir.join("nodes-file.json");
    let bytes = {
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        let mut w = std::io::BufWriter::new(f);
        let n = cluster.write_node_list(&mut w).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
        n
    };
    let (s, mib) = run_measured(
        Path::new(EXPORTER),
        &[
            OsStr::new("check"),
            OsStr::new("--format"),
            OsStr::new("json"),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--nodes-file"),
            file.as_os_str(),
        ],
        Path::new("/dev/null"),
        &dir.join("check-file-output"),
        &[0, 1],
    )?;
    let file_mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "  check --nodes-file ({} names): {s:.2} s, peak RSS {mib:.1} MiB for a {file_mib:.1} MiB file \
         ({:.2}x the file; the budget 2x + 32 MiB is {:.1} MiB) (load average {})",
        names.as_str(),
        mib / file_mib,
        2.0 * file_mib + 32.0,
        loadavg()
    );
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// The 1-minute load average: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores, {model}, {mem} memory")
}
