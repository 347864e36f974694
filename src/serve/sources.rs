//! Starts what `serve` reads, from its flags and settings: the node source
//! (under [`nodes::supervise`]), the sources of wanted images, the kubelet
//! readers and the node agents (live, or saved answers).

use crate::cli::{Mode, ServeArgs};
use crate::client::{self, ClientOptions};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::nodes::kubelet::{Endpoint, KubeletOptions};
use crate::nodes::{self, Ingest, agents, apiserver, file, kubelet};
use crate::prepull::{self, Sink, Source};
use crate::store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every started task shares: where it writes, what it counts, what it
/// joins, and what stops it.
struct Start<'a> {
    store: &'a Arc<Store>,
    metrics: &'a Arc<Metrics>,
    tasks: &'a TaskTracker,
    shutdown: &'a CancellationToken,
}

/// Starts the node source (under [`nodes::supervise`]), the sources of wanted
/// images, and, when asked, the kubelet readers and the node agents (live or
/// saved).
pub async fn spawn_sources(
    args: &ServeArgs,
    s: &Settings,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let start = Start {
        store,
        metrics,
        tasks,
        shutdown,
    };
    let flags = prepull::Flags {
        nublado_file: args.nublado_file.as_deref(),
    };
    let sources = prepull::build(s, &flags)?;
    let client = kube_client(args, &sources, metrics).await?;
    start.wanted_sources(sources, client.as_ref());
    let ingest = Arc::new(Ingest {
        node_selector: s.node_selector.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
    });
    if let Some(path) = &args.agents_file {
        tracing::info!(path = %path.display(), "serving saved node-agent answers");
        store.expect_agents();
        tasks.spawn(agents::run_saved(
            path.clone(),
            args.agents_interval,
            store.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(path) = &args.nodes_file {
        start.nodes_from_file(args, path, ingest);
        return Ok(());
    }
    let Some(client) = client else {
        return Err("no Kubernetes client to read nodes with".into());
    };
    start.kubelets(args, &client);
    if let Some((namespace, service)) = &args.agents {
        start.agents(args, &client, namespace, service);
    }
    start.nodes_from_api(args, s, client, ingest);
    Ok(())
}

/// The Kubernetes client: required to read nodes from the API server; with a
/// nodes file, only for the in-cluster sources of wanted images, which are off
/// without one.
async fn kube_client(
    args: &ServeArgs,
    sources: &[Box<dyn Source>],
    metrics: &Arc<Metrics>,
) -> Result<Option<kube::Client>, String> {
    let in_cluster: Vec<&str> = sources
        .iter()
        .filter(|src| src.needs_cluster())
        .map(|src| prepull::key(src.name()))
        .collect();
    let requests = Some(&metrics.kube_requests);
    let options = ClientOptions::default();
    if args.nodes_file.is_none() {
        return client::build(&options, requests)
            .await
            .map(Some)
            .map_err(|e| format!("cannot configure a Kubernetes client: {e}"));
    }
    if in_cluster.is_empty() {
        return Ok(None);
    }
    match client::build(&options, requests).await {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(
                "no Kubernetes client ({e}): the {} sources are off",
                in_cluster.join(" and ")
            );
            Ok(None)
        }
    }
}

impl Start<'_> {
    /// Nodes from `--nodes-file`, read again when it changes; the readers that
    /// need the API server are off.
    fn nodes_from_file(&self, args: &ServeArgs, path: &std::path::Path, ingest: Arc<Ingest>) {
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
            path.to_path_buf(),
            args.file_check_interval,
            args.max_nodes_file_bytes,
        );
        let stop = self.shutdown.clone();
        self.tasks.spawn(nodes::supervise(
            self.store.clone(),
            self.metrics.clone(),
            stop.clone(),
            move || file::run(path.clone(), every, max, ingest.clone(), stop.clone()),
        ));
    }

    /// Nodes from the API server, watched or polled.
    fn nodes_from_api(
        &self,
        args: &ServeArgs,
        s: &Settings,
        client: kube::Client,
        ingest: Arc<Ingest>,
    ) {
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
        let stop = self.shutdown.clone();
        self.tasks.spawn(nodes::supervise(
            self.store.clone(),
            self.metrics.clone(),
            stop.clone(),
            move || {
                let (client, opts, ingest, stop) =
                    (client.clone(), opts.clone(), ingest.clone(), stop.clone());
                async move {
                    match mode {
                        Mode::Watch => apiserver::watch(client, opts, interval, ingest, stop).await,
                        Mode::Poll => apiserver::poll(client, opts, interval, ingest, stop).await,
                    }
                }
            },
        ));
    }

    /// The kubelets' configz and stats/summary, each when its flag is set.
    fn kubelets(&self, args: &ServeArgs, client: &kube::Client) {
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
            self.tasks.spawn(kubelet::run(
                client.clone(),
                endpoint,
                self.store.clone(),
                self.metrics.clone(),
                opts,
                self.shutdown.clone(),
            ));
        }
    }

    /// The node agents behind `namespace/service`.
    fn agents(&self, args: &ServeArgs, client: &kube::Client, namespace: &str, service: &str) {
        let opts = agents::AgentOptions {
            namespace: namespace.to_string(),
            service: service.to_string(),
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
        self.tasks.spawn(agents::run(
            client.clone(),
            opts,
            self.store.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
    }

    /// A task for each source of wanted images; those that need the cluster
    /// are off without `client`.
    fn wanted_sources(&self, sources: Vec<Box<dyn Source>>, client: Option<&kube::Client>) {
        for source in sources {
            if source.needs_cluster() && client.is_none() {
                continue;
            }
            let sink = Sink {
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                shutdown: self.shutdown.clone(),
            };
            self.tasks.spawn(source.run(client.cloned(), sink));
        }
    }
}
