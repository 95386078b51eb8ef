//! Counters and stats snapshots.
//!
//! Counting is lock-free on the dial path, with one exception that ends by itself: the set of
//! distinct sources used is exact up to [`DISTINCT_SOURCES_CAP`] addresses, after which it
//! saturates and is no longer touched.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::DialErrorKind;

/// The most distinct source addresses [`DialStats::distinct_sources`] counts exactly.
pub const DISTINCT_SOURCES_CAP: usize = 16_384;

/// A snapshot of a [`Dialer`](crate::Dialer)'s counters, from [`Dialer::stats`](crate::Dialer::stats).
///
/// Counters start at zero when the dialer is built and are shared by its clones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialStats {
    /// Connections established.
    pub dials_ok: u64,
    /// Failed `connect` calls by the kind of their final error.
    pub failures: FailureCounts,
    /// Extra attempts made on another source after a source ran out of ports.
    pub retries: u64,
    /// Source addresses in quarantine now.
    pub quarantined: usize,
    /// Distinct source addresses that carried an established connection, exact up to
    /// [`DISTINCT_SOURCES_CAP`], where it stops growing.
    pub distinct_sources: usize,
}

/// Failure counts by [`DialErrorKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureCounts {
    /// [`DialErrorKind::PortsExhausted`].
    pub ports_exhausted: u64,
    /// [`DialErrorKind::Refused`].
    pub refused: u64,
    /// [`DialErrorKind::Timeout`].
    pub timeout: u64,
    /// [`DialErrorKind::FdLimit`].
    pub fd_limit: u64,
    /// [`DialErrorKind::Mismatch`].
    pub mismatch: u64,
    /// [`DialErrorKind::Io`].
    pub io: u64,
}

impl FailureCounts {
    /// The count for one kind.
    pub fn get(&self, kind: DialErrorKind) -> u64 {
        match kind {
            DialErrorKind::PortsExhausted => self.ports_exhausted,
            DialErrorKind::Refused => self.refused,
            DialErrorKind::Timeout => self.timeout,
            DialErrorKind::FdLimit => self.fd_limit,
            DialErrorKind::Mismatch => self.mismatch,
            DialErrorKind::Io => self.io,
        }
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        DialErrorKind::ALL.iter().map(|&k| self.get(k)).sum()
    }
}

/// The live counters behind [`DialStats`].
#[derive(Default)]
pub(crate) struct DialCounters {
    ok: AtomicU64,
    failures: [AtomicU64; DialErrorKind::ALL.len()],
    retries: AtomicU64,
    distinct: Mutex<HashSet<IpAddr>>,
    distinct_full: AtomicBool,
}

impl DialCounters {
    pub(crate) fn record_ok(&self, source: IpAddr) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        if self.distinct_full.load(Ordering::Relaxed) {
            return;
        }
        let mut distinct = self
            .distinct
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        distinct.insert(source);
        if distinct.len() >= DISTINCT_SOURCES_CAP {
            self.distinct_full.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_failure(&self, kind: DialErrorKind) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, quarantined: usize) -> DialStats {
        let failure = |kind: DialErrorKind| self.failures[kind.index()].load(Ordering::Relaxed);
        let distinct_sources = self
            .distinct
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        DialStats {
            dials_ok: self.ok.load(Ordering::Relaxed),
            failures: FailureCounts {
                ports_exhausted: failure(DialErrorKind::PortsExhausted),
                refused: failure(DialErrorKind::Refused),
                timeout: failure(DialErrorKind::Timeout),
                fd_limit: failure(DialErrorKind::FdLimit),
                mismatch: failure(DialErrorKind::Mismatch),
                io: failure(DialErrorKind::Io),
            },
            retries: self.retries.load(Ordering::Relaxed),
            quarantined,
            distinct_sources,
        }
    }
}

/// A snapshot of a [`Pool`](crate::Pool)'s counters, from [`Pool::stats`](crate::Pool::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Calls to `get` (including those made by `fan_out` and bulkheads).
    pub gets: u64,
    /// Gets that found no free slot and queued.
    pub waited: u64,
    /// Gets that failed on a timeout (wait, create or check).
    pub timed_out: u64,
    /// Gets refused at once because the wait queue was full.
    pub saturated: u64,
    /// Gets refused because the pool was paused.
    pub paused: u64,
    /// Gets that failed to dial or set up a new connection.
    pub create_failed: u64,
    /// Connections created.
    pub created: u64,
    /// Connections closed, by reason.
    pub closed: ClosedCounts,
    /// Time from `get` to a connection, over successful gets.
    pub wait: WaitPercentiles,
}

