//! SVG plots of the measured curves, drawn with `plotters`' SVG backend
//! alone: text goes into the file as `<text>` elements and plotters' naive
//! font metrics lay it out, so nothing needs fontconfig or a font file.

use std::{ops::Range, path::Path};

use anyhow::{Result, anyhow};
use plotters::{
    coord::{
        Shift,
        ranged1d::{AsRangedCoord, ValueFormatter},
    },
    prelude::*,
};

use super::output::{duration_ns, number, si};

/// How an axis labels its values.
pub type Format = fn(&f64) -> String;

/// `50k`, `1.6M` (on a log axis: only 1, 2 and 5 times a power of ten).
pub fn si_format(v: &f64) -> String {
    if round_mantissa(*v) {
        si(*v)
    } else {
        String::new()
    }
}

/// Nanoseconds as `10 µs`, `1.00 ms` (on a log axis: only 1, 2 and 5 times
/// a power of ten).
pub fn ns_format(v: &f64) -> String {
    if round_mantissa(*v) {
        duration_ns(*v)
    } else {
        String::new()
    }
}

/// Whether `v` is 1, 2 or 5 times a power of ten (so that a log axis is
/// labelled sparsely); always true for 0.
fn round_mantissa(v: f64) -> bool {
    if v <= 0.0 {
        return true;
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6 * m)
}

/// A plain number.
pub fn plain_format(v: &f64) -> String {
    number(*v)
}

const SIZE: (u32, u32) = (900, 560);
/// Colours of the series, by index (colour-blind friendly).
const PALETTE: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 86, 86),
];

/// One curve of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    color: usize,
    dashed: bool,
    markers: bool,
}

impl Series {
    /// A solid line with a marker on every point.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            name: name.into(),
            points,
            color,
            dashed: false,
            markers: true,
        }
    }

    /// A dashed line without markers (a limit, a reference).
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            dashed: true,
            markers: false,
            ..Self::new(name, points, color)
        }
    }

    /// A solid line without markers (a distribution).
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            markers: false,
            ..Self::new(name, points, color)
        }
    }
}

/// Log-log axes.
pub fn loglog(
    path: &Path,
    title: &str,
    (x, x_format): (&str, Format),
    (y, y_format): (&str, Format),
    series: &[Series],
) -> Result<()> {
    let (xs, ys) = bounds(series);
    draw(
        path,
        title,
        (x, y),
        log_range(xs).log_scale(),
        log_range(ys).log_scale(),
        series,
        x_format,
        y_format,
    )
}

/// Logarithmic x, linear y from 0.
pub fn logx(
    path: &Path,
    title: &str,
    (x, x_format): (&str, Format),
    (y, y_format): (&str, Format),
    series: &[Series],
) -> Result<()> {
    let (xs, ys) = bounds(series);
    draw(
        path,
        title,
        (x, y),
        log_range(xs).log_scale(),
        linear_range(ys),
        series,
        x_format,
        y_format,
    )
}

/// Linear axes, y from 0.
pub fn linear(
    path: &Path,
    title: &str,
    (x, x_format): (&str, Format),
    (y, y_format): (&str, Format),
    series: &[Series],
) -> Result<()> {
    let (xs, ys) = bounds(series);
    let xs = if xs.start > 0.0 { 0.0..xs.end } else { xs };
    draw(
        path,
        title,
        (x, y),
        linear_range(xs),
        linear_range(ys),
        series,
        x_format,
        y_format,
    )
}

/// The smallest and largest x and y of every series.
fn bounds(series: &[Series]) -> (Range<f64>, Range<f64>) {
    let mut x = f64::INFINITY..f64::NEG_INFINITY;
    let mut y = f64::INFINITY..f64::NEG_INFINITY;
    for &(px, py) in series.iter().flat_map(|s| &s.points) {
        if px.is_finite() && py.is_finite() {
            x = x.start.min(px)..x.end.max(px);
            y = y.start.min(py)..y.end.max(py);
        }
    }
    if x.start > x.end {
        (0.0..1.0, 0.0..1.0)
    } else {
        (x, y)
    }
}

/// A positive range around `r`, padded by a factor 1.5 each way.
fn log_range(r: Range<f64>) -> Range<f64> {
    let low = if r.start > 0.0 { r.start } else { 1.0 };
    let high = r.end.max(low * 10.0);
    low / 1.5..high * 1.5
}

/// `r` from at most 0 up, padded 10% at the top.
fn linear_range(r: Range<f64>) -> Range<f64> {
    let low = r.start.min(0.0);
    let high = if r.end > low { r.end } else { low + 1.0 };
    low..high + (high - low) * 0.1
}

#[expect(clippy::too_many_arguments, reason = "one call site per kind of axes")]
fn draw<X, Y>(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x: X,
    y: Y,
    series: &[Series],
    x_format: Format,
    y_format: Format,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style(("sans-serif", 17))
        .axis_desc_style(("sans-serif", 19))
        .light_line_style(RGBColor(235, 235, 235))
        .max_light_lines(4)
        .draw()
        .map_err(|e| failed(&e))?;
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = color.stroke_width(2);
        let legend = move |(x, y): (i32, i32)| {
            PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
        };
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 6, style))
                .map_err(|e| failed(&e))?
                .label(s.name.as_str())
                .legend(legend);
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(|e| failed(&e))?
                .label(s.name.as_str())
                .legend(legend);
        }
        if s.markers {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| failed(&e))?;
        }
    }
    legend_and_present(&mut chart, &root, path)
}

/// Draws the legend (upper left, on a light box) and writes the file: how
/// every plot of the bench ends.
pub fn legend_and_present<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    path: &Path,
) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 17))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_label_round_values_only() {
        assert_eq!(si_format(&200_000.0), "200k");
        assert_eq!(si_format(&300_000.0), "");
        assert_eq!(si_format(&1_000_000.0), "1M");
        assert_eq!(ns_format(&5_000.0), "5.0 µs");
        assert_eq!(ns_format(&7_000.0), "");
    }

    #[test]
    fn draws_svg_with_text_and_no_font_files() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.svg");
        loglog(
            &path,
            "Sweep",
            ("nodes", si_format),
            ("ns", ns_format),
            &[
                Series::new("sweep", vec![(1e4, 9e3), (1e6, 8e5)], 0),
                Series::dashed("limit", vec![(1e4, 1e4), (1e6, 1e6)], 1),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains(">\nSweep\n</text>"), "{svg}");
        assert!(svg.contains(">\nsweep\n</text>"), "{svg}");
        linear(
            &path,
            "CDF",
            ("ms", plain_format),
            ("fraction", plain_format),
            &[Series::line("a", vec![(1.0, 0.5), (2.0, 1.0)], 0)],
        )
        .unwrap();
        logx(
            &path,
            "loss",
            ("rate", si_format),
            ("%", plain_format),
            &[Series::new("xdp", vec![(5e4, 0.0), (1.6e6, 3.0)], 0)],
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
