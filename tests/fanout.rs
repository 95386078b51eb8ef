//! Fan-out and bulkheads: the limits on every call site, counted at the server and in the
//! kernel's tables.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use multiloop::{Pool, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::servers::{Counting, Reply};
use support::wire::cancelled;
use support::{Acceptor, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_20000_items_keeps_at_most_max_size_sockets() {
    let Some(server) = support::memcached() else {
        return;
    };
    let target = server.addr;
    let pool = Pool::builder(target).max_size(64).build().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) || samples == 0 {
                let snap = tokio::task::spawn_blocking(move || ports::snapshot(target, None))
                    .await
                    .unwrap()
                    .unwrap();
                peak = peak.max(snap.established());
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (peak, samples)
        })
    };
    let mut results = pool.fan_out(0..20_000u32, |mut conn, i| async move {
        conn.write_all(format!("get fanout:{i}\r\n").as_bytes())
            .await?;
        let mut end = [0u8; 5];
        conn.read_exact(&mut end).await?;
        assert_eq!(&end, b"END\r\n");
        Ok::<_, std::io::Error>(i)
    });
    let mut seen = HashSet::new();
    while let Some(result) = results.next().await {
        seen.insert(result.unwrap().unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let (peak, samples) = sampler.await.unwrap();
    assert_eq!(seen.len(), 20_000);
    assert!(samples > 0);
    assert!(peak <= 64, "{peak} sockets to {target} at once");
    assert!(pool.stats().created <= 64);
    assert!(pool.status().size <= 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulkhead_limits_hold_and_change_at_runtime() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr)
        .max_size(16)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let bulkhead = pool.bulkhead("GetPostRecord");
    assert_eq!(bulkhead.stats().limit, 16, "the pool's default limit");
    bulkhead.set_limit(3).unwrap();

    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let pool = pool.clone();
        let inside = inside.clone();
        let peak = peak.clone();
        tasks.spawn(async move {
            let conn = pool.bulkhead("GetPostRecord").get().await.unwrap();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(conn);
        });
    }
    while tasks.join_next().await.is_some() {}
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    let stats = bulkhead.stats();
    assert_eq!(stats.acquired, 60);
    assert!(stats.peak_in_flight <= 3);
    assert_eq!(stats.in_flight, 0);

    // Lowered while permits are out, the limit takes effect as they come back.
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| bulkhead.acquire()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    bulkhead.set_limit(1).unwrap();
    drop(held);
    let one = bulkhead.acquire().await.unwrap();
    let two = tokio::time::timeout(Duration::from_millis(100), bulkhead.acquire()).await;
    assert!(two.is_err(), "a limit of 1 admits one");
    bulkhead.set_limit(2).unwrap();
    let two = bulkhead.acquire().await.unwrap();
    drop((one, two));

    // Other names get the default, which follows resize; zero is refused.
    let other = pool.bulkhead("ListPosts");
    assert_eq!(other.stats().limit, 16);
    pool.resize(8).unwrap();
    drop(other.acquire().await.unwrap());
    assert_eq!(other.stats().limit, 8);
    assert_eq!(other.set_limit(0).unwrap_err().option(), "limit");
    let names: Vec<String> = pool.bulkhead_stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["GetPostRecord", "ListPosts"]);
}

#[tokio::test]
async fn bulkhead_names_are_bounded() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let pool = Pool::builder(acceptor.addr).build().unwrap();
    let (logs, _guard) = support::logs::capture();
    for i in 0..multiloop::Bulkhead::MAX_PER_POOL + 50 {
        let _ = pool.bulkhead(&format!("endpoint-{i}"));
    }
    // 50 names past the bound, one warning, naming the bulkhead they share.
    let warnings = logs.events();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(r#"new names share the "(overflow)" bulkhead"#),
        "{warnings:?}"
    );
    let stats = pool.bulkhead_stats();
    assert_eq!(stats.len(), multiloop::Bulkhead::MAX_PER_POOL + 1);
    assert!(
        stats
            .iter()
            .any(|s| s.name == multiloop::Bulkhead::OVERFLOW_NAME)
    );
    assert_eq!(
        pool.bulkhead("yet-another").name(),
        multiloop::Bulkhead::OVERFLOW_NAME
    );
}

