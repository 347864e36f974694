//! Scale benchmark: the release exporter against a fake API server on loopback.
//!
//! `cargo bench --bench scale` runs 5,000 nodes x 100 and x 500 images, in watch and
//! poll mode (about 9 minutes on 2 cores, and about 11 GiB of memory for the fake API
//! server); `-- --quick` runs 200 x 50 in about 20 s. Cargo builds the exporter binary
//! in the bench (release) profile first.
//! See docs/performance.md for what is measured and the results.
//!
//! Other uses:
//!   cargo bench --bench scale -- --write-nodelist /tmp/nodes.json --nodes 100 --images 50 \
//!       [--write-config /tmp/config.yaml] [--seed 42]
//!   cargo bench --bench scale -- --nodes 1000 --images 100 --modes watch --json out.json
//!   cargo bench --bench scale -- --nodes 5000 --images 100 --exporter-env MALLOC_ARENA_MAX=1
//!   cargo bench --bench scale -- --hold-fake /tmp/fake --nodes 5000 --images 100

#[path = "../tests/support/fake_apiserver.rs"]
#[allow(dead_code)]
mod fake_apiserver;
#[path = "support/gen.rs"]
#[allow(dead_code)]
mod nodegen;

use fake_apiserver::FakeApiServer;
use imagecap_exporter::analysis::NodeView;
use k8s_openapi::api::core::v1::Node;
use nodegen::Cluster;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXPORTER: &str = env!("CARGO_BIN_EXE_imagecap-exporter");
const PAGE_SIZE: usize = 500;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
/// Upper bound for any single wait.
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Watch,
    Poll,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Watch => "watch",
            Mode::Poll => "poll",
        }
    }
}

#[derive(Debug)]
struct Args {
    quick: bool,
    nodes: Option<usize>,
    images: Option<usize>,
    modes: Vec<Mode>,
    seed: u64,
    write_nodelist: Option<PathBuf>,
    write_config: Option<PathBuf>,
    json: Option<PathBuf>,
    scrapes: usize,
    trials: usize,
    steady_secs: u64,
    churn_secs: Option<u64>,
    floor_runs: usize,
    exporter_env: Vec<(String, String)>,
    hold_fake: Option<PathBuf>,
    hold_secs: u64,
}

