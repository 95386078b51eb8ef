//! EMFILE is its own error kind, `FdLimit`: not retried, not mistaken for port exhaustion.
//!
//! This file holds one test, because it lowers its own process's soft file-descriptor limit
//! (with `prlimit`, from util-linux) and cargo runs each test file in a process of its own.

mod support;

use multiloop::{DialErrorKind, Dialer};

#[tokio::test]
async fn out_of_descriptors_is_fd_limit_not_ports_exhausted() {
    let acceptor = support::Acceptor::start("127.0.0.1").await;
    let dialer = Dialer::builder()
        .sources("127.67.0.0/24".parse().unwrap())
        .build()
        .unwrap();
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let soft = open_now + 40;
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={soft}:")])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            assert!(!support::servers_required(), "prlimit failed: {other:?}");
            support::notice(&format!("SKIPPED: prlimit is unavailable ({other:?})"));
            return;
        }
    }

    // Each connection costs two descriptors here (client and accepted side): 200 cannot fit.
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..200 {
        match dialer.connect(acceptor.addr).await {
            Ok(stream) => held.push(stream),
            Err(e) => errors.push(e),
        }
    }
    let n_held = held.len();
    drop(held);
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=20000:"])
        .status();

    assert!(n_held > 0 && n_held < 200, "held {n_held}");
    assert!(!errors.is_empty());
    for err in &errors {
        assert_eq!(err.kind(), DialErrorKind::FdLimit, "{err}");
        assert_eq!(err.attempts(), 1, "FdLimit is not retried: {err}");
        assert!(err.to_string().contains("file descriptors"), "{err}");
    }
    let stats = dialer.stats();
    assert_eq!(stats.failures.fd_limit, errors.len() as u64);
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.quarantined, 0, "EMFILE does not quarantine a source");
}
