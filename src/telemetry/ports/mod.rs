//! The port budget: how many ephemeral ports each source address has left towards a target.
//!
//! Every connection to one target holds a (source address, source port) pair until well after
//! it closes (about 60 s in TIME_WAIT). [`snapshot`] reads the kernel's socket tables
//! (`/proc/net/tcp` and `/proc/net/tcp6`), groups the sockets to a target by source address and
//! state, and compares the busiest source with the ephemeral port range, so saturation shows
//! before the tipping point rather than after it.
//!
//! ```
//! # fn demo() -> std::io::Result<()> {
//! let snap = multiloop::ports::snapshot("127.0.0.1:11211".parse().unwrap(), None)?;
//! println!("{}", snap.summary()); // e.g. "127.32.0.1: 28,190 of 28,232 ports in use (28,180 TIME_WAIT)"
//! if snap.utilization() > 0.8 {
//!     eprintln!("close to running out of ports");
//! }
//! # Ok(())
//! # }
//! # demo().ok();
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

#[cfg(target_os = "linux")]
mod diag;
mod proc;
mod tally;

use tally::Tally;

#[doc(hidden)]
pub use proc::parse_proc_net_tcp;

/// The system's ephemeral port range, `net.ipv4.ip_local_port_range`, inclusive.
///
/// Every source address has this many ports towards one target (28,232 by default on Linux).
///
/// # Errors
///
/// The error from reading `/proc/sys/net/ipv4/ip_local_port_range`, or
/// [`io::ErrorKind::InvalidData`] when its contents are not two ports; on platforms without it,
/// [`io::ErrorKind::Unsupported`].
pub fn local_port_range() -> io::Result<RangeInclusive<u16>> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
        parse_port_range(&text)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the ephemeral port range is read from /proc on Linux only",
        ))
    }
}

fn parse_port_range(text: &str) -> io::Result<RangeInclusive<u16>> {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next(), ports.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Ok(lo..=hi),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ip_local_port_range holds {text:?}, not two ports"),
        )),
    }
}

/// The range the kernel uses for a socket with a per-socket `IP_LOCAL_PORT_RANGE`: each bound
/// applies only if it lies within the system range.
pub(crate) fn effective_range(
    system: &RangeInclusive<u16>,
    socket: Option<&RangeInclusive<u16>>,
) -> RangeInclusive<u16> {
    let (mut lo, mut hi) = (*system.start(), *system.end());
    if let Some(r) = socket {
        if system.contains(r.start()) {
            lo = *r.start();
        }
        if system.contains(r.end()) {
            hi = *r.end();
        }
    }
    lo..=hi
}

/// A TCP state, as the kernel's socket tables number it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TcpState {
    /// `ESTABLISHED` (1).
    Established,
    /// `TIME_WAIT` (6): closed, holding its pair for about 60 s.
    TimeWait,
    /// `LISTEN` (10).
    Listen,
    /// Any other state: connecting, closing, `FIN_WAIT`, `CLOSE_WAIT`, …
    Other(u8),
}

/// The kernel's names of its TCP states, by number (`include/net/tcp_states.h`).
const STATE_NAMES: [&str; 13] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

impl TcpState {
    pub(super) fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x06 => TcpState::TimeWait,
            0x0A => TcpState::Listen,
            other => TcpState::Other(other),
        }
    }

    /// The kernel's number for the state.
    pub fn code(self) -> u8 {
        match self {
            TcpState::Established => 0x01,
            TcpState::TimeWait => 0x06,
            TcpState::Listen => 0x0A,
            TcpState::Other(code) => code,
        }
    }

    /// The kernel's name for the state, such as `CLOSE_WAIT`; `?` for a number it does not
    /// define.
    pub fn name(self) -> &'static str {
        STATE_NAMES
            .get(usize::from(self.code()))
            .copied()
            .unwrap_or("?")
    }
}

/// One socket of the kernel's tables: a row of `/proc/net/tcp` or a sock_diag record. Public
/// for the fuzz target and the census bench only.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    /// The local address and port.
    pub local: SocketAddr,
    /// The remote address and port.
    pub remote: SocketAddr,
    /// The TCP state.
    pub state: TcpState,
}

