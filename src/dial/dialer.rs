//! [`Dialer`]: every dial of the crate, TCP or unix, goes through it, and is counted and
//! reported there.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, ToSocketAddrs};

use super::quarantine::Quarantine;
use super::source::{SourceSet, Strategy};
use super::stream::Stream;
use super::target::Target;
use crate::error::{DialError, DialErrorKind};
use crate::telemetry::counters::{DialCounters, DialStats};
use crate::telemetry::ports;
use crate::telemetry::report::{DEFAULT_REPORT_WINDOW, ReportKind, Reporter};

/// Dials TCP connections from source addresses spread over a [`SourceSet`].
///
/// Each [`connect`](Dialer::connect) picks a source (round robin from a random start by
/// default), binds it with `IP_BIND_ADDRESS_NO_PORT` so that the kernel chooses the port by the
/// full 4-tuple, and connects under a timeout that covers name lookup too. If the source has
/// run out of ports, the dialer quarantines it and retries on another, up to
/// [`DialerBuilder::max_attempts`](crate::DialerBuilder::max_attempts). Refusals, timeouts and file-descriptor exhaustion are not
/// retried: another source would not help.
///
/// A `Dialer` is cheap to clone; clones share the quarantine and the counters. It runs no
/// task of its own.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use multiloop::{Dialer, SourceSet};
/// use std::time::Duration;
///
/// let dialer = Dialer::builder()
///     .sources("127.0.0.0/16".parse::<SourceSet>()?)
///     .connect_timeout(Duration::from_millis(500))
///     .build()?;
/// let stream = dialer.connect("127.0.0.1:11211").await?;
/// println!("connected from {}", stream.local_addr()?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Dialer {
    pub(super) inner: Arc<Inner>,
}

/// The validated options, from the builder.
pub(super) struct Options {
    pub(super) sources: SourceSet,
    pub(super) strategy: Strategy,
    pub(super) connect_timeout: Duration,
    pub(super) nodelay: bool,
    pub(super) keepalive: Option<Duration>,
    pub(super) no_port: bool,
    pub(super) port_range: Option<(u16, u16)>,
    pub(super) max_attempts: u32,
    pub(super) quarantine: Duration,
    pub(super) fell_back: bool,
}

pub(super) struct Inner {
    pub(super) opts: Options,
    pub(super) next: AtomicU64,
    /// Dials whose handshake finished inside `connect`: one in `PACE` waits on the driver.
    pub(super) connected_at_once: AtomicU64,
    pub(super) quarantine: Quarantine,
    pub(super) counters: DialCounters,
    reporter: Reporter<DialErrorKind>,
}

impl ReportKind for DialErrorKind {
    const COUNT: usize = DialErrorKind::ALL.len();

    fn index(self) -> usize {
        self as usize
    }

    fn from_index(index: usize) -> Self {
        DialErrorKind::ALL[index.min(Self::COUNT - 1)]
    }

    fn describe(self) -> &'static str {
        self.as_str()
    }
}

impl Dialer {
    pub(super) fn new(o: Options) -> Dialer {
        Dialer {
            inner: Arc::new(Inner {
                next: AtomicU64::new(rand::random()),
                connected_at_once: AtomicU64::new(0),
                quarantine: Quarantine::new(o.quarantine),
                counters: DialCounters::default(),
                reporter: Reporter::new(DEFAULT_REPORT_WINDOW),
                opts: o,
            }),
        }
    }

