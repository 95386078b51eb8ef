//! The census's count: one compact row per socket towards the target, sorted once at the end.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use super::{Census, PortSnapshot, SourceUsage, TcpEntry, TcpState, effective_range};

/// Sockets to one target, gathered as compact rows while the kernel's records go by and
/// counted by source at the end: memory grows with the target's sockets, not with the host's.
///
/// Sorting the rows puts a source's sockets together and any repeat next to itself, so the
/// count takes no hashing (at 100,000 sockets a hash set and map per record cost as much as
/// the kernel's dump). An IPv4 socket, the common case, is one `u64`, so sorting 100,000 of
/// them is a sort of plain numbers.
pub(super) struct Tally {
    target: SocketAddr,
    /// `target` as an IPv4 address and port, when it is one.
    target_v4: Option<(u32, u16)>,
    range: RangeInclusive<u16>,
    /// IPv4 sockets (and IPv4-mapped IPv6 ones): [`v4_row`].
    v4: Vec<u64>,
    /// Other IPv6 sockets: local address, port and state.
    v6: Vec<(u128, u16, u8)>,
}

/// An IPv4 socket as one number, ordered by local address, then port: the address in bits
/// 24..56, the port in 8..24, the state in 0..8.
fn v4_row(ip: u32, port: u16, state: u8) -> u64 {
    (u64::from(ip) << 24) | (u64::from(port) << 8) | u64::from(state)
}

/// The `LISTEN` state's code: a listener holds no port towards anything.
const LISTEN: u8 = 0x0A;

impl Tally {
    pub(super) fn new(
        target: SocketAddr,
        system: &RangeInclusive<u16>,
        socket: Option<&RangeInclusive<u16>>,
    ) -> Tally {
        let target = SocketAddr::new(target.ip().to_canonical(), target.port());
        let target_v4 = match target.ip() {
            IpAddr::V4(ip) => Some((u32::from(ip), target.port())),
            IpAddr::V6(_) => None,
        };
        Tally {
            target,
            target_v4,
            range: effective_range(system, socket),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    pub(super) fn target(&self) -> SocketAddr {
        self.target
    }

    /// Rows gathered so far (repeats included).
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The local addresses gathered, sorted, repeats included.
    #[cfg(test)]
    pub(super) fn locals(&self) -> Vec<SocketAddr> {
        let v4 = self.v4.iter().map(|&row| {
            SocketAddr::new(
                std::net::Ipv4Addr::from((row >> 24) as u32).into(),
                (row >> 8) as u16,
            )
        });
        let v6 = self
            .v6
            .iter()
            .map(|&(ip, port, _)| SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port));
        let mut v: Vec<SocketAddr> = v4.chain(v6).collect();
        v.sort();
        v
    }

    pub(super) fn add(&mut self, e: TcpEntry) {
        if e.remote != self.target || e.state == TcpState::Listen {
            return;
        }
        match e.local.ip().to_canonical() {
            IpAddr::V4(ip) => {
                self.v4
                    .push(v4_row(u32::from(ip), e.local.port(), e.state.code()));
            }
            IpAddr::V6(ip) => self
                .v6
                .push((u128::from(ip), e.local.port(), e.state.code())),
        }
    }

    /// An IPv4 socket, as the kernel's record gives it (addresses as numbers, ports in host
    /// order): the census's path for nearly every record, with no address types built.
    #[inline]
    pub(super) fn add_v4(&mut self, local: (u32, u16), remote: (u32, u16), state: u8) {
        if Some(remote) == self.target_v4 && state != LISTEN {
            self.v4.push(v4_row(local.0, local.1, state));
        }
    }

    pub(super) fn finish(
        mut self,
        system_range: RangeInclusive<u16>,
        socket_range: Option<RangeInclusive<u16>>,
        census: Census,
    ) -> PortSnapshot {
        // The kernel dumps its tables a buffer at a time and resumes by position, so under
        // churn one socket can appear twice: a local address is one socket towards the target.
        self.v4.sort_unstable();
        self.v4.dedup_by_key(|row| *row >> 8);
        self.v6.sort_unstable_by_key(|&(ip, port, _)| (ip, port));
        self.v6.dedup_by_key(|&mut (ip, port, _)| (ip, port));
        let v4 = self.v4.iter().map(|&row| {
            let ip = std::net::Ipv4Addr::from((row >> 24) as u32);
            (IpAddr::V4(ip), (row >> 8) as u16, row as u8)
        });
        let v6 = self
            .v6
            .iter()
            .map(|&(ip, port, state)| (IpAddr::V6(std::net::Ipv6Addr::from(ip)), port, state));
        let mut states = [0usize; 256];
        let mut outside = 0;
        let mut sources: Vec<SourceUsage> = Vec::new();
        let mut last = None;
        for (ip, port, state) in v4.chain(v6) {
            if !self.range.contains(&port) {
                outside += 1;
                continue;
            }
            if last != Some(ip) {
                last = Some(ip);
                sources.push(SourceUsage {
                    source: Some(ip),
                    ..SourceUsage::default()
                });
            }
            let Some(usage) = sources.last_mut() else {
                continue;
            };
            states[usize::from(state)] += 1;
            match TcpState::from_code(state) {
                TcpState::Established => usage.established += 1,
                TcpState::TimeWait => usage.time_wait += 1,
                _ => usage.other += 1,
            }
        }
        // Each source once, so the order is total and an unstable sort gives the same.
        sources.sort_unstable_by(|a, b| b.total().cmp(&a.total()).then(a.source.cmp(&b.source)));
        let mut states: Vec<(TcpState, usize)> = (0..=u8::MAX)
            .zip(states)
            .filter(|&(_, n)| n > 0)
            .map(|(code, n)| (TcpState::from_code(code), n))
            .collect();
        states.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.code().cmp(&b.0.code())));
        PortSnapshot {
            target: self.target,
            system_range,
            socket_range,
            sources,
            outside_range: outside,
            states,
            census,
        }
    }
}
