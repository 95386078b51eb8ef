//! Shows how the dialer spreads source addresses, and what that buys under churn.
//!
//! ```text
//! cargo run --release --example spread            # 2,000 churned dials per dialer
//! cargo run --release --example spread -- 10000
//! ```
//!
//! It starts its own listener on 127.0.0.1, so it needs nothing installed. Each dialer's sockets
//! are limited to 50 ephemeral ports with `IP_LOCAL_PORT_RANGE` (Linux 6.3+), so that what takes
//! 28,232 dials in production takes 50 here. Every connection is closed by the client at once, as
//! the incident's client did, which leaves its (source, port) pair in TIME_WAIT for about 60 s.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use multiloop::{Dialer, SourceSet};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const PORTS: std::ops::RangeInclusive<u16> = 52_000..=52_049;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dials: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("expected a dial count, got {n:?}"))?,
        None => 2_000,
    };
    let dials = dials.min(20_000);
    let target = start_listener().await?;
    println!("listener on {target}; {dials} churned dials per dialer, 50 ports per source\n");

    // Fresh addresses per run, so TIME_WAIT pairs from a run a minute ago do not count.
    let net = rand::random::<u8>();
    let one: SourceSet = format!("127.200.{net}.1").parse()?;
    let many: SourceSet = format!("127.201.{net}.0/24").parse()?;
    for (label, sources) in [("one source (the incident)", one), ("254 sources", many)] {
        let dialer = Dialer::builder()
            .sources(sources.clone())
            .local_port_range(PORTS)
            .build()?;
        println!("== {label}: {sources}");
        let started = Instant::now();
        let mut by_source: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut first_error = None;
        for _ in 0..dials {
            match dialer.connect(target).await {
                Ok(stream) => *by_source.entry(stream.local_addr()?.ip()).or_default() += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let stats = dialer.stats();
        println!(
            "   {} ok, {} failed in {:.0?}; {} distinct sources, {} retries, {} quarantined",
            stats.dials_ok,
            stats.failures.total(),
            started.elapsed(),
            stats.distinct_sources,
            stats.retries,
            stats.quarantined,
        );
        let busiest = by_source.values().max().copied().unwrap_or(0);
        let quietest = by_source.values().min().copied().unwrap_or(0);
        println!("   dials per source: {quietest} to {busiest}");
        for (ip, n) in by_source.iter().take(4) {
            println!("     {ip:<16} {n}");
        }
        if by_source.len() > 4 {
            println!("     … and {} more", by_source.len() - 4);
        }
        if let Some(e) = first_error {
            println!("   first error: {e}");
        }
        println!();
    }
    Ok(())
}

/// Accepts, reads until the client closes, then closes: the client closes first.
async fn start_listener() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}
