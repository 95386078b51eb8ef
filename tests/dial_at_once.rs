//! A dial to loopback completes inside `connect`: the stream is handed over on the dial's
//! first poll, and a loop of such dials still yields to the runtime's other tasks.

mod support;

use std::time::Duration;

use multiloop::Dialer;

use support::Acceptor;

/// On loopback the kernel runs the whole handshake inside `connect`, so a dial usually
/// completes on its first poll, with no wait on the runtime and no timer. (Under load the
/// kernel may finish a handshake later; then the dial waits, so only "some" is asserted.)
#[tokio::test]
async fn a_loopback_dial_usually_completes_on_its_first_poll() {
    let acceptor = Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources("127.73.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    let mut at_once = 0;
    for _ in 0..50 {
        let mut dial = std::pin::pin!(dialer.connect(acceptor.addr));
        let stream = match futures_util::poll!(dial.as_mut()) {
            std::task::Poll::Ready(stream) => {
                at_once += 1;
                stream
            }
            std::task::Poll::Pending => dial.await,
        };
        let stream = stream.expect("a dial to a listening acceptor");
        assert!(stream.peer_addr().is_ok());
        // An await between dials: each dial starts with the task's budget refilled.
        tokio::task::yield_now().await;
    }
    assert!(at_once > 0, "no dial of 50 completed on its first poll");
    assert_eq!(dialer.stats().dials_ok, 50);
}

/// A task dialing in a loop on a single-threaded runtime lets a server on the same thread
/// accept: a dial that completes at once takes from the task's cooperative budget, so the
/// loop yields every few dials. The acceptor's queue holds 65 connections and the connect
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
