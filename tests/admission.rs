//! The pool core: one admission path with one deadline, every close counted where the server
//! sees it, spare connections trimmed by the idle timeout, hostile numbers refused, no name
//! lookup in the builder, and storm summaries that say how many gets failed and why.

mod support;

use std::time::{Duration, Instant};

use multiloop::{Dialer, Pool, PoolError, TimeoutKind};

use support::eventually;
use support::servers::{Counting, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_get_waits_one_wait_timeout_in_all() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .max_size(2)
        .wait_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let bulkhead = pool.bulkhead("one");
    bulkhead.set_limit(1).unwrap();
    // The bulkhead's only permit is out for 300 ms; both connections for 700 ms.
    let permit = bulkhead.acquire().await.unwrap();
    let held = (pool.get().await.unwrap(), pool.get().await.unwrap());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(permit);
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(held);
    });
    // 300 ms for the permit leaves 100 ms for the pool, which frees a connection only at
    // 700 ms: with one deadline the get fails; with a deadline per stage it would succeed.
    let err = bulkhead
        .get()
        .await
        .expect_err("one deadline for both stages");
    assert!(
        matches!(err, PoolError::Timeout(TimeoutKind::Wait)),
        "{err}"
    );
    let stats = bulkhead.stats();
    assert_eq!(stats.timed_out, 0, "the bulkhead stage did not time out");
    assert_eq!(stats.failed_in_pool, 1, "{stats:?}");
    assert_eq!(
        pool.stats().timed_out,
        1,
        "counted once, in the pool's stage"
    );
}

