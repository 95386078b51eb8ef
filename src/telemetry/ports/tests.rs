//! The census's unit tests: parsing, ranges, and netlink against /proc on live sockets.

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

/// The netlink census and the /proc one count the same live sockets: ESTABLISHED ones and
/// TIME_WAIT ones, from several sources, and nothing towards another port.
#[cfg(target_os = "linux")]
#[test]
fn netlink_and_proc_agree_on_live_sockets() {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut open = Vec::new();
    for i in 0..6u8 {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let source = Ipv4Addr::new(127, 77, 1, 10 + i);
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket.connect(&target.into()).unwrap();
        let stream: TcpStream = socket.into();
        let (accepted, _) = listener.accept().unwrap();
        if i % 2 == 0 {
            // The client closes first: its side goes to TIME_WAIT.
            drop(stream);
            drop(accepted);
        } else {
            open.push((stream, accepted));
        }
    }
    let _elsewhere = TcpStream::connect(other.local_addr().unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut by_netlink = Tally::new(target, &local_port_range().unwrap(), None);
    if let Err(e) = diag::count(&mut by_netlink) {
        eprintln!("NOTICE: netlink census refused here ({e}); nothing to compare");
        return;
    }
    let mut by_proc = Tally::new(target, &local_port_range().unwrap(), None);
    proc::count(&mut by_proc).unwrap();
    let netlink = by_netlink.finish(32768..=60999, None, Census::SockDiag);
    let proc = by_proc.finish(32768..=60999, None, Census::ProcNet);
    assert_eq!(netlink.sources, proc.sources);
    assert_eq!(netlink.established(), 3, "{netlink}");
    assert_eq!(netlink.time_wait(), 3, "{netlink}");
    assert_eq!(netlink.sources.len(), 6);
    assert_eq!(snapshot(target, None).unwrap().census, Census::SockDiag);
}

#[test]
fn sockets_are_counted_by_state_with_the_kernels_names() {
    let target: SocketAddr = "127.0.0.1:11211".parse().unwrap();
    let entry = |port: u16, code: u8| TcpEntry {
        local: SocketAddr::from(([127, 0, 0, 2], port)),
        remote: target,
        state: TcpState::from_code(code),
    };
    let entries = [
        entry(40_000, 6),
        entry(40_001, 6),
        entry(40_002, 8),
        entry(40_003, 1),
        entry(40_004, 6),
        entry(40_005, 2),
        entry(20_000, 8), // outside the range: not counted
    ];
    let snap = PortSnapshot::from_entries(target, 32768..=60999, None, entries);
    let named: Vec<(&str, usize)> = snap.states.iter().map(|(s, n)| (s.name(), *n)).collect();
    assert_eq!(
        named,
        [
            ("TIME_WAIT", 3),
            ("ESTABLISHED", 1),
            ("SYN_SENT", 1),
            ("CLOSE_WAIT", 1)
        ]
    );
    assert_eq!(snap.outside_range, 1);
    assert!(
        snap.to_string()
            .contains("by state: TIME_WAIT 3, ESTABLISHED 1"),
        "{snap}"
    );
    assert_eq!(TcpState::from_code(200).name(), "?");
}

#[test]
fn rows_in_any_order_are_counted_once_per_socket_by_source() {
    let target: SocketAddr = "127.0.0.1:11211".parse().unwrap();
    let entry = |local: &str, code: u8| TcpEntry {
        local: local.parse().unwrap(),
        remote: target,
        state: TcpState::from_code(code),
    };
    let entries = [
        entry("127.0.0.3:40000", 6),
        entry("127.0.0.2:40000", 1),
        entry("[::ffff:127.0.0.3]:40001", 6), // a dual-stack socket: the same source
        entry("127.0.0.3:40000", 6),          // a repeat from a resumed dump
        entry("127.0.0.2:40001", 8),
        entry("127.0.0.3:40002", 1),
        entry("127.0.0.2:20000", 6),  // outside the range
        entry("127.0.0.3:40003", 10), // LISTEN: not a connection
    ];
    let snap = PortSnapshot::from_entries(target, 32768..=60999, None, entries);
    let by_source = by_source(&snap);
    assert_eq!(
        by_source,
        [
            ("127.0.0.3".to_string(), 1, 2, 0),
            ("127.0.0.2".to_string(), 1, 0, 1)
        ]
    );
    assert_eq!(snap.outside_range, 1);
    assert_eq!(snap.total(), 5);
}

/// The census's IPv4 path (numbers straight from the kernel's records) counts as the path
/// through `TcpEntry` does: repeats once, other targets and listeners not at all, and an IPv6
/// source beside them.
#[test]
fn the_ipv4_path_counts_as_the_entry_path() {
    let target: SocketAddr = "127.0.0.1:11211".parse().unwrap();
    let v4 = |ip: [u8; 4], port: u16| (u32::from_be_bytes(ip), port);
    let to = v4([127, 0, 0, 1], 11211);
    let range = 32768..=60999;
    let mut numbers = Tally::new(target, &range, None);
    numbers.add_v4(v4([127, 0, 0, 3], 40000), to, 6);
    numbers.add_v4(v4([127, 0, 0, 3], 40000), to, 6); // a repeat from a resumed dump
    numbers.add_v4(v4([127, 0, 0, 2], 40001), to, 1);
    numbers.add_v4(v4([127, 0, 0, 2], 40002), v4([127, 0, 0, 1], 6379), 1); // elsewhere
    numbers.add_v4(v4([127, 0, 0, 2], 40003), to, 10); // LISTEN
    let six = TcpEntry {
        local: "[::1]:40000".parse().unwrap(),
        remote: target,
        state: TcpState::from_code(1),
    };
    // A row with an IPv6 local address takes the other rows; an IPv4-mapped one is IPv4.
    let mapped = TcpEntry {
        local: "[::ffff:127.0.0.2]:40004".parse().unwrap(),
        remote: target,
        state: TcpState::from_code(8),
    };
    numbers.add(six);
    numbers.add(mapped);
    let snap = numbers.finish(range, None, Census::Entries);
    let by_source = by_source(&snap);
    assert_eq!(
        by_source,
        [
            ("127.0.0.2".to_string(), 1, 0, 1),
            ("127.0.0.3".to_string(), 0, 1, 0),
            ("::1".to_string(), 1, 0, 0),
        ]
    );
}

/// Each source's address and its ESTABLISHED, TIME_WAIT and other counts, busiest first.
fn by_source(snap: &PortSnapshot) -> Vec<(String, usize, usize, usize)> {
    snap.sources
        .iter()
        .map(|s| {
            let ip = s.source.map(|ip| ip.to_string()).unwrap_or_default();
            (ip, s.established, s.time_wait, s.other)
        })
        .collect()
}
