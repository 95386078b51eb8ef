//! Which source address to bind: [`SourceSet`] and [`Strategy`].
//!
//! On Linux every address in 127.0.0.0/8 is local, so a client can bind any of them before it
//! connects to a server on 127.0.0.1. Each source address has its own ephemeral port range, so a
//! set of `S` addresses gives `S × 28,232` source pairs towards one target instead of 28,232.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::ConfigError;

/// How the dialer walks a [`SourceSet`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// One shared atomic counter, started at a random index, so that two processes do not walk
    /// the same addresses in step. Spreads evenly and costs one atomic add per dial. The default.
    #[default]
    RoundRobin,
    /// A uniformly random member per dial (the incident's emergency fix). Spreads nearly as
    /// evenly, with no shared state between tasks.
    Random,
}

/// The address classes a dialer picks from: a target's family and whether it is loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    V4Loopback = 0,
    V4Other = 1,
    V6Loopback = 2,
    V6Other = 3,
}

impl Class {
    pub(crate) fn of(ip: IpAddr) -> Class {
        match ip {
            IpAddr::V4(v4) if v4.is_loopback() => Class::V4Loopback,
            IpAddr::V4(_) => Class::V4Other,
            IpAddr::V6(v6) if v6.is_loopback() => Class::V6Loopback,
            IpAddr::V6(_) => Class::V6Other,
        }
    }

    pub(crate) fn is_loopback(self) -> bool {
        matches!(self, Class::V4Loopback | Class::V6Loopback)
    }

    pub(crate) fn is_v4(self) -> bool {
        matches!(self, Class::V4Loopback | Class::V4Other)
    }
}

/// A run of consecutive addresses of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    start: u128,
    count: u64,
}

/// Sorted, merged blocks of one class, with running totals so that the n-th member is found by
/// a binary search: 127.0.0.0/8 is one block, not 16 million addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Blocks {
    blocks: Vec<Block>,
    /// `ends[k]` is the number of members in `blocks[..=k]`.
    ends: Vec<u64>,
    v4: bool,
}

impl Blocks {
    fn new(mut blocks: Vec<Block>, v4: bool) -> Blocks {
        blocks.sort_by_key(|b| b.start);
        let mut merged: Vec<Block> = Vec::with_capacity(blocks.len());
        for b in blocks {
            match merged.last_mut() {
                Some(last) if b.start <= last.start + u128::from(last.count) => {
                    let end =
                        (b.start + u128::from(b.count)).max(last.start + u128::from(last.count));
                    // A block holds at most 2^32 addresses and blocks only merge when they touch,
                    // so the merged length fits easily in u64.
                    last.count = u64::try_from(end - last.start).unwrap_or(u64::MAX);
                }
                _ => merged.push(b),
            }
        }
        let mut total = 0u64;
        let ends = merged
            .iter()
            .map(|b| {
                total = total.saturating_add(b.count);
                total
            })
            .collect();
        Blocks {
            blocks: merged,
            ends,
            v4,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The member at `index`, or `None` past the end.
    pub(crate) fn get(&self, index: u64) -> Option<IpAddr> {
        let k = self.ends.partition_point(|&end| end <= index);
        let block = self.blocks.get(k)?;
        let before = if k == 0 { 0 } else { self.ends[k - 1] };
        let value = block.start + u128::from(index - before);
        Some(if self.v4 {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(value).ok()?))
        } else {
            IpAddr::V6(Ipv6Addr::from(value))
        })
    }

    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(to_u128(ip.to_canonical()))
    }

    fn contains(&self, value: u128) -> bool {
        let k = self.blocks.partition_point(|b| b.start <= value);
        k > 0 && {
            let b = self.blocks[k - 1];
            value < b.start + u128::from(b.count)
        }
    }
}

/// The source addresses a [`Dialer`](crate::Dialer) may bind.
///
/// A set is held as address blocks, not as a list, so `127.0.0.0/8` costs a few bytes and
/// [`get`](SourceSet::get) finds any member by index in `O(log blocks)`.
///
/// Non-loopback addresses are refused unless the set is built through one of the
/// `*_allowing_non_loopback` constructors. That path exists for multi-homed hosts that want to
/// spread over their NIC addresses the same way; it is off by default so that a typo cannot send
/// traffic off the machine.
///
/// ```
/// use multiloop::SourceSet;
///
/// let all = SourceSet::loopback();
/// assert_eq!(all.len(), 16_777_214); // 127.0.0.0/8 less network and broadcast
///
/// let some: SourceSet = "127.0.0.0/24".parse()?;
/// assert_eq!(some.len(), 254);
/// assert_eq!(some.get(0), Some("127.0.0.1".parse()?));
///
/// let listed: SourceSet = "127.0.0.2, 127.0.0.3, 127.0.1.0/31".parse()?;
/// assert_eq!(listed.len(), 4);
///
/// assert!("10.0.0.0/24".parse::<SourceSet>().is_err()); // not loopback: opt in explicitly
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SourceSet {
    /// Indexed by [`Class`].
    classes: [Blocks; 4],
}

