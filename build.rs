//! Build-time code generation.

fn main() {
    compile_cri_proto();
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
