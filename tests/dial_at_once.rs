//! A dial to loopback completes inside `connect`: the stream is usually handed over on the
//! dial's first poll, and a loop of such dials still waits on the runtime's I/O driver every
//! few dials, so an acceptor on the same runtime keeps up, on a quiet machine and on busy CPUs.

mod support;

use std::time::Duration;

use multiloop::Dialer;

use support::Acceptor;

/// On loopback the kernel runs the whole handshake inside `connect`, so a dial usually
/// completes on its first poll, with no wait on the runtime and no timer; one in 8 waits on
/// the runtime's I/O driver all the same. (Under load the kernel may finish a handshake later;
/// then the dial waits too, so only "some" at once is asserted.)
#[tokio::test]
async fn a_loopback_dial_usually_completes_on_its_first_poll_and_one_in_8_waits() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources("127.73.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    let (mut at_once, mut waited) = (0, 0);
    for _ in 0..80 {
        let mut dial = std::pin::pin!(dialer.connect(acceptor.addr));
        let stream = match futures_util::poll!(dial.as_mut()) {
            std::task::Poll::Ready(stream) => {
                at_once += 1;
                stream
            }
            std::task::Poll::Pending => {
                waited += 1;
                dial.await
            }
        };
        let stream = stream.expect("a dial to a listening acceptor");
        assert!(stream.peer_addr().is_ok());
    }
    assert!(at_once > 0, "no dial of 80 completed on its first poll");
    assert!(
        waited >= 10,
        "one dial in 8 waits on the driver: {waited} of 80"
    );
    assert_eq!(dialer.stats().dials_ok, 80);
}

/// A task dialing in a loop on a single-threaded runtime lets a server on the same thread
/// accept: one dial in 8 waits on the driver, whose turn wakes the acceptor too. The acceptor's queue holds 65 connections and the connect
/// timeout (500 ms) is shorter than the kernel's first SYN retransmit (1 s), so one overflow
/// of the queue would fail a dial.
#[tokio::test]
async fn a_dial_loop_lets_an_acceptor_on_its_thread_keep_up() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let target = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let dialer = Dialer::builder()
        .sources("127.74.0.0/24".parse().unwrap())
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // Far more than the queue holds: a loop that never yielded would overflow it by the 66th.
    for done in 0..500 {
        let dial = dialer.connect(target).await;
        assert!(dial.is_ok(), "{done} dials, then {dial:?}");
    }
    server.abort();
}

/// The same loop on tokio's multi-thread runtime beside three threads that keep the machine's
/// CPUs busy: the acceptor, on the same runtime, still keeps up. When no dial waited on the
/// runtime's I/O driver (a loop yielded every 16 dials instead) it outran the acceptor (4,000
/// dials took 7-28 s against 0.14-0.44 s for tokio's connect, the listen queue overflowing);
/// each overflow drops a SYN, retransmitted
/// after a second, past the 500 ms connect timeout: a failed dial, counted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_loop_on_busy_cpus_lets_an_acceptor_on_its_runtime_keep_up() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                // Bounded: the test stops it, and it stops by itself after 60 s.
                let until = std::time::Instant::now() + Duration::from_secs(60);
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < until
                {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
            })
        })
        .collect();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let target = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let dialer = Dialer::builder()
        .sources("127.75.0.0/16".parse().unwrap())
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut failed = Vec::new();
    for _ in 0..2_000 {
        if let Err(e) = dialer.connect(target).await {
            failed.push(e.kind());
            if failed.len() >= 3 {
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    server.abort();
    assert!(
        failed.is_empty(),
        "dials failed (a full listen queue drops the SYN): {failed:?}, {:?}",
        dialer.stats()
    );
}
