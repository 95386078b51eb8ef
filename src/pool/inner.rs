//! [`PoolInner`]: the one home of a pool's state, shared by its handles, its connections and
//! its tasks; and the few operations that move a connection into, out of, or past the store.
//!
//! **The store.** Every connection the pool holds, idle or lent (or being recovered after a
//! cancelled request), belongs to one `deadpool::unmanaged::Pool`: idle ones in its queue, lent
//! ones as its `Object`s. A dial task adds its connection to the store whether or not the get
//! that started it still waits; a `Conn` dropped returns its object there; and a get that waits
//! takes whichever connection reaches the store first, returned or newly dialed (go-redis's
//! handoff). A connection leaves the store only to close.
//!
//! **The cap.** Every socket, in the store or still being dialed, holds one permit of
//! [`PoolInner::sockets`], released when it closes. The cap is that gate's limit, kept nowhere
//! else. A shrink leaves permits out past the limit (the gate's `over`); until they are paid,
//! nothing is added to the store and nothing returns to it: connections close instead.
//!
//! **Closing** is a shrink to zero that cannot be undone: every socket is then over the cap, so
//! idle connections close at once and every other one as it comes back or lands. The store
//! itself is never closed: deadpool's `close` empties its queue even of a connection already
//! promised to a waiting get, which then finds none; here the waiting gets learn of the close
//! from the socket gate, closed too, and close what they are handed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool::unmanaged;

use super::bulkhead::Bulkheads;
use super::event::PoolEvent;
use super::gate::Gate;
use super::health::Health;
use super::leak::Checkouts;
use super::slot::{Lifetimes, Slot};
use crate::connector::Connector;
use crate::dial::{Dialer, Target};
use crate::telemetry::counters::PoolCounters;
use crate::telemetry::report::{ReportKind, Reporter};

/// A connection the pool holds: lent as the store's object, idle in its queue.
pub(crate) type Object<C> = unmanaged::Object<Slot<<C as Connector>::Conn>>;

#[cfg(all(test, multiloop_loom))]
mod model;

/// Takes a connection out of the store for good: it closes, counted by its slot (its close
/// reason set before).
pub(crate) fn close<T>(obj: unmanaged::Object<Slot<T>>) {
    drop(unmanaged::Object::take(obj));
}

/// Bits of [`PoolInner::upkeep`]: the reaper runs.
pub(crate) const REAPER_RUNNING: u8 = 1;
/// Bits of [`PoolInner::upkeep`]: a runtime that connections were made on has shut down.
pub(crate) const RUNTIME_GONE: u8 = 2;
/// Bits of [`PoolInner::upkeep`]: the pool is paused.
pub(crate) const PAUSED: u8 = 4;
/// Bits of [`PoolInner::upkeep`]: the pool is closed, for good.
pub(crate) const CLOSED: u8 = 8;

pub(crate) struct PoolInner<C: Connector> {
    /// `PoolConfig::name`, or the target as written.
    pub(crate) name: Arc<str>,
    pub(crate) target: Target,
    pub(crate) dialer: Dialer,
    pub(crate) connector: C,
    /// Every connection the pool holds but those being dialed.
    pub(crate) store: unmanaged::Pool<Slot<C::Conn>>,
    /// The cap on sockets, and so the pool's `max_size`.
    pub(crate) sockets: Arc<Gate>,
    /// The bound on dials in progress.
    pub(crate) dials: Arc<Gate>,
    /// Dial tasks running now.
    pub(crate) dialing: AtomicUsize,
    /// Held for reading by a dial adding its connection to the store, for writing by a change
    /// of the cap: nothing lands past a cap it did not see.
    pub(crate) adding: RwLock<()>,
    /// Held while the reaper has idle connections out of the store to look at them, and by a
    /// get that found the store empty before it dials: what looks empty for that moment is not.
    pub(crate) sweeping: Mutex<()>,
    /// Held by a warm-up while it fills the pool to `min_idle`: a second one (the reaper's
    /// beside a caller's) counts after the first, instead of dialing past `min_idle`.
    pub(crate) filling: tokio::sync::Mutex<()>,
    /// The pool's state as every `get` reads it, in one load: `REAPER_RUNNING` alone is the
    /// steady state. Otherwise the get sees to it first: `REAPER_RUNNING` clear (start the
    /// reaper), `RUNTIME_GONE` (close the connections whose runtime has shut down), `PAUSED`
    /// (fail). The reaper's start, the sentinels, `pause` and `resume` write it.
    pub(crate) upkeep: AtomicU8,
    pub(crate) health: Arc<Health>,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) wait_timeout: Duration,
    pub(crate) create_timeout: Duration,
    pub(crate) check_timeout: Duration,
    /// Below this idle time, only the connector's peek runs at checkout.
    pub(crate) check_after_idle: Duration,
    /// Whether `check_after_idle` is at most the idle timeout (or there is none), so that a
    /// connection idle for less than the one is not past the other.
    pub(crate) fresh_is_not_idle: bool,
    /// Gets waiting for a busy pool now, at most `max_waiters`.
    pub(crate) waiters: AtomicUsize,
    pub(crate) max_waiters: AtomicUsize,
    /// 0 means "follow max_size".
    pub(crate) default_limit: AtomicUsize,
    pub(crate) min_idle: usize,
    pub(crate) warm_up_concurrency: usize,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) port_warning: Option<f64>,
    /// The leak registry, when the pool keeps one; each new connection enters it.
    pub(crate) checkouts: Option<Arc<Checkouts>>,
    /// For a host-name target, the address the last dial reached: what the port census
    /// counts towards.
    pub(crate) resolved: Mutex<Option<SocketAddr>>,
    pub(crate) counters: Arc<PoolCounters>,
    pub(crate) reporter: Reporter<PoolEvent>,
    pub(crate) bulkheads: Bulkheads,
    #[cfg(feature = "metrics")]
    pub(crate) export: Arc<crate::telemetry::export::Export>,
}

