//! Command-line flags.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "imagecap-exporter",
    version = crate::version::VERSION,
    long_version = crate::version::LONG_VERSION,
    about = "Exports how close each node is to the kubelet's nodeStatusMaxImages cap, \
             and which prepull images nodes do not report."
)]
pub struct Cli {
    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve /metrics, /healthz, /readyz and a status page at /.
    Serve(Box<ServeArgs>),
    /// Print the analysis once. Exit 0: no node at its cap and no wanted image
    /// missing; 1: some are; 2: bad input.
    Check(CheckArgs),
    /// The node agent: ask the container runtime over CRI for every image it holds
    /// and serve the answer at /v1/images and /metrics.
    Agent(AgentArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// YAML configuration: defaultMaxImages and the prepull images, patterns and
    /// node selector.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Cap assumed for a node until its kubelet's own value is known [default: the
    /// config's defaultMaxImages, else 50]. -1 means unlimited.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_max_images)]
    pub default_max_images: Option<i64>,

    /// Only consider nodes matching this label selector (e.g. `pool=lab,!gpu`). It is
    /// sent to the API server, and applied to nodes read from a file.
    #[arg(long, value_name = "SELECTOR")]
    pub node_selector: Option<String>,

    /// Read each node's cap in force (nodeStatusMaxImages) from its kubelet's
    /// configz, through the API server proxy. Needs RBAC get on nodes/proxy, a
    /// powerful permission, so it is off by default. Ignored with --nodes-file.
    #[arg(long)]
    pub kubelet_configz: bool,

    /// configz requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub kubelet_configz_concurrency: u16,

    /// Limit for one configz request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub kubelet_configz_timeout: Duration,

    /// Read each node's image filesystem use (`node.runtime.imageFs`) from its
    /// kubelet's Summary API (stats/summary), through the API server proxy. Needs
    /// the same RBAC get on nodes/proxy as --kubelet-configz. Ignored with
    /// --nodes-file.
    #[arg(long)]
    pub kubelet_stats: bool,

    /// Limit for one LIST page request to the API server (poll mode and check).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Nodes per page when listing from the API server.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
}

impl CommonArgs {
    /// The settings these flags and the configuration file they name make.
    pub fn settings(&self) -> Result<crate::config::Settings, crate::config::SettingsError> {
        crate::config::Settings::new(&crate::config::SettingsFlags {
            config: self.config.as_deref(),
            default_max_images: self.default_max_images,
            node_selector: self.node_selector.as_deref(),
            page_size: self.page_size,
            request_timeout: self.request_timeout,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address to listen on (`--listen` is the same flag).
    #[arg(
        long = "web.listen-address",
        visible_alias = "listen",
        value_name = "ADDR",
        default_value = "0.0.0.0:9754"
    )]
    pub listen: SocketAddr,

    /// Path under which to expose the metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub web_telemetry_path: String,

    /// Prometheus exporter-toolkit web configuration (TLS, client certificates,
    /// basic auth), as used by node_exporter. /healthz and /readyz need no auth.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Time a new connection (TLS handshake included), or a request begun on a
    /// kept-alive one, has to send complete request headers before it is closed.
    #[arg(long = "web.header-read-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub web_header_read_timeout: Duration,

    /// Time a kept-alive connection may wait for its next request, and a response
    /// may go without the client reading any of it, before the connection is closed.
    #[arg(long = "web.idle-timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub web_idle_timeout: Duration,

    /// Most connections open at once. At the cap a new connection replaces the one
    /// that has waited longest without a request in flight; if every connection
    /// has one, it waits. Lowered to fit the open-file limit.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub web_max_connections: u32,

    /// Serve a `kubectl get nodes -o json` dump instead of a cluster's nodes; it is
    /// reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub nodes_file: Option<PathBuf>,

    /// A saved Nublado `PrepullerStatus`, read in place of the `nublado` source's
    /// URL (or as that source when the configuration has none), again at the
    /// source's interval; as for `check`.
    #[arg(long, value_name = "FILE")]
    pub nublado_file: Option<PathBuf>,

    /// How to follow the cluster: a watch (events as they happen) or periodic
    /// paginated lists.
    #[arg(long, value_enum, default_value_t = Mode::Watch)]
    pub mode: Mode,

    /// Time between lists in poll mode (e.g. 30s, 2m); in watch mode, between the
    /// lists that replace a watch RBAC forbids.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Time between reads of every node's configz with --kubelet-configz (new
    /// nodes are read as they appear).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub kubelet_configz_interval: Duration,

    /// Time between reads of every node's stats/summary with --kubelet-stats.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub kubelet_stats_interval: Duration,

    /// Read the node agents (`imagecap-exporter agent`) behind this Service, found
    /// through its EndpointSlices: the runtime's complete image list per node, so
    /// that images hidden by the cap are told from absent ones. Needs RBAC list and
    /// watch on endpointslices in that namespace.
    #[arg(long, value_name = "NAMESPACE/SERVICE", value_parser = parse_agents)]
    pub agents: Option<(String, String)>,

    /// Saved node-agent answers (`/v1/images` bodies, as one JSON array) in place
    /// of live agents, as `check --agents-file` reads them: read once the nodes
    /// are in, and again every --agents-interval.
    #[arg(long, value_name = "FILE", conflicts_with = "agents")]
    pub agents_file: Option<PathBuf>,

    /// The agents' EndpointSlice port, by name (the only port when there is one).
    #[arg(long, value_name = "NAME", default_value = "http-metrics")]
    pub agents_port_name: String,

    /// Time between reads of every agent.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub agents_interval: Duration,

    /// Limit for one agent read, body included.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub agents_timeout: Duration,

    /// Agent reads in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub agents_concurrency: u16,

    /// Largest agent answer accepted (after decompression); a larger one is an
    /// error for that node. (About 50,000 images; it is decoded as it arrives,
    /// so the size costs time, not memory.)
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub agents_max_bytes: u64,

    /// Oldest runtime answer trusted: an agent whose runtime has not answered for
    /// longer (it serves its last list) counts as no report.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub agents_max_age: Duration,

    /// Read the agents over HTTPS (their --web.config.file sets TLS).
    #[arg(long)]
    pub agents_https: bool,

    /// CA bundle (PEM) to verify the agents' certificates with, added to the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    pub agents_ca_file: Option<PathBuf>,

    /// Basic-auth user for the agents (with --agents-password-file).
    #[arg(long, value_name = "USER", requires = "agents_password_file")]
    pub agents_username: Option<String>,

    /// File holding the agents' basic-auth password; read again on every round.
    #[arg(long, value_name = "FILE", requires = "agents_username")]
    pub agents_password_file: Option<PathBuf>,

    /// How often --nodes-file is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub file_check_interval: Duration,

    /// Largest --nodes-file accepted (e.g. 256MiB, 64Mi, 1000000); a larger file is
    /// an error, counted and logged, and the last good data is kept.
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_nodes_file_bytes: u64,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// A `kubectl get nodes -o json` dump, or `-` for standard input. Without it the
    /// cluster's nodes are listed (kubeconfig or in-cluster config).
    #[arg(long, value_name = "FILE|-")]
    pub nodes_file: Option<PathBuf>,

    /// A saved Nublado `PrepullerStatus` (`GET .../nublado/spawner/v1/prepulls`),
    /// used in place of the `nublado` source's URL, or as that source when the
    /// configuration has none.
    #[arg(long, value_name = "FILE")]
    pub nublado_file: Option<PathBuf>,

    /// Saved node-agent answers (`/v1/images` bodies, as one JSON array): the
    /// runtimes' complete image lists, to tell images hidden by the cap from
    /// absent ones offline.
    #[arg(long, value_name = "FILE")]
    pub agents_file: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print, for each node with a saved agent answer, what the agent's pruning
    /// would remove now and why every other image stays, instead of the report.
    /// The answers must come from agents with pruning enabled (a dry run is
    /// enough): they carry the containers' use of each image.
    #[arg(long, requires = "agents_file")]
    pub prune_plan: bool,

    /// The agent's configuration file whose `prune` block `--prune-plan` applies
    /// (default: the defaults, a target of the cap in force minus 5).
    #[arg(long, value_name = "FILE", requires = "prune_plan")]
    pub prune_config: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The node this agent runs on, the `node` label of every series (the chart
    /// sets it from the downward API, spec.nodeName).
    #[arg(long, value_name = "NAME", env = "NODE_NAME", value_parser = parse_node_name)]
    pub node_name: String,

    /// The container runtime's CRI socket: `unix:///PATH` or a bare path
    /// (CRI-O: unix:///var/run/crio/crio.sock).
    #[arg(long, value_name = "ENDPOINT", default_value = "unix:///run/containerd/containerd.sock", value_parser = parse_endpoint)]
    pub cri_endpoint: std::path::PathBuf,

    /// Time between two readings of the runtime's images.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Limit for one CRI call (connecting included).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub cri_timeout: Duration,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9755")]
    pub listen: SocketAddr,

    /// The agent's configuration file (YAML): its `prune` block. Without it,
    /// pruning is off.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The exporter's base URL (`http[s]://HOST:PORT`), asked for the images wanted
    /// on this node (`/v1/wanted`) before each pruning run. Without an answer, a
    /// run removes nothing.
    #[arg(long, value_name = "URL")]
    pub exporter_url: Option<String>,

    /// Basic-auth user for the exporter.
    #[arg(long, value_name = "USER", requires = "exporter_password_file")]
    pub exporter_username: Option<String>,

    /// File holding the basic-auth password for the exporter (read on every request).
    #[arg(long, value_name = "FILE", requires = "exporter_username")]
    pub exporter_password_file: Option<PathBuf>,

    /// CA bundle (PEM) to verify the exporter's certificate with, added to the
    /// system's.
    #[arg(long, value_name = "FILE")]
    pub exporter_ca_file: Option<PathBuf>,

    /// Limit for one request to the exporter.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub exporter_timeout: Duration,

    #[command(flatten)]
    pub web: WebArgs,
}

/// The HTTP server's flags, as `serve` has them.
#[derive(Args, Debug, Clone)]
pub struct WebArgs {
    /// Prometheus exporter-toolkit web configuration (TLS, client certificates,
    /// basic auth), as used by node_exporter. /healthz and /readyz need no auth.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Time a new connection (TLS handshake included), or a request begun on a
    /// kept-alive one, has to send complete request headers before it is closed.
    #[arg(long = "web.header-read-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a kept-alive connection may wait for its next request, and a response
    /// may go without the client reading any of it, before the connection is closed.
    #[arg(long = "web.idle-timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most connections open at once (see `serve --help`). Lowered to fit the
    /// open-file limit.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

/// The name under which the binary is a kubectl plugin: `kubectl imagecap` runs
/// it, with [`KubectlArgs`].
pub const KUBECTL_PLUGIN: &str = "kubectl-imagecap";

/// Whether the program was started as [`KUBECTL_PLUGIN`] (its argv\[0\] file name).
pub fn is_kubectl_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_stem())
        .is_some_and(|name| name == KUBECTL_PLUGIN)
}

/// `kubectl imagecap`: `check` against a kubeconfig context, with kubectl's flag
/// names.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl imagecap",
    bin_name = "kubectl imagecap",
    version = crate::version::VERSION,
    long_version = crate::version::LONG_VERSION,
    about = "Prints, for the cluster of a kubeconfig context, how close each node is to the \
             kubelet's nodeStatusMaxImages cap and which prepull images nodes do not report. \
             Exit 0: none at the cap, none missing; 1: some are; 2: bad input."
)]
pub struct KubectlArgs {
    /// The kubeconfig context to use [default: the current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig file [default: KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Only consider nodes matching this label selector (same as --node-selector).
    #[arg(
        short = 'l',
        long = "selector",
        value_name = "SELECTOR",
        conflicts_with = "node_selector"
    )]
    pub selector: Option<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// A saved Nublado `PrepullerStatus`, as for `check`.
    #[arg(long, value_name = "FILE")]
    pub nublado_file: Option<PathBuf>,

    /// Saved node-agent answers (one JSON array of `/v1/images` bodies), as for
    /// `check`.
    #[arg(long, value_name = "FILE")]
    pub agents_file: Option<PathBuf>,

    /// What each agent's pruning would remove now, as `check --prune-plan`.
    #[arg(long, requires = "agents_file")]
    pub prune_plan: bool,

    /// The agent configuration `--prune-plan` applies, as for `check`.
    #[arg(long, value_name = "FILE", requires = "prune_plan")]
    pub prune_config: Option<PathBuf>,

    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl KubectlArgs {
    /// The `check` it runs, and the client it runs it with.
    pub fn into_check(self) -> (CheckArgs, crate::client::kubernetes::ClientOptions) {
        let mut common = self.common;
        if self.selector.is_some() {
            common.node_selector = self.selector;
        }
        (
            CheckArgs {
                common,
                nodes_file: None,
                nublado_file: self.nublado_file,
                agents_file: self.agents_file,
                format: self.output,
                prune_plan: self.prune_plan,
                prune_config: self.prune_config,
            },
            crate::client::kubernetes::ClientOptions {
                kubeconfig: self.kubeconfig,
                context: self.context,
            },
        )
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Watch,
    Poll,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A byte count: digits with an optional binary (KiB, Ki, MiB, Mi, GiB, Gi) or
/// decimal (kB, K, MB, M, GB, G) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 256MiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "kB" | "K" | "k" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(bytes)
}

fn parse_agents(s: &str) -> Result<(String, String), crate::nodes::agents::ServiceRefError> {
    crate::nodes::agents::parse_service_ref(s)
}

fn parse_node_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

/// Paths the exporter serves itself, which the metrics cannot take.
const RESERVED_PATHS: [&str; 3] = ["/", "/healthz", "/readyz"];

/// A path for the metrics: absolute, one that a router can match exactly (no
/// query, fragment, wildcard or empty segment), and none of [`RESERVED_PATHS`].
pub fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with /"));
    }
    let path = match s.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "{s:?} is taken ({} are served already)",
            RESERVED_PATHS.join(", ")
        ));
    }
    if let Some(c) = path.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '{' | '}' | '*' | ':')
    }) {
        return Err(format!("{s:?} contains {c:?}"));
    }
    if path.contains("//") {
        return Err(format!("{s:?} has an empty segment"));
    }
    Ok(path.to_string())
}

