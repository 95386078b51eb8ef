//! Concurrency limits on every call site: [`Pool::fan_out`] and named bulkheads.
//!
//! The incident's fan-out spawned one task per key with no limit at all. Here a batch goes
//! through `fan_out`, which keeps at most a limit of items in flight (by default the pool's
//! `max_size`) without spawning a task per item, and each endpoint can take a named
//! [`Bulkhead`] so that no endpoint can take the whole pool.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connector::Connector;
use crate::error::{ConfigError, PoolError, TimeoutKind};
use crate::pool::{Conn, Pool};

/// The most named bulkheads a pool keeps. Names past it share one bulkhead named
/// [`OVERFLOW_BULKHEAD`], so a name built from request data cannot grow memory without bound.
pub const MAX_BULKHEADS: usize = 256;

/// The bulkhead shared by names past [`MAX_BULKHEADS`].
pub const OVERFLOW_BULKHEAD: &str = "(overflow)";

impl<C: Connector> Pool<C> {
    /// Runs `f(conn, item)` for every item with at most [`default_limit`](Pool::default_limit)
    /// in flight (by default `max_size`), and yields the results as a stream in completion
    /// order.
    ///
    /// It spawns no task: the items run concurrently inside the stream, as it is polled. With
    /// 20,000 items on a pool of 64, at most 64 connections ever exist and at most 64 gets are
    /// pending. Each item's connection goes back to the pool when `f`'s future drops it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let pool = multiloop::Pool::builder("127.0.0.1:11211").max_size(64).build()?;
    /// let keys: Vec<String> = (0..20_000).map(|i| format!("key:{i}")).collect();
    /// let mut results = pool.fan_out(keys, |mut conn, key| async move {
    ///     conn.write_all(format!("get {key}\r\n").as_bytes()).await?;
    ///     let mut buf = [0u8; 5];
    ///     conn.read_exact(&mut buf).await?; // "END\r\n" for a miss
    ///     Ok::<_, std::io::Error>(buf)
    /// });
    /// while let Some(result) = results.next().await {
    ///     let _reply = result??; // pool error, then the item's own error
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    pub fn fan_out<I, F, Fut, T>(
        &self,
        items: I,
        f: F,
    ) -> impl Stream<Item = Result<T, PoolError<C::Error>>> + Send + Unpin + 'static
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
        F: Fn(Conn<C>, I::Item) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.fan_out_with_limit(self.default_limit(), items, f)
    }

    /// [`fan_out`](Pool::fan_out) with an explicit limit on items in flight. A limit of 0
    /// counts as 1.
    #[track_caller]
    pub fn fan_out_with_limit<I, F, Fut, T>(
        &self,
        limit: usize,
        items: I,
        f: F,
    ) -> impl Stream<Item = Result<T, PoolError<C::Error>>> + Send + Unpin + 'static
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
        F: Fn(Conn<C>, I::Item) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.fan_out_stream(limit, futures_util::stream::iter(items), f)
    }

    /// [`fan_out_with_limit`](Pool::fan_out_with_limit) over a stream of items.
    #[track_caller]
    pub fn fan_out_stream<S, F, Fut, T>(
        &self,
        limit: usize,
        items: S,
        f: F,
    ) -> impl Stream<Item = Result<T, PoolError<C::Error>>> + Send + Unpin + 'static
    where
        S: Stream + Send + Unpin + 'static,
        S::Item: Send + 'static,
        F: Fn(Conn<C>, S::Item) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let caller = Location::caller();
        let pool = self.clone();
        let f = Arc::new(f);
        items
            .map(move |item| {
                let pool = pool.clone();
                let f = f.clone();
                async move {
                    let conn = pool.get_at(caller).await?;
                    Ok(f(conn, item).await)
                }
            })
            .buffer_unordered(limit.max(1))
    }

    /// The named bulkhead for one call site, created on first use with the pool's
    /// [`default_limit`](Pool::default_limit). Names past [`MAX_BULKHEADS`] share
    /// [`OVERFLOW_BULKHEAD`].
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
                "multiloop pool: too many bulkhead names; new names share the \"(overflow)\" \
                 bulkhead. Name call sites, not requests."
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

/// The registry of a pool's bulkheads.
#[derive(Default)]
pub(crate) struct Bulkheads {
    map: Mutex<HashMap<Arc<str>, Arc<Limit>>>,
    overflow_warned: AtomicBool,
}

impl Bulkheads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Limit>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The limit for `name`, and whether this call overflowed the registry for the first time.
    fn get(&self, name: &str, default: usize) -> (Arc<Limit>, bool) {
        let mut map = self.lock();
        if let Some(l) = map.get(name) {
            return (l.clone(), false);
        }
        let full = map.len() >= MAX_BULKHEADS;
        let key: Arc<str> = if full {
            OVERFLOW_BULKHEAD.into()
        } else {
            name.into()
        };
        let limit = map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Limit::new(key, default)))
            .clone();
        drop(map);
        let first_overflow = full && !self.overflow_warned.swap(true, Ordering::Relaxed);
        (limit, first_overflow)
    }
}

