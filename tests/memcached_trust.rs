//! The memcached client trusted with other people's data: a stored value shaped like the
//! protocol, replies for keys not asked for, lengths past any bound, refused requests and
//! cancellations never hand one caller another's bytes. Hostile replies come from a scripted
//! fake server; segmented ones from a proxy in front of a real memcached.
#![cfg(feature = "memcached")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use multiloop::memcached::{self, Connector, Dialect, Error, Store, Stored};
use support::wire::{Cut, Rule, Scripted, Slicer, pool_of, rule};

/// The value of the report: a stale reply whose first segment ends right after a line shaped
/// like the recovery's old marker.
const EVIL: &[u8] = b"VERSION 1.6.18\r\nVALUE mine 0 6\r\nSECRET\r\nEND\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_shaped_like_a_reply_never_reaches_the_next_caller() {
    let Some(server) = support::memcached() else {
        return;
    };
    for dialect in [Dialect::Text, Dialect::Meta] {
        // Every reply held 100 ms, then delivered a line at a time.
        let slicer = Slicer::start(
            server.addr,
            Cut {
                seed: 7,
                max_piece: 0,
                max_delay: Duration::from_millis(2),
                hold: Duration::from_millis(100),
                at_lines: true,
            },
        )
        .await;
        let pool = pool_of(slicer.addr, Connector::new().dialect(dialect), 1);
        pool.get()
            .await
            .unwrap()
            .set("split", EVIL, 0)
            .await
            .unwrap();
        for _ in 0..3 {
            let mut conn = pool.get().await.unwrap();
            let gave_up = tokio::time::timeout(Duration::from_millis(20), conn.get("split")).await;
            assert!(gave_up.is_err(), "the reply is held 100 ms");
            drop(conn);
            // The next caller gets the recovered connection (the pool has one).
            let mut next = pool.get().await.unwrap();
            assert_eq!(next.get("mine").await.unwrap(), None, "{dialect:?}");
            assert_eq!(next.get("split").await.unwrap().as_deref(), Some(EVIL));
        }
        let stats = pool.stats();
        assert_eq!(stats.recovered, 3, "{dialect:?}: {stats:?}");
        assert_eq!(stats.created, 1, "recovered, never redialed: {stats:?}");
    }
}

