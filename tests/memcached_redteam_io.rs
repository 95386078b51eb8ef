//! Adversarial checks of the memcached client's I/O: the pool resized, paused and closed with
//! recoveries in flight; a value near memcached's item size cancelled mid-block; a store given
//! up mid-write, which must not reach the server after a later one.
#![cfg(feature = "memcached")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use multiloop::memcached::{Connector, Dialect};
use support::wire::{Cut, Slicer, cancelled, pool_of};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// memcached's `curr_connections`, asked on a connection of its own (which counts itself).
async fn open_at(server: SocketAddr) -> u64 {
    let mut conn = tokio::net::TcpStream::connect(server).await.unwrap();
    conn.write_all(b"stats\r\n").await.unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    while !text.ends_with(b"END\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0);
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("STAT curr_connections "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Recoveries in flight while the pool shrinks, pauses, resumes and closes: every connection is
/// closed at the server in the end, none is lent mid-recovery, and a value is never another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_pause_and_close_during_recoveries() {
    let Some(server) = support::memcached() else {
        return;
    };
    let slicer = Slicer::start(
        server.addr,
        Cut {
            seed: 9,
            max_piece: 0,
            max_delay: Duration::ZERO,
            hold: Duration::from_millis(80),
            at_lines: false,
        },
    )
    .await;
    let baseline = open_at(server.addr).await;
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(slicer.addr, Connector::new().dialect(dialect), 4);
        pool.get()
            .await
            .unwrap()
            .set("life", b"VALUE x 0 1\r\nX\r\nEND\r\n", 0)
            .await
            .unwrap();
        for round in 0..3 {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let Ok(mut c) = pool.get().await else {
                            return;
                        };
                        let _ =
                            tokio::time::timeout(Duration::from_millis(10), c.get("life")).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            // Recoveries are running now (each waits 80 ms for its reply).
            match round {
                0 => pool.resize(1).unwrap(),
                1 => {
                    pool.pause();
                    assert!(pool.get().await.is_err());
                    pool.resume();
                    pool.resize(4).unwrap();
                }
                _ => {}
            }
            let mut c = pool.get().await.unwrap();
            assert_eq!(
                c.get("x").await.unwrap(),
                None,
                "{dialect:?} round {round}: a value's bytes read as a reply"
            );
            assert_eq!(
                c.get("life").await.unwrap().as_deref(),
                Some(&b"VALUE x 0 1\r\nX\r\nEND\r\n"[..])
            );
        }
        // Close with recoveries in flight.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Ok(mut c) = pool.get().await {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(10), c.get("life")).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        pool.close();
        let mut open = 0;
        for _ in 0..200 {
            open = open_at(server.addr).await;
            if open == baseline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = pool.stats();
        eprintln!("{dialect:?}: open at the server {open} (baseline {baseline}); {stats:?}");
        assert_eq!(
            open, baseline,
            "{dialect:?}: connections left open after close"
        );
        assert_eq!(pool.status().in_use, 0);
    }
}

/// A value near memcached's item size, read in pieces and cancelled at many points of its
/// block, then read whole on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_cancelled_mid_block() {
    let Some(server) = support::memcached() else {
        return;
    };
    let slicer = Slicer::start(
        server.addr,
        Cut {
            seed: 13,
            max_piece: 4096,
            max_delay: Duration::from_micros(200),
            hold: Duration::ZERO,
            at_lines: false,
        },
    )
    .await;
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(slicer.addr, Connector::new().dialect(dialect), 1);
        let mut c = pool.get().await.unwrap();
        let big: Vec<u8> = (0..(1usize << 20) - 1024)
            .map(|i| b"END\r\nMN\r\nVA 1 O0\r\n"[i % 18])
            .collect();
        c.set("large", &big, 0).await.unwrap();
        c.set("small", b"s", 0).await.unwrap();
        for polls in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] {
            let _ = cancelled(c.get_multi(&["large", "small", "large"]), polls).await;
            assert_eq!(c.get("small").await.unwrap().as_deref(), Some(&b"s"[..]));
            let _ = cancelled(c.get("large"), polls).await;
            let m = c.get_multi(&["small", "large"]).await.unwrap();
            assert_eq!(m[&b"large"[..]], big, "{dialect:?} {polls}");
            assert_eq!(m[&b"small"[..]], b"s");
        }
        assert!(!c.in_flight());
        drop(c);
        assert_eq!(pool.stats().closed.total(), 0);
    }
}

/// A fake memcached that stores values (last complete `set` wins) and whose first connection
/// stops reading for `stall` after its handshake: a server busy on that connection.
async fn stalling_store(
    stall: Duration,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<(usize, usize)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // (connection, value length) of every set, in the order the server completed them.
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let (conn, log) = (n, seen.clone());
            n += 1;
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::with_capacity(1024, r);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let words: Vec<String> = String::from_utf8_lossy(&line)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    let reply: &[u8] = match words.first().map(String::as_str) {
                        Some("version") => {
                            w.write_all(b"VERSION 1.5.0\r\n").await.unwrap();
                            if conn == 0 {
                                tokio::time::sleep(stall).await;
                            }
                            continue;
                        }
                        Some("set") => {
                            let len: usize = words[4].parse().unwrap();
                            let mut data = vec![0u8; len + 2];
                            if r.read_exact(&mut data).await.is_err() {
                                return;
                            }
                            log.lock().unwrap().push((conn, len));
                            b"STORED\r\n"
                        }
                        _ => b"ERROR\r\n",
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

/// A store whose caller gave up before all of it was written is not sent later, behind the
/// caller's back, where it would overwrite what the caller (or another) stored since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_given_up_is_not_completed_after_a_later_one() {
    let (addr, log) = stalling_store(Duration::from_millis(600)).await;
    let connector = Connector::new()
        .dialect(Dialect::Text)
        .max_value_size(64 << 20)
        .unwrap();
    let pool = pool_of(addr, connector, 2);
    let mut first = pool.get().await.unwrap();
    let old = vec![b'o'; 32 << 20];
    let gave_up = tokio::time::timeout(Duration::from_millis(100), first.set("k", &old, 0)).await;
    assert!(gave_up.is_err(), "the server is not reading");
    eprintln!("given up with in_flight = {}", first.in_flight());
    drop(first);
    // The caller stores the new value on another connection, and it is stored.
    let mut second = pool.get().await.unwrap();
    second.set("k", b"new", 0).await.unwrap();
    drop(second);
    // Wait for the first connection's recovery to finish (or give up).
    support::eventually("recoveries finished", || pool.status().in_use == 0).await;
    let log = log.lock().unwrap().clone();
    eprintln!("sets completed at the server, in order (connection, length): {log:?}");
    assert_eq!(
        log.last(),
        Some(&(1, 3)),
        "a store given up before it was written reached the server after a later store"
    );
}
