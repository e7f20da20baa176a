//! The phase's plots: false suspicions per node-hour, and how long they
//! lasted.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::{
    coord::types::RangedCoordf64,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    comparison::{Comparison, Pick},
    scenarios::Detector,
};
use crate::bench::plot::{self, Series};

const PHI_COLOR: RGBColor = RGBColor(0, 114, 178);
const TIMEOUT_COLOR: RGBColor = RGBColor(213, 94, 0);

/// Labels of a log axis: 1, 2 and 5 times a power of ten, as plain numbers.
pub(super) fn log_label(v: &f64) -> String {
    if *v <= 0.0 {
        return String::new();
    }
    let exponent = v.log10().floor();
    let mantissa = v / 10f64.powf(exponent);
    if ![1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m: &f64| (mantissa - m).abs() < 1e-6 * m)
    {
        return String::new();
    }
    let decimals = (-exponent).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Bars of the false suspicions per node-hour, timeout and phi side by side
/// per scenario, on a log scale; a detector that made none gets an empty
/// box labelled 0 at the bottom.
pub(super) fn mistakes_plot(path: &Path, comparisons: &[Comparison]) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let (low, high) = rate_range(comparisons);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let groups = comparisons.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "False suspicions at the same median detection time",
            ("sans-serif", 28),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups, (low..high).log_scale())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("false suspicions per node-hour")
        .y_label_formatter(&log_label)
        .label_style(("sans-serif", 17))
        .axis_desc_style(("sans-serif", 19))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| failed(&e))?;
    let detectors: [Bars; 2] = [
        Bars {
            name: "timeout (same median)",
            color: TIMEOUT_COLOR,
            outcome: |c| &c.timeout,
            offset: 0.12,
        },
        Bars {
            name: "phi",
            color: PHI_COLOR,
            outcome: |c| &c.phi,
            offset: 0.52,
        },
    ];
    for bars in detectors {
        bars.draw(&mut chart, comparisons, low)
            .map_err(|e| failed(&e))?;
    }
    for (i, c) in comparisons.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, low));
        root.draw(&Text::new(
            c.scenario.label(),
            (x, y + 10),
            ("sans-serif", 17)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| failed(&e))?;
    }
    plot::legend_and_present(&mut chart, &root, path)
}

/// The rates' axis: down to a decade below one mistake in the largest
/// sample (what one false suspicion would read), up to a decade above the
/// largest rate.
fn rate_range(comparisons: &[Comparison]) -> (f64, f64) {
    let rates: Vec<f64> = comparisons
        .iter()
        .flat_map(|c| [&c.phi, &c.timeout])
        .map(|o| o.false_suspicions_per_node_hour)
        .collect();
    let resolution = comparisons
        .iter()
        .flat_map(|c| [&c.phi, &c.timeout])
        .map(|o| 1.0 / o.node_hours)
        .chain(rates.iter().copied().filter(|&r| r > 0.0))
        .fold(f64::INFINITY, f64::min);
    let low = 10f64.powf(resolution.log10().floor() - 1.0);
    let high = 10f64.powf(
        rates
            .iter()
            .copied()
            .fold(resolution, f64::max)
            .log10()
            .ceil()
            + 1.0,
    );
    (low, high)
}

/// The mistakes chart: scenarios along x, rates on a log scale.
type MistakesChart<'a> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// One detector's bars, one per scenario.
struct Bars {
    name: &'static str,
    color: RGBColor,
    outcome: Pick,
    /// Where its bar starts in a scenario's slot, of 1.
    offset: f64,
}

impl Bars {
    /// Draws the bars and a 0 over the empty box of each scenario where
    /// the detector made no mistake.
    fn draw(
        self,
        chart: &mut MistakesChart<'_>,
        comparisons: &[Comparison],
        low: f64,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        let Self {
            name,
            color,
            outcome,
            offset,
        } = self;
        let bars: Vec<Rectangle<(f64, f64)>> = comparisons
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rate = outcome(c).false_suspicions_per_node_hour;
                let x = i as f64 + offset;
                if rate > 0.0 {
                    Rectangle::new([(x, low), (x + 0.36, rate)], color.filled())
                } else {
                    Rectangle::new([(x, low), (x + 0.36, low * 1.4)], color.stroke_width(2))
                }
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled()));
        let zeros: Vec<Text<'_, (f64, f64), String>> = comparisons
            .iter()
            .enumerate()
            .filter(|(_, c)| outcome(c).false_suspicions == 0)
            .map(|(i, _)| {
                Text::new(
                    "0".to_owned(),
                    (i as f64 + offset + 0.18, low * 1.5),
                    ("sans-serif", 17)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            })
            .collect();
        chart.draw_series(zeros)?;
        Ok(())
    }
}

/// Points of the CDF of `sorted` (ns, shown in ms), at most about
/// [`CDF_POINTS`] of them.
pub(super) fn cdf_points(sorted: &[u64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(CDF_POINTS).max(1);
    (0..n)
        .filter(|k| k % step == 0 || k + 1 == n)
        .map(|k| (sorted[k] as f64 / 1e6, (k + 1) as f64 / n as f64))
        .collect()
}

/// Points a CDF is drawn with, at most about.
pub(super) const CDF_POINTS: usize = 200;

/// How long the false suspicions lasted (CDFs): a colour per scenario, phi
/// solid, timeout dashed; a detector without mistakes has no curve.
pub(super) fn durations_plot(path: &Path, comparisons: &[Comparison]) -> Result<()> {
    let mut series = Vec::new();
    for (i, c) in comparisons.iter().enumerate() {
        for o in [&c.phi, &c.timeout] {
            if o.mistake_durations_ns.is_empty() {
                continue;
            }
            let name = format!(
                "{} {} ({})",
                c.scenario.label(),
                o.detector.name(),
                o.false_suspicions
            );
            let points = cdf_points(&o.mistake_durations_ns);
            series.push(match o.detector {
                Detector::Phi => Series::line(name, points, i),
                Detector::Timeout { .. } => Series::dashed(name, points, i),
            });
        }
    }
    plot::linear(
        path,
        "How long false suspicions lasted (CDF; phi solid, timeout dashed)",
        ("suspected -> up again (ms)", plot::plain_format),
        ("fraction of the false suspicions", plot::plain_format),
        &series,
    )
}
