//! Generated protobuf types and gRPC stubs for `herald.v1`.
//!
//! Records are also stored as these messages (prost-encoded), so the stored schema evolves
//! by protobuf's compatibility rules.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

/// The encoded `FileDescriptorSet` of every `herald.v1` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
