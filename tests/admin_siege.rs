//! Responders get through: a loaded service's admin endpoint held by 64 keep-alive clients
//! polling it and 64 clients sending their headers a byte at a time, while the `multiloop`
//! command pauses, resizes and resumes the pool over real HTTP.
#![cfg(all(feature = "admin", feature = "cli"))]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiloop::Pool;
use multiloop::admin::{self, Admin, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::servers::{Counting, Reply};

const TOKEN: &str = "siege-token";

/// What the hostile clients saw.
#[derive(Default)]
struct Siege {
    /// Connections open now, by kind.
    keep_alive_open: AtomicUsize,
    slow_open: AtomicUsize,
    /// Connections the server closed, by kind.
    keep_alive_closed: AtomicU64,
    slow_closed: AtomicU64,
    /// Answers the keep-alive clients read, and the most on one connection.
    answers: AtomicU64,
    most_answers_on_one: AtomicU64,
    stop: AtomicBool,
}

/// Reads one HTTP answer (head and a `Content-Length` body); `None` when the connection closed
/// first or nothing came within 5 s.
async fn read_answer(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return Some(());
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// A client that polls `GET /pools` on a keep-alive connection every 200 ms, and reconnects
/// at once when the server closes it.
async fn keep_alive(admin: SocketAddr, siege: Arc<Siege>) {
    while !siege.stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = TcpStream::connect(admin).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        siege.keep_alive_open.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::new();
        let mut answers = 0;
        while !siege.stop.load(Ordering::Relaxed) {
            let sent = conn
                .write_all(b"GET /pools HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                .await;
            if sent.is_err() || read_answer(&mut conn, &mut buf).await.is_none() {
                break;
            }
            answers += 1;
            siege.answers.fetch_add(1, Ordering::Relaxed);
            siege
                .most_answers_on_one
                .fetch_max(answers, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        siege.keep_alive_open.fetch_sub(1, Ordering::Relaxed);
        if !siege.stop.load(Ordering::Relaxed) {
            siege.keep_alive_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A client that sends its request's headers a few bytes every 100 ms and never finishes
/// them, and reconnects at once when the server closes it.
async fn slow_headers(admin: SocketAddr, siege: Arc<Siege>) {
    while !siege.stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = TcpStream::connect(admin).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        siege.slow_open.fetch_add(1, Ordering::Relaxed);
        let mut ok = conn.write_all(b"GET /pools HTTP/1.1\r\n").await.is_ok();
        let mut probe = [0u8; 64];
        while ok && !siege.stop.load(Ordering::Relaxed) {
            // A read that ends (EOF or reset) means the server closed the connection.
            if let Ok(result) =
                tokio::time::timeout(Duration::from_millis(100), conn.read(&mut probe)).await
            {
                ok = matches!(result, Ok(n) if n > 0);
            }
            ok = ok && conn.write_all(b"X-Slow: 1\r\n").await.is_ok();
        }
        siege.slow_open.fetch_sub(1, Ordering::Relaxed);
        if !siege.stop.load(Ordering::Relaxed) {
            siege.slow_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn cli(admin: SocketAddr, args: &[&str]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_multiloop"))
        .args(args)
        .args(["--admin", &admin.to_string(), "--as", "siege-responder"])
        .env("MULTILOOP_ADMIN_TOKEN", TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the CLI ends within 30 s")
        .unwrap();
    (out, started.elapsed())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_through_64_keep_alive_and_64_slow_header_clients() {
    let server = Counting::start(Reply::Echo(Duration::from_millis(1))).await;
    let pool = Pool::builder(server.addr)
        .name("cache")
        .max_size(8)
        .build()
        .unwrap();
    let registry = Registry::new();
    registry.register(&pool).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(admin::serve(listener, Admin::new(registry).token(TOKEN)));
    // Load on the pool, as in a service.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop_load.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if pool.get().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let siege = Arc::new(Siege::default());
    let mut clients = Vec::new();
    for _ in 0..64 {
        clients.push(tokio::spawn(keep_alive(admin_addr, siege.clone())));
        clients.push(tokio::spawn(slow_headers(admin_addr, siege.clone())));
    }
    support::eventually("the 128 hostile clients are connected", || {
        siege.keep_alive_open.load(Ordering::Relaxed) + siege.slow_open.load(Ordering::Relaxed)
            >= 120
    })
    .await;
    // Let them settle in: past the 2 s header timeout, so that every slot has been fought for.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut took = Vec::new();
    for round in 0..3 {
        let (out, t) = cli(admin_addr, &["pause", "cache"]).await;
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert!(pool.status().paused);
        took.push(t);
        let size = (3 + round).to_string();
        let (out, t) = cli(admin_addr, &["resize", "cache", &size]).await;
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert_eq!(pool.status().max_size, 3 + round);
        took.push(t);
        let (out, t) = cli(admin_addr, &["pools", "cache"]).await;
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("PAUSED"));
        took.push(t);
        let (out, t) = cli(admin_addr, &["resume", "cache"]).await;
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert!(!pool.status().paused);
        took.push(t);
    }
    let held = (
        siege.keep_alive_open.load(Ordering::Relaxed),
        siege.slow_open.load(Ordering::Relaxed),
    );
    siege.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    stop_load.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    serving.abort();

    // The siege was real: the clients kept reconnecting, the pollers were answered, and no
    // connection without the token was kept for a second answer.
    let answers = siege.answers.load(Ordering::Relaxed);
    assert!(answers > 64, "the pollers were answered: {answers}");
    assert_eq!(
        siege.most_answers_on_one.load(Ordering::Relaxed),
        1,
        "a connection without the token gets one answer, then closes"
    );
    assert!(siege.slow_closed.load(Ordering::Relaxed) >= 64);
    took.sort();
    support::notice(&format!(
        "12 CLI calls through the siege (clients open at the end: {} keep-alive, {} slow; \
         closed by the server: {} keep-alive, {} slow; {answers} answers to pollers): \
         min {:?}, median {:?}, max {:?}",
        held.0,
        held.1,
        siege.keep_alive_closed.load(Ordering::Relaxed),
        siege.slow_closed.load(Ordering::Relaxed),
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    ));
}
