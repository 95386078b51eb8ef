//! The summary as a table, as JSON, and as an SVG timeline.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::metrics::{ModeSummary, Point};

/// What `--check` finds wrong: naive must fail; the pooled modes must not fail on ports,
/// descriptors or timeouts, must stay within their pool and keep memory flat. Shedding is not
/// failure: it is the bound working.
pub fn check(summaries: &[ModeSummary], pool_size: usize) -> Vec<String> {
    let mut problems = Vec::new();
    for m in summaries {
        if let Some(why) = &m.stopped {
            problems.push(format!("{}: {why}", m.mode));
            continue;
        }
        let e = &m.errors;
        match m.mode.as_str() {
            "naive" if e.failed() == 0 => {
                problems.push("naive: no failures; the incident did not reproduce".to_string())
            }
            "pooled" | "batched" => {
                if e.ports_exhausted + e.fd_limit + e.timeout > 0 {
                    problems.push(format!(
                        "{}: {} ports, {} descriptor and {} timeout failures",
                        m.mode, e.ports_exhausted, e.fd_limit, e.timeout
                    ));
                }
                if m.peak_sockets > pool_size {
                    problems.push(format!(
                        "{}: {} sockets open at once, above the pool size {pool_size}",
                        m.mode, m.peak_sockets
                    ));
                }
                if !m.memory_flat() {
                    problems.push(format!("{}: memory grew during the run", m.mode));
                }
            }
            _ => {}
        }
    }
    problems
}

/// One row per figure, one column per mode. Keys are served, shed on purpose, or failed.
pub fn table(modes: &[ModeSummary]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&ModeSummary) -> String| {
        rows.push((label.to_string(), modes.iter().map(f).collect()));
    };
    row("", &|m| m.mode.clone());
    row("keys served", &|m| m.keys_ok.to_string());
    row("keys shed (saturated)", &|m| m.errors.saturated.to_string());
    row("keys shed (paused)", &|m| m.errors.paused.to_string());
    row("keys failed: ports", &|m| {
        m.errors.ports_exhausted.to_string()
    });
    row("keys failed: fd limit", &|m| m.errors.fd_limit.to_string());
    row("keys failed: timeout", &|m| m.errors.timeout.to_string());
    row("keys failed: other", &|m| {
        (m.errors.refused + m.errors.other).to_string()
    });
    row("requests all served", &|m| m.requests_ok.to_string());
    row("requests with keys shed", &|m| m.requests_shed.to_string());
    row("requests with failures", &|m| m.requests_failed.to_string());
    row("  of which unfinished", &|m| {
        m.requests_unfinished.to_string()
    });
    row("batch latency p50 ms", &|m| {
        format!("{:.1}", m.latency_ms.p50)
    });
    row("batch latency p99 ms", &|m| {
        format!("{:.1}", m.latency_ms.p99)
    });
    row("batch latency max ms", &|m| {
        format!("{:.1}", m.latency_ms.max)
    });
    row("peak open sockets", &|m| m.peak_sockets.to_string());
    row("peak TIME_WAIT", &|m| m.peak_time_wait.to_string());
    row("peak OS threads", &|m| m.peak_threads.to_string());
    row("peak RSS MiB", &|m| {
        format!("{:.1}", m.peak_rss_bytes as f64 / (1 << 20) as f64)
    });
    let width = modes
        .iter()
        .map(|m| m.keys_ok.to_string().len().max(10))
        .max()
        .unwrap_or(10);
    let mut out = String::new();
    for (label, cells) in rows {
        out.push_str(&format!("{label:<26}"));
        for cell in cells {
            out.push_str(&format!(" {cell:>width$}"));
        }
        out.push('\n');
    }
    for m in modes {
        if let Some(why) = &m.stopped {
            out.push_str(&format!("{}: {why}\n", m.mode));
        }
    }
    out
}

#[derive(Serialize)]
struct Summary<'a> {
    modes: &'a [ModeSummary],
}