impl SourceSet {
    /// All of 127.0.0.0/8 except its network (127.0.0.0) and broadcast (127.255.255.255)
    /// addresses: 16,777,214 sources. This is the default.
    ///
    /// IPv6 has a single loopback address, so the dialer dials `::1` targets from `::1`
    /// whatever the set holds; this set is IPv4 only.
    pub fn loopback() -> SourceSet {
        let block = Block {
            start: u128::from(u32::from(Ipv4Addr::new(127, 0, 0, 1))),
            count: (1 << 24) - 2,
        };
        SourceSet::from_blocks(vec![(Class::V4Loopback, block)])
    }

    /// Builds a set from explicit loopback addresses. Duplicates are merged.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `sources` when the list is empty or holds a non-loopback address.
    pub fn from_addrs<I: IntoIterator<Item = IpAddr>>(addrs: I) -> Result<SourceSet, ConfigError> {
        SourceSet::addrs_in_scope(addrs, false)
    }

    /// Builds a set from explicit addresses, loopback or not (the opt-in for multi-homed hosts).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `sources` when the list is empty or holds an unspecified or
    /// multicast address.
    pub fn from_addrs_allowing_non_loopback<I: IntoIterator<Item = IpAddr>>(
        addrs: I,
    ) -> Result<SourceSet, ConfigError> {
        SourceSet::addrs_in_scope(addrs, true)
    }

    /// Parses like [`str::parse`], but accepts non-loopback addresses (the opt-in for
    /// multi-homed hosts).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `sources` for malformed input or an unusable address.
    pub fn parse_allowing_non_loopback(s: &str) -> Result<SourceSet, ConfigError> {
        SourceSet::parse_in_scope(s, true)
    }

    /// The number of addresses in the set.
    pub fn len(&self) -> usize {
        usize::try_from(self.total()).unwrap_or(usize::MAX)
    }

    /// Whether the set is empty. A set built through the public constructors never is.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The member at `index`, counting IPv4 blocks first, then IPv6, each in address order.
    pub fn get(&self, index: usize) -> Option<IpAddr> {
        let mut index = u64::try_from(index).ok()?;
        for blocks in &self.classes {
            if index < blocks.len() {
                return blocks.get(index);
            }
            index -= blocks.len();
        }
        None
    }

    /// Whether `ip` is a member.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.classes[Class::of(ip) as usize].contains(to_u128(ip))
    }

    /// Whether every member is a loopback address.
    pub fn is_loopback_only(&self) -> bool {
        self.classes[Class::V4Other as usize].len() == 0
            && self.classes[Class::V6Other as usize].len() == 0
    }

    pub(crate) fn class(&self, class: Class) -> &Blocks {
        &self.classes[class as usize]
    }

    /// This set with one class of members taken from `other` instead.
    pub(crate) fn with_class_from(mut self, class: Class, other: &SourceSet) -> SourceSet {
        self.classes[class as usize] = other.classes[class as usize].clone();
        self
    }

    fn total(&self) -> u64 {
        self.classes.iter().map(Blocks::len).sum()
    }

    fn from_blocks(blocks: Vec<(Class, Block)>) -> SourceSet {
        let mut by_class: [Vec<Block>; 4] = Default::default();
        for (class, block) in blocks {
            by_class[class as usize].push(block);
        }
        let [a, b, c, d] = by_class;
        SourceSet {
            classes: [
                Blocks::new(a, true),
                Blocks::new(b, true),
                Blocks::new(c, false),
                Blocks::new(d, false),
            ],
        }
    }

    fn addrs_in_scope<I: IntoIterator<Item = IpAddr>>(
        addrs: I,
        allow_non_loopback: bool,
    ) -> Result<SourceSet, ConfigError> {
        let mut blocks = Vec::new();
        for ip in addrs {
            let ip = ip.to_canonical();
            check_addr(ip, allow_non_loopback, &ip.to_string())?;
            blocks.push((
                Class::of(ip),
                Block {
                    start: to_u128(ip),
                    count: 1,
                },
            ));
        }
        if blocks.is_empty() {
            return Err(ConfigError::new("sources", "the source set is empty"));
        }
        Ok(SourceSet::from_blocks(blocks))
    }

    fn parse_in_scope(s: &str, allow_non_loopback: bool) -> Result<SourceSet, ConfigError> {
        let mut blocks = Vec::new();
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            blocks.push(parse_block(item, allow_non_loopback)?);
        }
        if blocks.is_empty() {
            return Err(ConfigError::new(
                "sources",
                format!("{s:?} holds no address; write a CIDR such as \"127.0.0.0/8\""),
            ));
        }
        Ok(SourceSet::from_blocks(blocks))
    }
}

