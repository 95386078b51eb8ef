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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

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

impl TcpState {
    fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x06 => TcpState::TimeWait,
            0x0A => TcpState::Listen,
            other => TcpState::Other(other),
        }
    }
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    /// The local address and port.
    pub local: SocketAddr,
    /// The remote address and port.
    pub remote: SocketAddr,
    /// The TCP state.
    pub state: TcpState,
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`. The header and malformed lines are
/// skipped, so the parser never fails and never panics.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TcpEntry> {
    // "  0: 0100007F:2B67 0100007F:9C40 06 00000000:00000000 03:00000A4B 00000000 ..."
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    Some(TcpEntry {
        local,
        remote,
        state: TcpState::from_code(state),
    })
}

/// `0100007F:2B67` (IPv4) or 32 hex digits then `:port` (IPv6). Addresses are printed as 32-bit
/// words in host byte order.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(host_order_bytes(
            u32::from_str_radix(addr, 16).ok()?,
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let hex = addr.get(i * 8..i * 8 + 8)?;
                let w = u32::from_str_radix(hex, 16).ok()?;
                chunk.copy_from_slice(&host_order_bytes(w));
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    // IPv4 addresses in tcp6 appear as ::ffff:a.b.c.d.
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// The bytes of a word the kernel printed with `%08X` from memory in host byte order.
fn host_order_bytes(w: u32) -> [u8; 4] {
    if cfg!(target_endian = "little") {
        w.to_le_bytes()
    } else {
        w.to_be_bytes()
    }
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
    /// Sockets to the target by source address, busiest first.
    pub sources: Vec<SourceUsage>,
}

impl PortSnapshot {
    /// Builds a snapshot from socket table rows.
    pub fn from_entries(
        target: SocketAddr,
        system_range: RangeInclusive<u16>,
        socket_range: Option<RangeInclusive<u16>>,
        entries: impl IntoIterator<Item = TcpEntry>,
    ) -> PortSnapshot {
        let mut tally = Tally::new(target);
        for e in entries {
            tally.add(e);
        }
        tally.finish(system_range, socket_range)
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
        )
    }
}

/// Sockets to one target by source address, counted as rows go by: memory grows with the
/// target's sockets, not with the host's.
struct Tally {
    target: SocketAddr,
    by_source: std::collections::HashMap<IpAddr, SourceUsage>,
    /// The kernel prints its tables a page at a time and resumes by position, so under churn
    /// one socket can appear twice. A local address is one socket towards the target: count it
    /// once.
    seen: std::collections::HashSet<SocketAddr>,
}

impl Tally {
    fn new(target: SocketAddr) -> Tally {
        Tally {
            target: SocketAddr::new(target.ip().to_canonical(), target.port()),
            by_source: Default::default(),
            seen: Default::default(),
        }
    }

    fn add(&mut self, e: TcpEntry) {
        if e.remote != self.target || e.state == TcpState::Listen || !self.seen.insert(e.local) {
            return;
        }
        let usage = self
            .by_source
            .entry(e.local.ip())
            .or_insert_with(|| SourceUsage {
                source: Some(e.local.ip()),
                ..SourceUsage::default()
            });
        match e.state {
            TcpState::Established => usage.established += 1,
            TcpState::TimeWait => usage.time_wait += 1,
            _ => usage.other += 1,
        }
    }

    fn finish(
        self,
        system_range: RangeInclusive<u16>,
        socket_range: Option<RangeInclusive<u16>>,
    ) -> PortSnapshot {
        let mut sources: Vec<SourceUsage> = self.by_source.into_values().collect();
        sources.sort_by(|a, b| b.total().cmp(&a.total()).then(a.source.cmp(&b.source)));
        PortSnapshot {
            target: self.target,
            system_range,
            socket_range,
            sources,
        }
    }
}

/// Reads the kernel's socket tables and returns the port budget towards `target`.
/// `socket_range` is the dialer's per-socket range, if it sets one
/// ([`Dialer::local_port_range`](crate::Dialer::local_port_range)).
///
/// The read costs about a microsecond per socket on the host, so call it once every few
/// seconds, not per request.
///
/// # Errors
///
/// The error from reading `/proc`; [`io::ErrorKind::Unsupported`] off Linux.
pub fn snapshot(
    target: SocketAddr,
    socket_range: Option<RangeInclusive<u16>>,
) -> io::Result<PortSnapshot> {
    use std::io::BufRead;

    let system = local_port_range()?;
    let mut tally = Tally::new(target);
    // Line by line: with a hundred thousand sockets in TIME_WAIT on the host, the tables are
    // tens of megabytes, and only the rows towards the target are kept.
    let mut line = String::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let file = match std::fs::File::open(table) {
            Ok(f) => f,
            // A host without IPv6 has no tcp6 table.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table.ends_with('6') => continue,
            Err(e) => return Err(e),
        };
        let mut reader = io::BufReader::with_capacity(64 * 1024, file);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            if let Some(entry) = parse_line(&line) {
                tally.add(entry);
            }
        }
    }
    Ok(tally.finish(system, socket_range))
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
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl() {
        assert_eq!(parse_port_range("32768\t60999\n").unwrap(), 32768..=60999);
        assert!(parse_port_range("60999 32768").is_err());
        assert!(parse_port_range("1").is_err());
        assert!(parse_port_range("1 2 3").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_live_range() {
        let range = local_port_range().unwrap();
        assert!(range.start() <= range.end());
    }

    #[test]
    fn effective_range_follows_the_kernel() {
        let system = 32768..=60999;
        assert_eq!(effective_range(&system, None), 32768..=60999);
        assert_eq!(
            effective_range(&system, Some(&(40000..=40049))),
            40000..=40049
        );
        assert_eq!(
            effective_range(&system, Some(&(1000..=40049))),
            32768..=40049
        );
        assert_eq!(
            effective_range(&system, Some(&(1000..=2000))),
            32768..=60999
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(28232), "28,232");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    /// Rows as a little-endian Linux host prints them.
    #[cfg(target_endian = "little")]
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2B67 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0120007F:9C40 0100007F:2B67 06 00000000:00000000 03:00000A4B 00000000     0        0 0 3 0000000000000000
   2: 0120007F:9C41 0100007F:2B67 06 00000000:00000000 03:00000A4B 00000000     0        0 0 3 0000000000000000
   3: 0120007F:9C42 0100007F:2B67 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 20 4 30 10 -1
   4: 0200007F:9C40 0100007F:2B67 08 00000000:00000000 00:00000000 00000000     0        0 8 1 0000000000000000 20 4 30 10 -1
   5: 0200007F:9C40 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 9 1 0000000000000000 20 4 30 10 -1
   garbage line
   6: 0200007F:ZZZZ 0100007F:2B67 01
";

    #[cfg(target_endian = "little")]
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:2B67 01 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0000000000000000FFFF00000300007F:9C40 0000000000000000FFFF00000100007F:2B67 06 00000000:00000000 00:00000000 00000000     0        0 1 1
";

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_fixture_rows() {
        let rows = parse_proc_net_tcp(TCP);
        assert_eq!(rows.len(), 6, "header and malformed lines are skipped");
        assert_eq!(rows[0].local, "127.0.0.1:11111".parse().unwrap());
        assert_eq!(rows[0].state, TcpState::Listen);
        assert_eq!(rows[1].local, "127.0.32.1:40000".parse().unwrap());
        assert_eq!(rows[1].remote, "127.0.0.1:11111".parse().unwrap());
        assert_eq!(rows[1].state, TcpState::TimeWait);
        assert_eq!(rows[4].state, TcpState::Other(8));

        let rows6 = parse_proc_net_tcp(TCP6);
        assert_eq!(rows6[0].local, "[::1]:40000".parse().unwrap());
        assert_eq!(rows6[0].state, TcpState::Established);
        assert_eq!(
            rows6[1].local,
            "127.0.0.3:40000".parse().unwrap(),
            "v4-mapped addresses are canonical"
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn groups_by_source_and_state() {
        let target: SocketAddr = "127.0.0.1:11111".parse().unwrap();
        let entries = parse_proc_net_tcp(TCP)
            .into_iter()
            .chain(parse_proc_net_tcp(TCP6));
        let snap = PortSnapshot::from_entries(target, 32768..=60999, Some(40000..=40003), entries);
        assert_eq!(snap.ports_per_source(), 4);
        let busiest = snap.busiest().unwrap();
        assert_eq!(busiest.source, Some("127.0.32.1".parse().unwrap()));
        assert_eq!(
            (busiest.established, busiest.time_wait, busiest.other),
            (1, 2, 0)
        );
        assert_eq!(snap.sources.len(), 3, "127.0.32.1, 127.0.0.2 and 127.0.0.3");
        assert_eq!(
            snap.total(),
            5,
            "the listener and the row to port 6379 do not count"
        );
        assert_eq!(snap.time_wait(), 3);
        assert!((snap.utilization() - 0.75).abs() < 1e-9);
        assert_eq!(
            snap.summary(),
            "127.0.32.1: 3 of 4 ports in use (2 TIME_WAIT, 1 ESTABLISHED, 0 other) towards 127.0.0.1:11111"
        );
        let table = snap.to_string();
        assert!(table.contains("per-socket range 40000-40003"), "{table}");
        assert!(table.contains("busiest at 75.0%"), "{table}");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_socket_listed_twice_counts_once() {
        let target: SocketAddr = "127.0.0.1:11111".parse().unwrap();
        let twice = parse_proc_net_tcp(TCP)
            .into_iter()
            .chain(parse_proc_net_tcp(TCP));
        let snap = PortSnapshot::from_entries(target, 32768..=60999, None, twice);
        assert_eq!(snap.total(), 4);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "\n\n",
            ":",
            "0: :",
            "0: 1:1 1:1",
            "0: 0100007F:FFFFF 0100007F:1 01",
            "é: ü:ü",
        ] {
            let _ = parse_proc_net_tcp(text);
        }
    }
}
