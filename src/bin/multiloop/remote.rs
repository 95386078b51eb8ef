//! `pools`, `pause`, `resume`, `resize`, `limit`, `max-waiters`: calls to a service's
//! `multiloop::admin` endpoint.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How long connecting, and then the whole call, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read, in bytes.
const MAX_ANSWER: usize = 4 << 20;

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
    /// Print the service's JSON answer as it is.
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

pub(crate) async fn pools(args: &RemoteArgs, name: Option<&str>) -> ExitCode {
    let path = match name {
        Some(n) => format!("/pools/{}", encode(n)),
        None => "/pools".to_owned(),
    };
    let answer = match request(args, Method::GET, &path, None).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.json {
        println!("{answer:#}");
    } else if name.is_some() {
        print_detail(&answer);
    } else {
        println!(
            "{:<24} {:<24} {:>10} {:>6} {:>6} {:>7} {:>7}  STATE",
            "POOL", "TARGET", "SIZE/MAX", "IDLE", "IN_USE", "DIALING", "WAITING"
        );
        for pool in answer["pools"].as_array().into_iter().flatten() {
            println!("{}", pool_line(pool));
        }
    }
    ExitCode::SUCCESS
}

pub(crate) async fn call(args: &RemoteArgs, pool: &str, call: Call) -> ExitCode {
    let (action, body) = match call {
        Call::Pause => ("pause", None),
        Call::Resume => ("resume", None),
        Call::Resize(n) => ("resize", Some(json!({ "max_size": n }))),
        Call::MaxWaiters(n) => ("max-waiters", Some(json!({ "max_waiters": n }))),
        Call::Limit(n, None) => ("limit", Some(json!({ "limit": n }))),
        Call::Limit(n, Some(b)) => ("limit", Some(json!({ "limit": n, "bulkhead": b }))),
    };
    let path = format!("/pools/{}/{action}", encode(pool));
    match request(args, Method::POST, &path, body).await {
        Ok(answer) if args.json => {
            println!("{answer:#}");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            let change = answer["change"].as_str().unwrap_or(action);
            println!("{pool}: {change} done");
            println!("{}", pool_line(&answer));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Sends one request; on failure prints why and returns the exit status.
async fn request(
    args: &RemoteArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ExitCode> {
    let unreachable = |e: String| {
        eprintln!("multiloop: the admin endpoint {}: {e}", args.admin);
        ExitCode::from(2)
    };
    let answer = tokio::time::timeout(TIMEOUT, send(args, method, path, body))
        .await
        .map_err(|_| unreachable("no answer within 10 s".to_owned()))?
        .map_err(unreachable)?;
    let (status, value) = answer;
    if status.is_success() {
        return Ok(value);
    }
    let error = value["error"].as_str().unwrap_or("no message");
    let field = value["field"].as_str().unwrap_or("?");
    eprintln!("multiloop: refused ({status}), {field}: {error}");
    Err(ExitCode::from(1))
}

async fn send(
    args: &RemoteArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(http::StatusCode, Value), String> {
    let address = args
        .admin
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e} (is the service serving multiloop::admin there? --admin or MULTILOOP_ADMIN)"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let actor = args
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".to_owned());
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, address)
        .header("x-multiloop-actor", actor);
    if let Some(token) = &args.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        format!("the answer is not JSON ({e}); is this a multiloop admin endpoint?")
    })?;
    Ok((status, value))
}

fn pool_line(pool: &Value) -> String {
    let s = &pool["status"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let state = if s["closed"].as_bool() == Some(true) {
        "closed"
    } else if s["paused"].as_bool() == Some(true) {
        "PAUSED"
    } else {
        "serving"
    };
    format!(
        "{:<24} {:<24} {:>10} {:>6} {:>6} {:>7} {:>7}  {state}",
        pool["name"].as_str().unwrap_or("?"),
        pool["target"].as_str().unwrap_or("?"),
        format!("{}/{}", n("size"), n("max_size")),
        n("idle"),
        n("in_use"),
        n("dialing"),
        format!("{}/{}", n("waiting"), n("max_waiters")),
    )
}

fn print_detail(pool: &Value) {
    println!("{}", pool_line(pool));
    let s = &pool["stats"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "gets {}: waited {}, timed out {}, saturated {}, paused {}, closed {}, dial failed {}",
        n("gets"),
        n("waited"),
        n("timed_out"),
        n("saturated"),
        n("paused"),
        n("closed_gets"),
        n("create_failed")
    );
    println!(
        "connections: created {}, dial errors {}, abandoned {}, recovered {}",
        n("created"),
        n("create_errors"),
        n("abandoned"),
        n("recovered")
    );
    let w = &s["wait_seconds"];
    let ms = |k: &str| 1e3 * w[k].as_f64().unwrap_or(0.0);
    println!(
        "wait: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms("p50"),
        ms("p99"),
        ms("max")
    );
    for b in pool["bulkheads"].as_array().into_iter().flatten() {
        let n = |k: &str| b[k].as_u64().unwrap_or(0);
        println!(
            "bulkhead {}: limit {}, in flight {}, waiting {}, saturated {}, timed out {}",
            b["name"].as_str().unwrap_or("?"),
            n("limit"),
            n("in_flight"),
            n("waiting"),
            n("saturated"),
            n("timed_out")
        );
    }
}

/// Percent-encodes a pool name for a path segment.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
