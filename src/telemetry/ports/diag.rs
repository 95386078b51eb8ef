//! The census through `NETLINK_SOCK_DIAG`, as `ss` takes it: an `inet_diag_req_v2` dump for
//! TCP with a bytecode filter on the destination address and port, so the kernel returns only
//! the sockets towards the target, as binary records. On a host with 100,000 sockets in
//! TIME_WAIT elsewhere, it reads a few rows instead of formatting and parsing 15 MB of text.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

use super::{Tally, TcpEntry, TcpState};

/// `INET_DIAG_REQ_BYTECODE`, the request attribute that carries the filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_BC_D_COND`: the destination matches a host condition (address prefix and port).
const INET_DIAG_BC_D_COND: u8 = 8;
/// How long one reply may take: the kernel answers a dump at once, so this only bounds a
/// misbehaving host.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts the sockets towards the tally's target, in every TCP state but `LISTEN`.
///
/// One walk of the kernel's table when it can: the compatible `TCPDIAG_GETSOCK` request dumps
/// IPv4 and IPv6 sockets together, where `inet_diag_req_v2` takes a walk per family (the walk,
/// not the records, is most of a census on a host with many sockets elsewhere). A kernel that
/// refuses it gets the two `inet_diag_req_v2` dumps.
///
/// # Errors
///
/// The error of creating, binding or reading the netlink socket, or of a dump the kernel
/// refused (a sandbox may forbid `NETLINK_SOCK_DIAG`); the caller falls back to `/proc`.
pub(super) fn count(tally: &mut Tally) -> io::Result<()> {
    let target = tally.target();
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(RECV_TIMEOUT))?;
    let mut buf = vec![0u8; 64 * 1024];
    if target.ip().is_ipv4() {
        socket.send(&compat_request(target), 0)?;
        let before = tally.len();
        match dump(&socket, &mut buf, tally) {
            Ok(()) => return Ok(()),
            // Refused before any record: the dumps by family below.
            Err(e) if tally.len() == before && e.raw_os_error().is_some() => {}
            Err(e) => return Err(e),
        }
    }
    // An IPv4 target is reached from AF_INET sockets, and from AF_INET6 ones as a v4-mapped
    // address; the filter's AF_INET condition matches both.
    let families: &[u8] = match target.ip() {
        IpAddr::V4(_) => &[AF_INET, AF_INET6],
        IpAddr::V6(_) => &[AF_INET6],
    };
    for &family in families {
        socket.send(&request(family, target), 0)?;
        dump(&socket, &mut buf, tally)?;
    }
    Ok(())
}

/// Reads one dump's replies into the tally, up to its `NLMSG_DONE`.
fn dump(socket: &Socket, buf: &mut [u8], tally: &mut Tally) -> io::Result<()> {
    loop {
        let size = socket.recv(&mut &mut buf[..], 0)?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink closed mid-dump",
            ));
        }
        let mut offset = 0;
        while offset < size {
            let Some((kind, body, length)) = message(&buf[offset..size]) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a truncated netlink message",
                ));
            };
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => record(body, tally),
                _ => {}
            }
            offset += length;
        }
    }
}

/// `NLMSG_ERROR` and `NLMSG_DONE`, the netlink message types that end or fail a dump.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The message type of each `inet_diag_msg` in a dump's replies: the request's own type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The compatible request for TCP sockets of both families, `struct inet_diag_req`.
const TCPDIAG_GETSOCK: u16 = 18;
/// The TCP states of a socket towards a target: `ESTABLISHED` (1) to `CLOSING` (11) and
/// `NEW_SYN_RECV` (12), but not `LISTEN` (10). A listener holds no port towards the target, and
/// leaving it out spares the kernel its listening table. Nor `BOUND_INACTIVE` (13, Linux 6.6+):
/// a socket bound and never connected has no destination, and asking for it makes the kernel
/// walk its bind table as well, which cost about 18 ms of the census at 100,000 sockets.
const STATES: u32 = ((1 << 13) - 2) & !(1 << 10);

/// The first netlink message in `bytes`: its type, its body, and its aligned length.
///
/// The replies are read by hand, not through the crate's types: a census of 100,000 sockets
/// towards the target spent as long decoding each record in full (every field, every
/// attribute) as the kernel took to produce them, and it needs four fields of each.
fn message(bytes: &[u8]) -> Option<(u16, &[u8], usize)> {
    let header = bytes.get(..16)?;
    let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let body = bytes.get(16..length)?;
    Some((kind, body, length.next_multiple_of(4).max(16)))
}

/// One `inet_diag_msg` into the tally: family and state (bytes 0 and 1), then its
/// `inet_diag_sockid`: source and destination ports (big-endian), then the addresses (16 bytes
/// each; IPv4 in the first 4). An IPv4 socket, nearly every record, goes in as numbers.
fn record(body: &[u8], tally: &mut Tally) {
    let Some(msg) = body.get(..44) else {
        return;
    };
    let port = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    if msg[0] == AF_INET {
        let ip = |at: usize| u32::from_be_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
        tally.add_v4((ip(8), port(4)), (ip(24), port(6)), msg[1]);
        return;
    }
    let ip = |at: usize| -> IpAddr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&msg[at..at + 16]);
        IpAddr::from(octets).to_canonical()
    };
    tally.add(TcpEntry {
        local: SocketAddr::new(ip(8), port(4)),
        remote: SocketAddr::new(ip(24), port(6)),
        state: TcpState::from_code(msg[1]),
    });
}

