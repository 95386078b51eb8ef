//! [`Slot`]: one open connection and what the pool knows about it. A slot holds its socket's
//! permit of the cap and counts its own close, so no path (resize, close, cancellation, a
//! dropped pool) can close a connection uncounted or leave one open uncounted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::gate::GatePermit;
use crate::telemetry::counters::{CloseReason, PoolCounters};

/// A pooled connection and what the pool knows about it.
///
/// Small on purpose: deadpool moves it by value on every checkout and return, so what is read
/// only when it is created, checked or closed lives behind one box.
pub(crate) struct Slot<T> {
    pub(crate) conn: T,
    /// When it was last returned to the pool (or created).
    pub(crate) idle_since: Instant,
    cold: Box<Cold>,
}

/// What a slot needs only when it is created, checked or closed.
struct Cold {
    /// When it must close: creation plus the jittered maximum lifetime.
    expires: Option<Instant>,
    /// Why it is being closed, read when it drops. Atomic, not a `Cell`, so that connections
    /// stay `Sync`.
    close_reason: AtomicU8,
    counters: Arc<PoolCounters>,
    /// Its place under the cap on sockets, released when the connection closes.
    _socket: GatePermit,
}

impl<T> Slot<T> {
    pub(crate) fn new(
        conn: T,
        lifetimes: &Lifetimes,
        counters: Arc<PoolCounters>,
        socket: GatePermit,
    ) -> Slot<T> {
        let now = Instant::now();
        Slot {
            conn,
            idle_since: now,
            cold: Box::new(Cold {
                expires: lifetimes.expiry(now),
                close_reason: AtomicU8::new(CloseReason::Other as u8),
                counters,
                _socket: socket,
            }),
        }
    }

    pub(crate) fn set_close_reason(&self, reason: CloseReason) {
        self.cold
            .close_reason
            .store(reason as u8, Ordering::Relaxed);
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.cold.expires.is_some_and(|at| now >= at)
    }

    /// Whether the reaper should close it now: past its lifetime, or idle past the timeout.
    pub(crate) fn stale(&self, lifetimes: &Lifetimes, now: Instant) -> Option<CloseReason> {
        self.stale_after(
            lifetimes,
            now,
            now.saturating_duration_since(self.idle_since),
        )
    }

    /// [`stale`](Slot::stale), given how long it has been idle.
    pub(crate) fn stale_after(
        &self,
        lifetimes: &Lifetimes,
        now: Instant,
        idle: Duration,
    ) -> Option<CloseReason> {
        if self.expired(now) {
            return Some(CloseReason::Lifetime);
        }
        let timeout = lifetimes.idle_timeout?;
        (idle >= timeout).then_some(CloseReason::Idle)
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        let reason = CloseReason::from_u8(self.cold.close_reason.load(Ordering::Relaxed));
        self.cold.counters.closed(reason);
    }
}

/// Lifetimes, shared by the manager, the supply and the reaper.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub(crate) max_lifetime: Option<Duration>,
    /// The fraction of `max_lifetime` taken off at random, so that connections created together
    /// do not all expire together.
    pub(crate) jitter: f64,
    pub(crate) idle_timeout: Option<Duration>,
}

impl Lifetimes {
    fn expiry(&self, now: Instant) -> Option<Instant> {
        let max = self.max_lifetime?;
        let cut = if self.jitter > 0.0 {
            rand::random_range(0.0..self.jitter)
        } else {
            0.0
        };
        // Validated at most 24 h, so this cannot overflow.
        now.checked_add(max.mul_f64(1.0 - cut))
    }
}
