//! Dial cost in user space for `valgrind --tool=callgrind`: N sequential dials of one loopback
//! target, each closed at once, through the multiloop `Dialer` or tokio's
//! `TcpStream::connect`. Callgrind counts user-space instructions only (the kernel's share of a
//! dial, most of it, is `benches/churn.rs`'s to measure); both sides include the acceptor.
//!
//! ```text
//! cargo build --release --example dial_cost
//! valgrind --tool=callgrind target/release/examples/dial_cost dialer 2000
//! valgrind --tool=callgrind target/release/examples/dial_cost connect 2000
//! ```
//!
//! Both run 100 warm-up dials first; subtract a run with 0 dials to leave the setup out.

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "dialer".into());
    let dials: usize = args.next().map_or(Ok(2_000), |s| s.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let target = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    let _ = s.read(&mut byte).await;
                });
            }
        });
        let dialer = multiloop::Dialer::builder().build()?;
        for _ in 0..100 + dials {
            if which == "connect" {
                drop(TcpStream::connect(target).await?);
            } else {
                drop(dialer.connect(target).await?);
            }
        }
        Ok(())
    })
}
