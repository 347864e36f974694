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

mod args;
#[path = "../../tests/support/fake_apiserver.rs"]
#[allow(dead_code)]
mod fake_apiserver;
#[path = "../support/gen.rs"]
#[allow(dead_code)]
mod nodegen;
#[path = "../../tests/support/process.rs"]
mod process;
mod runs;
mod scrape_cost;
mod scraping;
mod tables;

use args::{Args, parse_args};
use fake_apiserver::FakeApiServer;
use nodegen::Cluster;
use process::kubeconfig_text;
use runs::{forget_history, run};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const EXPORTER: &str = env!("CARGO_BIN_EXE_imagecap-exporter");
const PAGE_SIZE: usize = 500;

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
        None => rt
            .block_on(run(&args))
            .and_then(|runs| report(&args, &runs)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the runs' tables, and writes them as JSON when `--json` asks.
fn report(args: &Args, runs: &[runs::Run]) -> Result<(), String> {
    tables::print_tables(runs, args.quick);
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "machine": runs::machine(),
            "quick": args.quick,
            "seed": args.seed,
            "runs": runs.iter().map(tables::run_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn write_files(args: &Args) -> Result<(), String> {
    let nodes = args.nodes.unwrap_or(100);
    let images = args.images.unwrap_or(50);
    let cluster = Cluster::with_names(nodes, images, args.seed, args.names);
    if let Some(path) = &args.write_nodelist {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let n = cluster
            .write_node_list(&mut w)
            .and_then(|n| w.flush().map(|()| n))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "wrote {} ({nodes} nodes x {images} images, {} names, seed {}, {:.1} MB)",
            path.display(),
            args.names.as_str(),
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

/// Serves the objects of a JSON list (`{"items": [...]}` or a bare array) from the
/// fake API server for `--hold-secs` seconds, and writes a kubeconfig for it in
/// `dir`: for end-to-end tests that need a cluster of their own making.
async fn hold_objects(args: &Args, dir: &Path, objects: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(objects).map_err(|e| format!("{}: {e}", objects.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", objects.display()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        mut list => match list["items"].take() {
            serde_json::Value::Array(items) => items,
            _ => return Err(format!("{}: expected a list of objects", objects.display())),
        },
    };
    let fake = FakeApiServer::start(Vec::new()).await;
    for item in items {
        match item["kind"].as_str() {
            Some("Node") => fake.apply(item),
            Some("EndpointSlice") => fake.apply_object("endpointslices", item),
            Some("DaemonSet") => fake.apply_object("daemonsets", item),
            Some("ImageCache") => fake.apply_object("imagecaches", item),
            other => return Err(format!("cannot serve an object of kind {other:?}")),
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_text(&fake.url())).map_err(|e| e.to_string())?;
    println!(
        "serving {} at {} for {} s",
        objects.display(),
        fake.url(),
        args.hold_secs
    );
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    Ok(())
}

/// Serves a generated cluster from the fake API server for `--hold-secs` seconds,
/// with a kubeconfig and a config written into `dir`: for profiling the exporter by
/// hand (heaptrack, perf, gdb) against the same data.
async fn hold_fake(args: &Args, dir: &Path) -> Result<(), String> {
    if let Some(objects) = &args.hold_objects {
        return hold_objects(args, dir, objects).await;
    }
    let cluster = Cluster::with_names(
        args.nodes.unwrap_or(5000),
        args.images.unwrap_or(100),
        args.seed,
        args.names,
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
