//! A mode the harness must stop at its time limit keeps every number it had, and every key it
//! was asked for is accounted for.
//!
//! The target is a memcached-text server in this test that stores every `set`, answers the
//! first `ANSWERED` gets and then never answers again: the pooled mode serves those keys, then
//! waits on the rest (its per-key timeout, 5 s, is past the time limit) until the harness
//! stops it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

const ANSWERED: u64 = 300;

/// Serves `set` and `version`, answers `ANSWERED` gets in all, then stops answering gets.
fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let gets = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let gets = gets.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().expect("clone the socket");
                let mut lines = BufReader::new(conn);
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let reply = if line.starts_with("set ") {
                        let mut value = String::new();
                        if lines.read_line(&mut value).unwrap_or(0) == 0 {
                            return;
                        }
                        "STORED\r\n"
                    } else if line.starts_with("get ") {
                        if gets.fetch_add(1, Ordering::SeqCst) >= ANSWERED {
                            continue; // stalled: this get is never answered
                        }
                        "END\r\n"
                    } else {
                        "VERSION 1.6.0\r\n"
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[test]
fn a_stopped_mode_keeps_its_figures_and_every_key_adds_up() {
    let target = stalling_server();
    let dir = std::env::temp_dir().join(format!("loadtest-stopped-{}", std::process::id()));
    let json = dir.join("summary.json");
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--mode", "pooled", "--target", &target.to_string()])
        .args(["--duration", "1s", "--rps", "4", "--batch", "200"])
        .args(["--time-limit", "4s", "--port-range", "system"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "harness failed: {output:?}");
    assert!(
        stdout.contains("STOPPED"),
        "the table does not say the mode was stopped:\n{stdout}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read the JSON summary"))
            .expect("parse the JSON summary");
    let _ = std::fs::remove_dir_all(&dir);
    let m = &summary["modes"][0];
    assert_eq!(m["mode"], "pooled");
    assert!(m["stopped"].is_string(), "not marked as stopped: {m}");

    // Four requests of 200 keys were asked for and sent.
    assert_eq!(u(m, "requests_requested"), 4);
    assert_eq!(u(m, "requests_sent"), 4);
    assert_eq!(u(m, "keys_requested"), 800);
    // The figures it had when it was stopped, not zeros: the answered keys were served.
    assert_eq!(u(m, "keys_ok"), ANSWERED);
    let e = &m["errors"];
    let kinds = [
        "ports_exhausted",
        "fd_limit",
        "timeout",
        "refused",
        "other",
        "saturated",
        "paused",
    ];
    let failed_or_shed: u64 = kinds.iter().map(|k| u(e, k)).sum();
    assert_eq!(
        u(m, "keys_ok") + failed_or_shed + u(m, "keys_not_attempted"),
        u(m, "keys_requested"),
        "keys do not add up: {m}"
    );
    assert!(u(m, "keys_not_attempted") > 0, "{m}");
    assert_eq!(u(m, "keys_not_sent"), 0, "{m}");
    // Requests add up too; the ones still waiting when it was stopped count as cut off.
    assert_eq!(
        u(m, "requests_ok")
            + u(m, "requests_shed")
            + u(m, "requests_failed")
            + u(m, "requests_not_sent"),
        u(m, "requests_requested"),
        "requests do not add up: {m}"
    );
    assert!(u(m, "requests_unfinished") >= 1, "{m}");
    assert!(
        u(m, "requests_unfinished") <= u(m, "requests_failed"),
        "{m}"
    );
    // Its timeline goes up to its last report.
    assert!(!m["timeline"].as_array().expect("a timeline").is_empty());
}
