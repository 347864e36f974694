//! What scrapes cost while nodes change: the CPU of the first scrape after one
//! node changed, and scrapes at Prometheus' pace under node churn.

use crate::fake_apiserver::FakeApiServer;
use crate::nodegen::Cluster;
use crate::process::cpu_seconds;
use crate::scraping::{Churn, percentile, scrape_timed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a change is given to reach the exporter's store before the scrape
/// that shows it (the event is in the store within a few milliseconds).
const SETTLE: Duration = Duration::from_millis(400);

/// The first scrape after one node changed, over several trials.
#[derive(Clone, Debug, Default)]
pub struct OneNodeChanged {
    pub trials: usize,
    /// The exporter's CPU during the scrape (all threads, from its CPU clock).
    pub cpu_p50_ms: f64,
    pub cpu_max_ms: f64,
    /// The same from /proc/PID/stat (utime + stime, in clock ticks), averaged
    /// over the trials.
    pub stat_cpu_mean_ms: f64,
    /// The scrape's wall time, request to body received.
    pub wall_p50_ms: f64,
    /// The exporter's CPU from the change to the end of the scrape: the event
    /// decoded, and the report and its text made, ahead of the scrape or in it.
    pub change_cpu_p50_ms: f64,
    pub change_cpu_max_ms: f64,
}

/// Node churn with a scrape every `every`, nothing else scraping.
#[derive(Clone, Debug, Default)]
pub struct PacedChurn {
    pub every_s: f64,
    pub window_s: f64,
    pub updates: u64,
    pub scrapes: usize,
    pub scrape_p50_ms: f64,
    pub scrape_p99_ms: f64,
    pub scrape_max_ms: f64,
    /// The exporter's CPU over the window, as a share of one core (%).
    pub cpu_pct: f64,
}

/// The CPU time of process `pid`, all its threads, from its CPU-time clock
/// (nanoseconds, where /proc/PID/stat counts clock ticks).
pub fn cpu_clock_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both are plain out-parameters of the right types.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut ts) == 0
    };
    if ok {
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    } else {
        cpu_seconds(pid)
    }
}

/// `trials` times: one eligible node reports one image fewer (or two), the event
/// is given [`SETTLE`] to reach the store, and one scrape is made, the
/// exporter's CPU read just before and just after it, and just before the
/// change. Nothing else scrapes or changes meanwhile.
pub async fn one_node_changed(
    client: &reqwest::Client,
    addr: &str,
    fake: &FakeApiServer,
    cluster: &Cluster,
    pid: u32,
    trials: usize,
) -> Result<OneNodeChanged, String> {
    let eligible: Vec<usize> = (0..cluster.nodes)
        .filter(|&i| cluster.profile(i).eligible())
        .collect();
    let (mut cpu, mut wall, mut stat) = (Vec::new(), Vec::new(), 0.0);
    let mut whole = Vec::new();
    for t in 0..trials {
        let i = eligible[(t * 104_729 + 13) % eligible.len().max(1)];
        let drop = 1 + t % 2;
        let want = format!(
            "imagecap_node_images{{node=\"{}\"}} {}",
            cluster.node_name(i),
            cluster.image_count(i) - drop
        );
        let before = cpu_clock_seconds(pid);
        fake.apply(cluster.node_with(i, 2 + t as u64, drop));
        tokio::time::sleep(SETTLE).await;
        let (c0, s0) = (cpu_clock_seconds(pid), cpu_seconds(pid));
        let (body, received, _) = scrape_timed(client, addr).await?;
        let (c1, s1) = (cpu_clock_seconds(pid), cpu_seconds(pid));
        if !body.lines().any(|l| l == want) {
            let name = format!("imagecap_node_images{{node=\"{}\"}}", cluster.node_name(i));
            let shown: Vec<&str> = body.lines().filter(|l| l.starts_with(&name)).collect();
            return Err(format!(
                "{want:?} not on /metrics {} ms after the change; it shows {shown:?}",
                SETTLE.as_millis()
            ));
        }
        cpu.push((c1 - c0) * 1e3);
        whole.push((c1 - before) * 1e3);
        stat += (s1 - s0) * 1e3;
        wall.push(received.as_secs_f64() * 1e3);
    }
    for v in [&mut cpu, &mut wall, &mut whole] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    Ok(OneNodeChanged {
        trials,
        cpu_p50_ms: percentile(&cpu, 50.0),
        cpu_max_ms: cpu.last().copied().unwrap_or(0.0),
        stat_cpu_mean_ms: stat / trials.max(1) as f64,
        wall_p50_ms: percentile(&wall, 50.0),
        change_cpu_p50_ms: percentile(&whole, 50.0),
        change_cpu_max_ms: whole.last().copied().unwrap_or(0.0),
    })
}

