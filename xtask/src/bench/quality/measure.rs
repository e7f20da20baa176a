//! One detector through one scenario: the agent, the load, the stall of
//! (d), then the agent's event log analysed.

use std::time::Instant;

use anyhow::Result;
use hb_tests::interrupt;

use super::{
    INTERVAL, MULTIPLIER, STALL, STALL_AT, STALL_LOG, STOP_AT, STOP_FRACTION, SWEEP, Size,
    analysis::{Event, Outcome, Stall, analyse},
    scenarios::{Detector, Scenario},
};
use crate::bench::{
    output::Progress,
    rig::{AgentSetup, Load, Pace, Rig},
};

/// Runs one detector through one scenario and analyses what it did.
pub(super) fn measure(
    rig: &Rig<'_>,
    scenario: &Scenario,
    size: Size,
    detector: Detector,
    progress: &Progress,
) -> Result<Outcome> {
    let setup = AgentSetup {
        datapath: "xdp",
        nodes: size.nodes,
        interval: detector.interval(),
        timeout_multiplier: MULTIPLIER,
        sweep_period: SWEEP,
    };
    let step = format!(
        "{} {} ({})",
        scenario.label(),
        detector.name(),
        detector.setting()
    );
    progress.step(format!("{step}: starting the agent"));
    let mut agent = rig.start_agent_with(&setup, &detector.section())?;
    let load = Load {
        stop: Some((STOP_FRACTION, size.run.mul_f64(STOP_AT))),
        faults: scenario.faults,
        ..Load::new(size.nodes, Pace::Interval(INTERVAL), size.run)
    };
    progress.step(step.clone());
    let running = rig.start_load(&load)?;
    let stall = if scenario.agent_stall {
        let at = running.started() + size.run.mul_f64(STALL_AT);
        interrupt::sleep(at.saturating_duration_since(Instant::now()))?;
        progress.step(format!("{step}: agent stopped for {} s", STALL.as_secs()));
        let (stopped_mono_ns, continued_mono_ns) = agent.stall(STALL)?;
        progress.step(step);
        Some((stopped_mono_ns, continued_mono_ns))
    } else {
        None
    };
    let report = running.finish()?;
    report.ensure_complete()?;
    // The event log is written once per sweep; SIGTERM flushes it too.
    interrupt::sleep(SWEEP * 5)?;
    agent.stop()?;
    let stall = stall.map(|(stopped_mono_ns, continued_mono_ns)| Stall {
        stopped_mono_ns,
        continued_mono_ns,
        noticed_in_log: agent.log_lines_containing(STALL_LOG),
    });
    let events: Vec<Event> = agent.records()?;
    Ok(analyse(detector, report, &events, stall))
}
