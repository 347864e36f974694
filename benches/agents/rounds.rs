//! The rounds: the fleet and the fake API server up, the release exporter reading
//! them, and what each round cost.

use crate::fake_apiserver::FakeApiServer;
use crate::fleet::{Fleet, Tally, runtime_images};
use crate::nodegen::Cluster;
use crate::process::{ExporterProcess, cpu_seconds, kubeconfig, proc_status};
use crate::{Args, EXPORTER};
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

/// The images a node's kubelet reports at its default `nodeStatusMaxImages`.
const KUBELET_CAP: usize = 50;
/// Longest wait for one round.
const ROUND_DEADLINE: Duration = Duration::from_secs(300);

/// One agent's EndpointSlice: its node, on its own port.
fn endpoint_slice(i: usize, node: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("imagecap-agent-{i:05}"), "namespace": "imagecap",
                     "labels": {"kubernetes.io/service-name": "imagecap-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-metrics", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": node,
                       "conditions": {"ready": true, "serving": true, "terminating": false}}]
    })
}

/// What one round cost.
struct Round {
    name: &'static str,
    read: u64,
    tally: Tally,
    cpu: f64,
    rss: f64,
    hwm: f64,
    threads: u64,
    wall: f64,
}

/// The threads of process `pid`.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = status.lines().find_map(|l| l.strip_prefix("Threads:"));
    field.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The exporter's log, read line by line as it grows.
struct Log<'a> {
    exporter: &'a mut ExporterProcess,
    seen: usize,
}

