//! A checkout costs no round trip: connections used within `check_after_idle` get only the
//! connector's peek, counted at the server (redis's own command statistics).
#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

/// How many `PING`s the server has answered, from `INFO commandstats`.
async fn pings(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_recently_used_connection_is_handed_out_without_a_ping() {
    let Some(server) = support::redis(&[]) else {
        return;
    };
    let url = format!("redis://{}", server.addr);
    let observer = redis::Client::open(url.as_str()).unwrap();
    let mut observer = observer.get_multiplexed_async_connection().await.unwrap();
    let pool = multiloop::redis::pool(&url)
        .unwrap()
        .max_size(1)
        .build()
        .unwrap();
    let before = pings(&mut observer).await;
    for i in 0..200 {
        let mut conn = pool.get().await.unwrap();
        let () = redis::cmd("SET")
            .arg("k")
            .arg(i)
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    assert_eq!(pool.stats().created, 1);
    // One PING: the probe when the connection was made. None for the 199 checkouts.
    assert_eq!(pings(&mut observer).await - before, 1);

    // Idle past the threshold: the next checkout checks, with one round trip.
    tokio::time::sleep(
        multiloop::PoolConfig::default().check_after_idle + Duration::from_millis(100),
    )
    .await;
    drop(pool.get().await.unwrap());
    assert_eq!(pings(&mut observer).await - before, 2);

    // With the threshold at zero, every checkout of an idle connection checks.
    let always = multiloop::redis::pool(&url)
        .unwrap()
        .max_size(1)
        .check_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    let before = pings(&mut observer).await;
    for _ in 0..50 {
        drop(always.get().await.unwrap());
    }
    assert_eq!(pings(&mut observer).await - before, 1 + 49);
}
