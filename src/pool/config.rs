//! [`PoolConfig`]: every option of a pool as a documented field with its default, and the one
//! validation every value goes through, in the builder and in the runtime switches.

use std::time::Duration;

use super::Bulkhead;
use crate::error::{ConfigError, check_count, check_duration};
use crate::telemetry::report::DEFAULT_REPORT_WINDOW;

/// Every option of a pool, with its default. [`PoolBuilder`](crate::PoolBuilder) sets these one
/// by one, or all at once with [`PoolBuilder::config`](crate::PoolBuilder::config).
///
/// Bounds, checked by [`validate`](PoolConfig::validate), which
/// [`PoolBuilder::build`](crate::PoolBuilder::build) runs first (the runtime switches check the
/// options they change against the same bounds), each failure a [`ConfigError`] naming the
/// option: every duration at most [`ConfigError::MAX_DURATION`] (24 h); counts as documented
/// on each field and in the associated constants.
///
/// ```
/// let mut config = multiloop::PoolConfig::default();
/// config.max_size = 16;
/// config.wait_timeout = std::time::Duration::from_millis(200);
/// let pool = multiloop::Pool::builder("127.0.0.1:11211").config(config).build()?;
/// assert_eq!(pool.status().max_size, 16);
/// # Ok::<(), multiloop::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The pool's name in logs and metrics (`db.client.connection.pool.name`). Default: `None`,
    /// the target (`127.0.0.1:11211`). At most 128 characters.
    pub name: Option<String>,
    /// The hard cap on open sockets: connections idle, in use, and being dialed. Default: 64.
    /// A local memcached or redis serves far more requests per second over 64 connections than
    /// one client host sends, and 64 sockets are nothing next to 28,232 ports. From 1 to
    /// [`MAX_SIZE`](Self::MAX_SIZE).
    pub max_size: usize,
    /// The most dials (connect plus the connector's handshake) in progress at once. Default:
    /// 8. A pool refilling after a storm (a server restart, a burst of cancelled requests)
    /// dials 8 at a time, not `max_size` at once; a loopback dial takes well under a
    /// millisecond, so 8 refill a pool of 64 in a few. From 1 to [`MAX_SIZE`](Self::MAX_SIZE).
    pub max_concurrent_dials: usize,
    /// How long a `get` may wait in all, for a bulkhead's permit and then for a connection.
    /// Default: 1 s. Waiting longer for a local cache means the pool is overloaded, and a fast
    /// error sheds load better than a pile of waiting tasks. Zero means "do not wait": a busy
    /// pool fails at once. A get that started a dial waits for that dial to end (at most
    /// [`create_timeout`](Self::create_timeout)) even past its wait timeout, and fails with
    /// the dial's error; the new connection goes to the get that has waited longest, which
    /// may be another, and then this one waits on until its wait timeout.
    pub wait_timeout: Duration,
    /// How long dialing and setting up one new connection may take. It runs in a task of its
    /// own: a caller that stops waiting does not stop it. Default: 3 s, the dialer's
    /// [`connect_timeout`](crate::DialerConfig::connect_timeout) of 2 s plus time for a
    /// handshake. Greater than zero.
    pub create_timeout: Duration,
    /// How long [`Connector::check`](crate::Connector::check) may take on an idle connection,
    /// and [`Connector::recover`](crate::Connector::recover) on one given back mid-request.
    /// Default: 1 s. Greater than zero.
    pub check_timeout: Duration,
    /// A connection idle for less than this is handed out after only
    /// [`Connector::peek`](crate::Connector::peek), which costs no round trip (`Raw`, memcached
    /// and redis have one; a connector without one is always checked); one idle longer gets the
    /// full [`Connector::check`](crate::Connector::check). Default: 500 ms, HikariCP's window
    /// for skipping its alive check. A connection that served a request within the last half
    /// second is very likely alive, and a dead one fails its user's next request, which
    /// callers handle anyway; the round-trip check is for connections idle long enough for the
    /// server (its own idle timeout), a restart or a middlebox to have dropped them. Zero
    /// checks every checkout.
    pub check_after_idle: Duration,
    /// Closes connections after this age, less a random share of up to `lifetime_jitter`.
    /// Default: 30 minutes, so connections rebalance after a server restart or failover
    /// without churning ports. `None` keeps connections forever; otherwise greater than zero.
    pub max_lifetime: Option<Duration>,
    /// The largest share of `max_lifetime` taken off each connection's lifetime at random, so
    /// that connections created together do not expire together. Default: 0.1. From 0.0 to
    /// below 1.0.
    pub lifetime_jitter: f64,
    /// Closes connections idle this long, down to `min_idle`. Connections are reused most
    /// recent first, so spare ones go idle and close when load drops. Default: 5 minutes.
    /// `None` keeps idle connections; otherwise greater than zero.
    pub idle_timeout: Option<Duration>,
    /// The most gets that may wait for a busy pool (or one bulkhead) at once. Past it, `get`
    /// fails at once with [`PoolError::Saturated`](crate::PoolError::Saturated). Default:
    /// 1,024: a longer queue cannot drain within the wait timeout anyway, and every waiter is
    /// a task holding memory. From 0 (no queue) to [`MAX_WAITERS`](Self::MAX_WAITERS).
    pub max_waiters: usize,
    /// Connections the reaper keeps open, dialing at most `warm_up_concurrency` at a time.
    /// Default: 0. At most `max_size`.
    pub min_idle: usize,
    /// How many connections warm-up dials at once. Default: 4. From 1 to
    /// [`MAX_SIZE`](Self::MAX_SIZE).
    pub warm_up_concurrency: usize,
    /// The concurrency limit of [`Pool::fan_out`](crate::Pool::fan_out) and of every bulkhead
    /// not set otherwise. Default: `None`, follow `max_size` (and [`Pool::resize`](crate::Pool::resize)).
    /// From 1 to [`Bulkhead::MAX_LIMIT`](crate::Bulkhead::MAX_LIMIT).
    pub default_limit: Option<usize>,
    /// Logs one warning, naming where it was taken, for a connection held longer than this.
    /// Default: 60 s. Cache requests take microseconds; a connection held for a minute was
    /// almost certainly forgotten. `None` turns the warning off.
    pub leak_threshold: Option<Duration>,
    /// The window of rate-limited error reports: the first error of a kind in a window is
    /// logged at once, the rest are summarized once. Default: 10 s, the window a dialer's own
    /// reports use. Greater than zero.
    pub report_window: Duration,
    /// Warns when the busiest source address holds more than this share of its ephemeral
    /// ports towards the target, checked by the reaper every few seconds on a blocking thread
    /// (towards the address a host-name target last resolved to; a unix socket has no ports).
    /// Default: 0.8, a warning before the tipping point. `None` turns the check off. Above
    /// 0.0, at most 1.0.
    pub port_warning: Option<f64>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: None,
            max_size: 64,
            max_concurrent_dials: 8,
            wait_timeout: Duration::from_secs(1),
            create_timeout: Duration::from_secs(3),
            check_timeout: Duration::from_secs(1),
            check_after_idle: Duration::from_millis(500),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            lifetime_jitter: 0.1,
            idle_timeout: Some(Duration::from_secs(5 * 60)),
            max_waiters: 1024,
            min_idle: 0,
            warm_up_concurrency: 4,
            default_limit: None,
            leak_threshold: Some(Duration::from_secs(60)),
            report_window: DEFAULT_REPORT_WINDOW,
            port_warning: Some(0.8),
        }
    }
}

