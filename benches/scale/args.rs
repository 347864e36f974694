//! The benchmark's command line.

use crate::nodegen::Names;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Watch,
    Poll,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Watch => "watch",
            Mode::Poll => "poll",
        }
    }
}

#[derive(Debug)]
pub struct Args {
    pub quick: bool,
    pub nodes: Option<usize>,
    pub images: Option<usize>,
    pub modes: Vec<Mode>,
    pub seed: u64,
    pub write_nodelist: Option<PathBuf>,
    pub write_config: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub scrapes: usize,
    pub trials: usize,
    pub steady_secs: u64,
    pub churn_secs: Option<u64>,
    pub floor_runs: usize,
    pub exporter_env: Vec<(String, String)>,
    pub hold_fake: Option<PathBuf>,
    /// With --hold-fake: serve these objects (a JSON list of Nodes and
    /// EndpointSlices, DaemonSets, ImageCaches) instead of a generated cluster.
    pub hold_objects: Option<PathBuf>,
    pub hold_secs: u64,
    /// Node updates per second during the churn (default: every node once per 5 minutes).
    pub churn_rate: Option<f64>,
    /// Also time `check` against Nublado's prepuller and kubectl | jq on the same nodes.
    pub peers: bool,
    /// How many of the general images' names nodes share (`--names`).
    pub names: Names,
    /// Watch mode: after the churn with update probes, churn again (each update
    /// changing the node's images) with one scrape this often and no probes.
    pub scrape_every: Option<std::time::Duration>,
}

pub const USAGE: &str = "usage: cargo bench --bench scale -- [--quick] [--nodes N --images M] \
[--modes watch,poll] [--seed S] [--scrapes N] [--trials N] [--steady-secs S] [--churn-secs S] \
[--churn-rate R] [--scrape-every 15s] [--floor-runs N] [--peers] [--names shared|pool|distinct] [--exporter-env K=V]... [--json FILE] \
| --write-nodelist FILE [--write-config FILE] --nodes N --images M [--names ...] \
| --hold-fake DIR (--nodes N --images M [--names ...] | --objects FILE) [--hold-secs S]";

pub fn parse_args() -> Result<Args, String> {
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
        hold_objects: None,
        hold_secs: 900,
        churn_rate: None,
        peers: false,
        names: Names::Pool,
        scrape_every: None,
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
            "--churn-rate" => {
                let v = value()?;
                a.churn_rate = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|r| *r > 0.0)
                        .ok_or_else(|| format!("bad --churn-rate {v:?}"))?,
                )
            }
            "--peers" => a.peers = true,
            "--scrape-every" => {
                let v = value()?;
                a.scrape_every = Some(
                    humantime::parse_duration(&v)
                        .ok()
                        .or_else(|| {
                            v.parse::<f64>()
                                .ok()
                                .map(std::time::Duration::from_secs_f64)
                        })
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| format!("bad --scrape-every {v:?}"))?,
                )
            }
            "--names" => {
                let v = value()?;
                a.names = Names::parse(&v)
                    .ok_or_else(|| format!("--names is shared, pool or distinct, not {v:?}"))?;
            }
            "--floor-runs" => a.floor_runs = num(value()?)?.max(1) as usize,
            "--write-nodelist" => a.write_nodelist = Some(value()?.into()),
            "--write-config" => a.write_config = Some(value()?.into()),
            "--json" => a.json = Some(value()?.into()),
            "--hold-fake" => a.hold_fake = Some(value()?.into()),
            "--hold-secs" => a.hold_secs = num(value()?)?,
            "--objects" => a.hold_objects = Some(value()?.into()),
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
