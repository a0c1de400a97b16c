//! Compiles `proto/herald/v1/*.proto` with protox (no system `protoc`) and writes the file
//! descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = fs::read_dir("proto/herald/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("herald_descriptor.bin"), fds.encode_to_vec())?;
    // An event's endpoint is filled only when an event is read out with it: boxed, an `Event`
    // is a fifth of its inline size, and every message's delivery events are moved through
    // batches by value.
    tonic_prost_build::configure().boxed(".herald.v1.Event.endpoint").compile_fds(fds)?;
    Ok(())
}
