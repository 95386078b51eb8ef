//! A mode's summary, in the `--json` shape: every key it was asked for, accounted for.

use serde::{Deserialize, Serialize};

use crate::metrics::{ErrKind, Plan, Recorder, Samples};

#[derive(Serialize, Deserialize, Default, Clone, Copy)]
pub struct Errors {
    pub ports_exhausted: u64,
    pub fd_limit: u64,
    pub timeout: u64,
    pub refused: u64,
    pub other: u64,
    pub saturated: u64,
    #[serde(default)]
    pub paused: u64,
}

impl Errors {
    /// Keys shed on purpose: a bounded system refusing work.
    pub fn shed(&self) -> u64 {
        self.saturated + self.paused
    }

    /// Keys that failed.
    pub fn failed(&self) -> u64 {
        self.ports_exhausted + self.fd_limit + self.timeout + self.refused + self.other
    }
}

#[derive(Serialize, Deserialize, Default, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// The percentiles of `ms`, or `None` if it is empty.
    pub fn of(mut ms: Vec<f64>) -> Option<Latency> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
        Some(Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        })
    }
}

/// One second of a mode's run.
#[derive(Serialize, Deserialize, Clone, Copy)]
pub struct Point {
    pub second: usize,
    pub keys_ok: u64,
    /// Keys failed on ports or descriptors.
    pub failed_ports: u64,
    /// Keys failed on a timeout.
    pub failed_timeout: u64,
    /// Keys failed otherwise (refused, I/O).
    pub failed_other: u64,
    /// Keys shed (saturated, paused).
    pub shed: u64,
    pub time_wait: usize,
    /// Resident memory at the end of the second.
    pub rss_bytes: u64,
    /// Latency of the batch requests that finished in this second; absent if none did.
    #[serde(default)]
    pub batch_p50_ms: Option<f64>,
    #[serde(default)]
    pub batch_p99_ms: Option<f64>,
}

/// One mode's summary. Keys add up: `keys_requested` = `keys_ok` + shed + failed (by kind in
/// `errors`) + `keys_not_attempted`; requests too: `requests_requested` = `requests_ok` +
/// `requests_shed` + `requests_failed` + `requests_not_sent`.
#[derive(Serialize, Deserialize, Clone)]
pub struct ModeSummary {
    pub mode: String,
    /// Batch requests the schedule asked for (`--rps` × `--duration`).
    pub requests_requested: u64,
    /// Batch requests the client sent; the rest it never got to (it fell behind its schedule).
    pub requests_sent: u64,
    /// Requests not sent: `requests_requested - requests_sent`.
    pub requests_not_sent: u64,
    pub requests_ok: u64,
    pub requests_shed: u64,
    pub requests_failed: u64,
    /// Requests still running when the drain ended or the mode was stopped; counted in
    /// `requests_failed` too.
    pub requests_unfinished: u64,
    /// Keys the schedule asked for: `requests_requested × --batch`.
    pub keys_requested: u64,
    pub keys_ok: u64,
    /// Keys shed or failed, by kind.
    pub errors: Errors,
    /// Keys with no outcome: in requests never sent, or still waiting when their request was
    /// cut off (at the end of the drain, or when the mode was stopped).
    pub keys_not_attempted: u64,
    /// Of `keys_not_attempted`, those in requests never sent.
    pub keys_not_sent: u64,
    pub latency_ms: Latency,
    pub peak_sockets: usize,
    pub peak_time_wait: usize,
    pub peak_threads: usize,
    pub peak_rss_bytes: u64,
    pub first_error: Option<String>,
    /// Seconds from the mode's start to this summary: the end of its run, or, for a stopped
    /// mode, its last report.
    pub run_s: f64,
    /// Set when the harness stopped the mode at its time limit: why, and when. The figures are
    /// the mode's last report before it was stopped.
    pub stopped: Option<String>,
    pub timeline: Vec<Point>,
}

