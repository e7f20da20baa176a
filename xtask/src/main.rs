//! `cargo xtask`: the project's automation, one module per subcommand.
//!
//! Every command but `setup` first runs the setup checks (cheap once the
//! machine is set up), so a fresh machine needs nothing but
//! `cargo xtask test`.

mod bench;
mod build;
mod demo;
mod fuzz;
mod paths;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, test and demonstrate hb, the eBPF/XDP heartbeat monitor.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the build and test prerequisites (skips what is done).
    ///
    /// rust-src for the nightly toolchain, bpf-linker (built against the
    /// nightly's LLVM into <target-dir>/toolchain) and iproute2.
    Setup,
    /// Build the hb binary (release, eBPF object included).
    Build,
    /// Build, then run target/release/hb with the given arguments.
    ///
    /// Example: `cargo xtask run -- agent --config hb.toml` (`agent` needs
    /// root).
    Run {
        /// Arguments passed to hb.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then check formatting, run clippy, rustdoc and every test (root).
    ///
    /// Root is needed because the XDP and network-namespace tests load BPF
    /// programs and create namespaces. Stops at the first failure.
    Test,
    /// Show hb detecting a crash, a recovery and a graceful leave (root).
    ///
    /// Builds hb, then runs the agent and three senders in a throw-away lab
    /// of network namespaces; everything is removed at the end.
    Demo(demo::Options),
    /// Measure hb against its performance targets (root; ~10 min).
    ///
    /// Builds hb, then measures the XDP cost per packet (without and with
    /// authentication), a million hostile packets, the sweep vs node
    /// count, loss and CPU per heartbeat over veth (XDP vs socket), a
    /// million nodes held, detection latency, and the detection quality of
    /// the timeout and phi detectors, in throw-away network namespaces
    /// (hbbench-*). Prints a table per phase and a summary of the targets;
    /// writes bench/results/<date>.json and SVG plots.
    Bench(bench::Options),
    /// Fuzz the wire decoder and the config parser (nightly; not in CI).
    ///
    /// Installs cargo-fuzz into <target-dir>/toolchain if missing, seeds
    /// empty corpora in fuzz/corpus, then runs each cargo-fuzz target of
    /// fuzz/ for --time seconds (default 60). A crash fails the command and
    /// names the input saved in fuzz/artifacts/<target>/.
    Fuzz(fuzz::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Command::Build => build::run().map(|_| ExitCode::SUCCESS),
        Command::Run { args } => run::run(&args),
        Command::Test => test::run().map(|()| ExitCode::SUCCESS),
        Command::Demo(options) => demo::run(&options).map(|()| ExitCode::SUCCESS),
        Command::Bench(options) => bench::run(&options).map(|()| ExitCode::SUCCESS),
        Command::Fuzz(options) => fuzz::run(&options).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
