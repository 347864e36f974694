//! Shared by the integration tests: the fake API server and a running exporter.
#![allow(dead_code)]

pub mod fake_apiserver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A kubeconfig pointing at `server`, written into `dir`.
pub fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}

/// `imagecap-exporter serve` as a child process on an ephemeral loopback port,
/// killed when dropped.
pub struct Exporter {
    child: Child,
    pub addr: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Exporter {
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
        let mut cmd = Command::new(program);
        cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the exporter");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut exporter = Exporter {
            child,
            addr: String::new(),
            logs,
        };
        let start = Instant::now();
        while exporter.addr.is_empty() {
            assert!(
                start.elapsed() < DEADLINE,
                "no listen address logged:\n{}",
                exporter.log_text()
            );
            if let Some(status) = exporter.child.try_wait().unwrap() {
                panic!("exporter exited with {status}:\n{}", exporter.log_text());
            }
            for line in exporter.logs.lock().unwrap().iter() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["fields"]["message"] == "listening" {
                    exporter.addr = v["fields"]["addr"].as_str().unwrap().to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        exporter
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
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
        let start = Instant::now();
        loop {
            let body = self.metrics().await;
            if pred(&body) {
                return body;
            }
            assert!(
                start.elapsed() < DEADLINE,
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
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit()
    }

    /// Waits for the process to exit, up to [`DEADLINE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name{labels}` in an exposition, if present.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", l.join(","))
    };
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(&key)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

pub fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
