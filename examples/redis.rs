//! A pool of redis connections dialed from spread sources.
//!
//! ```text
//! cargo run --example redis --features redis                              # redis://127.0.0.1:6379
//! cargo run --example redis --features redis -- redis://:password@127.0.0.1:6379/0
//! cargo run --example redis --features redis -- redis+unix:///run/redis/redis.sock
//! ```
//!
//! If redis runs in protected mode without a password, the first `get` fails with
//! `multiloop::redis::Error::ProtectedMode`, whose message says how to fix the server.

use redis::AsyncCommands;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let pool = multiloop::redis::pool(&url)?.max_size(8).build()?;
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let _: () = conn.set("multiloop:example", "hello").await?;
    let value: String = conn.get("multiloop:example").await?;
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut *conn)
        .await?;
    let addr = info
        .split_whitespace()
        .find(|f| f.starts_with("addr="))
        .unwrap_or("addr=?");
    println!("GET multiloop:example = {value:?}; redis sees this client as {addr}");
    println!("{:?}", pool.stats());
    Ok(())
}
