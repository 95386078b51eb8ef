//! The bounded pool: a hard cap on open connections, a bounded wait queue, lifetimes, checks,
//! and switches for responders.

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::panic::Location;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Object, TimeoutType, Timeouts};

use crate::connector::{Connector, Raw};
use crate::dial::Dialer;
use crate::error::{ConfigError, PoolError, TimeoutKind};
use crate::limit::{Bulkheads, LimitPermit};
use crate::manager::{CreateError, Health, Lifetimes, Manager, Shared, Slot};
use crate::telemetry::{CloseReason, DEFAULT_REPORT_WINDOW, PoolCounters, PoolStats, Reporter};

/// Default [`PoolBuilder::max_size`]: 64 connections. A local memcached or redis serves far
/// more requests per second over 64 connections than one client host sends, and 64 sockets
/// are nothing next to 28,232 ports.
pub const DEFAULT_MAX_SIZE: usize = 64;
/// Default [`PoolBuilder::wait_timeout`]: 1 s. Waiting longer for a local cache means the pool
/// is overloaded, and a fast error sheds load better than a pile of waiting tasks.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`PoolBuilder::create_timeout`]: 3 s, the dialer's 2 s plus time for a handshake.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`PoolBuilder::check_timeout`]: 1 s.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`PoolBuilder::max_waiters`]: 1,024 queued gets. Past that, `get` fails at once
/// with [`PoolError::Saturated`]: a longer queue cannot drain within the wait timeout anyway,
/// and every waiter is a task holding memory.
pub const DEFAULT_MAX_WAITERS: usize = 1024;
/// Default [`PoolBuilder::max_lifetime`]: 30 minutes, so connections rebalance after a server
/// restart or failover without churning ports.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Default [`PoolBuilder::idle_timeout`]: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default [`PoolBuilder::leak_threshold`]: 60 s. Cache requests take microseconds; a
/// connection held for a minute was almost certainly forgotten.
pub const DEFAULT_LEAK_THRESHOLD: Duration = Duration::from_secs(60);
/// Default [`PoolBuilder::port_warning`]: warn when the busiest source holds 80% of its ports
/// towards the target, before the tipping point.
pub const DEFAULT_PORT_WARNING: f64 = 0.8;

/// Where a pool connects: a TCP address, dialed from spread sources, or a unix domain socket.
///
/// When the server offers a unix socket (`memcached -s PATH`, redis's `unixsocket`), it is the
/// strongest cure for port exhaustion: a unix socket uses no ports at all.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix domain socket's path.
    #[cfg(unix)]
    Unix(PathBuf),
}

