//! `hb`: parses the command line ([`hb::cli`]) and runs the subcommand.

use std::process::ExitCode;

use clap::Parser;
use hb::cli::{Cli, run_to_exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_to_exit(cli.command.execute())
}
