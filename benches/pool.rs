//! Pool checkout: `get()` plus drop, per cycle, at 1, 8, 64 and 256 concurrent tasks on 8 and
//! 32 warm connections. Run with `cargo bench --bench pool`.
//!
//! Three pools with equivalent managers, side by side in one run: the multiloop `Pool` (`Raw`
//! connector), raw deadpool, and bb8. Each checks a connection on checkout with the same
//! non-blocking peek, so the comparison is of the pools' own bookkeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "common/baselines.rs"]
mod baselines;
use baselines::{Bb8Manager, DeadpoolManager};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Accepts and holds connections open until the client closes them.
async fn holding_acceptor() -> SocketAddr {
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

/// Runs `iters` checkout cycles split over `tasks` tasks and returns the time taken.
async fn cycles<F, Fut>(iters: u64, tasks: u64, checkout: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let checkout = Arc::new(checkout);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let share = iters / tasks + u64::from(t < iters % tasks);
        let checkout = checkout.clone();
        set.spawn(async move {
            for _ in 0..share {
                checkout().await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    started.elapsed()
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(holding_acceptor());
    for conns in [8usize, 32] {
        let (multi, dead, bb) = rt.block_on(pools(addr, conns));
        let mut group = c.benchmark_group(format!("checkout/{conns}_conns"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for tasks in [1u64, 8, 64, 256] {
            let p = multi.clone();
            group.bench_function(BenchmarkId::new("multiloop", tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let p = p.clone();
                    cycles(iters, tasks, move || {
                        let p = p.clone();
                        async move { drop(p.get().await.unwrap()) }
                    })
                })
            });
            let p = dead.clone();
            group.bench_function(BenchmarkId::new("deadpool", tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let p = p.clone();
                    cycles(iters, tasks, move || {
                        let p = p.clone();
                        async move { drop(p.get().await.unwrap()) }
                    })
                })
            });
            let p = bb.clone();
            group.bench_function(BenchmarkId::new("bb8", tasks), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let p = p.clone();
                    cycles(iters, tasks, move || {
                        let p = p.clone();
                        async move { drop(p.get().await.unwrap()) }
                    })
                })
            });
        }
        group.finish();
    }
}

type Pools = (
    multiloop::Pool,
    deadpool::managed::Pool<DeadpoolManager>,
    bb8::Pool<Bb8Manager>,
);

/// The three pools, each with `conns` connections open and idle.
async fn pools(addr: SocketAddr, conns: usize) -> Pools {
    let multi = multiloop::Pool::builder(addr)
        .max_size(conns)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dead = deadpool::managed::Pool::builder(DeadpoolManager(addr))
        .max_size(conns)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let bb = bb8::Pool::builder()
        .max_size(conns as u32)
        .connection_timeout(Duration::from_secs(30))
        .build(Bb8Manager(addr))
        .await
        .unwrap();
    // Warm: hold `conns` connections at once, then give them back.
    let held: Vec<_> = futures_util::future::join_all((0..conns).map(|_| multi.get())).await;
    drop(held);
    let held: Vec<_> = futures_util::future::join_all((0..conns).map(|_| dead.get())).await;
    drop(held);
    let held: Vec<_> = futures_util::future::join_all((0..conns).map(|_| bb.get())).await;
    drop(held);
    (multi, dead, bb)
}

criterion_group!(benches, checkout);
criterion_main!(benches);
