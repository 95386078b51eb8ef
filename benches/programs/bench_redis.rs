//! GET throughput and latency through a multiloop pool of redis-rs connections, each request
//! checking a connection out and giving it back, for `scripts/bench-e2e.sh`, which runs it
//! beside `redis-benchmark -t get`.
//!
//! ```text
//! cargo run --release --features redis --example bench_redis -- redis://127.0.0.1:6379 50 200000
//! ```
//!
//! Arguments: the redis URL, the concurrency (tasks, and the pool's max_size), and the number of
//! GETs. It reads the key redis-benchmark uses, `key:__rand_int__`, as written by its SET test
//! (so the value size is redis-benchmark's `-d`). Each task loops: `pool.get()`, one GET, the
//! connection back to the pool; latency includes the checkout. Prints `rps=… p50_ms=… p99_ms=…`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use redis::AsyncCommands;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let concurrency: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    let requests: u64 = args.next().map_or(Ok(200_000), |s| s.parse())?;
    if concurrency == 0 || concurrency > 1024 || requests == 0 || requests > 100_000_000 {
        return Err("concurrency must be 1 to 1024, requests 1 to 100,000,000".into());
    }
    let pool = multiloop::redis::pool(&url)?
        .max_size(concurrency)
        .build()?;
    // Warm: one connection per task.
    drop(futures_util::future::join_all((0..concurrency).map(|_| pool.get())).await);

    let left = Arc::new(AtomicU64::new(requests));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (pool, left) = (pool.clone(), left.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t0 = Instant::now();
                let mut conn = pool.get().await?;
                let _: Option<Vec<u8>> = conn.get("key:__rand_int__").await?;
                drop(conn);
                latencies.push(t0.elapsed());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        });
    }
    let mut all = Vec::with_capacity(requests as usize);
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined?.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "rps={:.0} p50_ms={:.3} p99_ms={:.3}",
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