impl ModeSummary {
    /// The summary so far, from the mode's counters and samples.
    pub fn build(mode: &str, recorder: &Recorder, samples: &Samples) -> ModeSummary {
        let seconds = samples.time_wait.len().max(samples.rss.len());
        let (latency_ms, per_second) = recorder.latencies(seconds);
        let timeline = (0..seconds)
            .map(|s| {
                let kind = |k: ErrKind| recorder.errors_in(s, k);
                let latency = per_second.get(s).copied().flatten();
                Point {
                    second: s,
                    keys_ok: recorder.served_in(s),
                    failed_ports: kind(ErrKind::PortsExhausted) + kind(ErrKind::FdLimit),
                    failed_timeout: kind(ErrKind::Timeout),
                    failed_other: kind(ErrKind::Refused) + kind(ErrKind::Other),
                    shed: kind(ErrKind::Saturated) + kind(ErrKind::Paused),
                    time_wait: samples.time_wait.get(s).copied().unwrap_or(0),
                    rss_bytes: samples.rss.get(s).copied().unwrap_or(0),
                    batch_p50_ms: latency.map(|l| l.p50),
                    batch_p99_ms: latency.map(|l| l.p99),
                }
            })
            .collect();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        // Ended requests before sent ones: a request counted as ended was counted as sent
        // before, so a report taken mid-run never has more ended than sent.
        let (requests_ok, requests_shed, requests_failed, requests_unfinished) = (
            load(&recorder.requests_ok),
            load(&recorder.requests_shed),
            load(&recorder.requests_failed),
            recorder.requests_unfinished(),
        );
        let mut summary = ModeSummary {
            mode: mode.to_string(),
            requests_requested: recorder.plan.requests,
            requests_sent: load(&recorder.requests_sent),
            requests_not_sent: 0,
            requests_ok,
            requests_shed,
            requests_failed,
            requests_unfinished,
            keys_requested: 0,
            keys_ok: load(&recorder.keys_ok),
            errors: recorder.error_counts(),
            keys_not_attempted: 0,
            keys_not_sent: 0,
            latency_ms,
            peak_sockets: samples.peak_sockets,
            peak_time_wait: samples.peak_time_wait,
            peak_threads: samples.peak_threads,
            peak_rss_bytes: samples.peak_rss_bytes,
            first_error: recorder.first_error_text(),
            run_s: recorder.started.elapsed().as_secs_f64(),
            stopped: None,
            timeline,
        };
        summary.account(recorder.plan.batch);
        summary
    }

    /// Fills in what was asked for and what has no outcome, from the counts of what has.
    fn account(&mut self, batch: u64) {
        // The client never sends more than its schedule; `max` keeps the sums whole if it did.
        self.requests_requested = self.requests_requested.max(self.requests_sent);
        self.requests_not_sent = self.requests_requested - self.requests_sent;
        self.keys_requested = self.requests_requested * batch;
        self.keys_not_sent = self.requests_not_sent * batch;
        let outcome = self.keys_ok + self.errors.shed() + self.errors.failed();
        self.keys_not_attempted = self.keys_requested.saturating_sub(outcome);
    }

    /// The summary of a mode the harness stopped at its time limit: its last report, with the
    /// requests in flight counted as unfinished, or, with no report at all, every key not
    /// attempted.
    pub fn stopped(mode: &str, last: Option<ModeSummary>, plan: Plan, why: String) -> ModeSummary {
        let mut m = last.unwrap_or_else(|| ModeSummary {
            mode: mode.to_string(),
            requests_requested: plan.requests,
            requests_sent: 0,
            requests_not_sent: 0,
            requests_ok: 0,
            requests_shed: 0,
            requests_failed: 0,
            requests_unfinished: 0,
            keys_requested: 0,
            keys_ok: 0,
            errors: Errors::default(),
            keys_not_attempted: 0,
            keys_not_sent: 0,
            latency_ms: Latency::default(),
            peak_sockets: 0,
            peak_time_wait: 0,
            peak_threads: 0,
            peak_rss_bytes: 0,
            first_error: None,
            run_s: 0.0,
            stopped: None,
            timeline: Vec::new(),
        });
        let ended = m.requests_ok + m.requests_shed + m.requests_failed;
        let in_flight = m.requests_sent.saturating_sub(ended);
        m.requests_failed += in_flight;
        m.requests_unfinished += in_flight;
        m.account(plan.batch);
        m.stopped = Some(why);
        m
    }

    /// What does not add up, if anything: keys and requests each sum to what was asked for.
    pub fn accounting(&self) -> Result<(), String> {
        let e = &self.errors;
        let keys = self.keys_ok
            + e.saturated
            + e.paused
            + e.ports_exhausted
            + e.fd_limit
            + e.timeout
            + e.refused
            + e.other
            + self.keys_not_attempted;
        let requests =
            self.requests_ok + self.requests_shed + self.requests_failed + self.requests_not_sent;
        if keys != self.keys_requested {
            return Err(format!(
                "{}: {keys} keys accounted for, {} requested",
                self.mode, self.keys_requested
            ));
        }
        if requests != self.requests_requested {
            return Err(format!(
                "{}: {requests} requests accounted for, {} requested",
                self.mode, self.requests_requested
            ));
        }
        Ok(())
    }

    /// Whether memory stayed flat: the second half of the run peaked no more than a quarter
    /// (plus 4 MiB of noise) above the first half.
    pub fn memory_flat(&self) -> bool {
        let rss: Vec<u64> = self.timeline.iter().map(|p| p.rss_bytes).collect();
        if rss.len() < 4 {
            return true;
        }
        let (first, second) = rss.split_at(rss.len() / 2);
        let peak = |xs: &[u64]| xs.iter().copied().max().unwrap_or(0);
        peak(second) <= peak(first) + peak(first) / 4 + (4 << 20)
    }
}
