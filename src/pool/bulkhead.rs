//! [`Bulkhead`]: one call site's concurrency limit, and all that makes it.
//!
//! A pool hands out one bulkhead per name ([`Pool::bulkhead`]); its `get` is the first stage
//! of a get, the pool's own wait the second, under the same deadline (`admission`). The
//! machinery lives here too: `Limit`, a name's [`Gate`] with its counters; [`LimitPermit`],
//! the place a get holds until its [`Conn`] drops; `Bulkheads`, the pool's bounded registry of
//! names; `Refused`, why a permit was not granted.

use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::admission;
use super::config::check_limit;
use super::conn::Conn;
use super::gate::{Counted, Gate, GatePermit};
use super::handle::Pool;
use crate::connector::{Connector, Raw};
use crate::error::{ConfigError, PoolError, TimeoutKind};

/// The bounds of bulkheads. They hold for every connector; they sit on `Bulkhead<Raw>`, as
/// [`Pool::builder`](crate::Pool::builder) sits on `Pool<Raw>`, so that `Bulkhead::MAX_LIMIT`
/// names them without a type parameter.
impl Bulkhead<Raw> {
    /// The most named bulkheads a pool keeps: 256. Names past it share one bulkhead named
    /// [`OVERFLOW_NAME`](Self::OVERFLOW_NAME), so a name built from request data cannot grow
    /// memory without bound.
    pub const MAX_PER_POOL: usize = 256;

    /// The name of the bulkhead shared by names past [`MAX_PER_POOL`](Self::MAX_PER_POOL).
    pub const OVERFLOW_NAME: &'static str = "(overflow)";

    /// The largest limit, [`set_limit`](Self::set_limit)'s and
    /// [`PoolConfig::default_limit`](crate::PoolConfig::default_limit)'s bound: 1,048,576.
    pub const MAX_LIMIT: usize = 1 << 20;
}

/// [`Bulkhead::MAX_PER_POOL`], for the pool's own files.
pub(super) const MAX_BULKHEADS: usize = Bulkhead::MAX_PER_POOL;

impl<C: Connector> Pool<C> {
    /// The named bulkhead for one call site, created on first use with the pool's
    /// [`default_limit`](Pool::default_limit). Names past [`Bulkhead::MAX_PER_POOL`] share
    /// [`Bulkhead::OVERFLOW_NAME`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = multiloop::Pool::builder("127.0.0.1:11211").build()?;
    /// pool.bulkhead("GetPostRecord").set_limit(8)?;
    /// let conn = pool.bulkhead("GetPostRecord").get().await?; // at most 8 at once
    /// # drop(conn);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bulkhead(&self, name: &str) -> Bulkhead<C> {
        let (limit, overflowed) = self.inner.bulkheads.get(name, self.default_limit());
        if overflowed {
            tracing::warn!(
                name,
                max = MAX_BULKHEADS,
                "multiloop pool: too many bulkhead names; new names share the {:?} bulkhead. \
                 Name call sites, not requests.",
                Bulkhead::OVERFLOW_NAME
            );
        }
        Bulkhead {
            pool: self.clone(),
            limit,
        }
    }

    /// Every bulkhead's stats, sorted by name.
    pub fn bulkhead_stats(&self) -> Vec<BulkheadStats> {
        let mut all: Vec<BulkheadStats> = self
            .inner
            .bulkheads
            .lock()
            .values()
            .map(|l| l.stats())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// One call site's concurrency limit, from [`Pool::bulkhead`].
pub struct Bulkhead<C: Connector> {
    pool: Pool<C>,
    limit: Arc<Limit>,
}

impl<C: Connector> Bulkhead<C> {
    /// A connection, once this bulkhead has room and then the pool has one, both within the
    /// pool's one [wait timeout](crate::PoolConfig::wait_timeout). The bulkhead's permit is held
    /// until the connection is dropped.
    ///
    /// # Errors
    ///
    /// [`PoolError::Saturated`] at once when `max_waiters` calls already wait on this
    /// bulkhead, [`PoolError::Timeout`] when the wait timeout passes in either stage, and
    /// otherwise as [`Pool::get`].
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Conn<C>, PoolError<C::Error>>> + Send + '_ {
        let caller = Location::caller();
        admission::get(&self.pool.inner, caller, Some(&self.limit))
    }

    /// A permit for work that does not need a pooled connection. Waits, like `get`, for at
    /// most the pool's wait timeout, behind at most its `max_waiters`.
    ///
    /// # Errors
    ///
    /// [`PoolError::Saturated`] at once when `max_waiters` calls already wait on this
    /// bulkhead; [`PoolError::Timeout`] when it stays full for the wait timeout;
    /// [`PoolError::Closed`] when the pool is closed.
    pub async fn acquire(&self) -> Result<LimitPermit, PoolError<C::Error>> {
        let (permit, _deadline) = admission::in_bulkhead(&self.pool.inner, &self.limit).await?;
        Ok(permit)
    }

    /// Sets this bulkhead's limit at runtime; it no longer follows the pool's default.
    /// Lowering it takes effect as permits come back.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` for 0 or above [`Bulkhead::MAX_LIMIT`].
    pub fn set_limit(&self, limit: usize) -> Result<(), ConfigError> {
        check_limit("limit", limit)?;
        self.limit.explicit.store(true, Ordering::Relaxed);
        self.limit.set(limit);
        Ok(())
    }

    /// This bulkhead's name.
    pub fn name(&self) -> &str {
        &self.limit.name
    }

    /// This bulkhead's stats.
    pub fn stats(&self) -> BulkheadStats {
        self.limit.stats()
    }
}

