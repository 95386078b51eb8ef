//! The pool's invariants under attack: gets cancelled at every await point while connections
//! come back, the cap moves, the pool pauses and closes, with busy threads beside the test;
//! switches racing each other, returns and landing dials; the reaper's fills and sweeps.
//! Handshakes and open sockets are counted at the server; sockets open at once also at the
//! client, from the handshake on, because the server notices a close a moment late (a busy
//! server's peak can exceed the cap by a socket the client has already closed). Faults (edge
//! configurations, failing dials, recovery) are in `pool_redteam_faults.rs`.

mod support;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use multiloop::Pool;

use support::eventually;
use support::faulty::{Test, busy_threads, quick, rand, storm};
use support::servers::{Counting, Reply};

/// `resize` racing with `close` from another thread: the closed pool's cap stays 0, and a
/// connection given back after the close closes instead of staying idle in a closed pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_racing_with_close_never_reopens_the_cap() {
    let server = Counting::start(Reply::Silent).await;
    for run in 0..250 {
        let pool = Pool::builder(server.addr).max_size(4).build().unwrap();
        let held = [pool.get().await.unwrap(), pool.get().await.unwrap()];
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (pool, stop, spinning) = (pool.clone(), stop.clone(), spinning.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    pool.resize(3 + n % 2).unwrap();
                    spinning.store(true, Ordering::Relaxed);
                    n += 1;
                }
            })
        };
        while !spinning.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
        pool.close();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        drop(held);
        let status = pool.status();
        assert!(
            status.max_size == 0 && status.size == 0 && status.idle == 0,
            "run {run}: a closed pool holds connections: {status:?}"
        );
        eventually(&format!("run {run}: the server holds none"), || {
            server.seen.open() == 0
        })
        .await;
    }
}

/// Gets cancelled at every await point while connections come back, the cap moves up and
/// down, the pool pauses and resumes, and three threads keep the CPUs busy; then a close
/// while it all runs. Counted at the server: never more sockets than the largest cap, every
/// handshake a counted connection, no permit lost, and none open after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_gets_beside_every_switch_keep_the_cap_at_the_server() {
    let _busy = busy_threads();
    let server = Counting::start(Reply::Silent).await;
    let connector = quick();
    let pool = Pool::builder(server.addr)
        .connector(connector.clone())
        .max_size(8)
        .wait_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let odd = Arc::new(AtomicUsize::new(0));
    let tasks = storm(&pool, &stop, &odd);
    for i in 0..300usize {
        pool.resize([2, 8, 4, 6, 1, 8][i % 6]).unwrap();
        if i % 7 == 0 {
            pool.pause();
        }
        tokio::time::sleep(Duration::from_millis(1 + (i % 3) as u64)).await;
        if i % 7 == 0 {
            pool.resume();
        }
    }
    pool.resize(8).unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        odd.load(Ordering::Relaxed),
        0,
        "errors a live server never causes"
    );
    eventually("the dials finished", || pool.status().dialing == 0).await;
    eventually("every connection is back", || pool.status().in_use == 0).await;
    let status = pool.status();
    assert!(status.size <= status.max_size, "{status:?}");
    eventually(&format!("the server holds the pool's {status:?}"), || {
        server.seen.open() == pool.status().size
    })
    .await;
    assert!(
        connector.client_peak() <= 8,
        "the client held {} sockets at once, past the largest cap",
        connector.client_peak()
    );
    let stats = pool.stats();
    assert_eq!(server.seen.accepted() as u64, stats.created, "{stats:?}");
    // No permit lost: 8 held at once, dialing only what is missing.
    let (accepted, idle) = (server.seen.accepted(), pool.status().size);
    let all = futures_util::future::join_all((0..8).map(|_| pool.get())).await;
    assert!(
        all.iter().all(Result::is_ok),
        "8 of 8 after the storm: {:?}",
        pool.status()
    );
    assert_eq!(server.seen.accepted() - accepted, 8 - idle);
    drop(all);

    // A close while the storm runs: the waiters promised a connection at that moment close it.
    stop.store(false, Ordering::Relaxed);
    let tasks = storm(&pool, &stop, &odd);
    tokio::time::sleep(Duration::from_millis(100)).await;
    pool.close();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eventually("the dials finished", || pool.status().dialing == 0).await;
    eventually("the server holds none", || server.seen.open() == 0).await;
    let status = pool.status();
    assert!(status.size == 0 && status.idle == 0, "{status:?}");
    assert!(connector.client_peak() <= 8, "{}", connector.client_peak());
    assert_eq!(server.seen.accepted() as u64, pool.stats().created);
}

