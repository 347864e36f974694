//! `imagecap-exporter check`: the analysis once, from a cluster or a nodes file,
//! printed as a table or JSON, with an exit status for scripts.

pub mod table;

use crate::analysis::Report;
use crate::cli::{CheckArgs, Format};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::source::configz::{self, ConfigzOptions};
use crate::source::{Ingest, apiserver, file};
use crate::store::Store;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit status: nodes at their cap or wanted images missing.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status for bad input: flags, config, or node data that cannot be read.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Prints `message` and returns [`EXIT_BAD_INPUT`].
pub fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("imagecap-exporter: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Writes to standard output; a closed pipe (`check | head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub async fn run(args: CheckArgs) -> ExitCode {
    let s = match Settings::new(&args.common) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    let store = Arc::new(Store::new(s.wanted.clone(), s.default_max_images));
    let ingest = Ingest {
        node_selector: s.node_selector.clone(),
        metrics: Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))),
        store: store.clone(),
    };
    match &args.nodes_file {
        Some(path) => match file::load(path, &ingest) {
            Ok(nodes) => store.replace_all(nodes),
            Err(e) => return bad_input(e),
        },
        None => {
            let client = match apiserver::client().await {
                Ok(c) => c,
                Err(e) => return bad_input(format!("cannot configure a Kubernetes client: {e}")),
            };
            let api = kube::Api::all(client.clone());
            match apiserver::list_all(&api, &s.list_options(), &ingest).await {
                Ok(nodes) => store.replace_all(nodes),
                Err(e) => return bad_input(format!("listing nodes failed: {e}")),
            }
            if args.common.kubelet_configz {
                let opts = ConfigzOptions {
                    concurrency: args.common.kubelet_configz_concurrency.into(),
                    timeout: args.common.kubelet_configz_timeout,
                    ..ConfigzOptions::default()
                };
                let (caps, failed) = configz::caps(&client, store.node_names(), &opts).await;
                for (node, e) in failed {
                    tracing::warn!(%node, "cannot read the kubelet's nodeStatusMaxImages, assuming the default: {e}");
                }
                for (node, cap) in caps {
                    store.set_kubelet_cap(&node, Some(cap));
                }
            }
        }
    }
    let (report, _) = store.report();
    print(&report, args.format)
}

fn print(report: &Report, format: Format) -> ExitCode {
    match format {
        Format::Table => emit(&table::render_table(report)),
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(j) => emit(&format!("{j}\n")),
            Err(e) => return bad_input(format!("cannot encode the report: {e}")),
        },
    }
    if report.has_findings() {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}
