//! The pool against real memcached processes and in-process servers: the cap, the bounded wait
//! queue, the switches, the reaper, broken connections. Fan-out and bulkheads: `tests/fanout.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiloop::{DialErrorKind, Pool, PoolError, TimeoutKind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::Acceptor;
use support::eventually;

/// One memcached round trip: `version`.
async fn version(conn: &mut multiloop::Stream) -> std::io::Result<String> {
    conn.write_all(b"version\r\n").await?;
    let mut line = String::new();
    let mut reader = BufReader::new(conn);
    reader.read_line(&mut line).await?;
    if line.starts_with("VERSION ") {
        Ok(line)
    } else {
        Err(std::io::Error::other(format!("unexpected reply {line:?}")))
    }
}

/// memcached's own count of open connections (less the one asking).
async fn memcached_connections(addr: SocketAddr) -> usize {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"stats\r\n").await.unwrap();
    let mut lines = BufReader::new(conn).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(n) = line.strip_prefix("STAT curr_connections ") {
            // memcached counts its listening socket and this connection too.
            return n.trim().parse::<usize>().unwrap().saturating_sub(2);
        }
        if line == "END" {
            break;
        }
    }
    panic!("no curr_connections in memcached stats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_10000_concurrent_gets() {
    let Some(server) = support::memcached() else {
        return;
    };
    let pool = Pool::builder(server.addr)
        .max_size(16)
        .max_waiters(10_000)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let pool = pool.clone();
        let peak = peak.clone();
        tasks.spawn(async move {
            let mut conn = pool.get().await?;
            peak.fetch_max(pool.status().size, Ordering::Relaxed);
            version(&mut conn).await.map_err(PoolError::Backend)?;
            Ok::<_, PoolError<std::io::Error>>(())
        });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    assert!(
        peak.load(Ordering::Relaxed) <= 16,
        "size reached {}",
        peak.load(Ordering::Relaxed)
    );
    let stats = pool.stats();
    assert!(stats.created <= 16, "created {}", stats.created);
    assert_eq!(stats.gets, 10_000);
    assert!(
        stats.waited > 0,
        "10,000 tasks on 16 connections must queue"
    );
    assert!(memcached_connections(server.addr).await <= 16);
    let status = pool.status();
    assert_eq!((status.waiting, status.in_use), (0, 0));
}

#[tokio::test]
async fn waiters_stay_pending_until_woken_and_a_full_queue_is_saturated() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .max_size(1)
        .max_waiters(2)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();

    let mut first = tokio_test::task::spawn(pool.get());
    let mut second = tokio_test::task::spawn(pool.get());
    assert!(first.poll().is_pending());
    assert!(second.poll().is_pending());
    assert_eq!(pool.status().waiting, 2);

    // The queue is full: the third get fails at once.
    let mut third = tokio_test::task::spawn(pool.get());
    match third.poll() {
        std::task::Poll::Ready(Err(PoolError::Saturated)) => {}
        other => panic!(
            "expected Saturated at once, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
    assert_eq!(pool.stats().saturated, 1);
    let message = PoolError::<std::io::Error>::Saturated.to_string();
    assert!(message.contains("max_waiters"), "{message}");

    // Returning the connection wakes the first waiter, which gets it.
    assert!(!first.is_woken());
    drop(held);
    assert!(first.is_woken());
    let conn = match first.poll() {
        std::task::Poll::Ready(Ok(conn)) => conn,
        other => panic!(
            "the woken waiter should get the connection: {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    };
    assert!(second.poll().is_pending());
    drop(conn);
    assert!(second.is_woken());
    assert!(matches!(second.poll(), std::task::Poll::Ready(Ok(_))));
    assert_eq!(pool.status().waiting, 0);
}

#[tokio::test]
async fn a_busy_pool_times_out_waiting() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .max_size(1)
        .wait_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let _held = pool.get().await.unwrap();
    let err = pool.get().await.err().unwrap();
    assert!(
        matches!(err, PoolError::Timeout(TimeoutKind::Wait)),
        "{err}"
    );
    assert_eq!(pool.stats().timed_out, 1);
    assert!(err.to_string().contains("fan_out"), "{err}");
}

#[tokio::test]
async fn paused_pools_refuse_gets_and_let_in_use_connections_finish() {
    let Some(server) = support::memcached() else {
        return;
    };
    let pool = Pool::builder(server.addr).build().unwrap();
    let mut in_use = pool.get().await.unwrap();
    pool.pause();
    assert!(pool.status().paused);
    assert!(matches!(pool.get().await, Err(PoolError::Paused)));
    version(&mut in_use).await.unwrap();
    drop(in_use);
    assert!(matches!(pool.get().await, Err(PoolError::Paused)));
    assert_eq!(pool.stats().paused, 2);
    pool.resume();
    let mut conn = pool.get().await.unwrap();
    version(&mut conn).await.unwrap();
    assert_eq!(
        pool.stats().created,
        1,
        "the paused pool kept its connection"
    );
}

#[tokio::test]
async fn a_waiter_fails_with_paused_if_the_pool_is_paused_meanwhile() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr).max_size(1).build().unwrap();
    let held = pool.get().await.unwrap();
    let mut waiter = tokio_test::task::spawn(pool.get());
    assert!(waiter.poll().is_pending());
    pool.pause();
    drop(held);
    assert!(matches!(
        waiter.poll(),
        std::task::Poll::Ready(Err(PoolError::Paused))
    ));
    assert_eq!(pool.status().size, 1, "the connection went back, unused");
}

