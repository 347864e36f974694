//! Wiring: flags to settings, sources to the store, the store to the HTTP side.

use clap::Parser;
use imagecap_exporter::agent;
use imagecap_exporter::check;
use imagecap_exporter::cli::{AgentArgs, Cli, Command, KubectlArgs, LogFormat, Mode, ServeArgs};
use imagecap_exporter::config::{Settings, SourceConfig};
use imagecap_exporter::metrics::Metrics;
use imagecap_exporter::serve::web_config::WebConfig;
use imagecap_exporter::serve::{self, AppState, SHUTDOWN_GRACE, conn};
use imagecap_exporter::source::client::{self, ClientOptions};
use imagecap_exporter::source::kubelet::{Endpoint, KubeletOptions};
use imagecap_exporter::source::prepullers;
use imagecap_exporter::source::{self, Ingest, agents, apiserver, file, kubelet};
use imagecap_exporter::store::Store;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod logging;

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match format {
        LogFormat::Text => fmt.fmt_fields(logging::SafeFields).boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(logging::ClientNoise::default()))
        .init();
}

fn main() -> ExitCode {
    imagecap_exporter::sys::tune_allocator();
    // One TLS crypto provider for every client and server in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if imagecap_exporter::cli::is_kubectl_plugin(std::env::args_os().next().as_deref()) {
        return kubectl_plugin();
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imagecap-exporter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Check(args) => check::run(args).await,
            Command::Agent(args) => run_agent(args).await,
        }
    });
    // Work still running on a blocking thread (decoding a large answer) must not
    // keep the process alive once it has stopped: dropping the runtime would wait
    // for it.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

/// How long the runtime's remaining threads get after `stopped`.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

/// `kubectl imagecap` (the binary under the name `kubectl-imagecap`): `check`
/// against a kubeconfig context.
fn kubectl_plugin() -> ExitCode {
    let args = KubectlArgs::parse();
    init_logging(args.log_format);
    let (check_args, client) = args.into_check();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(check::run_with(check_args, &client)),
        Err(e) => {
            eprintln!("kubectl-imagecap: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut s = match Settings::new(&args.common) {
        Ok(s) => s,
        Err(e) => return check::bad_input(e),
    };
    if let Some(path) = &args.nublado_file {
        s.nublado_from_file(path);
    }
    let web = match &args.web_config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => return check::bad_input(e),
        },
        None => WebConfig::default(),
    };
    // Certificates and keys are read now, so a bad one stops the start.
    if let Some(tls) = &web.tls
        && let Err(e) = serve::tls::rustls_config(tls)
    {
        return check::bad_input(format!("web config: {e}"));
    }
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let store = Arc::new(Store::new(s.wanted.clone(), s.default_max_images));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    if let Err(e) = spawn_sources(&args, &s, &store, &metrics, &tasks, &shutdown).await {
        return check::bad_input(e);
    }

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
    tasks.spawn(stop_on_signal(shutdown.clone()));
    let state = AppState {
        store,
        metrics,
        telemetry_path: args.web_telemetry_path.as_str().into(),
    };
    let limits = connection_limits(&args);
    let server = serve::serve(
        listener,
        state,
        web,
        args.web_config_file.clone(),
        limits,
        tasks.clone(),
        shutdown.clone(),
    );
    run(server, tasks, shutdown).await
}

/// Open files kept for other uses than connections: the listener, the runtime,
/// logs, the nodes or configuration files, the API server client.
const RESERVED_FILES: u64 = 64;

/// The connection limits from the flags, the cap lowered to fit the open-file limit
/// (raised to its hard limit first) so that accepting never fails for lack of
/// descriptors.
fn connection_limits(args: &ServeArgs) -> conn::Limits {
    fit_connection_limits(
        args.web_max_connections,
        args.web_header_read_timeout,
        args.web_idle_timeout,
    )
}

fn fit_connection_limits(
    max_connections: u32,
    header_read_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
) -> conn::Limits {
    let mut max_connections = u64::from(max_connections);
    if let Some(files) = imagecap_exporter::sys::raise_open_file_limit() {
        let fit = files.saturating_sub(RESERVED_FILES).max(1);
        if fit < max_connections {
            tracing::warn!(
                open_file_limit = files,
                "--web.max-connections {max_connections} lowered to {fit} to fit the open-file limit"
            );
            max_connections = fit;
        }
    }
    conn::Limits {
        header_read_timeout,
        idle_timeout,
        max_connections: max_connections as usize,
    }
}

/// The node agent, stopped like `serve`.
async fn run_agent(args: AgentArgs) -> ExitCode {
    let w = &args.web;
    let limits = fit_connection_limits(w.max_connections, w.header_read_timeout, w.idle_timeout);
    let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let server = match agent::start(args, limits, &tasks, &shutdown).await {
        Ok(server) => server,
        Err(e @ agent::StartError::BadInput(_)) => return check::bad_input(e),
        Err(e) => {
            eprintln!("imagecap-exporter: {e}");
            return ExitCode::FAILURE;
        }
    };
    tasks.spawn(stop_on_signal(shutdown.clone()));
    run(server, tasks, shutdown).await
}

