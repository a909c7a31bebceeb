//! The `weir` command line: plugin tooling, pipeline validation, ingest.
//!
//! Exit codes: 0 success, 1 a check failed (e.g. a plugin is not
//! idempotent), 2 a usage or configuration error (named in one line).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format, args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            weir::errln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
