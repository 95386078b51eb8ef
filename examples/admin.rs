//! A service with a loaded pool and the admin endpoint, for trying the responder's switches.
//!
//! ```text
//! cargo run --example admin --features admin            # serves 127.0.0.1:7878 for 5 minutes
//! MULTILOOP_ADMIN_TOKEN=... multiloop pause echo        # in another terminal: it sheds
//! multiloop pools                                       # reads need no token
//! MULTILOOP_ADMIN_TOKEN=... multiloop resume echo
//! curl -s 127.0.0.1:7878/pools/echo                     # the same, as JSON
//! ```
//!
//! It runs an echo server of its own on a free loopback port, a pool named `echo` (8 sockets,
//! a bulkhead `batch`) and 16 tasks that use it, printing what was served and shed every 5 s.
//! The token is `MULTILOOP_ADMIN_TOKEN` if set, or a random one printed at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use multiloop::Pool;
use multiloop::admin::{self, Admin, Registry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    /// Where the admin endpoint listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: std::net::SocketAddr,
    /// How long the service runs, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // The admin handler logs each change (who, what) as a warning.
    tracing_subscriber::fmt().with_target(false).init();
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });

    let pool = Pool::builder(target).name("echo").max_size(8).build()?;
    let _batch = pool.bulkhead("batch");
    let registry = Registry::new();
    registry.register(&pool)?;
    let token = std::env::var("MULTILOOP_ADMIN_TOKEN").unwrap_or_else(|_| {
        let n: u128 = rand::random();
        format!("{n:032x}")
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "admin endpoint on http://{} (pool \"echo\")",
        listener.local_addr()?
    );
    println!("export MULTILOOP_ADMIN={}", listener.local_addr()?);
    println!("export MULTILOOP_ADMIN_TOKEN={token}");
    let server = tokio::spawn(admin::serve(listener, Admin::new(registry).token(&token)));

    let (served, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    for _ in 0..16 {
        let (pool, served, shed) = (pool.clone(), served.clone(), shed.clone());
        tokio::spawn(async move {
            while Instant::now() < end {
                match pool.get().await {
                    Ok(conn) => {
                        let mut conn = BufReader::new(conn);
                        let mut line = String::new();
                        if conn.get_mut().write_all(b"ping\n").await.is_ok()
                            && conn.read_line(&mut line).await.is_ok()
                        {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        shed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while Instant::now() < end && !server.is_finished() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = pool.status();
        println!(
            "served {:>8}  shed {:>8}  size {}/{}  paused {}",
            served.load(Ordering::Relaxed),
            shed.load(Ordering::Relaxed),
            s.size,
            s.max_size,
            s.paused
        );
    }
    if server.is_finished() {
        server.await??;
    }
    Ok(())
}
