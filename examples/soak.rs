//! A bounded soak: mixed memcached requests through a pool for a minute while the server is
//! killed and restarted at random. Errors may only happen during an outage.
//!
//! ```text
//! cargo run --release --example soak                    # 60 s
//! cargo run --release --example soak -- --duration 20s --workers 16
//! ```
//!
//! It starts the system's `memcached` on a free loopback port (so it needs memcached
//! installed), and every 4 to 12 s kills it, keeps it down for 0.2 to 1.5 s, and starts it
//! again on the same port. An error counts as "during an outage" from the kill until 1 s after
//! the restart; any other error makes the run fail (exit status 1).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use multiloop::Pool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
#[command(about = "Mixed memcached requests through a pool while the server restarts at random")]
struct Args {
    /// How long to run, in seconds (at most an hour).
    #[arg(long, default_value = "60s", value_parser = parse_secs)]
    duration: Duration,
    /// Concurrent request loops.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// The pool's max_size.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("expected seconds such as 60s, got {s:?}"))?;
    if n > 0.0 && n <= 3600.0 {
        Ok(Duration::from_secs_f64(n))
    } else {
        Err("the duration must be above 0 s and at most an hour".into())
    }
}

/// memcached on a fixed loopback port, killed on drop.
struct Memcached(Child);

impl Memcached {
    fn start(port: u16) -> std::io::Result<Memcached> {
        let mut args = vec![
            "-l".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
        ];
        if std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        {
            args.extend(["-u".to_string(), "root".into()]);
        }
        let child = Command::new("memcached")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!("could not start memcached ({e}); install it first"))
            })?;
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Memcached(child));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::other("memcached did not start listening"))
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One of three requests, chosen by the counter: set, get or version.
async fn request(conn: &mut multiloop::Stream, n: u64) -> std::io::Result<()> {
    let key = format!("soak:{}", n % 1000);
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    match n % 3 {
        0 => {
            let value = format!("value-{n}");
            let command = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
            reader.get_mut().write_all(command.as_bytes()).await?;
            reader.read_line(&mut line).await?;
            if line != "STORED\r\n" {
                return Err(std::io::Error::other(format!("set: {line:?}")));
            }
        }
        1 => {
            reader
                .get_mut()
                .write_all(format!("get {key}\r\n").as_bytes())
                .await?;
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if line == "END\r\n" {
                    break;
                }
                let len: usize = line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("get: {line:?}")))?;
                let mut value = vec![0u8; len + 2];
                reader.read_exact(&mut value).await?;
            }
        }
        _ => {
            reader.get_mut().write_all(b"version\r\n").await?;
            reader.read_line(&mut line).await?;
            if !line.starts_with("VERSION ") {
                return Err(std::io::Error::other(format!("version: {line:?}")));
            }
        }
    }
    Ok(())
}

/// Keeps the first 10,000 failures for the report: bounded.
fn record(failures: &Mutex<Vec<(Duration, String)>>, at: Duration, e: String) {
    let mut f = failures.lock().unwrap();
    if f.len() < 10_000 {
        f.push((at, e));
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("no free port: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = match Memcached::start(port) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("soak: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let pool = match Pool::builder(target)
        .max_size(args.pool_size)
        .wait_timeout(Duration::from_millis(500))
        .create_timeout(Duration::from_millis(500))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "soak: {:?}, {} workers, pool of {}, memcached on {target} restarting at random",
        args.duration, args.workers, args.pool_size
    );

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // When each failure happened, since the start.
    let failures: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let (pool, stop, ok, failed, failures, counter) = (
            pool.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failures.clone(),
            counter.clone(),
        );
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let outcome = match pool.get().await {
                    Ok(mut conn) => {
                        match tokio::time::timeout(Duration::from_secs(2), request(&mut conn, n))
                            .await
                        {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => {
                                conn.discard();
                                Err(format!("request: {e}"))
                            }
                            Err(_) => {
                                conn.discard();
                                Err("request timed out".to_string())
                            }
                        }
                    }
                    Err(e) => Err(format!("get: {}", e.as_str())),
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // When it failed: a request in flight at a kill fails after it.
                        record(&failures, started.elapsed(), e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }

    // The chaos: kill and restart at random, until the end.
    let mut outages: Vec<(Duration, Duration)> = Vec::new();
    let end = started + args.duration;
    loop {
        let up_for = Duration::from_millis(rand::random_range(4_000..12_000));
        if Instant::now() + up_for >= end {
            break;
        }
        tokio::time::sleep(up_for).await;
        let killed = started.elapsed();
        drop(server.take());
        tokio::time::sleep(Duration::from_millis(rand::random_range(200..1_500))).await;
        server = match Memcached::start(port) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("soak: could not restart memcached: {e}");
                None
            }
        };
        let restarted = started.elapsed();
        println!(
            "  outage {:>6.2}s - {:>6.2}s",
            killed.as_secs_f64(),
            restarted.as_secs_f64()
        );
        outages.push((killed, restarted));
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    drop(server);

    // An error belongs to an outage from the kill until 1 s after the restart.
    let grace = Duration::from_secs(1);
    let failures = failures.lock().unwrap();
    let outside: Vec<&(Duration, String)> = failures
        .iter()
        .filter(|(at, _)| !outages.iter().any(|(k, r)| *at >= *k && *at <= *r + grace))
        .collect();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "soak: {ok} requests ok, {failed} failed ({} outside outages), {} outages, {:?}",
        outside.len(),
        outages.len(),
        pool.stats()
    );
    if outside.is_empty() {
        println!("PASS: every error happened during an outage");
        std::process::ExitCode::SUCCESS
    } else {
        for (at, e) in outside.iter().take(10) {
            println!("  outside an outage at {:.3}s: {e}", at.as_secs_f64());
        }
        println!("FAIL: errors outside outages");
        std::process::ExitCode::FAILURE
    }
}
