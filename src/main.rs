//! The `herald` binary: the daemon (`herald serve`) and its terminal client.

use std::process::ExitCode;

fn main() -> ExitCode {
    herald::cli::main()
}