/// Sockets from one source address to the target, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceUsage {
    /// The source address.
    pub source: Option<IpAddr>,
    /// Sockets in `ESTABLISHED`.
    pub established: usize,
    /// Sockets in `TIME_WAIT`.
    pub time_wait: usize,
    /// Sockets in any other state.
    pub other: usize,
}

impl SourceUsage {
    /// Ports this source holds towards the target: sockets in any state.
    pub fn total(&self) -> usize {
        self.established + self.time_wait + self.other
    }
}

/// The port budget towards one target, from [`snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortSnapshot {
    /// The target.
    pub target: SocketAddr,
    /// `net.ipv4.ip_local_port_range`.
    pub system_range: RangeInclusive<u16>,
    /// The per-socket `IP_LOCAL_PORT_RANGE`, if the dialer sets one.
    pub socket_range: Option<RangeInclusive<u16>>,
    /// Sockets to the target by source address, busiest first: only those whose local port is
    /// in the effective range (the per-socket range within the system's), the ports the budget
    /// is made of.
    pub sources: Vec<SourceUsage>,
    /// Sockets to the target from local ports outside the effective range (explicit binds,
    /// other clients' ranges): they use none of its ports, so they are counted apart.
    pub outside_range: usize,
    /// The counted sockets (those in `sources`) by TCP state, busiest state first, such as
    /// `[(TimeWait, 28190), (Established, 10), (Other(8), 2)]`: `CLOSE_WAIT` piling up means
    /// the client does not close what the server closed; `SYN_SENT`, a server not accepting.
    pub states: Vec<(TcpState, usize)>,
    /// How the sockets were counted.
    pub census: Census,
}

impl PortSnapshot {
    /// Builds a snapshot from socket table rows. Public for the fuzz target and the census
    /// bench only.
    #[doc(hidden)]
    pub fn from_entries(
        target: SocketAddr,
        system_range: RangeInclusive<u16>,
        socket_range: Option<RangeInclusive<u16>>,
        entries: impl IntoIterator<Item = TcpEntry>,
    ) -> PortSnapshot {
        let mut tally = Tally::new(target, &system_range, socket_range.as_ref());
        for e in entries {
            tally.add(e);
        }
        tally.finish(system_range, socket_range, Census::Entries)
    }

    /// The ephemeral ports one source address has towards the target.
    pub fn ports_per_source(&self) -> usize {
        let r = effective_range(&self.system_range, self.socket_range.as_ref());
        usize::from(*r.end() - *r.start()) + 1
    }

    /// The source holding the most ports towards the target.
    pub fn busiest(&self) -> Option<&SourceUsage> {
        self.sources.first()
    }

    /// The busiest source's share of its ports, from 0.0 to 1.0. Past 1.0 is impossible; near it,
    /// the next dial from that source fails.
    pub fn utilization(&self) -> f64 {
        self.busiest()
            .map_or(0.0, |b| b.total() as f64 / self.ports_per_source() as f64)
    }

    /// All sockets to the target, in every state.
    pub fn total(&self) -> usize {
        self.sources.iter().map(SourceUsage::total).sum()
    }

    /// All sockets to the target in `TIME_WAIT`.
    pub fn time_wait(&self) -> usize {
        self.sources.iter().map(|s| s.time_wait).sum()
    }

    /// All sockets to the target in `ESTABLISHED`.
    pub fn established(&self) -> usize {
        self.sources.iter().map(|s| s.established).sum()
    }

    /// One line on the busiest source, such as
    /// `127.32.0.1: 28,190 of 28,232 ports in use (28,180 TIME_WAIT, 10 ESTABLISHED)`.
    pub fn summary(&self) -> String {
        let Some(b) = self.busiest() else {
            return format!(
                "no sockets to {}; {} ports per source",
                self.target,
                thousands(self.ports_per_source())
            );
        };
        format!(
            "{}: {} of {} ports in use ({} TIME_WAIT, {} ESTABLISHED, {} other) towards {}",
            b.source.map_or_else(|| "?".to_string(), |s| s.to_string()),
            thousands(b.total()),
            thousands(self.ports_per_source()),
            thousands(b.time_wait),
            thousands(b.established),
            thousands(b.other),
            self.target,
        )
    }
}

