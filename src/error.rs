//! Typed errors: what went wrong, on which addresses, and what to change.
//!
//! [`DialError`] comes from [`Dialer::connect`](crate::Dialer::connect); match on
//! [`DialError::kind`]. [`ConfigError`] comes from the builders and names the option at fault.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

mod config;

pub use config::ConfigError;
pub(crate) use config::{check_count, check_duration};

/// What kind of failure a [`DialError`] is. Callers match on this, not on OS error numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialErrorKind {
    /// Every source address tried had no free ephemeral port towards the target: `EADDRNOTAVAIL`
    /// from `connect`, or `EADDRINUSE` from `bind`. The dialer has already retried on other
    /// sources and quarantined the exhausted ones.
    PortsExhausted,
    /// The target actively refused the connection (`ECONNREFUSED`): nothing listens there.
    Refused,
    /// The connection did not complete within the connect timeout.
    Timeout,
    /// The process or the system is out of file descriptors (`EMFILE` or `ENFILE`). This is not
    /// port exhaustion: more source addresses will not help, fewer concurrent sockets will.
    FdLimit,
    /// The sources cannot reach the target: a loopback source with a non-loopback target, or
    /// sources of the wrong address family. Detected before any socket is created.
    Mismatch,
    /// Any other I/O error.
    Io,
    /// The target's host name did not resolve to an address (the name lookup failed or found
    /// nothing). [`DialError::host`] names the host when the dialer knew it.
    Resolve,
}

impl DialErrorKind {
    /// All kinds, in declaration order.
    pub const ALL: [DialErrorKind; 7] = [
        DialErrorKind::PortsExhausted,
        DialErrorKind::Refused,
        DialErrorKind::Timeout,
        DialErrorKind::FdLimit,
        DialErrorKind::Mismatch,
        DialErrorKind::Io,
        DialErrorKind::Resolve,
    ];

    /// A short, stable, snake_case name, for metrics labels and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            DialErrorKind::PortsExhausted => "ports_exhausted",
            DialErrorKind::Refused => "refused",
            DialErrorKind::Timeout => "timeout",
            DialErrorKind::FdLimit => "fd_limit",
            DialErrorKind::Mismatch => "mismatch",
            DialErrorKind::Io => "io",
            DialErrorKind::Resolve => "resolve",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Classifies an OS error. `at_bind` tells whether it came from `bind` rather than `connect`:
    /// `EADDRNOTAVAIL` means "out of ports" from `connect` but "not a local address" from `bind`.
    pub(crate) fn classify(err: &io::Error, at_bind: bool) -> DialErrorKind {
        match err.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => return DialErrorKind::FdLimit,
            Some(libc::EADDRINUSE) => return DialErrorKind::PortsExhausted,
            Some(libc::EADDRNOTAVAIL) if !at_bind => return DialErrorKind::PortsExhausted,
            _ => {}
        }
        match err.kind() {
            io::ErrorKind::ConnectionRefused => DialErrorKind::Refused,
            io::ErrorKind::TimedOut => DialErrorKind::Timeout,
            _ => DialErrorKind::Io,
        }
    }

    fn advice(self) -> &'static str {
        match self {
            DialErrorKind::PortsExhausted => {
                "each (source address, port) pair stays in TIME_WAIT for about 60 s after close; \
                 spread dials over more sources (SourceSet::loopback()), reuse connections through \
                 a Pool instead of dialing per request, or widen net.ipv4.ip_local_port_range"
            }
            DialErrorKind::Refused => {
                "nothing listens on the target: check that the server runs and the address is right"
            }
            DialErrorKind::Timeout => {
                "the server did not complete the handshake in time: it is stalled or its accept \
                 backlog is full; raise DialerBuilder::connect_timeout only if it is slow by design"
            }
            DialErrorKind::FdLimit => {
                "the process is out of file descriptors: bound concurrent connections (a Pool does), \
                 or raise RLIMIT_NOFILE (ulimit -n); more source addresses will not help"
            }
            DialErrorKind::Mismatch => {
                "dial the target with sources of its own family and scope: loopback sources reach \
                 only loopback targets"
            }
            DialErrorKind::Resolve => {
                "check the host name's spelling and that this host's resolver knows it \
                 (/etc/hosts, /etc/resolv.conf; `getent hosts NAME` asks the same way), or give \
                 the target as an address, such as 127.0.0.1:11211"
            }
            DialErrorKind::Io => "",
        }
    }
}

impl fmt::Display for DialErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DialErrorKind::PortsExhausted => "ports exhausted",
            DialErrorKind::Refused => "connection refused",
            DialErrorKind::Timeout => "connect timed out",
            DialErrorKind::FdLimit => "file descriptor limit reached",
            DialErrorKind::Mismatch => "source/target mismatch",
            DialErrorKind::Io => "I/O error",
            DialErrorKind::Resolve => "name lookup failed",
        })
    }
}

