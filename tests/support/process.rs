//! `imagecap-exporter serve` as a child process, shared by the integration tests
//! (`tests/support/mod.rs`) and the scale benchmark (`benches/scale/`): start it on
//! an ephemeral loopback port, learn the address from its JSON log, read its
//! memory and CPU from /proc, kill it when dropped.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the exporter may take to log its listen address.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

pub struct ExporterProcess {
    child: Child,
    pub addr: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ExporterProcess {
    /// Runs `binary --log-format json serve --listen 127.0.0.1:0 ARGS` with `envs`
    /// (and no in-cluster configuration), and waits for its "listening" line.
    pub fn start<I, K, V>(binary: &str, args: &[&OsStr], envs: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut p = ExporterProcess {
            child,
            addr: String::new(),
            logs,
        };
        let start = Instant::now();
        while p.addr.is_empty() {
            if let Some(status) = p.exited() {
                return Err(format!("exporter exited with {status}:\n{}", p.log_text()));
            }
            if start.elapsed() > LISTEN_DEADLINE {
                return Err(format!("no listen address logged:\n{}", p.log_text()));
            }
            for line in p.logs.lock().unwrap().iter() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && v["fields"]["message"] == "listening"
                {
                    p.addr = v["fields"]["addr"].as_str().unwrap_or_default().to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig pointing at `server`, with no credentials.
pub fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
         current-context: fake\n"
    )
}

/// Writes [`kubeconfig_text`] into `dir` and returns its path.
pub fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig_text(server)).expect("write the kubeconfig");
    path
}

/// Resident and peak resident memory of a process, in MiB (VmRSS, VmHWM).
pub fn proc_status(pid: u32) -> (f64, f64) {
    let [rss, hwm] = status_mib(pid, ["VmRSS:", "VmHWM:"]);
    (rss, hwm)
}

/// Of a process's resident memory, the MiB mapped from files (its binary and
/// libraries: page cache, shared and reclaimable) and the MiB of its own
/// (anonymous: heap, stacks).
pub fn rss_file_anon(pid: u32) -> (f64, f64) {
    let [file, anon] = status_mib(pid, ["RssFile:", "RssAnon:"]);
    (file, anon)
}

/// Fields of `/proc/PID/status` given in KiB, in MiB (NaN when absent).
fn status_mib<const N: usize>(pid: u32, names: [&str; N]) -> [f64; N] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    names.map(|name| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    })
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}
