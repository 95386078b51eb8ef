//! The run as one SVG chart that reads without the README: one colour per mode in every panel,
//! line styles for the kinds of keys not served, each mode's line ending where its run ended.

use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::summary::{ModeSummary, Point};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Res = Result<(), Box<dyn std::error::Error>>;

/// What the chart says about the run as a whole.
pub struct Setting {
    /// The title line: the load each mode was given.
    pub title: String,
    /// Keys per second the schedule asked for (`--rps` × `--batch`).
    pub asked_per_s: f64,
}

/// Each mode's colour and line width. Modes are drawn widest first, so a mode whose line
/// coincides with a later one's still shows around it.
fn look(mode: &str) -> (RGBColor, u32) {
    match mode {
        "naive" => (RGBColor(214, 39, 40), 9),
        "spread" => (RGBColor(255, 127, 14), 7),
        "pooled" => (RGBColor(44, 160, 44), 5),
        _ => (RGBColor(31, 119, 180), 2),
    }
}

/// A line style: solid, or dashes of `(dash, gap)` pixels.
type Dash = Option<(i32, i32)>;

type Pick = fn(&Point) -> u64;

/// A per-second figure that a second may lack (no request finished in it).
type PickSome = fn(&Point) -> Option<f64>;

/// The kinds of keys not served, each in a line style of its own (in the mode's colour).
const KINDS: [(&str, Dash, Pick); 4] = [
    ("failed: ports, fd", None, |p| p.failed_ports),
    ("failed: timeout", Some((14, 6)), |p| p.failed_timeout),
    ("failed: other", Some((2, 5)), |p| p.failed_other),
    ("shed", Some((6, 3)), |p| p.shed),
];

const FONT: &str = "sans-serif";

/// A line in `style`, solid or dashed.
fn line<C: Ranged<ValueType = f64>, Y: Ranged>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<C, Y>>,
    points: Vec<(f64, Y::ValueType)>,
    style: ShapeStyle,
    dash: Dash,
) -> Res
where
    Y::ValueType: Clone + 'static,
{
    match dash {
        None => chart.draw_series(LineSeries::new(points, style))?,
        Some((d, g)) => chart.draw_series(DashedLineSeries::new(points, d, g, style))?,
    };
    Ok(())
}

/// The whole seconds of a mode's run: a per-second rate ends with the last full second, so
/// that a run's end does not read as a fall to zero.
fn whole_seconds(m: &ModeSummary) -> impl Iterator<Item = &Point> {
    let whole = m.run_s.floor() as usize;
    m.timeline.iter().filter(move |p| p.second < whole)
}

/// A marker at the end of a mode's line: a dot where the run finished, a cross where the
/// harness stopped it.
fn end_marker<Y: Ranged>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    m: &ModeSummary,
    at: Option<(f64, Y::ValueType)>,
) -> Res
where
    Y::ValueType: Clone + 'static,
{
    let Some(at) = at else { return Ok(()) };
    let (c, w) = look(&m.mode);
    let size = (w as i32 / 2 + 4).max(5);
    if m.stopped.is_some() {
        chart.draw_series(std::iter::once(Cross::new(at, size, c.stroke_width(3))))?;
    } else {
        chart.draw_series(std::iter::once(Circle::new(at, size, c.filled())))?;
    }
    Ok(())
}

/// An axis label: whole numbers from 10 up, one decimal below.
fn number(v: f64) -> String {
    if v.abs() >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A panel's frame: caption, axes and mesh, over `0..seconds` and the y range given (linear
/// or log).
macro_rules! frame {
    ($area:expr, $title:expr, $seconds:expr, $y:expr, $y_desc:expr) => {{
        let mut chart = ChartBuilder::on($area)
            .caption($title, (FONT, 17))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..$seconds, $y)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the mode started")
            .y_desc($y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| number(*y))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart
    }};
}

