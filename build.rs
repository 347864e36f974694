//! Build-time work: the facts the binary reports (`--version`,
//! `imagecap_build_info`) and the node agent's CRI client.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    version_info();
    compile_cri_proto();
}

/// Sets `IMAGECAP_REVISION` (the git commit, 12 hex digits, or `unknown` outside a
/// git checkout; the `IMAGECAP_REVISION` environment variable wins, for builds from
/// a tarball or in a container) and `IMAGECAP_RUSTC_VERSION` (`rustc --version`).
fn version_info() {
    println!("cargo:rerun-if-env-changed=IMAGECAP_REVISION");
    println!("cargo:rerun-if-changed=build.rs");
    let revision = match std::env::var("IMAGECAP_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => git_revision().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=IMAGECAP_REVISION={revision}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMAGECAP_RUSTC_VERSION={rustc_version}");
}

/// The checked-out commit, and the files whose change means another one: HEAD,
/// the ref it points to (or packed-refs, where the ref is packed).
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head.into());
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &reference])
    {
        watched.push(path.into());
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watched.push(packed.into());
    }
    // A file that does not exist would make cargo run this script on every build.
    for path in watched.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(revision)
}

/// Generates the CRI `runtime.v1` ImageService client the node agent uses from
/// `proto/api.proto`. The proto is parsed by `protox` (a protobuf compiler in
/// Rust), so building needs no `protoc` on the machine.
fn compile_cri_proto() {
    const PROTO: &str = "proto/api.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = match protox::compile([PROTO], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("{PROTO}: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)
    {
        panic!("generating the CRI client from {PROTO}: {e}");
    }
}
