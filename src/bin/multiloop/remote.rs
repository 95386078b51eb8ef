//! `pools`, `pause`, `resume`, `resize`, `limit`, `max-waiters`: calls to a service's
//! `multiloop::admin` endpoint, in the wire format of `multiloop::admin::wire`.
//!
//! Nothing the service sends is trusted: an answer is read as the type its route answers with
//! (a change counts as made only when the answer confirms it), and every text it supplies is
//! printed through [`printable`], so that it cannot reach the terminal as control sequences.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use multiloop::admin::Route;
use multiloop::admin::wire::{
    Change, Changed, Limit, MaxWaiters, PoolDetail, PoolList, PoolStatus, Refusal, Resize,
    printable,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::out::{complain, say};

/// How long a call may take, retries included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a call is sent when the service closes the connection before answering (a
/// busy endpoint sheds idle connections). Every change is idempotent: it sets a value.
const ATTEMPTS: u32 = 3;

/// The largest answer read, in bytes.
const MAX_ANSWER: usize = 4 << 20;

/// The most characters of a server-supplied text printed.
const MAX_TEXT: usize = 300;

#[derive(Args)]
pub(crate) struct RemoteArgs {
    /// The service's admin endpoint, host:port.
    #[arg(long, env = "MULTILOOP_ADMIN", default_value = "127.0.0.1:7878")]
    admin: String,
    /// The admin token the service set, for changes.
    #[arg(long, env = "MULTILOOP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Who you are, for the service's log of changes; defaults to $USER.
    #[arg(long = "as")]
    actor: Option<String>,
    /// Print the service's answer as JSON (its fields as this command reads them).
    #[arg(long)]
    json: bool,
}

pub(crate) enum Call {
    Pause,
    Resume,
    Resize(usize),
    MaxWaiters(usize),
    Limit(usize, Option<String>),
}

/// Why a call has no usable answer; each ends the command with its status.
enum Failure {
    /// Status 2: no usable answer.
    Unusable(String),
    /// Status 1: the service refused.
    Refused(String),
}

pub(crate) async fn pools(args: &RemoteArgs, name: Option<&str>) -> ExitCode {
    let route = if name.is_some() {
        Route::Show
    } else {
        Route::List
    };
    let shown = |text: &str| printable(text, MAX_TEXT);
    let result = match name {
        None => read::<PoolList>(args, route, None).await.map(|list| {
            if args.json {
                say!("{}", json(&list));
                return;
            }
            let mut out = format!(
                "{:<24} {:<24} {:>10} {:>6} {:>6} {:>7} {:>7}  STATE\n",
                "POOL", "TARGET", "SIZE/MAX", "IDLE", "IN_USE", "DIALING", "WAITING"
            );
            for pool in &list.pools {
                out.push_str(&pool_line(&pool.name, &pool.target, &pool.status));
                out.push('\n');
            }
            crate::out::stdout(&out);
        }),
        Some(name) => match read::<PoolDetail>(args, route, Some(name)).await {
            Ok(detail) if detail.name != name => Err(Failure::Unusable(format!(
                "the answer is about pool {:?}, not {:?}; is --admin a multiloop admin endpoint?",
                shown(&detail.name),
                shown(name)
            ))),
            Ok(detail) if args.json => {
                say!("{}", json(&detail));
                Ok(())
            }
            Ok(detail) => {
                crate::out::stdout(&detail_text(&detail));
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    finish(args, result)
}

pub(crate) async fn call(args: &RemoteArgs, pool: &str, call: Call) -> ExitCode {
    let (route, change) = match call {
        Call::Pause => (Route::Pause, Change::Pause),
        Call::Resume => (Route::Resume, Change::Resume),
        Call::Resize(max_size) => (Route::Resize, Change::Resize(Resize { max_size })),
        Call::MaxWaiters(max_waiters) => (
            Route::MaxWaiters,
            Change::MaxWaiters(MaxWaiters { max_waiters }),
        ),
        Call::Limit(limit, bulkhead) => (Route::Limit, Change::Limit(Limit { limit, bulkhead })),
    };
    let body = match &change {
        Change::Resize(b) => Some(body(b)),
        Change::MaxWaiters(b) => Some(body(b)),
        Change::Limit(b) => Some(body(b)),
        _ => None,
    };
    let result = match exchange::<Changed>(args, route, Some(pool), body).await {
        Ok(answer) if !confirms(&answer, pool, &change) => Err(Failure::Unusable(format!(
            "the service answered but does not confirm the change ({}); `multiloop pools {}` \
             shows the pool as it is",
            printable(
                &serde_json::to_string(&answer).unwrap_or_default(),
                MAX_TEXT
            ),
            printable(pool, MAX_TEXT)
        ))),
        Ok(answer) if args.json => {
            say!("{}", json(&answer));
            Ok(())
        }
        Ok(answer) => {
            say!(
                "{}: {} done\n{}",
                printable(pool, MAX_TEXT),
                printable(&answer.change.to_string(), MAX_TEXT),
                pool_line(&answer.name, &answer.target, &answer.status)
            );
            Ok(())
        }
        Err(e) => Err(e),
    };
    finish(args, result)
}

/// A change counts as made only when the answer says so for this pool and this change, and
/// its status shows it.
fn confirms(answer: &Changed, pool: &str, change: &Change) -> bool {
    answer.ok && answer.name == pool && answer.change == *change && change.shown_in(&answer.status)
}

fn finish(args: &RemoteArgs, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(why)) => {
            complain!("multiloop: {why}");
            ExitCode::from(1)
        }
        Err(Failure::Unusable(why)) => {
            complain!(
                "multiloop: the admin endpoint {}: {why}",
                printable(&args.admin, MAX_TEXT)
            );
            ExitCode::from(2)
        }
    }
}

fn body<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A read: `GET` on `route`, its answer as `T`.
async fn read<T: DeserializeOwned>(
    args: &RemoteArgs,
    route: Route,
    pool: Option<&str>,
) -> Result<T, Failure> {
    exchange(args, route, pool, None).await
}

/// Sends one call (again, while the service closes the connection unanswered and time is
/// left) and reads its answer as `T`.
async fn exchange<T: DeserializeOwned>(
    args: &RemoteArgs,
    route: Route,
    pool: Option<&str>,
    body: Option<Bytes>,
) -> Result<T, Failure> {
    let path = route.path(pool);
    let deadline = Instant::now() + TIMEOUT;
    let mut attempt = 1;
    let (status, bytes) = loop {
        let sent = send(args, route, &path, body.clone().unwrap_or_default());
        match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => {
                return Err(Failure::Unusable(
                    "no answer within 10 s (is --admin the service's admin endpoint?)".to_owned(),
                ));
            }
            Ok(Ok(answer)) => break answer,
            Ok(Err(Sent::Fatal(why))) => return Err(Failure::Unusable(why)),
            Ok(Err(Sent::Unanswered(why))) if attempt >= ATTEMPTS => {
                return Err(Failure::Unusable(format!(
                    "closed the connection without answering, {ATTEMPTS} times ({}); try again, \
                     or check that --admin is the service's admin endpoint",
                    printable(&why, MAX_TEXT)
                )));
            }
            Ok(Err(Sent::Unanswered(_))) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    };
    let text = || printable(&String::from_utf8_lossy(&bytes), MAX_TEXT);
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Unusable(format!(
                "answered {status} with something other than the admin endpoint's JSON ({}): {}; \
                 is --admin a multiloop admin endpoint?",
                printable(&e.to_string(), MAX_TEXT),
                text()
            ))
        });
    }
    if status.is_client_error() || status.is_server_error() {
        return Err(Failure::Refused(
            match serde_json::from_slice::<Refusal>(&bytes) {
                Ok(refusal) => format!(
                    "refused ({status}), {}: {}",
                    printable(&refusal.field, 64),
                    printable(&refusal.error, MAX_TEXT)
                ),
                Err(_) => format!(
                    "refused ({status}), without the admin endpoint's JSON: {}",
                    text()
                ),
            },
        ));
    }
    Err(Failure::Unusable(format!(
        "answered {status}, which no admin route answers; is --admin a multiloop admin endpoint?"
    )))
}

