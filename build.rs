//! Compiles our protos with protox (pure Rust), so building Switchboard needs no system `protoc`.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/switchboard/v1/common.proto",
        "proto/switchboard/v1/chat.proto",
        "proto/switchboard/v1/embeddings.proto",
        "proto/switchboard/v1/admin.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("switchboard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
