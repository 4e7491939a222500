//! Compiles the protos with protox (pure Rust: no `protoc` needed) and generates prost
//! messages and tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/envoy/service/discovery/v3/discovery.proto",
        "proto/membrane/v1/resources.proto",
        "proto/membrane/ca/v1/ca.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
