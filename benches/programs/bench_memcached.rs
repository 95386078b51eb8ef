//! GET throughput and latency through a multiloop pool with the memcached connector, each
//! request checking a connection out and giving it back, for `scripts/bench-e2e.sh`, which runs
//! it beside `memcslap --test=get`.
//!
//! ```text
//! cargo run --release --example bench_memcached -- 127.0.0.1:11211 8 80000
//! ```
//!
//! Arguments: the server, the concurrency (tasks, and the pool's max_size: one connection per
//! task, as memcslap's one per thread), and the number of GETs in all. It stores 10,000 keys of
//! 20 bytes with values spread evenly over 50 to 5,000 bytes (memcslap's sizes), then each task
//! loops: `pool.get()`, one `get`, the connection back to the pool. Latency includes the
//! checkout. Prints `rps=… p50_ms=… p99_ms=…`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use multiloop::Pool;

const KEYS: u64 = 10_000;

fn key(i: u64) -> String {
    format!("bench:{i:014}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let concurrency: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let requests: u64 = args.next().map_or(Ok(80_000), |s| s.parse())?;
    if concurrency == 0 || concurrency > 1024 || requests == 0 || requests > 100_000_000 {
        return Err("concurrency must be 1 to 1024, requests 1 to 100,000,000".into());
    }
    let pool = Pool::builder(target.as_str())
        .connector(multiloop::memcached::Connector::new())
        .max_size(concurrency)
        .build()?;
    {
        let mut conn = pool.get().await?;
        let value = vec![b'v'; 5_000];
        for i in 0..KEYS {
            let len = 50 + (i as usize * 4_951 / KEYS as usize);
            conn.set(key(i), &value[..len], 0).await?;
        }
    }
    drop(futures_util::future::join_all((0..concurrency).map(|_| pool.get())).await);

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (pool, next) = (pool.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let t0 = Instant::now();
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                conn.get(key(n % KEYS)).await.map_err(|e| e.to_string())?;
                drop(conn);
                latencies.push(t0.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut all = Vec::with_capacity(requests as usize);
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "rps={:.0} p50_ms={:.3} p99_ms={:.3} created={}",
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pool.stats().created
    );
    Ok(())
}