/// A get woken with an idle connection promised to it, then dropped before it took it, at
/// the moment the pool shrinks or closes: the promise passes back to the store, where the
/// connection must close, not wait idle past the cap (with no reaper after a close, forever).
#[tokio::test]
async fn a_get_dropped_with_a_connection_promised_leaves_none_past_a_shrink_or_close() {
    for close in [false, true] {
        let server = Counting::start(Reply::Silent).await;
        let pool = Pool::builder(server.addr)
            .connector(quick())
            .max_size(2)
            .build()
            .unwrap();
        let mut held = vec![pool.get().await.unwrap(), pool.get().await.unwrap()];
        {
            let mut waiting = pin!(pool.get());
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
            // Given back: promised to the waiting get, which is not polled again.
            held.pop();
            if close {
                pool.close();
            } else {
                pool.resize(1).unwrap();
            }
        }
        // Past the cap, the idle one closes at once; the one in use when it comes back.
        let status = pool.status();
        assert_eq!(status.idle, 0, "close {close}: {status:?}");
        drop(held);
        let n = if close { 0 } else { 1 };
        let status = pool.status();
        assert!(status.size <= n, "close {close}: {status:?}");
        eventually(&format!("close {close}: the server holds {n}"), || {
            server.seen.open() <= n
        })
        .await;
    }
}

/// A shrink at a random moment while connections are in use and dials are landing: once all
/// are back and the dials done, the pool holds at most the new cap at once, without waiting
/// for a reaper tick, and the server agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_racing_with_returns_and_landing_dials_holds_once_they_are_back() {
    let server = Counting::start(Reply::Silent).await;
    let mut seed = 99;
    for run in 0..40 {
        let pool = Pool::builder(server.addr)
            .connector(Test {
                handshake: Duration::from_millis(3),
                ..Test::default()
            })
            .max_size(8)
            .build()
            .unwrap();
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
        let gets: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get().await.map(drop) })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(rand(&mut seed, 6000))).await;
        let n = 1 + rand(&mut seed, 3) as usize;
        pool.resize(n).unwrap();
        drop(held);
        for g in gets {
            g.await.unwrap().unwrap();
        }
        eventually("the dials finished", || pool.status().dialing == 0).await;
        let status = pool.status();
        assert!(
            status.in_use == 0 && status.size <= n,
            "run {run}, cap {n}: {status:?}"
        );
        eventually(&format!("run {run}: the server holds {n}"), || {
            server.seen.open() <= n
        })
        .await;
        drop(pool);
        eventually("the pool's sockets closed", || server.seen.open() == 0).await;
    }
}

/// A warm-up beside the reaper's own fill (its first tick, 50 ms in) dials `min_idle`, not
/// up to `max_size`; then gets racing with the reaper's sweep, which takes every idle
/// connection out of the store for a moment, dial nothing: 2 tasks for a second on 64 warm
/// connections, the reaper sweeping every 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_and_the_sweep_dial_min_idle_and_no_more() {
    let _busy = busy_threads();
    let server = Counting::start(Reply::Silent).await;
    // A handshake slow enough that the warm-up is still dialing at the reaper's first tick.
    let connector = Test {
        handshake: Duration::from_millis(5),
        ..Test::default()
    };
    let pool = Pool::builder(server.addr)
        .connector(connector)
        .max_size(66)
        .min_idle(64)
        .idle_timeout(Some(Duration::from_millis(100)))
        .max_lifetime(None)
        .build()
        .unwrap();
    pool.warm_up().await.unwrap();
    eventually("64 warm", || pool.status().idle >= 64).await;
    eventually("the dials finished", || pool.status().dialing == 0).await;
    assert_eq!(pool.stats().created, 64, "the fills dialed past min_idle");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let conn = pool.get().await.unwrap();
                    tokio::task::yield_now().await;
                    drop(conn);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.created, 64, "dials beyond the warm ones: {stats:?}");
    assert_eq!(server.seen.accepted(), 64);
}
