//! What a pool reports, rate-limited: each failure a caller sees, by why, and the port warning.

use crate::error::{DialErrorKind, PoolError, TimeoutKind};
use crate::telemetry::report::ReportKind;

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
