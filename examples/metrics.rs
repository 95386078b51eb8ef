//! A pool's metrics for Prometheus: a pool named `cache` serves gets against a memcached, and
//! `metrics-exporter-prometheus` serves its series on a loopback port.
//!
//! ```text
//! cargo run --example metrics --features metrics -- 127.0.0.1:11211 127.0.0.1:9464
//! curl -s 127.0.0.1:9464/metrics | grep db_client_connection
//! ```
//!
//! It binds loopback only: the metrics name the target and the pool, which is nobody else's
//! business. It runs for `--seconds` (default 60), doing a few gets a second, and stops.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use multiloop::Pool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let listen: SocketAddr = args
        .next()
        .map_or(Ok(([127, 0, 0, 1], 9464).into()), |s| s.parse())?;
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    if !listen.ip().is_loopback() {
        return Err("serve metrics on a loopback address only".into());
    }
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()?;
    println!("metrics on http://{listen}/metrics for {seconds} s");
    let pool = Pool::builder(target.as_str())
        .name("cache")
        .max_size(8)
        .build()?;
    for _ in 0..seconds * 5 {
        match pool.get().await {
            Ok(mut conn) => {
                conn.write_all(b"version\r\n").await?;
                let mut reply = [0u8; 64];
                let _ = conn.read(&mut reply).await?;
            }
            Err(e) => eprintln!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