impl<C: Connector> fmt::Debug for Bulkhead<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.stats(), f)
    }
}

/// The registry of a pool's bulkheads.
#[derive(Default)]
pub(crate) struct Bulkheads {
    map: Mutex<HashMap<Arc<str>, Arc<Limit>>>,
    overflow_warned: AtomicBool,
    /// Set by [`Bulkheads::close`], under the lock.
    closed: AtomicBool,
}

impl Bulkheads {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Limit>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes every bulkhead, and those made after: their waiting gets and acquires fail
    /// with [`PoolError::Closed`] at once. Read and set under the registry's lock, so a
    /// bulkhead made as the pool closes is closed too.
    pub(crate) fn close(&self) {
        let map = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        for limit in map.values() {
            limit.gate.close();
        }
    }

    /// The limit for `name`, and whether this call overflowed the registry for the first time.
    pub(crate) fn get(&self, name: &str, default: usize) -> (Arc<Limit>, bool) {
        let mut map = self.lock();
        if let Some(l) = map.get(name) {
            return (l.clone(), false);
        }
        let full = map.len() >= MAX_BULKHEADS;
        let key: Arc<str> = if full {
            Bulkhead::OVERFLOW_NAME.into()
        } else {
            name.into()
        };
        let limit = map
            .entry(key.clone())
            .or_insert_with(|| {
                let limit = Limit::new(key, default);
                if self.closed.load(Ordering::Relaxed) {
                    limit.gate.close();
                }
                Arc::new(limit)
            })
            .clone();
        drop(map);
        let first_overflow = full && !self.overflow_warned.swap(true, Ordering::Relaxed);
        (limit, first_overflow)
    }
}

/// Why a bulkhead refused a permit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Saturated,
    TimedOut,
    Closed,
}

impl Refused {
    /// The error the caller sees.
    pub(crate) fn error<E>(&self) -> PoolError<E> {
        match self {
            Refused::Saturated => PoolError::Saturated,
            Refused::TimedOut => PoolError::Timeout(TimeoutKind::Wait),
            Refused::Closed => PoolError::Closed,
        }
    }
}

/// One bulkhead: a [`Gate`] with its stats.
pub(crate) struct Limit {
    pub(crate) name: Arc<str>,
    gate: Arc<Gate>,
    /// Set by `set_limit`; otherwise the limit follows the pool's default.
    pub(crate) explicit: AtomicBool,
    waiters: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    acquired: AtomicU64,
    saturated: AtomicU64,
    timed_out: AtomicU64,
    pub(crate) failed_in_pool: AtomicU64,
}

impl Limit {
    fn new(name: Arc<str>, limit: usize) -> Limit {
        Limit {
            name,
            gate: Gate::new(limit),
            explicit: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            acquired: AtomicU64::new(0),
            saturated: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            failed_in_pool: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.gate.limit()
    }

    pub(crate) fn set(&self, limit: usize) {
        self.gate.set(limit);
    }

    /// Follows the pool's default limit, unless `set_limit` fixed this one.
    pub(crate) fn follow(&self, default: usize) {
        if !self.explicit.load(Ordering::Relaxed) && self.limit() != default {
            self.set(default);
        }
    }

    /// A permit before `deadline`, behind at most `max_waiters` others. Each refusal is counted
    /// here, where it happened.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        deadline: Instant,
        max_waiters: usize,
    ) -> Result<LimitPermit, Refused> {
        let permit = match self.gate.try_acquire() {
            Some(p) => p,
            None => {
                let Some(_queued) = Counted::join(&self.waiters, max_waiters) else {
                    self.saturated.fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::Saturated);
                };
                let at = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(at, self.gate.acquire()).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return Err(Refused::Closed),
                    Err(_) => {
                        self.timed_out.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::TimedOut);
                    }
                }
            }
        };
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(LimitPermit {
            _permit: permit,
            limit: self.clone(),
        })
    }

    pub(crate) fn stats(&self) -> BulkheadStats {
        BulkheadStats {
            name: self.name.to_string(),
            limit: self.limit(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak.load(Ordering::Relaxed),
            waiting: self.waiters.load(Ordering::Relaxed),
            acquired: self.acquired.load(Ordering::Relaxed),
            saturated: self.saturated.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            failed_in_pool: self.failed_in_pool.load(Ordering::Relaxed),
        }
    }
}

/// A bulkhead's permit, released on drop.
pub struct LimitPermit {
    _permit: GatePermit,
    limit: Arc<Limit>,
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for LimitPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitPermit")
            .field("bulkhead", &self.limit.name)
            .finish()
    }
}

/// A bulkhead's counters, from [`Bulkhead::stats`](crate::Bulkhead::stats) or
/// [`Pool::bulkhead_stats`](crate::Pool::bulkhead_stats).
///
/// `saturated` and `timed_out` count refusals in the bulkhead's own stage; a get that passed
/// the bulkhead and then failed in the pool is counted in the pool's [`PoolStats`](crate::PoolStats)
/// and, as a view, in `failed_in_pool`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadStats {
    /// The call site's name.
    pub name: String,
    /// The limit now.
    pub limit: usize,
    /// Permits out now.
    pub in_flight: usize,
    /// The most permits out at once.
    pub peak_in_flight: usize,
    /// Calls waiting now.
    pub waiting: usize,
    /// Permits granted.
    pub acquired: u64,
    /// Calls refused at once because too many were waiting.
    pub saturated: u64,
    /// Calls that reached the caller's deadline waiting for a permit.
    pub timed_out: u64,
    /// Gets that had a permit and then failed in the pool (timed out waiting for a connection,
    /// failed to dial, …).
    pub failed_in_pool: u64,
}