#[tokio::test]
async fn a_bulkhead_timeout_is_counted_in_the_bulkhead() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .wait_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let bulkhead = pool.bulkhead("tight");
    bulkhead.set_limit(1).unwrap();
    let _conn = bulkhead.get().await.unwrap();
    let err = bulkhead.get().await.expect_err("the bulkhead is full");
    assert!(
        matches!(err, PoolError::Timeout(TimeoutKind::Wait)),
        "{err}"
    );
    assert_eq!(bulkhead.stats().timed_out, 1);
    assert_eq!(
        pool.stats().timed_out,
        0,
        "the pool's stage was never reached"
    );
    assert_eq!(pool.stats().gets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_close_and_drop_closes_are_all_counted_and_seen_by_the_server() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr).max_size(8).build().unwrap();
    let held = futures_util::future::join_all((0..8).map(|_| pool.get())).await;
    drop(held);
    assert_eq!(pool.status().size, 8);
    pool.resize(3).unwrap();
    assert_eq!(pool.stats().closed.other, 5);
    eventually("the server sees 5 closes", || server.seen.open() == 3).await;
    pool.close();
    assert_eq!(pool.stats().closed.other, 8);
    eventually("the server sees every close", || server.seen.open() == 0).await;
    assert_eq!(server.seen.accepted() as u64, pool.stats().closed.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_trims_spare_connections_under_light_load() {
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .max_size(16)
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let burst = futures_util::future::join_all((0..16).map(|_| pool.get())).await;
    drop(burst);
    assert_eq!(pool.status().size, 16);
    // One get every 10 ms: the most recent connection serves them all, the rest go idle.
    for _ in 0..150 {
        drop(pool.get().await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = pool.status();
    assert!(status.size <= 2, "spare connections closed: {status:?}");
    assert!(pool.stats().closed.idle >= 14, "{:?}", pool.stats());
    eventually("the server sees the closes", || server.seen.open() <= 2).await;
}

#[tokio::test]
async fn hostile_numbers_are_config_errors_not_panics() {
    let target = "127.0.0.1:11211";
    let big = Duration::MAX;
    let cases: Vec<(Result<Pool, multiloop::ConfigError>, &str)> = vec![
        (Pool::builder(target).max_size(1 << 40).build(), "max_size"),
        (
            Pool::builder(target).max_size(usize::MAX).build(),
            "max_size",
        ),
        (
            Pool::builder(target).min_idle(usize::MAX).build(),
            "min_idle",
        ),
        (
            Pool::builder(target).max_waiters(usize::MAX).build(),
            "max_waiters",
        ),
        (
            Pool::builder(target).default_limit(usize::MAX).build(),
            "default_limit",
        ),
        (
            Pool::builder(target).max_concurrent_dials(0).build(),
            "max_concurrent_dials",
        ),
        (
            Pool::builder(target)
                .warm_up_concurrency(usize::MAX)
                .build(),
            "warm_up_concurrency",
        ),
        (
            Pool::builder(target).wait_timeout(big).build(),
            "wait_timeout",
        ),
        (
            Pool::builder(target).create_timeout(big).build(),
            "create_timeout",
        ),
        (
            Pool::builder(target).check_timeout(big).build(),
            "check_timeout",
        ),
        (
            Pool::builder(target).max_lifetime(Some(big)).build(),
            "max_lifetime",
        ),
        (
            Pool::builder(target).idle_timeout(Some(big)).build(),
            "idle_timeout",
        ),
        (
            Pool::builder(target).leak_threshold(Some(big)).build(),
            "leak_threshold",
        ),
        (
            Pool::builder(target).report_window(big).build(),
            "report_window",
        ),
        (
            Pool::builder(target).lifetime_jitter(f64::NAN).build(),
            "lifetime_jitter",
        ),
        (
            Pool::builder(target).port_warning(Some(f64::NAN)).build(),
            "port_warning",
        ),
    ];
    for (result, option) in cases {
        let err = result.expect_err(option);
        assert_eq!(err.option(), option, "{err}");
    }
    for (builder, option) in [
        (
            Dialer::builder().connect_timeout(Duration::MAX),
            "connect_timeout",
        ),
        (Dialer::builder().quarantine(Duration::MAX), "quarantine"),
        (Dialer::builder().keepalive(Duration::MAX), "keepalive"),
        (Dialer::builder().max_attempts(u32::MAX), "max_attempts"),
    ] {
        assert_eq!(builder.build().unwrap_err().option(), option);
    }
    // The runtime switches go through the same bounds.
    let pool = Pool::builder(target).build().unwrap();
    assert_eq!(pool.resize(usize::MAX).unwrap_err().option(), "max_size");
    assert_eq!(
        pool.set_max_waiters(usize::MAX).unwrap_err().option(),
        "max_waiters"
    );
    assert_eq!(
        pool.set_default_limit(usize::MAX).unwrap_err().option(),
        "default_limit"
    );
    assert_eq!(
        pool.bulkhead("x")
            .set_limit(usize::MAX)
            .unwrap_err()
            .option(),
        "limit"
    );
    assert_eq!(
        pool.bulkhead("x").set_limit(0).unwrap_err().option(),
        "limit"
    );
    assert_eq!(pool.status().max_size, 64, "nothing changed");
}

#[tokio::test]
async fn the_builder_resolves_nothing_and_a_get_fails_within_the_connect_timeout() {
    let started = Instant::now();
    let pool = Pool::builder("no-such-host.invalid:11211")
        .dialer(
            Dialer::builder()
                .connect_timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        )
        .build()
        .expect("a host name is looked up at dial time, not here");
    assert_eq!(pool.target().to_string(), "no-such-host.invalid:11211");
    let err = pool.get().await.expect_err("the name does not resolve");
    let dial = err.dial_error().expect("a dial error");
    assert!(
        matches!(
            dial.kind(),
            multiloop::DialErrorKind::Resolve | multiloop::DialErrorKind::Timeout
        ),
        "{err}"
    );
    assert_eq!(pool.dialer().stats().failures.total(), 1);
    // Bounded: the lookup ran under the connect timeout (plus scheduling).
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_storm_summary_says_how_many_gets_failed_and_why() {
    let (logs, _guard) = support::logs::capture();
    let closed = support::closed_port();
    let pool = Pool::builder(closed.addr)
        .report_window(Duration::from_millis(100))
        .build()
        .unwrap();
    let storm = 20_000;
    for _ in 0..storm {
        assert!(pool.get().await.is_err());
    }
    assert_eq!(
        pool.stats().create_failed,
        storm,
        "each failed get counted once"
    );
    let field = |e: &str, name: &str| -> u64 {
        e.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // Each failure is either the first of a window (logged with the previous window's count)
    // or counted in exactly one summary.
    let accounted = |events: &[String]| -> u64 {
        let refused: Vec<&String> = events
            .iter()
            .filter(|e| e.contains("gets failed: dial error, connection refused"))
            .collect();
        let firsts = refused.iter().filter(|e| !e.contains(" more ")).count() as u64;
        let carried: u64 = refused
            .iter()
            .map(|e| field(e, "suppressed_in_last_window"))
            .sum();
        let summarized: u64 = refused
            .iter()
            .filter(|e| e.contains(" more "))
            .map(|e| field(e, "count"))
            .sum();
        firsts + carried + summarized
    };
    // The reaper flushes the last window's summary once that window has ended (on a busy
    // machine, a tick or more later).
    eventually("every failure in a first line or a summary", || {
        accounted(&logs.events()) >= storm
    })
    .await;
    let events = logs.events();
    assert!(
        events.iter().any(|e| e.contains(" more gets")),
        "{events:#?}"
    );
    assert_eq!(accounted(&events), storm, "{events:#?}");
    assert!(events.len() <= 20, "a handful of events: {}", events.len());
}