impl Target {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Target::Tcp(addr) => Some(*addr),
            #[cfg(unix)]
            Target::Unix(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            #[cfg(unix)]
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Configures a [`Pool`]. Made by [`Pool::builder`] or [`Pool::builder_unix`].
#[must_use = "a builder does nothing until .build() is called"]
pub struct PoolBuilder<C: Connector = Raw> {
    target: Result<Target, String>,
    dialer: Option<Dialer>,
    connector: C,
    max_size: usize,
    wait_timeout: Duration,
    create_timeout: Duration,
    check_timeout: Duration,
    max_lifetime: Option<Duration>,
    lifetime_jitter: f64,
    idle_timeout: Option<Duration>,
    max_waiters: usize,
    min_idle: usize,
    warm_up_concurrency: usize,
    default_limit: Option<usize>,
    leak_threshold: Option<Duration>,
    report_window: Duration,
    port_warning: Option<f64>,
}

impl<C: Connector> fmt::Debug for PoolBuilder<C> {
    /// The options; not the connector, which may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("target", &self.target)
            .field("max_size", &self.max_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("create_timeout", &self.create_timeout)
            .field("check_timeout", &self.check_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_waiters", &self.max_waiters)
            .field("min_idle", &self.min_idle)
            .finish_non_exhaustive()
    }
}

impl<C: Connector> PoolBuilder<C> {
    /// The dialer for new connections. Default: `Dialer::builder().build()`, sources spread
    /// over 127.0.0.0/8.
    pub fn dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The connector that turns a dialed stream into a pooled connection. Default: [`Raw`].
    pub fn connector<D: Connector>(self, connector: D) -> PoolBuilder<D> {
        PoolBuilder {
            target: self.target,
            dialer: self.dialer,
            connector,
            max_size: self.max_size,
            wait_timeout: self.wait_timeout,
            create_timeout: self.create_timeout,
            check_timeout: self.check_timeout,
            max_lifetime: self.max_lifetime,
            lifetime_jitter: self.lifetime_jitter,
            idle_timeout: self.idle_timeout,
            max_waiters: self.max_waiters,
            min_idle: self.min_idle,
            warm_up_concurrency: self.warm_up_concurrency,
            default_limit: self.default_limit,
            leak_threshold: self.leak_threshold,
            report_window: self.report_window,
            port_warning: self.port_warning,
        }
    }

    /// The hard cap on open connections, idle and in use. Default: [`DEFAULT_MAX_SIZE`].
    /// Must be at least 1.
    pub fn max_size(mut self, n: usize) -> Self {
        self.max_size = n;
        self
    }

    /// How long `get` waits for a busy pool to free a connection. Default:
    /// [`DEFAULT_WAIT_TIMEOUT`]. Zero means "do not wait": a busy pool fails at once.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long dialing and setting up one new connection may take. Default:
    /// [`DEFAULT_CREATE_TIMEOUT`]. Must be greater than zero.
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// How long [`Connector::check`] may take on an idle connection. Default:
    /// [`DEFAULT_CHECK_TIMEOUT`]. Must be greater than zero.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Closes connections after this age, less a random share of up to
    /// [`lifetime_jitter`](Self::lifetime_jitter). Default: [`DEFAULT_MAX_LIFETIME`].
    /// `None` keeps connections forever.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The largest share of `max_lifetime` taken off each connection's lifetime at random, so
    /// that connections created together do not expire together. Default: 0.1. From 0.0 to
    /// below 1.0.
    pub fn lifetime_jitter(mut self, jitter: f64) -> Self {
        self.lifetime_jitter = jitter;
        self
    }

    /// Closes connections idle this long, down to [`min_idle`](Self::min_idle). Default:
    /// [`DEFAULT_IDLE_TIMEOUT`]. `None` keeps idle connections.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most gets that may wait for a busy pool at once. Past it, `get` fails at once with
    /// [`PoolError::Saturated`]. Default: [`DEFAULT_MAX_WAITERS`]. Zero means no queue.
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }

    /// Connections the reaper keeps open, creating them at most
    /// [`warm_up_concurrency`](Self::warm_up_concurrency) at a time. Default: 0. At most
    /// `max_size`.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// How many connections warm-up dials at once. Default: 4. Must be at least 1.
    pub fn warm_up_concurrency(mut self, n: usize) -> Self {
        self.warm_up_concurrency = n;
        self
    }

    /// The concurrency limit of [`Pool::fan_out`] and of every [bulkhead](Pool::bulkhead) not
    /// set otherwise. Default: `max_size`, following [`Pool::resize`]. Must be at least 1.
    pub fn default_limit(mut self, n: usize) -> Self {
        self.default_limit = Some(n);
        self
    }

    /// Logs one warning, naming where it was taken, for a connection held longer than this.
    /// Default: [`DEFAULT_LEAK_THRESHOLD`]. `None` turns the warning off.
    pub fn leak_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.leak_threshold = threshold;
        self
    }

    /// The window of rate-limited error reports: the first error of a kind in a window is
    /// logged at once, the rest are summarized once. Default: [`DEFAULT_REPORT_WINDOW`].
    pub fn report_window(mut self, window: Duration) -> Self {
        self.report_window = window;
        self
    }

    /// Warns when the busiest source address holds more than this share of its ephemeral ports
    /// towards the target, checked by the reaper every few seconds from `/proc`. Default:
    /// [`DEFAULT_PORT_WARNING`]. `None` turns the check off. Above 0.0, at most 1.0.
    pub fn port_warning(mut self, threshold: Option<f64>) -> Self {
        self.port_warning = threshold;
        self
    }

    /// Validates the options and builds the pool. It dials nothing: connections are created on
    /// demand, or by [`Pool::warm_up`] and the reaper when `min_idle` is set.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option at fault: `target` (unresolvable, or unreachable from
    /// the dialer's sources), `max_size`, `create_timeout` or `check_timeout` of zero,
    /// `lifetime_jitter` out of range, zero `max_lifetime` or `idle_timeout`, `min_idle` above
    /// `max_size`, zero `warm_up_concurrency` or `default_limit`, `report_window` of zero,
    /// `port_warning` out of range; or the dialer's own errors.
    pub fn build(self) -> Result<Pool<C>, ConfigError> {
        let target = self.target.map_err(|why| ConfigError::new("target", why))?;
        let positive = |d: Duration, option: &'static str| {
            if d.is_zero() {
                Err(ConfigError::new(option, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        if self.max_size == 0 {
            return Err(ConfigError::new(
                "max_size",
                "must be at least 1; use Pool::pause to turn a pool off",
            ));
        }
        positive(self.create_timeout, "create_timeout")?;
        positive(self.check_timeout, "check_timeout")?;
        positive(self.report_window, "report_window")?;
        if let Some(d) = self.max_lifetime {
            positive(d, "max_lifetime")?;
        }
        if let Some(d) = self.idle_timeout {
            positive(d, "idle_timeout")?;
        }
        if let Some(d) = self.leak_threshold {
            positive(d, "leak_threshold")?;
        }
        if !(0.0..1.0).contains(&self.lifetime_jitter) {
            return Err(ConfigError::new(
                "lifetime_jitter",
                format!(
                    "{} is out of range: use 0.0 to below 1.0",
                    self.lifetime_jitter
                ),
            ));
        }
        if self.min_idle > self.max_size {
            return Err(ConfigError::new(
                "min_idle",
                format!(
                    "{} is above max_size {}; the pool cannot keep more than it may hold",
                    self.min_idle, self.max_size
                ),
            ));
        }
        if self.warm_up_concurrency == 0 {
            return Err(ConfigError::new(
                "warm_up_concurrency",
                "must be at least 1",
            ));
        }
        if self.default_limit == Some(0) {
            return Err(ConfigError::new(
                "default_limit",
                "must be at least 1: a limit of 0 would block every call site",
            ));
        }
        if let Some(t) = self.port_warning
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(ConfigError::new(
                "port_warning",
                format!("{t} is out of range: use a share above 0.0, at most 1.0"),
            ));
        }
        let dialer = match self.dialer {
            Some(d) => d,
            None => Dialer::builder().build()?,
        };
        if let Target::Tcp(addr) = &target {
            dialer
                .check_target(*addr)
                .map_err(|e| ConfigError::new("target", e.io_error().to_string()))?;
        }

        let shared = Arc::new(Shared {
            counters: PoolCounters::default(),
            check_timeout: self.check_timeout,
            health: Health::default(),
            lifetimes: Lifetimes {
                max_lifetime: self.max_lifetime,
                jitter: self.lifetime_jitter,
                idle_timeout: self.idle_timeout,
            },
        });
        let manager = Manager {
            dialer: dialer.clone(),
            target: target.clone(),
            connector: self.connector,
            shared: shared.clone(),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(self.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| ConfigError::new("max_size", e.to_string()))?;
        // The check timeout is applied by the manager (see `Manager::recycle`).
        let timeouts = Timeouts {
            wait: Some(self.wait_timeout),
            create: Some(self.create_timeout),
            recycle: None,
        };
        Ok(Pool {
            inner: Arc::new(PoolInner {
                pool,
                shared,
                dialer,
                target,
                timeouts,
                paused: AtomicBool::new(false),
                waiters: AtomicUsize::new(0),
                max_waiters: AtomicUsize::new(self.max_waiters),
                max_size: AtomicUsize::new(self.max_size),
                default_limit: AtomicUsize::new(self.default_limit.unwrap_or(0)),
                min_idle: self.min_idle,
                warm_up_concurrency: self.warm_up_concurrency,
                leak_threshold: self.leak_threshold,
                port_warning: self.port_warning,
                checkouts: Checkouts::default(),
                reaper_started: AtomicBool::new(false),
                reporter: Reporter::new(self.report_window),
                bulkheads: Bulkheads::default(),
            }),
        })
    }
}

/// Connections that are out, for the leak warning: a slab, so a checkout and its return are an
/// uncontended lock and an index, no hashing.
#[derive(Default)]
pub(crate) struct Checkouts {
    held: Mutex<slab::Slab<Checkout>>,
}

pub(crate) struct Checkout {
    pub(crate) taken: Instant,
    pub(crate) caller: &'static Location<'static>,
    pub(crate) warned: bool,
}

impl Checkouts {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, slab::Slab<Checkout>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, caller: &'static Location<'static>, taken: Instant) -> usize {
        self.lock().insert(Checkout {
            taken,
            caller,
            warned: false,
        })
    }

    fn remove(&self, key: usize) {
        self.lock().try_remove(key);
    }
}

/// The kinds the pool's rate-limited reporter counts.
pub(crate) mod report {
    pub(crate) const WAIT_TIMEOUT: usize = 0;
    pub(crate) const SATURATED: usize = 1;
    pub(crate) const CREATE_FAILED: usize = 2;
    pub(crate) const PORTS: usize = 3;
    pub(crate) const KINDS: usize = 4;
}

pub(crate) struct PoolInner<C: Connector> {
    pub(crate) pool: managed::Pool<Manager<C>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) dialer: Dialer,
    pub(crate) target: Target,
    pub(crate) timeouts: Timeouts,
    paused: AtomicBool,
    waiters: AtomicUsize,
    max_waiters: AtomicUsize,
    /// The cap as last set, readable without deadpool's lock.
    max_size: AtomicUsize,
    /// 0 means "follow max_size".
    default_limit: AtomicUsize,
    pub(crate) min_idle: usize,
    pub(crate) warm_up_concurrency: usize,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) port_warning: Option<f64>,
    pub(crate) checkouts: Checkouts,
    reaper_started: AtomicBool,
    pub(crate) reporter: Reporter<{ report::KINDS }>,
    pub(crate) bulkheads: Bulkheads,
}

/// A bounded pool of connections to one target, on `deadpool::managed`.
///
/// - **Cap.** At most [`max_size`](PoolBuilder::max_size) connections exist, idle or in use.
/// - **Bounded wait.** A `get` on a busy pool queues for at most the
///   [wait timeout](PoolBuilder::wait_timeout), behind at most
///   [`max_waiters`](PoolBuilder::max_waiters) others; past that it fails at once with
///   [`PoolError::Saturated`].
/// - **Fan-out limits.** [`fan_out`](Pool::fan_out) and [bulkheads](Pool::bulkhead) bound every
///   call site's concurrency, by default to `max_size`.
/// - **Health.** Idle connections are [checked](Connector::check) before reuse. While the
///   target refuses or stalls, gets fail at once with the last dial error and a single caller
///   probes, instead of every caller dialing a dead server.
/// - **Lifetimes.** A reaper task closes connections past the idle timeout or their jittered
///   maximum lifetime, keeps `min_idle` open, warns about connections held past the leak
///   threshold and about port utilization, and flushes rate-limited error summaries. It holds a
///   weak handle and ends when the pool is dropped or closed. It is the pool's only background
///   task; it starts on the first `get` or [`warm_up`](Pool::warm_up).
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

impl Pool<Raw> {
    /// A builder for a pool of connections to `target`, with every option at its default and
    /// the [`Raw`] connector; [`PoolBuilder::connector`] picks another.
    ///
    /// `target` is resolved when [`build`](PoolBuilder::build) runs; the first address is used.
    pub fn builder<A: ToSocketAddrs>(target: A) -> PoolBuilder<Raw> {
        let target = match target.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(Target::Tcp)
                .ok_or_else(|| "resolved to no address".to_string()),
            Err(e) => Err(format!("could not resolve: {e}")),
        };
        PoolBuilder::with_target(target)
    }

