//! `hb-tools datapath-counters`: samples the pinned counters of an instance
//! (no agent needed) and reports the blind window; see [`hb_tools::probe`].

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use hb_tools::probe;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Args)]
pub struct DatapathCountersArgs {
    /// The agent instance whose pinned datapath is read
    /// (/sys/fs/bpf/hb/<instance>/).
    #[arg(long, default_value = "default")]
    instance: String,
    /// Sampling period (10ms-60s).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    every: Duration,
    /// How long to sample, at most 1h; SIGINT or SIGTERM end it early.
    #[arg(long = "for", value_parser = humantime::parse_duration, value_name = "DURATION")]
    length: Duration,
    /// Write the JSON report (every sample included) here instead of
    /// stdout.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

impl DatapathCountersArgs {
    /// Samples until the end or a signal, prints the summary to stderr and
    /// the report to stdout or `--report`.
    pub async fn execute(self) -> anyhow::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut terminate =
            signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let mut worker = tokio::task::spawn_blocking({
            let stop = Arc::clone(&stop);
            let instance = self.instance.clone();
            move || probe::probe(&instance, self.every, self.length, &stop)
        });
        let report = loop {
            tokio::select! {
                joined = &mut worker => break joined.context("the sampling thread failed")??,
                _ = terminate.recv() => stop.store(true, Ordering::Relaxed),
                _ = interrupt.recv() => stop.store(true, Ordering::Relaxed),
            }
        };
        eprint!("{}", report.summary());
        match &self.report {
            Some(path) => probe::write_report(&report, path),
            None => {
                println!(
                    "{}",
                    serde_json::to_string(&report).context("encoding the report")?
                );
                Ok(())
            }
        }
    }
}