fn parse_max_images(s: &str) -> Result<i64, String> {
    let n: i64 = s.parse().map_err(|e| format!("{e}"))?;
    crate::config::validate_max_images(n).map_err(|e| e.to_string())
}

/// Exit status for bad input: flags, config, or node data that cannot be read.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Prints `message` and returns [`EXIT_BAD_INPUT`]: how every command ends on
/// input it cannot use.
pub fn exit_bad_input(message: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("imagecap-exporter: {message}");
    std::process::ExitCode::from(EXIT_BAD_INPUT)
}

/// The socket path of a CRI endpoint: `unix:///PATH` (what the kubelet's
/// `--container-runtime-endpoint` and crictl take) or a bare path. Other schemes
/// (`tcp://`, `npipe://`) are refused: the runtimes serve CRI on a unix socket.
pub fn parse_endpoint(s: &str) -> Result<PathBuf, String> {
    let s = s.trim();
    let path = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("unix") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{s:?}: unsupported scheme {scheme:?}; the CRI endpoint must be a unix socket (unix:///PATH or /PATH)"
            ));
        }
        None if s.starts_with("unix:") => &s["unix:".len()..],
        None => s,
    };
    if path.is_empty() {
        return Err(format!("{s:?}: no socket path"));
    }
    if path.contains('\0') {
        return Err(format!("{s:?}: the path holds a NUL byte"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn endpoints() {
        let ok = |s: &str| parse_endpoint(s).map(|p| p.display().to_string());
        assert_eq!(
            ok("unix:///run/containerd/containerd.sock").as_deref(),
            Ok("/run/containerd/containerd.sock")
        );
        assert_eq!(
            ok("unix:///var/run/crio/crio.sock").as_deref(),
            Ok("/var/run/crio/crio.sock")
        );
        assert_eq!(ok("/tmp/x/cri.sock").as_deref(), Ok("/tmp/x/cri.sock"));
        assert_eq!(ok("UNIX:///a.sock").as_deref(), Ok("/a.sock"));
        assert_eq!(ok("unix:/a.sock").as_deref(), Ok("/a.sock"));
        assert_eq!(ok("  run/c.sock ").as_deref(), Ok("run/c.sock"));
        for bad in [
            "",
            "unix://",
            "unix:",
            "tcp://127.0.0.1:1234",
            "npipe:////./pipe/containerd",
            "http://localhost/x",
            "/a\0b",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
        let err = parse_endpoint("tcp://127.0.0.1:1").unwrap_err();
        assert!(err.contains("unix socket"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn a_path_and_its_unix_url_are_the_same_socket(path in "/[a-zA-Z0-9_./-]{0,40}") {
            proptest::prop_assert_eq!(
                parse_endpoint(&format!("unix://{path}")),
                parse_endpoint(&path)
            );
            proptest::prop_assert_eq!(parse_endpoint(&path), Ok(PathBuf::from(&path)));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_endpoint(&s);
        }
    }

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
        KubectlArgs::command().debug_assert();
    }

    #[test]
    fn the_plugin_is_known_by_its_name() {
        use std::ffi::OsStr;
        for yes in [
            "kubectl-imagecap",
            "/usr/local/bin/kubectl-imagecap",
            "./kubectl-imagecap",
        ] {
            assert!(is_kubectl_plugin(Some(OsStr::new(yes))), "{yes}");
        }
        for no in ["imagecap-exporter", "/bin/kubectl", "kubectl-imagecapx", ""] {
            assert!(!is_kubectl_plugin(Some(OsStr::new(no))), "{no}");
        }
        assert!(!is_kubectl_plugin(None));
    }

    #[test]
    fn kubectl_flags() {
        let args = KubectlArgs::try_parse_from([
            "kubectl-imagecap",
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
            "-l",
            "pool=lab",
            "-o",
            "json",
            "--default-max-images",
            "-1",
        ])
        .unwrap();
        let (check, client) = args.into_check();
        assert_eq!(client.context.as_deref(), Some("prod"));
        assert_eq!(
            client.kubeconfig.as_deref(),
            Some(std::path::Path::new("/k"))
        );
        assert_eq!(check.common.node_selector.as_deref(), Some("pool=lab"));
        assert_eq!(check.common.default_max_images, Some(-1));
        assert_eq!(check.format, Format::Json);
        assert!(check.nodes_file.is_none());
        let (check, client) = KubectlArgs::try_parse_from(["k", "--selector=a", "--output=table"])
            .unwrap()
            .into_check();
        assert_eq!(check.common.node_selector.as_deref(), Some("a"));
        assert_eq!(check.format, Format::Table);
        assert!(client.context.is_none() && client.kubeconfig.is_none());
        for bad in [
            vec!["k", "-l", "a", "--node-selector", "b"],
            vec!["k", "-o", "yaml"],
            vec!["k", "serve"],
        ] {
            assert!(KubectlArgs::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["x", "serve"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.listen.to_string(), "0.0.0.0:9754");
        assert_eq!(s.web_telemetry_path, "/metrics");
        assert_eq!(s.mode, Mode::Watch);
        assert_eq!(s.poll_interval, Duration::from_secs(60));
        assert_eq!(s.common.default_max_images, None);
        assert_eq!(s.web_header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.web_idle_timeout, Duration::from_secs(120));
        assert_eq!(s.web_max_connections, 512);
        assert_eq!(s.max_nodes_file_bytes, 256 << 20);
    }

    #[test]
    fn agent_defaults_and_node_name() {
        let cli = Cli::try_parse_from(["x", "agent", "--node-name", "worker-1"]).unwrap();
        let Command::Agent(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.node_name, "worker-1");
        assert_eq!(
            a.cri_endpoint,
            std::path::Path::new("/run/containerd/containerd.sock")
        );
        assert_eq!(a.listen.to_string(), "0.0.0.0:9755");
        assert_eq!(a.interval, Duration::from_secs(60));
        assert_eq!(a.cri_timeout, Duration::from_secs(10));
        assert_eq!(a.web.header_read_timeout, Duration::from_secs(10));
        assert_eq!(a.web.config_file, None);
        for argv in [
            vec!["x", "agent", "--node-name", " "],
            vec![
                "x",
                "agent",
                "--node-name",
                "n",
                "--cri-endpoint",
                "tcp://1.2.3.4:1",
            ],
            vec!["x", "agent", "--node-name", "n", "--interval", "0s"],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn exporter_toolkit_flag_names() {
        for flag in ["--web.listen-address", "--listen"] {
            let cli = Cli::try_parse_from(["x", "serve", flag, "127.0.0.1:9999"]).unwrap();
            let Command::Serve(s) = cli.command else {
                panic!()
            };
            assert_eq!(s.listen.to_string(), "127.0.0.1:9999", "{flag}");
        }
        let cli =
            Cli::try_parse_from(["x", "serve", "--web.telemetry-path", "/prom/metrics/"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.web_telemetry_path, "/prom/metrics");
    }

    #[test]
    fn telemetry_paths() {
        for good in ["/metrics", "/x", "/a/b-c_d.e"] {
            assert_eq!(parse_telemetry_path(good).as_deref(), Ok(good));
        }
        for bad in [
            "", "metrics", "/", "//", "/healthz", "/readyz/", "/a?b", "/a b", "/{x}", "/*x",
            "/a//b", "/:id",
        ] {
            assert!(parse_telemetry_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_names_revision_and_compiler() {
        let e = Cli::try_parse_from(["x", "--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let text = e.to_string();
        assert!(text.starts_with("imagecap-exporter "), "{text}");
        assert!(text.contains(crate::version::VERSION), "{text}");
        assert!(
            text.contains(&format!("revision: {}", crate::version::REVISION)),
            "{text}"
        );
        assert!(text.contains(crate::version::RUSTC_VERSION), "{text}");
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("5MB"), Ok(5_000_000));
        for bad in [
            "",
            "MiB",
            "0",
            "-1",
            "1.5MiB",
            "3 parsecs",
            "99999999999999GiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_values() {
        for argv in [
            vec!["x", "serve", "--default-max-images", "-2"],
            vec!["x", "serve", "--poll-interval", "0s"],
            vec!["x", "serve", "--poll-interval", "soon"],
            vec!["x", "serve", "--mode", "push"],
            vec!["x", "check", "--format", "xml"],
            vec!["x", "serve", "--page-size", "0"],
            vec!["x", "serve", "--web.max-connections", "0"],
            vec!["x", "serve", "--web.header-read-timeout", "0s"],
            vec!["x", "serve", "--max-nodes-file-bytes", "lots"],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
        let cli = Cli::try_parse_from(["x", "serve", "--default-max-images", "-1"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.common.default_max_images, Some(-1));
    }

    #[test]
    fn log_format_goes_before_or_after_the_command() {
        for argv in [
            vec!["x", "--log-format", "json", "check"],
            vec!["x", "check", "--log-format", "json"],
        ] {
            assert_eq!(
                Cli::try_parse_from(argv).unwrap().log_format,
                LogFormat::Json
            );
        }
    }
}
