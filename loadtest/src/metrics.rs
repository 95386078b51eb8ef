//! What a mode did: counters, batch latencies, and a sampler of sockets, threads and memory.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiloop::{DialErrorKind, PoolError, ports};
use serde::{Deserialize, Serialize};

/// How a key was not served: shed on purpose (`Saturated`, `Paused`: a bounded system
/// refusing work it could not do in time) or failed (everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrKind {
    PortsExhausted = 0,
    FdLimit = 1,
    Timeout = 2,
    Refused = 3,
    Saturated = 4,
    Other = 5,
    Paused = 6,
}

/// How many kinds there are.
pub const KINDS: usize = 7;

impl ErrKind {
    pub fn is_shed(self) -> bool {
        matches!(self, ErrKind::Saturated | ErrKind::Paused)
    }
}

/// How a batch request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every key served.
    Served,
    /// Some keys shed, none failed.
    Shed,
    /// Some key failed.
    Failed,
}

impl ErrKind {
    pub fn of_dial(kind: DialErrorKind) -> ErrKind {
        match kind {
            DialErrorKind::PortsExhausted => ErrKind::PortsExhausted,
            DialErrorKind::FdLimit => ErrKind::FdLimit,
            DialErrorKind::Timeout => ErrKind::Timeout,
            DialErrorKind::Refused => ErrKind::Refused,
            _ => ErrKind::Other,
        }
    }

    pub fn of_pool<E>(e: &PoolError<E>) -> ErrKind {
        match e {
            PoolError::Dial(d) => ErrKind::of_dial(d.kind()),
            PoolError::Timeout(_) => ErrKind::Timeout,
            PoolError::Saturated => ErrKind::Saturated,
            PoolError::Paused => ErrKind::Paused,
            _ => ErrKind::Other,
        }
    }

    pub fn of_io(e: &std::io::Error) -> ErrKind {
        match e.kind() {
            std::io::ErrorKind::TimedOut => ErrKind::Timeout,
            std::io::ErrorKind::ConnectionRefused => ErrKind::Refused,
            _ => ErrKind::Other,
        }
    }
}

/// Counters for one mode, shared by its request tasks.
pub struct Recorder {
    started: Instant,
    pub keys_ok: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_shed: AtomicU64,
    pub requests_failed: AtomicU64,
    errors: [AtomicU64; KINDS],
    /// Errors of each kind in each second of the run; the last second takes everything later.
    per_second: Vec<[AtomicU64; KINDS]>,
    /// Keys served in each second of the run.
    ok_per_second: Vec<AtomicU64>,
    requests_unfinished: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
    first_error: Mutex<Option<String>>,
}

impl Recorder {
    pub fn new(seconds: usize) -> Recorder {
        Recorder {
            started: Instant::now(),
            keys_ok: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_shed: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            errors: Default::default(),
            per_second: (0..seconds.max(1)).map(|_| Default::default()).collect(),
            ok_per_second: (0..seconds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            requests_unfinished: AtomicU64::new(0),
            latencies_ms: Mutex::new(Vec::new()),
            first_error: Mutex::new(None),
        }
    }

    /// Keeps the text of the mode's first error, for the report.
    pub fn first_error(&self, text: impl FnOnce() -> String) {
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(text());
        }
    }

    fn second(&self) -> usize {
        (self.started.elapsed().as_secs() as usize).min(self.per_second.len() - 1)
    }

