//! Generated protobuf and gRPC code for `switchboard.v1`. Only `api/` and `app.rs` import it.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("switchboard.v1");

/// Encoded descriptors of our protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));
