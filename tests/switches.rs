//! Every switch keeps the cap as the server sees it: after `resize(n)` the pool holds at most `n`
//! sockets once its connections are back, idle or busy, paused or not, including connections
//! of dials whose caller was served first; after `close()` none, whatever it races with. Every
//! assertion counts at the server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiloop::{Connector, Pool, Stream};

use support::eventually;
use support::servers::{Counting, Reply};

/// A connector whose handshake takes `delay`, so that a connection given back can reach a
/// waiting get before the dial made for it finishes.
#[derive(Clone)]
struct SlowHandshake(Duration);

impl Connector for SlowHandshake {
    type Conn = Stream;
    type Error = std::io::Error;

    async fn connect(&self, stream: Stream) -> std::io::Result<Stream> {
        tokio::time::sleep(self.0).await;
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> std::io::Result<()> {
        multiloop::Raw.check(conn).await
    }
}

/// A pool of 8 that holds 8 sockets, 4 of them from dials whose callers were served by
/// connections given back while the dials ran; the 4 callers still hold what they were
/// served.
async fn eight_with_four_served_first(
    server: &Counting,
) -> (Pool<SlowHandshake>, Vec<multiloop::Conn<SlowHandshake>>) {
    let pool = Pool::builder(server.addr)
        .connector(SlowHandshake(Duration::from_millis(300)))
        .max_size(8)
        .idle_timeout(None)
        .max_lifetime(None)
        .build()
        .unwrap();
    let held = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
    let held: Vec<_> = held.into_iter().map(Result::unwrap).collect();
    let gets: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await })
        })
        .collect();
    eventually("four dials run", || pool.status().dialing == 4).await;
    // Given back while the dials run: each goes to a waiting get.
    drop(held);
    let mut served = Vec::new();
    for g in gets {
        served.push(g.await.unwrap().unwrap());
    }
    eventually("the dials finished", || pool.status().dialing == 0).await;
    eventually("the server holds 8", || server.seen.open() == 8).await;
    assert_eq!(server.seen.accepted(), 8);
    assert!(
        pool.stats().handed_off >= 4,
        "the dials outlived their callers: {:?}",
        pool.stats()
    );
    (pool, served)
}