/// Starts the node source (under [`source::supervise`]), the sources of wanted
/// images, and, when asked, the configz reader.
async fn spawn_sources(
    args: &ServeArgs,
    s: &Settings,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let in_cluster = s
        .sources
        .iter()
        .any(|src| !matches!(src, SourceConfig::Nublado(_)));
    let requests = Some(&metrics.kube_requests);
    let options = ClientOptions::default();
    let client = if args.nodes_file.is_none() {
        Some(
            client::build(&options, requests)
                .await
                .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?,
        )
    } else if in_cluster {
        match client::build(&options, requests).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "no Kubernetes client ({e}): the kubeFledged and daemonSets sources are off"
                );
                None
            }
        }
    } else {
        None
    };
    spawn_wanted_sources(&s.sources, client.as_ref(), store, metrics, tasks, shutdown);

    let ingest = Arc::new(Ingest {
        node_selector: s.node_selector.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
    });
    if let Some(path) = &args.agents_file {
        tracing::info!(path = %path.display(), "serving saved node-agent answers");
        store.expect_agents();
        let (path, every) = (path.clone(), args.agents_interval);
        tasks.spawn(agents::run_saved(
            path,
            every,
            store.clone(),
            shutdown.clone(),
        ));
    }
    let (store, metrics, stop) = (store.clone(), metrics.clone(), shutdown.clone());
    if let Some(path) = &args.nodes_file {
        for (set, flag) in [
            (args.common.kubelet_configz, "--kubelet-configz"),
            (args.common.kubelet_stats, "--kubelet-stats"),
            (args.agents.is_some(), "--agents"),
        ] {
            if set {
                tracing::warn!("{flag} has no effect with --nodes-file");
            }
        }
        tracing::info!(path = %path.display(), "serving nodes from a file");
        let (path, every, max) = (
            path.clone(),
            args.file_check_interval,
            args.max_nodes_file_bytes,
        );
        tasks.spawn(source::supervise(store, metrics, stop.clone(), move || {
            file::run(path.clone(), every, max, ingest.clone(), stop.clone())
        }));
        return Ok(());
    }
    let Some(client) = client else {
        return Err("no Kubernetes client to read nodes with".into());
    };
    for (enabled, endpoint, interval) in [
        (
            args.common.kubelet_configz,
            Endpoint::Configz,
            args.kubelet_configz_interval,
        ),
        (
            args.common.kubelet_stats,
            Endpoint::StatsSummary,
            args.kubelet_stats_interval,
        ),
    ] {
        if !enabled {
            continue;
        }
        let opts = KubeletOptions {
            interval,
            concurrency: args.common.kubelet_configz_concurrency.into(),
            timeout: args.common.kubelet_configz_timeout,
        };
        tracing::info!(?endpoint, interval = ?opts.interval, "reading kubelets");
        tasks.spawn(kubelet::run(
            client.clone(),
            endpoint,
            store.clone(),
            metrics.clone(),
            opts,
            shutdown.clone(),
        ));
    }
    if let Some((namespace, service)) = &args.agents {
        let opts = agents::AgentOptions {
            namespace: namespace.clone(),
            service: service.clone(),
            port_name: args.agents_port_name.clone(),
            interval: args.agents_interval,
            timeout: args.agents_timeout,
            concurrency: args.agents_concurrency.into(),
            max_body_bytes: args.agents_max_bytes,
            max_age: args.agents_max_age,
            https: args.agents_https,
            ca_file: args.agents_ca_file.clone(),
            basic_auth: args
                .agents_username
                .clone()
                .zip(args.agents_password_file.clone()),
        };
        tracing::info!(%namespace, %service, interval = ?opts.interval, "reading node agents");
        tasks.spawn(agents::run(
            client.clone(),
            opts,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let opts = s.list_options();
    let (mode, interval) = (args.mode, args.poll_interval);
    match mode {
        Mode::Watch => {
            tracing::info!(page_size = opts.page_size, selector = ?opts.label_selector, "watching nodes")
        }
        Mode::Poll => {
            tracing::info!(?interval, page_size = opts.page_size, "polling nodes")
        }
    }
    tasks.spawn(source::supervise(store, metrics, stop.clone(), move || {
        let (client, opts, ingest, stop) =
            (client.clone(), opts.clone(), ingest.clone(), stop.clone());
        async move {
            match mode {
                Mode::Watch => apiserver::watch(client, opts, interval, ingest, stop).await,
                Mode::Poll => apiserver::poll(client, opts, interval, ingest, stop).await,
            }
        }
    }));
    Ok(())
}

/// Starts a task for each `prepull.sources` entry; the in-cluster ones need
/// `client`.
fn spawn_wanted_sources(
    sources: &[SourceConfig],
    client: Option<&kube::Client>,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let st = || store.clone();
    let m = || metrics.clone();
    let stop = || shutdown.clone();
    for src in sources {
        match (src, client) {
            (SourceConfig::Nublado(opts), _) => {
                tracing::info!(url = %opts.url, interval = ?opts.interval, "reading wanted images from Nublado");
                tasks.spawn(prepullers::nublado(opts.clone(), st(), m(), stop()));
            }
            (SourceConfig::KubeFledged { namespace }, Some(c)) => {
                tracing::info!(?namespace, "watching kube-fledged ImageCaches");
                tasks.spawn(prepullers::kube_fledged(
                    c.clone(),
                    namespace.clone(),
                    st(),
                    m(),
                    stop(),
                ));
            }
            (
                SourceConfig::DaemonSets {
                    namespace,
                    selector,
                },
                Some(c),
            ) => {
                tracing::info!(?namespace, ?selector, "watching prepuller DaemonSets");
                tasks.spawn(prepullers::daemonsets(
                    c.clone(),
                    namespace.clone(),
                    selector.clone(),
                    st(),
                    m(),
                    stop(),
                ));
            }
            (_, None) => {}
        }
    }
}

/// Runs until the server fails or `shutdown` (a signal) begins; then stops every
/// task, letting in-flight requests finish within [`SHUTDOWN_GRACE`].
async fn run(
    server: impl std::future::Future<Output = std::io::Result<()>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> ExitCode {
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                    Ok(())
                }
            }
        }
    };
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within {SHUTDOWN_GRACE:?}");
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
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
