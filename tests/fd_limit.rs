//! EMFILE is its own error kind, `FdLimit`: not retried, not mistaken for port exhaustion, and
//! a bounded pool still gets the work done under a low descriptor limit.
//!
//! This file holds one test, because it lowers its own process's soft file-descriptor limit to
//! 256 (with `prlimit`, from util-linux), and cargo runs each test file in a process of its own.

mod support;

use futures_util::StreamExt;
use multiloop::{DialErrorKind, Dialer, Pool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn set_soft_limit(n: u64) -> std::io::Result<bool> {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={n}:"),
        ])
        .status()?;
    Ok(status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_256_descriptors_dials_fail_typed_and_a_pool_completes_the_work() {
    // The server is a process of its own, started before the limit drops.
    let Some(server) = support::memcached() else {
        return;
    };
    let dialer = Dialer::builder()
        .sources("127.67.0.0/16".parse().unwrap())
        .build()
        .unwrap();
    match set_soft_limit(256) {
        Ok(true) => {}
        other => {
            assert!(!support::servers_required(), "prlimit failed: {other:?}");
            support::notice(&format!("SKIPPED: prlimit is unavailable ({other:?})"));
            return;
        }
    }

    // 1,000 concurrent dials cannot fit in 256 descriptors.
    let results =
        futures_util::future::join_all((0..1_000).map(|_| dialer.connect(server.addr))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        ok > 0 && !errors.is_empty(),
        "{ok} ok, {} failed",
        errors.len()
    );
    for err in &errors {
        assert_eq!(err.kind(), DialErrorKind::FdLimit, "{err}");
        assert_eq!(err.attempts(), 1, "FdLimit is not retried: {err}");
        assert!(err.to_string().contains("file descriptors"), "{err}");
    }
    let stats = dialer.stats();
    assert_eq!(stats.failures.fd_limit, errors.len() as u64);
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.quarantined, 0, "EMFILE does not quarantine a source");
    drop(results);

    // A pool of 64 does all 1,000 pieces of work within the same limit.
    let pool = Pool::builder(server.addr)
        .dialer(dialer)
        .max_size(64)
        .build()
        .unwrap();
    let mut done = pool.fan_out(0..1_000, |mut conn, _| async move {
        conn.write_all(b"version\r\n").await?;
        let mut line = String::new();
        BufReader::new(&mut conn).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line.starts_with("VERSION "))
    });
    let mut completed = 0;
    while let Some(result) = done.next().await {
        assert!(result.unwrap().unwrap());
        completed += 1;
    }
    let _ = set_soft_limit(20_000);
    assert_eq!(completed, 1_000);
    assert!(pool.stats().created <= 64);
}
