//! `serve`: from its flags to a running exporter, stopped by a signal.

use super::{AppState, conn};
use crate::cli::{ServeArgs, exit_bad_input};
use crate::metrics::Metrics;
use crate::store::Store;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reads the settings and the web configuration (a bad one is exit 2), starts
/// the sources, listens, and serves until a signal.
pub async fn run(args: ServeArgs) -> ExitCode {
    let s = match args.common.settings() {
        Ok(s) => s,
        Err(e) => return exit_bad_input(e),
    };
    let web = match super::start_web_config(args.web_config_file.as_deref()) {
        Ok(w) => w,
        Err(e) => return exit_bad_input(e),
    };
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let store = Arc::new(Store::new(s.wanted.clone(), s.default_max_images));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    if let Err(e) =
        super::sources::spawn_sources(&args, &s, &store, &metrics, &tasks, &shutdown).await
    {
        return exit_bad_input(e);
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
    let state = AppState {
        store,
        metrics,
        telemetry_path: args.web_telemetry_path.as_str().into(),
    };
    tasks.spawn(super::scrape::prepare_ahead(
        state.clone(),
        shutdown.clone(),
    ));
    let limits = conn::fit_limits(
        args.web_max_connections,
        args.web_header_read_timeout,
        args.web_idle_timeout,
    );
    let server = super::serve(
        listener,
        state,
        web,
        args.web_config_file.clone(),
        limits,
        tasks.clone(),
        shutdown.clone(),
    );
    super::until_stopped(server, tasks, shutdown).await
}
