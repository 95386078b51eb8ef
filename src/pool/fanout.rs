//! [`Pool::fan_out`]: a batch with a limit on items in flight.
//!
//! The incident's fan-out spawned one task per key with no limit at all. Here a batch goes
//! through `fan_out`, which keeps at most a limit of items in flight (by default the pool's
//! `max_size`) without spawning a task per item. A call site that is not one batch takes a
//! named [bulkhead](crate::Bulkhead) (`bulkhead`) so that no endpoint can take the whole pool.

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};

use super::admission;
use super::conn::Conn;
use super::handle::Pool;
use crate::connector::Connector;
use crate::error::PoolError;

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
}
