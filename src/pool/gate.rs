//! [`Gate`]: a semaphore whose size changes at runtime, the one primitive behind the socket cap
//! and every bulkhead. Lowering it retires permits as they come back. [`Counted`]: the one
//! guard that undoes a count when dropped (a wait queue's place, a dial in progress).
//!
//! The gate is a small semaphore of its own rather than tokio's `Semaphore` with a debt beside
//! it, so that its whole state can be model-checked: free permits live in one atomic word
//! (taken without a lock by [`Gate::try_acquire`]), and everything else (the limit, the debt
//! of a shrink, the FIFO of waiters) changes only under one mutex. A permit comes back under
//! that mutex and goes, in this order, to the debt, to the first waiter, or to the free count;
//! so free permits and waiters never coexist, and after a shrink no permit is granted until
//! the permits out are within the new limit.
//!
//! **Model-checked.** `gate/model.rs` runs the gate under [loom](https://docs.rs/loom), which
//! explores the interleavings of its threads (up to 3 preemptions each, `LOOM_MAX_PREEMPTIONS` to
//! change it): acquires polled once and dropped (cancelled, granted or not), permits coming back,
//! `try_acquire`, `set` shrinking and growing, and `close`. In every interleaving it checks under
//! the gate's lock, at each grant and after each resize, that free permits plus permits held never
//! exceed the limit plus the debt (so after a shrink to `n` with `k` out, at most `max(n, k)` are
//! out, falling as they come back), that no free permit exists while a debt is unpaid or a waiter
//! waits, that a returned permit is retired, not granted, while the gate is over its limit, that a
//! closed gate grants nothing (a waiter granted a permit just before the close included); and, once
//! every permit is back, that the free count equals the limit, the debt is zero and no waiter's
//! slot is left (no permit leaked). The `sync` shim below is loom's under `--cfg multiloop_loom`,
//! std's otherwise. The cfg changes every crate's flags, so it builds in a target directory of its
//! own; `.ci/run` runs it as:
//!
//! ```text
//! RUSTFLAGS="--cfg multiloop_loom" cargo test --lib --target-dir target/loom gate::model
//! ```
//!
//! Under that cfg only these tests can run: the rest of the crate's unit tests would meet
//! loom's primitives outside a model.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use self::sync::{AtomicUsize, Mutex, MutexGuard};

#[cfg(all(test, multiloop_loom))]
mod model;

/// The primitives loom checks: loom's under `--cfg multiloop_loom`, std's otherwise.
mod sync {
    #[cfg(multiloop_loom)]
    pub(super) use loom::sync::{Mutex, MutexGuard, atomic::AtomicUsize};
    #[cfg(not(multiloop_loom))]
    pub(super) use std::sync::{Mutex, MutexGuard, atomic::AtomicUsize};
}

/// In [`Gate::free`]: set once the gate is closed.
const CLOSED: usize = 1;
/// In [`Gate::free`]: one free permit (the low bit is [`CLOSED`]).
const ONE: usize = 2;

/// A resizable semaphore.
pub(crate) struct Gate {
    /// Free permits times [`ONE`], plus [`CLOSED`]. Taken without the lock; added only under
    /// it, and only while no one waits.
    free: AtomicUsize,
    /// Written under the lock; read without it by [`Gate::limit`].
    limit: AtomicUsize,
    /// Permits to retire as they come back, after the limit was lowered while they were out.
    /// Written under the lock; read without it by [`Gate::over`].
    debt: AtomicUsize,
    waiters: Mutex<Waiters>,
}

/// A permit of a [`Gate`], released on drop (or retired, if the gate shrank meanwhile).
///
/// One pointer wide, so a connection carrying a bulkhead's permit stays small.
pub(crate) struct GatePermit {
    gate: Arc<Gate>,
}

impl Gate {
    /// A gate of `limit` permits; `limit` is validated by the caller (the pool's and the
    /// bulkheads' bounds are far below `usize::MAX / 4`).
    pub(crate) fn new(limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            free: AtomicUsize::new(limit.saturating_mul(ONE)),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Permits still out beyond the limit: what the holders must give back before the gate
    /// is within its limit again.
    pub(crate) fn over(&self) -> usize {
        self.debt.load(Relaxed)
    }

    /// A permit now, if one is free.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<GatePermit> {
        self.take_free(1).then(|| GatePermit { gate: self.clone() })
    }

