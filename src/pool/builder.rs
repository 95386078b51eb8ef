//! [`PoolBuilder`]: a target, a dialer, a connector and a [`PoolConfig`]; `build` validates
//! the config once and assembles the pool.

use std::fmt;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool::unmanaged;

use super::bulkhead::Bulkheads;
use super::config::PoolConfig;
use super::gate::Gate;
use super::handle::Pool;
use super::health::Health;
use super::inner::PoolInner;
use super::leak::Checkouts;
use super::slot::Lifetimes;
use crate::connector::{Connector, Raw};
use crate::dial::{Dialer, IntoTarget, Target};
use crate::error::ConfigError;
use crate::telemetry::counters::PoolCounters;
use crate::telemetry::report::Reporter;

/// Configures a [`Pool`]. Made by [`Pool::builder`] or [`Pool::builder_unix`]. Each option is a
/// field of [`PoolConfig`], where its default and bounds are documented.
#[must_use = "a builder does nothing until .build() is called"]
pub struct PoolBuilder<C: Connector = Raw> {
    target: Result<Target, ConfigError>,
    dialer: Option<Dialer>,
    connector: C,
    config: PoolConfig,
}

impl<C: Connector> fmt::Debug for PoolBuilder<C> {
    /// The target and options; not the connector, which may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("target", &self.target.as_ref().map_err(|e| e.message()))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pool<Raw> {
    /// A builder for a pool of connections to `target`, with every option at its default and
    /// the [`Raw`] connector; [`PoolBuilder::connector`] picks another.
    ///
    /// `target` is a [`SocketAddr`](std::net::SocketAddr), `"host:port"`, `(host, port)` or a
    /// [`Target`]. Nothing is resolved here: a host name is looked up by the dialer, inside its
    /// connect timeout, at each dial.
    pub fn builder(target: impl IntoTarget) -> PoolBuilder<Raw> {
        PoolBuilder::with_target(target.into_target())
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
    pub(crate) fn with_target(target: Result<Target, ConfigError>) -> PoolBuilder<Raw> {
        PoolBuilder {
            target,
            dialer: None,
            connector: Raw,
            config: PoolConfig::default(),
        }
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
            config: self.config,
        }
    }

    /// Every option at once, replacing those set so far.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    setters! {
        /// [`PoolConfig::max_size`]: the hard cap on open sockets.
        max_size: usize;
        /// [`PoolConfig::max_concurrent_dials`]: the bound on dials in progress.
        max_concurrent_dials: usize;
        /// [`PoolConfig::wait_timeout`]: how long a `get` waits for a busy pool, in all.
        wait_timeout: Duration;
        /// [`PoolConfig::create_timeout`]: how long one dial and handshake may take.
        create_timeout: Duration;
        /// [`PoolConfig::check_timeout`]: how long a check or a recovery may take.
        check_timeout: Duration;
        /// [`PoolConfig::check_after_idle`]: how long idle before a checkout runs the full check.
        check_after_idle: Duration;
        /// [`PoolConfig::max_lifetime`]: the age at which connections close.
        max_lifetime: Option<Duration>;
        /// [`PoolConfig::lifetime_jitter`]: the random share taken off each lifetime.
        lifetime_jitter: f64;
        /// [`PoolConfig::idle_timeout`]: how long a spare connection stays open unused.
        idle_timeout: Option<Duration>;
        /// [`PoolConfig::max_waiters`]: the bound on the wait queue.
        max_waiters: usize;
        /// [`PoolConfig::min_idle`]: connections the reaper keeps open.
        min_idle: usize;
        /// [`PoolConfig::warm_up_concurrency`]: dials at once while warming up.
        warm_up_concurrency: usize;
        /// [`PoolConfig::leak_threshold`]: when a held connection is reported.
        leak_threshold: Option<Duration>;
        /// [`PoolConfig::report_window`]: the window of rate-limited reports.
        report_window: Duration;
        /// [`PoolConfig::port_warning`]: the port utilization that warns.
        port_warning: Option<f64>;
    }

    /// [`PoolConfig::name`]: the pool's name in logs and metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// [`PoolConfig::default_limit`]: the concurrency limit of `fan_out` and bulkheads.
    pub fn default_limit(mut self, n: usize) -> Self {
        self.config.default_limit = Some(n);
        self
    }

    /// Validates the options and builds the pool. It dials nothing and resolves nothing:
    /// connections are created on demand, or by [`Pool::warm_up`] and the reaper when
    /// `min_idle` is set.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option at fault and its bound (see [`PoolConfig`]); naming
    /// `target` when it is not `host:port`, or an address the dialer's sources cannot reach; or
    /// the default dialer's own errors.
    pub fn build(self) -> Result<Pool<C>, ConfigError> {
        let target = self.target?;
        let config = self.config;
        config.validate()?;
        let dialer = match self.dialer {
            Some(d) => d,
            None => Dialer::builder().build()?,
        };
        if let Target::Tcp(addr) = &target {
            dialer
                .check_target(*addr)
                .map_err(|e| ConfigError::new("target", e.io_error().to_string()))?;
        }
        let counters = Arc::new(PoolCounters::default());
        let name: Arc<str> = match &config.name {
            Some(name) => name.as_str().into(),
            None => target.to_string().into(),
        };
        #[cfg(feature = "metrics")]
        let export = Arc::new(crate::telemetry::export::Export::new(&name));
        Ok(Pool {
            inner: Arc::new(PoolInner {
                name,
                target,
                dialer,
                connector: self.connector,
                // The store's own bound is the largest cap: the cap is the socket gate's, and
                // the store cannot be resized. Its queue reserves 8 bytes a connection up to
                // that bound (512 KiB of address space, which the allocator maps lazily: pages
                // are touched only as connections go idle).
                store: unmanaged::Pool::new(PoolConfig::MAX_SIZE),
                sockets: Gate::new(config.max_size),
                dials: Gate::new(config.max_concurrent_dials),
                dialing: AtomicUsize::new(0),
                adding: RwLock::new(()),
                sweeping: Mutex::new(()),
                filling: tokio::sync::Mutex::new(()),
                upkeep: AtomicU8::new(0),
                health: Arc::new(Health::default()),
                lifetimes: Lifetimes {
                    max_lifetime: config.max_lifetime,
                    jitter: config.lifetime_jitter,
                    idle_timeout: config.idle_timeout,
                },
                wait_timeout: config.wait_timeout,
                create_timeout: config.create_timeout,
                check_timeout: config.check_timeout,
                check_after_idle: config.check_after_idle,
                fresh_is_not_idle: config
                    .idle_timeout
                    .is_none_or(|t| config.check_after_idle <= t),
                waiters: AtomicUsize::new(0),
                max_waiters: AtomicUsize::new(config.max_waiters),
                default_limit: AtomicUsize::new(config.default_limit.unwrap_or(0)),
                min_idle: config.min_idle,
                warm_up_concurrency: config.warm_up_concurrency,
                leak_threshold: config.leak_threshold,
                port_warning: config.port_warning,
                checkouts: config
                    .leak_threshold
                    .map(|_| Arc::new(Checkouts::default())),
                resolved: Mutex::new(None),
                counters,
                reporter: Reporter::new(config.report_window),
                bulkheads: Bulkheads::default(),
                #[cfg(feature = "metrics")]
                export,
            }),
        })
    }
}