/// A resizable semaphore with its stats.
pub(crate) struct Limit {
    name: Arc<str>,
    semaphore: Arc<Semaphore>,
    limit: AtomicUsize,
    /// Set by `set_limit`; otherwise the limit follows the pool's default.
    explicit: AtomicBool,
    /// Permits to retire as they come back, after the limit was lowered while they were out.
    debt: AtomicUsize,
    resize: Mutex<()>,
    waiters: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    acquired: AtomicU64,
    saturated: AtomicU64,
    timed_out: AtomicU64,
}

impl Limit {
    fn new(name: Arc<str>, limit: usize) -> Limit {
        Limit {
            name,
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            explicit: AtomicBool::new(false),
            debt: AtomicUsize::new(0),
            resize: Mutex::new(()),
            waiters: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            acquired: AtomicU64::new(0),
            saturated: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }

    fn set(&self, new: usize) {
        let _serialized = self
            .resize
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.limit.swap(new, Ordering::Relaxed);
        if new > old {
            let mut add = new - old;
            // Cancel debt first: those permits are still out, and now simply stay.
            let mut debt = self.debt.load(Ordering::Relaxed);
            loop {
                let paid = debt.min(add);
                match self.debt.compare_exchange(
                    debt,
                    debt - paid,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        add -= paid;
                        break;
                    }
                    Err(now) => debt = now,
                }
            }
            self.semaphore.add_permits(add);
        } else {
            let mut take = old - new;
            while take > 0 {
                match self.semaphore.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        take -= 1;
                    }
                    Err(_) => break,
                }
            }
            self.debt.fetch_add(take, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> BulkheadStats {
        BulkheadStats {
            name: self.name.to_string(),
            limit: self.limit.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak.load(Ordering::Relaxed),
            waiting: self.waiters.load(Ordering::Relaxed),
            acquired: self.acquired.load(Ordering::Relaxed),
            saturated: self.saturated.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// One call site's concurrency limit, from [`Pool::bulkhead`].
pub struct Bulkhead<C: Connector> {
    pool: Pool<C>,
    limit: Arc<Limit>,
}

impl<C: Connector> Bulkhead<C> {
    /// A connection, once this bulkhead has room. The bulkhead's permit is held until the
    /// connection is dropped.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Bulkhead::acquire), then as [`Pool::get`].
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Conn<C>, PoolError<C::Error>>> + Send + '_ {
        let caller = Location::caller();
        async move {
            let permit = self.acquire().await?;
            let mut conn = self.pool.get_at(caller).await?;
            conn.limit = Some(permit);
            Ok(conn)
        }
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
        let l = &self.limit;
        if self.pool.is_closed() {
            return Err(PoolError::Closed);
        }
        if !l.explicit.load(Ordering::Relaxed) {
            let default = self.pool.default_limit();
            if l.limit.load(Ordering::Relaxed) != default {
                l.set(default);
            }
        }
        let permit = match l.semaphore.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let max = self.pool.max_waiters();
                let before = l.waiters.fetch_add(1, Ordering::Relaxed);
                let _leave = LeaveQueue(&l.waiters);
                if before >= max {
                    l.saturated.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Saturated);
                }
                let wait = self.pool.inner.timeouts.wait.unwrap_or_default();
                match tokio::time::timeout(wait, l.semaphore.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(PoolError::Closed),
                    Err(_) => {
                        l.timed_out.fetch_add(1, Ordering::Relaxed);
                        return Err(PoolError::Timeout(TimeoutKind::Wait));
                    }
                }
            }
        };
        l.acquired.fetch_add(1, Ordering::Relaxed);
        let now = l.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        l.peak.fetch_max(now, Ordering::Relaxed);
        Ok(LimitPermit {
            permit: Some(permit),
            limit: l.clone(),
        })
    }

    /// Sets this bulkhead's limit at runtime; it no longer follows the pool's default.
    /// Lowering it takes effect as permits come back.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` for 0.
    pub fn set_limit(&self, limit: usize) -> Result<(), ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new(
                "limit",
                "must be at least 1: a limit of 0 would block the call site; use Pool::pause \
                 to shed all load",
            ));
        }
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

struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bulkhead's permit, released on drop.
pub struct LimitPermit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<Limit>,
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        let l = &self.limit;
        l.in_flight.fetch_sub(1, Ordering::Relaxed);
        let retired = l
            .debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .is_ok();
        if let Some(permit) = self.permit.take()
            && retired
        {
            permit.forget();
        }
    }
}

impl fmt::Debug for LimitPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitPermit")
            .field("bulkhead", &self.limit.name)
            .finish()
    }
}

/// A bulkhead's counters, from [`Bulkhead::stats`] or [`Pool::bulkhead_stats`].
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
    /// Calls that waited for the wait timeout without a permit.
    pub timed_out: u64,
}