/// One line per mode of `pick` over the mode's whole seconds, plus, if given, a grey dashed
/// line at `asked` labelled as what was asked for.
fn per_mode(
    area: &Area<'_>,
    title: &str,
    y_desc: &str,
    seconds: f64,
    modes: &[ModeSummary],
    pick: fn(&Point) -> f64,
    asked: Option<f64>,
) -> Res {
    let peak = modes
        .iter()
        .flat_map(|m| whole_seconds(m).map(pick))
        .chain(asked)
        .fold(1.0f64, f64::max);
    let mut chart = frame!(area, title, seconds, 0f64..peak * 1.12, y_desc);
    if let Some(a) = asked {
        let grey = RGBColor(120, 120, 120);
        line(
            &mut chart,
            vec![(0.0, a), (seconds, a)],
            grey.stroke_width(1),
            Some((5, 5)),
        )?;
        chart.draw_series(std::iter::once(Text::new(
            format!("asked: {a:.0}/s"),
            (seconds * 0.72, a * 1.06),
            (FONT, 13).into_font().color(&grey),
        )))?;
    }
    for m in modes {
        let (c, w) = look(&m.mode);
        let points: Vec<(f64, f64)> = whole_seconds(m)
            .map(|p| (p.second as f64 + 0.5, pick(p)))
            .collect();
        let last = points.last().copied();
        line(&mut chart, points, c.stroke_width(w), None)?;
        end_marker(&mut chart, m, last)?;
    }
    Ok(())
}

/// Resident memory per mode, on a log scale: the modes differ a hundredfold.
fn memory(area: &Area<'_>, seconds: f64, modes: &[ModeSummary]) -> Res {
    let mib = |p: &Point| p.rss_bytes as f64 / (1 << 20) as f64;
    let all: Vec<f64> = modes
        .iter()
        .flat_map(|m| whole_seconds(m).map(mib))
        .filter(|v| *v > 0.0)
        .collect();
    let title = "resident memory of the client, MiB (log scale)";
    if all.is_empty() {
        frame!(area, title, seconds, 0f64..1.0, "MiB");
        return empty(area, "no memory samples");
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
    let mut chart = frame!(area, title, seconds, (lo..hi).log_scale(), "MiB");
    for m in modes {
        let (c, w) = look(&m.mode);
        let points: Vec<(f64, f64)> = whole_seconds(m)
            .filter(|p| p.rss_bytes > 0)
            .map(|p| (p.second as f64 + 0.5, mib(p)))
            .collect();
        let last = points.last().copied();
        line(&mut chart, points, c.stroke_width(w), None)?;
        end_marker(&mut chart, m, last)?;
    }
    Ok(())
}

/// Batch latency per second, per mode, on a log scale: p50 solid, p99 dashed, a dot per second.
fn latency(area: &Area<'_>, seconds: f64, modes: &[ModeSummary]) -> Res {
    let all: Vec<f64> = modes
        .iter()
        .flat_map(|m| m.timeline.iter())
        .flat_map(|p| [p.batch_p50_ms, p.batch_p99_ms])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let title = "batch request latency, ms (log scale): p50 solid, p99 dashed";
    if all.is_empty() {
        frame!(area, title, seconds, 0f64..1.0, "ms");
        return empty(area, "no batch request finished");
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
    let mut chart = frame!(area, title, seconds, (lo.max(0.01)..hi).log_scale(), "ms");
    for m in modes {
        let (c, w) = look(&m.mode);
        let picks: [(PickSome, Dash); 2] = [
            (|p| p.batch_p50_ms, None),
            (|p| p.batch_p99_ms, Some((8, 5))),
        ];
        for (pick, dash) in picks {
            let points: Vec<(f64, f64)> = m
                .timeline
                .iter()
                .filter_map(|p| pick(p).map(|v| (p.second as f64 + 0.5, v)))
                .collect();
            line(&mut chart, points.clone(), c.stroke_width(w.min(4)), dash)?;
            chart.draw_series(points.iter().map(|&at| Circle::new(at, 3, c.filled())))?;
        }
    }
    Ok(())
}

/// One mode's keys not served per second, one line style per kind, in the mode's colour.
fn not_served(area: &Area<'_>, seconds: f64, m: &ModeSummary) -> Res {
    let (c, _) = look(&m.mode);
    let stopped = if m.stopped.is_some() { ", STOPPED" } else { "" };
    let title = format!("{}: keys not served per second{stopped}", m.mode);
    let peak = whole_seconds(m)
        .flat_map(|p| KINDS.iter().map(move |(_, _, pick)| pick(p)))
        .max()
        .unwrap_or(0);
    let mut chart = frame!(
        area,
        &title,
        seconds,
        0f64..(peak.max(1) as f64 * 1.12),
        "keys/s"
    );
    if peak == 0 {
        drop(chart);
        return empty(area, &format!("{}: no key failed or was shed", m.mode));
    }
    for (_, dash, pick) in KINDS {
        let points: Vec<(f64, f64)> = whole_seconds(m)
            .map(|p| (p.second as f64 + 0.5, pick(p) as f64))
            .collect();
        if points.iter().all(|p| p.1 == 0.0) {
            continue;
        }
        let last = points.last().copied();
        line(&mut chart, points, c.stroke_width(3), dash)?;
        end_marker(&mut chart, m, last)?;
    }
    Ok(())
}

/// Writes `text` in the middle of an empty panel.
fn empty(area: &Area<'_>, text: &str) -> Res {
    let (w, h) = area.dim_in_pixel();
    let style = (FONT, 18).into_font().color(&RGBColor(90, 90, 90));
    let width = 9 * text.len() as i32;
    area.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2 - width / 2, h as i32 / 2 - 10),
        style,
    ))?;
    Ok(())
}