    /// A builder for a pool of connections to the unix domain socket at `path`, with the same
    /// options and connectors as a TCP pool. A unix socket uses no ports, so it cannot run out
    /// of them; the dialer's options do not apply, but its connect timeout does.
    #[cfg(unix)]
    pub fn builder_unix(path: impl Into<PathBuf>) -> PoolBuilder<Raw> {
        PoolBuilder::with_target(Ok(Target::Unix(path.into())))
    }
}

impl PoolBuilder<Raw> {
    fn with_target(target: Result<Target, String>) -> PoolBuilder<Raw> {
        PoolBuilder {
            target,
            dialer: None,
            connector: Raw,
            max_size: DEFAULT_MAX_SIZE,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            lifetime_jitter: 0.1,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_waiters: DEFAULT_MAX_WAITERS,
            min_idle: 0,
            warm_up_concurrency: 4,
            default_limit: None,
            leak_threshold: Some(DEFAULT_LEAK_THRESHOLD),
            report_window: DEFAULT_REPORT_WINDOW,
            port_warning: Some(DEFAULT_PORT_WARNING),
        }
    }
}

/// A snapshot of a pool's occupancy, from [`Pool::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The cap on open connections.
    pub max_size: usize,
    /// Open connections, idle and in use.
    pub size: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Connections handed out (or being set up for a caller).
    pub in_use: usize,
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
    /// A connection from the pool: an idle one that passes its check, or a new one.
    ///
    /// The location of the call is recorded for the leak warning.
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
        self.get_at(caller)
    }

    pub(crate) async fn get_at(
        &self,
        caller: &'static Location<'static>,
    ) -> Result<Conn<C>, PoolError<C::Error>> {
        let inner = &*self.inner;
        let counters = &inner.shared.counters;
        counters.gets.fetch_add(1, Ordering::Relaxed);
        self.start_reaper();
        if inner.pool.is_closed() {
            return Err(PoolError::Closed);
        }
        if inner.paused.load(Ordering::Relaxed) {
            counters.paused.fetch_add(1, Ordering::Relaxed);
            return Err(PoolError::Paused);
        }
        let started = Instant::now();
        let now_only = Timeouts {
            wait: Some(Duration::ZERO),
            ..inner.timeouts
        };
        let obj = match inner.pool.timeout_get(&now_only).await {
            Ok(obj) => obj,
            Err(managed::PoolError::Timeout(TimeoutType::Wait))
                if !inner.timeouts.wait.is_some_and(|w| w.is_zero()) =>
            {
                // Busy: join the bounded queue, or fail at once.
                let Some(_waiter) =
                    WaitSlot::join(&inner.waiters, inner.max_waiters.load(Ordering::Relaxed))
                else {
                    counters.saturated.fetch_add(1, Ordering::Relaxed);
                    self.report_saturated();
                    return Err(PoolError::Saturated);
                };
                counters.waited.fetch_add(1, Ordering::Relaxed);
                inner
                    .pool
                    .timeout_get(&inner.timeouts)
                    .await
                    .map_err(|e| self.convert(e))?
            }
            Err(e) => return Err(self.convert(e)),
        };
        if inner.paused.load(Ordering::Relaxed) {
            // Paused while this get waited: the connection goes back, unused.
            counters.paused.fetch_add(1, Ordering::Relaxed);
            return Err(PoolError::Paused);
        }
        let now = Instant::now();
        counters.wait.record(now.duration_since(started));
        Ok(Conn {
            // No leak warning, no registry: the checkout skips its lock.
            checkout: inner
                .leak_threshold
                .map(|_| inner.checkouts.insert(caller, now)),
            obj: Some(obj),
            pool: self.inner.clone(),
            limit: None,
        })
    }

    fn convert(&self, e: managed::PoolError<CreateError<C::Error>>) -> PoolError<C::Error> {
        let counters = &self.inner.shared.counters;
        let err = match e {
            managed::PoolError::Timeout(t) => {
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
                let kind = match t {
                    TimeoutType::Wait => TimeoutKind::Wait,
                    TimeoutType::Create => TimeoutKind::Create,
                    TimeoutType::Recycle => TimeoutKind::Check,
                };
                PoolError::Timeout(kind)
            }
            managed::PoolError::Backend(CreateError::Dial(e)) => {
                counters.create_failed.fetch_add(1, Ordering::Relaxed);
                PoolError::Dial(e)
            }
            managed::PoolError::Backend(CreateError::Backend(e)) => {
                counters.create_failed.fetch_add(1, Ordering::Relaxed);
                PoolError::Backend(e)
            }
            // The pool is built with a runtime and without hooks, so only closing leads here.
            managed::PoolError::Closed
            | managed::PoolError::NoRuntimeSpecified
            | managed::PoolError::PostCreateHook(_) => PoolError::Closed,
        };
        self.report(&err);
        err
    }

    fn report(&self, err: &PoolError<C::Error>) {
        let target = &self.inner.target;
        let kind = match err {
            PoolError::Timeout(TimeoutKind::Wait) => report::WAIT_TIMEOUT,
            // Dial errors are reported by the dialer itself.
            PoolError::Timeout(_) | PoolError::Backend(_) => report::CREATE_FAILED,
            _ => return,
        };
        self.inner.reporter.report(kind, |suppressed| {
            let status = self.status();
            tracing::warn!(
                %target,
                error = %err,
                size = status.size,
                max_size = status.max_size,
                waiting = status.waiting,
                suppressed_in_last_window = suppressed,
                "multiloop pool: get failed"
            );
        });
    }

    fn report_saturated(&self) {
        let target = &self.inner.target;
        self.inner.reporter.report(report::SATURATED, |suppressed| {
            let status = self.status();
            tracing::warn!(
                %target,
                waiting = status.waiting,
                max_waiters = status.max_waiters,
                size = status.size,
                max_size = status.max_size,
                suppressed_in_last_window = suppressed,
                "multiloop pool saturated: the wait queue is full and gets fail at once; bound \
                 fan-out with Pool::fan_out or a bulkhead, or shed load"
            );
        });
    }

    fn start_reaper(&self) {
        let inner = &*self.inner;
        if !inner.reaper_started.load(Ordering::Relaxed)
            && !inner.reaper_started.swap(true, Ordering::Relaxed)
        {
            crate::reaper::spawn(Arc::downgrade(&self.inner));
        }
    }

    /// Opens connections until `min_idle` are open, at most
    /// [`warm_up_concurrency`](PoolBuilder::warm_up_concurrency) dials at a time. Returns how
    /// many it opened. It never waits for a busy pool: a pool in use is warm.
    ///
    /// # Errors
    ///
    /// The first error, if no connection could be opened.
    pub async fn warm_up(&self) -> Result<usize, PoolError<C::Error>> {
        use futures_util::StreamExt;
        self.start_reaper();
        let inner = &*self.inner;
        let before = inner.pool.status().size;
        if before >= inner.min_idle || inner.pool.is_closed() {
            return Ok(0);
        }
        let now_only = Timeouts {
            wait: Some(Duration::ZERO),
            ..inner.timeouts
        };
        // Hold every connection until all are open, so that each get creates one rather than
        // taking the one the previous get returned.
        let held: Vec<_> = futures_util::stream::iter(0..inner.min_idle)
            .map(|_| inner.pool.timeout_get(&now_only))
            .buffer_unordered(inner.warm_up_concurrency)
            .collect()
            .await;
        let opened = inner.pool.status().size.saturating_sub(before);
        let first_error = held.into_iter().find_map(Result::err);
        match first_error {
            Some(e) if opened == 0 => match e {
                managed::PoolError::Timeout(TimeoutType::Wait) => Ok(0),
                e => Err(self.convert(e)),
            },
            _ => Ok(opened),
        }
    }

    /// The pool's occupancy now.
    pub fn status(&self) -> Status {
        let inner = &*self.inner;
        let s = inner.pool.status();
        Status {
            max_size: s.max_size,
            size: s.size,
            idle: s.available,
            in_use: s.size - s.available,
            waiting: inner.waiters.load(Ordering::Relaxed),
            max_waiters: inner.max_waiters.load(Ordering::Relaxed),
            paused: inner.paused.load(Ordering::Relaxed),
            closed: inner.pool.is_closed(),
        }
    }

    /// The pool's counters since it was built.
    pub fn stats(&self) -> PoolStats {
        self.inner.shared.counters.snapshot()
    }

    /// The dialer the pool dials with, and its own stats.
    pub fn dialer(&self) -> &Dialer {
        &self.inner.dialer
    }

    /// Where the pool connects.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Changes the cap on open connections at runtime. Shrinking closes idle connections now and
    /// in-use ones as they come back.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_size` for 0 (use [`pause`](Pool::pause) to turn the pool
    /// off) or for a value below `min_idle`.
    pub fn resize(&self, max_size: usize) -> Result<(), ConfigError> {
        if max_size == 0 {
            return Err(ConfigError::new(
                "max_size",
                "must be at least 1; use Pool::pause to turn a pool off",
            ));
        }
        if max_size < self.inner.min_idle {
            return Err(ConfigError::new(
                "max_size",
                format!("{max_size} is below min_idle {}", self.inner.min_idle),
            ));
        }
        self.inner.pool.resize(max_size);
        self.inner.max_size.store(max_size, Ordering::Relaxed);
        Ok(())
    }

    /// Changes the bound on the wait queue at runtime. Gets already waiting keep waiting.
    pub fn set_max_waiters(&self, n: usize) {
        self.inner.max_waiters.store(n, Ordering::Relaxed);
    }

    /// Turns the pool off for load shedding: every `get` fails at once with
    /// [`PoolError::Paused`] (gets already waiting fail when they would have been served), and
    /// connections in use finish their work and come back as usual.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::Relaxed);
    }

    /// Turns a paused pool back on.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::Relaxed);
    }

    /// Closes the pool: idle connections close now, in-use ones when they come back, and every
    /// `get` fails with [`PoolError::Closed`]. The reaper ends. It cannot be reopened.
    pub fn close(&self) {
        self.inner.pool.close();
    }

    /// The concurrency limit of `fan_out` and of bulkheads not set otherwise.
    pub fn default_limit(&self) -> usize {
        match self.inner.default_limit.load(Ordering::Relaxed) {
            0 => self.inner.max_size.load(Ordering::Relaxed),
            n => n,
        }
    }

    /// Whether [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    /// The wait queue's bound now.
    pub(crate) fn max_waiters(&self) -> usize {
        self.inner.max_waiters.load(Ordering::Relaxed)
    }

    /// Whether the last dial to the target was refused or timed out, so that gets fail fast.
    pub fn target_down(&self) -> bool {
        self.inner.shared.health.is_down()
    }
}

