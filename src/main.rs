//! The `imgfs` command: parse arguments, run, print the error chain on one line and
//! choose the exit code. Everything else lives in the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = imgfs::cli::Cli::parse();
    match imgfs::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain with ": ", keeping the error on one line.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("imgfs: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
