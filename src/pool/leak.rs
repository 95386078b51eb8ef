//! The leak registry: where each connection on loan was taken, for the leak warning.
//!
//! Each connection keeps its own record, written by its checkout under a lock that no other
//! connection shares (the reaper takes it only when it looks); its return is one atomic store.
//! The registry lists the records and changes only when a connection opens or closes, so no
//! checkout takes a pool-wide lock.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The records of a pool's open connections.
#[derive(Default)]
pub(crate) struct Checkouts {
    loans: Mutex<slab::Slab<Arc<Loan>>>,
}

/// One connection's record: whether it is out, and who took it last and when.
#[derive(Default)]
struct Loan {
    /// Set by the checkout, under the lock; cleared by the return, without it.
    out: AtomicBool,
    last: Mutex<Option<Taken>>,
}

#[derive(Clone, Copy)]
struct Taken {
    at: Instant,
    caller: &'static Location<'static>,
    warned: bool,
}

/// A connection's place in the registry, left when the connection closes.
pub(crate) struct Entry {
    registry: Arc<Checkouts>,
    key: usize,
    loan: Arc<Loan>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkouts {
    /// Enters a new connection.
    pub(crate) fn enter(self: &Arc<Self>) -> Entry {
        let loan = Arc::new(Loan::default());
        let key = lock(&self.loans).insert(loan.clone());
        Entry {
            registry: self.clone(),
            key,
            loan,
        }
    }

    /// The loans out for `threshold` or longer at `now` and not reported yet, as where they
    /// were taken and for how long; each is reported once per loan.
    pub(crate) fn overdue(
        &self,
        now: Instant,
        threshold: Duration,
    ) -> Vec<(&'static Location<'static>, Duration)> {
        let loans = lock(&self.loans);
        let mut overdue = Vec::new();
        for (_, loan) in loans.iter() {
            let mut last = lock(&loan.last);
            // Read under the lock, so `last` is this loan's (a return in between only ends it).
            if !loan.out.load(Ordering::Acquire) {
                continue;
            }
            if let Some(taken) = last.as_mut() {
                let age = now.saturating_duration_since(taken.at);
                if !taken.warned && age >= threshold {
                    taken.warned = true;
                    overdue.push((taken.caller, age));
                }
            }
        }
        overdue
    }
}

impl Entry {
    /// The connection goes to `caller`, taken `at`.
    #[inline]
    pub(crate) fn lend(&self, caller: &'static Location<'static>, at: Instant) {
        let mut last = lock(&self.loan.last);
        *last = Some(Taken {
            at,
            caller,
            warned: false,
        });
        self.loan.out.store(true, Ordering::Release);
    }

    /// The connection is back: one store, no lock.
    #[inline]
    pub(crate) fn back(&self) {
        self.loan.out.store(false, Ordering::Release);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.registry.loans).try_remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loan_is_overdue_once_and_leaves_with_its_connection() {
        let registry = Arc::new(Checkouts::default());
        let entry = registry.enter();
        let other = registry.enter();
        let start = Instant::now();
        entry.lend(Location::caller(), start);
        let later = start + Duration::from_secs(10);
        assert_eq!(registry.overdue(later, Duration::from_secs(5)).len(), 1);
        assert!(registry.overdue(later, Duration::from_secs(5)).is_empty());
        // Back and out again: a new loan, reported again.
        entry.back();
        assert!(registry.overdue(later, Duration::ZERO).is_empty());
        entry.lend(Location::caller(), start);
        assert_eq!(registry.overdue(later, Duration::from_secs(5)).len(), 1);
        drop(entry);
        drop(other);
        assert!(lock(&registry.loans).is_empty());
    }
}
