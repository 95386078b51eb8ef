//! One dial to one target address: pick a source, open and bind a socket with the options
//! set, connect, and retry on another source when one is out of ports.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::TcpStream;

use super::dialer::Dialer;
use super::quarantine;
use super::sockopt;
use super::source::{Blocks, Class, Strategy};
use crate::error::{DialError, DialErrorKind};

/// Where a dial may take its source from.
pub(super) enum Candidates<'a> {
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
    /// Dials one target address before `deadline`, from `pinned` if given, otherwise from a
    /// candidate source, retrying on another source when one is out of ports.
    pub(super) async fn connect_addr(
        &self,
        target: SocketAddr,
        pinned: Option<IpAddr>,
        deadline: Instant,
    ) -> Result<TcpStream, DialError> {
        let inner = &*self.inner;
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        let candidates = match pinned {
            Some(ip) => Candidates::Only(ip),
            None => self.candidates(target)?,
        };
        let mut tried: Vec<IpAddr> = Vec::new();
        let mut last_exhausted: Option<io::Error> = None;
        while tried.len() < inner.opts.max_attempts as usize {
            let Some(source) = self.pick(&candidates, &tried) else {
                break;
            };
            if !tried.is_empty() {
                inner.counters.record_retry();
            }
            tried.push(source);
            match self.attempt(source, target, deadline).await {
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
                        format!("no connection within {:?}", inner.opts.connect_timeout),
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

    /// The sources that can reach `target`: members of its family and scope.
    pub(super) fn candidates(&self, target: SocketAddr) -> Result<Candidates<'_>, DialError> {
        let class = Class::of(target.ip());
        let blocks = self.inner.opts.sources.class(class);
        if blocks.len() > 0 {
            return Ok(Candidates::Set(blocks));
        }
        if class == Class::V6Loopback {
            return Ok(Candidates::Only(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        let sources = &self.inner.opts.sources;
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
        let start = match inner.opts.strategy {
            Strategy::RoundRobin => inner.next.fetch_add(1, Ordering::Relaxed) % len,
            Strategy::Random => rand::random_range(0..len),
        };
        let limit = len.min((quarantine::CAPACITY + tried.len() + 1) as u64);
        let now = Instant::now();
        (0..limit)
            .filter_map(|i| candidates.get((start + i) % len))
            .find(|&ip| !tried.contains(&ip) && !inner.quarantine.contains(ip, now))
    }

    /// One socket: open, bind, connect, before `deadline`. Errors carry their classified kind;
    /// `Err(Elapsed)` is the deadline.
    ///
    /// On loopback the kernel runs the whole handshake inside `connect` (the server's side of
    /// it included), so the socket is usually connected when the call returns (`getpeername`
    /// answers): then the stream is handed over at once, with no timer and no wait on the
    /// runtime. A dial that has to wait gets the timer and waits for the runtime's I/O driver
    /// to report the socket writable, as tokio's own connect does.
    ///
    /// One connected dial in [`PACE`] waits on the driver all the same. A loop of dials that
    /// never waits on the driver outruns an acceptor on the same runtime, whose events that
    /// driver delivers: on busy CPUs its listen queue overflowed and dials stalled on
    /// retransmitted SYNs, a second each (4,000 dials took 7-28 s against 0.14-0.44 s for
    /// tokio's connect; a yield, as tokio's cooperative budget makes, did not help, since a
    /// worker that yields need not be the one that turns the driver). A wait on the driver
    /// cannot end before the driver's next turn, which also wakes the acceptor.
    async fn attempt(
        &self,
        source: IpAddr,
        target: SocketAddr,
        deadline: Instant,
    ) -> Result<Result<TcpStream, (DialErrorKind, io::Error)>, tokio::time::error::Elapsed> {
        let fail = |err: io::Error| (DialErrorKind::classify(&err, false), err);
        let socket = match self.open(source, target) {
            Ok(socket) => socket,
            Err((err, at_bind)) => return Ok(Err((DialErrorKind::classify(&err, at_bind), err))),
        };
        if let Err(err) = socket.connect(&target.into())
            && !in_progress(&err)
        {
            return Ok(Err(fail(err)));
        }
        // `getpeername` answers only once the handshake is done.
        let connected = socket.peer_addr().is_ok();
        let stream = match TcpStream::from_std(socket.into()) {
            Ok(stream) => stream,
            Err(err) => return Ok(Err(fail(err))),
        };
        let ready = if connected {
            let n = self.inner.connected_at_once.fetch_add(1, Ordering::Relaxed);
            if !(n + 1).is_multiple_of(PACE) {
                return Ok(Ok(stream));
            }
            // Ready for certain (the handshake is done): no timer.
            stream.writable().await
        } else {
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), stream.writable())
                .await?
        };
        Ok(match ready.and_then(|()| stream.take_error()) {
            Err(err) | Ok(Some(err)) => Err(fail(err)),
            Ok(None) => Ok(stream),
        })
    }

    /// Creates and binds a non-blocking socket. The flag says whether the error came from bind.
    fn open(&self, source: IpAddr, target: SocketAddr) -> Result<Socket, (io::Error, bool)> {
        let inner = &*self.inner;
        let before_bind = |e| (e, false);
        let socket = new_nonblocking_socket(target).map_err(before_bind)?;
        if inner.opts.nodelay {
            socket.set_tcp_nodelay(true).map_err(before_bind)?;
        }
        if let Some(idle) = inner.opts.keepalive {
            socket
                .set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))
                .map_err(before_bind)?;
        }
        if inner.opts.no_port {
            sockopt::set_bind_address_no_port(&socket, true).map_err(before_bind)?;
        }
        if let Some((lo, hi)) = inner.opts.port_range {
            sockopt::set_local_port_range(&socket, lo, hi).map_err(before_bind)?;
        }
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| (e, true))?;
        Ok(socket)
    }
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

/// One dial in this many, among those whose handshake finished inside `connect`, waits on the
/// runtime's I/O driver: a loop of dials waits for a turn of the driver every `PACE` dials, so
/// a listener on the same runtime sees at most about `PACE` new connections per turn.
const PACE: u64 = 8;

/// Whether a non-blocking `connect` has started rather than failed.
fn in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(libc::EINPROGRESS)
    }
    #[cfg(not(unix))]
    {
        err.kind() == io::ErrorKind::WouldBlock
    }
}
