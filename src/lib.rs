//! Connections to a local memcached or redis that cannot run out of ports.
//!
//! A library for tokio services that talk to a cache on their own host: a [`Dialer`] that
//! spreads source addresses over 127.0.0.0/8, so the port space is addresses × ports instead of
//! 28,232; a [`Pool`] with a hard cap on sockets, a bounded wait queue and a concurrency limit on
//! every call site, so a fan-out cannot become a connection storm; and telemetry that shows
//! saturation before it tips, with typed errors ([`DialError`], [`PoolError`]) that say what to
//! change.
//!
//! From a clone of the repository, `cargo run --release -p loadtest` replays the incident
//! below with four clients side by side, and `cargo test --all-features` runs the tests
//! against real memcached, redis-server and nutcracker processes.
//!
//! # Features
//!
//! | feature | what it gives | what it pulls in |
//! |---|---|---|
//! | `memcached` (default) | [`memcached::Connector`], `Protocol`, `get_many`: memcached's meta and text protocols, every reply read by its structure and matched to its request, cancellation-aware | `memchr` |
//! | `redis` | [`redis::Connector`] and [`redis::pool`], on redis-rs's `MultiplexedConnection`, with protected-mode detection | `redis` |
//! | `metrics` | a pool's series through the `metrics` facade, in OpenTelemetry's connection-pool names | `metrics` |
//! | `hyper` | [`Dialer`] as a `tower_service::Service<http::Uri>` for hyper-util's legacy `Client` and tonic (see [`service`]) | `hyper-util`, `tower-service`, `http` |
//! | `admin` | [`admin::Admin`]: read and switch named pools over HTTP | `hyper` (server), `hyper-util`, `http`, `http-body`, `http-body-util`, `bytes`, `tower-service`, `serde`, `serde_json` |
//! | `cli` | the `multiloop` command (`doctor`, `watch`, the admin switches); no library items | `admin`, `clap`, hyper's client, tokio's `signal` |
//!
//! Without features the pool speaks any protocol through [`Raw`] or a [`Connector`] of your
//! own, over TCP or, with [`Pool::builder_unix`], a unix domain socket, which uses no ports.
//!
//! # Quick start
//!
//! ```no_run
//! # #[cfg(feature = "memcached")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // At most 64 sockets, dialed from all of 127.0.0.0/8; past that, callers wait or are shed.
//! let pool = multiloop::Pool::builder("127.0.0.1:11211")
//!     .connector(multiloop::memcached::Connector::new())
//!     .build()?;
//! let keys = (0..20_000).map(|i| format!("key:{i}")); // the incident's batch
//! let batch = multiloop::memcached::get_many(&pool, keys, 500).await; // multi-gets of 500
//! println!("{} keys answered, {} chunks failed", batch.answered, batch.failed.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Why: the incident
//!
//! A service fanned out one new connection per key to the memcached on its own host; its pool
//! capped only idle connections, so bursts left tens of thousands of source ports in TIME_WAIT.
//! When the 28,232 ports of 127.0.0.1 ran out, every dial failed with `EADDRINUSE`, each failure
//! was logged synchronously, threads piled up and the process was OOM-killed. `multiloop` spreads
//! source addresses across 127.0.0.0/8, bounds connections and concurrency, and reports every
//! failure as a typed, actionable error, rate-limited in the log.
//!
//! # The dialer
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use multiloop::{Dialer, DialErrorKind};
//!
//! // A drop-in for tokio's TcpStream::connect, on a shared default dialer:
//! let stream = multiloop::connect("127.0.0.1:11211").await?;
//! println!("connected from {}", stream.local_addr()?); // e.g. 127.83.4.201:40312
//!
//! // Or configure one:
//! let dialer = Dialer::builder().sources("127.0.0.0/16".parse()?).build()?;
//! match dialer.connect("127.0.0.1:6379").await {
//!     Ok(_stream) => {}
//!     Err(e) if e.kind() == DialErrorKind::PortsExhausted => eprintln!("shed load: {e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! A folder per layer; imports go down the list, or across into telemetry, never up.
//!
//! - `pool/` ([`Pool`], on `deadpool::unmanaged`): a hard cap on sockets, one admission path with
//!   one deadline, dials that outlive a caller who gives up, lifetimes, checks, runtime
//!   switches, and limits on every call site ([`Pool::fan_out`], [bulkheads](Pool::bulkhead)).
//! - `connector/` ([`Connector`], [`Raw`], and the `memcached` and `redis` connectors): what a
//!   pooled connection is, how it is checked, and how one given back mid-request is made clean.
//! - `dial/` ([`Dialer`], [`DialerConfig`], [`SourceSet`], [`Stream`], [`Target`]): picks a
//!   source, sets `IP_BIND_ADDRESS_NO_PORT` so the kernel picks the port by the full 4-tuple,
//!   connects under a timeout that covers name lookup, and on exhaustion quarantines the source
//!   and retries on another. Every dial of the crate goes through it, TCP or unix.
//! - `telemetry/` ([`DialStats`], [`PoolStats`], [`ports`]): counters, the rate-limited
//!   reporter, and the port budget towards a target.
//! - [`DialError`], [`PoolError`] and [`ConfigError`] (`error.rs`): kinds to match on, messages
//!   that say what to change.
//!
//! # The pool
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//!
//! let pool = multiloop::Pool::builder("127.0.0.1:11211").max_size(64).build()?;
//! let mut results = pool.fan_out(0..20_000, |conn, i| async move {
//!     // …one request on `conn` for item `i`; at most 64 run at once…
//!     # drop(conn);
//!     i
//! });
//! while let Some(result) = results.next().await {
//!     let _i = result?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Platforms
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface. macOS routes only 127.0.0.1 unless
//! aliases are added; the dialer probes this when it is built and, by default, falls back to
//! 127.0.0.1 with one warning (see [`Fallback`]). IPv6 has a single loopback address, so `[::1]`
//! targets dial from `::1`.
//!
//! The dialer runs no task of its own (a ports-exhausted report reads the port budget on a
//! blocking thread, at most once per report window). A pool runs its reaper, which ends with
//! the pool, and short bounded tasks: one per dial in progress and one per connection being
//! recovered.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// A builder's setters, one per option, each writing the field of the same name in the
/// builder's `config`: the pool's and the dialer's builders share them. Defined before the
/// modules, which see it by textual scope.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod connector;
mod dial;
mod error;
mod pool;
mod telemetry;

