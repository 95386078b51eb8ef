//! Source addresses set aside after they ran out of ports.
//!
//! When a dial from an address fails with `EADDRNOTAVAIL` (from `connect`) or `EADDRINUSE` (from
//! `bind`), that address has no free port towards the target until TIME_WAIT drains. The dialer
//! skips it for a while instead of failing on it again. Memory is bounded: past
//! [`CAPACITY`] entries the one closest to release is released early.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most addresses held at once: about 100 KiB at most.
pub(crate) const CAPACITY: usize = 4096;

pub(crate) struct Quarantine {
    ttl: Duration,
    /// Entries, including expired ones not yet purged. Lets the dial path skip the lock while the
    /// quarantine is empty, which is nearly always.
    held: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In order of release: every entry lives `ttl`, so insertion order is expiry order.
    order: VecDeque<(IpAddr, Instant)>,
    members: HashSet<IpAddr>,
}

impl Inner {
    fn purge(&mut self, now: Instant) {
        while let Some(&(ip, until)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.members.remove(&ip);
        }
    }
}

impl Quarantine {
    /// A quarantine holding each address for `ttl`. A zero `ttl` disables it.
    pub(crate) fn new(ttl: Duration) -> Quarantine {
        Quarantine {
            ttl,
            held: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Sets `ip` aside until `now + ttl`. An address already held keeps its release time.
    pub(crate) fn insert(&self, ip: IpAddr, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        inner.purge(now);
        if inner.members.insert(ip) {
            if inner.order.len() >= CAPACITY
                && let Some((oldest, _)) = inner.order.pop_front()
            {
                inner.members.remove(&oldest);
            }
            inner.order.push_back((ip, now + self.ttl));
        }
        self.held.store(inner.order.len(), Ordering::Relaxed);
    }

    /// Whether `ip` is held now.
    pub(crate) fn contains(&self, ip: IpAddr, now: Instant) -> bool {
        if self.held.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut inner = self.lock();
        inner.purge(now);
        self.held.store(inner.order.len(), Ordering::Relaxed);
        inner.members.contains(&ip)
    }

    /// How many addresses are held now.
    pub(crate) fn len(&self, now: Instant) -> usize {
        if self.held.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut inner = self.lock();
        inner.purge(now);
        self.held.store(inner.order.len(), Ordering::Relaxed);
        inner.order.len()
    }

    /// Up to `max` held addresses, soonest released first.
    pub(crate) fn sample(&self, max: usize, now: Instant) -> Vec<IpAddr> {
        let mut inner = self.lock();
        inner.purge(now);
        inner.order.iter().take(max).map(|&(ip, _)| ip).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lock guards plain collections that no code path leaves half-updated, so a poisoned
        // lock still holds consistent data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + i))
    }

    #[test]
    fn holds_for_ttl_then_releases() {
        let q = Quarantine::new(Duration::from_secs(60));
        let t0 = Instant::now();
        q.insert(ip(1), t0);
        assert!(q.contains(ip(1), t0 + Duration::from_secs(59)));
        assert!(!q.contains(ip(2), t0));
        assert_eq!(q.len(t0), 1);
        assert!(!q.contains(ip(1), t0 + Duration::from_secs(60)));
        assert_eq!(q.len(t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn reinsert_keeps_the_first_release_time() {
        let q = Quarantine::new(Duration::from_secs(10));
        let t0 = Instant::now();
        q.insert(ip(1), t0);
        q.insert(ip(1), t0 + Duration::from_secs(5));
        assert_eq!(q.len(t0), 1);
        assert!(!q.contains(ip(1), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn memory_is_bounded() {
        let q = Quarantine::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(CAPACITY as u32 + 100) {
            q.insert(ip(i), t0);
        }
        assert_eq!(q.len(t0), CAPACITY);
        assert!(
            !q.contains(ip(0), t0),
            "the oldest entries are released early"
        );
        assert!(q.contains(ip(CAPACITY as u32 + 99), t0));
    }

    #[test]
    fn zero_ttl_disables() {
        let q = Quarantine::new(Duration::ZERO);
        q.insert(ip(1), Instant::now());
        assert_eq!(q.len(Instant::now()), 0);
    }
}