pub fn json(modes: &[ModeSummary]) -> String {
    serde_json::to_string_pretty(&Summary { modes })
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn color(mode: &str) -> RGBColor {
    match mode {
        "naive" => RGBColor(214, 39, 40),
        "spread" => RGBColor(255, 127, 14),
        "pooled" => RGBColor(44, 160, 44),
        _ => RGBColor(31, 119, 180),
    }
}

type Pick = fn(&Point) -> u64;

/// The kinds of keys not served, each a series of its own.
const KINDS: [(&str, RGBColor, Pick); 4] = [
    ("failed: ports, fd", RGBColor(214, 39, 40), |p| {
        p.failed_ports
    }),
    ("failed: timeout", RGBColor(148, 103, 189), |p| {
        p.failed_timeout
    }),
    ("failed: other", RGBColor(140, 86, 75), |p| p.failed_other),
    ("shed (saturated, paused)", RGBColor(127, 127, 127), |p| {
        p.shed
    }),
];

/// A row of legend entries, drawn in a strip of its own, outside every plot.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    entries: &[(&str, RGBColor)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let style = ("sans-serif", 16).into_font();
    area.draw(&Text::new(title.to_string(), (10, 8), style.clone()))?;
    let mut x = 170;
    for (name, c) in entries {
        area.draw(&PathElement::new(
            vec![(x, 16), (x + 24, 16)],
            c.stroke_width(3),
        ))?;
        area.draw(&Text::new(name.to_string(), (x + 30, 8), style.clone()))?;
        x += 40 + 9 * name.len() as i32;
    }
    Ok(())
}

/// Draws one panel: `series` over `0..seconds`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    seconds: u32,
    series: &[(RGBColor, Vec<(u32, u64)>)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let peak = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0u32..seconds, 0u64..peak + peak / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the mode started")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (c, points) in series {
        chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
    }
    Ok(())
}

/// Over the seconds of the run (`seconds`, the modes' duration and drain): keys served per
/// second and client sockets in TIME_WAIT, one line per mode; then one panel per mode with
/// the keys it did not serve, one line per kind. The legends sit in strips of their own.
pub fn svg(
    path: &Path,
    modes: &[ModeSummary],
    seconds: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let seconds = seconds.max(1);
    let rows = 2 + modes.len().div_ceil(2) as u32;
    let root = SVGBackend::new(path, (1000, 90 + 300 * rows)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legends, body) = root.split_vertically(90);
    let (mode_strip, kind_strip) = legends.split_vertically(40);
    let names: Vec<(&str, RGBColor)> = modes
        .iter()
        .map(|m| (m.mode.as_str(), color(&m.mode)))
        .collect();
    legend(&mode_strip, "modes (top panels)", &names)?;
    let kinds: Vec<(&str, RGBColor)> = KINDS.iter().map(|(n, c, _)| (*n, *c)).collect();
    legend(&kind_strip, "keys not served", &kinds)?;
    let line = |m: &ModeSummary, pick: Pick| -> Vec<(u32, u64)> {
        m.timeline
            .iter()
            .filter(|p| (p.second as u32) < seconds)
            .map(|p| (p.second as u32, pick(p)))
            .collect()
    };
    let (top, rest) = body.split_vertically(600);
    let top = top.split_evenly((2, 1));
    let per_mode = |pick: Pick| -> Vec<(RGBColor, Vec<(u32, u64)>)> {
        modes
            .iter()
            .map(|m| (color(&m.mode), line(m, pick)))
            .collect()
    };
    panel(
        &top[0],
        "keys served per second",
        seconds,
        &per_mode(|p| p.keys_ok),
    )?;
    panel(
        &top[1],
        "client sockets in TIME_WAIT",
        seconds,
        &per_mode(|p| p.time_wait as u64),
    )?;
    let cells = rest.split_evenly((modes.len().div_ceil(2).max(1), 2));
    for (m, area) in modes.iter().zip(cells.iter()) {
        let series: Vec<_> = KINDS
            .iter()
            .map(|(_, c, pick)| (*c, line(m, *pick)))
            .collect();
        panel(
            area,
            &format!("{}: keys not served per second", m.mode),
            seconds,
            &series,
        )?;
    }
    root.present()?;
    Ok(())
}
