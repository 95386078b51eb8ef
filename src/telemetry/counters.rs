//! Counters and their snapshots: [`DialStats`] and [`PoolStats`].
//!
//! Counting is lock-free on the dial path, with one exception that ends by itself: the set of
//! distinct sources used is exact up to [`DialStats::DISTINCT_SOURCES_CAP`] addresses, after
//! which it saturates and is no longer touched.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::histogram::{Histogram, WaitPercentiles};
use crate::error::DialErrorKind;

/// A snapshot of a [`Dialer`](crate::Dialer)'s counters, from [`Dialer::stats`](crate::Dialer::stats).
///
/// Counters start at zero when the dialer is built and are shared by its clones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialStats {
    /// Connections established, TCP and unix.
    pub dials_ok: u64,
    /// Failed `connect` calls by the kind of their final error.
    pub failures: FailureCounts,
    /// Extra attempts made on another source after a source ran out of ports.
    pub retries: u64,
    /// Source addresses in quarantine now.
    pub quarantined: usize,
    /// Distinct source addresses that carried an established connection, exact up to
    /// [`DISTINCT_SOURCES_CAP`](Self::DISTINCT_SOURCES_CAP), where it stops growing.
    pub distinct_sources: usize,
}

impl DialStats {
    /// The most distinct source addresses [`distinct_sources`](Self::distinct_sources) counts
    /// exactly: 16,384. Past it the set saturates and the dial path no longer takes its lock.
    pub const DISTINCT_SOURCES_CAP: usize = 16_384;
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
    /// [`DialErrorKind::Resolve`].
    pub resolve: u64,
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
            DialErrorKind::Resolve => self.resolve,
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
    distinct: Mutex<HashSet<u128, BuildHasherDefault<MixHasher>>>,
    distinct_full: AtomicBool,
}

/// A one-multiply hash for the set of distinct sources. The std hasher's defence against
/// chosen keys buys nothing for a set that only the dialer's own picks fill, and hashing an
/// `IpAddr` with it was most of a dial's instructions in user space (740 per dial).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        // The product's high bits are its best mixed; fold them into the low ones, which pick
        // the bucket.
        self.0 ^ (self.0 >> 32)
    }
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
        // IPv4 as its IPv6-mapped form: one number per address, whatever its family.
        let key = match source {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        distinct.insert(key);
        if distinct.len() >= DialStats::DISTINCT_SOURCES_CAP {
            self.distinct_full.store(true, Ordering::Relaxed);
        }
    }

    /// A connection with no source address to count (a unix socket).
    pub(crate) fn record_ok_unaddressed(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
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
                resolve: failure(DialErrorKind::Resolve),
            },
            retries: self.retries.load(Ordering::Relaxed),
            quarantined,
            distinct_sources,
        }
    }
}

/// A snapshot of a [`Pool`](crate::Pool)'s counters, from [`Pool::stats`](crate::Pool::stats).
///
/// Every failed get is counted once, in exactly one of `timed_out`, `saturated`, `paused`,
/// `closed_gets` and `create_failed`; so `gets` is the sum of those and the successful gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Calls to `get` (including those made by `fan_out` and bulkheads).
    pub gets: u64,
    /// Gets that found no free connection at once and queued.
    pub waited: u64,
    /// Gets that failed on a timeout: the wait timeout (in the pool's stage, whether or not a
    /// dial for them was under way) or a bulkhead's share of it.
    pub timed_out: u64,
    /// Gets refused at once because the wait queue was full.
    pub saturated: u64,
    /// Gets refused because the pool was paused.
    pub paused: u64,
    /// Gets refused because the pool was closed.
    pub closed_gets: u64,
    /// Gets that failed to dial or set up a new connection, including those that failed at
    /// once with the last dial error while the target was down.
    pub create_failed: u64,
    /// Connections created: dialed and set up by the connector.
    pub created: u64,
    /// Dials and handshakes that failed (or outlasted the create timeout), counted where they
    /// ran, whether or not the get that started them still waited. With `created`, this
    /// accounts for every dial the pool started.
    pub create_errors: u64,
    /// Dials handed off to the pool: the get that started the dial no longer waited for it when
    /// it finished, because a connection given back served that get first (the common case
    /// under load, not an error), or because the get timed out or was cancelled. Their
    /// connections went to the pool as idle, so no handshake was wasted.
    pub handed_off: u64,
    /// Connections given back with a request in flight that the connector made clean again
    /// ([`Connector::recover`](crate::Connector::recover)) instead of closing.
    pub recovered: u64,
    /// Connections closed, by reason. Every connection the pool created is counted here once
    /// it closes, whatever closed it.
    pub closed: ClosedCounts,
    /// Time from `get` to a connection, over successful gets.
    pub wait: WaitPercentiles,
}

