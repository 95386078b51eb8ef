//! The pool under faults: edge configurations under concurrency, handshakes that fail or
//! hang while many gets wait, a refused target, connections given back mid-request while the
//! pool shrinks or closes, or while the runtime of their recovery shuts down. Handshakes are
//! counted at the server; sockets held at once at the client (`support::faulty`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use multiloop::{Pool, PoolError, TimeoutKind};

use support::eventually;
use support::faulty::{Test, busy_threads, quick};
use support::servers::{Counting, Reply};

/// Edge configurations under 32 concurrent tasks: each get ends with a documented error or a
/// connection, within its bounds; no panic; the cap holds at the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_configurations_fail_with_documented_errors_and_never_hang() {
    let _busy = busy_threads();
    // (max_size, max_waiters, wait_timeout in ms, max_concurrent_dials)
    for (max_size, max_waiters, wait_ms, dials) in [
        (1, 0, 0, 1),
        (1, 1024, 0, 1),
        (1, 0, 20, 1),
        (2, 4, 5, 1),
        (4, 1, 0, 4),
    ] {
        let config = format!(
            "max_size {max_size}, max_waiters {max_waiters}, wait {wait_ms} ms, dials {dials}"
        );
        let server = Counting::start(Reply::Silent).await;
        let connector = quick();
        let pool = Pool::builder(server.addr)
            .connector(connector.clone())
            .max_size(max_size)
            .max_waiters(max_waiters)
            .wait_timeout(Duration::from_millis(wait_ms))
            .max_concurrent_dials(dials)
            .create_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let bound = Duration::from_millis(wait_ms) + Duration::from_secs(3);
        let served = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (pool, served) = (pool.clone(), served.clone());
                tokio::spawn(async move {
                    for _ in 0..40 {
                        match tokio::time::timeout(bound, pool.get()).await {
                            Err(_) => panic!("a get outlived its wait and create timeouts"),
                            Ok(Ok(conn)) => {
                                served.fetch_add(1, Ordering::Relaxed);
                                tokio::task::yield_now().await;
                                drop(conn);
                            }
                            Ok(Err(
                                PoolError::Timeout(TimeoutKind::Wait) | PoolError::Saturated,
                            )) => {}
                            Ok(Err(e)) => panic!("undocumented for a busy pool: {e}"),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap_or_else(|e| panic!("{config}: {e}"));
        }
        assert!(served.load(Ordering::Relaxed) > 0, "{config}: none served");
        eventually("the dials finished", || pool.status().dialing == 0).await;
        assert!(
            connector.client_peak() <= max_size,
            "{config}: {} at once (the server saw {})",
            connector.client_peak(),
            server.seen.peak()
        );
        assert_eq!(
            server.seen.accepted() as u64,
            pool.stats().created,
            "{config}"
        );
        let all = futures_util::future::join_all((0..max_size).map(|_| pool.get())).await;
        assert!(
            all.iter().all(Result::is_ok),
            "{config}: {:?}",
            pool.status()
        );
    }
}

/// Handshakes failing (every 3rd) or hanging past the create timeout (every 5th) while 48
/// gets wait on a pool of 8: a failure reaches at most the get that started that dial, the
/// others are served; nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_handshakes_fail_only_their_own_gets() {
    let server = Counting::start(Reply::Silent).await;
    let connector = Test {
        failing: Arc::new(AtomicBool::new(true)),
        ..quick()
    };
    let pool = Pool::builder(server.addr)
        .connector(connector.clone())
        .max_size(8)
        .create_timeout(Duration::from_millis(200))
        .wait_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let gets = (0..48).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let got = tokio::time::timeout(Duration::from_secs(5), pool.get()).await;
            let got = got.expect("a get outlived its timeouts");
            tokio::time::sleep(Duration::from_millis(2)).await;
            got.map(drop)
        })
    });
    let (mut backend, mut create) = (0, 0);
    for got in futures_util::future::join_all(gets).await {
        match got.unwrap() {
            Ok(()) => {}
            Err(PoolError::Backend(_)) => backend += 1,
            Err(PoolError::Timeout(TimeoutKind::Create)) => create += 1,
            Err(e) => panic!("not an error of a dial: {e}"),
        }
    }
    let (failed, hung) = (
        connector.failed.load(Ordering::SeqCst),
        connector.hung.load(Ordering::SeqCst),
    );
    assert!(failed > 0 && hung > 0, "the faults ran: {failed} {hung}");
    assert!(
        backend <= failed,
        "{backend} gets failed for {failed} handshakes"
    );
    assert!(
        create <= hung,
        "{create} gets timed out for {hung} hung handshakes"
    );
    eventually("the dials finished", || pool.status().dialing == 0).await;
    let stats = pool.stats();
    assert_eq!(stats.create_errors as usize, failed + hung, "{stats:?}");
    assert_eq!(
        server.seen.accepted() as u64,
        stats.created + (failed + hung) as u64,
        "every handshake the server saw is a connection or a counted failure"
    );
    eventually("the server holds the pool's", || {
        server.seen.open() == pool.status().size
    })
    .await;
    // No permit lost to a failed dial.
    connector.failing.store(false, Ordering::SeqCst);
    let all = futures_util::future::join_all((0..8).map(|_| pool.get())).await;
    assert!(all.iter().all(Result::is_ok), "{:?}", pool.status());
    assert!(connector.client_peak() <= 8);
}

