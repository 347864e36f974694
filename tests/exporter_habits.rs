//! What users of node_exporter and kube-state-metrics expect of an exporter: the
//! `process_*` families (checked by promtool, RSS against /proc), API client
//! request metrics, the exporter-toolkit flag names, `--version`, and the binary
//! as the kubectl plugin `kubectl imagecap`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::fake_apiserver::{Configz, FakeApiServer, filler, node};
use support::{Exporter, kubeconfig, sample};

const BIN: &str = env!("CARGO_BIN_EXE_imagecap-exporter");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn example_args() -> [String; 4] {
    [
        "--config".into(),
        format!("{EXAMPLES}/config.yaml"),
        "--nodes-file".into(),
        format!("{EXAMPLES}/nodes.json"),
    ]
}

/// VmRSS of a process, in bytes.
fn vm_rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmRSS line");
    kib * 1024.0
}

/// CPU seconds a process has used (user + system), from /proc, at the kernel's
/// 100 ticks a second.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces: state is field 3,
    // utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The soft open-file limit of a process.
fn max_open_files(pid: u32) -> f64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .unwrap();
    if soft == "unlimited" {
        -1.0
    } else {
        soft.parse().unwrap()
    }
}

/// `promtool check metrics` on `text`: its exit status and output.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

#[tokio::test]
async fn process_metrics_are_plausible_and_promtool_finds_nothing() {
    let args = example_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = Exporter::start(&args, &[]);
    exporter.wait_ready().await;
    let text = exporter.metrics().await;
    let rss = vm_rss(exporter.pid());

    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool:\n{report}");

    let value = |name: &str| sample(&text, name, &[]).unwrap_or_else(|| panic!("{name}"));
    let exported = value("process_resident_memory_bytes");
    assert!(
        (exported - rss).abs() <= rss * 0.10,
        "process_resident_memory_bytes {exported} vs VmRSS {rss}"
    );
    assert_eq!(value("process_max_fds"), max_open_files(exporter.pid()));
    let fds = value("process_open_fds");
    assert!((3.0..1000.0).contains(&fds), "{fds}");
    assert!(value("process_virtual_memory_bytes") >= exported);
    // A start on the example data can take less than one tick of CPU: compare
    // with the kernel's own count, read after the scrape.
    let cpu = value("process_cpu_seconds_total");
    let kernel = cpu_seconds(exporter.pid());
    assert!(
        cpu >= 0.0 && cpu <= kernel + 0.011,
        "process_cpu_seconds_total {cpu} vs /proc {kernel}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 120.0,
        "started {started}, now {now}"
    );
    // Read afresh: a second scrape sees at least the CPU time of the first.
    let again = exporter.metrics().await;
    assert!(sample(&again, "process_cpu_seconds_total", &[]).unwrap() >= cpu);
}

#[tokio::test]
async fn every_api_request_is_counted_by_verb_and_code() {
    let fake =
        FakeApiServer::start(vec![node("a", &[], &filler(3)), node("b", &[], &filler(4))]).await;
    fake.set_configz("a", Configz::Cap(80));
    fake.set_configz("b", Configz::Status(403));
    // The first list fails; the source retries. (The kube client itself retries
    // 429, 503 and 504 answers, which then count once, with the last code.)
    fake.fail_next(&[500]);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &fake.url());
    let exporter = Exporter::start(
        &["--kubelet-configz", "--page-size", "1"],
        &[("KUBECONFIG", kc.as_path())],
    );
    exporter.wait_ready().await;
    let count = |text: &str, verb: &str, code: &str| {
        sample(
            text,
            "imagecap_kube_requests_total",
            &[("verb", verb), ("code", code)],
        )
        .unwrap_or(0.0)
    };
    let text = exporter
        .wait_metrics("a watch and both configz reads counted", |t| {
            count(t, "watch", "200") >= 1.0
                && count(t, "get", "200") >= 1.0
                && count(t, "get", "403") >= 1.0
        })
        .await;
    // Two nodes at one per page: at least two list pages, and the failed one.
    assert!(count(&text, "list", "200") >= 2.0, "{text}");
    assert!(count(&text, "list", "500") >= 1.0, "{text}");
    let histogram_count = |verb: &str| {
        sample(
            &text,
            "imagecap_kube_request_duration_seconds_count",
            &[("verb", verb)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        histogram_count("list"),
        count(&text, "list", "200") + count(&text, "list", "500")
    );
    assert!(histogram_count("watch") >= 1.0);
    assert!(
        text.contains("imagecap_kube_request_duration_seconds_bucket{le=\"+Inf\",verb=\"list\"}"),
        "{text}"
    );
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool:\n{report}");
}

#[tokio::test]
async fn a_kube_client_that_cannot_connect_counts_errors() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &url);
    let exporter = Exporter::start(&[], &[("KUBECONFIG", kc.as_path())]);
    exporter
        .wait_metrics("a failed list counted as code=error", |t| {
            sample(
                t,
                "imagecap_kube_requests_total",
                &[("verb", "list"), ("code", "error")],
            )
            .is_some_and(|v| v >= 1.0)
        })
        .await;
}