impl Log<'_> {
    /// Waits for the end of the exporter's next round of agent reads: how many
    /// agents it tried and how many it read.
    fn next_round(&mut self) -> Result<(u64, u64), String> {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = {
                let logs = self.exporter.logs.lock().unwrap();
                logs[self.seen..].to_vec()
            };
            for line in lines {
                self.seen += 1;
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "read the node agents" {
                    let field = |k: &str| v["fields"][k].as_u64().unwrap_or(0);
                    return Ok((field("agents"), field("read")));
                }
            }
            if let Some(status) = self.exporter.exited() {
                return Err(format!("the exporter exited with {status}"));
            }
            if start.elapsed() > ROUND_DEADLINE {
                return Err("no round of agent reads ended within 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Log<'_> {
    /// Waits for the end of the next round, which must have tried `all` agents;
    /// returns how many it read.
    fn whole_round(&mut self, all: u64) -> Result<u64, String> {
        match self.next_round()? {
            (n, read) if n == all => Ok(read),
            (n, _) => Err(format!("a round tried {n} agents, not {all}")),
        }
    }
}

/// The fake API server with the cluster's Nodes, each reporting the kubelet's
/// default cap of its largest images.
async fn api_server(cluster: &Cluster) -> FakeApiServer {
    let fake = FakeApiServer::start(Vec::new()).await;
    for i in 0..cluster.nodes {
        let beyond_cap = cluster.image_count(i).saturating_sub(KUBELET_CAP);
        fake.apply(cluster.node_with(i, 0, beyond_cap));
    }
    // Lists start from a resourceVersion with no history behind it.
    fake.compact();
    fake.apply(cluster.node_with(0, 0, cluster.image_count(0).saturating_sub(KUBELET_CAP)));
    fake
}

fn start_exporter(
    args: &Args,
    dir: &std::path::Path,
    fake: &FakeApiServer,
    cluster: &Cluster,
) -> Result<ExporterProcess, String> {
    let kc = kubeconfig(dir, &fake.url());
    let config = dir.join("config.yaml");
    std::fs::write(&config, cluster.config_yaml()).map_err(|e| e.to_string())?;
    let concurrency = args.concurrency.to_string();
    let flags: Vec<&OsStr> = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--agents"),
        OsStr::new("imagecap/imagecap-agent"),
        OsStr::new("--agents-interval"),
        OsStr::new(&args.interval),
        OsStr::new("--agents-concurrency"),
        OsStr::new(&concurrency),
        // The agents read their runtime once, at the start.
        OsStr::new("--agents-max-age"),
        OsStr::new("1h"),
    ]
    .to_vec();
    let log = "info,imagecap_exporter::nodes::agents=debug";
    let envs = [
        (OsStr::new("KUBECONFIG"), kc.as_os_str()),
        (OsStr::new("RUST_LOG"), OsStr::new(log)),
    ]
    .into_iter()
    .chain(
        args.exporter_env
            .iter()
            .map(|(k, v)| (OsStr::new(k), OsStr::new(v))),
    );
    ExporterProcess::start(EXPORTER, &flags, envs)
}

async fn wait_ready(addr: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let r = client.get(format!("http://{addr}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        if start.elapsed() > ROUND_DEADLINE {
            return Err("the exporter was not ready within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends a round: what the agents and the exporter's /proc say since `since`.
fn measure(
    name: &'static str,
    read: u64,
    pid: u32,
    fleet: &Fleet,
    since: &mut (Tally, f64, Instant),
) -> Round {
    let (tally, cpu, at) = (fleet.counters.tally(), cpu_seconds(pid), Instant::now());
    let (rss, hwm) = proc_status(pid);
    let round = Round {
        name,
        read,
        tally: tally - since.0,
        cpu: cpu - since.1,
        rss,
        hwm,
        threads: threads(pid),
        wall: (at - since.2).as_secs_f64(),
    };
    *since = (tally, cpu, at);
    round
}

/// What the exporter holds interned, from a scrape (which comes after the
/// rounds' figures: a scrape builds the report).
async fn interned(addr: &str) -> String {
    let url = format!("http://{addr}/metrics");
    let Ok(r) = reqwest::get(url).await else {
        return "no scrape".into();
    };
    let text = r.text().await.unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("imagecap_interned{"))
        .collect();
    lines.join(", ")
}

pub async fn run(args: &Args) -> Result<(), String> {
    let cluster = Cluster::new(args.nodes, args.images, args.seed);
    let t = Instant::now();
    let fleet = Fleet::start(&cluster).await?;
    println!(
        "{} agents x {} runtime images up in {:.1} s: {:.1} MB of JSON in all, {:.0} KB per agent",
        cluster.nodes,
        cluster.images,
        t.elapsed().as_secs_f64(),
        fleet.json_bytes as f64 / 1e6,
        fleet.json_bytes as f64 / 1e3 / cluster.nodes as f64
    );
    let fake = api_server(&cluster).await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut exporter = start_exporter(args, dir.path(), &fake, &cluster)?;
    wait_ready(&exporter.addr).await?;
    let pid = exporter.pid();
    let mut log = Log {
        exporter: &mut exporter,
        seen: 0,
    };
    // A round with no agents yet: the Nodes are in, the slices come next.
    log.next_round()?;
    let (rss, hwm) = proc_status(pid);
    println!(
        "exporter ready with the {} Nodes, no agent yet: RSS {rss:.1} MiB, peak {hwm:.1} MiB",
        cluster.nodes
    );
    let mut since = (fleet.counters.tally(), cpu_seconds(pid), Instant::now());
    for (i, port) in fleet.ports.iter().enumerate() {
        fake.apply_object(
            "endpointslices",
            endpoint_slice(i, &cluster.node_name(i), *port),
        );
    }
    let all = cluster.nodes as u64;
    let mut rounds = Vec::new();
    let read = loop {
        match log.next_round()? {
            (0, _) => continue,
            (n, read) if n == all => break read,
            (n, _) => {
                return Err(format!(
                    "a round started with {n} of {all} agents discovered: use a longer --interval"
                ));
            }
        }
    };
    rounds.push(measure("first", read, pid, &fleet, &mut since));
    for _ in 0..args.unchanged_rounds {
        let read = log.whole_round(all)?;
        rounds.push(measure("unchanged", read, pid, &fleet, &mut since));
    }
    let changed = ((cluster.nodes as f64 * args.changed_percent / 100.0).ceil() as usize)
        .clamp(1, cluster.nodes);
    let stride = cluster.nodes / changed;
    for k in 0..changed {
        fleet.change(&cluster, k * stride, 1);
    }
    let read = log.whole_round(all)?;
    rounds.push(measure("changed", read, pid, &fleet, &mut since));
    let interned = interned(&exporter.addr).await;
    // The exporter stops before the agent's memory is measured.
    drop(exporter);
    print_rounds(args, &rounds, changed);
    println!("exporter after the rounds (one scrape later): {interned}");
    let full = (0..cluster.nodes)
        .find(|&i| cluster.image_count(i) == cluster.images)
        .unwrap_or(0);
    let memory = crate::cri::measure_agent(
        EXPORTER,
        runtime_images(&cluster, full, 0),
        Duration::from_secs(10),
    )
    .await?;
    print_agent(&memory);
    Ok(())
}

fn print_rounds(args: &Args, rounds: &[Round], changed: usize) {
    println!(
        "\nexporter `serve --agents`, --agents-concurrency {}, --agents-interval {} ({} changed agents in round `changed`)",
        args.concurrency, args.interval, changed
    );
    println!(
        "| round | agents read | 200 / 304 / other | connections | bytes moved | per agent | exporter CPU | RSS | peak RSS | threads | wall (interval included) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rounds {
        let t = &r.tally;
        println!(
            "| {} | {} | {} / {} / {} | {} | {:.2} MB | {:.0} B | {:.2} s | {:.1} MiB | {:.1} MiB | {} | {:.1} s |",
            r.name,
            r.read,
            t.full,
            t.not_modified,
            t.other,
            t.connections,
            t.bytes as f64 / 1e6,
            t.bytes as f64 / r.read.max(1) as f64,
            r.cpu,
            r.rss,
            r.hwm,
            r.threads,
            r.wall
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let unchanged: Vec<&Round> = rounds.iter().filter(|r| r.name == "unchanged").collect();
    let (Some(first), Some(changed_round)) = (rounds.first(), rounds.last()) else {
        return;
    };
    let mut cpu: Vec<f64> = unchanged.iter().map(|r| r.cpu).collect();
    cpu.sort_by(f64::total_cmp);
    let Some(&median_cpu) = cpu.get(cpu.len() / 2) else {
        return;
    };
    let bytes = unchanged.iter().map(|r| r.tally.bytes).max().unwrap_or(0);
    println!(
        "\nunchanged rounds: at most {:.2} MB (target < 5 MB: {}), CPU median {:.2} s of {} rounds \
         (target < 0.2 s: {}); {:.1}x fewer bytes than the first round",
        bytes as f64 / 1e6,
        verdict(bytes < 5_000_000),
        median_cpu,
        cpu.len(),
        verdict(median_cpu < 0.2),
        first.tally.bytes as f64 / bytes.max(1) as f64
    );
    println!(
        "changed round: {:.2} MB, CPU {:.2} s; exporter peak RSS {:.1} MiB (target < 96 MiB: {})",
        changed_round.tally.bytes as f64 / 1e6,
        changed_round.cpu,
        changed_round.hwm,
        verdict(changed_round.hwm < 96.0)
    );
}

fn print_agent(m: &crate::cri::AgentMemory) {
    println!(
        "\nreal agent (`agent --interval 1s`, a CRI server with {} images, {:.0} KB answer, {} x (gzip read + 304)): \
         RSS {:.1} MiB, peak RSS {:.1} MiB (target < 16 MiB: {})",
        m.images,
        m.json_bytes as f64 / 1e3,
        m.readings,
        m.rss_mib,
        m.hwm_mib,
        if m.hwm_mib < 16.0 { "met" } else { "MISSED" }
    );
}
