//! [`Slot`]: one open connection and what the pool knows about it. A slot holds its socket's
//! permit of the cap and counts its own close, so no path (resize, close, cancellation, a
//! dropped pool) can close a connection uncounted or leave one open uncounted.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::gate::GatePermit;
use super::leak::Entry;
use crate::telemetry::counters::{CloseReason, PoolCounters};
use tokio::sync::Notify;

/// A pooled connection and what the pool knows about it.
///
/// One pointer wide on purpose: the store moves it by value (inside its own object) on every
/// checkout and return, so everything lives behind one box, allocated once when the
/// connection is made.
pub(crate) struct Slot<T>(Box<Held<T>>);

/// What a [`Slot`] holds.
pub(crate) struct Held<T> {
    pub(crate) conn: T,
    /// When it last changed hands: made, checked out or given back. In the pool, the start of
    /// its idle time; on loan, when it was taken (the leak registry and the use-time metric
    /// read it, so a checkout reads the clock once).
    pub(crate) touched: Instant,
    /// Whether it has not been lent yet: just made, with the connector's handshake behind it,
    /// it is lent without a peek or a check.
    pub(crate) new: bool,
    /// When it must close: creation plus the jittered maximum lifetime.
    expires: Option<Instant>,
    /// Why it is being closed, read when it drops. Atomic, not a `Cell`, so that connections
    /// stay `Sync`.
    close_reason: AtomicU8,
    counters: Arc<PoolCounters>,
    /// Its place under the cap on sockets, released when the connection closes.
    _socket: GatePermit,
    /// Its record in the leak registry, when the pool keeps one.
    pub(crate) loan: Option<Entry>,
    /// Shared with a task on the runtime whose I/O driver the connection is registered with.
    /// The task waits for the connection to close (notified when it drops) and ends with the
    /// runtime: alone in holding this, the connection's I/O can only fail ("a Tokio 1.x
    /// context was found, but it is being shutdown").
    sentinel: Arc<Notify>,
}

impl<T> Deref for Slot<T> {
    type Target = Held<T>;

    fn deref(&self) -> &Held<T> {
        &self.0
    }
}

impl<T> DerefMut for Slot<T> {
    fn deref_mut(&mut self) -> &mut Held<T> {
        &mut self.0
    }
}

impl<T> Slot<T> {
    pub(crate) fn new(
        conn: T,
        lifetimes: &Lifetimes,
        counters: Arc<PoolCounters>,
        socket: GatePermit,
        loan: Option<Entry>,
        sentinel: Arc<Notify>,
    ) -> Slot<T> {
        let now = Instant::now();
        Slot(Box::new(Held {
            conn,
            touched: now,
            new: true,
            expires: lifetimes.expiry(now),
            close_reason: AtomicU8::new(CloseReason::Other as u8),
            counters,
            _socket: socket,
            loan,
            sentinel,
        }))
    }

    pub(crate) fn set_close_reason(&self, reason: CloseReason) {
        self.0.close_reason.store(reason as u8, Ordering::Relaxed);
    }

    /// Whether the runtime it was made on has shut down: its I/O would fail, so it must close
    /// instead of being handed out. If so, marks it to be counted as broken when it drops.
    pub(crate) fn orphaned(&self) -> bool {
        let gone = Arc::strong_count(&self.0.sentinel) == 1;
        if gone {
            self.set_close_reason(CloseReason::Broken);
        }
        gone
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.0.expires.is_some_and(|at| now >= at)
    }

    /// Whether it should close now: past its lifetime, or idle past the timeout.
    pub(crate) fn stale(&self, lifetimes: &Lifetimes, now: Instant) -> Option<CloseReason> {
        if self.expired(now) {
            return Some(CloseReason::Lifetime);
        }
        let timeout = lifetimes.idle_timeout?;
        self.idle_for(timeout, now).then_some(CloseReason::Idle)
    }

    /// Whether it has been idle for `d` or longer at `now`. A comparison of instants, not a
    /// subtraction into a `Duration`: every checkout asks, and this is the cheaper question.
    pub(crate) fn idle_for(&self, d: Duration, now: Instant) -> bool {
        // `now - d` before the clock's origin: nothing has been idle that long.
        now.checked_sub(d).is_some_and(|cut| self.touched <= cut)
    }
}

impl<T> Drop for Slot<T> {
    // A connection closes rarely; out of line, its drop keeps the store's checkout and return
    // paths, where the compiler would otherwise inline it, short.
    #[cold]
    #[inline(never)]
    fn drop(&mut self) {
        self.0.sentinel.notify_one();
        let reason = CloseReason::from_u8(self.0.close_reason.load(Ordering::Relaxed));
        self.0.counters.closed(reason);
    }
}

/// Lifetimes, read at checkout and by the reaper.
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
