//! Starts what `serve` reads, from its flags and settings: the node source
//! (under [`super::supervise`]), the sources of wanted images, the kubelet
//! readers and the node agents (live, or saved answers).

use crate::cli::{Mode, ServeArgs};
use crate::config::{Settings, SourceConfig};
use crate::metrics::Metrics;
use crate::source::client::{self, ClientOptions};
use crate::source::kubelet::{Endpoint, KubeletOptions};
use crate::source::{self, Ingest, agents, apiserver, file, kubelet, prepullers};
use crate::store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts the node source (under [`source::supervise`]), the sources of wanted
/// images, and, when asked, the configz reader.
pub async fn spawn_sources(
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
