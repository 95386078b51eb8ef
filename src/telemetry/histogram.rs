//! A fixed-size, lock-free histogram of durations, for wait-time percentiles.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Buckets per octave: quarter octaves.
const SUB: u32 = 4;
/// Octaves of microseconds covered: up to 2^40 µs, about 12 days.
const OCTAVES: u32 = 40;

/// A fixed-size, lock-free histogram of durations in microseconds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; (OCTAVES * SUB) as usize],
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
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

    /// Records a zero: most gets, served without waiting. Inline, and it raises no maximum.
    #[inline]
    pub(crate) fn record_zero(&self) {
        self.buckets[0].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, d: std::time::Duration) {
        if d.is_zero() {
            self.record_zero();
            return;
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
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
    fn zero_waits_count_in_the_first_bucket() {
        let h = Histogram::default();
        for _ in 0..9 {
            h.record(Duration::ZERO);
        }
        h.record(Duration::from_millis(5));
        let p = h.percentiles();
        // The first bucket's bound: under 2 µs.
        assert!(p.p50 <= Duration::from_micros(1), "{p:?}");
        assert!(p.p90 <= Duration::from_micros(1), "{p:?}");
        assert_eq!(p.max, Duration::from_millis(5), "{p:?}");
        assert!(p.p99 > Duration::from_millis(4), "{p:?}");
    }
}