/// A failed dial: its [kind](DialErrorKind), the target, the source addresses tried, how many
/// attempts were made, and the underlying [`io::Error`].
///
/// The `Display` output says what happened, where, and what to change. `DialError` converts into
/// an [`io::Error`] (keeping itself as the inner error), so code written against
/// `TcpStream::connect` can use `?` unchanged.
///
/// ```
/// # async fn demo() {
/// match multiloop::connect("127.0.0.1:1").await {
///     Ok(_) => {}
///     Err(e) if e.kind() == multiloop::DialErrorKind::Refused => eprintln!("server down: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
pub struct DialError(Box<Failed>);

/// What a [`DialError`] holds, behind one box: results that carry a `DialError` (a pool's
/// checkout among them) stay small on their common, successful path.
#[derive(Debug)]
struct Failed {
    kind: DialErrorKind,
    target: Option<SocketAddr>,
    sources: Vec<IpAddr>,
    attempts: u32,
    error: io::Error,
    /// The `host:port` looked up, for [`DialErrorKind::Resolve`].
    host: Option<String>,
}

impl fmt::Debug for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialError")
            .field("kind", &self.0.kind)
            .field("target", &self.0.target)
            .field("host", &self.0.host)
            .field("sources", &self.0.sources)
            .field("attempts", &self.0.attempts)
            .field("error", &self.0.error)
            .finish()
    }
}

impl DialError {
    pub(crate) fn new(
        kind: DialErrorKind,
        target: Option<SocketAddr>,
        sources: Vec<IpAddr>,
        attempts: u32,
        error: io::Error,
    ) -> Self {
        DialError(Box::new(Failed {
            kind,
            target,
            sources,
            attempts,
            error,
            host: None,
        }))
    }

    /// A name lookup that failed or found no address; `host` is `host:port` when known.
    pub(crate) fn resolve(host: Option<String>, error: io::Error) -> Self {
        let mut e = DialError::new(DialErrorKind::Resolve, None, Vec::new(), 0, error);
        e.0.host = host;
        e
    }

    /// A dial that could not start because the dialer could not be built.
    pub(crate) fn from_config(err: ConfigError) -> Self {
        let kind = match err.io_source() {
            Some(io) => match DialErrorKind::classify(io, true) {
                DialErrorKind::FdLimit => DialErrorKind::FdLimit,
                _ => DialErrorKind::Io,
            },
            None => DialErrorKind::Io,
        };
        DialError::new(kind, None, Vec::new(), 0, io::Error::other(err))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DialErrorKind {
        self.0.kind
    }

    /// The target address, or `None` when the name did not resolve to any address.
    pub fn target(&self) -> Option<SocketAddr> {
        self.0.target
    }

    /// The `host:port` whose lookup failed, for [`DialErrorKind::Resolve`]: set when a pool's
    /// [`Target::Host`](crate::Target::Host) or the tower service's URI gave the name; `None`
    /// from [`Dialer::connect`](crate::Dialer::connect), whose caller holds the name.
    pub fn host(&self) -> Option<&str> {
        self.0.host.as_deref()
    }

    /// The source addresses tried, in order. For [`DialErrorKind::PortsExhausted`] without any
    /// attempt, these are the quarantined addresses that left nothing to try.
    pub fn sources(&self) -> &[IpAddr] {
        &self.0.sources
    }

    /// How many sockets were tried: 0 when the dial failed before creating one (a mismatch, or
    /// every source quarantined).
    pub fn attempts(&self) -> u32 {
        self.0.attempts
    }

    /// The underlying I/O error of the last attempt.
    pub fn io_error(&self) -> &io::Error {
        &self.0.error
    }

    /// The `io::ErrorKind` this error maps to when converted into an [`io::Error`].
    fn io_kind(&self) -> io::ErrorKind {
        match self.0.kind {
            DialErrorKind::PortsExhausted => io::ErrorKind::AddrNotAvailable,
            DialErrorKind::Refused => io::ErrorKind::ConnectionRefused,
            DialErrorKind::Timeout => io::ErrorKind::TimedOut,
            DialErrorKind::Mismatch => io::ErrorKind::InvalidInput,
            DialErrorKind::FdLimit | DialErrorKind::Io | DialErrorKind::Resolve => {
                self.0.error.kind()
            }
        }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind)?;
        if let Some(host) = &self.0.host {
            write!(f, " for {host}")?;
        }
        if let Some(target) = self.0.target {
            write!(f, " dialing {target}")?;
        }
        if !self.0.sources.is_empty() {
            f.write_str(" from ")?;
            for (i, src) in self.0.sources.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{src}")?;
            }
        }
        match self.0.attempts {
            0 => {}
            1 => f.write_str(" (1 attempt)")?,
            n => write!(f, " ({n} attempts)")?,
        }
        write!(f, ": {}", self.0.error)?;
        let advice = self.0.kind.advice();
        if !advice.is_empty() {
            write!(f, "; {advice}")?;
        }
        Ok(())
    }
}

