//! The `multiloop` command against a fake admin endpoint that sends hostile answers: success
//! only when the answer confirms the change, nothing the server sends reaches the terminal as
//! a control sequence, the exit status README documents for every kind of answer; and the
//! command piped into `head`, and `watch --for` against a long `--interval`.
#![cfg(feature = "cli")]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake endpoint does with each connection.
#[derive(Clone)]
enum Fake {
    /// Reads the request, answers with these bytes, closes.
    Answer(Vec<u8>),
    /// Reads the request and never answers.
    Hang,
    /// Closes at once, unanswered.
    Close,
}

fn answer(status: &str, content_type: &str, body: &str) -> Fake {
    Fake::Answer(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Serves `fake` on a loopback port, on a thread of its own, for the test's life.
fn start(fake: Fake) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut conn, _)) = listener.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    if let Fake::Close = fake {
                        return;
                    }
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(n) if n > 0 => request.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    match fake {
                        Fake::Answer(bytes) => {
                            let _ = conn.write_all(&bytes).await;
                        }
                        _ => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
    });
    addr
}

fn multiloop(args: &[&str], admin: SocketAddr) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_multiloop"))
        .args(args)
        .args(["--admin", &admin.to_string()])
        .env("MULTILOOP_ADMIN_TOKEN", "t")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {:?}\nstderr: {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// No control character but the newline reaches the terminal, on either stream.
fn clean(out: &Output) -> bool {
    [&out.stdout, &out.stderr].iter().all(|bytes| {
        String::from_utf8_lossy(bytes)
            .chars()
            .all(|c| c == '\n' || !c.is_control())
    })
}

const HOSTILE: &str = r"\u001b]0;pwned\u0007\u001b[2J\u009b31m\u202e";

fn status_json(paused: bool, max_size: u64) -> String {
    format!(
        r#"{{"max_size":{max_size},"size":1,"idle":1,"in_use":0,"dialing":0,"waiting":0,"max_waiters":4,"paused":{paused},"closed":false}}"#
    )
}

#[test]
fn a_change_counts_as_made_only_when_the_answer_confirms_it() {
    let not_made = [
        r#"{"ok":false,"change":null}"#.to_owned(),
        format!(
            r#"{{"ok":false,"name":"cache","target":"t","change":{{"action":"pause"}},"status":{}}}"#,
            status_json(true, 8)
        ),
        // Another change than the one asked for, another pool, or a status that does not show it.
        format!(
            r#"{{"ok":true,"name":"cache","target":"t","change":{{"action":"resume"}},"status":{}}}"#,
            status_json(true, 8)
        ),
        format!(
            r#"{{"ok":true,"name":"other","target":"t","change":{{"action":"pause"}},"status":{}}}"#,
            status_json(true, 8)
        ),
        format!(
            r#"{{"ok":true,"name":"cache","target":"t","change":{{"action":"pause"}},"status":{}}}"#,
            status_json(false, 8)
        ),
        "{}".to_owned(),
        "[]".to_owned(),
    ];
    for body in &not_made {
        let admin = start(answer("200 OK", "application/json", body));
        let out = multiloop(&["pause", "cache"], admin);
        assert_eq!(out.status.code(), Some(2), "{body}: {}", show(&out));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("done"),
            "{body}"
        );
        assert!(clean(&out), "{}", show(&out));
    }
    let made = format!(
        r#"{{"ok":true,"name":"cache","target":"t","change":{{"action":"pause"}},"status":{},"new_field":1}}"#,
        status_json(true, 8)
    );
    let admin = start(answer("200 OK", "application/json", &made));
    let out = multiloop(&["pause", "cache"], admin);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cache: pause done"));
    // A resize is confirmed by its value.
    let resized = |n: u64| {
        format!(
            r#"{{"ok":true,"name":"cache","target":"t","change":{{"action":"resize","body":{{"max_size":{n}}}}},"status":{}}}"#,
            status_json(false, n)
        )
    };
    let admin = start(answer("200 OK", "application/json", &resized(6)));
    assert_eq!(
        multiloop(&["resize", "cache", "5"], admin).status.code(),
        Some(2)
    );
    let admin = start(answer("200 OK", "application/json", &resized(5)));
    let out = multiloop(&["resize", "cache", "5"], admin);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn server_supplied_text_never_reaches_the_terminal_raw() {
    let list = format!(
        r#"{{"pools":[{{"name":"{HOSTILE}","target":"{HOSTILE}\n","status":{}}}]}}"#,
        status_json(false, 8)
    );
    let admin = start(answer("200 OK", "application/json", &list));
    for args in [vec!["pools"], vec!["pools", "--json"]] {
        let out = multiloop(&args, admin);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", show(&out));
        assert!(clean(&out), "{args:?}: {}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("pwned"), "shown, escaped: {stdout}");
    }
    let refusal = format!(r#"{{"error":"{HOSTILE} go away","field":"{HOSTILE}"}}"#);
    let admin = start(answer("400 Bad Request", "application/json", &refusal));
    let out = multiloop(&["pause", "cache"], admin);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(clean(&out), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("go away"));
    // Raw bytes in a non-JSON answer, too.
    let admin = start(answer("500 Oops", "text/plain", "\x1b]0;pwned\x07\x1b[2J"));
    let out = multiloop(&["pools"], admin);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(clean(&out), "{}", show(&out));
}

/// The exit status of every kind of answer, as README's table gives it.
#[test]
fn every_kind_of_answer_has_the_documented_exit_status() {
    let refused = r#"{"error":"wrong token","field":"authorization"}"#;
    let cases = [
        (answer("401 Unauthorized", "application/json", refused), 1),
        (answer("401 Unauthorized", "text/html", "<h1>no</h1>"), 1),
        (answer("404 Not Found", "text/plain", ""), 1),
        (answer("500 Internal Server Error", "text/plain", "boom"), 1),
        (
            answer("503 Service Unavailable", "application/json", refused),
            1,
        ),
        (answer("200 OK", "text/html", "<html>"), 2),
        (answer("302 Found", "text/plain", ""), 2),
        (Fake::Close, 2),
    ];
    for (fake, code) in cases {
        let shown = match &fake {
            Fake::Answer(bytes) => String::from_utf8_lossy(&bytes[..20]).into_owned(),
            _ => "closed unanswered".to_owned(),
        };
        let admin = start(fake);
        for args in [vec!["pools"], vec!["pause", "cache"]] {
            let out = multiloop(&args, admin);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{shown} {args:?}: {}",
                show(&out)
            );
            assert!(!out.stderr.is_empty(), "{shown}: says why");
            assert!(clean(&out));
        }
    }
    // Nothing listening, and a service that never answers.
    let closed = support::closed_port();
    let out = multiloop(&["pools"], closed.addr);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"));
    let out = multiloop(&["pools"], start(Fake::Hang));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer within 10 s"));
}

/// `multiloop … | head -c 1`: the command ends with the status it would have had (bash's
/// PIPESTATUS), never a panic's 101.
#[test]
fn a_closed_stdout_ends_the_command_quietly_with_its_own_status() {
    let list = format!(
        r#"{{"pools":[{{"name":"cache","target":"t","status":{}}}]}}"#,
        status_json(false, 8)
    );
    let admin = start(answer("200 OK", "application/json", &list));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let bin = env!("CARGO_BIN_EXE_multiloop");
    let admin = admin.to_string();
    let runs: [(Vec<&str>, i32); 4] = [
        (vec!["doctor", &target], 0),
        (vec!["doctor", &target, "--json"], 0),
        (vec!["pools", "--admin", &admin], 0),
        (
            vec!["watch", &target, "--for", "1s", "--interval", "100ms"],
            0,
        ),
    ];
    for (args, code) in &runs {
        for run in 0..10 {
            let line = format!(
                "{bin} {} | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
                args.join(" ")
            );
            let out = Command::new("bash").args(["-c", &line]).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(*code),
                "{args:?} run {run}: {}",
                show(&out)
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("panicked"),
                "{}",
                show(&out)
            );
        }
    }
}

/// `--for` is a deadline: a view interval longer than it does not hold the command past it.
#[test]
fn watch_for_is_a_deadline_whatever_the_interval() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    for interval in ["10s", "24h"] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_multiloop"))
            .args(["watch", &target, "--for", "1s", "--interval", interval])
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("multiloop watch")
                .count(),
            1,
            "one view, then the deadline"
        );
        // A bound, not a speed: without the deadline this waits for the interval, 10 s or more.
        assert!(
            took < Duration::from_secs(9),
            "--interval {interval}: {took:?}"
        );
    }
}
