//! Faults the pool exists for: a server killed mid-load and restarted, a stalled server, a
//! flaky server, port exhaustion at scale, and a storm of failures. Every test is bounded in
//! time and count and uses loopback only.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiloop::{Connector, DialErrorKind, Dialer, Pool, PoolError, SourceSet, Stream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use support::Acceptor;
use support::signals::{signal, wait_stopped};

/// One memcached round trip.
async fn version<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut S,
) -> std::io::Result<()> {
    conn.write_all(b"version\r\n").await?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).await?;
    if line.starts_with("VERSION ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected reply {line:?}")))
    }
}

/// A memcached connector whose handshake and check are both a `version` round trip, so that a
/// stalled server stalls the handshake.
struct Handshaking;

impl Connector for Handshaking {
    type Conn = Stream;
    type Error = std::io::Error;

    async fn connect(&self, mut stream: Stream) -> std::io::Result<Stream> {
        version(&mut stream).await?;
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> std::io::Result<()> {
        version(conn).await
    }
}

/// The bound on any one get: every timeout the pool has, plus slack for a loaded machine.
fn bound(wait: Duration, create: Duration, check: Duration) -> Duration {
    (wait + create + check) * 2
}

/// A get's start (since the test began), how long it took, and how it ended.
type Outcome = (Duration, Duration, Result<(), String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_load_then_restarted_on_the_same_port() {
    let Some(server) = support::memcached() else {
        return;
    };
    let addr = server.addr;
    let (wait, create, check) = (
        Duration::from_millis(300),
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    let pool = Pool::builder(addr)
        .max_size(16)
        .max_waiters(64)
        .wait_timeout(wait)
        .create_timeout(create)
        .check_timeout(check)
        .build()
        .unwrap();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<std::sync::Mutex<Vec<Outcome>>> = Arc::default();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (pool, stop, log) = (pool.clone(), stop.clone(), log.clone());
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let result = match pool.get().await {
                    Ok(mut conn) => match version(&mut conn).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            conn.discard();
                            Err(format!("round trip: {e}"))
                        }
                    },
                    Err(e) => Err(format!("get: {e}")),
                };
                let failed = result.is_err();
                log.lock()
                    .unwrap()
                    .push((t0 - started, t0.elapsed(), result));
                if failed {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = started.elapsed();
    drop(server);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let peak_size = pool.status().size;
    let peak_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let restarted_at = started.elapsed();
    let _server = support::memcached_on(Some(addr.port())).unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}

    let log = log.lock().unwrap();
    let limit = bound(wait, create, check);
    for (at, took, result) in log.iter() {
        assert!(*took <= limit, "a get at {at:?} took {took:?}: {result:?}");
    }
    // Requests that finished before the kill; those in flight at it may fail.
    let before_kill = log.iter().filter(|(at, took, _)| *at + *took < killed_at);
    assert!(before_kill.clone().count() > 0);
    let early: Vec<_> = before_kill.filter(|(_, _, r)| r.is_err()).collect();
    assert!(early.is_empty(), "failures before the kill: {early:?}");
    let outage_errors = log
        .iter()
        .filter(|(at, _, r)| *at > killed_at && *at < restarted_at && r.is_err())
        .count();
    assert!(outage_errors > 0, "the outage shows");
    // Within 1 s of the restart, and after it, every get succeeds, with a live connection.
    let settled = restarted_at + Duration::from_secs(1);
    let after: Vec<_> = log.iter().filter(|(at, _, _)| *at >= settled).collect();
    assert!(!after.is_empty());
    let failures: Vec<_> = after.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} failures after recovery: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(peak_size <= 16);
    assert!(
        peak_tasks <= tasks_before + 32 + 4,
        "tasks grew during the outage: {tasks_before} before, {peak_tasks} during"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_times_out_saturates_and_recovers_after_sigcont() {
    let Some(server) = support::memcached() else {
        return;
    };
    let pool = Pool::builder(server.addr)
        .connector(Handshaking)
        .max_size(4)
        .max_waiters(8)
        .wait_timeout(Duration::from_millis(300))
        .create_timeout(Duration::from_millis(300))
        .check_timeout(Duration::from_millis(200))
        // Every checkout checks with a round trip, however recently the connection was used.
        .check_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    signal(server.pid(), "-STOP");
    wait_stopped(server.pid());

    // The idle connection fails its check (a timeout), every new one times out in its
    // handshake, and past 4 creating and 8 waiting, gets are refused at once.
    let results = futures_util::future::join_all((0..64).map(|_| pool.get())).await;
    let status = pool.status();
    assert!(status.size <= 4, "{status:?}");
    let mut kinds = std::collections::HashMap::<&str, usize>::new();
    for r in &results {
        let err = r.as_ref().expect_err("a stopped server serves nothing");
        *kinds.entry(err.as_str()).or_default() += 1;
    }
    assert!(
        kinds.get("create_timeout").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );
    assert!(
        kinds.get("saturated").copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );
    let stats = pool.stats();
    assert!(stats.saturated > 0 && stats.timed_out > 0, "{stats:?}");
    assert!(pool.status().waiting <= 8);

    signal(server.pid(), "-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match pool.get().await {
            Ok(conn) => break conn,
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery after SIGCONT: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    version(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_server_that_accepts_and_never_reads_times_out_the_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let pool = Pool::builder(addr)
        .connector(Handshaking)
        .max_size(2)
        .create_timeout(Duration::from_millis(200))
        .wait_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let results = futures_util::future::join_all((0..6).map(|_| pool.get())).await;
    for r in &results {
        let err = r.as_ref().expect_err("nothing answers");
        assert!(
            matches!(err, PoolError::Timeout(_)),
            "expected a timeout, got {err}"
        );
    }
    assert!(pool.status().size <= 2);
    assert_eq!(pool.status().in_use, 0);
    server.abort();
}

/// A memcached-text server that closes a connection instead of answering its `nth` request,
/// or, with `idle`, closes connections that sit idle that long. It counts its closes.
async fn flaky_server(
    nth: usize,
    idle: Option<Duration>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closes = Arc::new(AtomicUsize::new(0));
    let counted = closes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let closes = counted.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut served = 0;
                loop {
                    let mut line = String::new();
                    let read = match idle {
                        Some(idle) => {
                            match tokio::time::timeout(idle, reader.read_line(&mut line)).await {
                                Ok(r) => r,
                                Err(_) => {
                                    closes.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                        }
                        None => reader.read_line(&mut line).await,
                    };
                    if !matches!(read, Ok(n) if n > 0) {
                        return;
                    }
                    served += 1;
                    if served == nth {
                        closes.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if reader
                        .get_mut()
                        .write_all(b"VERSION flaky\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, closes)
}

/// Runs `requests` round trips on `workers` tasks; returns (ok, failed).
async fn drive(pool: &Pool, requests: usize, workers: usize, pause: Duration) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicUsize::new(requests));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (pool, ok, failed, left) = (pool.clone(), ok.clone(), failed.clone(), left.clone());
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                match pool.get().await {
                    Ok(mut conn) => match version(&mut conn).await {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            conn.discard();
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_every_tenth_request_costs_only_the_requests_in_flight() {
    let (addr, closes) = flaky_server(10, None).await;
    let pool = Pool::builder(addr).max_size(8).build().unwrap();
    let (ok, failed) = drive(&pool, 3_000, 16, Duration::ZERO).await;
    let closes = closes.load(Ordering::Relaxed);
    println!(
        "{ok} ok, {failed} failed, {closes} closes, {:?}",
        pool.stats().closed
    );
    assert_eq!(ok + failed, 3_000);
    assert!(closes > 100, "the server closed {closes} connections");
    // Each close kills the one request it was answering, and nothing else.
    assert!(failed <= closes, "{failed} failures for {closes} closes");
    assert!(
        pool.stats().created as usize >= closes,
        "{:?}",
        pool.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_idle_connections_at_random_is_replaced_transparently() {
    let (addr, closes) = flaky_server(usize::MAX, Some(Duration::from_millis(15))).await;
    let pool = Pool::builder(addr).max_size(8).build().unwrap();
    // Pauses of up to 40 ms leave connections idle past the server's 15 ms now and then.
    let mut total = (0, 0);
    for pause in [0u64, 5, 20, 40] {
        let (ok, failed) = drive(&pool, 200, 8, Duration::from_millis(pause)).await;
        total = (total.0 + ok, total.1 + failed);
    }
    let closes = closes.load(Ordering::Relaxed);
    println!(
        "{total:?} (ok, failed), {closes} closes, {:?}",
        pool.stats().closed
    );
    assert!(closes > 0, "the server never closed an idle connection");
    // A close can only race a request that was sent as the server gave up on the connection.
    assert!(
        total.1 <= closes,
        "{} failures for {closes} closes",
        total.1
    );
    assert!(pool.stats().closed.broken > 0, "{:?}", pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_exhaustion_at_scale() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let range = support::blocks::SCALE;

    // One address: fails quickly, typed. Its connections stay open: a port in TIME_WAIT can be
    // reused as soon as the clock's second turns (`tcp_tw_reuse` = 2 compares whole seconds),
    // so closed ones would let a dial through now and then.
    let one = Dialer::builder()
        .sources(SourceSet::from_addrs([support::fresh_source(80, 1)]).unwrap())
        .local_port_range(range.clone())
        .build()
        .unwrap();
    let mut done = 0;
    let mut open = Vec::new();
    let err = loop {
        match one.connect(acceptor.addr).await {
            Ok(s) => {
                open.push(s);
                done += 1;
                assert!(done <= 64, "64 ports cannot carry more");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), DialErrorKind::PortsExhausted);
    drop(open);

    // 1,024 addresses: 50,000 churned dials, no error.
    let sources = SourceSet::from_addrs(
        (0..1_024u32).map(|i| support::fresh_source(81 + (i / 256) as u8, (i % 256) as u8)),
    )
    .unwrap();
    assert_eq!(sources.len(), 1_024);
    let many = Dialer::builder()
        .sources(sources)
        .local_port_range(range)
        .build()
        .unwrap();
    let left = Arc::new(AtomicUsize::new(50_000));
    let mut churners = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (many, left, target) = (many.clone(), left.clone(), acceptor.addr);
        churners.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                drop(many.connect(target).await?);
            }
            Ok::<_, multiloop::DialError>(())
        });
    }
    while let Some(joined) = churners.join_next().await {
        joined.unwrap().unwrap();
    }
    let stats = many.stats();
    assert_eq!(stats.dials_ok, 50_000);
    assert_eq!(stats.failures.total(), 0);
    assert_eq!(stats.distinct_sources, 1_024);
}

/// This process's resident memory, from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_storm_of_100000_failures_makes_a_handful_of_events_and_no_memory() {
    let (logs, _guard) = support::logs::capture();
    let acceptor = Acceptor::start("127.0.0.1").await;
    // Two sources with 64 ports each: once both are exhausted, every dial fails at once.
    let dialer = Dialer::builder()
        .sources(
            SourceSet::from_addrs([support::fresh_source(85, 1), support::fresh_source(85, 2)])
                .unwrap(),
        )
        .local_port_range(45_100..=45_163)
        .build()
        .unwrap();
    let mut first_failure = None;
    for _ in 0..1_000 {
        if let Err(e) = dialer.connect(acceptor.addr).await {
            first_failure = Some(e);
            break;
        }
    }
    assert_eq!(first_failure.unwrap().kind(), DialErrorKind::PortsExhausted);

    let started = Instant::now();
    for _ in 0..10_000 {
        assert!(dialer.connect(acceptor.addr).await.is_err());
    }
    let rss_after_10k = rss_bytes();
    for _ in 0..90_000 {
        assert!(dialer.connect(acceptor.addr).await.is_err());
    }
    let rss_after_100k = rss_bytes();
    let took = started.elapsed();
    let events = logs.events();
    assert!(
        events.len() <= 10,
        "{} events in {took:?}: {events:#?}",
        events.len()
    );
    assert!(dialer.stats().failures.ports_exhausted >= 100_000);
    // Failures are counted, not kept: 90,000 more add nothing that lasts.
    assert!(
        rss_after_100k <= rss_after_10k + 4 * 1024 * 1024,
        "RSS grew from {rss_after_10k} to {rss_after_100k} bytes"
    );
}
