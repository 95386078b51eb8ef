//! [`Pool`]: the handle users hold, its `get`, its snapshots and its runtime switches.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::admission;
use super::config::{PoolConfig, check_limit, check_max_size, check_max_waiters};
use super::conn::Conn;
use super::inner::{PAUSED, PoolInner};
use super::{reaper, warm};
use crate::connector::{Connector, Raw};
use crate::dial::{Dialer, Target};
use crate::error::{ConfigError, PoolError};
use crate::telemetry::counters::PoolStats;

/// A bounded pool of connections to one target, on `deadpool::unmanaged`.
///
/// - **Cap on sockets.** At most [`max_size`](crate::PoolConfig::max_size) sockets exist,
///   counting connections idle, in use and being dialed, and at most
///   [`max_concurrent_dials`](crate::PoolConfig::max_concurrent_dials) dials run at once.
/// - **Cancellation costs nothing.** A dial runs in a task of its own: a `get` that times out
///   or is dropped leaves it running, and its connection joins the pool as idle. A connection
///   given back mid-request is recovered by its connector or closed, never handed to the next
///   caller.
/// - **Bounded wait.** A `get` on a busy pool queues for at most the
///   [wait timeout](crate::PoolConfig::wait_timeout) (shared with a bulkhead's wait), behind at
///   most [`max_waiters`](crate::PoolConfig::max_waiters) others; past that it fails at once
///   with [`PoolError::Saturated`].
/// - **Fan-out limits.** [`fan_out`](Pool::fan_out) and [bulkheads](Pool::bulkhead) bound every
///   call site's concurrency, by default to `max_size`.
/// - **Health.** Idle connections are [checked](Connector::check) before reuse. While the
///   target refuses or stalls, gets fail at once with the last dial error and a single caller
///   probes, instead of every caller dialing a dead server.
/// - **Lifetimes.** A reaper task closes connections past the idle timeout or their jittered
///   maximum lifetime, keeps `min_idle` open, warns about leaks and port utilization, and
///   flushes rate-limited error summaries. It holds a weak handle and ends when the pool is
///   dropped or closed.
///
/// Besides the reaper, a pool spawns short tasks, each bounded: a dial task per new connection
/// (at most `max_concurrent_dials` at once, each under the create timeout) and a recovery task
/// per connection given back mid-request (at most `max_size`, each under the check timeout).
/// Each open connection has a small waiting task on the runtime that made it, which ends with
/// the connection. The redis connector adds one driver task per connection, which ends with it.
///
/// **Runtimes.** A connection's I/O belongs to the tokio runtime that made it (the one of the
/// `get` that dialed it). A pool may outlive that runtime (a pool in a `static` shared by tests
/// that each build a runtime, or one warmed up on a start-up runtime): the next `get` closes the
/// connections made there (counted as `broken`) before any is handed out, and starts the reaper
/// again if it ran there. A `get` racing with a runtime's shutdown on another runtime may
/// still receive such a connection; its first read or write then fails.
///
/// `Pool` is cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use multiloop::Pool;
/// use tokio::io::AsyncWriteExt;
///
/// let pool = Pool::builder("127.0.0.1:11211").max_size(32).build()?;
/// let mut conn = pool.get().await?;
/// conn.write_all(b"version\r\n").await?;
/// # Ok(())
/// # }
/// ```
pub struct Pool<C: Connector = Raw> {
    pub(crate) inner: Arc<PoolInner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

/// A snapshot of a pool's occupancy, from [`Pool::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The cap on open sockets.
    pub max_size: usize,
    /// Open connections, idle and in use.
    pub size: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Connections handed out (or being recovered after a cancelled request).
    pub in_use: usize,
    /// Dials in progress. `size + dialing` never exceeds `max_size` but for the instant a new
    /// connection lands (counted in both), and after a shrink, until the connections in use
    /// past the new cap come back and close.
    pub dialing: usize,
    /// Gets queued for a busy pool, at most `max_waiters`.
    pub waiting: usize,
    /// The wait queue's bound.
    pub max_waiters: usize,
    /// Whether [`Pool::pause`] is in force.
    pub paused: bool,
    /// Whether [`Pool::close`] was called.
    pub closed: bool,
}

