//! Checkout cost for `valgrind --tool=callgrind`: N sequential `get` + drop cycles on one warm
//! connection, through the multiloop pool, raw deadpool or bb8, with the same non-blocking peek.
//! `multiloop` leaves out what the others do not do (the leak registry, the port census);
//! `multiloop-default` is the pool as configured by default.
//!
//! ```text
//! cargo build --release --example checkout_cost
//! valgrind --tool=callgrind target/release/examples/checkout_cost multiloop 100000
//! valgrind --tool=callgrind target/release/examples/checkout_cost multiloop-default 100000
//! valgrind --tool=callgrind target/release/examples/checkout_cost deadpool 100000
//! valgrind --tool=callgrind target/release/examples/checkout_cost bb8 100000
//! ```
//!
//! Both run 1,000 warm-up cycles first; subtract a run with 0 cycles to leave the setup out.

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[path = "../common/baselines.rs"]
mod baselines;
use baselines::{Bb8Manager, DeadpoolManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "multiloop".into());
    let cycles: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        match which.as_str() {
            "deadpool" => {
                let pool: deadpool::managed::Pool<DeadpoolManager> =
                    deadpool::managed::Pool::builder(DeadpoolManager(addr))
                        .max_size(1)
                        .build()?;
                for _ in 0..1_000 + cycles {
                    drop(pool.get().await.map_err(|e| e.to_string())?);
                }
            }
            "bb8" => {
                let pool = bb8::Pool::builder()
                    .max_size(1)
                    .build(Bb8Manager(addr))
                    .await?;
                for _ in 0..1_000 + cycles {
                    drop(pool.get().await.map_err(|e| e.to_string())?);
                }
            }
            // One call site for both multiloop pools, so that the compiler inlines the same.
            which => {
                let mut builder = multiloop::Pool::builder(addr).max_size(1);
                // `multiloop-default` is the pool as configured by default: the leak registry
                // and the port census on.
                if which != "multiloop-default" {
                    builder = builder.leak_threshold(None).port_warning(None);
                }
                let pool = builder.build()?;
                for _ in 0..1_000 + cycles {
                    drop(pool.get().await?);
                }
            }
        }
        Ok(())
    })
}