    /// A permit, once one is free; `None` once the gate is closed. Waiters are served in
    /// order. Dropped after a permit was granted to it, the future passes the permit on.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<GatePermit> {
        let granted = Acquiring {
            gate: self,
            key: None,
        }
        .await;
        // No await between the grant and the permit: a cancelled acquire cannot lose it.
        granted.then(|| GatePermit { gate: self.clone() })
    }

    /// Wakes every waiter with `None`; no permit is granted after. A waiter granted a permit
    /// just before, but not yet polled again, gets `None` too, and its permit goes back.
    pub(crate) fn close(&self) {
        self.free.fetch_or(CLOSED, Release);
        let mut waiters = self.lock();
        let wake = waiters.close_all();
        drop(waiters);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Changes the number of permits. Lowering takes effect at once for free permits and as
    /// the others come back.
    pub(crate) fn set(&self, new: usize) {
        let mut waiters = self.lock();
        let old = self.limit.swap(new, Relaxed);
        let debt = self.debt.load(Relaxed);
        let mut wake = Vec::new();
        if new > old {
            let mut add = new - old;
            // Cancel debt first: those permits are still out, and now simply stay.
            let paid = debt.min(add);
            self.debt.store(debt - paid, Relaxed);
            add -= paid;
            while add > 0 {
                let Some(waker) = waiters.grant_first() else {
                    break;
                };
                wake.push(waker);
                add -= 1;
            }
            self.free.fetch_add(add.saturating_mul(ONE), Release);
        } else {
            let take = old - new;
            let took = self.take_free_up_to(take);
            self.debt.store(debt + (take - took), Relaxed);
        }
        drop(waiters);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Takes `n` free permits, all or none.
    fn take_free(&self, n: usize) -> bool {
        self.free
            .fetch_update(Acquire, Relaxed, |free| {
                (free & CLOSED == 0 && free >= n * ONE).then(|| free - n * ONE)
            })
            .is_ok()
    }

    /// Takes up to `n` free permits (closed or not); how many it took.
    fn take_free_up_to(&self, n: usize) -> usize {
        let mut took = 0;
        let _ = self.free.fetch_update(AcqRel, Relaxed, |free| {
            took = (free / ONE).min(n);
            Some(free - took * ONE)
        });
        took
    }

    /// A permit comes back (a [`GatePermit`] dropped, or an acquire dropped after its grant).
    fn release(&self) {
        let mut waiters = self.lock();
        let wake = self.give_locked(&mut waiters);
        drop(waiters);
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// Where a permit coming back goes: the debt, the first waiter, or the free count.
    fn give_locked(&self, waiters: &mut Waiters) -> Option<Waker> {
        let debt = self.debt.load(Relaxed);
        if debt > 0 {
            self.debt.store(debt - 1, Relaxed);
            return None;
        }
        let wake = waiters.grant_first();
        if wake.is_none() {
            self.free.fetch_add(ONE, Release);
        }
        wake
    }

    fn is_closed(&self) -> bool {
        self.free.load(Acquire) & CLOSED != 0
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter's place in [`Waiters`].
enum Waiter {
    /// In the queue, between `prev` and `next`.
    Queued {
        waker: Waker,
        prev: Option<usize>,
        next: Option<usize>,
    },
    /// Out of the queue, holding a permit for its future to take (or pass on).
    Granted,
    /// Out of the queue: the gate closed.
    Closed,
}

/// The FIFO of waiters: a doubly linked list in a slab, so a cancelled waiter leaves in O(1).
/// An entry is removed only by its own future, so its key is never reused under it.
#[derive(Default)]
struct Waiters {
    slots: Slab<Waiter>,
    head: Option<usize>,
    tail: Option<usize>,
}

impl Waiters {
    fn push_back(&mut self, waker: Waker) -> usize {
        let key = self.slots.insert(Waiter::Queued {
            waker,
            prev: self.tail,
            next: None,
        });
        match self.tail.and_then(|t| self.slots.get_mut(t)) {
            Some(Waiter::Queued { next, .. }) => *next = Some(key),
            _ => self.head = Some(key),
        }
        self.tail = Some(key);
        key
    }

    /// Takes `key` out of the queue, marking it `to`; its waker if it was queued.
    fn unlink(&mut self, key: usize, to: Waiter) -> Option<Waker> {
        let slot = self.slots.get_mut(key)?;
        if !matches!(slot, Waiter::Queued { .. }) {
            return None;
        }
        let Waiter::Queued { waker, prev, next } = std::mem::replace(slot, to) else {
            return None;
        };
        match prev.and_then(|p| self.slots.get_mut(p)) {
            Some(Waiter::Queued { next: n, .. }) => *n = next,
            _ => self.head = next,
        }
        match next.and_then(|n| self.slots.get_mut(n)) {
            Some(Waiter::Queued { prev: p, .. }) => *p = prev,
            _ => self.tail = prev,
        }
        Some(waker)
    }

    /// Grants a permit to the first waiter; its waker, or `None` if no one waits.
    fn grant_first(&mut self) -> Option<Waker> {
        let head = self.head?;
        self.unlink(head, Waiter::Granted)
    }

    fn close_all(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        while let Some(head) = self.head {
            wake.extend(self.unlink(head, Waiter::Closed));
        }
        wake
    }
}

/// The future of [`Gate::acquire`]: `true` once granted a permit, `false` once closed.
struct Acquiring<'a> {
    gate: &'a Gate,
    /// Its place in the waiters, once queued.
    key: Option<usize>,
}

impl Future for Acquiring<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let gate = self.gate;
        let mut waiters = gate.lock();
        let Some(key) = self.key else {
            if gate.is_closed() {
                return Poll::Ready(false);
            }
            // Free permits exist only while no one waits: taking one is not overtaking.
            if gate.take_free(1) {
                return Poll::Ready(true);
            }
            self.key = Some(waiters.push_back(cx.waker().clone()));
            return Poll::Pending;
        };
        match waiters.slots.get_mut(key) {
            Some(Waiter::Queued { waker, .. }) => {
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
                return Poll::Pending;
            }
            Some(Waiter::Granted) => {}
            Some(Waiter::Closed) | None => {
                waiters.slots.try_remove(key);
                self.key = None;
                return Poll::Ready(false);
            }
        }
        waiters.slots.remove(key);
        self.key = None;
        if !gate.is_closed() {
            return Poll::Ready(true);
        }
        // Granted, then closed: nothing is granted after a close, so the permit goes back.
        let wake = gate.give_locked(&mut waiters);
        drop(waiters);
        wake.into_iter().for_each(Waker::wake);
        Poll::Ready(false)
    }
}

impl Drop for Acquiring<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut waiters = self.gate.lock();
        // Queued: it leaves the queue. Granted: the permit goes on to the next in line.
        let granted = matches!(waiters.slots.get(key), Some(Waiter::Granted));
        waiters.unlink(key, Waiter::Closed);
        waiters.slots.try_remove(key);
        let wake = if granted {
            self.gate.give_locked(&mut waiters)
        } else {
            None
        };
        drop(waiters);
        wake.into_iter().for_each(Waker::wake);
    }
}

/// One in a counter while the guard lives: dropped on any path (a cancelled future
/// included), it leaves.
pub(crate) struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one in, unconditionally.
    pub(crate) fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Counted<'a> {
        n.fetch_add(1, Relaxed);
        Counted(n)
    }

    /// Counts one in if fewer than `max` are in; `None` (and no change) otherwise.
    pub(crate) fn join(n: &'a std::sync::atomic::AtomicUsize, max: usize) -> Option<Counted<'a>> {
        let before = n.fetch_add(1, Relaxed);
        let guard = Counted(n);
        // Dropped, the guard leaves again.
        (before < max).then_some(guard)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(all(test, not(multiloop_loom)))]
mod tests;
