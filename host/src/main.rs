//! The `weir` command line: plugin tooling, pipeline validation, ingest.
//!
//! Exit codes: 0 success, 1 a check failed (e.g. a plugin is not
//! idempotent), 2 a usage or configuration error (named in one line).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    bound_malloc_arenas();
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

/// glibc gives threads up to 8 malloc arenas per core, and memory freed in
/// one arena stays resident for it: a query that spills at
/// `aggregate.memory_limit` still grew to 1.1 GiB at 512 MiB on 2 cores.
/// One arena per core keeps the process near the engine's pool. A
/// `MALLOC_ARENA_MAX` in the environment (glibc reads it itself) wins.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any thread other than main exists
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