impl Default for SourceSet {
    /// [`SourceSet::loopback`].
    fn default() -> SourceSet {
        SourceSet::loopback()
    }
}

impl FromStr for SourceSet {
    type Err = ConfigError;

    /// Parses a comma-separated list of CIDR blocks (`"127.0.0.0/16"`) and single addresses
    /// (`"127.0.0.2"`, `"::1"`). IPv4 blocks of /30 and wider leave out their network and
    /// broadcast addresses, as `SourceSet::loopback()` does.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `sources`: malformed input, a prefix out of range, an IPv4 block
    /// wider than /8 or an IPv6 block wider than /96, or a non-loopback address (see
    /// [`SourceSet::parse_allowing_non_loopback`]).
    fn from_str(s: &str) -> Result<SourceSet, ConfigError> {
        SourceSet::parse_in_scope(s, false)
    }
}

impl fmt::Debug for SourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SourceSet {
    /// Ranges of members, such as `127.0.0.1-127.255.255.254`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for blocks in &self.classes {
            for (k, block) in blocks.blocks.iter().enumerate() {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                let before = if k == 0 { 0 } else { blocks.ends[k - 1] };
                let lo = blocks.get(before);
                let hi = blocks.get(before + block.count - 1);
                match (lo, hi) {
                    (Some(lo), Some(hi)) if block.count > 1 => write!(f, "{lo}-{hi}")?,
                    (Some(lo), _) => write!(f, "{lo}")?,
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn check_addr(ip: IpAddr, allow_non_loopback: bool, what: &str) -> Result<(), ConfigError> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(ConfigError::new(
            "sources",
            format!("{what} cannot be a source address: it is unspecified or multicast"),
        ));
    }
    if !allow_non_loopback && !ip.is_loopback() {
        return Err(ConfigError::new(
            "sources",
            format!(
                "{what} is not a loopback address; sources must lie in 127.0.0.0/8 or be ::1, \
                 unless the set is built with SourceSet::parse_allowing_non_loopback or \
                 SourceSet::from_addrs_allowing_non_loopback"
            ),
        ));
    }
    Ok(())
}

fn parse_block(item: &str, allow_non_loopback: bool) -> Result<(Class, Block), ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "sources",
            format!("{item:?} is not a valid source block: {why}"),
        )
    };
    let (addr, prefix) = match item.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (item, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad("expected an address such as 127.0.0.0/8 or ::1"))?;
    let ip = ip.to_canonical();
    let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        None => bits,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p| p <= bits)
            .ok_or_else(|| bad(&format!("the prefix length must be 0 to {bits}")))?,
    };
    let widest = if ip.is_ipv4() { 8 } else { 96 };
    if prefix < widest {
        return Err(bad(&format!(
            "blocks may be at most /{widest} wide; list several blocks instead"
        )));
    }
    let host_bits = bits - prefix;
    let value = to_u128(ip);
    let mask = if host_bits == 0 {
        0
    } else {
        (1u128 << host_bits) - 1
    };
    if value & mask != 0 {
        return Err(bad(&format!(
            "{ip} has host bits set for /{prefix}; did you mean {}/{prefix}?",
            from_u128(value & !mask, ip.is_ipv4())
        )));
    }
    let mut start = value;
    let mut count = 1u64 << host_bits;
    if ip.is_ipv4() && host_bits >= 2 {
        // Leave out the network and broadcast addresses, as for hosts on a subnet.
        start += 1;
        count -= 2;
    }
    if !ip.is_ipv4() && count > 1 && start <= 1 && 1 < start + u128::from(count) {
        return Err(bad("::1 is the only IPv6 loopback address; write \"::1\""));
    }
    let first = from_u128(start, ip.is_ipv4());
    let last = from_u128(start + u128::from(count) - 1, ip.is_ipv4());
    check_addr(first, allow_non_loopback, item)?;
    check_addr(last, allow_non_loopback, item)?;
    Ok((Class::of(first), Block { start, count }))
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
