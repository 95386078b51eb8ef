//! The summary as a table and as JSON, and what `--check` finds wrong with it.

use serde::Serialize;

use crate::summary::ModeSummary;

/// What `--check` finds wrong: naive must fail; the pooled modes must not fail on ports,
/// descriptors or timeouts, must stay within their pool and keep memory flat. Shedding is not
/// failure: it is the bound working.
pub fn check(summaries: &[ModeSummary], pool_size: usize) -> Vec<String> {
    let mut problems = Vec::new();
    for m in summaries {
        if let Err(e) = m.accounting() {
            problems.push(e);
        }
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

/// A latency cell, or "-" where no request finished.
fn latency(m: &ModeSummary, ms: f64) -> String {
    let finished =
        (m.requests_ok + m.requests_shed + m.requests_failed).saturating_sub(m.requests_unfinished);
    if finished == 0 {
        "-".to_string()
    } else {
        format!("{ms:.1}")
    }
}

/// One row per figure, one column per mode. Keys are served, shed on purpose, or failed.
pub fn table(modes: &[ModeSummary]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&ModeSummary) -> String| {
        rows.push((label.to_string(), modes.iter().map(f).collect()));
    };
    row("", &|m| m.mode.clone());
    row("how it ended", &|m| {
        match m.stopped {
            Some(_) => "STOPPED",
            None => "finished",
        }
        .to_string()
    });
    row("keys requested", &|m| m.keys_requested.to_string());
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
    row("keys not attempted", &|m| m.keys_not_attempted.to_string());
    row("  in requests not sent", &|m| m.keys_not_sent.to_string());
    row("  in requests cut off", &|m| {
        (m.keys_not_attempted - m.keys_not_sent.min(m.keys_not_attempted)).to_string()
    });
    row("requests requested", &|m| m.requests_requested.to_string());
    row("requests all served", &|m| m.requests_ok.to_string());
    row("requests with keys shed", &|m| m.requests_shed.to_string());
    row("requests with failures", &|m| m.requests_failed.to_string());
    row("  of which cut off", &|m| m.requests_unfinished.to_string());
    row("requests not sent", &|m| m.requests_not_sent.to_string());
    row("batch latency p50 ms", &|m| latency(m, m.latency_ms.p50));
    row("batch latency p99 ms", &|m| latency(m, m.latency_ms.p99));
    row("batch latency max ms", &|m| latency(m, m.latency_ms.max));
    row("peak open sockets", &|m| m.peak_sockets.to_string());
    row("peak TIME_WAIT", &|m| m.peak_time_wait.to_string());
    row("peak OS threads", &|m| m.peak_threads.to_string());
    row("peak RSS MiB", &|m| {
        format!("{:.1}", m.peak_rss_bytes as f64 / (1 << 20) as f64)
    });
    let width = modes
        .iter()
        .map(|m| m.keys_requested.to_string().len().max(10))
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
    out.push_str(
        "Keys requested = served + shed + failed + not attempted (in requests never sent, or \
         still waiting when their request was cut off at the end of the drain or the mode was \
         stopped). Latency is over the requests that finished; \"-\": none did.\n",
    );
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
