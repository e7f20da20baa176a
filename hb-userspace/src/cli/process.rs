//! What every hb binary's `main` does around its command: logs to stderr
//! (`RUST_LOG` filters, default `info`; the XDP program's aya-log records
//! arrive through the `log` crate and are bridged here), runs the command
//! on a two-thread runtime, and prints an error once, with its causes.

use std::{io::IsTerminal, process::ExitCode};

/// Runs `command` to completion as a process: the exit code says whether
/// it succeeded.
pub fn run_to_exit(command: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