/// Connections closed, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedCounts {
    /// Failed its check (peer closed, unread bytes, handshake error) or was discarded by its user.
    pub broken: u64,
    /// Reached its (jittered) maximum lifetime.
    pub lifetime: u64,
    /// Stayed idle past the idle timeout.
    pub idle: u64,
    /// Dropped by `resize` or `close`.
    pub other: u64,
}

/// Percentiles of the time `get` took, from a histogram with quarter-octave buckets: each
/// figure is an upper bound within 19% of the true value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitPercentiles {
    /// Median.
    pub p50: std::time::Duration,
    /// 90th percentile.
    pub p90: std::time::Duration,
    /// 99th percentile.
    pub p99: std::time::Duration,
    /// The longest.
    pub max: std::time::Duration,
}

/// Why a pooled connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Broken = 0,
    Lifetime = 1,
    Idle = 2,
    Other = 3,
}

impl CloseReason {
    pub(crate) fn from_u8(v: u8) -> CloseReason {
        match v {
            0 => CloseReason::Broken,
            1 => CloseReason::Lifetime,
            2 => CloseReason::Idle,
            _ => CloseReason::Other,
        }
    }
}

/// Lock-free counters behind [`PoolStats`].
#[derive(Default)]
pub(crate) struct PoolCounters {
    pub(crate) gets: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) saturated: AtomicU64,
    pub(crate) paused: AtomicU64,
    pub(crate) create_failed: AtomicU64,
    pub(crate) created: AtomicU64,
    closed: [AtomicU64; 4],
    pub(crate) wait: Histogram,
}

impl PoolCounters {
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolStats {
            gets: load(&self.gets),
            waited: load(&self.waited),
            timed_out: load(&self.timed_out),
            saturated: load(&self.saturated),
            paused: load(&self.paused),
            create_failed: load(&self.create_failed),
            created: load(&self.created),
            closed: ClosedCounts {
                broken: load(&self.closed[CloseReason::Broken as usize]),
                lifetime: load(&self.closed[CloseReason::Lifetime as usize]),
                idle: load(&self.closed[CloseReason::Idle as usize]),
                other: load(&self.closed[CloseReason::Other as usize]),
            },
            wait: self.wait.percentiles(),
        }
    }
}

/// Buckets per octave: quarter octaves.
const SUB: u32 = 4;
/// Octaves of microseconds covered: up to 2^40 µs, about 12 days.
const OCTAVES: u32 = 40;

/// A fixed-size, lock-free histogram of durations in microseconds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; (OCTAVES * SUB) as usize],
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < 2 {
            return 0;
        }
        let octave = 63 - us.leading_zeros();
        // The two bits after the leading one pick the quarter within the octave.
        let quarter = ((us << 2) >> octave) as u32 - SUB;
        ((octave * SUB + quarter) as usize).min((OCTAVES * SUB) as usize - 1)
    }

    fn upper_bound_us(bucket: usize) -> u64 {
        let (octave, quarter) = (bucket as u32 / SUB, bucket as u32 % SUB);
        ((u64::from(SUB + quarter + 1)) << octave) >> 2
    }

    pub(crate) fn record(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn percentile(&self, counts: &[u64], total: u64, p: f64) -> std::time::Duration {
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let max = self.max_us.load(Ordering::Relaxed);
                return std::time::Duration::from_micros(Self::upper_bound_us(i).min(max));
            }
        }
        std::time::Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    pub(crate) fn percentiles(&self) -> WaitPercentiles {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return WaitPercentiles::default();
        }
        WaitPercentiles {
            p50: self.percentile(&counts, total, 0.50),
            p90: self.percentile(&counts, total, 0.90),
            p99: self.percentile(&counts, total, 0.99),
            max: std::time::Duration::from_micros(self.max_us.load(Ordering::Relaxed)),
        }
    }
}

