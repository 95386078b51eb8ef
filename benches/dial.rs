//! Dial cost: connect, wait for the server's close, close. Run with `cargo bench --bench dial`.
//!
//! Compares tokio's plain `TcpStream::connect` (the floor), the multiloop `Dialer` over
//! 127.0.0.0/8, and the same dialer with `IP_BIND_ADDRESS_NO_PORT` off, which is the incident's
//! emergency fix: `bind(random 127.x, 0)` then `connect`. The server closes first, so no client
//! pair is left in TIME_WAIT and the run cannot exhaust 127.0.0.1's ports however long it runs.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use multiloop::{Dialer, Strategy};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Accepts and closes at once.
async fn closing_acceptor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        }
    });
    addr
}

async fn finish(mut stream: TcpStream) {
    let mut buf = [0u8; 1];
    let _ = stream.read(&mut buf).await;
}

fn dial(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let target = rt.block_on(closing_acceptor());
    let spread = Dialer::builder().build().unwrap();
    let bind_only = Dialer::builder()
        .bind_address_no_port(false)
        .strategy(Strategy::Random)
        .build()
        .unwrap();

    let mut group = c.benchmark_group("dial");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("tokio_connect", |b| {
        b.to_async(&rt)
            .iter(|| async { finish(TcpStream::connect(target).await.unwrap()).await })
    });
    group.bench_function("multiloop_dialer", |b| {
        b.to_async(&rt)
            .iter(|| async { finish(spread.connect(target).await.unwrap()).await })
    });
    group.bench_function("bind_without_no_port", |b| {
        b.to_async(&rt)
            .iter(|| async { finish(bind_only.connect(target).await.unwrap()).await })
    });
    group.finish();
}

criterion_group!(benches, dial);
criterion_main!(benches);
