//! Adversarial checks of the memcached client: edge keys, values and numbers against a real
//! memcached in both dialects; error lines in every position from a scripted server; a
//! cancellation at every poll of a pipelined batch; a connection holding stray bytes handed to
//! the next caller; the dialect probe through nutcracker with concurrent first connections.
#![cfg(feature = "memcached")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use multiloop::Pool;
use multiloop::memcached::{self, Connector, Dialect, Error, Store, Stored};
use support::wire::{Cut, Scripted, Slicer, cancelled, pool_of, rule};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_keys_values_and_numbers_in_both_dialects() {
    let Some(server) = support::memcached() else {
        return;
    };
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(server.addr, Connector::new().dialect(dialect), 1);
        let mut c = pool.get().await.unwrap();
        let tag = match dialect {
            Dialect::Text => b't',
            _ => b'm',
        };
        // 250 bytes: taken; 251: refused; 0x7f, a space, a control byte: refused.
        let mut k250 = vec![b'k'; 250];
        k250[0] = tag;
        c.set(&k250, b"v250", 0).await.unwrap();
        assert_eq!(c.get(&k250).await.unwrap().as_deref(), Some(&b"v250"[..]));
        for bad in [
            vec![b'k'; 251],
            b"a\x7fb".to_vec(),
            b"a b".to_vec(),
            b"a\rb".to_vec(),
            b"a\nb".to_vec(),
            Vec::new(),
        ] {
            let e = c.set(&bad, b"x", 0).await.unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{dialect:?} {bad:?}: {e:?}");
            let e = c.get(&bad).await.unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e:?}");
            let e = c.get_multi(&[&k250, &bad]).await.unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e:?}");
            assert!(!c.in_flight());
        }
        // Empty value; u32 flags and u64 CAS extremes.
        let k = |s: &str| format!("{}:{s}", tag as char);
        c.set(k("empty"), b"", 0).await.unwrap();
        assert_eq!(c.get(k("empty")).await.unwrap().as_deref(), Some(&b""[..]));
        let got = c.get_multi(&[k("empty"), k("empty")]).await.unwrap();
        assert_eq!(got.len(), 1);
        c.store(Store::Set, k("flags"), b"f", u32::MAX, 0)
            .await
            .unwrap();
        let item = c.gets(k("flags")).await.unwrap().unwrap();
        assert_eq!(item.flags, u32::MAX, "{dialect:?}");
        assert_eq!(
            c.cas(k("flags"), b"g", 0, u64::MAX).await.unwrap(),
            Stored::Exists,
            "{dialect:?}"
        );
        assert_eq!(
            c.cas(k("nothere"), b"g", 0, u64::MAX).await.unwrap(),
            Stored::NotFound
        );
        // incr wraps at 2^64; decr stops at 0; a 20-digit delta.
        c.set(k("n"), b"18446744073709551615", 0).await.unwrap();
        assert_eq!(c.incr(k("n"), 1).await.unwrap(), Some(0), "{dialect:?}");
        assert_eq!(c.incr(k("n"), u64::MAX).await.unwrap(), Some(u64::MAX));
        assert_eq!(c.decr(k("n"), u64::MAX).await.unwrap(), Some(0));
        assert_eq!(c.decr(k("n"), 1).await.unwrap(), Some(0));
        assert!(!c.in_flight());
        drop(c);
        assert_eq!(pool.stats().closed.total(), 0, "{dialect:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_value_size_exactly_and_one_past() {
    let Some(server) = support::memcached() else {
        return;
    };
    for dialect in [Dialect::Text, Dialect::Meta] {
        let bound = 100;
        let small = pool_of(
            server.addr,
            Connector::new()
                .dialect(dialect)
                .max_value_size(bound)
                .unwrap(),
            2,
        );
        let big = pool_of(server.addr, Connector::new().dialect(dialect), 1);
        let mut c = small.get().await.unwrap();
        c.set("at", &vec![b'a'; bound], 0).await.unwrap();
        assert_eq!(c.get("at").await.unwrap().map(|v| v.len()), Some(bound));
        let e = c.set("past", &vec![b'p'; bound + 1], 0).await.unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
        drop(c);
        // Another client stores one byte past the bound: reading it is a typed error and a
        // closed connection, never a truncated value.
        big.get()
            .await
            .unwrap()
            .set("past", &vec![b'p'; bound + 1], 0)
            .await
            .unwrap();
        let mut c = small.get().await.unwrap();
        let e = c.get("past").await.unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{dialect:?}: {e:?}");
        drop(c);
        // In a batch: the chunk with it fails; count what else fails with it.
        let keys: Vec<String> = ["at", "past", "at", "x1", "x2", "x3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let batch = memcached::get_many(&small, keys.iter(), 2).await;
        eprintln!(
            "{dialect:?}: one oversized value in a batch of 3 chunks: answered {}, failed {:?}",
            batch.answered,
            batch
                .failed
                .iter()
                .map(|(n, e)| (n, e.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(batch.values.get(&b"past"[..]), None);
        for v in batch.values.values() {
            assert_eq!(v.len(), bound);
        }
        // One stored value past the bound, in a batch run again and again: each run closes a
        // connection and dials another (the churn the pool exists to prevent).
        let before = small.stats().created;
        for _ in 0..10 {
            let batch = memcached::get_many(&small, keys.iter(), 2).await;
            assert!(!batch.failed.is_empty());
        }
        let dialed = small.stats().created - before;
        eprintln!("{dialect:?}: 10 batches holding the oversized key dialed {dialed} connections");
        assert!(dialed >= 10, "{dialed}");
    }
}

/// Error lines in every position of every verb, both dialects: the error is the caller's, and
/// the next request on the same connection (if it is still used) gets exactly its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_lines_in_every_position() {
    let errors: [&[u8]; 4] = [
        b"ERROR\r\n",
        b"CLIENT_ERROR bad\r\n",
        b"SERVER_ERROR oops\r\n",
        b"SERVER_ERROR out of memory writing get response\r\n",
    ];
    for meta in [false, true] {
        for err in errors {
            // Tokens: `version` takes 0, then the failing request 1, the probe request 2.
            let (fail_prefix, ok_reply): (&str, &[u8]) = if meta {
                ("mg e", b"VA 2 f0 kok O2\r\nOK\r\n")
            } else {
                ("get e", b"VALUE ok 0 2\r\nOK\r\nEND\r\n")
            };
            let ok_prefix = if meta { "mg ok" } else { "get ok" };
            for position in 0..3 {
                // position 0: the error alone; 1: after a first value of a multi-get; 2: in
                // place of a store's reply.
                let first: Vec<u8> = match (position, meta) {
                    (0, _) | (2, _) => err.to_vec(),
                    (1, false) => [&b"VALUE e1 0 1\r\nA\r\n"[..], err].concat(),
                    (1, true) => [&b"VA 1 ke1 O1\r\nA\r\n"[..], err].concat(),
                    _ => unreachable!(),
                };
                let store_prefix = if meta { "ms e" } else { "set e" };
                let fake = Scripted::start(vec![
                    rule(fail_prefix, &first),
                    rule(store_prefix, &first),
                    rule(ok_prefix, ok_reply),
                    // A meta batch: the `mn` after the quiet gets.
                    rule("mn", b"MN\r\n"),
                ])
                .await;
                let dialect = if meta { Dialect::Meta } else { Dialect::Text };
                let pool = pool_of(fake.addr, Connector::new().dialect(dialect), 1);
                let mut c = pool.get().await.unwrap();
                let r = match position {
                    0 => c.get("e1").await.map(|_| ()),
                    1 => c.get_multi(&["e1", "e2"]).await.map(|_| ()),
                    _ => c.set("e1", b"v", 0).await,
                };
                let e = r.expect_err("an error line is an error");
                assert!(
                    matches!(e, Error::Server { .. } | Error::Mismatch { .. }),
                    "{e:?}"
                );
                if !c.in_flight() {
                    // Still lent: its next reply must be its own.
                    let got = c.get("ok").await;
                    assert_eq!(
                        got.unwrap().as_deref(),
                        Some(&b"OK"[..]),
                        "meta {meta} {:?} at {position}",
                        String::from_utf8_lossy(err)
                    );
                }
            }
        }
    }
}

/// A cancellation at every poll of a pipelined batch (two chunks in flight per connection,
/// replies cut into 1..3-byte pieces), each followed by a batch that must be exactly right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_cancelled_at_every_poll() {
    let Some(server) = support::memcached() else {
        return;
    };
    let slicer = Slicer::start(
        server.addr,
        Cut {
            seed: 3,
            max_piece: 3,
            max_delay: Duration::from_micros(100),
            hold: Duration::ZERO,
            at_lines: false,
        },
    )
    .await;
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = Pool::builder(slicer.addr)
            .connector(Connector::new().dialect(dialect))
            .max_size(2)
            .default_limit(2)
            .build()
            .unwrap();
        let keys: Vec<String> = (0..12).map(|i| format!("cx{i}")).collect();
        {
            let mut c = pool.get().await.unwrap();
            for (i, k) in keys.iter().enumerate() {
                if i % 3 != 2 {
                    let v = format!("END\r\nMN\r\nVA 3 k{k} O{i}\r\nVALUE {k} 0 1\r\n={k}");
                    c.set(k, v.as_bytes(), 0).await.unwrap();
                }
            }
        }
        let mut completed = 0;
        for polls in 1..400u32 {
            let done = cancelled(memcached::get_many(&pool, keys.iter(), 2), polls).await;
            if done.is_some() {
                completed += 1;
                if completed > 3 {
                    break;
                }
            }
            // A direct check, on whatever connection the pool lends now.
            let batch = memcached::get_many(&pool, keys.iter(), 2).await;
            assert!(
                batch.failed.is_empty(),
                "{dialect:?} {polls}: {:?}",
                batch.failed
            );
            assert_eq!(batch.answered, keys.len());
            for (i, k) in keys.iter().enumerate() {
                let want = (i % 3 != 2).then(|| {
                    format!("END\r\nMN\r\nVA 3 k{k} O{i}\r\nVALUE {k} 0 1\r\n={k}").into_bytes()
                });
                assert_eq!(batch.values.get(k.as_bytes()), want.as_ref(), "{polls}");
            }
        }
        support::eventually("recoveries finished", || pool.status().in_use == 0).await;
        let stats = pool.stats();
        eprintln!("{dialect:?}: {stats:?}");
        assert_eq!(stats.closed.total(), 0, "{dialect:?}: {stats:?}");
    }
}

/// A `Conn` kept after a cancelled call (never returned to the pool), cancelled at every poll,
/// then used again: every answer is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_conn_after_each_cancellation_point() {
    let Some(server) = support::memcached() else {
        return;
    };
    let slicer = Slicer::start(
        server.addr,
        Cut {
            seed: 5,
            max_piece: 2,
            max_delay: Duration::from_micros(50),
            hold: Duration::ZERO,
            at_lines: false,
        },
    )
    .await;
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(slicer.addr, Connector::new().dialect(dialect), 1);
        let mut c = pool.get().await.unwrap();
        c.set("ka", b"VALUE kb 0 1\r\nB\r\nEND\r\nEN\r\nMN\r\n", 0)
            .await
            .unwrap();
        c.set("kb", b"B", 0).await.unwrap();
        for polls in 1..120u32 {
            let _ = cancelled(c.get_multi(&["ka", "nope", "ka"]), polls).await;
            let _ = cancelled(c.incr("kb", 1), polls).await;
            assert_eq!(c.get("kb").await.unwrap().as_deref(), Some(&b"B"[..]));
            let _ = cancelled(c.get("ka"), polls).await;
            let _ = cancelled(c.set("kc", b"END\r\n", 0), polls).await;
            assert_eq!(
                c.get("ka").await.unwrap().as_deref(),
                Some(&b"VALUE kb 0 1\r\nB\r\nEND\r\nEN\r\nMN\r\n"[..]),
                "{dialect:?} {polls}"
            );
            let m = c.get_multi(&["kb", "ka"]).await.unwrap();
            assert_eq!(m.get(&b"kb"[..]).map(Vec::as_slice), Some(&b"B"[..]));
        }
        assert!(!c.in_flight());
    }
}