/// The legend: the title, then modes by colour and width, end markers, and line styles.
fn legend(area: &Area<'_>, s: &Setting, modes: &[ModeSummary]) -> Res {
    let font = (FONT, 15).into_font();
    area.draw(&Text::new(s.title.clone(), (12, 8), (FONT, 19).into_font()))?;
    let mut x = 12;
    let y = 46;
    area.draw(&Text::new("modes:", (x, y - 8), font.clone()))?;
    x += 60;
    for m in modes {
        let (c, w) = look(&m.mode);
        area.draw(&PathElement::new(
            vec![(x, y), (x + 30, y)],
            c.stroke_width(w),
        ))?;
        let name = if m.stopped.is_some() {
            format!("{} (stopped)", m.mode)
        } else {
            m.mode.clone()
        };
        area.draw(&Text::new(name.clone(), (x + 36, y - 8), font.clone()))?;
        x += 50 + 8 * name.len() as i32;
    }
    let grey = RGBColor(60, 60, 60);
    area.draw(&Circle::new((x + 8, y), 5, grey.filled()))?;
    area.draw(&Text::new("run ended", (x + 18, y - 8), font.clone()))?;
    x += 100;
    area.draw(&Cross::new((x + 8, y), 5, grey.stroke_width(3)))?;
    area.draw(&Text::new(
        "stopped at its time limit",
        (x + 18, y - 8),
        font.clone(),
    ))?;
    let (mut x, y) = (12, 76);
    area.draw(&Text::new("keys not served:", (x, y - 8), font.clone()))?;
    x += 130;
    for (name, dash, _) in KINDS {
        let points = vec![(x, y), (x + 40, y)];
        match dash {
            None => area.draw(&PathElement::new(points, grey.stroke_width(3)))?,
            Some((d, g)) => {
                area.draw(&DashedPathElement::new(points, d, g, grey.stroke_width(3)))?
            }
        }
        area.draw(&Text::new(name, (x + 46, y - 8), font.clone()))?;
        x += 70 + 8 * name.len() as i32;
    }
    Ok(())
}

/// The chart: keys served and batch latency per second; client sockets in TIME_WAIT and
/// resident memory; then a panel per mode of the keys it did not serve, by kind.
pub fn svg(path: &Path, modes: &[ModeSummary], s: &Setting) -> Res {
    let seconds = modes
        .iter()
        .map(|m| m.run_s.max(m.timeline.len() as f64))
        .fold(1.0f64, f64::max)
        .ceil();
    let failure_rows = modes.len().div_ceil(2).max(1);
    let height = 100 + 300 * (2 + failure_rows as u32);
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(100);
    legend(&top, s, modes)?;
    let (overview, failures) = body.split_vertically(600);
    let cells = overview.split_evenly((2, 2));
    per_mode(
        &cells[0],
        "keys served per second",
        "keys/s",
        seconds,
        modes,
        |p| p.keys_ok as f64,
        Some(s.asked_per_s),
    )?;
    latency(&cells[1], seconds, modes)?;
    per_mode(
        &cells[2],
        "client sockets in TIME_WAIT",
        "sockets",
        seconds,
        modes,
        |p| p.time_wait as f64,
        None,
    )?;
    memory(&cells[3], seconds, modes)?;
    let cells = failures.split_evenly((failure_rows, 2));
    for (m, area) in modes.iter().zip(cells.iter()) {
        not_served(area, seconds, m)?;
    }
    root.present()?;
    Ok(())
}
