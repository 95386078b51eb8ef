//! The dialer against an in-process listener and real memcached and redis-server processes.
//!
//! Every test uses its own source addresses and its own listener, so tests running in parallel
//! never share a (source, target) port budget.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use multiloop::{DialErrorKind, Dialer, SourceSet, Strategy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::Acceptor;

/// A per-socket range of 50 ports inside the system range: exhaustion after about 50 dials.
const RANGE: std::ops::RangeInclusive<u16> = support::blocks::DIAL;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

use support::fresh_source as fresh;

/// Dials `target` and closes at once, `n` times or until the first error.
async fn churn(
    dialer: &Dialer,
    target: SocketAddr,
    n: usize,
) -> (usize, Option<multiloop::DialError>) {
    for done in 0..n {
        match dialer.connect(target).await {
            Ok(stream) => drop(stream),
            Err(e) => return (done, Some(e)),
        }
    }
    (n, None)
}

#[tokio::test]
async fn default_dialer_spreads_sources_over_127_slash_8() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder().build().unwrap();
    let mut locals = HashSet::new();
    for _ in 0..64 {
        let stream = dialer.connect(acceptor.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY is on by default");
        locals.insert(local.ip());
    }
    assert_eq!(
        locals.len(),
        64,
        "round robin gives each dial its own address"
    );
    let stats = dialer.stats();
    assert_eq!(stats.dials_ok, 64);
    assert_eq!(stats.distinct_sources, 64);
    assert_eq!(stats.failures.total(), 0);

    tokio::time::sleep(Duration::from_millis(50)).await;
    let peers: HashSet<IpAddr> = acceptor.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(
        peers, locals,
        "the server sees the addresses the dialer bound"
    );
    assert!(peers.iter().any(|p| *p != Ipv4Addr::LOCALHOST));
}

#[tokio::test]
async fn random_strategy_spreads_too() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources("127.60.0.0/24".parse().unwrap())
        .strategy(Strategy::Random)
        .build()
        .unwrap();
    let mut locals = HashSet::new();
    for _ in 0..32 {
        let stream = dialer.connect(acceptor.addr).await.unwrap();
        let local = stream.local_addr().unwrap().ip();
        assert!(dialer.sources().contains(local), "{local}");
        locals.insert(local);
    }
    assert!(
        locals.len() > 16,
        "32 random picks from 254 repeat rarely: {}",
        locals.len()
    );
}

#[tokio::test]
async fn drop_in_connect_works_with_question_mark() -> std::io::Result<()> {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let stream = multiloop::connect(acceptor.addr).await?;
    assert!(stream.local_addr()?.ip().is_loopback());
    let by_name = multiloop::connect(("127.0.0.1", acceptor.addr.port())).await?;
    assert!(by_name.peer_addr()?.ip().is_loopback());
    let dialer = multiloop::default_dialer().await.unwrap();
    assert!(dialer.stats().dials_ok >= 2);
    Ok(())
}

#[tokio::test]
async fn ipv6_loopback_targets_dial_from_ipv6_loopback() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        support::notice("SKIPPED: this host has no ::1");
        return;
    };
    let target = listener.local_addr().unwrap();
    let dialer = Dialer::builder().build().unwrap();
    let stream = dialer.connect(target).await.unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), ip("::1"));
    let (_, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), ip("::1"));
}

#[tokio::test]
async fn memcached_sees_a_source_other_than_127_0_0_1() {
    let Some(server) = support::memcached() else {
        return;
    };
    let dialer = Dialer::builder().build().unwrap();
    let mut stream = dialer.connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    assert_ne!(local.ip(), Ipv4Addr::LOCALHOST);

    // memcached lists each connection's peer under `stats conns`.
    stream.write_all(b"stats conns\r\n").await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut peers = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line == "END" {
            break;
        }
        if let Some(addr) = line.split_once(":addr tcp:").map(|(_, a)| a.to_string()) {
            peers.push(addr);
        }
    }
    assert!(
        peers.contains(&local.to_string()),
        "memcached should list {local} among {peers:?}"
    );
}