#[tokio::test]
async fn exporter_toolkit_flag_names() {
    let mut args = example_args().to_vec();
    args.extend(["--web.telemetry-path".into(), "/prom/metrics".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The harness passes --listen; --web.listen-address is the same flag.
    let exporter = Exporter::start(&args, &[]);
    exporter.wait_ready().await;
    let (code, body) = exporter.get("/prom/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("imagecap_nodes 6"), "{body}");
    assert_eq!(exporter.get("/metrics").await.0, 404);
    let (_, page) = exporter.get("/").await;
    assert!(
        page.contains("<a href=\"prom/metrics\">/prom/metrics</a>"),
        "{page}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--web.listen-address", "127.0.0.1:0"])
        .args(["--web.telemetry-path", "/healthz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web.telemetry-path"));
}

#[test]
fn version_prints_version_revision_and_rustc() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        text.starts_with(concat!(
            "imagecap-exporter ",
            env!("CARGO_PKG_VERSION"),
            " (revision: "
        )),
        "{text}"
    );
    let revision = text
        .split("revision: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        // Built from this checkout (unless IMAGECAP_REVISION said otherwise).
        Some(head) if std::env::var_os("IMAGECAP_REVISION").is_none() => {
            assert_eq!(revision, head)
        }
        _ => assert!(!revision.is_empty()),
    }
    if rustc.starts_with("rustc ") {
        assert!(text.contains(&format!("rust version: {rustc}")), "{text}");
    }
}

/// A kubeconfig with two contexts: `dead` (the current one) at a port nothing
/// listens on, and `live` at `server`.
fn two_context_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n\
             - name: dead\n  cluster:\n    server: {dead_url}\n\
             - name: live\n  cluster:\n    server: {server}\n\
             users:\n- name: tester\n  user: {{}}\n\
             contexts:\n\
             - name: dead\n  context:\n    cluster: dead\n    user: tester\n\
             - name: live\n  context:\n    cluster: live\n    user: tester\n\
             current-context: dead\n"
        ),
    )
    .unwrap();
    path
}

/// The binary under the plugin's name, in a directory of its own.
fn plugin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kubectl-imagecap");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    link
}

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

async fn fake_cluster() -> FakeApiServer {
    let full = filler(50);
    FakeApiServer::start(vec![
        node("full-1", &[("pool", "lab")], &full),
        node("roomy-1", &[("pool", "lab")], &filler(3)),
        node("gpu-1", &[("pool", "gpu")], &filler(7)),
    ])
    .await
}

// The plugin runs as a child process while the fake API server answers on the
// test's runtime: it needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_imagecap_checks_the_chosen_context() {
    let fake = fake_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = two_context_kubeconfig(dir.path(), &fake.url());
    let plugin = plugin(dir.path());

    // --context picks the live cluster out of the kubeconfig in KUBECONFIG.
    let out = run(Command::new(&plugin)
        .args(["--context", "live"])
        .env("KUBECONFIG", &kc));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a node at its cap: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {stdout}"))
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("full-1"), "full-1 50/50");
    assert_eq!(row("roomy-1"), "roomy-1 3/50");
    assert_eq!(row("gpu-1"), "gpu-1 7/50");

    // -l and -o json, with the kubeconfig as a flag.
    let out = run(Command::new(&plugin)
        .args(["--kubeconfig", kc.to_str().unwrap(), "--context", "live"])
        .args(["-l", "pool=lab", "-o", "json"])
        .env_remove("KUBECONFIG"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut names: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["full-1", "roomy-1"]);

    // The current context (dead) is used by default: a clear failure, status 2.
    let out = run(Command::new(&plugin).env("KUBECONFIG", &kc));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listing nodes failed"), "{err}");

    // A context the kubeconfig does not have.
    let out = run(Command::new(&plugin)
        .args(["--context", "nope"])
        .env("KUBECONFIG", &kc));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    // Help names the plugin as kubectl runs it.
    let out = run(Command::new(&plugin).arg("--help"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kubectl imagecap"));

    // Through kubectl itself, when it is installed: it finds the plugin on PATH.
    if let Ok(kubectl) = which("kubectl") {
        let path = format!(
            "{}:{}",
            plugin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = run(Command::new(kubectl)
            .args(["imagecap", "--context", "live", "-o", "json"])
            .env("PATH", path)
            .env("KUBECONFIG", &kc));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["nodes"].as_array().unwrap().len(), 3);
        assert_eq!(out.status.code(), Some(1));
    } else {
        eprintln!("kubectl is not installed: `kubectl imagecap` through PATH not tried");
    }
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