impl fmt::Display for PortSnapshot {
    /// A table: the range, then each source's counts by state, busiest first (at most 20).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port budget towards {}: ip_local_port_range {}-{}",
            self.target,
            self.system_range.start(),
            self.system_range.end()
        )?;
        if let Some(r) = &self.socket_range {
            write!(f, ", per-socket range {}-{}", r.start(), r.end())?;
        }
        writeln!(
            f,
            " ({} ports per source)",
            thousands(self.ports_per_source())
        )?;
        if !self.states.is_empty() {
            let states: Vec<String> = self
                .states
                .iter()
                .map(|(state, n)| format!("{} {}", state.name(), thousands(*n)))
                .collect();
            writeln!(f, "by state: {}", states.join(", "))?;
        }
        writeln!(
            f,
            "{:<40} {:>12} {:>10} {:>8} {:>8}",
            "source", "ESTABLISHED", "TIME_WAIT", "other", "used"
        )?;
        let per = self.ports_per_source() as f64;
        for s in self.sources.iter().take(20) {
            writeln!(
                f,
                "{:<40} {:>12} {:>10} {:>8} {:>7.1}%",
                s.source
                    .map_or_else(|| "?".to_string(), |ip| ip.to_string()),
                thousands(s.established),
                thousands(s.time_wait),
                thousands(s.other),
                100.0 * s.total() as f64 / per,
            )?;
        }
        if self.sources.len() > 20 {
            writeln!(f, "… and {} more sources", self.sources.len() - 20)?;
        }
        write!(
            f,
            "{} sources, {} sockets ({} TIME_WAIT); busiest at {:.1}%",
            self.sources.len(),
            thousands(self.total()),
            thousands(self.time_wait()),
            100.0 * self.utilization()
        )?;
        if self.outside_range > 0 {
            write!(
                f,
                "\n{} more from local ports outside the range (not counted)",
                thousands(self.outside_range)
            )?;
        }
        Ok(())
    }
}

/// Counts the sockets towards `target` and returns its port budget. `socket_range` is the
/// dialer's per-socket range, if it sets one
/// ([`Dialer::local_port_range`](crate::Dialer::local_port_range)).
///
/// On Linux it asks the kernel through `NETLINK_SOCK_DIAG` with a filter on the destination,
/// as `ss` does: the kernel returns only the sockets towards the target, so the cost follows
/// them, not the host's whole table ([`Census::SockDiag`]). Where netlink is refused it reads
/// `/proc/net/tcp` and `/proc/net/tcp6` instead ([`Census::ProcNet`]), about a microsecond per
/// socket on the host. It blocks: call it from a blocking thread, once every few seconds.
///
/// # Errors
///
/// The error from reading `/proc` when netlink is refused too; [`io::ErrorKind::Unsupported`]
/// off Linux.
pub fn snapshot(
    target: SocketAddr,
    socket_range: Option<RangeInclusive<u16>>,
) -> io::Result<PortSnapshot> {
    let system = local_port_range()?;
    #[cfg(target_os = "linux")]
    {
        let mut tally = Tally::new(target, &system, socket_range.as_ref());
        if diag::count(&mut tally).is_ok() {
            return Ok(tally.finish(system, socket_range, Census::SockDiag));
        }
    }
    let mut tally = Tally::new(target, &system, socket_range.as_ref());
    proc::count(&mut tally)?;
    Ok(tally.finish(system, socket_range, Census::ProcNet))
}

/// How a [`PortSnapshot`] was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Census {
    /// Through `NETLINK_SOCK_DIAG`, filtered in the kernel.
    SockDiag,
    /// From `/proc/net/tcp` and `/proc/net/tcp6`.
    ProcNet,
    /// From socket table rows given to the snapshot directly (the fuzz target and the census
    /// bench).
    Entries,
}

/// `28232` as `28,232`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
