//! The admin endpoint over real HTTP, driven by the `multiloop` command as a responder would:
//! a loaded service paused and resumed, a resize counted at the server, calls without the token
//! and hostile bodies refused, and the service unharmed by all of it.
#![cfg(all(feature = "admin", feature = "cli"))]

mod support;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiloop::admin::{self, Admin, Registry};
use multiloop::{Pool, PoolError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use support::servers::{Counting, Reply};

const TOKEN: &str = "s3cret-token-for-tests";

/// A service: one pool named `cache` with a bulkhead `batch`, its admin endpoint on loopback,
/// and load from 16 tasks until `stop`.
struct Service {
    pool: Pool,
    admin: SocketAddr,
    served: Arc<AtomicU64>,
    shed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    load: Vec<tokio::task::JoinHandle<()>>,
    server: Counting,
}

impl Service {
    async fn start(token: Option<&str>) -> Service {
        let server = Counting::start(Reply::Echo(Duration::from_millis(1))).await;
        let pool = Pool::builder(server.addr)
            .name("cache")
            .max_size(8)
            .build()
            .unwrap();
        let _batch = pool.bulkhead("batch");
        let registry = Registry::new();
        registry.register(&pool).unwrap();
        let mut handler = Admin::new(registry);
        if let Some(t) = token {
            handler = handler.token(t);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        tokio::spawn(admin::serve(listener, handler));
        let (served, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(60);
        let load = (0..16)
            .map(|i| {
                let (pool, served, shed, stop) =
                    (pool.clone(), served.clone(), shed.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match pool.get().await {
                            Ok(conn) => {
                                let mut conn = BufReader::new(conn);
                                conn.get_mut()
                                    .write_all(format!("req-{i}-{n}\n").as_bytes())
                                    .await
                                    .unwrap();
                                let mut line = String::new();
                                conn.read_line(&mut line).await.unwrap();
                                assert_eq!(line, format!("reply-{i}-{n}\r\n"));
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(PoolError::Paused | PoolError::Saturated) => {
                                shed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            Err(e) => panic!("unexpected: {e}"),
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Service {
            pool,
            admin,
            served,
            shed,
            stop,
            load,
            server,
        }
    }

    /// Waits until `counter` grows by `by`, for at most 10 s.
    async fn grows(counter: &AtomicU64, by: u64) -> bool {
        let start = counter.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if counter.load(Ordering::Relaxed) >= start + by {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.load {
            task.await.unwrap();
        }
    }
}

/// Runs the `multiloop` command against the service's admin endpoint.
async fn cli(admin: SocketAddr, args: &[&str], token: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_multiloop"));
    command
        .args(args)
        .args(["--admin", &admin.to_string(), "--as", "test-responder"])
        .env_remove("MULTILOOP_ADMIN_TOKEN")
        .kill_on_drop(true);
    if let Some(t) = token {
        command.env("MULTILOOP_ADMIN_TOKEN", t);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI answers within 30 s")
        .unwrap()
}

/// One raw HTTP/1.1 request; returns the status code and the body.
async fn http(admin: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(admin).await.unwrap();
    // A peer that stops reading a huge body is answered and closed early; ignore the reset.
    let _ = conn.write_all(request).await;
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (code, body.to_string())
}

fn post(path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_service_is_paused_and_resumed_from_the_cli() {
    let service = Service::start(Some(TOKEN)).await;
    assert!(Service::grows(&service.served, 200).await, "load runs");

    let out = cli(service.admin, &["pause", "cache"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PAUSED"),
        "{}",
        text(&out)
    );
    assert!(service.pool.status().paused);
    // Paused: the load is shed at once, and nothing is served any more.
    assert!(
        Service::grows(&service.shed, 100).await,
        "paused gets are shed"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served = service.served.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(service.served.load(Ordering::Relaxed), served);
    assert!(service.pool.stats().paused >= 100);

    // `pools` shows it, without a token: reads are open.
    let out = cli(service.admin, &["pools"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("cache") && listing.contains("PAUSED"),
        "{listing}"
    );

    let out = cli(service.admin, &["resume", "cache"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!service.pool.status().paused);
    assert!(Service::grows(&service.served, 200).await, "served again");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_from_the_cli_is_seen_in_status_and_at_the_server() {
    let service = Service::start(Some(TOKEN)).await;
    assert!(Service::grows(&service.served, 200).await, "load runs");
    assert!(
        service.server.seen.open() > 3,
        "16 tasks keep more than 3 sockets open"
    );

    let out = cli(service.admin, &["resize", "cache", "3"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(service.pool.status().max_size, 3);
    // The cap holds where it counts: sockets open at the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.server.seen.open() > 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        service.server.seen.open() <= 3,
        "{}",
        service.server.seen.open()
    );
    assert!(Service::grows(&service.served, 200).await, "still serving");
    assert!(service.server.seen.open() <= 3);

    let out = cli(
        service.admin,
        &["limit", "cache", "2", "--bulkhead", "batch"],
        Some(TOKEN),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let batch = service.pool.bulkhead_stats();
    assert_eq!(batch.iter().find(|b| b.name == "batch").unwrap().limit, 2);
    let out = cli(service.admin, &["max-waiters", "cache", "5"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(service.pool.status().max_waiters, 5);

    // Values the pool refuses come back as a 4xx naming the field, and change nothing.
    let out = cli(service.admin, &["resize", "cache", "0"], Some(TOKEN)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_size"),
        "{}",
        text(&out)
    );
    assert_eq!(service.pool.status().max_size, 3);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_the_right_token_is_refused_and_changes_nothing() {
    let service = Service::start(Some(TOKEN)).await;
    let out = cli(service.admin, &["pause", "cache"], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
    let out = cli(
        service.admin,
        &["pause", "cache"],
        Some("s3cret-token-for-test"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!service.pool.status().paused);
    service.stop().await;

    // A service that set no token refuses every change.
    let service = Service::start(None).await;
    let (code, body) = http(service.admin, &post("/pools/cache/pause", Some(""), "")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no admin token"), "{body}");
    assert!(!service.pool.status().paused);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_4xx_naming_the_field_and_the_service_keeps_serving() {
    let service = Service::start(Some(TOKEN)).await;
    let t = Some(TOKEN);
    let huge = "9".repeat(400);
    let long_name = "n".repeat(250);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            post("/pools/cache/resize", t, "{\"max_size\": -1}"),
            400,
            "max_size",
        ),
        (
            post("/pools/cache/resize", t, "{\"max_size\": 1e300}"),
            400,
            "max_size",
        ),
        (
            post(
                "/pools/cache/resize",
                t,
                &format!("{{\"max_size\": {huge}}}"),
            ),
            400,
            "max_size",
        ),
        (
            post(
                "/pools/cache/resize",
                t,
                "{\"max_size\": 18446744073709551615}",
            ),
            400,
            "max_size",
        ),
        (
            post("/pools/cache/resize", t, "{\"max_size\": \"8\"}"),
            400,
            "max_size",
        ),
        (post("/pools/cache/resize", t, "{}"), 400, "max_size"),
        (
            post("/pools/cache/resize", t, "{\"max_size\": 4, \"x\": 1}"),
            400,
            "unknown field",
        ),
        (post("/pools/cache/resize", t, "[1,2]"), 400, "object"),
        (
            post("/pools/cache/resize", t, "{\"max_size\": 4"),
            400,
            "not JSON",
        ),
        (
            post("/pools/cache/resize", t, &"[".repeat(3000)),
            400,
            "not JSON",
        ),
        (
            post("/pools/cache/resize", t, &" ".repeat(100_000)),
            413,
            "4096",
        ),
        (
            post(
                "/pools/cache/limit",
                t,
                "{\"limit\": 2, \"bulkhead\": \"nope\"}",
            ),
            404,
            "bulkhead",
        ),
        (
            post("/pools/cache/limit", t, "{\"limit\": 0}"),
            400,
            "default_limit",
        ),
        (
            post(
                "/pools/cache/max-waiters",
                t,
                "{\"max_waiters\": 99999999999}",
            ),
            400,
            "max_waiters",
        ),
        (post("/pools/cache/explode", t, ""), 404, "no such action"),
        (
            post(&format!("/pools/{long_name}/pause"), t, ""),
            404,
            "no pool named",
        ),
        (post("/pools/%ZZ/pause", t, ""), 400, "hex"),
        (post("/pools/%FF/pause", t, ""), 400, "UTF-8"),
        (
            b"GET /pools/cache/pause HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "POST",
        ),
        (
            b"DELETE /pools HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "GET",
        ),
        (
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
            "no such route",
        ),
    ];
    for (request, code, needle) in &cases {
        let (got, body) = http(service.admin, request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(80)]);
        assert_eq!(got, *code, "{shown}: {body}");
        assert!(body.contains(needle), "{shown}: {body}");
        // Never echoes a hostile input whole.
        assert!(body.len() < 600, "{shown}: {} bytes", body.len());
    }
    // Nothing changed, and the service still answers and serves.
    let status = service.pool.status();
    assert_eq!((status.max_size, status.paused), (8, false));
    let (code, body) = http(
        service.admin,
        b"GET /pools/cache HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["status"]["max_size"], 8);
    assert_eq!(detail["bulkheads"][0]["name"], "batch");
    assert!(detail["stats"]["gets"].as_u64().unwrap() > 0);
    assert!(Service::grows(&service.served, 100).await);
    service.stop().await;
}

#[tokio::test]
async fn serve_refuses_a_listener_off_loopback() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = admin::serve(listener, Admin::new(Registry::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not loopback"), "{err}");
}

#[tokio::test]
async fn a_pool_name_is_registered_once() {
    let server = Counting::start(Reply::Silent).await;
    let registry = Registry::new();
    let a = Pool::builder(server.addr).name("dup").build().unwrap();
    let b = Pool::builder(server.addr).name("dup").build().unwrap();
    registry.register(&a).unwrap();
    let err = registry.register(&b).unwrap_err();
    assert_eq!(err.option(), "name");
    assert!(registry.unregister("dup"));
    registry.register(&b).unwrap();
    assert_eq!(registry.names(), ["dup"]);
    // The longest name a pool takes (128 characters, of 4 bytes each here) is addressable.
    let long = "\u{10ffff}".repeat(128);
    let pool = Pool::builder(server.addr).name(&long).build().unwrap();
    registry.register(&pool).unwrap();
    let path = multiloop::admin::Route::Show.path(Some(&long));
    let (code, body) = http(
        server_admin(&registry).await,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// The registry's admin endpoint on a loopback port of its own.
async fn server_admin(registry: &Registry) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(listener, Admin::new(registry.clone())));
    addr
}

/// On one thread, so that the capture sees the server task's events.
#[tokio::test(flavor = "current_thread")]
async fn each_change_is_logged_once_with_who_asked_and_what() {
    let (captured, _guard) = support::logs::capture();
    let service = Service::start(Some(TOKEN)).await;
    let out = cli(service.admin, &["resize", "cache", "5"], Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    let refused = cli(service.admin, &["resize", "cache", "6"], None).await;
    assert_eq!(refused.status.code(), Some(1));
    let reads = cli(service.admin, &["pools", "cache"], None).await;
    assert!(reads.status.success(), "{}", text(&reads));
    service.stop().await;
    let changes: Vec<String> = captured
        .events()
        .into_iter()
        .filter(|e| e.contains("multiloop admin"))
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let line = &changes[0];
    assert!(line.contains("max_size=5"), "{line}");
    assert!(line.contains("test-responder"), "{line}");
    assert!(line.contains("127.0.0.1:"), "the peer address: {line}");
    assert!(!line.contains(TOKEN), "{line}");
}