/// Connections closed, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedCounts {
    /// Failed its check (peer closed, unread bytes), was discarded by its user, or was made on
    /// a runtime that has shut down.
    pub broken: u64,
    /// Given back with a request in flight (its user timed out or was cancelled mid-request)
    /// and not made clean again: the connector cannot recover it, or recovery failed.
    pub in_flight: u64,
    /// Reached its (jittered) maximum lifetime.
    pub lifetime: u64,
    /// Stayed idle past the idle timeout.
    pub idle: u64,
    /// Closed by `resize`, `close` or the pool being dropped.
    pub other: u64,
}

impl ClosedCounts {
    /// All closes.
    pub fn total(&self) -> u64 {
        self.broken + self.in_flight + self.lifetime + self.idle + self.other
    }
}

/// Why a pooled connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Broken = 0,
    InFlight = 1,
    Lifetime = 2,
    Idle = 3,
    Other = 4,
}

impl CloseReason {
    pub(crate) fn from_u8(v: u8) -> CloseReason {
        match v {
            0 => CloseReason::Broken,
            1 => CloseReason::InFlight,
            2 => CloseReason::Lifetime,
            3 => CloseReason::Idle,
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
    pub(crate) closed_gets: AtomicU64,
    pub(crate) create_failed: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) create_errors: AtomicU64,
    /// Counts [`PoolStats::handed_off`].
    pub(crate) handed_off: AtomicU64,
    pub(crate) recovered: AtomicU64,
    closed: [AtomicU64; 5],
    pub(crate) wait: Histogram,
}

impl PoolCounters {
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let closed = |r: CloseReason| load(&self.closed[r as usize]);
        PoolStats {
            gets: load(&self.gets),
            waited: load(&self.waited),
            timed_out: load(&self.timed_out),
            saturated: load(&self.saturated),
            paused: load(&self.paused),
            closed_gets: load(&self.closed_gets),
            create_failed: load(&self.create_failed),
            created: load(&self.created),
            create_errors: load(&self.create_errors),
            handed_off: load(&self.handed_off),
            recovered: load(&self.recovered),
            closed: ClosedCounts {
                broken: closed(CloseReason::Broken),
                in_flight: closed(CloseReason::InFlight),
                lifetime: closed(CloseReason::Lifetime),
                idle: closed(CloseReason::Idle),
                other: closed(CloseReason::Other),
            },
            wait: self.wait.percentiles(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_sources_are_counted_exactly_in_both_families_up_to_the_cap() {
        let counters = DialCounters::default();
        for round in 0..3 {
            for i in 0..1_000u32 {
                counters.record_ok(IpAddr::from((0x7f00_0000 + i).to_be_bytes()));
                counters.record_ok(IpAddr::from((1u128 << 120 | u128::from(i)).to_be_bytes()));
            }
            let stats = counters.snapshot(0);
            assert_eq!(stats.distinct_sources, 2_000, "round {round}");
            assert_eq!(stats.dials_ok, 2_000 * (round + 1));
        }
        for i in 0..(DialStats::DISTINCT_SOURCES_CAP as u32) {
            counters.record_ok(IpAddr::from((0x7f10_0000 + i).to_be_bytes()));
        }
        assert_eq!(
            counters.snapshot(0).distinct_sources,
            DialStats::DISTINCT_SOURCES_CAP
        );
    }
}
