//! A batch of keys as multi-gets through the pool (`memcached::get_many`), timed: the
//! multiloop side of `scripts/bench-mget.sh`, which runs it beside `memcslap --test=mget`.
//!
//! ```text
//! cargo run --release --example bench_mget -- 127.0.0.1:11211 CONNECTIONS KEYS CHUNK
//! ```
//!
//! Keys are 20 bytes and values spread evenly over 50 to 5,000 bytes, as memcslap's (Debian's
//! libmemcached 1.1: 2,000 of its items hold about 5.2 MB). It stores the keys, then runs
//! CONNECTIONS batches of KEYS keys at once on a pool of CONNECTIONS, each batch in chunks of
//! CHUNK, on tokio's default multi-thread runtime, and prints `keys_per_s=… seconds=…` for the timed part only.

use std::sync::Arc;
use std::time::Instant;

use multiloop::Pool;
use multiloop::memcached::{Connector, Dialect};

fn key(i: usize) -> String {
    format!("bench:{i:014}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tokio's default multi-thread runtime, as services run; MULTILOOP_BENCH_THREADS=N sets its
    // workers, and N = 0 a current-thread runtime.
    let threads: Option<usize> = std::env::var("MULTILOOP_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let runtime = match threads {
        None => tokio::runtime::Runtime::new()?,
        Some(0) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(run())
}

/// MULTILOOP_BENCH_DIALECT=text|meta; otherwise the connector learns it (meta on memcached 1.6+).
fn dialect() -> Dialect {
    match std::env::var("MULTILOOP_BENCH_DIALECT").as_deref() {
        Ok("text") => Dialect::Text,
        Ok("meta") => Dialect::Meta,
        _ => Dialect::Auto,
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let connections: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let keys: usize = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let chunk: usize = args.next().map_or(Ok(500), |s| s.parse())?;
    let pool = Pool::builder(target.as_str())
        .connector(Connector::new().dialect(dialect()))
        .max_size(connections)
        // C batches share C connections: on a loaded machine a batch's worker may wait longer
        // than the default second for one. This measures throughput, not shedding.
        .wait_timeout(std::time::Duration::from_secs(30))
        .build()?;
    let value = vec![b'v'; 5_000];
    {
        let mut conn = pool.get().await?;
        for i in 0..keys {
            let len = 50 + (i * 7_919) % 4_951;
            conn.set(key(i), &value[..len], 0).await?;
        }
    }
    // The keys exist before the request, as a batch endpoint's do (and memcslap's); get_many
    // borrows them.
    let names: Arc<Vec<String>> = Arc::new((0..keys).map(key).collect());
    // MULTILOOP_BENCH_WARM=1: one untimed round first, as in a service that has served batches
    // before (its heap already grown).
    if std::env::var("MULTILOOP_BENCH_WARM").is_ok_and(|v| !v.is_empty()) {
        round(&pool, connections, &names, chunk).await?;
    }
    let started = Instant::now();
    let (found, failed) = round(&pool, connections, &names, chunk).await?;
    let seconds = started.elapsed().as_secs_f64();
    if failed > 0 || found != keys * connections {
        return Err(format!(
            "{found} of {} keys found, {failed} chunks failed",
            keys * connections
        )
        .into());
    }
    println!(
        "keys_per_s={:.0} seconds={seconds:.4}",
        (keys * connections) as f64 / seconds
    );
    Ok(())
}

/// `connections` batches of `keys` keys at once, each a task of its own, as concurrent requests
/// of a service would be: each request's batch lives until that request is answered (here, its
/// values counted), not until every request is. Returns keys found and chunks failed.
async fn round(
    pool: &Pool<multiloop::memcached::Connector>,
    connections: usize,
    names: &Arc<Vec<String>>,
    chunk: usize,
) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let batches: Vec<_> = (0..connections)
        .map(|_| {
            let (pool, names) = (pool.clone(), names.clone());
            tokio::spawn(async move {
                let batch = multiloop::memcached::get_many(&pool, names.iter(), chunk).await;
                if let Some((n, e)) = batch.failed.first() {
                    eprintln!("a chunk of {n} keys failed: {e}");
                }
                (batch.values.len(), batch.failed.len())
            })
        })
        .collect();
    let (mut found, mut failed) = (0, 0);
    for batch in batches {
        let (f, e) = batch.await?;
        found += f;
        failed += e;
    }
    Ok((found, failed))
}