/// A server that answers the first connection's `get k` with its reply followed by bytes that
/// look like a second reply, and makes every later connection's handshake wait.
async fn stray_bytes_server(accepted: Arc<AtomicUsize>, later: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if line.starts_with(b"version") {
                        if n > 0 {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        b"VERSION 1.5.0\r\n"
                    } else if line.starts_with(b"get k") && n == 0 && later {
                        // The reply, then the stray bytes in a write of their own.
                        if w.write_all(b"VALUE k 0 4\r\nmine\r\nEND\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        b"VALUE k 0 4\r\nevil\r\nEND\r\n"
                    } else if line.starts_with(b"get k") && n == 0 {
                        b"VALUE k 0 4\r\nmine\r\nEND\r\nVALUE k 0 4\r\nevil\r\nEND\r\n"
                    } else if line.starts_with(b"get k") {
                        b"VALUE k 0 4\r\ngood\r\nEND\r\n"
                    } else {
                        b"ERROR\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A connection given back with unread bytes in its buffer, while a get waits for a dial: the
/// get takes the connection given back first, and must peek at it before lending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_stray_bytes_is_never_lent_again() {
    // Stray bytes read with the reply (in the connection's buffer), then arriving after it (in
    // the socket).
    for later in [true, false] {
        stray_bytes_case(later).await;
    }
}

async fn stray_bytes_case(later: bool) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let addr = stray_bytes_server(accepted.clone(), later).await;
    let pool = pool_of(addr, Connector::new().dialect(Dialect::Text), 2);
    let mut a = pool.get().await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"mine"[..]));
    // Let the stray bytes arrive in the same read, or in the socket.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = pool.clone();
    let b = tokio::spawn(async move {
        let mut b = p.get().await.unwrap();
        b.get("k").await
    });
    // B's create is waiting on the slow handshake of a second connection.
    support::eventually("a second connection dialed", || {
        accepted.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    let got = b.await.unwrap();
    eprintln!("later {later}: the next caller got {got:?}");
    assert_eq!(
        got.unwrap().as_deref(),
        Some(&b"good"[..]),
        "later {later}: the next caller read bytes left on another caller's connection"
    );
}

/// nutcracker closes the connection on `mn`: concurrent first connections of an Auto connector
/// all succeed, in text, and the number of probes the proxy closed is counted.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_dialect_through_nutcracker_with_concurrent_first_connections() {
    let Some(backend) = support::memcached() else {
        return;
    };
    let Some(front) = support::nutcracker::start(&[backend.addr]) else {
        return;
    };
    // nutcracker may need a moment to listen.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(front.server.addr)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its stats are aggregated every 100 ms: the connection above counted first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = front_errors(front.stats).await;
    let connector = Connector::new();
    let pool = pool_of(front.server.addr, connector.clone(), 6);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut c = pool.get().await?;
                let k = format!("{}{i}", "n".repeat(240));
                c.set(&k, b"END\r\n", 0)
                    .await
                    .map_err(|e| multiloop::PoolError::Backend(e.into()))?;
                let v = c
                    .get_multi(&[&k, &k])
                    .await
                    .map_err(|e| multiloop::PoolError::Backend(e.into()))?;
                // Hold it, so that the six are distinct connections.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, multiloop::PoolError<std::io::Error>>((c.is_meta(), v.len()))
            })
        })
        .collect();
    for t in tasks {
        let (meta, n) = t.await.unwrap().unwrap();
        assert!(!meta);
        assert_eq!(n, 1);
    }
    assert_eq!(connector.speaks(), Dialect::Text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = front_errors(front.stats).await - settled;
    let stats = pool.stats();
    eprintln!(
        "nutcracker closed {closed} probes for {} pooled connections",
        stats.created
    );
    assert_eq!(stats.created, 6);
    assert_eq!(
        closed, 1,
        "one probe per connector, whatever the concurrency"
    );
}

/// nutcracker's `client_err` for the pool `fleet`: client connections it closed on an error
/// (a request it could not parse, such as `mn`).
#[cfg(feature = "cli")]
async fn front_errors(stats: SocketAddr) -> u64 {
    use tokio::io::AsyncReadExt;
    let mut conn = tokio::net::TcpStream::connect(stats).await.unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut text)).await;
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    json["fleet"]["client_err"].as_u64().unwrap()
}