#[tokio::test]
async fn redis_sees_a_source_other_than_127_0_0_1() {
    let Some(server) = support::redis(&[]) else {
        return;
    };
    let dialer = Dialer::builder().build().unwrap();
    let mut stream = dialer.connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    assert_ne!(local.ip(), Ipv4Addr::LOCALHOST);

    stream.write_all(b"CLIENT INFO\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut reply = String::new();
    while !reply.ends_with("\r\n") || !reply.contains("addr=") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("redis answers CLIENT INFO")
            .unwrap();
        assert!(n > 0, "redis closed the connection: {reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        reply.contains(&format!("addr={local} ")),
        "redis should see {local}: {reply}"
    );
}

#[tokio::test]
async fn one_source_runs_out_after_its_port_range() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let source = fresh(61, 1);
    let dialer = support::one_source_dialer(source);
    let (done, err) = churn(&dialer, acceptor.addr, 500).await;
    let err = err.expect("50 ports cannot carry 500 churned dials");
    assert_eq!(err.kind(), DialErrorKind::PortsExhausted, "{err}");
    assert!(
        (40..=50).contains(&done),
        "about 50 dials fit in 50 ports, got {done}"
    );
    assert_eq!(err.sources(), &[source]);
    assert_eq!(err.target(), Some(acceptor.addr));
    assert_eq!(err.attempts(), 1);
    let message = err.to_string();
    assert!(message.contains("ports exhausted"), "{message}");
    assert!(message.contains(&source.to_string()), "{message}");
    assert!(message.contains("TIME_WAIT"), "{message}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::AddrNotAvailable
    );

    let stats = dialer.stats();
    assert_eq!(stats.failures.ports_exhausted, 1);
    assert_eq!(stats.quarantined, 1);
    assert_eq!(stats.dials_ok, done as u64);
}

#[tokio::test]
async fn without_no_port_bind_fails_with_eaddrinuse() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources(SourceSet::from_addrs([fresh(61, 2)]).unwrap())
        .local_port_range(support::blocks::PLAIN_BIND)
        .bind_address_no_port(false)
        .build()
        .unwrap();
    assert!(!dialer.bind_address_no_port());
    let (done, err) = churn(&dialer, acceptor.addr, 500).await;
    let err = err.expect("50 ports cannot carry 500 churned dials");
    assert_eq!(err.kind(), DialErrorKind::PortsExhausted, "{err}");
    assert_eq!(err.io_error().raw_os_error(), Some(libc::EADDRINUSE));
    assert!((40..=50).contains(&done), "got {done}");
}

#[tokio::test]
async fn two_hundred_fifty_six_sources_carry_5000_churned_dials() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let sources = SourceSet::from_addrs((0..=255u8).map(|i| fresh(62, i))).unwrap();
    assert_eq!(sources.len(), 256);
    let dialer = Dialer::builder()
        .sources(sources)
        .local_port_range(RANGE)
        .build()
        .unwrap();
    let (done, err) = churn(&dialer, acceptor.addr, 5_000).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(done, 5_000);
    let stats = dialer.stats();
    assert_eq!(stats.dials_ok, 5_000);
    assert_eq!(stats.failures.total(), 0);
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.distinct_sources, 256);
}

#[tokio::test]
async fn two_exhausted_sources_are_both_named_and_the_next_dial_fails_at_once() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let (a, b) = (fresh(63, 1), fresh(63, 2));
    let dialer = Dialer::builder()
        .sources(SourceSet::from_addrs([a, b]).unwrap())
        .local_port_range(RANGE)
        .build()
        .unwrap();
    let (done, err) = churn(&dialer, acceptor.addr, 1_000).await;
    let err = err.expect("100 ports cannot carry 1,000 churned dials");
    assert!(
        (80..=100).contains(&done),
        "about 100 dials fit, got {done}"
    );
    assert_eq!(err.kind(), DialErrorKind::PortsExhausted);
    let named: HashSet<IpAddr> = err.sources().iter().copied().collect();
    assert_eq!(named, HashSet::from([a, b]), "{err}");
    assert!(err.attempts() <= 2, "{err}");

    // Both are quarantined now: the next dial makes no attempt and names both.
    let again = dialer.connect(acceptor.addr).await.unwrap_err();
    assert_eq!(again.kind(), DialErrorKind::PortsExhausted);
    assert_eq!(again.attempts(), 0, "{again}");
    let named: HashSet<IpAddr> = again.sources().iter().copied().collect();
    assert_eq!(named, HashSet::from([a, b]), "{again}");
    assert!(again.to_string().contains("quarantined"), "{again}");

    let stats = dialer.stats();
    assert_eq!(stats.quarantined, 2);
    assert!(
        stats.retries <= 1,
        "one retry, from the first to the second source"
    );
}

#[tokio::test]
async fn exhausted_source_is_skipped_and_the_dial_retries_on_another() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let (a, b) = (fresh(64, 1), fresh(64, 2));
    // Exhaust `a` alone with a one-source dialer.
    let only_a = Dialer::builder()
        .sources(SourceSet::from_addrs([a]).unwrap())
        .local_port_range(RANGE)
        .build()
        .unwrap();
    let (_, err) = churn(&only_a, acceptor.addr, 500).await;
    assert_eq!(err.unwrap().kind(), DialErrorKind::PortsExhausted);

    // A dialer over both meets `a` exhausted, quarantines it and carries on with `b`.
    let both = Dialer::builder()
        .sources(SourceSet::from_addrs([a, b]).unwrap())
        .local_port_range(RANGE)
        .build()
        .unwrap();
    for _ in 0..10 {
        let stream = both.connect(acceptor.addr).await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), b);
    }
    let stats = both.stats();
    assert_eq!(stats.dials_ok, 10);
    assert_eq!(stats.retries, 1, "one retry, then `a` stays quarantined");
    assert_eq!(stats.quarantined, 1);
}