impl<C: Connector> Pool<C> {
    /// A connection from the pool: an idle one that passes its check, one given back while
    /// this get waited, or a new one.
    ///
    /// The location of the call is recorded for the leak warning. Dropping the future (a
    /// timeout, an aborted task) is always safe: a dial it started goes on and its connection
    /// joins the pool.
    ///
    /// # Errors
    ///
    /// - [`PoolError::Paused`] or [`PoolError::Closed`] at once;
    /// - [`PoolError::Saturated`] at once when the pool is busy and `max_waiters` gets already
    ///   wait;
    /// - [`PoolError::Timeout`] when the pool stays busy for the wait timeout, or a new
    ///   connection takes longer than the create timeout;
    /// - [`PoolError::Dial`] when the dial fails; while the target refuses or stalls, at once
    ///   with the last dial error;
    /// - [`PoolError::Backend`] when the connector's handshake fails.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Conn<C>, PoolError<C::Error>>> + Send + '_ {
        let caller = Location::caller();
        admission::plain(&self.inner, caller)
    }

    /// Opens connections until `min_idle` are open, at most
    /// [`warm_up_concurrency`](crate::PoolConfig::warm_up_concurrency) dials at a time. Returns
    /// how many it opened. It never waits for a busy pool: a pool in use is warm.
    ///
    /// # Errors
    ///
    /// The first error, if no connection could be opened.
    pub async fn warm_up(&self) -> Result<usize, PoolError<C::Error>> {
        reaper::start(&self.inner);
        warm::fill(&self.inner).await
    }

    /// The pool's occupancy now.
    pub fn status(&self) -> Status {
        let inner = &*self.inner;
        let s = inner.store.status();
        Status {
            max_size: inner.max_size(),
            size: s.size,
            idle: s.available,
            in_use: s.size.saturating_sub(s.available),
            dialing: inner.dialing.load(Ordering::Relaxed),
            waiting: inner.waiters.load(Ordering::Relaxed),
            max_waiters: inner.max_waiters.load(Ordering::Relaxed),
            paused: inner.paused(),
            closed: inner.is_closed(),
        }
    }

    /// The pool's counters since it was built.
    pub fn stats(&self) -> PoolStats {
        self.inner.counters.snapshot()
    }

    /// The dialer the pool dials with, and its own stats.
    pub fn dialer(&self) -> &Dialer {
        &self.inner.dialer
    }

    /// The pool's name: [`PoolConfig::name`](crate::PoolConfig::name), or else the target as
    /// written. Metrics and the admin registry know the pool by it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where the pool connects.
    pub fn target(&self) -> &Target {
        self.inner.target()
    }

    /// Changes the cap on open sockets at runtime. Shrinking closes idle connections now and
    /// in-use ones as they come back; every close is counted.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_size` for 0 (use [`pause`](Pool::pause) to turn the pool
    /// off), a value above [`PoolConfig::MAX_SIZE`], or naming `min_idle` for a
    /// value below it.
    pub fn resize(&self, max_size: usize) -> Result<(), ConfigError> {
        let inner = &*self.inner;
        check_max_size(max_size, inner.min_idle)?;
        if inner.is_closed() {
            // A closed pool's cap stays 0.
            return Ok(());
        }
        // Idle connections past the new cap close now; lent ones close as they come back, and
        // dials past it as they finish.
        inner.set_cap(max_size);
        Ok(())
    }

    /// Changes the bound on the wait queue at runtime. Gets already waiting keep waiting.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_waiters` above [`PoolConfig::MAX_WAITERS`].
    pub fn set_max_waiters(&self, n: usize) -> Result<(), ConfigError> {
        check_max_waiters(n)?;
        self.inner.max_waiters.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Changes the bound on dials in progress at runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_concurrent_dials` for 0 or above
    /// [`PoolConfig::MAX_SIZE`].
    pub fn set_max_concurrent_dials(&self, n: usize) -> Result<(), ConfigError> {
        crate::error::check_count("max_concurrent_dials", n, 1, PoolConfig::MAX_SIZE, "")?;
        self.inner.dials.set(n);
        Ok(())
    }

    /// Changes the concurrency limit of `fan_out` and of bulkheads not set otherwise.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `default_limit` for 0 or above 1,048,576.
    pub fn set_default_limit(&self, n: usize) -> Result<(), ConfigError> {
        check_limit("default_limit", n)?;
        self.inner.default_limit.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Turns the pool off for load shedding: every `get` fails at once with
    /// [`PoolError::Paused`] (gets already waiting fail when they would have been served), and
    /// connections in use finish their work and come back as usual.
    pub fn pause(&self) {
        self.inner.upkeep.fetch_or(PAUSED, Ordering::AcqRel);
    }

    /// Turns a paused pool back on.
    pub fn resume(&self) {
        self.inner.upkeep.fetch_and(!PAUSED, Ordering::AcqRel);
    }

    /// Closes the pool: idle connections close now, in-use ones when they come back, dials in
    /// progress when they finish, and every `get` fails with [`PoolError::Closed`]. The reaper
    /// ends. It cannot be reopened.
    pub fn close(&self) {
        self.inner.close();
    }

    /// The concurrency limit of `fan_out` and of bulkheads not set otherwise.
    pub fn default_limit(&self) -> usize {
        self.inner.default_limit()
    }

    /// Whether [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Whether the last dial to the target was refused or timed out, so that gets fail fast.
    pub fn target_down(&self) -> bool {
        self.inner.health.is_down()
    }
}

impl<C: Connector> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", self.inner.target())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