const USAGE: &str = "usage: cargo bench --bench scale -- [--quick] [--nodes N --images M] \
[--modes watch,poll] [--seed S] [--scrapes N] [--trials N] [--steady-secs S] [--churn-secs S] \
[--floor-runs N] [--exporter-env K=V]... [--json FILE] \
| --write-nodelist FILE [--write-config FILE] --nodes N --images M \
| --hold-fake DIR --nodes N --images M [--hold-secs S]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        nodes: None,
        images: None,
        modes: vec![Mode::Watch, Mode::Poll],
        seed: 42,
        write_nodelist: None,
        write_config: None,
        json: None,
        scrapes: 100,
        trials: 20,
        steady_secs: 5,
        churn_secs: None,
        floor_runs: 3,
        exporter_env: Vec::new(),
        hold_fake: None,
        hold_secs: 900,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("bad number {v:?}: {e}"))
        };
        match flag.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--quick" => a.quick = true,
            "--nodes" => a.nodes = Some(num(value()?)? as usize),
            "--images" => a.images = Some(num(value()?)? as usize),
            "--seed" => a.seed = num(value()?)?,
            "--scrapes" => a.scrapes = num(value()?)?.max(1) as usize,
            "--trials" => a.trials = num(value()?)?.max(1) as usize,
            "--steady-secs" => a.steady_secs = num(value()?)?,
            "--churn-secs" => a.churn_secs = Some(num(value()?)?.max(1)),
            "--floor-runs" => a.floor_runs = num(value()?)?.max(1) as usize,
            "--write-nodelist" => a.write_nodelist = Some(value()?.into()),
            "--write-config" => a.write_config = Some(value()?.into()),
            "--json" => a.json = Some(value()?.into()),
            "--hold-fake" => a.hold_fake = Some(value()?.into()),
            "--hold-secs" => a.hold_secs = num(value()?)?,
            "--exporter-env" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--exporter-env wants K=V, not {v:?}"))?;
                a.exporter_env.push((k.to_string(), val.to_string()));
            }
            "--modes" => {
                a.modes = value()?
                    .split(',')
                    .map(|m| match m {
                        "watch" => Ok(Mode::Watch),
                        "poll" => Ok(Mode::Poll),
                        _ => Err(format!("unknown mode {m:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            // Filters and flags cargo or criterion conventions may pass: ignored.
            other if !other.starts_with('-') => {}
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.write_nodelist.is_some() || args.write_config.is_some() {
        return match write_files(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("scale: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match args.hold_fake.clone() {
        Some(dir) => rt.block_on(hold_fake(&args, &dir)),
        None => rt.block_on(run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_files(args: &Args) -> Result<(), String> {
    let nodes = args.nodes.unwrap_or(100);
    let images = args.images.unwrap_or(50);
    let cluster = Cluster::new(nodes, images, args.seed);
    if let Some(path) = &args.write_nodelist {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let n = cluster
            .write_node_list(&mut w)
            .and_then(|n| w.flush().map(|()| n))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "wrote {} ({nodes} nodes x {images} images, seed {}, {:.1} MB)",
            path.display(),
            args.seed,
            n as f64 / 1e6
        );
    }
    if let Some(path) = &args.write_config {
        std::fs::write(path, cluster.config_yaml())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "wrote {} ({} wanted images)",
            path.display(),
            Cluster::WANTED
        );
    }
    Ok(())
}

/// Serves a generated cluster from the fake API server for `--hold-secs` seconds,
/// with a kubeconfig and a config written into `dir`: for profiling the exporter by
/// hand (heaptrack, perf, gdb) against the same data.
async fn hold_fake(args: &Args, dir: &Path) -> Result<(), String> {
    let cluster = Cluster::new(
        args.nodes.unwrap_or(5000),
        args.images.unwrap_or(100),
        args.seed,
    );
    let fake = FakeApiServer::start(Vec::new()).await;
    for i in 0..cluster.nodes {
        fake.apply(cluster.node(i, 0));
    }
    forget_history(&fake, &cluster);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    let config = dir.join("config.yaml");
    std::fs::write(&kubeconfig, kubeconfig_text(&fake.url())).map_err(|e| e.to_string())?;
    std::fs::write(&config, cluster.config_yaml()).map_err(|e| e.to_string())?;
    println!(
        "serving {} nodes x {} images at {} for {} s\n  KUBECONFIG={} {EXPORTER} serve --config {} ...",
        cluster.nodes,
        cluster.images,
        fake.url(),
        args.hold_secs,
        kubeconfig.display(),
        config.display()
    );
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Measurements

/// Downloading and decoding the node list without the exporter: the floor.
#[derive(Clone, Debug, Default)]
struct Floor {
    /// Download (the fake serializing included) + decode into k8s_openapi Node.
    total: Duration,
    download: Duration,
    decode_node: Duration,
    /// Decoding the same pages into the exporter's NodeView (information only).
    decode_view: Duration,
    bytes: u64,
    pages: usize,
    nodes: usize,
}

#[derive(Clone, Debug, Default)]
struct Run {
    scenario: String,
    mode: &'static str,
    nodes: usize,
    floor_s: f64,
    floor_download_s: f64,
    floor_decode_s: f64,
    floor_view_s: f64,
    ready_s: f64,
    ready_cpu_s: f64,
    rss_ready_mib: f64,
    rss_steady_mib: f64,
    hwm_steady_mib: f64,
    scrape_p50_ms: f64,
    scrape_p99_ms: f64,
    scrape_max_ms: f64,
    scrape_cpu_ms: f64,
    body_kib: f64,
    series: usize,
    wanted_seen: usize,
    rss_after_scrapes_mib: f64,
    update_p50_ms: Option<f64>,
    update_max_ms: Option<f64>,
    store_p50_ms: Option<f64>,
    store_max_ms: Option<f64>,
    list_mb: f64,
    bytes_per_hour_mb: f64,
    churn_updates: u64,
    churn_window_s: f64,
    churn_cpu_pct: Option<f64>,
    rss_end_mib: f64,
    hwm_end_mib: f64,
}

#[derive(serde::Deserialize)]
struct ViewList {
    items: Vec<NodeView>,
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
        let list: k8s_openapi::List<Node> =
            serde_json::from_slice(&body).map_err(|e| format!("decoding a NodeList: {e}"))?;
        f.decode_node += t1.elapsed();
        f.bytes += body.len() as u64;
        f.pages += 1;
        let page_nodes = list.items.len();
        f.nodes += page_nodes;
        token = list.metadata.continue_.clone().filter(|t| !t.is_empty());
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

/// /proc/<pid>/status fields, in MiB.
fn proc_status(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(v, 50.0)
}

// ---------------------------------------------------------------------------------
// The exporter process

/// Exporters running, for the memory guard to stop before it exits.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

struct Exporter {
    child: Child,
    addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Exporter {
    fn start(
        kubeconfig: &Path,
        config: &Path,
        mode: Mode,
        env: &[(String, String)],
    ) -> Result<Exporter, String> {
        let mut child = Command::new(EXPORTER)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(config)
            .args([
                "--mode",
                mode.as_str(),
                "--page-size",
                &PAGE_SIZE.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {EXPORTER}: {e}"))?;
        CHILDREN.lock().unwrap().push(child.id());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut e = Exporter {
            child,
            addr: String::new(),
            logs,
        };
        let start = Instant::now();
        while e.addr.is_empty() {
            if let Ok(Some(status)) = e.child.try_wait() {
                return Err(format!("exporter exited with {status}:\n{}", e.log_text()));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("no listen address logged:\n{}", e.log_text()));
            }
            for line in e.logs.lock().unwrap().iter() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && v["fields"]["message"] == "listening"
                {
                    e.addr = v["fields"]["addr"].as_str().unwrap_or_default().to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(e)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        let logs = self.logs.lock().unwrap();
        let from = logs.len().saturating_sub(40);
        logs[from..].join("\n")
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "exporter exited with {status}:\n{}",
                self.log_text()
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        CHILDREN.lock().unwrap().retain(|p| *p != pid);
    }
}

async fn scrape(client: &reqwest::Client, addr: &str) -> Result<String, String> {
    let r = client
        .get(format!("http://{addr}/metrics"))
        .header("Accept", OPENMETRICS)
        .send()
        .await
        .map_err(|e| format!("/metrics: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("/metrics answered {}", r.status()));
    }
    r.text().await.map_err(|e| format!("/metrics body: {e}"))
}

/// Drops the fake's event history, which holds a copy of every node applied (the
/// fake keeps whole `serde_json::Value`s: about 10 times the JSON size each), then
/// applies one node again so that lists report a resourceVersion that watches can
/// start from.
fn forget_history(fake: &FakeApiServer, cluster: &Cluster) {
    fake.compact();
    fake.apply(cluster.node(0, 0));
}

/// Stops the benchmark before it makes the machine swap or the OOM killer strike:
/// the fake API server holds the node list as `serde_json::Value`s, and 5,000 x 500
/// takes several GiB.
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

/// Node status churn: node after node gets a new heartbeat, `rate` per second, until
/// `stop`. Returns the updates applied.
fn start_churn(
    fake: FakeApiServer,
    cluster: Arc<Cluster>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let mut k: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = start + period.mul_f64(k as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
            let n = cluster.nodes as u64;
            fake.apply(cluster.node((k % n) as usize, 1 + k / n));
            k += 1;
        }
        k
    })
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

async fn run(args: Args) -> Result<(), String> {
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
        "seed {}, page size {PAGE_SIZE}, {scrapes} scrapes, {trials} update trials, churn window {churn_secs} s{}",
        args.seed,
        if args.quick { " (quick)" } else { "" }
    );

    start_memory_guard();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut runs: Vec<Run> = Vec::new();
    for sc in &scenarios {
        let cluster = Arc::new(Cluster::new(sc.nodes, sc.images, args.seed));
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
            "  floor (median of {floor_runs}): {:.3} s = download {:.3} s + decode into Node {:.3} s; \
             decoding into NodeView instead: {:.3} s",
            floor.total.as_secs_f64(),
            floor.download.as_secs_f64(),
            floor.decode_node.as_secs_f64(),
            floor.decode_view.as_secs_f64()
        );
        for &mode in &args.modes {
            let opts = RunOpts {
                exporter_env: args.exporter_env.clone(),
                steady_secs,
                scrapes,
                trials,
                churn_secs,
                second_poll: !args.quick,
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

    print_tables(&runs, args.quick);
    if let Some(path) = &args.json {
        let v = json!({
            "machine": machine(),
            "quick": args.quick,
            "seed": args.seed,
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

struct RunOpts {
    exporter_env: Vec<(String, String)>,
    steady_secs: u64,
    scrapes: usize,
    trials: usize,
    churn_secs: u64,
    second_poll: bool,
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
        floor_decode_s: floor.decode_node.as_secs_f64(),
        floor_view_s: floor.decode_view.as_secs_f64(),
        ..Run::default()
    };

    // a. time to ready
    let bytes_before = fake.bytes_served();
    let t0 = Instant::now();
    let mut ex = Exporter::start(kubeconfig, config, mode, &o.exporter_env)?;
    let pid = ex.pid();
    let readyz = format!("http://{}/readyz", ex.addr);
    loop {
        if let Ok(resp) = client.get(&readyz).send().await
            && resp.status().as_u16() == 200
        {
            break;
        }
        ex.check_alive()?;
        if t0.elapsed() > DEADLINE {
            return Err(format!("{label}: never ready:\n{}", ex.log_text()));
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

    // c. /metrics
    let mut times = Vec::with_capacity(o.scrapes);
    let mut body = String::new();
    let cpu0 = cpu_seconds(pid);
    for _ in 0..o.scrapes {
        let t = Instant::now();
        body = scrape(client, &ex.addr).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
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
                    let body = scrape(client, &ex.addr).await?;
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

            // e. watch traffic under node status churn: every node once per 5 minutes.
            let rate = sc.nodes as f64 / 300.0;
            let stop = Arc::new(AtomicBool::new(false));
            let b0 = fake.bytes_served();
            let c0 = cpu_seconds(pid);
            let t = Instant::now();
            let churn = start_churn(fake.clone(), cluster.clone(), rate, stop.clone());
            tokio::time::sleep(Duration::from_secs(o.churn_secs)).await;
            stop.store(true, Ordering::Relaxed);
            let updates = churn.join().map_err(|_| "churn thread panicked")?;
            // Let the last events through before reading the counter.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let window = t.elapsed().as_secs_f64();
            r.churn_updates = updates;
            r.churn_window_s = window;
            r.churn_cpu_pct = Some((cpu_seconds(pid) - c0) / window * 100.0);
            r.bytes_per_hour_mb = (fake.bytes_served() - b0) as f64 * 3600.0 / window / 1e6;
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

/// The 1-minute load average: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: bench\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: bench\n\
         current-context: fake\n"
    )
}

fn machine() -> String {
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

fn run_json(r: &Run) -> serde_json::Value {
    json!({
        "scenario": r.scenario, "mode": r.mode, "nodes": r.nodes,
        "floor_s": r.floor_s, "floor_download_s": r.floor_download_s,
        "floor_decode_node_s": r.floor_decode_s, "floor_decode_view_s": r.floor_view_s,
        "ready_s": r.ready_s, "ready_cpu_s": r.ready_cpu_s,
        "rss_ready_mib": r.rss_ready_mib, "rss_steady_mib": r.rss_steady_mib,
        "hwm_steady_mib": r.hwm_steady_mib, "rss_after_scrapes_mib": r.rss_after_scrapes_mib,
        "rss_end_mib": r.rss_end_mib, "hwm_end_mib": r.hwm_end_mib,
        "scrape_p50_ms": r.scrape_p50_ms, "scrape_p99_ms": r.scrape_p99_ms,
        "scrape_max_ms": r.scrape_max_ms, "scrape_cpu_ms": r.scrape_cpu_ms,
        "body_kib": r.body_kib, "series": r.series, "wanted_images": r.wanted_seen,
        "update_p50_ms": r.update_p50_ms, "update_max_ms": r.update_max_ms,
        "event_in_store_p50_ms": r.store_p50_ms, "event_in_store_max_ms": r.store_max_ms,
        "list_mb": r.list_mb, "bytes_per_hour_mb": r.bytes_per_hour_mb,
        "churn_updates": r.churn_updates, "churn_window_s": r.churn_window_s,
        "churn_cpu_pct": r.churn_cpu_pct,
    })
}

fn print_tables(runs: &[Run], quick: bool) {
    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {}", r.scenario, r.mode))
        .collect();
    let width = header.iter().map(|h| h.len()).max().unwrap_or(0).max(10);
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "time to ready (s)",
            runs.iter().map(|r| format!("{:.2}", r.ready_s)).collect(),
        ),
        (
            "decode floor (s)",
            runs.iter().map(|r| format!("{:.2}", r.floor_s)).collect(),
        ),
        (
            "  floor: download (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_download_s))
                .collect(),
        ),
        (
            "  floor: decode Node (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_decode_s))
                .collect(),
        ),
        (
            "  (decode NodeView (s))",
            runs.iter()
                .map(|r| format!("{:.2}", r.floor_view_s))
                .collect(),
        ),
        (
            "ready / floor",
            runs.iter()
                .map(|r| format!("{:.2}x", r.ready_s / r.floor_s))
                .collect(),
        ),
        (
            "CPU to ready (s)",
            runs.iter()
                .map(|r| format!("{:.2}", r.ready_cpu_s))
                .collect(),
        ),
        (
            "RSS at ready (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_ready_mib))
                .collect(),
        ),
        (
            "steady RSS (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_steady_mib))
                .collect(),
        ),
        (
            "RSS after scrapes (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_after_scrapes_mib))
                .collect(),
        ),
        (
            "RSS at end (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.rss_end_mib))
                .collect(),
        ),
        (
            "peak RSS (MiB)",
            runs.iter()
                .map(|r| format!("{:.1}", r.hwm_end_mib))
                .collect(),
        ),
        (
            "/metrics p50 (ms)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_p50_ms))
                .collect(),
        ),
        (
            "/metrics p99 (ms)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_p99_ms))
                .collect(),
        ),
        (
            "/metrics CPU (ms/scrape)",
            runs.iter()
                .map(|r| format!("{:.1}", r.scrape_cpu_ms))
                .collect(),
        ),
        (
            "/metrics body (KiB)",
            runs.iter().map(|r| format!("{:.0}", r.body_kib)).collect(),
        ),
        (
            "/metrics series",
            runs.iter().map(|r| r.series.to_string()).collect(),
        ),
        (
            "wanted images",
            runs.iter().map(|r| r.wanted_seen.to_string()).collect(),
        ),
        (
            "update visible p50 (ms)",
            runs.iter().map(|r| opt(r.update_p50_ms, 0)).collect(),
        ),
        (
            "update visible max (ms)",
            runs.iter().map(|r| opt(r.update_max_ms, 0)).collect(),
        ),
        (
            "  event in store p50 (ms)",
            runs.iter().map(|r| opt(r.store_p50_ms, 1)).collect(),
        ),
        (
            "  event in store max (ms)",
            runs.iter().map(|r| opt(r.store_max_ms, 1)).collect(),
        ),
        (
            "one list (MB)",
            runs.iter().map(|r| format!("{:.1}", r.list_mb)).collect(),
        ),
        (
            "API MB per hour",
            runs.iter()
                .map(|r| format!("{:.0}", r.bytes_per_hour_mb))
                .collect(),
        ),
        (
            "watch CPU under churn (%)",
            runs.iter().map(|r| opt(r.churn_cpu_pct, 1)).collect(),
        ),
    ];
    println!("\nRESULTS");
    let first = 26;
    print!("{:<first$}", "metric");
    for h in &header {
        print!("  {h:>width$}");
    }
    println!();
    for (name, values) in &rows {
        print!("{name:<first$}");
        for v in values {
            print!("  {v:>width$}");
        }
        println!();
    }

    println!(
        "\nTARGETS{}",
        if quick {
            " (quick scale: indicative only)"
        } else {
            ""
        }
    );
    println!(
        "{:<40}  {:<16}  {:>10}  {:>9}  RESULT",
        "target", "run", "measured", "limit"
    );
    let line = |target: &str, run: &Run, measured: String, limit: &str, met: bool| {
        println!(
            "{target:<40}  {:<16}  {measured:>10}  {limit:>9}  {}",
            format!("{} {}", run.scenario, run.mode),
            if met { "met" } else { "MISSED" }
        );
    };
    let big = |r: &Run| quick || r.nodes >= 5000;
    for r in runs {
        let ratio = r.ready_s / r.floor_s;
        line(
            "initial sync <= 2x decode floor",
            r,
            format!("{ratio:.2}x"),
            "2.00x",
            ratio <= 2.0,
        );
    }
    for r in runs.iter().filter(|r| quick || r.scenario == "5000x100") {
        line(
            "steady RSS < 64 MiB (5,000 x 100)",
            r,
            format!("{:.1} MiB", r.rss_steady_mib),
            "64 MiB",
            r.rss_steady_mib < 64.0,
        );
    }
    for r in runs.iter().filter(|r| big(r)) {
        line(
            "/metrics p50 < 50 ms (5,000 nodes)",
            r,
            format!("{:.1} ms", r.scrape_p50_ms),
            "50 ms",
            r.scrape_p50_ms < 50.0,
        );
    }
    for r in runs.iter().filter(|r| r.update_p50_ms.is_some()) {
        let p50 = r.update_p50_ms.unwrap_or(f64::NAN);
        line(
            "watch update visible < 1 s (median)",
            r,
            format!("{p50:.0} ms"),
            "1000 ms",
            p50 < 1000.0,
        );
    }
}
