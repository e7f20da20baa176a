//! `hb-tools bench xdp-cost|sweep|state|hostile`: in-process measurements, one
//! JSON object on stdout each.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The XDP program's cost per packet, through BPF_PROG_TEST_RUN.
    XdpCost {
        /// Distinct accepted heartbeats, each run once.
        #[arg(long, default_value_t = 100_000)]
        distinct: u32,
        /// Repeats of one packet for the other classes.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// One sweep of N up nodes over the mmapped table, and a memcpy of the
    /// bytes it reads.
    Sweep {
        #[arg(long)]
        nodes: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        /// With the phi rule, this share of the nodes is heard anew before
        /// every sweep (0.1: a million nodes beating once a second, swept
        /// every 100 ms), so each of them takes the slow path once; with
        /// 0 (the default), the timeout rule and no heartbeat: nothing to do
        /// but check.
        #[arg(long, default_value_t = 0.0)]
        phi_heard: f64,
    },
    /// The agent's state file at N nodes, before (format 1, JSON) and after
    /// (format 2, binary snapshot; the journal): save and load time, size.
    /// Written under --dir, which must be on a disk (not tmpfs).
    State {
        #[arg(long)]
        nodes: u32,
        /// Times each figure is measured (best and median reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Where the scratch directory is made.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
    /// Generated hostile packets through BPF_PROG_TEST_RUN, checking after
    /// each one that only a fresh, validly signed heartbeat changes the node
    /// table and that the counters add up. Exits non-zero on a violation
    /// (after printing the report).
    Hostile {
        /// Packets to generate.
        #[arg(long, default_value_t = hb_tools::hostile::DEFAULT_PACKETS)]
        packets: u64,
        /// Seed of the generator: the same seed makes the same packets.
        #[arg(long, default_value_t = hb_tools::hostile::DEFAULT_SEED)]
        seed: u64,
    },
}

impl BenchCommand {
    /// Runs the measurement and prints its JSON.
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            BenchCommand::XdpCost { distinct, repeat } => {
                print_json(&hb_tools::bench::xdp_cost(distinct, repeat)?)
            }
            BenchCommand::Sweep {
                nodes,
                rounds,
                phi_heard,
            } => {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&phi_heard),
                    "--phi-heard is a share of the nodes, from 0 to 1"
                );
                print_json(&hb_tools::bench::sweep(nodes, rounds.max(1), phi_heard)?)
            }
            BenchCommand::State { nodes, rounds, dir } => {
                print_json(&hb_tools::bench::state::state(nodes, rounds, &dir)?)
            }
            BenchCommand::Hostile { packets, seed } => {
                let report = hb_tools::hostile::run(packets, seed)?;
                print_json(&report)?;
                if report.violations > 0 {
                    anyhow::bail!(
                        "{} of {} hostile packets violated the property (first: {})",
                        report.violations,
                        report.packets,
                        report
                            .examples
                            .first()
                            .map_or_else(String::new, |v| format!("{}: {}", v.what, v.problem))
                    );
                }
                Ok(())
            }
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value).context("encoding JSON")?);
    Ok(())
}
