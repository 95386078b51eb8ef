//! The `multiloop` command's census as a responder runs it: `doctor` with host names, only the
//! given range counted, exit status for health checks, `--json`; `watch` stopping by itself.
#![cfg(feature = "cli")]

mod support;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

fn multiloop(args: &[&str]) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_multiloop"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a stuck command is killed, and the test fails on its status.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A connection from `source:port` to `target`.
fn connect_from(source: std::net::IpAddr, port: u16, target: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, port).into()).unwrap();
    socket.connect(&target.into()).unwrap();
    socket
}

#[test]
fn doctor_counts_only_the_given_range_and_fails_the_health_check_at_risk() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let source = support::fresh_source(61, 1);
    let (lo, hi) = (
        *support::blocks::CENSUS.start(),
        *support::blocks::CENSUS.end(),
    );
    let _held: Vec<Socket> = (lo..=hi)
        .map(|port| connect_from(source, port, target))
        .collect();
    let range = format!("{lo}-{}", lo + 3);

    let out = multiloop(&[
        "doctor",
        &target.to_string(),
        "--port-range",
        &range,
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "4 of 4 ports is at risk: {}",
        show(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "at_risk");
    let address = &report["addresses"][0];
    assert_eq!(address["ports_per_source"], 4);
    assert_eq!(address["established"], 4, "{address}");
    assert_eq!(address["states"]["ESTABLISHED"], 4, "{address}");
    assert_eq!(address["outside_range"], 8, "{address}");
    assert_eq!(address["sources"][0]["source"], source.to_string());
    assert_eq!(report["utilization"], 1.0);

    // A threshold above the share passes; the table names the busiest source.
    let out = multiloop(&[
        "doctor",
        &target.to_string(),
        "--port-range",
        &format!("{lo}-{}", lo + 9),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = multiloop(&[
        "doctor",
        &target.to_string(),
        "--port-range",
        &format!("{lo}-{}", lo + 99),
        "--max-utilization",
        "0.5",
    ]);
    assert_eq!(out.status.code(), Some(0), "12 of 100: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("VERDICT: OK"), "{stdout}");
    assert!(stdout.contains(&source.to_string()), "{stdout}");
}

#[test]
fn doctor_accepts_host_names_and_refuses_bad_input_with_status_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = multiloop(&["doctor", &format!("localhost:{port}")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("VERDICT: OK"));

    for bad in [
        vec!["doctor", "localhost"],
        vec!["doctor", "127.0.0.1:1", "--max-utilization", "1.5"],
        vec!["doctor", "127.0.0.1:1", "--max-utilization", "NaN"],
        vec!["doctor", "127.0.0.1:1", "--port-range", "9-3"],
        vec!["watch", "127.0.0.1:1", "--interval", "0s"],
        vec!["watch", "127.0.0.1:1", "--for", "99999h"],
    ] {
        let out = multiloop(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", show(&out));
        assert!(!out.stderr.is_empty(), "{bad:?} says why");
    }
}

#[test]
fn watch_shows_states_sources_and_trend_and_stops_by_itself() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let _conn = std::net::TcpStream::connect(target).unwrap();
    let out = multiloop(&[
        "watch",
        &target.to_string(),
        "--interval",
        "200ms",
        "--for",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ESTABLISHED 1"), "{stdout}");
    assert!(stdout.contains("busiest source: ["), "{stdout}");
    assert!(stdout.contains("trend: steady"), "{stdout}");
    assert!(stdout.matches("multiloop watch").count() >= 3, "{stdout}");
}
