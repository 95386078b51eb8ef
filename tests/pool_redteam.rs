//! The pool's invariants under attack: gets cancelled at every await point while connections
//! come back, the cap moves, the pool pauses and closes, with busy threads beside the test;
//! switches racing each other; edge configurations; dials that fail or hang. Every cap is
//! counted at the server (handshakes accepted, sockets open now and at peak).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use multiloop::Pool;

use support::eventually;
use support::servers::{Counting, Reply};

/// `resize` racing with `close` from another thread: the closed pool's cap stays 0, and a
/// connection given back after the close closes instead of staying idle in a closed pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_racing_with_close_never_reopens_the_cap() {
    let server = Counting::start(Reply::Silent).await;
    for run in 0..250 {
        let pool = Pool::builder(server.addr).max_size(4).build().unwrap();
        let held = [pool.get().await.unwrap(), pool.get().await.unwrap()];
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (pool, stop, spinning) = (pool.clone(), stop.clone(), spinning.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    pool.resize(3 + n % 2).unwrap();
                    spinning.store(true, Ordering::Relaxed);
                    n += 1;
                }
            })
        };
        while !spinning.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
        pool.close();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        drop(held);
        let status = pool.status();
        assert!(
            status.max_size == 0 && status.size == 0 && status.idle == 0,
            "run {run}: a closed pool holds connections: {status:?}"
        );
        eventually(&format!("run {run}: the server holds none"), || {
            server.seen.open() == 0
        })
        .await;
    }
}
