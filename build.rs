//! Generates the gRPC code from `proto/` with protox (a Rust protobuf compiler), so that a
//! fresh machine builds with cargo alone, no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        [
            "proto/raft.proto",
            "proto/cluster.proto",
            "proto/etcd_kv.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
