//! Compiles `proto/*.proto` with protox (pure Rust, no protoc binary) and generates the tonic
//! client and server code from the resulting file descriptor set.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/borg/v1/borgmaster.proto", "proto/borg/v1/borglet.proto", "proto/borg/v1/raft.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=proto/borg/v1/types.proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out.join("borg_descriptor.bin");
    std::fs::write(&fds_path, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&fds_path)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
