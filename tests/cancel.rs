//! Callers that give up must cost nothing. Gets are cancelled by timeouts at random points and
//! requests are abandoned mid-flight; every assertion counts at the server (handshakes
//! accepted, sockets open at once) or at the client's socket table, not only in the pool.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiloop::{Connector, Pool, Stream, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::eventually;
use support::servers::{Counting, Reply};

/// A connector whose handshake takes `delay`, counting handshakes in progress.
#[derive(Clone)]
struct SlowHandshake {
    delay: Duration,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl SlowHandshake {
    fn new(delay: Duration) -> SlowHandshake {
        SlowHandshake {
            delay,
            now: Arc::default(),
            peak: Arc::default(),
        }
    }
}

impl Connector for SlowHandshake {
    type Conn = Stream;
    type Error = std::io::Error;

    async fn connect(&self, stream: Stream) -> std::io::Result<Stream> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> std::io::Result<()> {
        multiloop::Raw.check(conn).await
    }
}

/// A cheap random number for budgets, without a dependency.
fn budget_us(seed: &mut u64, max: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_cancelled_at_random_points_cost_no_handshake_and_no_socket_past_the_cap() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr).max_size(8).build().unwrap();
    let stop = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for t in 0..256u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
            let mut got = 0u64;
            // Bounded in count and time.
            for _ in 0..20_000 {
                if Instant::now() >= stop {
                    break;
                }
                let budget = Duration::from_micros(budget_us(&mut seed, 900));
                if let Ok(Ok(conn)) = tokio::time::timeout(budget, pool.get()).await {
                    got += 1;
                    tokio::task::yield_now().await;
                    drop(conn);
                }
            }
            got
        }));
    }
    let mut got = 0;
    for t in tasks {
        got += t.await.unwrap();
    }
    eventually("every dial finished", || pool.status().dialing == 0).await;
    let stats = pool.stats();
    let seen = server.seen.accepted();
    assert!(got > 0, "some gets succeeded");
    assert_eq!(
        seen as u64, stats.created,
        "every handshake the server saw is a created connection: {stats:?}"
    );
    assert!(
        server.seen.peak() <= 8,
        "at most max_size sockets were ever open at the server: {}",
        server.seen.peak()
    );
    let tw = ports::snapshot(server.addr, None).unwrap().time_wait();
    assert!(
        tw as u64 <= stats.closed.total(),
        "TIME_WAIT ({tw}) comes only from counted closes ({:?})",
        stats.closed
    );
    assert!(stats.created <= 8 + stats.closed.total(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_storm_on_a_slow_handshake_dials_at_most_max_size() {
    let server = Counting::start(Reply::Silent).await;
    // A handshake 100 times the callers' budget: even on CPUs so busy that a caller's timer
    // fires late, the callers have given up before the dials land.
    let connector = SlowHandshake::new(Duration::from_millis(200));
    let pool = Pool::builder(server.addr)
        .connector(connector.clone())
        .max_size(8)
        .build()
        .unwrap();
    let gets = (0..1_000).map(|_| tokio::time::timeout(Duration::from_millis(2), pool.get()));
    let outcomes = futures_util::future::join_all(gets).await;
    let timed_out = outcomes.iter().filter(|o| o.is_err()).count();
    assert!(
        timed_out > 900,
        "the handshake outlasts the budget: {timed_out}"
    );
    eventually("every dial finished", || pool.status().dialing == 0).await;
    let stats = pool.stats();
    assert_eq!(server.seen.accepted() as u64, stats.created, "{stats:?}");
    assert!(stats.created <= 8, "no more dials than the cap: {stats:?}");
    assert!(
        stats.handed_off > 0,
        "dials outlived their callers: {stats:?}"
    );
    assert_eq!(stats.closed.total(), 0, "nothing dialed was thrown away");
    assert_eq!(pool.status().size as u64, stats.created, "they are pooled");
    // The next caller takes one of them: no new handshake.
    let before = server.seen.accepted();
    let conn = pool.get().await.unwrap();
    drop(conn);
    assert_eq!(server.seen.accepted(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_in_progress_stay_under_max_concurrent_dials() {
    let server = Counting::start(Reply::Silent).await;
    let connector = SlowHandshake::new(Duration::from_millis(10));
    let pool = Pool::builder(server.addr)
        .connector(connector.clone())
        .max_size(32)
        .max_concurrent_dials(2)
        .build()
        .unwrap();
    let held = futures_util::future::join_all((0..32).map(|_| pool.get())).await;
    assert!(held.iter().all(Result::is_ok));
    assert_eq!(server.seen.accepted(), 32);
    let peak = connector.peak.load(Ordering::SeqCst);
    assert!(peak <= 2, "at most 2 handshakes at once, saw {peak}");
    assert!(pool.set_max_concurrent_dials(0).is_err());
}

/// A connector whose handshake takes 5 ms and fails every other time.
struct Flaky(AtomicUsize);

impl Connector for Flaky {
    type Conn = Stream;
    type Error = std::io::Error;

    async fn connect(&self, stream: Stream) -> std::io::Result<Stream> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if self.0.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            return Err(std::io::Error::other("handshake refused"));
        }
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> std::io::Result<()> {
        multiloop::Raw.check(conn).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dial_ends_as_a_connection_or_a_counted_failure() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .connector(Flaky(AtomicUsize::new(0)))
        .max_size(8)
        .build()
        .unwrap();
    let mut seed = 0x5EED;
    for _ in 0..300 {
        let budget = Duration::from_micros(budget_us(&mut seed, 8_000));
        if let Ok(Ok(conn)) = tokio::time::timeout(budget, pool.get()).await {
            drop(conn);
        }
    }
    eventually("every dial finished", || pool.status().dialing == 0).await;
    let stats = pool.stats();
    assert!(stats.create_errors > 0 && stats.created > 0, "{stats:?}");
    assert_eq!(
        server.seen.accepted() as u64,
        stats.created + stats.create_errors,
        "each handshake is a connection or a counted failure: {stats:?}"
    );
}

/// Reads one line through the `Conn`, byte by byte, so that nothing past it is consumed.
async fn read_line(conn: &mut multiloop::Conn<multiloop::Raw>) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = conn.read_u8().await?;
        if b == b'\n' {
            return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        line.push(b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_in_flight_never_reaches_the_next_caller() {
    let server = Counting::start(Reply::Echo(Duration::from_millis(2))).await;
    let pool = Pool::builder(server.addr).max_size(4).build().unwrap();
    let mismatches = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (pool, mismatches, answered) = (pool.clone(), mismatches.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = 0xDEAD_BEEF ^ (t + 7);
            for i in 0..60u64 {
                let Ok(mut conn) = pool.get().await else {
                    continue;
                };
                let id = format!("{t}-{i}");
                let budget = Duration::from_micros(budget_us(&mut seed, 4_000));
                let request = async {
                    conn.write_all(format!("req-{id}\n").as_bytes()).await?;
                    read_line(&mut conn).await
                };
                if let Ok(Ok(reply)) = tokio::time::timeout(budget, request).await {
                    answered.fetch_add(1, Ordering::SeqCst);
                    if reply != format!("reply-{id}") {
                        mismatches.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = pool.stats();
    assert!(answered.load(Ordering::SeqCst) > 0);
    assert_eq!(
        mismatches.load(Ordering::SeqCst),
        0,
        "a stale reply reached a caller"
    );
    assert!(
        stats.closed.in_flight > 0,
        "Raw cannot recover, so cancelled requests close: {stats:?}"
    );
    eventually("closes reach the server", || {
        server.seen.accepted() - server.seen.open() == pool.stats().closed.total() as usize
    })
    .await;
}

#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_recovers_cancelled_requests_instead_of_redialing() {
    let server = Counting::start(Reply::SlowMemcached(Duration::from_millis(3))).await;
    let pool = Pool::builder(server.addr)
        .connector(multiloop::memcached::Connector::new())
        .max_size(4)
        .build()
        .unwrap();
    let wrong = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (pool, wrong, answered) = (pool.clone(), wrong.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = 0xC0FFEE ^ (t + 3);
            for i in 0..60u64 {
                let Ok(mut conn) = pool.get().await else {
                    continue;
                };
                let key = format!("k{t}x{i}");
                let budget = Duration::from_micros(budget_us(&mut seed, 6_000));
                if let Ok(Ok(value)) = tokio::time::timeout(budget, conn.get(&key)).await {
                    answered.fetch_add(1, Ordering::SeqCst);
                    if value.as_deref() != Some(key.as_bytes()) {
                        wrong.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("recoveries finished", || pool.status().in_use == 0).await;
    let stats = pool.stats();
    assert!(answered.load(Ordering::SeqCst) > 0, "{stats:?}");
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "a stale value reached a caller"
    );
    assert!(
        stats.recovered > 0,
        "cancelled requests were recovered: {stats:?}"
    );
    assert_eq!(stats.closed.in_flight, 0, "none had to close: {stats:?}");
    assert!(
        server.seen.accepted() <= 4,
        "no dial storm: {}",
        server.seen.accepted()
    );
    assert_eq!(server.seen.accepted() as u64, stats.created);
}

#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_get_many_leaves_its_pipelined_connections_clean() {
    let server = Counting::start(Reply::SlowMemcached(Duration::from_millis(2))).await;
    let pool = Pool::builder(server.addr)
        .connector(multiloop::memcached::Connector::new())
        .max_size(2)
        .build()
        .unwrap();
    let keys = || (0..2_000).map(|i| format!("key{i}"));
    for budget_ms in [1, 3, 7, 15] {
        let cut = tokio::time::timeout(
            Duration::from_millis(budget_ms),
            multiloop::memcached::get_many(&pool, keys(), 100),
        )
        .await;
        assert!(
            cut.is_err(),
            "40 chunks at 2 ms each outlast {budget_ms} ms"
        );
    }
    eventually("recoveries finished", || pool.status().in_use == 0).await;
    let batch = multiloop::memcached::get_many(&pool, keys(), 100).await;
    assert!(batch.failed.is_empty(), "{:?}", batch.failed);
    assert_eq!(batch.answered, 2_000);
    assert!(batch.values.iter().all(|(k, v)| k == v));
    let stats = pool.stats();
    assert!(stats.recovered > 0, "{stats:?}");
    assert_eq!(stats.closed.in_flight, 0, "{stats:?}");
    assert_eq!(server.seen.accepted(), 2, "no new dials: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_on_a_dial_takes_a_connection_given_back_first() {
    let server = Counting::start(Reply::Silent).await;
    let connector = SlowHandshake::new(Duration::from_millis(300));
    let pool = Pool::builder(server.addr)
        .connector(connector.clone())
        .max_size(2)
        .build()
        .unwrap();
    let first = pool.get().await.unwrap();
    let first_addr = first.as_tcp().unwrap().local_addr().unwrap();
    // A second get must dial (a slot is free), and its handshake takes 300 ms.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let conn = pool.get().await.unwrap();
            conn.as_tcp().unwrap().local_addr().unwrap()
        })
    };
    // The first dial's task may still be finishing; the handshake in progress is the second's.
    eventually("the second get is in its handshake", || {
        connector.now.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(first);
    let got = waiter.await.unwrap();
    assert_eq!(got, first_addr, "the connection given back came first");
    eventually("the dial finished", || pool.status().dialing == 0).await;
    let stats = pool.stats();
    assert_eq!(stats.created, 2, "{stats:?}");
    assert_eq!(stats.handed_off, 1, "the dial's connection joined the pool");
    assert_eq!(pool.status().size, 2);
    assert_eq!(server.seen.accepted(), 2);
}

#[tokio::test]
async fn a_write_without_a_reply_is_kept_when_marked_idle() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr).max_size(1).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    conn.write_all(b"set k 0 0 1 noreply\r\nv\r\n")
        .await
        .unwrap();
    conn.mark_idle();
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    conn.write_all(b"req-unanswered\n").await.unwrap();
    drop(conn);
    eventually("the unmarked one closed", || {
        pool.stats().closed.in_flight == 1
    })
    .await;
    assert_eq!(pool.stats().created, 1, "the marked connection was reused");
}

/// The usual peek, and a check that is a round trip: it writes a line and waits for a byte. Against
/// `Reply::Silent` the check never finishes.
#[derive(Clone)]
struct RoundTripCheck;

impl Connector for RoundTripCheck {
    type Conn = Stream;
    type Error = std::io::Error;

    async fn connect(&self, stream: Stream) -> std::io::Result<Stream> {
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> std::io::Result<()> {
        conn.write_all(b"ping\n").await?;
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await?;
        Ok(())
    }

    fn peek(&self, conn: &mut Stream) -> Option<std::io::Result<()>> {
        multiloop::Raw.peek(conn)
    }
}

/// A pool of `size` connections to a server that never answers, whose every checkout of an
/// idle connection owes the round-trip check; all of them made and given back.
async fn idle_connections_owing_a_check(
    server: &Counting,
    size: usize,
    check_timeout: Duration,
) -> Pool<RoundTripCheck> {
    let pool = Pool::builder(server.addr)
        .connector(RoundTripCheck)
        .max_size(size)
        .check_after_idle(Duration::ZERO)
        .check_timeout(check_timeout)
        .build()
        .unwrap();
    // Just made: handed out without a check.
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.get().await.unwrap());
    }
    drop(held);
    eventually("the connections accepted", || {
        server.seen.accepted() == size
    })
    .await;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_cancelled_during_the_idle_check_closes_the_connection_it_was_checking() {
    let server = Counting::start(Reply::Silent).await;
    let pool = idle_connections_owing_a_check(&server, 1, Duration::from_secs(30)).await;
    // The check has written its line and waits for a reply that never comes; the caller gives
    // up first.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), pool.get()).await;
    assert!(gave_up.is_err(), "the check cannot have finished");
    // The connection it was checking, mid round trip, is closed, not given to the next caller.
    eventually("the half-checked connection closed at the server", || {
        server.seen.open() == 0
    })
    .await;
    assert_eq!(pool.status().size, 0);
    assert_eq!(pool.stats().closed.broken, 1);
    // The next get dials a new one (just made, so not checked).
    drop(pool.get().await.unwrap());
    eventually("a second connection accepted", || {
        server.seen.accepted() == 2
    })
    .await;
    assert_eq!(server.seen.open(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_failing_their_idle_check_are_replaced_within_the_same_get() {
    let server = Counting::start(Reply::Silent).await;
    let pool = idle_connections_owing_a_check(&server, 3, Duration::from_millis(50)).await;
    // Each idle connection's check times out in turn; the get closes all three and dials a
    // fourth instead of failing.
    let conn = pool
        .get()
        .await
        .expect("failed checks are not the caller's error");
    eventually("a fourth connection accepted", || {
        server.seen.accepted() == 4
    })
    .await;
    eventually("the three failed connections closed at the server", || {
        server.seen.open() == 1
    })
    .await;
    let stats = pool.stats();
    assert_eq!(
        (stats.closed.broken, stats.create_failed),
        (3, 0),
        "{stats:?}"
    );
    assert_eq!(pool.status().size, 1);
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_past_the_idle_timeout_closes_at_checkout_unchecked() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .connector(RoundTripCheck)
        .max_size(1)
        .idle_timeout(Some(Duration::from_millis(50)))
        .check_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Past the idle timeout: closed as idle at once, without the round trip it would owe (the
    // server never answers, so a check would hold the get for the check timeout).
    let started = Instant::now();
    let conn = tokio::time::timeout(Duration::from_secs(10), pool.get())
        .await
        .expect("no check for a connection about to close")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually("a second connection accepted", || {
        server.seen.accepted() == 2
    })
    .await;
    assert_eq!(pool.stats().closed.idle, 1);
    drop(conn);
}
