//! `imagecap-exporter check`: the analysis once, from a cluster or a nodes file,
//! printed as a table or JSON, with an exit status for scripts.

pub mod prune_plan;
pub mod table;

use crate::analysis::Report;
use crate::analysis::runtime::AgentReport;
use crate::cli::{CheckArgs, Format, exit_bad_input};
use crate::client::kubernetes::ClientOptions;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::nodes::kubelet::{self, Endpoint, KubeletOptions};
use crate::nodes::{Ingest, apiserver, file};
use crate::prepull::{self, Flags, PrepullError, Sink, Source, log_dropped};
use crate::store::Store;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit status: nodes at their cap or wanted images missing.
pub const EXIT_FINDINGS: u8 = 1;

/// Writes to standard output; a closed pipe (`check | head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub async fn run(args: CheckArgs) -> ExitCode {
    run_with(args, &ClientOptions::default()).await
}

/// [`run`], with the cluster's client configured by `client`.
pub async fn run_with(args: CheckArgs, client: &ClientOptions) -> ExitCode {
    let s = match args.common.settings() {
        Ok(s) => s,
        Err(e) => return exit_bad_input(e),
    };
    let store = Arc::new(Store::new(s.wanted.clone(), s.default_max_images));
    if let Err(e) = read_nodes(&args, &s, client, &store).await {
        return exit_bad_input(e);
    }
    let answers = match &args.agents_file {
        Some(path) => match crate::nodes::agents::load_saved(path, &store) {
            Ok(answers) => answers,
            Err(e) => return exit_bad_input(e),
        },
        None => Vec::new(),
    };
    let (report, _) = store.report();
    if args.prune_plan {
        return print_prune_plans(&args, &report, &answers);
    }
    print(&report, args.format)
}

/// The wanted-image sources, then the nodes (from the file or the cluster) and,
/// from the cluster, the kubelets when asked, into `store`.
async fn read_nodes(
    args: &CheckArgs,
    s: &Settings,
    client: &ClientOptions,
    store: &Arc<Store>,
) -> Result<(), String> {
    let ingest = Ingest {
        node_selector: s.node_selector.clone(),
        metrics: Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))),
        store: store.clone(),
    };
    let flags = Flags {
        nublado_file: args.nublado_file.as_deref(),
    };
    let sources = prepull::build(s, &flags)?;
    // The sources first: they decide which image entries node summaries keep.
    let client = match &args.nodes_file {
        Some(_) => None,
        None => Some(
            crate::client::build(client, None)
                .await
                .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?,
        ),
    };
    let sink = Sink {
        store: store.clone(),
        metrics: ingest.metrics.clone(),
        shutdown: tokio_util::sync::CancellationToken::new(),
    };
    read_sources(&sources, client.as_ref(), &sink).await?;
    match (&args.nodes_file, client) {
        (Some(path), _) => {
            let loaded = file::load(path, &ingest).map_err(|e| e.to_string())?;
            store.replace_list(loaded.nodes, loaded.digests);
        }
        (None, None) => return Err("no Kubernetes client to list nodes with".into()),
        (None, Some(client)) => {
            let api = kube::Api::all(client.clone());
            let listed = apiserver::list_all(&api, &s.list_options(), &ingest)
                .await
                .map_err(|e| format!("listing nodes failed: {e}"))?;
            store.replace_list(listed.nodes, listed.digests);
            read_kubelets(args, &client, store).await;
        }
    }
    Ok(())
}

/// Each kubelet's configz and stats/summary once, when their flags are set; a
/// kubelet that cannot be read is logged.
async fn read_kubelets(args: &CheckArgs, client: &kube::Client, store: &Store) {
    let opts = KubeletOptions {
        concurrency: args.common.kubelet_configz_concurrency.into(),
        timeout: args.common.kubelet_configz_timeout,
        ..KubeletOptions::default()
    };
    for (enabled, endpoint) in [
        (args.common.kubelet_configz, Endpoint::Configz),
        (args.common.kubelet_stats, Endpoint::StatsSummary),
    ] {
        if !enabled {
            continue;
        }
        let results = kubelet::read_all(client, store, endpoint, store.node_names(), &opts).await;
        for (node, result) in results {
            if let Err(e) = result {
                tracing::warn!(%node, "{}: {e}", endpoint.what());
            }
        }
    }
}

/// `--prune-plan`: each saved answer's plan under `--prune-config` (or the
/// defaults), in the chosen format.
fn print_prune_plans(args: &CheckArgs, report: &Report, answers: &[AgentReport]) -> ExitCode {
    let settings = match &args.prune_config {
        Some(path) => match crate::config::agent::AgentConfig::load(path) {
            Ok(c) => c.prune,
            Err(e) => return exit_bad_input(e),
        },
        None => crate::analysis::prune::PruneSettings::default(),
    };
    let plans = prune_plan::plans(report, answers, &settings);
    match args.format {
        Format::Table => emit(&prune_plan::render(&plans)),
        Format::Json => match serde_json::to_string_pretty(&plans) {
            Ok(j) => emit(&format!("{j}\n")),
            Err(e) => return exit_bad_input(format!("cannot encode the plans: {e}")),
        },
    }
    ExitCode::SUCCESS
}

/// Reads each wanted-image source once into the store. A source that cannot be
/// read is logged and shows as down in the report; a file given in place of a
/// source's answer (`--nublado-file`) that cannot be read is bad input.
async fn read_sources(
    sources: &[Box<dyn Source>],
    client: Option<&kube::Client>,
    sink: &Sink,
) -> Result<(), String> {
    for source in sources {
        let name = source.name();
        sink.store.add_source(name);
        match source.read_once(client).await {
            Ok(wants) => {
                for p in &wants.problems {
                    tracing::warn!(source = %name, "{p}");
                }
                log_dropped(name, wants.dropped, &mut 0);
                sink.store.source_succeeded(name, wants);
            }
            Err(e) => match (source.given_file(), &e.error) {
                (Some(_), PrepullError::File { .. }) => return Err(e.to_string()),
                (Some(path), _) => return Err(format!("{}: {e}", path.display())),
                (None, _) => {
                    sink.failed(&e, "cannot read this source of wanted images", None, None)
                }
            },
        }
    }
    Ok(())
}

fn print(report: &Report, format: Format) -> ExitCode {
    match format {
        Format::Table => emit(&table::render_table(report)),
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(j) => emit(&format!("{j}\n")),
            Err(e) => return exit_bad_input(format!("cannot encode the report: {e}")),
        },
    }
    if report.has_findings() {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}
