//! Pool checkout: `get()` plus drop, per cycle, at 1, 8, 64 and 256 concurrent tasks on 8 and
//! 32 warm connections. Run with `cargo bench --bench pool`.
//!
//! Four pools side by side in one run, each checking a connection on checkout with the same
//! non-blocking peek, so the comparison is of the pools' own bookkeeping: the multiloop `Pool`
//! (`Raw` connector) as configured by default, the same without the leak registry (its
//! `leak_threshold(None)`, as `benches/programs/checkout_cost.rs` measures it under callgrind), raw
//! deadpool and bb8. In each cell every pool runs `ROUNDS` times, interleaved, in an order that
//! rotates from round to round; the table gives nanoseconds per cycle, min / median / max, and
//! the ratios of the medians as rates (above 1.0 multiloop is faster). Each cell is measured
//! twice per round, on a quiet machine and beside three threads that spin (more runnable
//! threads than the machine's two cores), the two interleaved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/baselines.rs"]
mod baselines;
#[path = "common/stats.rs"]
mod stats;
use baselines::{Bb8Manager, DeadpoolManager};
use stats::stats;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Checkout cycles per measurement: about 0.1 s each at this machine's rates.
const CYCLES: u64 = 200_000;
const ROUNDS: usize = 7;
const NAMES: [&str; 4] = ["multiloop", "ml-noleak", "deadpool", "bb8"];
/// Threads that spin beside the runtime in the contended runs (the machine has 2 cores).
const BUSY_THREADS: usize = 3;

/// Threads that keep the CPUs busy until dropped.
struct Spinners {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(n: usize) -> Spinners {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

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

/// Runs `CYCLES` checkout cycles split over `tasks` tasks; returns nanoseconds per cycle.
async fn cycles<F, Fut>(tasks: u64, checkout: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let checkout = Arc::new(checkout);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let share = CYCLES / tasks + u64::from(t < CYCLES % tasks);
        let checkout = checkout.clone();
        set.spawn(async move {
            for _ in 0..share {
                checkout().await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    started.elapsed().as_nanos() as f64 / CYCLES as f64
}

#[derive(Clone)]
struct Pools {
    multi: multiloop::Pool,
    noleak: multiloop::Pool,
    dead: deadpool::managed::Pool<DeadpoolManager>,
    bb: bb8::Pool<Bb8Manager>,
}

impl Pools {
    /// One measurement of pool `which` (an index into `NAMES`).
    async fn run(&self, which: usize, tasks: u64) -> f64 {
        match which {
            0 | 1 => {
                let p = if which == 0 {
                    &self.multi
                } else {
                    &self.noleak
                }
                .clone();
                cycles(tasks, move || {
                    let p = p.clone();
                    async move { drop(p.get().await.unwrap()) }
                })
                .await
            }
            2 => {
                let p = self.dead.clone();
                cycles(tasks, move || {
                    let p = p.clone();
                    async move { drop(p.get().await.unwrap()) }
                })
                .await
            }
            _ => {
                let p = self.bb.clone();
                cycles(tasks, move || {
                    let p = p.clone();
                    async move { drop(p.get().await.unwrap()) }
                })
                .await
            }
        }
    }
}

/// The pools, each with `conns` connections open and idle.
async fn pools(addr: SocketAddr, conns: usize) -> Pools {
    let multi = multiloop::Pool::builder(addr)
        .max_size(conns)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let noleak = multiloop::Pool::builder(addr)
        .max_size(conns)
        .wait_timeout(Duration::from_secs(30))
        .leak_threshold(None)
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
    drop(futures_util::future::join_all((0..conns).map(|_| multi.get())).await);
    drop(futures_util::future::join_all((0..conns).map(|_| noleak.get())).await);
    drop(futures_util::future::join_all((0..conns).map(|_| dead.get())).await);
    drop(futures_util::future::join_all((0..conns).map(|_| bb.get())).await);
    Pools {
        multi,
        noleak,
        dead,
        bb,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no flag: one quick
    // round then, so the bench is checked without taking a minute.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { ROUNDS } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(holding_acceptor());
    println!(
        "ns per get+drop, min / median / max of {rounds} interleaved rounds of {CYCLES} cycles; \
         quiet, and beside {BUSY_THREADS} busy threads (the two interleaved in each round)"
    );
    println!(
        "{:>5} {:>5} {:<5}  {:<10} {:>8} {:>8} {:>8}",
        "conns", "tasks", "load", "pool", "min", "median", "max"
    );
    for conns in [8usize, 32] {
        let set = rt.block_on(pools(addr, conns));
        for tasks in [1u64, 8, 64, 256] {
            // [load][pool]: quiet, then busy.
            let mut ns: [[Vec<f64>; 4]; 2] = Default::default();
            for round in 0..rounds {
                for l in 0..2 {
                    let load = (round + l) % 2;
                    let spinners = Spinners::start(if load == 0 { 0 } else { BUSY_THREADS });
                    for k in 0..NAMES.len() {
                        let which = (round + k) % NAMES.len();
                        ns[load][which].push(rt.block_on(set.run(which, tasks)));
                    }
                    drop(spinners);
                }
            }
            for (load, per_pool) in ns.iter_mut().enumerate() {
                let label = if load == 0 { "quiet" } else { "busy" };
                let mut medians = [0.0; 4];
                for (which, xs) in per_pool.iter_mut().enumerate() {
                    let (min, median, max) = stats(xs);
                    medians[which] = median;
                    println!(
                        "{conns:>5} {tasks:>5} {label:<5}  {:<10} {min:>8.0} {median:>8.0} {max:>8.0}",
                        NAMES[which]
                    );
                }
                println!(
                    "{conns:>5} {tasks:>5} {label:<5}  rates, medians: multiloop {:.2}x deadpool, \
                     {:.2}x bb8; without the leak registry {:.2}x deadpool, {:.2}x bb8",
                    medians[2] / medians[0],
                    medians[3] / medians[0],
                    medians[2] / medians[1],
                    medians[3] / medians[1],
                );
            }
        }
    }
}
