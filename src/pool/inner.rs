//! What a pool's handles share: deadpool's pool, the supply, the switches, the counters and the
//! reporter with the pool's event kinds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed;

use super::bulkhead::Bulkheads;
use super::leak::Checkouts;
use super::manager::Manager;
use super::supply::Supply;
use crate::connector::Connector;
use crate::dial::Target;
use crate::error::{DialErrorKind, PoolError, TimeoutKind};
use crate::telemetry::counters::PoolCounters;
use crate::telemetry::report::{ReportKind, Reporter};

/// What the pool reports, rate-limited: each failure a caller sees, by why, and the port
/// warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolEvent {
    WaitTimeout,
    CreateTimeout,
    Saturated,
    Paused,
    Closed,
    Backend,
    BulkheadSaturated,
    BulkheadTimeout,
    Ports,
    Dial(DialErrorKind),
}

const FIXED: usize = 9;

impl ReportKind for PoolEvent {
    const COUNT: usize = FIXED + DialErrorKind::ALL.len();

    fn index(self) -> usize {
        match self {
            PoolEvent::WaitTimeout => 0,
            PoolEvent::CreateTimeout => 1,
            PoolEvent::Saturated => 2,
            PoolEvent::Paused => 3,
            PoolEvent::Closed => 4,
            PoolEvent::Backend => 5,
            PoolEvent::BulkheadSaturated => 6,
            PoolEvent::BulkheadTimeout => 7,
            PoolEvent::Ports => 8,
            PoolEvent::Dial(kind) => FIXED + kind as usize,
        }
    }

    fn from_index(index: usize) -> Self {
        match index {
            0 => PoolEvent::WaitTimeout,
            1 => PoolEvent::CreateTimeout,
            2 => PoolEvent::Saturated,
            3 => PoolEvent::Paused,
            4 => PoolEvent::Closed,
            5 => PoolEvent::Backend,
            6 => PoolEvent::BulkheadSaturated,
            7 => PoolEvent::BulkheadTimeout,
            8 => PoolEvent::Ports,
            i => PoolEvent::Dial(DialErrorKind::ALL[(i - FIXED).min(DialErrorKind::ALL.len() - 1)]),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PoolEvent::WaitTimeout => "gets failed: timed out waiting for a connection",
            PoolEvent::CreateTimeout => "gets failed: timed out waiting for a new connection",
            PoolEvent::Saturated => "gets shed: the wait queue was full (saturated)",
            PoolEvent::Paused => "gets shed: the pool is paused",
            PoolEvent::Closed => "gets refused: the pool is closed",
            PoolEvent::Backend => "gets failed: the connector's handshake failed",
            PoolEvent::BulkheadSaturated => "gets shed: a bulkhead's wait queue was full",
            PoolEvent::BulkheadTimeout => "gets failed: timed out waiting for a bulkhead",
            PoolEvent::Ports => "port utilization warnings",
            PoolEvent::Dial(kind) => match kind {
                DialErrorKind::PortsExhausted => "gets failed: dial error, ports exhausted",
                DialErrorKind::Refused => "gets failed: dial error, connection refused",
                DialErrorKind::Timeout => "gets failed: dial error, connect timed out",
                DialErrorKind::FdLimit => "gets failed: dial error, file descriptor limit",
                DialErrorKind::Mismatch => "gets failed: dial error, source/target mismatch",
                _ => "gets failed: dial error, I/O",
            },
        }
    }
}

impl PoolEvent {
    /// The event of a failed get.
    pub(crate) fn of<E>(err: &PoolError<E>) -> PoolEvent {
        match err {
            PoolError::Timeout(TimeoutKind::Wait) => PoolEvent::WaitTimeout,
            PoolError::Timeout(_) => PoolEvent::CreateTimeout,
            PoolError::Saturated => PoolEvent::Saturated,
            PoolError::Paused => PoolEvent::Paused,
            PoolError::Closed => PoolEvent::Closed,
            PoolError::Dial(e) => PoolEvent::Dial(e.kind()),
            PoolError::Backend(_) => PoolEvent::Backend,
        }
    }
}

pub(crate) struct PoolInner<C: Connector> {
    /// `PoolConfig::name`, or the target as written.
    pub(crate) name: Arc<str>,
    pub(crate) pool: managed::Pool<Manager<C>>,
    pub(crate) supply: Arc<Supply<C>>,
    pub(crate) counters: Arc<PoolCounters>,
    pub(crate) wait_timeout: Duration,
    /// A get's first try at deadpool: no wait (a busy pool is queued for in our own bounded
    /// queue), the create timeout on a dial. Built once; the common checkout copies nothing.
    pub(crate) first_try: managed::Timeouts,
    pub(crate) check_timeout: Duration,
    pub(crate) waiters: AtomicUsize,
    pub(crate) max_waiters: AtomicUsize,
    /// The cap as last set, readable without deadpool's lock.
    pub(crate) max_size: AtomicUsize,
    /// 0 means "follow max_size".
    pub(crate) default_limit: AtomicUsize,
    pub(crate) min_idle: usize,
    pub(crate) warm_up_concurrency: usize,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) port_warning: Option<f64>,
    /// The leak registry, for the reaper; the connections enter it themselves.
    pub(crate) checkouts: Arc<Checkouts>,
    pub(crate) reporter: Reporter<PoolEvent>,
    pub(crate) bulkheads: Bulkheads,
    /// Serializes `resize` calls, so deadpool's cap and the socket cap move together.
    pub(crate) resizing: Mutex<()>,
}

impl<C: Connector> PoolInner<C> {
    pub(crate) fn target(&self) -> &Target {
        &self.supply.target
    }

    pub(crate) fn default_limit(&self) -> usize {
        match self.default_limit.load(Ordering::Relaxed) {
            0 => self.max_size.load(Ordering::Relaxed),
            n => n,
        }
    }

    /// Closes idle connections while the pool holds more than its cap (after a shrink): the
    /// stashed ones first, then deadpool's. deadpool's own resize trims only the idle
    /// connections it can take a permit for, so one given back as it shrank can stay; `resize`
    /// and every reaper tick call this, so none stays longer than a tick.
    pub(crate) fn shed(&self) {
        self.supply.trim();
        let max = self.max_size.load(Ordering::Relaxed);
        let mut over = self.pool.status().size.saturating_sub(max);
        if over > 0 {
            drop(self.pool.retain(|_, _| {
                let keep = over == 0;
                over = over.saturating_sub(1);
                keep
            }));
        }
    }

    /// Logs the first event of its kind in a window, with the pool's occupancy; counts the rest
    /// for the reaper's summary.
    pub(crate) fn report(&self, event: PoolEvent, error: &dyn std::fmt::Display) {
        self.reporter.report(event, |suppressed| {
            let s = self.pool.status();
            tracing::warn!(
                pool = %self.name,
                target = %self.target(),
                error = %error,
                size = s.size,
                max_size = s.max_size,
                waiting = self.waiters.load(Ordering::Relaxed),
                suppressed_in_last_window = suppressed,
                "multiloop pool: {}",
                event.describe()
            );
        });
    }
}
