//! The pool's telemetry and options: failure storms in the log, leak warnings, the port census
//! and its warning, configuration errors, the reaper's end, and a connector of the test's own.

mod support;

use std::time::Duration;

use multiloop::{Connector, DialErrorKind, Dialer, Pool, PoolError, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::Acceptor;
use support::eventually;

#[tokio::test]
async fn a_failure_storm_makes_a_handful_of_log_events() {
    let (logs, _guard) = support::logs::capture();
    let closed = support::closed_port();
    let target = closed.addr;
    let dialer = Dialer::builder()
        .sources("127.68.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    for _ in 0..2_000 {
        assert_eq!(
            dialer.connect(target).await.unwrap_err().kind(),
            DialErrorKind::Refused
        );
    }
    let pool = Pool::builder(target).dialer(dialer).build().unwrap();
    for _ in 0..100_000 {
        assert!(pool.get().await.is_err());
    }
    let acceptor = support::Acceptor::start("127.0.0.1").await;
    let pool_busy = Pool::builder(acceptor.addr)
        .max_size(1)
        .max_waiters(0)
        .build()
        .unwrap();
    let _held = pool_busy.get().await.unwrap();
    for _ in 0..10_000 {
        assert!(matches!(pool_busy.get().await, Err(PoolError::Saturated)));
    }
    let events = logs.events();
    assert!(events.len() <= 10, "{} events: {events:#?}", events.len());
    assert!(events.iter().any(|e| e.contains("refused")), "{events:#?}");
    assert!(
        events.iter().any(|e| e.contains("saturated")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_leaked_connection_is_reported_once_with_where_it_was_taken() {
    let (logs, _guard) = support::logs::capture();
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .leak_threshold(Some(Duration::from_millis(100)))
        .build()
        .unwrap();
    let leaked = pool.get().await.unwrap();
    eventually("a leak warning", || logs.count() > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = logs.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(events[0].contains(file!()), "{}", events[0]);
    assert!(events[0].contains("leak threshold"), "{}", events[0]);
    drop(leaked);
}

#[tokio::test]
async fn port_snapshot_counts_real_sockets_by_source_and_state() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources("127.69.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(dialer.connect(acceptor.addr).await.unwrap());
    }
    let snap = ports::snapshot(acceptor.addr, None).unwrap();
    assert_eq!(snap.established(), 5, "{snap}");
    assert_eq!(snap.sources.len(), 5, "{snap}");
    assert!(
        snap.sources
            .iter()
            .all(|s| s.source.is_some_and(|ip| dialer.sources().contains(ip)))
    );
    drop(streams);
    // The client closed first: its side of each pair waits in TIME_WAIT.
    eventually("five pairs in TIME_WAIT", || {
        ports::snapshot(acceptor.addr, None).unwrap().time_wait() == 5
    })
    .await;
}

#[tokio::test]
async fn ports_exhausted_reports_carry_the_port_budget() {
    let (logs, _guard) = support::logs::capture();
    let acceptor = Acceptor::start("127.0.0.1").await;
    let source = support::fresh_source(70, 1);
    let dialer = support::one_source_dialer(source);
    let mut failures = 0;
    for _ in 0..200 {
        if dialer.connect(acceptor.addr).await.is_err() {
            failures += 1;
        }
    }
    assert!(failures >= 150);
    // The port budget is read on a blocking thread, so the event comes a moment later.
    eventually("the ports-exhausted event", || logs.count() > 0).await;
    let events = logs.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(events[0].contains("ports_exhausted"), "{}", events[0]);
    assert!(events[0].contains("of 50 ports in use"), "{}", events[0]);
    assert!(events[0].contains(&source.to_string()), "{}", events[0]);
}

#[test]
fn pool_config_errors_name_the_option() {
    let target = "127.0.0.1:11211";
    let cases: Vec<(multiloop::ConfigError, &str)> = vec![
        (
            Pool::builder(target).max_size(0).build().unwrap_err(),
            "max_size",
        ),
        (
            Pool::builder(target)
                .create_timeout(Duration::ZERO)
                .build()
                .unwrap_err(),
            "create_timeout",
        ),
        (
            Pool::builder(target)
                .check_timeout(Duration::ZERO)
                .build()
                .unwrap_err(),
            "check_timeout",
        ),
        (
            Pool::builder(target)
                .lifetime_jitter(1.5)
                .build()
                .unwrap_err(),
            "lifetime_jitter",
        ),
        (
            Pool::builder(target)
                .max_lifetime(Some(Duration::ZERO))
                .build()
                .unwrap_err(),
            "max_lifetime",
        ),
        (
            Pool::builder(target)
                .idle_timeout(Some(Duration::ZERO))
                .build()
                .unwrap_err(),
            "idle_timeout",
        ),
        (
            Pool::builder(target)
                .max_size(2)
                .min_idle(3)
                .build()
                .unwrap_err(),
            "min_idle",
        ),
        (
            Pool::builder(target)
                .warm_up_concurrency(0)
                .build()
                .unwrap_err(),
            "warm_up_concurrency",
        ),
        (
            Pool::builder(target).default_limit(0).build().unwrap_err(),
            "default_limit",
        ),
        (
            Pool::builder(target)
                .port_warning(Some(1.5))
                .build()
                .unwrap_err(),
            "port_warning",
        ),
        (
            Pool::builder(target)
                .report_window(Duration::ZERO)
                .build()
                .unwrap_err(),
            "report_window",
        ),
        (
            Pool::builder(target)
                .leak_threshold(Some(Duration::ZERO))
                .build()
                .unwrap_err(),
            "leak_threshold",
        ),
        (
            Pool::builder("192.0.2.1:11211").build().unwrap_err(),
            "target",
        ),
        (
            Pool::builder("no-such-host.invalid").build().unwrap_err(),
            "target",
        ),
    ];
    for (err, option) in cases {
        assert_eq!(err.option(), option, "{err}");
        assert!(err.to_string().contains(&format!("`{option}`")), "{err}");
    }
    let err = Pool::builder("192.0.2.1:11211").build().unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
}

#[tokio::test]
async fn the_reaper_ends_when_the_pool_is_dropped() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let pool = Pool::builder(acceptor.addr)
        .idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    // The reaper, plus the acceptor's task for the one connection.
    assert!(metrics.num_alive_tasks() > before);
    drop(pool);
    eventually("the reaper ended", || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            <= before
    })
    .await;
}

/// Takes 45 connections (45 of a one-source dialer's 50 ports) and waits for the pool's port
/// warning; returns the connections, still held, and the warning.
async fn hold_45_ports_until_warned(
    pool: &Pool,
    logs: &support::logs::Captured,
) -> (Vec<multiloop::Conn<multiloop::Raw>>, String) {
    let held: Vec<_> = futures_util::future::join_all((0..45).map(|_| pool.get()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let warned = || {
        logs.events()
            .into_iter()
            .find(|e| e.contains("close to running out of ports"))
    };
    eventually("a port utilization warning", || warned().is_some()).await;
    (held, warned().unwrap())
}

#[tokio::test]
async fn port_utilization_warns_before_the_tipping_point() {
    let (logs, _guard) = support::logs::capture();
    let acceptor = Acceptor::start("127.0.0.1").await;
    let source = support::fresh_source(71, 1);
    let dialer = support::one_source_dialer(source);
    let pool = Pool::builder(acceptor.addr)
        .dialer(dialer)
        .max_size(45)
        .build()
        .unwrap();
    // 45 of the source's 50 ports in use: 90%, past the 80% threshold, and no dial has failed.
    let (held, warning) = hold_45_ports_until_warned(&pool, &logs).await;
    assert!(warning.contains("45 of 50 ports in use"), "{warning}");
    assert_eq!(
        pool.dialer().stats().failures.total(),
        0,
        "the warning came first"
    );
    drop(held);
}

/// A pool given a host name counts the ports towards the address its dials reached.
#[tokio::test]
async fn port_utilization_of_a_host_name_target_is_counted_where_it_resolved() {
    let (logs, _guard) = support::logs::capture();
    let acceptor = Acceptor::start("127.0.0.1").await;
    let source = support::fresh_source(72, 1);
    let pool = Pool::builder(format!("localhost:{}", acceptor.addr.port()))
        .dialer(support::one_source_dialer(source))
        .max_size(45)
        .build()
        .unwrap();
    assert!(
        pool.target().tcp().is_none(),
        "a host name, looked up at each dial"
    );
    let (held, warning) = hold_45_ports_until_warned(&pool, &logs).await;
    assert!(warning.contains("45 of 50 ports in use"), "{warning}");
    assert!(warning.contains(&acceptor.addr.to_string()), "{warning}");
    drop(held);
}

/// A connector of the test's own for redis: the handshake is a PING, and so is the check.
struct RedisPing;

impl multiloop::Connector for RedisPing {
    type Conn = multiloop::Stream;
    type Error = std::io::Error;

    async fn connect(&self, mut stream: multiloop::Stream) -> std::io::Result<multiloop::Stream> {
        self.check(&mut stream).await?;
        Ok(stream)
    }

    async fn check(&self, conn: &mut multiloop::Stream) -> std::io::Result<()> {
        conn.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply).await?;
        if &reply == b"+PONG\r\n" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&reply)
            )))
        }
    }
}

#[tokio::test]
async fn a_custom_connector_pools_redis_and_drops_dead_connections() {
    let Some(server) = support::redis(&[]) else {
        return;
    };
    let pool = Pool::builder(server.addr)
        .connector(RedisPing)
        .max_size(4)
        .build()
        .unwrap();
    let conns: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    for conn in &conns {
        let local = conn.as_tcp().unwrap().local_addr().unwrap();
        assert_ne!(local.ip(), std::net::Ipv4Addr::LOCALHOST);
    }
    drop(conns);
    let mut conn = pool.get().await.unwrap();
    RedisPing.check(&mut conn).await.unwrap();
    drop(conn);
    assert_eq!(pool.stats().created, 4, "checked connections are reused");

    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = pool.get().await.expect_err("redis is gone");
    assert!(err.dial_error().is_some(), "{err}");
    assert_eq!(
        pool.stats().closed.broken,
        4,
        "no dead connection was handed out"
    );
}