#[tokio::test]
async fn a_value_for_a_key_not_asked_for_fails_and_closes_the_connection() {
    let fake = Scripted::start(vec![
        rule("get wanted", b"VALUE other 0 6\r\nSECRET\r\nEND\r\n"),
        rule(
            "get b a",
            b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n",
        ),
        rule("get k", b"VALUE k 0 18446744073709551615\r\n"),
        rule("get big", b"VALUE big 0 1099511627776\r\nxxxxxxxx"),
        rule("get neg", b"VALUE neg 0 -1\r\n\r\nEND\r\n"),
        rule("get cr", b"VALUE cr 0 3\r\nabcdEND\r\n"),
        rule("get long", &[b'x'; 4096]),
        rule("set s", b"DELETED\r\n"),
    ])
    .await;
    let pool = pool_of(fake.addr, Connector::new(), 1);
    let cases: [(&str, &[&str]); 8] = [
        ("another key", &["wanted"]),
        ("out of order", &["b", "a"]),
        ("a length that overflows", &["k"]),
        ("a terabyte value", &["big"]),
        ("a negative length", &["neg"]),
        ("a block without its CRLF", &["cr"]),
        ("a line without an end", &["long"]),
        ("a store answered as a delete", &[]),
    ];
    for (i, (what, keys)) in cases.iter().enumerate() {
        let mut conn = pool.get().await.unwrap();
        let err = match keys {
            [] => conn.set("s", b"v", 0).await.unwrap_err(),
            [key] => conn.get(key).await.unwrap_err(),
            keys => conn.get_multi(keys).await.unwrap_err(),
        };
        assert!(matches!(err, Error::Mismatch { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains(&fake.addr.to_string()), "{err}");
        assert!(conn.in_flight(), "{what}: the connection is not lent again");
        drop(conn);
        support::eventually("the connection closed", || {
            pool.stats().closed.total() == i as u64 + 1
        })
        .await;
    }
    assert_eq!(fake.accepted.load(Ordering::SeqCst), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_sends_nothing_even_behind_a_cancelled_batch() {
    // Slow replies, so that a chunk is in flight when the batch is given up.
    let fake = Scripted::start(vec![Rule {
        prefix: b"get ".to_vec(),
        pieces: vec![b"END\r\n".to_vec()],
        delay: Duration::from_millis(30),
    }])
    .await;
    let mut keys: Vec<String> = (0..5).map(|i| format!("big{i}")).collect();
    keys.extend([
        "p".repeat(25),
        "md".into(),
        "victim".into(),
        "q".into(),
        "bad key".into(),
    ]);
    // The refused chunk last, with the one before it in flight on the same connection (one
    // connection, then two), and with a chunk after it.
    let with_after: Vec<String> = keys
        .iter()
        .cloned()
        .chain((0..5).map(|i| format!("after{i}")))
        .collect();
    for (size, keys) in [(1, &keys), (2, &keys), (2, &with_after)] {
        let pool = pool_of(fake.addr, Connector::new(), size);
        for budget in [1, 10, 40, 200] {
            let _ = tokio::time::timeout(
                Duration::from_millis(budget),
                memcached::get_many(&pool, keys.iter(), 5),
            )
            .await;
        }
        let batch = memcached::get_many(&pool, keys.iter(), 5).await;
        assert_eq!(batch.answered, keys.len() - 5);
        assert_eq!(batch.failed.len(), 1);
        assert!(
            matches!(batch.failed[0], (5, Error::Refused(_))),
            "{:?}",
            batch.failed
        );
        support::eventually("recoveries finished", || pool.status().in_use == 0).await;
        let stats = pool.stats();
        assert_eq!(
            stats.closed.total(),
            0,
            "every connection recovered: {stats:?}"
        );
        assert!(!fake.saw("victim"), "a refused chunk reached the server");
        assert!(!fake.saw("bad"), "a refused chunk reached the server");
    }
    assert!(fake.saw("after4"), "the chunk after it was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_bytes_end_to_end() {
    let Some(server) = support::memcached() else {
        return;
    };
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(server.addr, Connector::new().dialect(dialect), 2);
        let (ff, fe) = (b"k\xff".to_vec(), b"k\xfe".to_vec());
        let mut conn = pool.get().await.unwrap();
        conn.set(&ff, b"ff", 0).await.unwrap();
        conn.set(&fe, b"fe", 0).await.unwrap();
        let found = conn.get_multi(&[&ff, &fe]).await.unwrap();
        assert_eq!(found.len(), 2, "{dialect:?}");
        assert_eq!(found[&ff], b"ff");
        assert_eq!(found[&fe], b"fe");
        drop(conn);
        let batch = memcached::get_many(&pool, [&ff, &fe], 1).await;
        assert_eq!(batch.values, found);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_takes_keys_lazily_whatever_size_hint_says() {
    let fake = Scripted::start(vec![Rule {
        prefix: b"get ".to_vec(),
        pieces: vec![b"END\r\n".to_vec()],
        delay: Duration::from_millis(5),
    }])
    .await;
    let pool = pool_of(fake.addr, Connector::new(), 8);
    // 2^40 keys claimed by size_hint: nothing is reserved for them, and the batch is bounded
    // only by the caller's deadline.
    let huge = (0u64..1 << 40).map(|i| format!("k{i}"));
    let cut = tokio::time::timeout(
        Duration::from_millis(200),
        memcached::get_many(&pool, huge, 100),
    )
    .await;
    assert!(cut.is_err());
    // A filter's size_hint is 0: every worker still takes chunks, so more than one connection
    // serves the batch (counted at the server).
    support::eventually("recoveries finished", || pool.status().in_use == 0).await;
    let keys = (0..20_000).map(|i| format!("k{i}")).filter(|k| k.len() > 2);
    let batch = memcached::get_many(&pool, keys, 100).await;
    assert!(batch.failed.is_empty(), "{:?}", batch.failed);
    assert_eq!(batch.answered, 19_990);
    assert!(fake.accepted.load(Ordering::SeqCst) > 1);
}

#[tokio::test]
async fn the_dialect_is_learned_once_and_a_text_server_keeps_its_connection() {
    let Some(server) = support::memcached() else {
        return;
    };
    let connector = Connector::new();
    let pool = pool_of(server.addr, connector.clone(), 2);
    let conn = pool.get().await.unwrap();
    assert!(conn.is_meta());
    assert_eq!(connector.speaks(), Dialect::Meta);

    // A server without the meta protocol answers `mn` with ERROR: same connection, text.
    let fake = Scripted::start(vec![rule("get a", b"VALUE a 0 1\r\n1\r\nEND\r\n")]).await;
    let connector = Connector::new();
    let pool = pool_of(fake.addr, connector.clone(), 2);
    let mut conn = pool.get().await.unwrap();
    assert!(!conn.is_meta());
    assert_eq!(conn.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1);
    assert!(!fake.saw("mn"), "1.5.0 has no meta protocol: no probe");
}

#[tokio::test]
async fn every_command_in_both_dialects() {
    let Some(server) = support::memcached() else {
        return;
    };
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(server.addr, Connector::new().dialect(dialect), 1);
        let mut c = pool.get().await.unwrap();
        let k = |s: &str| format!("{dialect:?}:{s}");
        assert_eq!(c.get(k("none")).await.unwrap(), None);
        assert!(!c.delete(k("none")).await.unwrap());
        c.store(Store::Set, k("f"), b"v", 42, 0).await.unwrap();
        let item = c.gets(k("f")).await.unwrap().unwrap();
        assert_eq!((item.value.as_slice(), item.flags), (&b"v"[..], 42));
        assert!(!c.add(k("f"), b"w", 0).await.unwrap());
        assert!(c.add(k("g"), b"w", 0).await.unwrap());
        assert!(!c.replace(k("none"), b"w", 0).await.unwrap());
        assert!(c.replace(k("g"), b"x", 0).await.unwrap());
        assert!(c.append(k("g"), b"]").await.unwrap());
        assert!(c.prepend(k("g"), b"[").await.unwrap());
        assert_eq!(c.get(k("g")).await.unwrap().as_deref(), Some(&b"[x]"[..]));
        assert_eq!(
            c.cas(k("f"), b"new", 0, item.cas).await.unwrap(),
            Stored::Stored
        );
        assert_eq!(
            c.cas(k("f"), b"old", 0, item.cas).await.unwrap(),
            Stored::Exists
        );
        assert_eq!(
            c.cas(k("none"), b"x", 0, 1).await.unwrap(),
            Stored::NotFound
        );
        c.set(k("n"), b"41", 0).await.unwrap();
        assert_eq!(c.incr(k("n"), 1).await.unwrap(), Some(42));
        assert_eq!(c.decr(k("n"), 50).await.unwrap(), Some(0));
        assert_eq!(c.incr(k("none"), 1).await.unwrap(), None);
        // A non-number is the server's error; the connection stays usable.
        let err = c.incr(k("g"), 1).await.unwrap_err();
        assert!(matches!(err, Error::Server { .. }), "{err:?}");
        assert!(c.touch(k("g"), 100).await.unwrap());
        assert!(!c.touch(k("none"), 100).await.unwrap());
        assert!(c.delete(k("g")).await.unwrap());
        // memcached's item size limit: the server's error, the connection still usable.
        let big = vec![b'x'; (1 << 20) - 10];
        let err = c.set(k("big"), &big, 0).await.unwrap_err();
        assert!(matches!(err, Error::Server { .. }), "{err:?}");
        // Longer than max_value_size: refused, nothing sent.
        let err = c
            .set(k("big"), &vec![0; (1 << 20) + 1], 0)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        // An expiry past i32::MAX would be read as negative (expired at once): refused.
        for ttl in [1 << 31, u32::MAX] {
            let err = c.set(k("f"), b"gone", ttl).await.unwrap_err();
            assert!(matches!(err, Error::Refused(_)), "{err:?}");
            let err = c.touch(k("f"), ttl).await.unwrap_err();
            assert!(matches!(err, Error::Refused(_)), "{err:?}");
        }
        assert!(c.version().await.unwrap().starts_with("1."));
        assert_eq!(c.get(k("f")).await.unwrap().as_deref(), Some(&b"new"[..]));
        assert!(!c.in_flight());
        drop(c);
        assert_eq!(pool.stats().closed.total(), 0, "{dialect:?}");
    }
}

#[test]
fn max_value_size_is_checked() {
    for bad in [0, (1 << 30) + 1, usize::MAX] {
        let err = Connector::new().max_value_size(bad).unwrap_err();
        assert_eq!(err.option(), "max_value_size");
    }
    assert!(Connector::new().max_value_size(1).is_ok());
    assert!(Connector::new().max_value_size(1 << 30).is_ok());
}

/// Key `t<i>`'s value: the protocol's own lines, naming its key.
fn shaped(i: u64) -> Vec<u8> {
    format!("END\r\nMN\r\nVALUE t{i} 0 3\r\nVA 2 kt{i} O{i}\r\n{i}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cancelled_everywhere_get_only_their_own_values() {
    let Some(server) = support::memcached() else {
        return;
    };
    let slicer = Slicer::start(
        server.addr,
        Cut {
            seed: 11,
            max_piece: 7,
            max_delay: Duration::from_micros(300),
            hold: Duration::ZERO,
            at_lines: false,
        },
    )
    .await;
    for dialect in [Dialect::Text, Dialect::Meta] {
        let pool = pool_of(slicer.addr, Connector::new().dialect(dialect), 3);
        {
            let mut c = pool.get().await.unwrap();
            for i in 0..40 {
                // Each value holds the protocol's own lines, and names its key.
                c.set(format!("t{i}"), &shaped(i), 0).await.unwrap();
            }
        }
        let wrong = Arc::new(AtomicUsize::new(0));
        let right = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6u64)
            .map(|t| {
                let (pool, wrong, right) = (pool.clone(), wrong.clone(), right.clone());
                tokio::spawn(async move {
                    for n in 0..40u64 {
                        let i = (t * 7 + n * 13) % 40;
                        let Ok(mut c) = pool.get().await else {
                            continue;
                        };
                        let budget = Duration::from_micros((t * 131 + n * 977) % 20_000);
                        let keys = [format!("t{i}"), format!("t{}", (i + 1) % 40), "none".into()];
                        let got = tokio::time::timeout(budget, c.get_multi(&keys)).await;
                        if let Ok(Ok(found)) = got {
                            right.fetch_add(1, Ordering::SeqCst);
                            for (k, v) in found {
                                let i: u64 = String::from_utf8(k[1..].to_vec())
                                    .ok()
                                    .and_then(|i| i.parse().ok())
                                    .unwrap_or(u64::MAX);
                                if v != shaped(i) {
                                    wrong.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        support::eventually("recoveries finished", || pool.status().in_use == 0).await;
        assert_eq!(wrong.load(Ordering::SeqCst), 0, "{dialect:?}");
        assert!(right.load(Ordering::SeqCst) > 0);
        let stats = pool.stats();
        assert!(stats.recovered > 0, "{dialect:?}: {stats:?}");
        assert_eq!(stats.closed.in_flight, 0, "{dialect:?}: {stats:?}");
    }
}
