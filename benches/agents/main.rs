//! Node-agent benchmark: the release exporter (`serve --agents`) reading thousands
//! of node agents on loopback, and the real agent's memory.
//!
//! `cargo bench --bench agents` runs 5,000 agents in this process, each on its own
//! loopback port with a generated node's 500 runtime images, served by the
//! agent's own code (JSON, ETag, `If-None-Match`, gzip). The fake API server holds
//! the 5,000 Nodes (reporting the kubelet's default 50 images) and one
//! EndpointSlice per agent. It prints, for three rounds of the exporter reading
//! every agent:
//!
//! - `first`: every list is new to the exporter;
//! - `unchanged` (`--unchanged N` of them, 3 by default; the summary takes the
//!   median CPU): nothing changed since;
//! - `changed`: `--changed` percent of the agents (1 by default) hold more images;
//!
//! the bytes the agents' sockets moved (requests and answers, headers
//! included), connections, answers by status, the exporter's CPU (utime + stime
//! from /proc between the ends of two rounds; the first round from when the
//! EndpointSlices appear) and its resident and peak memory (VmRSS, VmHWM). Then it
//! runs the real `agent` binary against a small CRI server with 500 images and
//! prints its memory.
//!
//! Options: `--nodes N` (5000), `--images N` (500), `--changed PERCENT` (1),
//! `--interval DUR` (the exporter's --agents-interval, 3s), `--concurrency N`
//! (16), `--seed N` (42), `--quick` (200 agents), `--exporter-env K=V` (repeatable;
//! e.g. `MALLOC_ARENA_MAX=2`).

mod cri;
#[path = "../../tests/support/fake_apiserver.rs"]
#[allow(dead_code)]
mod fake_apiserver;
mod fleet;
#[path = "../support/gen.rs"]
#[allow(dead_code)]
mod nodegen;
#[path = "../../tests/support/process.rs"]
mod process;
mod rounds;

use std::process::ExitCode;

const EXPORTER: &str = env!("CARGO_BIN_EXE_imagecap-exporter");

/// The benchmark's settings.
#[derive(Clone, Debug)]
pub struct Args {
    pub nodes: usize,
    pub images: usize,
    pub changed_percent: f64,
    pub interval: String,
    pub concurrency: u16,
    pub seed: u64,
    /// Rounds with nothing changed, between the first and the changed one.
    pub unchanged_rounds: usize,
    /// Extra environment of the exporter (`--exporter-env K=V`, repeatable).
    pub exporter_env: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nodes: 5000,
        images: 500,
        changed_percent: 1.0,
        interval: "3s".into(),
        concurrency: 16,
        seed: 42,
        unchanged_rounds: 3,
        exporter_env: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--nodes" => a.nodes = value()?.parse().map_err(|e| bad(&e))?,
            "--images" => a.images = value()?.parse().map_err(|e| bad(&e))?,
            "--changed" => a.changed_percent = value()?.parse().map_err(|e| bad(&e))?,
            "--interval" => a.interval = value()?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| bad(&e))?,
            "--unchanged" => a.unchanged_rounds = value()?.parse().map_err(|e| bad(&e))?,
            "--quick" => a.nodes = 200,
            "--exporter-env" => {
                let kv = value()?;
                let (k, v) = kv.split_once('=').ok_or(format!("{flag}: expected K=V"))?;
                a.exporter_env.push((k.to_string(), v.to_string()));
            }
            // What cargo passes to every bench target.
            "--bench" => {}
            "--help" | "-h" => return Err(help()),
            other => return Err(format!("unknown argument {other:?}\n{}", help())),
        }
    }
    Ok(a)
}

fn help() -> String {
    "usage: cargo bench --bench agents -- [--nodes N] [--images N] [--changed PERCENT] \
     [--interval DUR] [--concurrency N] [--seed N] [--unchanged N] [--quick] [--exporter-env K=V]..."
        .into()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // An agent listens on a socket of its own: the soft limit goes up to the hard one.
    let files = imagecap_exporter::sys::raise_open_file_limit().unwrap_or(0);
    if files < args.nodes as u64 + 1000 {
        eprintln!(
            "agents: {} agents need about {} open files; the limit is {files}",
            args.nodes,
            args.nodes + 1000
        );
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(rounds::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agents: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
