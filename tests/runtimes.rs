//! A pool outlives the runtime it was first used on: a static pool shared by tests that each
//! build their own runtime, or a pool handed from a start-up runtime to the service's own.

mod support;

use std::time::Duration;

use multiloop::Pool;

use support::eventually;
use support::servers::{Counting, Reply};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The reaper runs as a task on the runtime of the first `get`. When that runtime shuts down
/// the task goes with it; the next `get`, on a runtime that runs, must start it again, or the
/// pool never again closes idle connections (nor warns, nor keeps `min_idle`).
#[test]
fn the_reaper_starts_again_on_a_new_runtime_after_its_own_ends() {
    // The server lives on a runtime of its own, which outlasts the test's two.
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = host.block_on(Counting::start(Reply::Silent));
    let pool = Pool::builder(server.addr)
        .max_size(4)
        .idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();

    let first = current_thread();
    first.block_on(async {
        let held = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
        assert!(held.iter().all(Result::is_ok));
    });
    // The first runtime and the reaper's task with it.
    drop(first);
    assert_eq!(pool.status().size, 4);

    let second = current_thread();
    second.block_on(async {
        // One get on the new runtime; no connection is asked for after it.
        drop(pool.get().await.unwrap());
        // Only the reaper closes connections nobody asks for: the server must see three of
        // the four close (the most recent one is kept while it is in use or fresh).
        eventually("the idle connections close", || {
            pool.stats().closed.idle >= 3 && server.seen.open() <= 1
        })
        .await;
    });
    assert_eq!(server.seen.accepted(), 4);
}