/// Node churn at `rate` updates a second for `window`, each update changing the
/// node's images (so that each is a change to analyze and render, not a
/// heartbeat the store ignores), with one scrape every `every` and nothing else
/// scraping: the scrapes' wall times and the exporter's CPU share over the window.
#[allow(clippy::too_many_arguments)]
pub async fn paced_churn(
    client: &reqwest::Client,
    addr: &str,
    fake: &FakeApiServer,
    cluster: &Arc<Cluster>,
    pid: u32,
    rate: f64,
    every: Duration,
    window: Duration,
) -> Result<PacedChurn, String> {
    let c0 = cpu_clock_seconds(pid);
    let t = Instant::now();
    let churn = Churn::start(fake.clone(), cluster.clone(), rate, true);
    let mut times = Vec::new();
    let mut next = t + every;
    while next <= t + window {
        tokio::time::sleep_until(next.into()).await;
        let (_, received, _) = scrape_timed(client, addr).await?;
        times.push(received.as_secs_f64() * 1e3);
        next += every;
    }
    if let Some(rest) = (t + window).checked_duration_since(Instant::now()) {
        tokio::time::sleep(rest).await;
    }
    let window_s = t.elapsed().as_secs_f64();
    let cpu = cpu_clock_seconds(pid) - c0;
    let updates = churn.finish()?;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(PacedChurn {
        every_s: every.as_secs_f64(),
        window_s,
        updates,
        scrapes: times.len(),
        scrape_p50_ms: percentile(&times, 50.0),
        scrape_p99_ms: percentile(&times, 99.0),
        scrape_max_ms: times.last().copied().unwrap_or(0.0),
        cpu_pct: cpu / window_s * 100.0,
    })
}

/// The figures as rows of the printed table, one column per run.
pub fn rows(
    runs: &[(Option<&OneNodeChanged>, Option<&PacedChurn>)],
) -> Vec<(&'static str, Vec<String>)> {
    let one = |f: fn(&OneNodeChanged) -> String| {
        runs.iter()
            .map(|(o, _)| o.map_or_else(|| "-".to_string(), f))
            .collect()
    };
    let paced = |f: fn(&PacedChurn) -> String| {
        runs.iter()
            .map(|(_, p)| p.map_or_else(|| "-".to_string(), f))
            .collect()
    };
    vec![
        (
            "one node changed: scrape CPU p50 (ms)",
            one(|o| format!("{:.1}", o.cpu_p50_ms)),
        ),
        (
            "  scrape CPU max (ms)",
            one(|o| format!("{:.1}", o.cpu_max_ms)),
        ),
        (
            "  utime+stime, mean (ms)",
            one(|o| format!("{:.1}", o.stat_cpu_mean_ms)),
        ),
        (
            "  scrape wall p50 (ms)",
            one(|o| format!("{:.1}", o.wall_p50_ms)),
        ),
        (
            "  CPU from the change, p50 (ms)",
            one(|o| format!("{:.1}", o.change_cpu_p50_ms)),
        ),
        (
            "  CPU from the change, max (ms)",
            one(|o| format!("{:.1}", o.change_cpu_max_ms)),
        ),
        ("  trials", one(|o| o.trials.to_string())),
        (
            "paced churn: scrape every (s)",
            paced(|p| format!("{:.0}", p.every_s)),
        ),
        (
            "  window (s) / updates",
            paced(|p| format!("{:.0} / {}", p.window_s, p.updates)),
        ),
        ("  scrapes", paced(|p| p.scrapes.to_string())),
        (
            "  scrape p50 (ms)",
            paced(|p| format!("{:.1}", p.scrape_p50_ms)),
        ),
        (
            "  scrape p99 (ms)",
            paced(|p| format!("{:.1}", p.scrape_p99_ms)),
        ),
        (
            "  scrape max (ms)",
            paced(|p| format!("{:.1}", p.scrape_max_ms)),
        ),
        (
            "  exporter CPU (% of a core)",
            paced(|p| format!("{:.1}", p.cpu_pct)),
        ),
    ]
}

/// The figures as JSON.
pub fn json(one: Option<&OneNodeChanged>, paced: Option<&PacedChurn>) -> serde_json::Value {
    serde_json::json!({
        "one_node_changed": one.map(|o| serde_json::json!({
            "trials": o.trials, "cpu_p50_ms": o.cpu_p50_ms, "cpu_max_ms": o.cpu_max_ms,
            "stat_cpu_mean_ms": o.stat_cpu_mean_ms, "wall_p50_ms": o.wall_p50_ms,
            "change_cpu_p50_ms": o.change_cpu_p50_ms, "change_cpu_max_ms": o.change_cpu_max_ms,
        })),
        "paced_churn": paced.map(|p| serde_json::json!({
            "scrape_every_s": p.every_s, "window_s": p.window_s, "updates": p.updates,
            "scrapes": p.scrapes, "scrape_p50_ms": p.scrape_p50_ms,
            "scrape_p99_ms": p.scrape_p99_ms, "scrape_max_ms": p.scrape_max_ms,
            "cpu_pct": p.cpu_pct,
        })),
    })
}
