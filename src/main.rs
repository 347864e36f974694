use clap::Parser;
use imagecap_exporter::analysis::cluster::{KUBELET_DEFAULT_MAX_IMAGES, KubeletCaps};
use imagecap_exporter::analysis::selector::LabelSelector;
use imagecap_exporter::analysis::{Wanted, analyze};
use imagecap_exporter::cli::{
    CheckArgs, Cli, Command, CommonArgs, Format, LogFormat, Mode, ServeArgs,
};
use imagecap_exporter::config::Config;
use imagecap_exporter::http::{self, AppState};
use imagecap_exporter::metrics::Metrics;
use imagecap_exporter::source::configz::ConfigzOptions;
use imagecap_exporter::source::{self, Ingest, Store};
use imagecap_exporter::web_config::WebConfig;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit status for bad input: flags, config, or node data that cannot be read.
const EXIT_BAD_INPUT: u8 = 2;
/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// `check` found nodes at their cap or wanted images missing.
const EXIT_FINDINGS: u8 = 1;

/// The settings `serve` and `check` share, validated.
struct Settings {
    wanted: Arc<Wanted>,
    default_max_images: i64,
    selector: LabelSelector,
    page_size: u32,
    request_timeout: Duration,
}

fn settings(common: &CommonArgs) -> Result<Settings, String> {
    let config = match &common.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let selector = match &common.node_selector {
        Some(s) => s.parse().map_err(|e| format!("--node-selector: {e}"))?,
        None => LabelSelector::default(),
    };
    Ok(Settings {
        wanted: Arc::new(config.wanted),
        default_max_images: common
            .default_max_images
            .or(config.default_max_images)
            .unwrap_or(KUBELET_DEFAULT_MAX_IMAGES),
        selector,
        page_size: common.page_size,
        request_timeout: common.request_timeout,
    })
}

fn list_options(s: &Settings) -> source::kube::ListOptions {
    source::kube::ListOptions {
        label_selector: (!s.selector.is_empty()).then(|| s.selector.to_string()),
        page_size: s.page_size,
        request_timeout: s.request_timeout,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    imagecap_exporter::sys::limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imagecap-exporter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Check(args) => check(args).await,
        }
    })
}

/// Writes to standard output; a closed pipe (`check | head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("imagecap-exporter: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let s = match settings(&args.common) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    let web = match &args.web_config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => return bad_input(e),
        },
        None => WebConfig::default(),
    };
    // Certificates and keys are read now, so a bad one stops the start.
    if let Some(tls) = &web.tls
        && let Err(e) = http::rustls_config(tls)
    {
        return bad_input(format!("web config: {e}"));
    }
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let store = Arc::new(Store::default());
    let ingest = Ingest {
        wanted: s.wanted.clone(),
        selector: s.selector.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
    };
    let shutdown = CancellationToken::new();

    if args.common.kubelet_configz && args.nodes_file.is_some() {
        tracing::warn!("--kubelet-configz has no effect with --nodes-file");
    }
    let source = match &args.nodes_file {
        Some(path) => {
            tracing::info!(path = %path.display(), "serving nodes from a file");
            tokio::spawn(source::file::run(
                path.clone(),
                args.file_check_interval,
                ingest,
                shutdown.clone(),
            ))
        }
        None => {
            let client = match source::kube::client().await {
                Ok(c) => c,
                Err(e) => return bad_input(format!("cannot configure a Kubernetes client: {e}")),
            };
            let opts = list_options(&s);
            if args.common.kubelet_configz {
                let configz = ConfigzOptions {
                    interval: args.kubelet_configz_interval,
                    concurrency: args.common.kubelet_configz_concurrency.into(),
                    timeout: args.common.kubelet_configz_timeout,
                };
                tracing::info!(interval = ?configz.interval, "reading kubelet caps from configz");
                tokio::spawn(source::configz::run(
                    client.clone(),
                    store.clone(),
                    metrics.clone(),
                    configz,
                    shutdown.clone(),
                ));
            }
            match args.mode {
                Mode::Watch => {
                    tracing::info!(page_size = opts.page_size, selector = ?opts.label_selector, "watching nodes");
                    tokio::spawn(source::kube::watch(client, opts, ingest, shutdown.clone()))
                }
                Mode::Poll => {
                    tracing::info!(interval = ?args.poll_interval, page_size = opts.page_size, "polling nodes");
                    tokio::spawn(source::kube::poll(
                        client,
                        opts,
                        args.poll_interval,
                        ingest,
                        shutdown.clone(),
                    ))
                }
            }
        }
    };

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("imagecap-exporter: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %addr,
        tls = web.tls.is_some(),
        basic_auth = !web.users.is_empty(),
        default_max_images = s.default_max_images,
        "listening"
    );

    tokio::spawn(stop_on_signal(shutdown.clone()));
    let state = AppState {
        store,
        metrics,
        wanted: s.wanted,
        default_max_images: s.default_max_images,
    };
    let mut server = tokio::spawn(http::serve(listener, state, web, shutdown.clone()));
    let served = tokio::select! {
        r = &mut server => r,
        _ = shutdown.cancelled() => {
            // In-flight requests may finish, within a bound: a client that stops
            // reading must not hold the exit beyond the pod's grace period.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let served = served.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(1), source)
        .await
        .is_err()
    {
        tracing::warn!("node source did not stop within 1 s");
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("HTTP server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot handle SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

async fn check(args: CheckArgs) -> ExitCode {
    let s = match settings(&args.common) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    let ingest = Ingest {
        wanted: s.wanted.clone(),
        selector: s.selector.clone(),
        metrics: Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))),
        store: Arc::new(Store::default()),
    };
    let mut kubelet_caps = KubeletCaps::new();
    let nodes = match &args.nodes_file {
        Some(path) => match source::file::load(path, &ingest) {
            Ok(n) => n,
            Err(e) => return bad_input(e),
        },
        None => {
            let client = match source::kube::client().await {
                Ok(c) => c,
                Err(e) => return bad_input(format!("cannot configure a Kubernetes client: {e}")),
            };
            let api = kube::Api::all(client.clone());
            let nodes = match source::kube::list_all(&api, &list_options(&s), &ingest).await {
                Ok(n) => n,
                Err(e) => return bad_input(format!("listing nodes failed: {e}")),
            };
            if args.common.kubelet_configz {
                let opts = ConfigzOptions {
                    concurrency: args.common.kubelet_configz_concurrency.into(),
                    timeout: args.common.kubelet_configz_timeout,
                    ..ConfigzOptions::default()
                };
                let names = nodes.iter().map(|n| n.name.clone()).collect();
                let (caps, failed) = source::configz::caps(&client, names, &opts).await;
                for (node, e) in failed {
                    tracing::warn!(%node, "cannot read the kubelet's nodeStatusMaxImages, assuming the default: {e}");
                }
                kubelet_caps = caps;
            }
            nodes
        }
    };
    let report = analyze(&nodes, &s.wanted, s.default_max_images, &kubelet_caps);
    match args.format {
        Format::Table => emit(&imagecap_exporter::report::render_table(&report)),
        Format::Json => match serde_json::to_string_pretty(&report) {
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