/// A bulkhead's get or acquire given up anywhere (polled once and dropped, timed out at
/// spread-out budgets, its task aborted), in the bulkhead's stage or in the pool's, leaves no
/// place in the bulkhead's queue and no permit out: afterwards exactly `limit` permits are free,
/// and the server never saw more sockets than the pool's cap. A busy thread runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulkhead_gets_given_up_anywhere_leave_no_place_and_no_permit() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Bounded: stopped at the end of the test, or after 20 s at the most.
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        })
    };
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .max_size(4)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let bulkhead = pool.bulkhead("cancelled");
    bulkhead.set_limit(2).unwrap();
    let gave_up = |pool: &Pool, n: u64| {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let pool = pool.clone();
            // Budgets from 0 to about 1 ms: each gives up after its first poll or while waiting.
            let budget = Duration::from_micros(i * 37 % 1_000);
            tasks.spawn(async move {
                let bulkhead = pool.bulkhead("cancelled");
                if i % 2 == 0 {
                    tokio::time::timeout(budget, bulkhead.get()).await.is_err()
                } else {
                    tokio::time::timeout(budget, bulkhead.acquire())
                        .await
                        .is_err()
                }
            });
        }
        tasks
    };

    // The bulkhead's stage: both permits out, so every get waits for one.
    let held = (
        bulkhead.get().await.unwrap(),
        bulkhead.acquire().await.unwrap(),
    );
    for _ in 0..100 {
        assert!(cancelled(bulkhead.get(), 1).await.is_none());
        assert!(cancelled(bulkhead.acquire(), 1).await.is_none());
    }
    let timed_out = gave_up(&pool, 64).join_all().await;
    assert!(timed_out.iter().all(|&t| t), "no permit was free");
    let aborted: Vec<_> = (0..32)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.bulkhead("cancelled").get().await.map(drop) })
        })
        .collect();
    eventually("32 gets wait on the bulkhead", || {
        bulkhead.stats().waiting == 32
    })
    .await;
    for task in &aborted {
        task.abort();
    }
    for task in aborted {
        assert!(task.await.unwrap_err().is_cancelled());
    }
    let stats = bulkhead.stats();
    assert_eq!(stats.waiting, 0, "every place was left: {stats:?}");
    assert_eq!(stats.in_flight, 2, "{stats:?}");
    assert_eq!(
        stats.acquired, 2,
        "no permit went to a get given up: {stats:?}"
    );
    drop(held);
    assert_eq!(bulkhead.stats().in_flight, 0);

    // The pool's stage: the bulkhead has room, the pool has none, so every get holds a
    // permit while it waits for a connection; given up, it lets the permit go.
    bulkhead.set_limit(8).unwrap();
    let conns: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.get()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let before = bulkhead.stats().acquired;
    for _ in 0..100 {
        assert!(cancelled(bulkhead.get(), 1).await.is_none());
    }
    assert_eq!(
        bulkhead.stats().acquired,
        before + 100,
        "each passed the bulkhead's stage"
    );
    gave_up(&pool, 64).join_all().await;
    let stats = bulkhead.stats();
    assert_eq!((stats.in_flight, stats.waiting), (0, 0), "{stats:?}");
    assert_eq!(pool.status().waiting, 0);
    drop(conns);

    // Exactly `limit` permits free: two at once, the third waits.
    bulkhead.set_limit(2).unwrap();
    let one = cancelled(bulkhead.acquire(), 1).await.unwrap().unwrap();
    let two = bulkhead.get().await.unwrap();
    assert!(cancelled(bulkhead.acquire(), 1).await.is_none());
    drop((one, two));
    assert!(
        server.seen.peak() <= 4,
        "at most max_size sockets at the server: {}",
        server.seen.peak()
    );
    assert_eq!(server.seen.accepted() as u64, pool.stats().created);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_a_bulkheads_waiting_gets_and_acquires_at_once() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    // A wait timeout far past the test's own guard: only the close can end the waits.
    let pool = Pool::builder(acceptor.addr)
        .max_size(4)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let bulkhead = pool.bulkhead("report");
    bulkhead.set_limit(1).unwrap();
    let held = bulkhead.acquire().await.unwrap();
    let get = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.bulkhead("report").get().await.map(drop) })
    };
    let acquire = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.bulkhead("report").acquire().await.map(drop) })
    };
    eventually("both wait on the bulkhead", || {
        bulkhead.stats().waiting == 2
    })
    .await;
    pool.close();
    for waiting in [get, acquire] {
        let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the close ended the wait")
            .unwrap();
        assert!(
            matches!(ended, Err(multiloop::PoolError::Closed)),
            "{ended:?}"
        );
    }
    drop(held);
    // A bulkhead first named after the close refuses too.
    let late = pool.bulkhead("late").get().await.map(drop);
    assert!(
        matches!(late, Err(multiloop::PoolError::Closed)),
        "{late:?}"
    );
    assert_eq!(bulkhead.stats().waiting, 0);
}
