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
        drop(pool.get().await.unwrap());
    });
    // The first runtime, and the reaper's task with it.
    drop(first);

    let second = current_thread();
    second.block_on(async {
        // Four connections made on the new runtime, given back; none asked for after.
        let held = futures_util::future::join_all((0..4).map(|_| pool.get())).await;
        assert!(held.iter().all(Result::is_ok));
        drop(held);
        // Only the reaper closes connections nobody asks for: the server must see three of
        // the four close (the most recent one is kept while it is fresh).
        eventually("the idle connections close", || {
            pool.stats().closed.idle >= 3 && server.seen.open() <= 1
        })
        .await;
    });
    // The first runtime's connection closed as broken, not handed out (the test below).
    assert_eq!(server.seen.accepted(), 5);
}

/// A connection's I/O belongs to the runtime that made it: once that runtime has shut down,
/// every read and write on it fails ("a Tokio 1.x context was found, but it is being
/// shutdown"). The pool must close such connections instead of handing them out.
#[test]
fn a_connection_made_on_a_runtime_that_ended_is_never_handed_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = host.block_on(Counting::start(Reply::Echo(Duration::ZERO)));
    let pool = Pool::builder(server.addr).max_size(2).build().unwrap();
    let request = |n: u32| {
        let pool = &pool;
        async move {
            let mut conn = pool.get().await.unwrap();
            conn.write_all(format!("req-{n}\n").as_bytes()).await?;
            let want = format!("reply-{n}\r\n");
            let mut got = vec![0; want.len()];
            conn.read_exact(&mut got).await?;
            assert_eq!(got, want.as_bytes());
            std::io::Result::Ok(())
        }
    };

    let first = current_thread();
    first.block_on(async {
        // Two connections, both made on the first runtime.
        let (a, b) = tokio::join!(request(1), request(2));
        a.unwrap();
        b.unwrap();
    });
    assert_eq!(pool.status().size, 2);
    drop(first);

    let second = current_thread();
    second.block_on(async {
        for n in 3..13 {
            request(n)
                .await
                .expect("no connection from the ended runtime");
        }
    });
    // At the server: the two from the first runtime closed, one new one serving the rest.
    let stats = pool.stats();
    assert_eq!(stats.closed.broken, 2, "{stats:?}");
    assert_eq!(server.seen.accepted(), 3);
    second.block_on(eventually("the server sees both close", || {
        server.seen.open() == 1
    }));
}
