//! The summary as a table, as JSON, and as an SVG timeline.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::metrics::ModeSummary;

/// One row per figure, one column per mode.
pub fn table(modes: &[ModeSummary]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&ModeSummary) -> String| {
        rows.push((label.to_string(), modes.iter().map(f).collect()));
    };
    row("", &|m| m.mode.clone());
    row("requests ok", &|m| m.requests_ok.to_string());
    row("requests failed", &|m| m.requests_failed.to_string());
    row("  of which unfinished", &|m| {
        m.requests_unfinished.to_string()
    });
    row("keys ok", &|m| m.keys_ok.to_string());
    row("errors: ports exhausted", &|m| {
        m.errors.ports_exhausted.to_string()
    });
    row("errors: fd limit", &|m| m.errors.fd_limit.to_string());
    row("errors: timeout", &|m| m.errors.timeout.to_string());
    row("errors: refused", &|m| m.errors.refused.to_string());
    row("errors: saturated", &|m| m.errors.saturated.to_string());
    row("errors: other", &|m| m.errors.other.to_string());
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
        out.push_str(&format!("{label:<24}"));
        for cell in cells {
            out.push_str(&format!(" {cell:>width$}"));
        }
        out.push('\n');
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
        _ => RGBColor(44, 160, 44),
    }
}

/// Three panels over seconds since each mode's start, one line per mode: keys served per
/// second, key errors per second, and client sockets in TIME_WAIT.
pub fn svg(path: &Path, modes: &[ModeSummary]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((3, 1));
    let seconds = modes
        .iter()
        .map(|m| m.timeline.len())
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    type Pick = fn(&crate::metrics::Point) -> u64;
    let panels: [(&DrawingArea<_, _>, &str, Pick); 3] = [
        (&areas[0], "keys served per second", |p| p.keys_ok),
        (&areas[1], "key errors per second", |p| p.errors),
        (&areas[2], "client sockets in TIME_WAIT", |p| {
            p.time_wait as u64
        }),
    ];
    for (area, title, pick) in panels {
        let peak = modes
            .iter()
            .flat_map(|m| m.timeline.iter().map(pick))
            .max()
            .unwrap_or(0)
            .max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(0u32..seconds, 0u64..peak + peak / 10 + 1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the mode started")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for m in modes {
            let c = color(&m.mode);
            chart
                .draw_series(LineSeries::new(
                    m.timeline.iter().map(|p| (p.second as u32, pick(p))),
                    c.stroke_width(2),
                ))?
                .label(m.mode.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
