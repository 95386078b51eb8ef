//! What a mode did: counters, batch latencies, and a sampler of sockets, threads and memory.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::summary::{Errors, Latency, ModeSummary};
use multiloop::{DialErrorKind, PoolError, ports};

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

/// What a mode is asked to do: `requests` batch requests of `batch` keys each.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub requests: u64,
    pub batch: u64,
}

/// Counters for one mode, shared by its request tasks.
pub struct Recorder {
    pub started: Instant,
    pub plan: Plan,
    pub keys_ok: AtomicU64,
    pub requests_sent: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_shed: AtomicU64,
    pub requests_failed: AtomicU64,
    errors: [AtomicU64; KINDS],
    /// Errors of each kind in each second of the run; the last second takes everything later.
    per_second: Vec<[AtomicU64; KINDS]>,
    /// Keys served in each second of the run.
    ok_per_second: Vec<AtomicU64>,
    requests_unfinished: AtomicU64,
    /// Each finished request: the second it finished in and its latency in milliseconds.
    latencies_ms: Mutex<Vec<(usize, f64)>>,
    first_error: Mutex<Option<String>>,
}

impl Recorder {
    pub fn new(seconds: usize, plan: Plan) -> Recorder {
        Recorder {
            started: Instant::now(),
            plan,
            keys_ok: AtomicU64::new(0),
            requests_sent: AtomicU64::new(0),
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

    pub fn first_error_text(&self) -> Option<String> {
        self.first_error.lock().unwrap().clone()
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

    /// A batch request was sent.
    pub fn request_sent(&self) {
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request(&self, outcome: Outcome, took: Duration) {
        let counter = match outcome {
            Outcome::Served => &self.requests_ok,
            Outcome::Shed => &self.requests_shed,
            Outcome::Failed => &self.requests_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let second = self.second();
        self.latencies_ms
            .lock()
            .unwrap()
            .push((second, took.as_secs_f64() * 1e3));
    }

    /// A request cut off at the end of the drain: failed, with no latency to report.
    pub fn request_unfinished(&self) {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.requests_unfinished.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests_unfinished(&self) -> u64 {
        self.requests_unfinished.load(Ordering::Relaxed)
    }

    /// Keys shed and keys failed so far.
    pub fn shed_and_failed(&self) -> (u64, u64) {
        let e = self.error_counts();
        (e.shed(), e.failed())
    }

    pub fn error_counts(&self) -> Errors {
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

    /// Errors of one kind in one second.
    pub fn errors_in(&self, second: usize, kind: ErrKind) -> u64 {
        self.per_second
            .get(second)
            .map_or(0, |e| e[kind as usize].load(Ordering::Relaxed))
    }

    /// Keys served in one second.
    pub fn served_in(&self, second: usize) -> u64 {
        self.ok_per_second
            .get(second)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Latency percentiles of every request finished so far, and of those finished in each
    /// second (`None` where none finished).
    pub fn latencies(&self, seconds: usize) -> (Latency, Vec<Option<Latency>>) {
        let all = self.latencies_ms.lock().unwrap().clone();
        let overall = Latency::of(all.iter().map(|&(_, ms)| ms).collect()).unwrap_or_default();
        let mut per_second: Vec<Vec<f64>> = vec![Vec::new(); seconds];
        for (s, ms) in all {
            if let Some(v) = per_second.get_mut(s) {
                v.push(ms);
            }
        }
        (overall, per_second.into_iter().map(Latency::of).collect())
    }
}

/// Peaks and a per-second timeline, sampled every 100 ms.
#[derive(Default, Clone)]
pub struct Samples {
    pub peak_sockets: usize,
    pub peak_time_wait: usize,
    pub peak_threads: usize,
    pub peak_rss_bytes: u64,
    /// TIME_WAIT sockets at the end of each second.
    pub time_wait: Vec<usize>,
    /// Resident memory at the end of each second (the last value read, where a read failed).
    pub rss: Vec<u64>,
}

/// Samples sockets, threads and memory on a thread of its own, so that a runtime swamped by the
/// naive client's tasks cannot starve the measurements; every half second it also prints the
/// mode's summary so far (`SNAPSHOT {json}`), which the harness keeps in case it has to stop
/// the mode.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

impl Sampler {
    pub fn start(
        mode: &'static str,
        target: SocketAddr,
        range: Option<RangeInclusive<u16>>,
        recorder: Arc<Recorder>,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Samples::default();
            for tick in 0u64.. {
                let second = recorder.started.elapsed().as_secs() as usize;
                if let Ok(snap) = ports::snapshot(target, range.clone()) {
                    let time_wait = snap.time_wait();
                    samples.peak_sockets = samples.peak_sockets.max(snap.total() - time_wait);
                    samples.peak_time_wait = samples.peak_time_wait.max(time_wait);
                    if samples.time_wait.len() <= second {
                        samples.time_wait.resize(second + 1, time_wait);
                    }
                    samples.time_wait[second] = time_wait;
                }
                // A mode out of descriptors cannot open /proc/self/status either: a read that
                // fails (0) leaves the second's memory at the last value read.
                let (threads, rss) = process_status();
                samples.peak_threads = samples.peak_threads.max(threads);
                samples.peak_rss_bytes = samples.peak_rss_bytes.max(rss);
                let last = samples.rss.last().copied().unwrap_or(0);
                if samples.rss.len() <= second {
                    samples.rss.resize(second + 1, last);
                }
                if rss > 0 {
                    samples.rss[second] = rss;
                }
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if tick % 5 == 4 {
                    let so_far = ModeSummary::build(mode, &recorder, &samples);
                    if let Ok(json) = serde_json::to_string(&so_far) {
                        println!("SNAPSHOT {json}");
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Sampler { stop, thread }
    }

    pub fn finish(self) -> Samples {
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