impl<C: Connector> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.inner.target)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// A place in the wait queue, released on drop (including when the get is cancelled).
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    fn join(waiters: &'a AtomicUsize, max: usize) -> Option<WaitSlot<'a>> {
        let before = waiters.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            waiters.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(WaitSlot(waiters))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection on loan from a [`Pool`]. Dereferences to the connector's connection (a
/// [`Stream`](crate::Stream) for [`Raw`]). Dropping it returns it to the pool; [`discard`](Conn::discard)
/// closes it instead.
pub struct Conn<C: Connector> {
    obj: Option<Object<Manager<C>>>,
    pool: Arc<PoolInner<C>>,
    checkout: Option<usize>,
    pub(crate) limit: Option<LimitPermit>,
}

impl<C: Connector> Conn<C> {
    /// Closes the connection instead of returning it, for a connection left in an unknown
    /// state (say, after an I/O error mid-request). It counts as broken.
    pub fn discard(mut self) {
        if let Some(obj) = self.obj.take() {
            obj.set_close_reason(CloseReason::Broken);
            drop(Object::take(obj));
        }
    }
}

impl<C: Connector> Deref for Conn<C> {
    type Target = C::Conn;

    fn deref(&self) -> &C::Conn {
        match &self.obj {
            Some(obj) => &obj.conn,
            // `obj` is only taken by `discard` and `drop`, which consume the Conn.
            None => unreachable!("a Conn is never used after discard"),
        }
    }
}

impl<C: Connector> DerefMut for Conn<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        match &mut self.obj {
            Some(obj) => &mut obj.conn,
            None => unreachable!("a Conn is never used after discard"),
        }
    }
}

impl<C: Connector> Drop for Conn<C> {
    fn drop(&mut self) {
        if let Some(key) = self.checkout {
            self.pool.checkouts.remove(key);
        }
        if let Some(mut obj) = self.obj.take() {
            let slot: &mut Slot<C::Conn> = &mut obj;
            slot.idle_since = Instant::now();
        }
    }
}

/// A `Conn` reads and writes like its connection, so it goes straight to functions generic over
/// `AsyncRead`/`AsyncWrite`.
impl<C: Connector> tokio::io::AsyncRead for Conn<C>
where
    C::Conn: tokio::io::AsyncRead + Unpin,
{
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut **self.get_mut()).poll_read(cx, buf)
    }
}

impl<C: Connector> tokio::io::AsyncWrite for Conn<C>
where
    C::Conn: tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut **self.get_mut()).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut **self.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut **self.get_mut()).poll_shutdown(cx)
    }
}

impl<C: Connector> fmt::Debug for Conn<C>
where
    C::Conn: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("conn", &self.obj.as_ref().map(|o| &o.conn))
            .finish_non_exhaustive()
    }
}
