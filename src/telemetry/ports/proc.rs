//! `/proc/net/tcp` and `/proc/net/tcp6`: the socket tables as text, the census's fallback where
//! netlink is refused.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Tally, TcpEntry, TcpState};

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`. The header and malformed lines are
/// skipped, so the parser never fails and never panics.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines().filter_map(parse_line).collect()
}

pub(super) fn parse_line(line: &str) -> Option<TcpEntry> {
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

/// Counts the rows of both tables towards the tally's target, line by line: with a hundred
/// thousand sockets in TIME_WAIT on the host, the tables are tens of megabytes, and only the
/// rows towards the target are kept.
pub(super) fn count(tally: &mut Tally) -> io::Result<()> {
    use std::io::BufRead;

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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::ports::PortSnapshot;

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