impl<C: Connector> PoolInner<C> {
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The cap on sockets.
    pub(crate) fn max_size(&self) -> usize {
        self.sockets.limit()
    }

    pub(crate) fn default_limit(&self) -> usize {
        match self.default_limit.load(Ordering::Relaxed) {
            0 => self.max_size(),
            n => n,
        }
    }

    /// Whether the pool is paused.
    pub(crate) fn paused(&self) -> bool {
        self.upkeep.load(Ordering::Acquire) & PAUSED != 0
    }

    /// Whether the pool is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.upkeep.load(Ordering::Acquire) & CLOSED != 0
    }

    /// A new connection into the store, where the first waiting get takes it; closed instead
    /// when the pool holds more sockets than its cap (after a shrink, or closed).
    ///
    /// Under the read side of `adding`, which a shrink holds for writing while it changes the
    /// cap and sheds: a connection is either added before, and shed, or sees the new cap.
    pub(crate) fn add(&self, slot: Slot<C::Conn>) {
        let _adding = self
            .adding
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.sockets.over() > 0 {
            drop(slot);
            return;
        }
        // The store's own bound is the largest cap, so it has room; were it refused, the
        // connection would close here, counted by its slot.
        drop(self.store.try_add(slot));
    }

    /// A lent connection back into the store, or closed while the pool holds more sockets
    /// than its cap (after a shrink, or closed). The one place a connection returns.
    #[inline]
    pub(crate) fn give_back(&self, obj: Object<C>) {
        if self.sockets.over() == 0 {
            drop(obj);
            // A shrink (or a close) between the look and the return may have shed before this
            // one was back. Either it sees this connection in the store, or this sees its debt:
            // the fence here and the one in `shed` forbid both missing the other.
            fence(Ordering::SeqCst);
            if self.sockets.over() > 0 {
                self.shed();
            }
        } else {
            close(obj);
        }
    }

    /// Changes the cap, then closes idle connections past it; the others close as they come
    /// back or land. Serialized with `add` (see there). A closed pool's cap stays 0: a resize
    /// that found the pool open and reaches the lock after `close` changes nothing.
    pub(crate) fn set_cap(&self, max_size: usize) {
        let _adding = self
            .adding
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // `close` sets the flag before it takes the lock.
        if max_size != 0 && self.is_closed() {
            return;
        }
        self.sockets.set(max_size);
        self.shed();
    }

    /// Closes idle connections while the pool holds more sockets than its cap (after a
    /// shrink). A shrink calls it, a return that raced with one, and every reaper tick.
    pub(crate) fn shed(&self) {
        fence(Ordering::SeqCst);
        for _ in 0..self.sockets.over() {
            match self.store.try_remove() {
                // Its permit pays one of the debt as it closes.
                Ok(slot) => drop(slot),
                Err(_) => break,
            }
        }
    }

    /// Takes every idle connection out of the store, closes those `close` picks, and puts the
    /// others back in the order they were, while a get that finds the store empty waits for
    /// it to finish instead of dialing.
    pub(crate) fn sweep(&self, mut close: impl FnMut(&Slot<C::Conn>) -> bool) {
        let _sweeping = self
            .sweeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = self.store.status().available;
        let mut kept = Vec::with_capacity(idle);
        for _ in 0..idle {
            match self.store.try_remove() {
                Ok(slot) if close(&slot) => drop(slot),
                Ok(slot) => kept.push(slot),
                Err(_) => break,
            }
        }
        // Taken most recent first: put back oldest first, so the most recent is on top again.
        for slot in kept.into_iter().rev() {
            self.add(slot);
        }
    }

    /// Closes the pool: a shrink to zero, for good. Gets fail from now on, waiting ones too
    /// (the closed gates wake them, a bulkhead's included); idle connections close now, lent ones as they come back,
    /// dials as they finish; no dial starts after.
    pub(crate) fn close(&self) {
        self.upkeep.fetch_or(CLOSED, Ordering::AcqRel);
        self.set_cap(0);
        self.sockets.close();
        self.dials.close();
        self.bulkheads.close();
    }

    /// Logs the first event of its kind in a window, with the pool's occupancy; counts the rest
    /// for the reaper's summary.
    pub(crate) fn report(&self, event: PoolEvent, error: &dyn std::fmt::Display) {
        self.reporter.report(event, |suppressed| {
            let s = self.store.status();
            tracing::warn!(
                pool = %self.name,
                target = %self.target(),
                error = %error,
                size = s.size,
                max_size = self.max_size(),
                waiting = self.waiters.load(Ordering::Relaxed),
                suppressed_in_last_window = suppressed,
                "multiloop pool: {}",
                event.describe()
            );
        });
    }
}
