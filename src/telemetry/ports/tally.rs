//! The census's count: one compact row per socket towards the target, sorted once at the end.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use super::{Census, PortSnapshot, SourceUsage, TcpEntry, TcpState, effective_range};

/// Sockets to one target, gathered as compact rows while the kernel's records go by and
/// counted by source at the end: memory grows with the target's sockets, not with the host's.
pub(super) struct Tally {
    target: SocketAddr,
    range: RangeInclusive<u16>,
    /// One row per socket towards the target: its local address (IPv4 as v4-mapped), port and
    /// state. Sorting them puts a source's sockets together and any repeat next to itself, so
    /// the count takes no hashing: at 100,000 sockets a hash set and map per record cost as
    /// much as the kernel's dump.
    rows: Vec<(u128, u16, u8)>,
}

impl Tally {
    pub(super) fn new(
        target: SocketAddr,
        system: &RangeInclusive<u16>,
        socket: Option<&RangeInclusive<u16>>,
    ) -> Tally {
        Tally {
            target: SocketAddr::new(target.ip().to_canonical(), target.port()),
            range: effective_range(system, socket),
            rows: Vec::new(),
        }
    }

    pub(super) fn target(&self) -> SocketAddr {
        self.target
    }

    /// Rows gathered so far (repeats included).
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The local addresses gathered, sorted, repeats included.
    #[cfg(test)]
    pub(super) fn locals(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .rows
            .iter()
            .map(|&(ip, port, _)| {
                SocketAddr::new(std::net::Ipv6Addr::from(ip).to_canonical(), port)
            })
            .collect();
        v.sort();
        v
    }

    pub(super) fn add(&mut self, e: TcpEntry) {
        if e.remote != self.target || e.state == TcpState::Listen {
            return;
        }
        let ip = match e.local.ip() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            IpAddr::V6(ip) => ip,
        };
        self.rows
            .push((u128::from(ip), e.local.port(), e.state.code()));
    }

    pub(super) fn finish(
        mut self,
        system_range: RangeInclusive<u16>,
        socket_range: Option<RangeInclusive<u16>>,
        census: Census,
    ) -> PortSnapshot {
        // The kernel dumps its tables a buffer at a time and resumes by position, so under
        // churn one socket can appear twice: a local address is one socket towards the target.
        self.rows.sort_unstable_by_key(|&(ip, port, _)| (ip, port));
        self.rows.dedup_by_key(|&mut (ip, port, _)| (ip, port));
        let mut states = [0usize; 256];
        let mut outside = 0;
        let mut sources: Vec<SourceUsage> = Vec::new();
        let mut last = None;
        for &(ip, port, state) in &self.rows {
            if !self.range.contains(&port) {
                outside += 1;
                continue;
            }
            if last != Some(ip) {
                last = Some(ip);
                let source = std::net::Ipv6Addr::from(ip).to_canonical();
                sources.push(SourceUsage {
                    source: Some(source),
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
        sources.sort_by(|a, b| b.total().cmp(&a.total()).then(a.source.cmp(&b.source)));
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