#[tokio::test]
async fn refused_is_typed_and_not_retried() {
    let closed = support::closed_port();
    let target = closed.addr;
    let dialer = Dialer::builder()
        .sources("127.65.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    let err = dialer.connect(target).await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Refused, "{err}");
    assert_eq!(err.attempts(), 1);
    assert!(err.to_string().contains("nothing listens"), "{err}");
    let stats = dialer.stats();
    assert_eq!(stats.failures.refused, 1);
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.quarantined, 0);
}

#[tokio::test]
async fn a_full_accept_queue_times_out() {
    // A listener that never accepts: once its queue is full the kernel drops new SYNs.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(1).unwrap();
    let target = listener.local_addr().unwrap().as_socket().unwrap();
    let dialer = Dialer::builder()
        .sources("127.66.0.0/24".parse().unwrap())
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut held = Vec::new();
    let mut timeout = None;
    for _ in 0..16 {
        match dialer.connect(target).await {
            Ok(stream) => held.push(stream),
            Err(e) => {
                timeout = Some(e);
                break;
            }
        }
    }
    let err = timeout.expect("a listener that never accepts fills up");
    assert_eq!(err.kind(), DialErrorKind::Timeout, "{err}");
    assert_eq!(err.attempts(), 1);
    assert!(err.to_string().contains("200ms"), "{err}");
    assert_eq!(dialer.stats().failures.timeout, 1);
}

#[tokio::test]
async fn mismatches_fail_before_any_socket_with_a_clear_message() {
    let dialer = Dialer::builder().build().unwrap();
    // Documentation addresses: never contacted, the check runs before any socket exists.
    let cases: [(&str, &str); 2] = [
        ("192.0.2.1:80", "not a loopback address"),
        ("[2001:db8::1]:80", "not a loopback address"),
    ];
    for (target, expected) in cases {
        let err = dialer.connect(target).await.unwrap_err();
        assert_eq!(err.kind(), DialErrorKind::Mismatch, "{target}: {err}");
        assert_eq!(err.attempts(), 0);
        assert!(err.sources().is_empty());
        assert!(err.to_string().contains(expected), "{target}: {err}");
        assert!(
            err.to_string().contains("loopback sources"),
            "{target}: {err}"
        );
    }

    let v6_only = Dialer::builder()
        .sources("::1".parse().unwrap())
        .build()
        .unwrap();
    let err = v6_only.connect("127.0.0.1:9").await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Mismatch);
    assert!(
        err.to_string().contains("hold no IPv4 loopback address"),
        "{err}"
    );

    let nic_v4 = Dialer::builder()
        .sources(SourceSet::parse_allowing_non_loopback("127.0.0.1").unwrap())
        .build()
        .unwrap();
    let err = nic_v4.connect("[2001:db8::1]:80").await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Mismatch);

    assert_eq!(dialer.stats().failures.mismatch, 2);
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn unresolvable_names_are_resolve_errors() {
    let dialer = Dialer::builder().build().unwrap();
    let err = dialer.connect("no-such-host.invalid:80").await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Resolve);
    assert_eq!(err.target(), None);
}

#[tokio::test]
async fn keepalive_is_set_when_asked() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .keepalive(Duration::from_secs(30))
        .nodelay(false)
        .build()
        .unwrap();
    let stream: TcpStream = dialer.connect(acceptor.addr).await.unwrap();
    let sock = socket2::SockRef::from(&stream);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    assert!(!stream.nodelay().unwrap());
}

/// A platform fact the dialer's users should know: a port reserved by a plain `bind(ip, 0)`
/// (without `IP_BIND_ADDRESS_NO_PORT`) is skipped by `connect`'s port choice for every source
/// address, not only for `ip`. A process that binds the old way on the same host poisons those
/// port numbers for everyone, for as long as its sockets (and their TIME_WAIT) live.
#[tokio::test]
async fn a_plain_bind_reserves_its_port_for_every_source() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let port = support::blocks::SINGLE;
    let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if plain
        .bind(&SocketAddr::from((fresh(72, 1), port)).into())
        .is_err()
    {
        support::notice(&format!("SKIPPED: port {port} is in use on this host"));
        return;
    }
    let dialer = Dialer::builder()
        .sources(SourceSet::from_addrs([fresh(72, 2)]).unwrap())
        .local_port_range(port..=port)
        .quarantine(Duration::ZERO)
        .build()
        .unwrap();
    let err = dialer.connect(acceptor.addr).await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::PortsExhausted, "{err}");
    drop(plain);
    let stream = dialer.connect(acceptor.addr).await.unwrap();
    assert_eq!(stream.local_addr().unwrap().port(), port);
}
