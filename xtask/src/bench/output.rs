//! What the bench shows and records: aligned tables, a progress bar per long
//! phase (`indicatif`, drawn on stderr only when it is a terminal), the
//! targets each phase is checked against, and number formatting.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// A table printed with aligned columns: the first one and the text
/// columns left-aligned, the others (numbers) right-aligned.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    text: Vec<usize>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            text: vec![0],
        }
    }

    /// Left-aligns column `index` (counting from 0) too.
    pub fn text_column(mut self, index: usize) -> Self {
        self.text.push(index);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table under a title line, as text.
    pub fn render(&self, title: &str) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::from("  ");
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let gap = if i == 0 { "" } else { "  " };
                if self.text.contains(&i) {
                    let _ = write!(text, "{gap}{cell:<width$}");
                } else {
                    let _ = write!(text, "{gap}{cell:>width$}");
                }
            }
            text.trim_end().to_owned()
        };
        let mut out = format!("\n{title}\n");
        out += &line(&self.headers);
        out.push('\n');
        let rule: usize = widths.iter().sum::<usize>() + 2 * (columns - 1);
        out += &format!("  {}\n", "-".repeat(rule));
        for row in &self.rows {
            out += &line(row);
            out.push('\n');
        }
        out
    }

    pub fn print(&self, title: &str) {
        print!("{}", self.render(title));
    }
}

/// A progress bar over a phase's planned duration: its position follows
/// the wall clock (a phase is mostly waiting for timed loads), its message
/// names the current step. Hidden when stderr is not a terminal; lines
/// printed through [`Progress::say`] show either way.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts a bar for `phase`, planned to last about `planned`.
    pub fn start(phase: &str, planned: Duration) -> Self {
        let total = planned.as_millis().max(1) as u64;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}% {elapsed:>4} {wide_msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (bar, stop) = (bar.clone(), Arc::clone(&stop));
            let start = Instant::now();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let elapsed = start.elapsed().as_millis() as u64;
                    // Past the plan, the bar waits at 99% rather than lie.
                    bar.set_position(elapsed.min(total.saturating_sub(total / 100)));
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            bar,
            stop,
            ticker: Some(ticker),
        }
    }

    /// Names the current step.
    pub fn step(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Prints a line above the bar (or plainly, when the bar is hidden).
    pub fn say(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            println!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.bar.finish_and_clear();
    }
}

/// Which side of the limit a target wants the value on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Bound {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = ">=")]
    AtLeast,
}

impl Bound {
    fn symbol(self) -> &'static str {
        match self {
            Self::AtMost => "<=",
            Self::Below => "<",
            Self::AtLeast => ">=",
        }
    }
}

/// One target and the figure of this run it is checked against.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub phase: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub bound: Bound,
    pub limit: f64,
    pub met: bool,
    /// How far the value is on the wrong side of the limit (0 when met).
    pub missed_by: f64,
    /// Where the value comes from, or what limits it.
    pub note: String,
}

impl Target {
    pub fn new(
        phase: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        bound: Bound,
        limit: f64,
    ) -> Self {
        let met = match bound {
            Bound::AtMost => value <= limit,
            Bound::Below => value < limit,
            Bound::AtLeast => value >= limit,
        };
        let missed_by = if met { 0.0 } else { (value - limit).abs() };
        Self {
            phase,
            name: name.into(),
            value,
            unit,
            bound,
            limit,
            met,
            missed_by,
            note: String::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// One summary line: `met`, or `MISSED` and by how much.
    pub fn line(&self) -> String {
        let with_unit = |v: f64| format!("{} {}", number(v), self.unit).trim_end().to_owned();
        let value = with_unit(self.value);
        let wanted = format!("{} {}", self.bound.symbol(), with_unit(self.limit));
        let verdict = if self.met {
            "met    ".to_owned()
        } else {
            "MISSED ".to_owned()
        };
        let mut line = format!("{verdict} {:<44} {value:>16}  (target {wanted})", self.name);
        if !self.met {
            let relative = if self.limit != 0.0 {
                format!(", {:.0}%", 100.0 * self.missed_by / self.limit.abs())
            } else {
                String::new()
            };
            let _ = write!(line, ": missed by {}{relative}", with_unit(self.missed_by));
        }
        if !self.note.is_empty() {
            let _ = write!(line, "\n{:>9}{}", "", self.note);
        }
        line
    }
}

/// A number with a precision that suits its size.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if (value == value.trunc() && magnitude < 1e15) || magnitude >= 1e5 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A rate or count with a k/M suffix: 50000 -> `50k`, 1600000 -> `1.6M`.
pub fn si(value: f64) -> String {
    let (scaled, suffix) = if value.abs() >= 1e6 {
        (value / 1e6, "M")
    } else if value.abs() >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled == scaled.trunc() {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// Nanoseconds in milliseconds with one decimal, `-` for none.
pub fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_owned(), |ns| format!("{:.1}", ns as f64 / 1e6))
}

/// Nanoseconds in the unit that reads best: `830 ns`, `12.4 µs`, `3.21 ms`.
pub fn duration_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(si(50_000.0), "50k");
        assert_eq!(si(1_600_000.0), "1.6M");
        assert_eq!(si(16_777_216.0), "16.8M");
        assert_eq!(si(123_456.0), "123k");
        assert_eq!(si(999.0), "999");
        assert_eq!(duration_ns(830.0), "830 ns");
        assert_eq!(duration_ns(12_400.0), "12.4 µs");
        assert_eq!(duration_ns(3_210_000.0), "3.21 ms");
        assert_eq!(number(80.0), "80");
        assert_eq!(number(72.345), "72.3");
        assert_eq!(number(0.0012), "0.001");
    }

    #[test]
    fn targets_say_how_far_they_are_missed() {
        let met = Target::new("x", "cost", 70.0, "ns", Bound::AtMost, 80.0);
        assert!(met.met);
        assert_eq!(met.missed_by, 0.0);
        assert!(met.line().starts_with("met"));
        let missed = Target::new("x", "cost", 100.0, "ns", Bound::AtMost, 80.0);
        assert!(!missed.met);
        assert_eq!(missed.missed_by, 20.0);
        assert!(
            missed.line().contains("missed by 20 ns, 25%"),
            "{}",
            missed.line()
        );
        let ratio = Target::new("x", "ratio", 4.0, "x", Bound::AtLeast, 5.0);
        assert!(!ratio.met);
        assert_eq!(ratio.missed_by, 1.0);
        assert!(!Target::new("x", "cpu", 10.0, "%", Bound::Below, 10.0).met);
        assert!(Target::new("x", "downs", 0.0, "", Bound::AtMost, 0.0).met);
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["case", "ns"]);
        table.row(vec!["accepted".into(), "72.3".into()]);
        table.row(vec!["ARP".into(), "35".into()]);
        let text = table.render("XDP");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "XDP");
        assert_eq!(lines[2], "  case        ns");
        assert_eq!(lines[4], "  accepted  72.3");
        assert_eq!(lines[5], "  ARP         35");
    }
}
