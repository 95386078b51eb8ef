//! The integrations against real servers: redis (password, protected mode, unix socket),
//! memcached (multi-get through the pool, unix socket), hyper through the dialer, and `Raw`
//! over a unix socket.

mod support;

use multiloop::Pool;

#[cfg(feature = "redis")]
mod redis_tests {
    use super::*;
    use ::redis::AsyncCommands;
    use multiloop::PoolError;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    /// The client address redis sees for this connection.
    async fn client_addr(conn: &mut ::redis::aio::MultiplexedConnection) -> IpAddr {
        let info: String = ::redis::cmd("CLIENT")
            .arg("INFO")
            .query_async(conn)
            .await
            .unwrap();
        let addr = info
            .split_whitespace()
            .find_map(|f| f.strip_prefix("addr="))
            .expect("addr= in CLIENT INFO");
        addr.parse::<std::net::SocketAddr>().unwrap().ip()
    }

    #[tokio::test]
    async fn redis_with_a_password_works_from_a_spread_source() {
        let Some(server) =
            support::redis(&["--requirepass", "s3cret-pw", "--protected-mode", "yes"])
        else {
            return;
        };
        let url = format!("redis://:s3cret-pw@{}/2", server.addr);
        let pool = multiloop::redis::pool(&url)
            .unwrap()
            .max_size(4)
            .build()
            .unwrap();
        let mut conn = pool.get().await.unwrap();
        let _: () = conn.set("greeting", "hello").await.unwrap();
        let value: String = conn.get("greeting").await.unwrap();
        assert_eq!(value, "hello");
        let db: i64 = ::redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut *conn)
            .await
            .map(|info| {
                info.split_whitespace()
                    .find_map(|f| f.strip_prefix("db="))
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(-1)
            })
            .unwrap();
        assert_eq!(db, 2, "the database comes from the URL");
        assert_ne!(
            client_addr(&mut conn).await,
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        drop(conn);
        // Reused, after a PING check.
        let mut again = pool.get().await.unwrap();
        let _: String = again.get("greeting").await.unwrap();
        assert_eq!(pool.stats().created, 1);
    }

    #[tokio::test]
    async fn redis_acl_user_from_the_url() {
        // Each word of an ACL rule is an argument of its own: redis quotes one with spaces.
        let Some(server) = support::redis(&[
            "--user",
            "default",
            "off",
            "--user",
            "alice",
            "on",
            ">alice-pw",
            "~*",
            "&*",
            "+@all",
        ]) else {
            return;
        };
        let url = format!("redis://alice:alice-pw@{}", server.addr);
        let pool = multiloop::redis::pool(&url).unwrap().build().unwrap();
        let mut conn = pool.get().await.unwrap();
        let whoami: String = ::redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut *conn)
            .await
            .unwrap();
        assert_eq!(whoami, "alice");

