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