/// The OS error is part of `Display` (it says what happened), so `source()` is `None`: a chain
/// printer shows it once. [`DialError::io_error`] gives it to code.
impl StdError for DialError {}

impl From<DialError> for io::Error {
    fn from(err: DialError) -> io::Error {
        io::Error::new(err.io_kind(), err)
    }
}

/// Which of a pool's timeouts fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Waiting for a free slot in the pool ([`PoolBuilder::wait_timeout`](crate::PoolBuilder::wait_timeout)).
    Wait,
    /// Dialing and setting up a new connection ([`PoolBuilder::create_timeout`](crate::PoolBuilder::create_timeout)).
    Create,
    /// Checking an idle connection before handing it out ([`PoolBuilder::check_timeout`](crate::PoolBuilder::check_timeout)).
    Check,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Wait => "wait",
            TimeoutKind::Create => "create",
            TimeoutKind::Check => "check",
        })
    }
}

/// Why [`Pool::get`](crate::Pool::get) gave no connection. `E` is the connector's error type.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError<E> {
    /// A timeout fired: all connections stayed busy for the wait timeout, or a new connection
    /// took longer than the create timeout.
    Timeout(TimeoutKind),
    /// The wait queue is full ([`PoolBuilder::max_waiters`](crate::PoolBuilder::max_waiters)):
    /// the call failed at once instead of queueing. Shed load, or bound the caller's fan-out.
    Saturated,
    /// The pool is paused ([`Pool::pause`](crate::Pool::pause)): a responder turned it off.
    Paused,
    /// The pool is closed ([`Pool::close`](crate::Pool::close)).
    Closed,
    /// A new connection could not be dialed. While the target refuses or stalls, every call
    /// gets the last dial error at once and a single probe dials.
    Dial(DialError),
    /// The connector failed to set up a dialed connection.
    Backend(E),
}

impl<E> PoolError<E> {
    /// A short, stable, snake_case name, for metrics labels and log fields.
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolError::Timeout(TimeoutKind::Wait) => "wait_timeout",
            PoolError::Timeout(TimeoutKind::Create) => "create_timeout",
            PoolError::Timeout(TimeoutKind::Check) => "check_timeout",
            PoolError::Saturated => "saturated",
            PoolError::Paused => "paused",
            PoolError::Closed => "closed",
            PoolError::Dial(_) => "dial",
            PoolError::Backend(_) => "backend",
        }
    }

    /// The dial error, if this is [`PoolError::Dial`].
    pub fn dial_error(&self) -> Option<&DialError> {
        match self {
            PoolError::Dial(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for PoolError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Timeout(TimeoutKind::Wait) => f.write_str(
                "timed out waiting for a pooled connection: for the wait timeout every \
                 connection stayed busy or was still being dialed, so more work arrives than \
                 max_size connections serve (or than max_concurrent_dials dials fill an empty \
                 pool); lower the callers' concurrency (Pool::fan_out's limit, a bulkhead), send \
                 fewer requests (memcached::get_many batches keys), or raise max_size (or \
                 max_concurrent_dials, or warm the pool up)",
            ),
            PoolError::Timeout(TimeoutKind::Create) => f.write_str(
                "timed out setting up a new connection: the server is slow to accept or to \
                 answer its handshake",
            ),
            PoolError::Timeout(TimeoutKind::Check) => {
                f.write_str("timed out checking an idle connection")
            }
            PoolError::Saturated => f.write_str(
                "pool saturated: max_waiters gets were already waiting, so this one was refused \
                 at once; the pool is shedding load it could not serve within the wait timeout",
            ),
            PoolError::Paused => f.write_str("pool paused: Pool::resume turns it back on"),
            PoolError::Closed => f.write_str("pool closed"),
            PoolError::Dial(e) => write!(f, "pool could not dial: {e}"),
            PoolError::Backend(e) => write!(f, "connection setup failed: {e}"),
        }
    }
}

/// `Dial` and `Backend` show their inner error in `Display`, so `source()` continues the chain
/// from the inner error's own source: each cause is printed once.
impl<E: StdError + 'static> StdError for PoolError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PoolError::Dial(e) => e.source(),
            PoolError::Backend(e) => e.source(),
            _ => None,
        }
    }
}

impl DialError {
    /// A copy for callers that fail fast on the same cause. `io::Error` is not `Clone`, so the
    /// copy keeps the OS error number when there is one and the message otherwise.
    pub(crate) fn duplicate(&self) -> DialError {
        let error = match self.0.error.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.0.error.kind(), self.0.error.to_string()),
        };
        let mut copy = DialError::new(
            self.0.kind,
            self.0.target,
            self.0.sources.clone(),
            self.0.attempts,
            error,
        );
        copy.0.host.clone_from(&self.0.host);
        copy
    }
}