/// A refused target: 100 gets at once all fail with the refusal, and only a few of them dial
/// (one probes, the others get its error at once); nothing stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_fails_a_crowd_of_gets_with_few_dials() {
    let closed = support::closed_port();
    let pool = Pool::builder(closed.addr)
        .connector(quick())
        .max_size(16)
        .build()
        .unwrap();
    let gets = (0..100).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), pool.get())
                .await
                .expect("a get outlived its timeouts")
                .map(drop)
        })
    });
    for got in futures_util::future::join_all(gets).await {
        match got.unwrap() {
            Err(PoolError::Dial(e)) if e.kind() == multiloop::DialErrorKind::Refused => {}
            other => panic!("not the refusal: {other:?}"),
        }
    }
    let refused = pool.dialer().stats().failures.refused;
    assert!(
        refused <= 10,
        "{refused} dials for 100 gets to a refused target"
    );
    let status = pool.status();
    assert!(status.size == 0 && status.dialing == 0, "{status:?}");
}

/// Connections given back mid-request, recovering while the pool shrinks, then closes: once
/// recovered they close past the new cap, and after the close none stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_recovered_during_a_shrink_or_close_respect_it() {
    for close in [false, true] {
        let server = Counting::start(Reply::Silent).await;
        let connector = Test {
            recover_after: Some(Duration::from_millis(150)),
            ..quick()
        };
        let pool = Pool::builder(server.addr)
            .connector(connector.clone())
            .max_size(6)
            .build()
            .unwrap();
        let held = futures_util::future::join_all((0..6).map(|_| pool.get())).await;
        for mut conn in held.into_iter().map(Result::unwrap) {
            conn.pending = true;
        }
        assert_eq!(pool.status().in_use, 6, "recovering counts as in use");
        if close {
            pool.close();
        } else {
            pool.resize(2).unwrap();
        }
        let n = if close { 0 } else { 2 };
        eventually("recovered", || pool.stats().recovered == 6).await;
        eventually(&format!("close {close}: the server holds {n}"), || {
            server.seen.open() <= n
        })
        .await;
        let status = pool.status();
        assert!(status.size <= n && status.idle <= n, "{status:?}");
        assert_eq!(server.seen.accepted(), 6);
    }
}
/// A connection given back mid-request on a runtime that then shuts down, while it made its
/// connections on another: the recovery task is dropped with the runtime, and the connection,
/// its reply still on its way, must close, not go back to the store for the next caller.
#[test]
fn a_recovery_dropped_with_its_runtime_closes_the_connection() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let server = main.block_on(Counting::start(Reply::Silent));
    // The recovery task dropped before it ran, then mid-way.
    for started in [false, true] {
        let pool = Pool::builder(server.addr)
            .connector(Test {
                recover_after: Some(Duration::from_secs(30)),
                ..quick()
            })
            .max_size(1)
            .build()
            .unwrap();
        let mut conn = main.block_on(pool.get()).unwrap();
        conn.pending = true;
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Given back there: its recovery task runs on that runtime, which then shuts down.
        other.block_on(async move {
            drop(conn);
            if started {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        drop(other);
        main.block_on(async {
            if let Ok(Ok(next)) = tokio::time::timeout(Duration::from_secs(2), pool.get()).await {
                assert!(!next.pending, "{started}: a request in flight, handed out");
            }
            let stats = pool.stats();
            assert_eq!(stats.closed.in_flight, 1, "{started}: {stats:?}");
        });
    }
}

/// A target that stalls (its listen queue full, so SYNs go unanswered) with a create timeout
/// below the dialer's connect timeout: the dial cut short by the create timeout marks the
/// target down, so the next gets fail at once with the timeout instead of each waiting out
/// its own create timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_cut_short_by_the_create_timeout_marks_a_stalled_target_down() {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(1).unwrap();
    let target = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the listen queue: connections the listener never accepts.
    let mut filling = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&target.into());
        filling.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pool = Pool::builder(target)
        .max_size(4)
        .create_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let first = pool.get().await.map(drop).unwrap_err();
    assert!(
        matches!(first, PoolError::Timeout(TimeoutKind::Create)),
        "{first:?}"
    );
    assert!(
        pool.target_down(),
        "the stalled dial marked the target down"
    );
    // The next get fails on the fast path, with the last dial error: a dial of its own would
    // have been cut short by the create timeout again (the dialer's connect timeout is 2 s).
    let next = pool.get().await.map(drop).unwrap_err();
    assert_eq!(
        next.dial_error().map(|e| e.kind()),
        Some(multiloop::DialErrorKind::Timeout),
        "{next:?}"
    );
    drop(filling);
}