impl PoolConfig {
    /// The largest [`max_size`](Self::max_size), and of the other counts of connections
    /// (`max_concurrent_dials`, `warm_up_concurrency`): 65,536, far past any file-descriptor
    /// budget for one target; deadpool allocates its slot queue for `max_size` up front.
    pub const MAX_SIZE: usize = 1 << 16;

    /// The largest [`max_waiters`](Self::max_waiters): 1,048,576 queued gets.
    pub const MAX_WAITERS: usize = 1 << 20;

    /// Checks every option against its bounds.
    ///
    /// ```
    /// let mut config = multiloop::PoolConfig::default();
    /// config.max_size = multiloop::PoolConfig::MAX_SIZE + 1;
    /// assert_eq!(config.validate().unwrap_err().option(), "max_size");
    /// ```
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`], naming the option and its bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(name) = &self.name
            && (name.is_empty() || name.chars().count() > 128)
        {
            return Err(ConfigError::new(
                "name",
                "must be 1 to 128 characters: it labels every metric of the pool",
            ));
        }
        check_max_size(self.max_size, self.min_idle)?;
        check_count(
            "max_concurrent_dials",
            self.max_concurrent_dials,
            1,
            PoolConfig::MAX_SIZE,
            "",
        )?;
        check_duration("wait_timeout", self.wait_timeout, true)?;
        check_duration("create_timeout", self.create_timeout, false)?;
        check_duration("check_timeout", self.check_timeout, false)?;
        check_duration("check_after_idle", self.check_after_idle, true)?;
        check_duration("report_window", self.report_window, false)?;
        for (option, d) in [
            ("max_lifetime", self.max_lifetime),
            ("idle_timeout", self.idle_timeout),
            ("leak_threshold", self.leak_threshold),
        ] {
            if let Some(d) = d {
                check_duration(option, d, false)?;
            }
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
        check_max_waiters(self.max_waiters)?;
        check_count(
            "warm_up_concurrency",
            self.warm_up_concurrency,
            1,
            PoolConfig::MAX_SIZE,
            "",
        )?;
        if let Some(n) = self.default_limit {
            check_limit("default_limit", n)?;
        }
        if let Some(t) = self.port_warning
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(ConfigError::new(
                "port_warning",
                format!("{t} is out of range: use a share above 0.0, at most 1.0"),
            ));
        }
        Ok(())
    }
}

/// `max_size`'s bounds, shared by the builder and [`Pool::resize`](crate::Pool::resize).
pub(crate) fn check_max_size(max_size: usize, min_idle: usize) -> Result<(), ConfigError> {
    check_count(
        "max_size",
        max_size,
        1,
        PoolConfig::MAX_SIZE,
        "; use Pool::pause to turn a pool off",
    )?;
    if min_idle > max_size {
        return Err(ConfigError::new(
            "min_idle",
            format!(
                "{min_idle} is above max_size {max_size}; the pool cannot keep more than it may hold"
            ),
        ));
    }
    Ok(())
}

/// `max_waiters`'s bounds.
pub(crate) fn check_max_waiters(n: usize) -> Result<(), ConfigError> {
    check_count("max_waiters", n, 0, PoolConfig::MAX_WAITERS, "")
}

/// A concurrency limit's bounds (`default_limit`, a bulkhead's `limit`).
pub(crate) fn check_limit(option: &'static str, n: usize) -> Result<(), ConfigError> {
    check_count(
        option,
        n,
        1,
        Bulkhead::MAX_LIMIT,
        ": a limit of 0 would block the call site; use Pool::pause to shed all load",
    )
}
