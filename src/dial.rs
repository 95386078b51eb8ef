//! The dialer: pick a source address, set socket options, bind, connect, retry on exhaustion.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream, ToSocketAddrs};

use crate::error::{ConfigError, DialError, DialErrorKind};
use crate::quarantine::{self, Quarantine};
use crate::source::{Blocks, Class, SourceSet, Strategy};
use crate::telemetry::{DEFAULT_REPORT_WINDOW, DialCounters, DialStats, Reporter};
use crate::{ports, sockopt};

/// Default for [`DialerBuilder::connect_timeout`]: 2 s.
///
/// A loopback handshake takes microseconds. It only takes longer when the server's accept
/// backlog is full, and then Linux retransmits the SYN after 1 s: 2 s allows one retransmit and
/// still fails fast enough that callers do not pile up behind a stalled server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default for [`DialerBuilder::max_attempts`]: 4, enough to step past a few exhausted sources
/// without turning one dial into a storm when every source is exhausted.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

/// Default for [`DialerBuilder::quarantine`]: 60 s, one TIME_WAIT period on Linux.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(60);

/// What [`DialerBuilder::build`] does when the platform does not route the source set, as on
/// macOS, which routes only 127.0.0.1 unless aliases are added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Dial from 127.0.0.1 alone and log one warning at build time. The default: the dialer
    /// keeps working, with the port budget of a plain `connect`.
    #[default]
    Localhost,
    /// Fail the build with a [`ConfigError`] that says how to add the aliases.
    Fail,
}

/// Configures a [`Dialer`]. Made by [`Dialer::builder`].
///
/// Every option has a finite default; see each method. Invalid values are reported by
/// [`build`](DialerBuilder::build), which names the option.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct DialerBuilder {
    sources: SourceSet,
    strategy: Strategy,
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    bind_address_no_port: bool,
    local_port_range: Option<RangeInclusive<u16>>,
    max_attempts: u32,
    quarantine: Duration,
    fallback: Fallback,
}

impl Default for DialerBuilder {
    fn default() -> Self {
        DialerBuilder {
            sources: SourceSet::loopback(),
            strategy: Strategy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            nodelay: true,
            keepalive: None,
            bind_address_no_port: true,
            local_port_range: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            quarantine: DEFAULT_QUARANTINE,
            fallback: Fallback::default(),
        }
    }
}

impl DialerBuilder {
    /// The source addresses to bind. Default: [`SourceSet::loopback()`], all of 127.0.0.0/8.
    pub fn sources(mut self, sources: SourceSet) -> Self {
        self.sources = sources;
        self
    }

