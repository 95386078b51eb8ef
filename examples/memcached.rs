//! A pool of memcache-async connections: a set, then `get_multi` in chunks through `fan_out`.
//!
//! ```text
//! cargo run --example memcached --features memcached                  # 127.0.0.1:11211
//! cargo run --example memcached --features memcached -- 127.0.0.1:22122
//! ```

use futures_util::StreamExt;
use multiloop::Pool;

const KEYS: usize = 10_000;
const CHUNK: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11211".to_string());
    let pool = Pool::builder(target.as_str())
        .connector(multiloop::memcached::Connector::new())
        .max_size(16)
        .build()?;

    let mut conn = pool.get().await?;
    for i in 0..KEYS {
        conn.set(format!("example:{i}"), format!("value {i}").as_bytes(), 60)
            .await?;
    }
    drop(conn);
    println!("set {KEYS} keys on {target}");

    // 100 chunks of 100 keys, at most 16 chunks in flight, on at most 16 connections.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("example:{i}")).collect();
    let chunks: Vec<Vec<String>> = keys.chunks(CHUNK).map(<[String]>::to_vec).collect();
    let mut results = pool.fan_out(chunks, |mut conn, chunk| async move {
        conn.get_multi(&chunk).await
    });
    let mut found = 0;
    while let Some(result) = results.next().await {
        found += result??.len();
    }
    println!("get_multi found {found} of {KEYS} keys");
    println!("{:?}", pool.status());
    println!("{:?}", pool.stats());
    Ok(())
}
