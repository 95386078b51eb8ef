//! Concurrency limits on every call site: [`Pool::fan_out`] and named [bulkheads](Bulkhead).
//!
//! The incident's fan-out spawned one task per key with no limit at all. Here a batch goes
//! through `fan_out`, which keeps at most a limit of items in flight (by default the pool's
//! `max_size`) without spawning a task per item, and each endpoint can take a named
//! [`Bulkhead`] so that no endpoint can take the whole pool.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::{Stream, StreamExt};

use super::admission;
use super::config::check_limit;
use super::conn::Conn;
use super::handle::Pool;
use super::limit::{BulkheadStats, Limit, LimitPermit, MAX_BULKHEADS};
use crate::connector::Connector;
use crate::error::{ConfigError, PoolError};

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
                    let conn = admission::plain(&pool.inner, caller).await?;
                    Ok(f(conn, item).await)
                }
            })
            .buffer_unordered(limit.max(1))
    }

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
        let inner = &self.pool.inner;
        if self.pool.is_closed() {
            return Err(PoolError::Closed);
        }
        let l = &self.limit;
        l.follow(self.pool.default_limit());
        let started = Instant::now();
        let deadline = started.checked_add(inner.wait_timeout).unwrap_or(started);
        let max_waiters = inner.max_waiters.load(Ordering::Relaxed);
        l.acquire(deadline, max_waiters)
            .await
            .map_err(|refused| refused.error())
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
