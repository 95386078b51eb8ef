//! The pool's metrics, scraped over HTTP from `metrics-exporter-prometheus` and parsed from the
//! text format: OpenTelemetry's connection-pool names, labelled with the pool's name.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multiloop::{Pool, PoolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::servers::{Counting, Reply};

/// `GET /metrics` over a plain TCP connection, parsed into series → value.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the series named `name` whose labels include every one of `labels`.
fn find(series: &HashMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    series
        .iter()
        .find(|(k, _)| {
            (k.starts_with(&format!("{name}{{")) || k.as_str() == name)
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_exports_the_open_telemetry_names_over_http() {
    let listen: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .expect("the recorder and its listener");
    let server = Counting::start(Reply::Silent).await;
    let pool = Pool::builder(server.addr)
        .name("cache")
        .max_size(8)
        .min_idle(1)
        .build()
        .unwrap();
    let held = (pool.get().await.unwrap(), pool.get().await.unwrap());
    drop(held);
    let in_use = pool.get().await.unwrap();
    pool.pause();
    for _ in 0..3 {
        assert!(matches!(pool.get().await, Err(PoolError::Paused)));
    }
    pool.resume();
    // The reaper publishes once per tick (at most a second).
    let name = r#"db_client_connection_pool_name="cache""#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let series = loop {
        let series = scrape(listen).await;
        if find(
            &series,
            "multiloop_pool_gets_shed",
            &[name, r#"reason="paused""#],
        ) == Some(3.0)
        {
            break series;
        }
        assert!(Instant::now() < deadline, "never published: {series:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let count = |state: &str| {
        let state = format!(r#"db_client_connection_state="{state}""#);
        find(&series, "db_client_connection_count", &[name, &state])
    };
    assert_eq!(count("idle"), Some(1.0), "{series:#?}");
    assert_eq!(count("used"), Some(1.0), "{series:#?}");
    assert_eq!(
        find(&series, "db_client_connection_max", &[name]),
        Some(8.0)
    );
    assert_eq!(
        find(&series, "db_client_connection_idle_min", &[name]),
        Some(1.0)
    );
    assert_eq!(
        find(&series, "db_client_connection_pending_requests", &[name]),
        Some(0.0)
    );
    // The histograms, rendered as summaries: one wait per get that was served.
    assert_eq!(
        find(&series, "db_client_connection_wait_time_count", &[name]),
        Some(3.0),
        "{series:#?}"
    );
    assert_eq!(
        find(&series, "db_client_connection_create_time_count", &[name]),
        Some(2.0)
    );
    assert_eq!(
        find(&series, "db_client_connection_use_time_count", &[name]),
        Some(2.0)
    );
    assert!(
        find(
            &series,
            "multiloop_dial_failures",
            &[name, r#"kind="refused""#]
        )
        .is_some(),
        "{series:#?}"
    );
    drop(in_use);
}
