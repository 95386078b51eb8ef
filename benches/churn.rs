//! Dialing under churn, where the client closes first and every pair goes to TIME_WAIT.
//! Run with `cargo bench --bench churn`. Not criterion: the counts are bounded, so the run
//! cannot exhaust the host's ports however fast it goes.
//!
//! 1. **Dial rate under churn.** 10,000 connect-and-close cycles per dialer, side by side:
//!    tokio's `TcpStream::connect` (from 127.0.0.1, the floor), the multiloop `Dialer` over
//!    127.0.0.0/8, and `bind(random 127.x, 0)` without `IP_BIND_ADDRESS_NO_PORT`.
//! 2. **Churn capacity.** With 64 ports per socket, how many dials complete before the first
//!    error, within one TIME_WAIT window, from 1, 16 and 256 source addresses. The physical
//!    limit is sources × 64.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use multiloop::{Dialer, SourceSet, Strategy};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const CYCLES: usize = 10_000;
const PORTS: std::ops::RangeInclusive<u16> = 46_000..=46_063;

async fn acceptor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Fresh addresses for this run, so that earlier runs' TIME_WAIT does not count.
fn fresh_block(second_octet: u8, n: u32) -> SourceSet {
    let run = (std::process::id() % 256) as u8;
    SourceSet::from_addrs((0..n).map(|i| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            second_octet,
            run.wrapping_add((i / 256) as u8),
            (i % 256) as u8,
        ))
    }))
    .unwrap()
}

async fn rate<F, Fut>(label: &str, mut dial: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    let started = Instant::now();
    for _ in 0..CYCLES {
        drop(dial().await.unwrap_or_else(|e| panic!("{label}: {e}")));
    }
    let per_sec = CYCLES as f64 / started.elapsed().as_secs_f64();
    println!("  {label:<40} {per_sec:>10.0} dials/s");
    per_sec
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let target = acceptor().await;

    // Capacity first: the rate phase's plain binds reserve port numbers for every source for
    // 60 s, which would shrink the per-socket range measured here.
    println!("churn capacity: dials before the first error, 64 ports per socket");
    for (i, sources) in [1u32, 16, 256].into_iter().enumerate() {
        let dialer = Dialer::builder()
            .sources(fresh_block(152 + i as u8, sources))
            .local_port_range(PORTS)
            .build()
            .unwrap();
        let limit = sources as usize * 64;
        let mut done = 0;
        while done < limit * 2 {
            match dialer.connect(target).await {
                Ok(s) => {
                    drop(s);
                    done += 1;
                }
                Err(_) => break,
            }
        }
        println!(
            "  {sources:>4} sources: {done:>6} dials of a physical limit of {limit:>6} ({:.2}x)",
            done as f64 / limit as f64
        );
    }

    println!(
        "\ndial rate under churn ({CYCLES} connect-and-close cycles each, client closes first)"
    );
    let floor = rate("tokio TcpStream::connect (127.0.0.1)", || {
        TcpStream::connect(target)
    })
    .await;
    let spread = Dialer::builder()
        .sources(fresh_block(150, 65_536))
        .build()
        .unwrap();
    let ours = rate("multiloop Dialer (NO_PORT, spread)", || {
        let d = spread.clone();
        async move { d.connect(target).await.map_err(std::io::Error::from) }
    })
    .await;
    let bare = Dialer::builder()
        .sources(fresh_block(156, 65_536))
        .nodelay(false)
        .build()
        .unwrap();
    let ours_bare = rate("multiloop Dialer, TCP_NODELAY off", || {
        let d = bare.clone();
        async move { d.connect(target).await.map_err(std::io::Error::from) }
    })
    .await;
    let bind_only = Dialer::builder()
        .sources(fresh_block(151, 65_536))
        .strategy(Strategy::Random)
        .bind_address_no_port(false)
        .build()
        .unwrap();
    let plain_bind = rate("bind(random 127.x, 0) without NO_PORT", || {
        let d = bind_only.clone();
        async move { d.connect(target).await.map_err(std::io::Error::from) }
    })
    .await;
    // The incident's dialer: one address, so every bind searches a range that keeps filling
    // with TIME_WAIT.
    let incident = Dialer::builder()
        .sources(fresh_block(157, 1))
        .bind_address_no_port(false)
        .quarantine(Duration::ZERO)
        .max_attempts(1)
        .build()
        .unwrap();
    let one_bind = rate("bind(one 127.x, 0) without NO_PORT", || {
        let d = incident.clone();
        async move { d.connect(target).await.map_err(std::io::Error::from) }
    })
    .await;
    println!(
        "  ratios to plain connect: multiloop {:.2}x (NODELAY off {:.2}x), bind without NO_PORT \
         from random sources {:.2}x, from one source {:.2}x",
        ours / floor,
        ours_bare / floor,
        plain_bind / floor,
        one_bind / floor
    );
}