/// Why one attempt has no answer.
enum Sent {
    /// Not worth another attempt.
    Fatal(String),
    /// The connection closed before an answer: another attempt may be served.
    Unanswered(String),
}

async fn send(
    args: &RemoteArgs,
    route: Route,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), Sent> {
    let address = args
        .admin
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| {
        Sent::Fatal(format!(
            "cannot connect: {e} (is the service serving multiloop::admin there? --admin or \
             MULTILOOP_ADMIN)"
        ))
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Sent::Unanswered(e.to_string()))?;
    tokio::spawn(connection);
    // Who asks, for the service's log: printable ASCII only, as a header must be.
    let actor: String = args
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".to_owned())
        .chars()
        .filter(char::is_ascii_graphic)
        .take(64)
        .collect();
    let mut builder = Request::builder()
        .method(route.method())
        .uri(path)
        .header(header::HOST, address)
        .header("x-multiloop-actor", actor);
    if let Some(token) = &args.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|_| {
            Sent::Fatal(
                "the request cannot be sent: --admin is not host:port, or --token \
                 (MULTILOOP_ADMIN_TOKEN) holds characters a header cannot carry"
                    .to_owned(),
            )
        })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Sent::Unanswered(e.to_string()))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| {
            Sent::Fatal(format!(
                "reading the answer: {} (is --admin a multiloop admin endpoint?)",
                printable(&e.to_string(), MAX_TEXT)
            ))
        })?
        .to_bytes();
    Ok((status, bytes))
}