#[cfg(feature = "memcached")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcached")))]
pub mod memcached;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub use connector::{Connector, Raw};
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use dial::service;
pub use dial::{
    Dialer, DialerBuilder, DialerConfig, Fallback, IntoTarget, SourceSet, Strategy, Stream, Target,
};
pub use error::{ConfigError, DialError, DialErrorKind, PoolError, TimeoutKind};
pub use pool::{Bulkhead, BulkheadStats, Conn, LimitPermit, Pool, PoolBuilder, PoolConfig, Status};
pub use telemetry::ports;
pub use telemetry::{ClosedCounts, DialStats, FailureCounts, PoolStats, WaitPercentiles};

use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::OnceCell;

static DEFAULT_DIALER: OnceCell<Dialer> = OnceCell::const_new();

/// The shared dialer behind [`connect`]: every option at its default, built on first use.
///
/// # Errors
///
/// The [`ConfigError`] of the first build, if the platform probe failed (for example because
/// the process was out of file descriptors). The next call tries again.
pub async fn default_dialer() -> Result<&'static Dialer, ConfigError> {
    DEFAULT_DIALER
        .get_or_try_init(|| async { Dialer::builder().build() })
        .await
}

/// Connects to `addr` from a source spread over 127.0.0.0/8: a drop-in for
/// [`tokio::net::TcpStream::connect`].
///
/// It uses [`default_dialer`], so it takes the same arguments and returns the same stream. Its
/// error converts into `io::Error`, so `?` works in functions that return `io::Result`.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// // Before: let stream = tokio::net::TcpStream::connect("127.0.0.1:11211").await?;
/// let stream = multiloop::connect("127.0.0.1:11211").await?;
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// A [`DialError`], as from [`Dialer::connect`]; if the default dialer cannot be built, one of
/// kind [`DialErrorKind::FdLimit`] or [`DialErrorKind::Io`] that carries the [`ConfigError`].
pub async fn connect<A: ToSocketAddrs>(addr: A) -> Result<TcpStream, DialError> {
    match default_dialer().await {
        Ok(dialer) => dialer.connect(addr).await,
        Err(e) => Err(DialError::from_config(e)),
    }
}

/// The README's examples, compiled as doc tests. Some use the memcached connector, a default
/// feature; a build without it leaves them out.
#[cfg(all(doctest, feature = "memcached"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