async fn shrink(paused: bool, busy: bool) {
    let server = Counting::start(Reply::Silent).await;
    let (pool, served) = eight_with_four_served_first(&server).await;
    if !busy {
        drop(served);
        assert_eq!(pool.status().size, 8, "{:?}", pool.status());
        if paused {
            pool.pause();
        }
        pool.resize(4).unwrap();
    } else {
        if paused {
            pool.pause();
        }
        pool.resize(4).unwrap();
        // Connections in use finish first, then come back.
        drop(served);
    }
    if paused {
        pool.resume();
    }
    eventually(
        &format!("paused {paused}, busy {busy}: the server holds at most 4"),
        || server.seen.open() <= 4,
    )
    .await;
    let status = pool.status();
    assert!(status.size <= 4, "paused {paused}, busy {busy}: {status:?}");
    // And the cap stays: 16 gets at once never open a fifth socket.
    let many = futures_util::future::join_all((0..16).map(|_| async {
        let conn = pool.get().await;
        tokio::task::yield_now().await;
        conn.map(drop)
    }))
    .await;
    assert!(many.iter().all(Result::is_ok));
    assert!(server.seen.open() <= 4, "open {}", server.seen.open());
    let stats = pool.stats();
    assert_eq!(
        server.seen.accepted() as u64,
        stats.created,
        "every handshake is counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_of_an_idle_pool_reaches_connections_whose_caller_was_served_first() {
    shrink(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_of_an_idle_paused_pool_reaches_them_too() {
    shrink(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_of_a_busy_pool_holds_once_its_connections_are_back() {
    shrink(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_of_a_busy_paused_pool_holds_once_its_connections_are_back() {
    shrink(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_under_load_holds_at_the_server() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .connector(SlowHandshake(Duration::from_millis(2)))
        .max_size(32)
        .idle_timeout(None)
        .build()
        .unwrap();
    let stop = Instant::now() + Duration::from_millis(600);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                if Instant::now() >= stop {
                    break;
                }
                if let Ok(conn) = pool.get().await {
                    tokio::task::yield_now().await;
                    drop(conn);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    pool.resize(4).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    eventually("the dials finished", || pool.status().dialing == 0).await;
    let status = pool.status();
    assert!(status.size <= 4, "{status:?}");
    eventually("the server holds at most 4", || server.seen.open() <= 4).await;
}

/// `close` racing with busy gets, returns and dials whose callers were served first: no socket
/// stays open, in any of the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_racing_with_busy_tasks_leaves_no_socket_open() {
    for run in 0..24u64 {
        let server = Counting::start(Reply::Silent).await;
        let pool = Pool::builder(server.addr)
            .connector(SlowHandshake(Duration::from_micros(200 + 50 * run)))
            .max_size(16)
            .build()
            .unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let pool = pool.clone();
            let started = started.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10_000 {
                    match pool.get().await {
                        Ok(conn) => {
                            started.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            drop(conn);
                        }
                        Err(multiloop::PoolError::Closed) => return,
                        Err(_) => {}
                    }
                }
            }));
        }
        eventually("gets are served", || started.load(Ordering::Relaxed) > 200).await;
        pool.close();
        for t in tasks {
            t.await.unwrap();
        }
        eventually("the dials finished", || pool.status().dialing == 0).await;
        eventually(
            &format!("run {run}: the server holds none, {:?}", pool.status()),
            || server.seen.open() == 0,
        )
        .await;
        let status = pool.status();
        assert_eq!(status.size, 0, "run {run}: {status:?}");
    }
}

/// memcached's own count of its open connections (`curr_connections`), asked over a
/// connection of its own, which the count includes.
#[cfg(feature = "memcached")]
async fn memcached_connections(addr: std::net::SocketAddr) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"stats\r\n").await.unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(b"END\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "memcached closed the stats connection");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("STAT curr_connections "))
        .and_then(|n| n.trim().parse().ok())
        .expect("memcached reports curr_connections")
}

/// The scenario of a pool that served a big batch and went idle: a fresh pool of 32 serves two
/// 20,000-key batches, then is paused, shrunk to 4 and resumed. memcached holds at most 4 of
/// its connections at once after the shrink, and the pool keeps to 4 under the next batch.
#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_after_a_batch_holds_at_memcached() {
    let Some(server) = support::memcached() else {
        return;
    };
    // memcached's listeners and this count's own connection.
    let baseline = memcached_connections(server.addr).await;
    let pool = Pool::builder(server.addr)
        .connector(multiloop::memcached::Connector::new())
        .max_size(32)
        .build()
        .unwrap();
    for _ in 0..2 {
        let keys = (0..20_000).map(|i| format!("k{i}"));
        let batch = multiloop::memcached::get_many(&pool, keys, 100).await;
        assert!(batch.failed.is_empty(), "{:?}", batch.failed);
        assert_eq!(batch.answered, 20_000);
    }
    eventually("the batch's connections are back", || {
        let s = pool.status();
        s.in_use == 0 && s.dialing == 0
    })
    .await;
    let before = memcached_connections(server.addr).await - baseline;
    assert!(
        before > 4,
        "the batch used more than 4 connections: {before}"
    );
    pool.pause();
    pool.resize(4).unwrap();
    pool.resume();
    // The pool's own view at once; the server's once it has seen the closes.
    assert!(pool.status().size <= 4, "{:?}", pool.status());
    memcached_settles_at_most(server.addr, baseline, 4).await;
    let keys = (0..20_000).map(|i| format!("k{i}"));
    let batch = multiloop::memcached::get_many(&pool, keys, 100).await;
    assert!(batch.failed.is_empty(), "{:?}", batch.failed);
    memcached_settles_at_most(server.addr, baseline, 4).await;
    assert!(pool.status().size <= 4, "{:?}", pool.status());
}

/// Waits until memcached holds at most `n` connections beyond `baseline` (a count's own
/// connection may still be closing), failing after 5 s.
#[cfg(feature = "memcached")]
async fn memcached_settles_at_most(addr: std::net::SocketAddr, baseline: usize, n: usize) {
    let mut seen = usize::MAX;
    for _ in 0..500 {
        seen = memcached_connections(addr).await.saturating_sub(baseline);
        if seen <= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("memcached still holds {seen} of the pool's connections, more than {n}");
}