#[tokio::test]
async fn resize_down_and_up() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr).max_size(4).build().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    assert_eq!(pool.status().size, 4);

    pool.resize(2).unwrap();
    assert_eq!(pool.status().max_size, 2);
    held.clear();
    let status = pool.status();
    assert_eq!(status.size, 2, "{status:?}");
    assert_eq!(pool.stats().closed.other, 2);

    // Only two fit now.
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(100), pool.get()).await;
    assert!(third.is_err() || third.unwrap().is_err());
    drop((a, b));

    pool.resize(3).unwrap();
    let all: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(pool.status().size, 3);
    drop(all);

    let err = pool.resize(0).unwrap_err();
    assert_eq!(err.option(), "max_size");
    assert!(err.to_string().contains("pause"), "{err}");
}

#[tokio::test]
async fn the_reaper_closes_idle_connections() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .idle_timeout(Some(Duration::from_millis(200)))
        .max_lifetime(None)
        .build()
        .unwrap();
    let conns: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
    drop(conns);
    assert_eq!(pool.status().size, 3);
    eventually("idle connections closed", || pool.status().size == 0).await;
    assert_eq!(pool.stats().closed.idle, 3);
}

#[tokio::test]
async fn the_reaper_keeps_min_idle() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .idle_timeout(Some(Duration::from_millis(100)))
        .min_idle(2)
        .build()
        .unwrap();
    assert_eq!(pool.warm_up().await.unwrap(), 2);
    let conns: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    drop(conns);
    eventually("idle connections above min_idle closed", || {
        pool.stats().closed.idle >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.status().size, 2, "min_idle connections stay");
}

#[tokio::test]
async fn the_reaper_closes_connections_past_their_lifetime() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .max_lifetime(Some(Duration::from_millis(300)))
        .lifetime_jitter(0.5)
        .idle_timeout(None)
        .build()
        .unwrap();
    let conns: Vec<_> = futures_util::future::join_all((0..2).map(|_| pool.get())).await;
    drop(conns);
    eventually("over-age connections closed", || pool.status().size == 0).await;
    assert_eq!(pool.stats().closed.lifetime, 2);
}

#[tokio::test]
async fn broken_connections_are_not_reused_after_the_server_dies() {
    let Some(server) = support::memcached() else {
        return;
    };
    let addr = server.addr;
    let pool = Pool::builder(addr).build().unwrap();
    {
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut conn = pool.get().await.unwrap();
            version(&mut conn).await.unwrap();
            conns.push(conn);
        }
    }
    assert_eq!(pool.status().idle, 4);
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Every idle connection fails its check and is closed; the dial then finds nothing.
    let err = pool.get().await.expect_err("the server is gone");
    let dial = err
        .dial_error()
        .unwrap_or_else(|| panic!("expected a dial error, got {err}"));
    assert_eq!(dial.kind(), DialErrorKind::Refused);
    assert_eq!(pool.stats().closed.broken, 4);
    assert_eq!(pool.status().size, 0);

    // Restarted on the same port, the pool recovers, with new connections only.
    let _server = support::memcached_on(Some(addr.port())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut conn = loop {
        match pool.get().await {
            Ok(conn) => break conn,
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    version(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_refusing_target_gets_one_probe_not_a_dial_per_caller() {
    let closed = support::closed_port();
    let target = closed.addr;
    let pool = Pool::builder(target).max_size(64).build().unwrap();
    let results = futures_util::future::join_all((0..200).map(|_| pool.get())).await;
    for r in &results {
        let err = r.as_ref().expect_err("nothing listens");
        assert_eq!(
            err.dial_error().map(|d| d.kind()),
            Some(DialErrorKind::Refused),
            "{err}"
        );
    }
    let dials = pool.dialer().stats().failures.refused;
    assert!(dials <= 2, "{dials} dials for 200 gets");
    assert!(pool.target_down());
    assert_eq!(pool.stats().create_failed, 200);

    // Once something listens, a probe finds it and gets succeed again.
    let listener = closed.listen();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match pool.get().await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(!pool.target_down());
    drop(listener);
}

#[tokio::test]
async fn cancelled_gets_leak_no_permit() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .max_size(4)
        .max_waiters(64)
        .build()
        .unwrap();
    let held: Vec<_> = futures_util::future::join_all((0..2).map(|_| pool.get())).await;
    for i in 0..10_000u32 {
        // Drop the get at a different point each time: before polling, after one poll, or
        // while waiting.
        let get = pool.get();
        match i % 3 {
            0 => drop(get),
            1 => {
                let mut task = tokio_test::task::spawn(get);
                let _ = task.poll();
            }
            _ => {
                tokio::select! {
                    _ = get => {}
                    _ = tokio::task::yield_now() => {}
                }
            }
        }
    }
    drop(held);
    let status = pool.status();
    assert!(status.size <= 4, "{status:?}");
    assert_eq!(status.waiting, 0, "{status:?}");
    assert_eq!(status.in_use, 0, "{status:?}");
    let all: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    assert!(all.iter().all(Result::is_ok), "max_size gets still succeed");
}