/// A typed answer as pretty JSON. serde_json escapes C0 controls in strings; DEL, the C1
/// controls and the bidirectional overrides are escaped here too.
fn json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n') || bidi {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn pool_line(name: &str, target: &str, s: &PoolStatus) -> String {
    let state = if s.closed {
        "closed"
    } else if s.paused {
        "PAUSED"
    } else {
        "serving"
    };
    format!(
        "{:<24} {:<24} {:>10} {:>6} {:>6} {:>7} {:>7}  {state}",
        printable(name, 64),
        printable(target, 64),
        format!("{}/{}", s.size, s.max_size),
        s.idle,
        s.in_use,
        s.dialing,
        format!("{}/{}", s.waiting, s.max_waiters),
    )
}

fn detail_text(pool: &PoolDetail) -> String {
    let s = &pool.stats;
    let w = &s.wait_seconds;
    let ms = |secs: f64| 1e3 * secs;
    let mut out = format!(
        "{}\n\
         gets {}: waited {}, timed out {}, saturated {}, paused {}, closed {}, dial failed {}\n\
         connections: created {}, dial errors {}, handed off {} (dials whose caller was served \
         first; pooled), recovered {}\n\
         wait: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
        pool_line(&pool.name, &pool.target, &pool.status),
        s.gets,
        s.waited,
        s.timed_out,
        s.saturated,
        s.paused,
        s.closed_gets,
        s.create_failed,
        s.created,
        s.create_errors,
        s.handed_off,
        s.recovered,
        ms(w.p50),
        ms(w.p99),
        ms(w.max),
    );
    for b in &pool.bulkheads {
        out.push_str(&format!(
            "bulkhead {}: limit {}, in flight {}, waiting {}, saturated {}, timed out {}\n",
            printable(&b.name, 64),
            b.limit,
            b.in_flight,
            b.waiting,
            b.saturated,
            b.timed_out
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_escapes_what_serde_json_leaves() {
        let list = PoolList {
            pools: vec![multiloop::admin::wire::PoolSummary {
                name: "a\u{1b}]0;x\u{7}\u{9b}2J\u{202e}\u{7f}".to_owned(),
                target: "t".to_owned(),
                status: PoolStatus::default(),
            }],
        };
        let text = json(&list);
        assert!(
            text.chars().all(|c| c == '\n' || !c.is_control()),
            "{text:?}"
        );
        let back: PoolList = serde_json::from_str(&text).unwrap();
        assert_eq!(back, list, "still JSON, and the same");
    }
}
