//! [`Gate`]: a semaphore whose size changes at runtime, the one primitive behind the socket cap
//! and every bulkhead. Lowering it retires permits as they come back. [`Counted`]: the one
//! guard that undoes a count when dropped (a wait queue's place, a dial in progress).

use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// A resizable semaphore.
pub(crate) struct Gate {
    semaphore: Semaphore,
    limit: AtomicUsize,
    /// Permits to retire as they come back, after the limit was lowered while they were out.
    debt: AtomicUsize,
    resize: Mutex<()>,
}

/// A permit of a [`Gate`], released on drop (or retired, if the gate shrank meanwhile).
///
/// One pointer wide: the semaphore's permit is forgotten when taken and added back on drop, so
/// a connection carrying a bulkhead's permit stays small.
pub(crate) struct GatePermit {
    gate: Arc<Gate>,
}

impl Gate {
    /// A gate of `limit` permits; `limit` is validated by the caller (at most
    /// `Semaphore::MAX_PERMITS`).
    pub(crate) fn new(limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            semaphore: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            debt: AtomicUsize::new(0),
            resize: Mutex::new(()),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Permits still out beyond the limit: what the holders must give back before the gate
    /// is within its limit again.
    pub(crate) fn over(&self) -> usize {
        self.debt.load(Ordering::Relaxed)
    }

    /// A permit now, if one is free.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<GatePermit> {
        self.semaphore.try_acquire().ok()?.forget();
        Some(GatePermit { gate: self.clone() })
    }

    /// A permit, once one is free; `None` once the gate is closed.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<GatePermit> {
        // Forgotten in the same poll that granted it: no await between, so a cancelled
        // acquire cannot lose the permit.
        self.semaphore.acquire().await.ok()?.forget();
        Some(GatePermit { gate: self.clone() })
    }

    /// Wakes every waiter with `None`; no permit is granted after.
    pub(crate) fn close(&self) {
        self.semaphore.close();
    }

    /// Changes the number of permits. Lowering takes effect at once for free permits and as
    /// the others come back.
    pub(crate) fn set(&self, new: usize) {
        let _serialized = self
            .resize
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.limit.swap(new, Ordering::Relaxed);
        if new > old {
            let mut add = new - old;
            // Cancel debt first: those permits are still out, and now simply stay.
            let paid = self
                .debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d - d.min(add))
                })
                .map_or(0, |d| d.min(add));
            add -= paid;
            self.semaphore.add_permits(add);
        } else {
            // Owed first, then paid from free permits.
            self.debt.fetch_add(old - new, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            self.settle();
        }
    }

    /// Pays the debt from free permits, as far as there are any. A permit that comes back
    /// while the gate owes retires itself; one that came back just before the debt was
    /// written went back free, and is paid from here: `set` settles after writing the debt,
    /// the permit's drop after giving it back, with a fence between on both sides, so at
    /// least one of them sees the other.
    fn settle(&self) {
        while self.over() > 0 {
            let Ok(free) = self.semaphore.try_acquire() else {
                return;
            };
            free.forget();
            let paid = self
                .debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                .is_ok();
            if !paid {
                // Paid meanwhile by returns: this one stays free.
                self.semaphore.add_permits(1);
                return;
            }
        }
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        let retired = self
            .gate
            .debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .is_ok();
        if !retired {
            self.gate.semaphore.add_permits(1);
            // A shrink that wrote its debt after the look above may have missed this permit.
            fence(Ordering::SeqCst);
            if self.gate.over() > 0 {
                self.gate.settle();
            }
        }
    }
}

/// One in a counter while the guard lives: dropped on any path (a cancelled future
/// included), it leaves.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one in, unconditionally.
    pub(crate) fn enter(n: &'a AtomicUsize) -> Counted<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }

    /// Counts one in if fewer than `max` are in; `None` (and no change) otherwise.
    pub(crate) fn join(n: &'a AtomicUsize, max: usize) -> Option<Counted<'a>> {
        let before = n.fetch_add(1, Ordering::Relaxed);
        let guard = Counted(n);
        // Dropped, the guard leaves again.
        (before < max).then_some(guard)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_place_is_left_on_drop_and_refused_past_the_bound() {
        let n = AtomicUsize::new(0);
        let a = Counted::join(&n, 2).unwrap();
        let b = Counted::join(&n, 2).unwrap();
        assert!(Counted::join(&n, 2).is_none(), "two of two");
        assert_eq!(
            n.load(Ordering::Relaxed),
            2,
            "a refused join leaves no trace"
        );
        drop(a);
        let c = Counted::enter(&n);
        assert_eq!(n.load(Ordering::Relaxed), 2);
        drop((b, c));
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    /// A permit coming back on another thread while the limit drops: whatever the order, one
    /// permit out of a limit of one leaves none to take.
    #[test]
    fn a_shrink_racing_with_a_return_leaves_no_permit_past_the_new_limit() {
        let gate = Gate::new(2);
        let (send, recv) = std::sync::mpsc::channel::<GatePermit>();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let returner = {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for permit in recv {
                    barrier.wait();
                    drop(permit);
                    barrier.wait();
                }
            })
        };
        for round in 0..20_000 {
            let back = gate.try_acquire().unwrap();
            let kept = gate.try_acquire().unwrap();
            send.send(back).unwrap();
            barrier.wait();
            gate.set(1);
            barrier.wait();
            assert!(
                gate.try_acquire().is_none(),
                "round {round}: a second permit under a limit of 1 (debt {})",
                gate.over()
            );
            drop(kept);
            gate.set(2);
        }
        drop(send);
        returner.join().unwrap();
    }

    #[test]
    fn shrinking_retires_permits_as_they_come_back() {
        let gate = Gate::new(3);
        let held: Vec<_> = (0..3).map(|_| gate.try_acquire().unwrap()).collect();
        gate.set(1);
        drop(held);
        let one = gate.try_acquire();
        assert!(one.is_some());
        assert!(gate.try_acquire().is_none(), "the limit is 1");
        gate.set(2);
        assert!(gate.try_acquire().is_some());
    }
}