    /// How to walk the sources. Default: [`Strategy::RoundRobin`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The time one [`Dialer::connect`] call may take for one target address, retries included.
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`]. Must be greater than zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on every connection. Default: on, since cache protocols send small
    /// requests and wait for the answer, which Nagle's algorithm would delay.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Enables TCP keepalive with this idle time before the first probe. Default: off; a pool's
    /// liveness checks find dead peers on loopback sooner. Must be greater than zero.
    pub fn keepalive(mut self, idle: Duration) -> Self {
        self.keepalive = Some(idle);
        self
    }

    /// Sets `IP_BIND_ADDRESS_NO_PORT` before binding (Linux 4.2+). Default: on. With it, the
    /// kernel picks the source port at `connect` by the full 4-tuple, as a plain `connect` does;
    /// without it, `bind` reserves a port per address, cannot reuse a TIME_WAIT pair and is
    /// slower under churn. Where the OS lacks the option the dialer binds without it.
    pub fn bind_address_no_port(mut self, on: bool) -> Self {
        self.bind_address_no_port = on;
        self
    }

    /// Limits every socket's ephemeral ports to `range`, inclusive, with `IP_LOCAL_PORT_RANGE`
    /// (Linux 6.3+). Default: unset, the system's `net.ipv4.ip_local_port_range`.
    ///
    /// Mostly for tests and demonstrations: with 50 ports per address, exhaustion takes 50 dials
    /// instead of 28,232. The range must lie within the system range, or the kernel ignores it.
    pub fn local_port_range(mut self, range: RangeInclusive<u16>) -> Self {
        self.local_port_range = Some(range);
        self
    }

    /// The most sockets one [`Dialer::connect`] call tries, each from another source, when
    /// sources run out of ports. Default: [`DEFAULT_MAX_ATTEMPTS`]. Must be at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How long a source that ran out of ports is skipped. Default: [`DEFAULT_QUARANTINE`].
    /// `Duration::ZERO` turns quarantine off. At most 4,096 addresses are held at once.
    pub fn quarantine(mut self, duration: Duration) -> Self {
        self.quarantine = duration;
        self
    }

    /// What to do when the platform does not route the source set. Default:
    /// [`Fallback::Localhost`].
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Validates the options, probes the platform and builds the dialer.
    ///
    /// The probe binds (without connecting) a few members of the source set other than
    /// 127.0.0.1, and checks that the OS has the socket options asked for. It sends no packet.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option at fault: `connect_timeout` or `keepalive` of zero,
    /// `max_attempts` of zero, a `local_port_range` that is empty, starts at 0, lies outside the
    /// system range or is not supported by the OS, or `sources` that the host does not route
    /// under [`Fallback::Fail`].
    pub fn build(self) -> Result<Dialer, ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than zero; it bounds every connect() call",
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "must be at least 1: the first attempt counts",
            ));
        }
        if self.keepalive.is_some_and(|k| k.is_zero()) {
            return Err(ConfigError::new(
                "keepalive",
                "the idle time before the first probe must be greater than zero",
            ));
        }
        let port_range = match &self.local_port_range {
            Some(range) => Some(check_port_range(range)?),
            None => None,
        };
        let probe = probe_options(&self.sources, self.bind_address_no_port, port_range)?;
        let (sources, fell_back) = probe_routes(self.sources, self.fallback, |ip| {
            probe_bind(ip, probe.no_port)
        })?;
        Ok(Dialer {
            inner: Arc::new(Inner {
                next: AtomicU64::new(rand::random()),
                quarantine: Quarantine::new(self.quarantine),
                counters: DialCounters::default(),
                sources,
                strategy: self.strategy,
                connect_timeout: self.connect_timeout,
                nodelay: self.nodelay,
                keepalive: self.keepalive,
                no_port: probe.no_port,
                port_range,
                max_attempts: self.max_attempts,
                fell_back,
                reporter: Reporter::new(DEFAULT_REPORT_WINDOW),
            }),
        })
    }
}

/// Dials TCP connections from source addresses spread over a [`SourceSet`].
///
/// Each [`connect`](Dialer::connect) picks a source (round robin from a random start by
/// default), binds it with `IP_BIND_ADDRESS_NO_PORT` so that the kernel chooses the port by the
/// full 4-tuple, and connects under a timeout. If the source has run out of ports, the dialer
/// quarantines it and retries on another, up to [`DialerBuilder::max_attempts`]. Refusals,
/// timeouts and file-descriptor exhaustion are not retried: another source would not help.
///
/// A `Dialer` is cheap to clone; clones share the quarantine and the counters. It runs no
/// background task.
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
    inner: Arc<Inner>,
}

struct Inner {
    sources: SourceSet,
    strategy: Strategy,
    next: AtomicU64,
    quarantine: Quarantine,
    counters: DialCounters,
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    no_port: bool,
    port_range: Option<(u16, u16)>,
    max_attempts: u32,
    fell_back: bool,
    reporter: Reporter<{ DialErrorKind::ALL.len() }>,
}

/// Where a dial may take its source from.
enum Candidates<'a> {
    Set(&'a Blocks),
    /// IPv6 has one loopback address: `::1` targets dial from `::1`.
    Only(IpAddr),
}

impl Candidates<'_> {
    fn len(&self) -> u64 {
        match self {
            Candidates::Set(blocks) => blocks.len(),
            Candidates::Only(_) => 1,
        }
    }

    fn get(&self, index: u64) -> Option<IpAddr> {
        match self {
            Candidates::Set(blocks) => blocks.get(index),
            Candidates::Only(ip) => (index == 0).then_some(*ip),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Candidates::Set(blocks) => blocks.contains_ip(ip),
            Candidates::Only(only) => *only == ip,
        }
    }
}

impl Dialer {
    /// A builder with every option at its default.
    pub fn builder() -> DialerBuilder {
        DialerBuilder::default()
    }

    /// Connects to `addr`, as [`TcpStream::connect`] does, from a source in the set.
    ///
    /// `addr` may be anything tokio can resolve: a `SocketAddr`, `"127.0.0.1:11211"`,
    /// `("localhost", 6379)`. Each resolved address is tried in turn, as `TcpStream::connect`
    /// does, and the last error is returned.
    ///
    /// # Errors
    ///
    /// A [`DialError`]; match on its [`kind`](DialError::kind):
    /// - [`PortsExhausted`](DialErrorKind::PortsExhausted): every source tried was out of ports,
    ///   or every candidate source is quarantined (then it returns at once, without a syscall);
    /// - [`Refused`](DialErrorKind::Refused), [`Timeout`](DialErrorKind::Timeout),
    ///   [`FdLimit`](DialErrorKind::FdLimit): not retried;
    /// - [`Mismatch`](DialErrorKind::Mismatch): the sources cannot reach the target, found before
    ///   any socket is created;
    /// - [`Io`](DialErrorKind::Io): anything else, such as a failed name lookup.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> Result<TcpStream, DialError> {
        let result = self.connect_any(addr).await;
        if let Err(e) = &result {
            self.inner.counters.record_failure(e.kind());
            self.report(e);
        }
        result
    }

    /// Logs the first failure of each kind per window at once, with full context, and counts
    /// the rest for a summary: a storm of failures makes a handful of log events.
    fn report(&self, e: &DialError) {
        self.inner.reporter.report(e.kind().index(), |suppressed| {
            let budget = match (e.kind(), e.target()) {
                (DialErrorKind::PortsExhausted, Some(target)) => {
                    ports::snapshot(target, self.local_port_range())
                        .map(|s| s.summary())
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            tracing::warn!(
                kind = e.kind().as_str(),
                error = %e,
                port_budget = %budget,
                suppressed_in_last_window = suppressed,
                "multiloop: dial failed; further failures of this kind are counted and \
                 summarized once per window"
            );
        });
    }

    /// Logs a summary for each kind whose window ended with failures not yet logged. The
    /// pool's reaper calls it; a bare dialer summarizes when the next window opens.
    pub(crate) fn flush_reports(&self) {
        self.inner.reporter.flush(|kind, count, window| {
            let kind = DialErrorKind::ALL[kind].as_str();
            tracing::warn!(kind, count, window = ?window, "multiloop: {count} more dial failures of kind {kind}");
        });
    }

    async fn connect_any<A: ToSocketAddrs>(&self, addr: A) -> Result<TcpStream, DialError> {
        let targets = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| DialError::new(DialErrorKind::Io, None, Vec::new(), 0, e))?;
        let mut last = None;
        for target in targets {
            match self.connect_addr(target).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            DialError::new(
                DialErrorKind::Io,
                None,
                Vec::new(),
                0,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the address resolved to no socket address",
                ),
            )
        }))
    }

    async fn connect_addr(&self, target: SocketAddr) -> Result<TcpStream, DialError> {
        let inner = &*self.inner;
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        let candidates = self.candidates(target)?;
        let deadline = tokio::time::Instant::now() + inner.connect_timeout;
        let mut tried: Vec<IpAddr> = Vec::new();
        let mut last_exhausted: Option<io::Error> = None;
        while tried.len() < inner.max_attempts as usize {
            let Some(source) = self.pick(&candidates, &tried) else {
                break;
            };
            if !tried.is_empty() {
                inner.counters.record_retry();
            }
            tried.push(source);
            let attempt = tokio::time::timeout_at(deadline, self.attempt(source, target)).await;
            match attempt {
                Ok(Ok(stream)) => {
                    inner.counters.record_ok(source);
                    return Ok(stream);
                }
                Ok(Err((DialErrorKind::PortsExhausted, err))) => {
                    inner.quarantine.insert(source, Instant::now());
                    tracing::debug!(%source, %target, error = %err, "source out of ports; quarantined");
                    last_exhausted = Some(err);
                }
                Ok(Err((kind, err))) => {
                    let attempts = tried.len() as u32;
                    return Err(DialError::new(kind, Some(target), tried, attempts, err));
                }
                Err(_elapsed) => {
                    let attempts = tried.len() as u32;
                    let err = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", inner.connect_timeout),
                    );
                    return Err(DialError::new(
                        DialErrorKind::Timeout,
                        Some(target),
                        tried,
                        attempts,
                        err,
                    ));
                }
            }
        }
        let attempts = tried.len() as u32;
        if let Some(err) = last_exhausted {
            return Err(DialError::new(
                DialErrorKind::PortsExhausted,
                Some(target),
                tried,
                attempts,
                err,
            ));
        }
        // Nothing left to try: every candidate is quarantined. Fail at once, naming them.
        let now = Instant::now();
        let held: Vec<IpAddr> = inner
            .quarantine
            .sample(quarantine::CAPACITY, now)
            .into_iter()
            .filter(|ip| candidates.contains(*ip))
            .take(16)
            .collect();
        let err = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!(
                "all {} candidate source addresses are quarantined after running out of ports",
                candidates.len()
            ),
        );
        Err(DialError::new(
            DialErrorKind::PortsExhausted,
            Some(target),
            held,
            0,
            err,
        ))
    }

    /// Whether the sources can reach `target`; the pool checks this when it is built.
    pub(crate) fn check_target(&self, target: SocketAddr) -> Result<(), DialError> {
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        self.candidates(target).map(|_| ())
    }

    /// The sources that can reach `target`: members of its family and scope.
    fn candidates(&self, target: SocketAddr) -> Result<Candidates<'_>, DialError> {
        let class = Class::of(target.ip());
        let blocks = self.inner.sources.class(class);
        if blocks.len() > 0 {
            return Ok(Candidates::Set(blocks));
        }
        if class == Class::V6Loopback {
            return Ok(Candidates::Only(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        let sources = &self.inner.sources;
        let why = if class.is_loopback() {
            format!(
                "target {target} is IPv4 loopback but the sources ({sources}) hold no IPv4 \
                 loopback address; add 127.0.0.0/8 to the sources"
            )
        } else if sources.is_loopback_only() {
            format!(
                "target {target} is not a loopback address and the sources ({sources}) are \
                 loopback only; loopback sources cannot reach it, and multiloop sends nothing \
                 off the host unless the sources are built with \
                 SourceSet::parse_allowing_non_loopback"
            )
        } else {
            let family = if class.is_v4() { "IPv4" } else { "IPv6" };
            format!(
                "target {target} is {family} but the sources ({sources}) hold no {family} \
                 non-loopback address"
            )
        };
        Err(DialError::new(
            DialErrorKind::Mismatch,
            Some(target),
            Vec::new(),
            0,
            io::Error::new(io::ErrorKind::InvalidInput, why),
        ))
    }

    /// Picks a source that is neither quarantined nor already tried in this call.
    ///
    /// The scan starts where the strategy says and walks consecutive members. It looks at no
    /// more than the quarantine can hold plus the tried ones plus one, so it finds a free member
    /// if there is one, and usually returns the first.
    fn pick(&self, candidates: &Candidates<'_>, tried: &[IpAddr]) -> Option<IpAddr> {
        let inner = &*self.inner;
        let len = candidates.len();
        if len == 0 {
            return None;
        }
        let start = match inner.strategy {
            Strategy::RoundRobin => inner.next.fetch_add(1, Ordering::Relaxed) % len,
            Strategy::Random => rand::random_range(0..len),
        };
        let limit = len.min((quarantine::CAPACITY + tried.len() + 1) as u64);
        let now = Instant::now();
        (0..limit)
            .filter_map(|i| candidates.get((start + i) % len))
            .find(|&ip| !tried.contains(&ip) && !inner.quarantine.contains(ip, now))
    }

    /// One socket: open, bind, connect. Errors carry their classified kind.
    async fn attempt(
        &self,
        source: IpAddr,
        target: SocketAddr,
    ) -> Result<TcpStream, (DialErrorKind, io::Error)> {
        let socket = self
            .open(source, target)
            .map_err(|(err, at_bind)| (DialErrorKind::classify(&err, at_bind), err))?;
        let socket = TcpSocket::from_std_stream(socket.into());
        socket
            .connect(target)
            .await
            .map_err(|err| (DialErrorKind::classify(&err, false), err))
    }

    /// Creates and binds a non-blocking socket. The flag says whether the error came from bind.
    fn open(&self, source: IpAddr, target: SocketAddr) -> Result<Socket, (io::Error, bool)> {
        let inner = &*self.inner;
        let before_bind = |e| (e, false);
        let socket = new_nonblocking_socket(target).map_err(before_bind)?;
        if inner.nodelay {
            socket.set_tcp_nodelay(true).map_err(before_bind)?;
        }
        if let Some(idle) = inner.keepalive {
            socket
                .set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))
                .map_err(before_bind)?;
        }
        if inner.no_port {
            sockopt::set_bind_address_no_port(&socket, true).map_err(before_bind)?;
        }
        if let Some((lo, hi)) = inner.port_range {
            sockopt::set_local_port_range(&socket, lo, hi).map_err(before_bind)?;
        }
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| (e, true))?;
        Ok(socket)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DialStats {
        let inner = &*self.inner;
        inner
            .counters
            .snapshot(inner.quarantine.len(Instant::now()))
    }

    /// The sources this dialer binds: the configured set, or 127.0.0.1 alone after a
    /// [`Fallback::Localhost`].
    pub fn sources(&self) -> &SourceSet {
        &self.inner.sources
    }

    /// Whether the build fell back to 127.0.0.1 because the platform does not route the set.
    pub fn fell_back(&self) -> bool {
        self.inner.fell_back
    }

    /// Whether sockets are bound with `IP_BIND_ADDRESS_NO_PORT`: asked for and supported.
    pub fn bind_address_no_port(&self) -> bool {
        self.inner.no_port
    }

    /// The per-socket ephemeral port range, if one is set.
    pub fn local_port_range(&self) -> Option<RangeInclusive<u16>> {
        self.inner.port_range.map(|(lo, hi)| lo..=hi)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Dialer")
            .field("sources", &inner.sources)
            .field("strategy", &inner.strategy)
            .field("connect_timeout", &inner.connect_timeout)
            .field("nodelay", &inner.nodelay)
            .field("keepalive", &inner.keepalive)
            .field("bind_address_no_port", &inner.no_port)
            .field("local_port_range", &self.local_port_range())
            .field("max_attempts", &inner.max_attempts)
            .field("fell_back", &inner.fell_back)
            .finish_non_exhaustive()
    }
}

fn check_port_range(range: &RangeInclusive<u16>) -> Result<(u16, u16), ConfigError> {
    let (lo, hi) = (*range.start(), *range.end());
    if lo > hi {
        return Err(ConfigError::new(
            "local_port_range",
            format!("{lo}..={hi} is empty: the low port is above the high port"),
        ));
    }
    if lo == 0 {
        return Err(ConfigError::new(
            "local_port_range",
            "port 0 is not an ephemeral port; start the range at 1 or above",
        ));
    }
    // The kernel applies each bound only if it lies within the system range, and silently
    // ignores it otherwise. Refuse instead of letting the setting do nothing.
    if let Ok(system) = ports::local_port_range()
        && !(system.contains(&lo) && system.contains(&hi))
    {
        return Err(ConfigError::new(
            "local_port_range",
            format!(
                "{lo}..={hi} is not within net.ipv4.ip_local_port_range ({}-{}), so the \
                 kernel would ignore it; pick ports inside that range",
                system.start(),
                system.end()
            ),
        ));
    }
    Ok((lo, hi))
}

struct ProbedOptions {
    no_port: bool,
}

/// Checks that the OS has the socket options asked for.
fn probe_options(
    sources: &SourceSet,
    no_port: bool,
    port_range: Option<(u16, u16)>,
) -> Result<ProbedOptions, ConfigError> {
    let domain =
        if sources.class(Class::V4Loopback).len() > 0 || sources.class(Class::V4Other).len() > 0 {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| {
        ConfigError::new("sources", "could not create a socket to probe the platform")
            .with_source(e)
    })?;
    let no_port = no_port
        && match sockopt::set_bind_address_no_port(&socket, true) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "IP_BIND_ADDRESS_NO_PORT is unavailable; binding without it");
                false
            }
        };
    if let Some((lo, hi)) = port_range {
        sockopt::set_local_port_range(&socket, lo, hi).map_err(|e| {
            ConfigError::new(
                "local_port_range",
                "this OS does not support IP_LOCAL_PORT_RANGE (Linux 6.3+); leave it unset",
            )
            .with_source(e)
        })?;
    }
    Ok(ProbedOptions { no_port })
}

/// Binds a few members of the set to check that the host routes them, and applies the fallback
/// policy if it does not. Sends no packet.
///
/// `bind` binds one address without connecting; tests pass a stand-in for platforms that do not
/// route all of 127.0.0.0/8.
fn probe_routes(
    sources: SourceSet,
    fallback: Fallback,
    bind: impl Fn(IpAddr) -> io::Result<()>,
) -> Result<(SourceSet, bool), ConfigError> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for class in [Class::V4Loopback, Class::V4Other, Class::V6Other] {
        let blocks = sources.class(class);
        let len = blocks.len();
        // The first two, middle and last members: enough to catch a platform that routes only
        // 127.0.0.1 (then 127.0.0.2, the usual first alias, is named), or only a few aliases of
        // a wide block.
        let mut probes: Vec<IpAddr> = [0, 1, len / 2, len.saturating_sub(1)]
            .into_iter()
            .filter_map(|i| blocks.get(i))
            .filter(|&ip| ip != localhost)
            .collect();
        probes.dedup();
        for ip in probes {
            let Err(e) = bind(ip) else {
                continue;
            };
            let unroutable = e.raw_os_error() == Some(libc::EADDRNOTAVAIL);
            if !unroutable {
                return Err(ConfigError::new(
                    "sources",
                    format!("could not probe source address {ip}"),
                )
                .with_source(e));
            }
            if class != Class::V4Loopback {
                return Err(ConfigError::new(
                    "sources",
                    format!("{ip} is not an address of this host; list only assigned addresses"),
                )
                .with_source(e));
            }
            return match fallback {
                Fallback::Fail => Err(ConfigError::new(
                    "sources",
                    format!(
                        "this host does not route {ip}: only some loopback addresses are \
                         configured (macOS routes only 127.0.0.1 by default); add aliases, e.g. \
                         `sudo ifconfig lo0 alias {ip} up` for each source, or use \
                         Fallback::Localhost"
                    ),
                )
                .with_source(e)),
                Fallback::Localhost => {
                    tracing::warn!(
                        unroutable = %ip,
                        sources = %sources,
                        "this host does not route the loopback source set; dialing from \
                         127.0.0.1 alone, which has one address's ports (about 28,000) instead \
                         of a port range per source. On macOS add aliases with \
                         `sudo ifconfig lo0 alias <addr> up`."
                    );
                    let only_localhost = SourceSet::from_addrs([localhost])?;
                    let fallback = sources.with_class_from(Class::V4Loopback, &only_localhost);
                    Ok((fallback, true))
                }
            };
        }
    }
    Ok((sources, false))
}

/// A non-blocking TCP socket for `target`'s family: one syscall where the OS takes
/// `SOCK_NONBLOCK` at creation, two elsewhere.
fn new_nonblocking_socket(target: SocketAddr) -> io::Result<Socket> {
    let domain = Domain::for_address(target);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}

fn probe_bind(ip: IpAddr, no_port: bool) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        Type::STREAM,
        None,
    )?;
    if no_port {
        // Binds the address without reserving a port, so the probe works even while the
        // address is out of ports.
        sockopt::set_bind_address_no_port(&socket, true)?;
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that routes only 127.0.0.1 and ::1, as macOS does without aliases.
    fn macos_like(ip: IpAddr) -> io::Result<()> {
        if ip.is_loopback() && ip != IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)) && ip.is_ipv4() {
            Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
        } else {
            Ok(())
        }
    }

    #[test]
    fn unroutable_loopback_falls_back_to_localhost_by_default() {
        let (sources, fell_back) =
            probe_routes(SourceSet::loopback(), Fallback::Localhost, macos_like).unwrap();
        assert!(fell_back);
        assert_eq!(sources.len(), 1);
        assert_eq!(sources.get(0), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn fallback_keeps_ipv6_members() {
        let set: SourceSet = "127.0.0.0/24, ::1".parse().unwrap();
        let (sources, fell_back) = probe_routes(set, Fallback::Localhost, macos_like).unwrap();
        assert!(fell_back);
        assert_eq!(sources.to_string(), "127.0.0.1, ::1");
    }

    #[test]
    fn unroutable_loopback_fails_under_fallback_fail_and_says_how_to_add_aliases() {
        let err = probe_routes(SourceSet::loopback(), Fallback::Fail, macos_like).unwrap_err();
        assert_eq!(err.option(), "sources");
        let text = err.to_string();
        assert!(text.contains("does not route 127.0.0.2"), "{text}");
        assert!(
            text.contains("sudo ifconfig lo0 alias 127.0.0.2 up"),
            "{text}"
        );
        assert!(text.contains("Fallback::Localhost"), "{text}");
    }

    #[test]
    fn localhost_alone_needs_no_probe() {
        let set: SourceSet = "127.0.0.1".parse().unwrap();
        let (sources, fell_back) = probe_routes(set.clone(), Fallback::Fail, macos_like).unwrap();
        assert!(!fell_back);
        assert_eq!(sources, set);
    }

    #[test]
    fn other_probe_errors_are_reported_not_fallen_back_from() {
        let emfile = |_| Err(io::Error::from_raw_os_error(libc::EMFILE));
        let err = probe_routes(SourceSet::loopback(), Fallback::Localhost, emfile).unwrap_err();
        assert_eq!(err.option(), "sources");
        assert!(err.to_string().contains("could not probe"), "{err}");
    }
}
