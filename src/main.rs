//! The `herald` binary: the daemon (`herald serve`) and its terminal client.

use std::process::ExitCode;

/// mimalloc: the hot paths allocate many small, short-lived records across threads, where
/// glibc's allocator spends a large share of the CPU consolidating and unlinking chunks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    herald::cli::main()
}