        let wrong = multiloop::redis::pool(&format!("redis://alice:nope@{}", server.addr))
            .unwrap()
            .build()
            .unwrap();
        let err = wrong.get().await.expect_err("a wrong password is refused");
        assert!(
            matches!(
                &err,
                PoolError::Backend(multiloop::redis::Error::Auth { user: Some(u), .. }) if u == "alice"
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn protected_mode_is_a_typed_error_that_names_the_fix() {
        let Some(server) = support::redis(&["--protected-mode", "yes"]) else {
            return;
        };
        let pool = multiloop::redis::pool(&format!("redis://{}", server.addr))
            .unwrap()
            .build()
            .unwrap();
        let err = pool
            .get()
            .await
            .expect_err("protected mode refuses 127.x sources");
        let PoolError::Backend(multiloop::redis::Error::ProtectedMode { source, target }) = &err
        else {
            panic!("expected ProtectedMode, got {err}");
        };
        assert_ne!(*source, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(*target, server.addr);
        let message = err.to_string();
        let refused = source.to_string();
        for phrase in [
            refused.as_str(),
            "protected mode",
            "requirepass",
            "protected-mode no",
            "fallback_to_localhost",
        ] {
            assert!(
                message.contains(phrase),
                "{message} should contain {phrase}"
            );
        }
    }

    #[tokio::test]
    async fn protected_mode_can_fall_back_to_localhost_loudly() {
        let (logs, _guard) = support::logs::capture();
        let Some(server) = support::redis(&["--protected-mode", "yes"]) else {
            return;
        };
        let connector = multiloop::redis::Connector::from_url(&format!("redis://{}", server.addr))
            .unwrap()
            .fallback_to_localhost(true);
        let pool = Pool::builder(server.addr)
            .connector(connector)
            .build()
            .unwrap();
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.get().await.unwrap();
            assert_eq!(
                client_addr(&mut conn).await,
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            );
            conns.push(conn);
        }
        // The fallback dials once per connection, through the pool's dialer: one refused spread
        // dial, then one dial from 127.0.0.1 for each connection.
        assert_eq!(pool.dialer().stats().dials_ok, 4);
        let mut info_conn = conns.pop().unwrap();
        let info: String = ::redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut *info_conn)
            .await
            .unwrap();
        let received: usize = info
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_connections_received in INFO stats");
        // The server also saw its readiness probe from the test support.
        assert!(
            (4..=5).contains(&received),
            "4 handshakes from the pool, {received} at the server"
        );
        let warnings: Vec<String> = logs
            .events()
            .into_iter()
            .filter(|e| e.contains("protected mode"))
            .collect();
        assert_eq!(
            warnings.len(),
            1,
            "one warning, not one per connection: {warnings:#?}"
        );
    }

    #[tokio::test]
    async fn passwords_stay_out_of_debug_and_errors() {
        let connector =
            multiloop::redis::Connector::from_url("redis://alice:hunter2-secret@127.0.0.1:6379/1")
                .unwrap();
        let debug = format!("{connector:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let err =
            multiloop::redis::pool("redis://alice:hunter2-secret@127.0.0.1:notaport").unwrap_err();
        assert_eq!(err.option(), "url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[tokio::test]
    async fn passwords_stay_out_of_tracing_events() {
        let (logs, _guard) = support::logs::capture();
        let Some(server) = support::redis(&["--requirepass", "the-real-one"]) else {
            return;
        };
        let url = format!("redis://:pw-SECRET-123@{}", server.addr);
        let builder = multiloop::redis::pool(&url).unwrap();
        assert!(!format!("{builder:?}").contains("pw-SECRET-123"));
        let pool = builder
            .report_window(Duration::from_millis(1))
            .build()
            .unwrap();
        assert!(!format!("{pool:?}").contains("pw-SECRET-123"));
        for _ in 0..5 {
            let err = pool.get().await.expect_err("the password is wrong");
            assert!(!err.to_string().contains("pw-SECRET-123"), "{err}");
            assert!(!format!("{err:?}").contains("pw-SECRET-123"), "{err:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let events = logs.events();
        assert!(!events.is_empty(), "the failures were reported");
        for event in events {
            assert!(!event.contains("pw-SECRET-123"), "{event}");
        }
    }

    #[tokio::test]
    async fn redis_over_a_unix_socket() {
        let Some(server) = support::redis_unix() else {
            return;
        };
        let url = format!("redis+unix://{}", server.path.display());
        let pool = multiloop::redis::pool(&url).unwrap().build().unwrap();
        assert!(matches!(pool.target(), multiloop::Target::Unix(_)));
        let mut conn = pool.get().await.unwrap();
        let _: () = conn.set("over", "unix").await.unwrap();
        let value: String = conn.get("over").await.unwrap();
        assert_eq!(value, "unix");
    }
}

#[cfg(feature = "memcached")]
mod memcached_tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_many_chunks_fans_out_and_reassembles_a_batch() {
        let Some(server) = support::memcached() else {
            return;
        };
        let pool = Pool::builder(server.addr)
            .connector(multiloop::memcached::Connector::new())
            .max_size(4)
            .build()
            .unwrap();
        {
            let mut conn = pool.get().await.unwrap();
            for i in (0..5_000).step_by(2) {
                conn.set(format!("b{i}"), format!("v{i}").as_bytes(), 0)
                    .await
                    .unwrap();
            }
            // Keys memcached would refuse are refused before anything is sent.
            let bad = conn.get("has space").await.unwrap_err();
            assert!(
                matches!(bad, multiloop::memcached::Error::Refused(_)),
                "{bad:?}"
            );
            assert!(!conn.in_flight());
        }
        let keys = (0..5_000).map(|i| format!("b{i}"));
        let batch = multiloop::memcached::get_many(&pool, keys, 300).await;
        assert!(batch.failed.is_empty(), "{:?}", batch.failed);
        assert_eq!(batch.answered, 5_000);
        assert_eq!(batch.values.len(), 2_500, "every other key was set");
        assert_eq!(batch.values[&b"b42"[..]], b"v42");
        assert!(pool.stats().created <= 4);
        // Borrowed keys (`&str` here) work the same, with nothing copied.
        let names: Vec<String> = (0..5_000).map(|i| format!("b{i}")).collect();
        let borrowed =
            multiloop::memcached::get_many(&pool, names.iter().map(String::as_str), 300).await;
        assert_eq!(borrowed.values, batch.values);

        // A paused pool sheds every chunk, counted with its keys.
        pool.pause();
        let keys = (0..1_000).map(|i| format!("b{i}"));
        let batch = multiloop::memcached::get_many(&pool, keys, 300).await;
        let shed: usize = batch.failed.iter().map(|(n, _)| n).sum();
        assert_eq!(shed, 1_000);
        assert!(batch.failed.iter().all(|(_, e)| matches!(
            e,
            multiloop::memcached::Error::Pool(multiloop::PoolError::Paused)
        )));
    }

    #[tokio::test]
    async fn memcached_multi_get_through_the_pool() {
        let Some(server) = support::memcached() else {
            return;
        };
        let pool = Pool::builder(server.addr)
            .connector(multiloop::memcached::Connector::new())
            .max_size(8)
            .build()
            .unwrap();
        {
            let mut conn = pool.get().await.unwrap();
            for i in 0..1_000 {
                conn.set(format!("k{i}"), format!("v{i}").as_bytes(), 0)
                    .await
                    .unwrap();
            }
        }
        let keys: Vec<String> = (0..1_000).map(|i| format!("k{i}")).collect();
        let chunks: Vec<Vec<String>> = keys.chunks(100).map(<[String]>::to_vec).collect();
        let mut results = pool.fan_out(chunks, |mut conn, chunk| async move {
            conn.get_multi(&chunk).await
        });
        let mut found = 0;
        while let Some(result) = results.next().await {
            let values = result.unwrap().unwrap();
            for (k, v) in &values {
                assert_eq!(v[1..], k[1..]);
            }
            found += values.len();
        }
        assert_eq!(found, 1_000);
        assert!(pool.stats().created <= 8);
    }

    #[tokio::test]
    async fn memcached_over_a_unix_socket() {
        let Some(server) = support::memcached_unix() else {
            return;
        };
        let pool = Pool::builder_unix(&server.path)
            .connector(multiloop::memcached::Connector::new())
            .build()
            .unwrap();
        let mut conn = pool.get().await.unwrap();
        conn.set("over", b"unix", 0).await.unwrap();
        assert_eq!(
            conn.get("over").await.unwrap().as_deref(),
            Some(&b"unix"[..])
        );
        let version = conn.version().await.unwrap();
        assert!(version.starts_with("1."), "{version}");
    }
}

#[tokio::test]
async fn raw_over_a_unix_socket_and_a_dead_socket_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(server) = support::memcached_unix() else {
        return;
    };
    let pool = Pool::builder_unix(&server.path).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    assert!(conn.as_unix().is_some());
    conn.write_all(b"version\r\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut conn)
        .read_line(&mut line)
        .await
        .unwrap();
    assert!(line.starts_with("VERSION "), "{line}");
    drop(conn);
    // Unix dials go through the dialer too, counted there.
    assert_eq!(pool.dialer().stats().dials_ok, 1);

    let gone = Pool::builder_unix(server.path.with_file_name("nobody-here.sock"))
        .build()
        .unwrap();
    let err = gone.get().await.expect_err("no socket file");
    let dial = err.dial_error().expect("a dial error");
    assert_eq!(dial.kind(), multiloop::DialErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("nobody-here.sock"), "{err}");
    assert_eq!(
        gone.dialer().stats().failures.refused,
        1,
        "{:?}",
        gone.dialer().stats()
    );
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn hyper_requests_go_through_the_dialer_from_a_spread_source() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A tiny HTTP/1.1 server that answers with the peer address it saw.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });

    let dialer = multiloop::Dialer::builder().build().unwrap();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(dialer.clone());
    let uri: http::Uri = format!("http://{addr}/whoami").parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let peer: IpAddr = std::str::from_utf8(&body).unwrap().parse().unwrap();
    assert_ne!(
        peer,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "the server saw {peer}"
    );
    assert!(dialer.sources().contains(peer));
    assert_eq!(dialer.stats().dials_ok, 1);
    server.abort();
}