    /// Connects to `addr`, as [`TcpStream::connect`] does, from a source in the set.
    ///
    /// `addr` may be anything tokio can resolve: a `SocketAddr`, `"127.0.0.1:11211"`,
    /// `("localhost", 6379)`. The name is looked up asynchronously, inside the connect timeout.
    /// Each resolved address is tried in turn, as `TcpStream::connect` does, all within the one
    /// timeout, and the last error is returned.
    ///
    /// On loopback the kernel usually finishes the handshake inside the `connect` system call;
    /// such a dial returns at once, without a timer or a wait on the runtime, except one in
    /// every 8 of the dialer's, which waits for the runtime's I/O driver to report its socket
    /// writable as `TcpStream::connect` does. A task dialing in a loop is thus paced by the
    /// driver that also serves a listener on the same runtime, and the listener keeps up even
    /// on busy CPUs.
    ///
    /// # Errors
    ///
    /// A [`DialError`]; match on its [`kind`](DialError::kind):
    /// - [`PortsExhausted`](DialErrorKind::PortsExhausted): every source tried was out of ports,
    ///   or every candidate source is quarantined (then it returns at once, without a syscall);
    /// - [`Refused`](DialErrorKind::Refused), [`Timeout`](DialErrorKind::Timeout) (name lookup
    ///   included), [`FdLimit`](DialErrorKind::FdLimit): not retried;
    /// - [`Mismatch`](DialErrorKind::Mismatch): the sources cannot reach the target, found before
    ///   any socket is created;
    /// - [`Resolve`](DialErrorKind::Resolve): the name did not resolve;
    /// - [`Io`](DialErrorKind::Io): anything else.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> Result<TcpStream, DialError> {
        let result = self.connect_any(addr, None, None).await;
        self.finish(result)
    }

    /// [`connect`](Dialer::connect) to a host name and port, whose failed lookup names them.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) async fn connect_host(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let result = self
            .connect_any((host, port), None, Some((host, port)))
            .await;
        self.finish(result)
    }

    /// Dials a pool's [`Target`]: TCP from a spread source (or from `pinned`), or a unix
    /// socket. Counted and reported like [`connect`](Dialer::connect).
    pub(crate) async fn connect_target(
        &self,
        target: &Target,
        pinned: Option<IpAddr>,
    ) -> Result<Stream, DialError> {
        let result = match target {
            Target::Tcp(addr) => self.connect_any(*addr, pinned, None).await.map(Stream::Tcp),
            Target::Host { host, port } => self
                .connect_any((host.as_str(), *port), pinned, Some((host, *port)))
                .await
                .map(Stream::Tcp),
            #[cfg(unix)]
            Target::Unix(path) => {
                let dialed = super::unix::connect(path, self.inner.opts.connect_timeout).await;
                if dialed.is_ok() {
                    self.inner.counters.record_ok_unaddressed();
                }
                dialed
            }
        };
        self.finish(result)
    }

    fn finish<T>(&self, result: Result<T, DialError>) -> Result<T, DialError> {
        if let Err(e) = &result {
            self.inner.counters.record_failure(e.kind());
            self.report(e);
        }
        result
    }

    /// `name` is the host name and port looked up, when the caller knows them, for a failed
    /// lookup's message.
    async fn connect_any<A: ToSocketAddrs>(
        &self,
        addr: A,
        pinned: Option<IpAddr>,
        name: Option<(&str, u16)>,
    ) -> Result<TcpStream, DialError> {
        let name = || {
            name.map(|(host, port)| {
                Target::Host {
                    host: host.to_owned(),
                    port,
                }
                .to_string()
            })
        };
        let timeout = self.inner.opts.connect_timeout;
        // One deadline for the lookup and every address: a silent resolver costs one timeout.
        let deadline = Instant::now() + timeout;
        let targets = match tokio::time::timeout(timeout, tokio::net::lookup_host(addr)).await {
            Ok(Ok(targets)) => targets,
            Ok(Err(e)) => return Err(DialError::resolve(name(), e)),
            Err(_) => {
                let what = name().map_or_else(String::new, |n| format!(" of {n}"));
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the name lookup{what} took longer than the connect timeout ({timeout:?})"
                    ),
                );
                return Err(DialError::new(
                    DialErrorKind::Timeout,
                    None,
                    Vec::new(),
                    0,
                    e,
                ));
            }
        };
        let mut last = None;
        for target in targets {
            match self.connect_addr(target, pinned, deadline).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            DialError::resolve(
                name(),
                io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"),
            )
        }))
    }

    /// Logs the first failure of each kind per window at once, with full context, and counts
    /// the rest for a summary: a storm of failures makes a handful of log events. The port
    /// budget of a ports-exhausted failure is read from the kernel on a blocking thread, never
    /// on the runtime's.
    fn report(&self, e: &DialError) {
        self.inner.reporter.report(e.kind(), |suppressed| {
            let kind = e.kind().as_str();
            let error = e.to_string();
            let census = match (e.kind(), e.target(), tokio::runtime::Handle::try_current()) {
                (DialErrorKind::PortsExhausted, Some(target), Ok(rt)) => {
                    Some((target, rt, self.local_port_range()))
                }
                _ => None,
            };
            let Some((target, rt, range)) = census else {
                warn_failed(kind, &error, None, suppressed);
                return;
            };
            // At most one such read per window: the log line waits for it, the dial does not.
            // The event goes to the caller's subscriber.
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            drop(rt.spawn_blocking(move || {
                let _subscriber = tracing::dispatcher::set_default(&dispatch);
                let budget = ports::snapshot(target, range)
                    .map(|s| s.summary())
                    .unwrap_or_else(|e| format!("unread: {e}"));
                warn_failed(kind, &error, Some(&budget), suppressed);
            }));
        });
    }

    /// Logs a summary for each kind whose window ended with failures not yet logged. The
    /// pool's reaper calls it; a bare dialer summarizes when the next window opens.
    pub(crate) fn flush_reports(&self) {
        self.inner.reporter.flush(|kind, count, window| {
            let kind = kind.describe();
            tracing::warn!(kind, count, window = ?window, "multiloop: {count} more dial failures of kind {kind}");
        });
    }

    /// Whether the sources can reach `target`; the pool checks this when it is built.
    pub(crate) fn check_target(&self, target: SocketAddr) -> Result<(), DialError> {
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        self.candidates(target).map(|_| ())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DialStats {
        let inner = &*self.inner;
        inner
            .counters
            .snapshot(inner.quarantine.len(Instant::now()))
    }

    /// The sources this dialer binds: the configured set, or 127.0.0.1 alone after a
    /// [`Fallback::Localhost`](crate::Fallback::Localhost).
    pub fn sources(&self) -> &SourceSet {
        &self.inner.opts.sources
    }

    /// Whether the build fell back to 127.0.0.1 because the platform does not route the set.
    pub fn fell_back(&self) -> bool {
        self.inner.opts.fell_back
    }

    /// Whether sockets are bound with `IP_BIND_ADDRESS_NO_PORT`: asked for and supported.
    pub fn bind_address_no_port(&self) -> bool {
        self.inner.opts.no_port
    }

    /// The per-socket ephemeral port range, if one is set.
    pub fn local_port_range(&self) -> Option<RangeInclusive<u16>> {
        self.inner.opts.port_range.map(|(lo, hi)| lo..=hi)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.opts.connect_timeout
    }
}

/// The first dial failure of its kind in a window, with the port budget where one was read
/// (a ports-exhausted failure; other kinds have no such field).
fn warn_failed(kind: &str, error: &str, budget: Option<&str>, suppressed: u64) {
    match budget {
        Some(budget) => tracing::warn!(
            kind,
            error,
            port_budget = budget,
            suppressed_in_last_window = suppressed,
            "multiloop: dial failed; further failures of this kind are counted and summarized \
             once per window"
        ),
        None => tracing::warn!(
            kind,
            error,
            suppressed_in_last_window = suppressed,
            "multiloop: dial failed; further failures of this kind are counted and summarized \
             once per window"
        ),
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Dialer")
            .field("sources", &inner.opts.sources)
            .field("strategy", &inner.opts.strategy)
            .field("connect_timeout", &inner.opts.connect_timeout)
            .field("nodelay", &inner.opts.nodelay)
            .field("keepalive", &inner.opts.keepalive)
            .field("bind_address_no_port", &inner.opts.no_port)
            .field("local_port_range", &self.local_port_range())
            .field("max_attempts", &inner.opts.max_attempts)
            .field("fell_back", &inner.opts.fell_back)
            .finish_non_exhaustive()
    }
}
