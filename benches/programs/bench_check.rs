//! What a checkout's check costs: 20,000 single-key gets through a pool of 64, fanned out, with
//! the memcached connector beside `Raw` (the same protocol by hand, checked by a peek), in one
//! process, interleaved and repeated.
//!
//! ```text
//! cargo run --release --example bench_check -- 127.0.0.1:11211 [ROUNDS]
//! ```
//!
//! It stores 20,000 keys with 100-byte values, then each round times one 20,000-key batch
//! through each pool, the order alternating, and prints both times and their ratio, then
//! min/median/max of the ratio.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use multiloop::{Pool, Raw};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const KEYS: usize = 20_000;

fn key(i: usize) -> String {
    format!("check:{i:08}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let rounds: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    if !(1..=100).contains(&rounds) {
        return Err("ROUNDS must be 1 to 100".into());
    }
    let memcached = Pool::builder(target.as_str())
        .connector(multiloop::memcached::Connector::new())
        .max_size(64)
        .build()?;
    let raw: Pool<Raw> = Pool::builder(target.as_str()).max_size(64).build()?;
    {
        let mut conn = memcached.get().await?;
        for i in 0..KEYS {
            conn.set(key(i), &[b'v'; 100], 0).await?;
        }
    }
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (m, r) = if round % 2 == 0 {
            let m = through_memcached(&memcached).await?;
            (m, through_raw(&raw).await?)
        } else {
            let r = through_raw(&raw).await?;
            (through_memcached(&memcached).await?, r)
        };
        let ratio = m.as_secs_f64() / r.as_secs_f64();
        println!(
            "round {round}: memcached connector {:.1} ms, Raw {:.1} ms, ratio {ratio:.2}",
            m.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "memcached connector / Raw, time: min {:.2} median {:.2} max {:.2}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

async fn through_memcached(
    pool: &Pool<multiloop::memcached::Connector>,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut results = pool.fan_out(0..KEYS, |mut conn, i| async move {
        conn.get(key(i)).await.map(|v| v.map_or(0, |v| v.len()))
    });
    while let Some(result) = results.next().await {
        if result?? != 100 {
            return Err("a value went missing".into());
        }
    }
    Ok(started.elapsed())
}

async fn through_raw(pool: &Pool<Raw>) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut results = pool.fan_out(0..KEYS, |conn, i| async move {
        let mut conn = BufReader::new(conn);
        conn.get_mut()
            .write_all(format!("get {}\r\n", key(i)).as_bytes())
            .await?;
        // VALUE line, the value, END.
        let mut reply = Vec::with_capacity(160);
        for _ in 0..3 {
            conn.read_until(b'\n', &mut reply).await?;
        }
        let mut conn = conn.into_inner();
        conn.mark_idle();
        Ok::<_, std::io::Error>(reply.len())
    });
    while let Some(result) = results.next().await {
        if result?? < 100 {
            return Err("a value went missing".into());
        }
    }
    Ok(started.elapsed())
}