/// A `TCPDIAG_GETSOCK` dump request for TCP sockets of both families towards `target`, in
/// [`STATES`]. The crate has no type for this older request, so its `struct inet_diag_req` is
/// packed here: family, two prefix lengths and the extensions (one byte each), the
/// `inet_diag_sockid` (ports big-endian, then addresses, interface and cookie), the states and
/// an unused word. The destination port in the id lets the kernel drop other sockets before it
/// runs the filter.
fn compat_request(target: SocketAddr) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    buf.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf.extend_from_slice(&[0; 8]); // sequence number and port id
    buf.extend_from_slice(&[AF_INET, 0, 0, 0]);
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&target.port().to_be_bytes());
    buf.extend_from_slice(&[0; 36]); // addresses and interface
    buf.extend_from_slice(&[0xff; 8]); // no cookie
    buf.extend_from_slice(&STATES.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    with_filter(buf, target)
}

/// A dump request for TCP sockets of `family` towards `target`, in [`STATES`].
fn request(family: u8, target: SocketAddr) -> Vec<u8> {
    let mut socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    socket_id.destination_port = target.port();
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_truncate(STATES),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    with_filter(buf, target)
}

/// `request` with the filter on `target` appended as its bytecode attribute (the crate has no
/// type for it) and the message's length set.
fn with_filter(mut buf: Vec<u8>, target: SocketAddr) -> Vec<u8> {
    let code = bytecode(target);
    let attribute_len = 4 + code.len();
    buf.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    buf.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    buf.extend_from_slice(&code);
    buf.resize(buf.len().next_multiple_of(4), 0);
    let total = buf.len() as u32;
    buf[..4].copy_from_slice(&total.to_ne_bytes());
    buf
}

/// One `INET_DIAG_BC_D_COND` operation: the destination is exactly `target`'s address and port.
/// An `inet_diag_bc_op` (code, yes, no) and an `inet_diag_hostcond` (family, prefix length,
/// port, address). On a match the program runs to its end and the socket is reported; otherwise
/// it jumps past the end (`no` = length + 4) and the socket is skipped.
fn bytecode(target: SocketAddr) -> Vec<u8> {
    let (family, address): (u8, Vec<u8>) = match target.ip() {
        IpAddr::V4(ip) => (AF_INET, ip.octets().to_vec()),
        IpAddr::V6(ip) => (AF_INET6, ip.octets().to_vec()),
    };
    let length = 4 + 8 + address.len();
    let mut code = Vec::with_capacity(length);
    code.push(INET_DIAG_BC_D_COND);
    code.push(length as u8);
    code.extend_from_slice(&((length + 4) as u16).to_ne_bytes());
    code.push(family);
    code.push((address.len() * 8) as u8);
    code.extend_from_slice(&[0, 0]);
    code.extend_from_slice(&i32::from(target.port()).to_ne_bytes());
    code.extend_from_slice(&address);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn the_filter_is_one_destination_condition() {
        let v4 = bytecode("127.0.0.1:11211".parse().unwrap());
        assert_eq!(v4.len(), 16);
        assert_eq!(&v4[..4], &[INET_DIAG_BC_D_COND, 16, 20, 0][..]);
        assert_eq!(&v4[12..], &[127, 0, 0, 1]);
        let v6 = bytecode("[::1]:6379".parse().unwrap());
        assert_eq!(v6.len(), 28);
        assert_eq!(v6[5], 128, "the whole address");
        assert_eq!(
            STATES.count_ones(),
            11,
            "ESTABLISHED to NEW_SYN_RECV, but LISTEN"
        );
        assert_eq!(
            STATES & (1 << 10 | 1 << 13 | 1),
            0,
            "no listeners, no bound-only sockets"
        );
        let req = request(AF_INET, "127.0.0.1:11211".parse().unwrap());
        assert_eq!(req.len() % 4, 0);
        let len = u32::from_ne_bytes(req[..4].try_into().unwrap()) as usize;
        assert_eq!(len, req.len(), "the length covers the bytecode");
    }

    /// Both requests, on this kernel, against real sockets of both families: one IPv4 client
    /// and, where the host has IPv6, one dual-stack client reaching the target as
    /// `::ffff:127.0.0.1`. The single compatible walk and the two walks by family agree.
    #[test]
    fn one_walk_counts_both_families_as_the_two_walks_do() {
        use std::net::{Ipv4Addr, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let mut clients = vec![TcpStream::connect(target).unwrap()];
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None);
        if let Ok(v6) = v6 {
            let mapped = SocketAddr::new(
                IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
                target.port(),
            );
            v6.set_only_v6(false).unwrap();
            v6.connect(&mapped.into()).unwrap();
            clients.push(v6.into());
        }
        let (_accepted, _) = listener.accept().unwrap();
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).unwrap();
        socket.bind_auto().unwrap();
        socket.connect(&NetlinkAddr::new(0, 0)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut one = Tally::new(target, &(1..=u16::MAX), None);
        socket.send(&compat_request(target), 0).unwrap();
        dump(&socket, &mut buf, &mut one).expect("the kernel takes TCPDIAG_GETSOCK");
        let mut two = Tally::new(target, &(1..=u16::MAX), None);
        for family in [AF_INET, AF_INET6] {
            socket.send(&request(family, target), 0).unwrap();
            dump(&socket, &mut buf, &mut two).unwrap();
        }
        let (one, two) = (one.locals(), two.locals());
        let mut ours: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        ours.iter_mut()
            .for_each(|a| a.set_ip(a.ip().to_canonical()));
        ours.sort();
        assert_eq!(
            one, ours,
            "the listener and the server's own socket are not towards it"
        );
        assert_eq!(two, ours);
    }
}