/// Default window of the rate-limited error reports: the first error of a kind in a window is
/// logged at once; the rest are counted and summarized once.
pub const DEFAULT_REPORT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

const NEVER: u64 = u64::MAX;

/// Rate-limited error reporting through `tracing`, for `N` kinds of error.
///
/// Per kind: the first error of a window is logged at once, with full context; later ones in
/// the same window only bump a counter; the count is logged as one summary when the next window
/// opens or when [`flush`](Reporter::flush) runs (the pool's reaper calls it). So 100,000
/// failures in a second make one event, plus one summary. No lock is taken: two atomics per
/// kind, so nothing is logged while a lock is held.
pub(crate) struct Reporter<const N: usize> {
    window_ms: u64,
    epoch: std::time::Instant,
    window_start: [AtomicU64; N],
    suppressed: [AtomicU64; N],
}

impl<const N: usize> Reporter<N> {
    pub(crate) fn new(window: std::time::Duration) -> Self {
        Reporter {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            epoch: std::time::Instant::now(),
            window_start: std::array::from_fn(|_| AtomicU64::new(NEVER)),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Counts one error of kind `kind`. If it opens a new window, calls `log` with the number of
    /// errors suppressed in the previous window; `log` should emit one event.
    pub(crate) fn report(&self, kind: usize, log: impl FnOnce(u64)) {
        let now = self.now_ms();
        let start = self.window_start[kind].load(Ordering::Relaxed);
        if start != NEVER && now < start.saturating_add(self.window_ms) {
            self.suppressed[kind].fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.window_start[kind].compare_exchange(
            start,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => log(self.suppressed[kind].swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed[kind].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Emits the summaries of windows that have ended with errors still uncounted in the log.
    /// `log(kind, count, window)` should emit one event.
    pub(crate) fn flush(&self, mut log: impl FnMut(usize, u64, std::time::Duration)) {
        let now = self.now_ms();
        for kind in 0..N {
            let start = self.window_start[kind].load(Ordering::Relaxed);
            if start == NEVER || now < start.saturating_add(self.window_ms) {
                continue;
            }
            let n = self.suppressed[kind].swap(0, Ordering::Relaxed);
            if n > 0 {
                log(kind, n, std::time::Duration::from_millis(self.window_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_bound_the_value_within_a_quarter_octave() {
        for us in [0u64, 1, 2, 3, 5, 7, 8, 100, 1_000, 12_345, 1 << 30] {
            let b = Histogram::bucket(us);
            let upper = Histogram::upper_bound_us(b);
            assert!(upper >= us, "{us} -> bucket {b} upper {upper}");
            assert!(
                upper as f64 <= (us.max(1) as f64) * 1.25 + 1.0,
                "{us} -> {upper}"
            );
        }
    }

    #[test]
    fn histogram_percentiles() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert!(
            p.p50 >= Duration::from_millis(50) && p.p50 <= Duration::from_millis(63),
            "{p:?}"
        );
        assert!(
            p.p99 >= Duration::from_millis(99) && p.p99 <= Duration::from_millis(100),
            "{p:?}"
        );
        assert_eq!(p.max, Duration::from_millis(100));
    }

    #[test]
    fn reporter_logs_first_then_counts() {
        let r: Reporter<2> = Reporter::new(Duration::from_secs(3600));
        let mut events = 0;
        for _ in 0..100_000 {
            r.report(0, |_| events += 1);
        }
        assert_eq!(events, 1);
        r.report(1, |_| events += 1);
        assert_eq!(events, 2, "kinds have windows of their own");
        let mut flushed = 0;
        r.flush(|_, _, _| flushed += 1);
        assert_eq!(flushed, 0, "the window is still open");
    }

    #[test]
    fn reporter_accounts_for_every_error_across_windows() {
        // Whatever the scheduling, each error is either logged, or counted in exactly one
        // later summary.
        let r: Reporter<1> = Reporter::new(Duration::from_millis(2));
        let (mut events, mut summarized) = (0u64, 0u64);
        for i in 0..1_000 {
            r.report(0, |n| {
                events += 1;
                summarized += n;
            });
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        r.flush(|_, n, _| summarized += n);
        assert!(events >= 10, "every sleep opens a new window: {events}");
        assert_eq!(events + summarized, 1_000);
    }
}