    /// `n` keys not served, of one kind.
    pub fn errors(&self, kind: ErrKind, n: u64) {
        self.errors[kind as usize].fetch_add(n, Ordering::Relaxed);
        self.per_second[self.second()][kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn key_ok(&self) {
        self.keys_ok_n(1);
    }

    /// `n` keys served.
    pub fn keys_ok_n(&self, n: u64) {
        self.keys_ok.fetch_add(n, Ordering::Relaxed);
        self.ok_per_second[self.second()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn request(&self, outcome: Outcome, took: Duration) {
        let counter = match outcome {
            Outcome::Served => &self.requests_ok,
            Outcome::Shed => &self.requests_shed,
            Outcome::Failed => &self.requests_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latencies_ms
            .lock()
            .unwrap()
            .push(took.as_secs_f64() * 1e3);
    }

    /// A request cut off at the end of the drain: failed, with no latency to report.
    pub fn request_unfinished(&self) {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.requests_unfinished.fetch_add(1, Ordering::Relaxed);
    }

    /// Keys shed and keys failed so far.
    pub fn shed_and_failed(&self) -> (u64, u64) {
        let e = self.error_counts();
        (e.shed(), e.failed())
    }

    fn error_counts(&self) -> Errors {
        let get = |k: ErrKind| self.errors[k as usize].load(Ordering::Relaxed);
        Errors {
            ports_exhausted: get(ErrKind::PortsExhausted),
            fd_limit: get(ErrKind::FdLimit),
            timeout: get(ErrKind::Timeout),
            refused: get(ErrKind::Refused),
            other: get(ErrKind::Other),
            saturated: get(ErrKind::Saturated),
            paused: get(ErrKind::Paused),
        }
    }

    fn latency(&self) -> Latency {
        let mut all = self.latencies_ms.lock().unwrap().clone();
        if all.is_empty() {
            return Latency::default();
        }
        all.sort_by(f64::total_cmp);
        let at = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: all[all.len() - 1],
        }
    }
}

/// Peaks and a per-second timeline, sampled every 100 ms.
#[derive(Default)]
struct Samples {
    peak_sockets: usize,
    peak_time_wait: usize,
    peak_threads: usize,
    peak_rss_bytes: u64,
    /// TIME_WAIT sockets at the end of each second.
    time_wait: Vec<usize>,
    /// Resident memory at the end of each second.
    rss: Vec<u64>,
}

/// Samples sockets, threads and memory on a thread of its own, so that a runtime swamped by the
/// naive client's tasks cannot starve the measurements.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

impl Sampler {
    pub fn start(target: SocketAddr, range: Option<RangeInclusive<u16>>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Samples::default();
            loop {
                if let Ok(snap) = ports::snapshot(target, range.clone()) {
                    let time_wait = snap.time_wait();
                    samples.peak_sockets = samples.peak_sockets.max(snap.total() - time_wait);
                    samples.peak_time_wait = samples.peak_time_wait.max(time_wait);
                    let second = started.elapsed().as_secs() as usize;
                    if samples.time_wait.len() <= second {
                        samples.time_wait.resize(second + 1, time_wait);
                    }
                    samples.time_wait[second] = time_wait;
                }
                let (threads, rss) = process_status();
                samples.peak_threads = samples.peak_threads.max(threads);
                samples.peak_rss_bytes = samples.peak_rss_bytes.max(rss);
                let second = started.elapsed().as_secs() as usize;
                if samples.rss.len() <= second {
                    samples.rss.resize(second + 1, rss);
                }
                samples.rss[second] = rss;
                if stopping.load(Ordering::Relaxed) {
                    return samples;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// This process's thread count and resident memory, from `/proc/self/status`.
fn process_status() -> (usize, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:") as usize, field("VmRSS:") * 1024)
}

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
}

/// One mode's summary, in the `--json` shape.
#[derive(Serialize, Deserialize, Clone)]
pub struct ModeSummary {
    pub mode: String,
    pub requests_ok: u64,
    #[serde(default)]
    pub requests_shed: u64,
    pub requests_failed: u64,
    /// Requests still running when the drain ended; counted in `requests_failed` too.
    pub requests_unfinished: u64,
    pub keys_ok: u64,
    pub errors: Errors,
    pub latency_ms: Latency,
    pub peak_sockets: usize,
    pub peak_time_wait: usize,
    pub peak_threads: usize,
    pub peak_rss_bytes: u64,
    pub first_error: Option<String>,
    /// Set when the harness stopped the mode at its time limit: what was unfinished.
    #[serde(default)]
    pub stopped: Option<String>,
    pub timeline: Vec<Point>,
}

impl ModeSummary {
    /// The summary of a mode the harness had to stop: nothing measured, and why.
    pub fn stopped(mode: &str, why: String) -> ModeSummary {
        ModeSummary {
            mode: mode.to_string(),
            requests_ok: 0,
            requests_shed: 0,
            requests_failed: 0,
            requests_unfinished: 0,
            keys_ok: 0,
            errors: Errors::default(),
            latency_ms: Latency::default(),
            peak_sockets: 0,
            peak_time_wait: 0,
            peak_threads: 0,
            peak_rss_bytes: 0,
            first_error: None,
            stopped: Some(why),
            timeline: Vec::new(),
        }
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

    pub fn collect(mode: &str, recorder: &Recorder, sampler: Sampler) -> ModeSummary {
        let samples = sampler.finish();
        // The timeline ends with the mode's last sample.
        let seconds = samples.time_wait.len();
        let timeline = (0..seconds)
            .map(|s| {
                let kind = |k: ErrKind| {
                    recorder
                        .per_second
                        .get(s)
                        .map_or(0, |e| e[k as usize].load(Ordering::Relaxed))
                };
                Point {
                    second: s,
                    keys_ok: recorder
                        .ok_per_second
                        .get(s)
                        .map_or(0, |e| e.load(Ordering::Relaxed)),
                    failed_ports: kind(ErrKind::PortsExhausted) + kind(ErrKind::FdLimit),
                    failed_timeout: kind(ErrKind::Timeout),
                    failed_other: kind(ErrKind::Refused) + kind(ErrKind::Other),
                    shed: kind(ErrKind::Saturated) + kind(ErrKind::Paused),
                    time_wait: samples.time_wait.get(s).copied().unwrap_or(0),
                    rss_bytes: samples.rss.get(s).copied().unwrap_or(0),
                }
            })
            .collect();
        ModeSummary {
            mode: mode.to_string(),
            requests_ok: recorder.requests_ok.load(Ordering::Relaxed),
            requests_shed: recorder.requests_shed.load(Ordering::Relaxed),
            requests_failed: recorder.requests_failed.load(Ordering::Relaxed),
            requests_unfinished: recorder.requests_unfinished.load(Ordering::Relaxed),
            keys_ok: recorder.keys_ok.load(Ordering::Relaxed),
            errors: recorder.error_counts(),
            latency_ms: recorder.latency(),
            peak_sockets: samples.peak_sockets,
            peak_time_wait: samples.peak_time_wait,
            peak_threads: samples.peak_threads,
            peak_rss_bytes: samples.peak_rss_bytes,
            first_error: recorder.first_error.lock().unwrap().clone(),
            stopped: None,
            timeline,
        }
    }
}
