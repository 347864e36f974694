//! Wiring: flags to settings, sources to the store, the store to the HTTP side.

use clap::Parser;
use imagecap_exporter::cli::{Cli, Command, KubectlArgs, LogFormat};
use imagecap_exporter::{agent, check, serve};
use std::process::ExitCode;

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
            Command::Serve(args) => serve::start::run(*args).await,
            Command::Check(args) => check::run(args).await,
            Command::Agent(args) => agent::run(args).await,
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
