//! Rate-limited error reporting through `tracing`, one [`Reporter`] type for every layer, with
//! typed kinds.
//!
//! Per kind: the first event of a window is logged at once, with full context; later ones in the
//! same window only bump a counter; the count is logged as one summary when the next window
//! opens or when [`Reporter::flush`] runs (a pool's reaper calls it). So 100,000 failures in a
//! second make one event, plus one summary that says how many and of which kind. No lock is
//! taken: two atomics per kind, so nothing is logged while a lock is held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default window of the rate-limited error reports: the first error of a kind in a window is
/// logged at once; the rest are counted and summarized once.
pub(crate) const DEFAULT_REPORT_WINDOW: Duration = Duration::from_secs(10);

const NEVER: u64 = u64::MAX;

/// A kind of reported event: a small enum with a dense index.
pub(crate) trait ReportKind: Copy + 'static {
    /// How many kinds there are; `index` is below it.
    const COUNT: usize;
    /// The kind's dense index.
    fn index(self) -> usize;
    /// The kind at `index`.
    fn from_index(index: usize) -> Self;
    /// What a summary line calls events of this kind, plural ("gets failed: wait timeout").
    fn describe(self) -> &'static str;
}

/// The rate limiter, for the kinds `K`.
pub(crate) struct Reporter<K: ReportKind> {
    window_ms: u64,
    epoch: Instant,
    window_start: Box<[AtomicU64]>,
    suppressed: Box<[AtomicU64]>,
    _kind: std::marker::PhantomData<fn(K)>,
}

impl<K: ReportKind> Reporter<K> {
    pub(crate) fn new(window: Duration) -> Self {
        Reporter {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            epoch: Instant::now(),
            window_start: (0..K::COUNT).map(|_| AtomicU64::new(NEVER)).collect(),
            suppressed: (0..K::COUNT).map(|_| AtomicU64::new(0)).collect(),
            _kind: std::marker::PhantomData,
        }
    }

    /// The window, as configured.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Counts one event of `kind`. If it opens a new window, calls `log` with the number of
    /// events suppressed in the previous window; `log` should emit one event.
    pub(crate) fn report(&self, kind: K, log: impl FnOnce(u64)) {
        let i = kind.index();
        let now = self.now_ms();
        let start = self.window_start[i].load(Ordering::Relaxed);
        if start != NEVER && now < start.saturating_add(self.window_ms) {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.window_start[i].compare_exchange(
            start,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => log(self.suppressed[i].swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Emits the summaries of windows that have ended with events not yet in the log.
    /// `log(kind, count, window)` should emit one event.
    pub(crate) fn flush(&self, mut log: impl FnMut(K, u64, Duration)) {
        let now = self.now_ms();
        for i in 0..K::COUNT {
            let start = self.window_start[i].load(Ordering::Relaxed);
            if start == NEVER || now < start.saturating_add(self.window_ms) {
                continue;
            }
            let n = self.suppressed[i].swap(0, Ordering::Relaxed);
            if n > 0 {
                log(K::from_index(i), n, self.window());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Two {
        A,
        B,
    }

    impl ReportKind for Two {
        const COUNT: usize = 2;
        fn index(self) -> usize {
            self as usize
        }
        fn from_index(i: usize) -> Self {
            if i == 0 { Two::A } else { Two::B }
        }
        fn describe(self) -> &'static str {
            "events"
        }
    }

    #[test]
    fn reporter_logs_first_then_counts() {
        let r: Reporter<Two> = Reporter::new(Duration::from_secs(3600));
        let mut events = 0;
        for _ in 0..100_000 {
            r.report(Two::A, |_| events += 1);
        }
        assert_eq!(events, 1);
        r.report(Two::B, |_| events += 1);
        assert_eq!(events, 2, "kinds have windows of their own");
        let mut flushed = 0;
        r.flush(|_, _, _| flushed += 1);
        assert_eq!(flushed, 0, "the window is still open");
    }

    #[test]
    fn reporter_accounts_for_every_error_across_windows() {
        // Whatever the scheduling, each error is either logged, or counted in exactly one
        // later summary, under its own kind.
        let r: Reporter<Two> = Reporter::new(Duration::from_millis(2));
        let (mut events, mut summarized) = (0u64, 0u64);
        for i in 0..1_000 {
            r.report(Two::B, |n| {
                events += 1;
                summarized += n;
            });
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        r.flush(|kind, n, _| {
            assert_eq!(kind, Two::B);
            summarized += n;
        });
        assert!(events >= 10, "every sleep opens a new window: {events}");
        assert_eq!(events + summarized, 1_000);
    }
}
