//! Shared by the integration tests: the fake API server and a running exporter.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod process;
pub mod readme;

#[allow(unused_imports)]
pub use process::{ExporterProcess, kubeconfig, proc_status};
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Installs the TLS crypto provider the exporter uses (ring), once per process:
/// reqwest, built without one of its own, needs it before its first client.
pub fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Upper bound for any single wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `imagecap-exporter serve` on an ephemeral loopback port, killed when dropped.
pub struct Exporter {
    process: ExporterProcess,
    pub addr: String,
}

impl Exporter {
    /// Starts the exporter with `args` and `env`; panics with its log if it does
    /// not come up.
    pub fn start(args: &[&str], env: &[(&str, &Path)]) -> Exporter {
        Exporter::start_with(
            Path::new(env!("CARGO_BIN_EXE_imagecap-exporter")),
            args,
            env,
        )
    }

    /// [`Exporter::start`] through `program`, a wrapper that execs the exporter
    /// with the arguments it is given (to set limits first).
    pub fn start_with(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> Exporter {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let program = program.to_str().expect("a UTF-8 path");
        let process = ExporterProcess::start(program, &args, env.iter().copied())
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = process.addr.clone();
        Exporter { process, addr }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        init_tls();
        let r = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200);
        body
    }

    /// Waits until `/metrics` satisfies `pred`; panics with the last body after
    /// [`DEADLINE`].
    pub async fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_metrics_for(what, DEADLINE, pred).await
    }

    /// [`Exporter::wait_metrics`] with a deadline of its own, for a step whose
    /// duration is not what the test is about (reading a huge file in a debug
    /// build on a loaded machine).
    pub async fn wait_metrics_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let body = self.metrics().await;
            if pred(&body) {
                return body;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out waiting for {what}; last /metrics:\n{body}\nlogs:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let start = Instant::now();
        while self.get("/readyz").await.0 != 200 {
            assert!(
                start.elapsed() < DEADLINE,
                "never ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate();
        self.wait_exit()
    }

    /// Waits for the process to exit, up to [`DEADLINE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.process
            .wait_exit(DEADLINE)
            .expect("did not exit after SIGTERM")
    }
}

/// The value of the first sample of family `name` in an exposition that carries
/// all of `labels` (and maybe more), if any.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (series_labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (l, v) = r.rsplit_once("} ")?;
                (l, v)
            }
            None => ("", rest.strip_prefix(' ')?),
        };
        // Label values here hold no `",` sequence, so splitting there is exact.
        let have: Vec<String> = series_labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.ends_with('"') {
                    p.to_string()
                } else {
                    format!("{p}\"")
                }
            })
            .collect();
        if !wanted.iter().all(|w| have.contains(w)) {
            return None;
        }
        value.split(' ').next()?.parse().ok()
    })
}

pub fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
