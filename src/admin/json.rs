//! The handler's JSON: pools rendered, request paths and bodies parsed, errors naming fields.

use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::Switchboard;
use super::handler::MAX_BODY;
use crate::ConfigError;
use crate::pool::{BulkheadStats, Status};
use crate::telemetry::PoolStats;

/// A refused request: its status, the field or part at fault, and what to change.
pub(super) struct Fault {
    pub(super) status: StatusCode,
    field: &'static str,
    message: String,
}

impl Fault {
    pub(super) fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Self {
        Fault {
            status,
            field,
            message: message.into(),
        }
    }

    pub(super) fn config(e: &ConfigError) -> Self {
        Fault::new(StatusCode::BAD_REQUEST, e.option(), e.message())
    }

    pub(super) fn too_large() -> Self {
        Fault::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("bodies are at most {MAX_BODY} bytes"),
        )
    }

    pub(super) fn to_json(&self) -> Value {
        json!({"error": self.message, "field": self.field})
    }
}

/// A name for messages and logs: quoted, escaped, and cut to 64 characters, so that a hostile
/// input is never echoed whole.
pub(super) fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Who asked, from the `X-Multiloop-Actor` header: printable ASCII, at most 64 characters.
pub(super) fn actor(header: Option<&HeaderValue>) -> String {
    let Some(value) = header else {
        return "unknown".to_owned();
    };
    let actor: String = value
        .as_bytes()
        .iter()
        .take(64)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '_' })
        .collect();
    if actor.is_empty() {
        "unknown".to_owned()
    } else {
        actor
    }
}

/// The path's segments, percent-decoded. At most 3 segments of at most 256 bytes each.
pub(super) fn path_segments(path: &str) -> Result<Vec<String>, Fault> {
    let bad = |message: &str| Fault::new(StatusCode::BAD_REQUEST, "path", message);
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        if segments.len() == 3 || raw.len() > 256 {
            return Err(Fault::new(
                StatusCode::NOT_FOUND,
                "path",
                "no such route; try GET /pools",
            ));
        }
        let mut bytes = Vec::with_capacity(raw.len());
        let mut rest = raw.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = tail
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("a % in the path is not followed by two hex digits"))?;
                bytes.push(hex);
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        segments.push(String::from_utf8(bytes).map_err(|_| bad("the path is not UTF-8"))?);
    }
    Ok(segments)
}

/// A request body's fields, checked against the names an action takes.
pub(super) struct Fields(Map<String, Value>);

/// Parses `body` as a JSON object whose keys are all in `allowed`. An empty body is an empty
/// object.
pub(super) fn fields(body: &[u8], allowed: &[&str]) -> Result<Fields, Fault> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields(Map::new()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Fault::new(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not JSON: {e} (send an object such as {{\"max_size\": 32}})"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(Fault::new(
            StatusCode::BAD_REQUEST,
            "body",
            "expected a JSON object",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected = if allowed.is_empty() {
            "this action takes no fields".to_owned()
        } else {
            format!("this action takes {}", allowed.join(", "))
        };
        return Err(Fault::new(
            StatusCode::BAD_REQUEST,
            "body",
            format!("unknown field {}: {expected}", quoted(unknown)),
        ));
    }
    Ok(Fields(map))
}

impl Fields {
    /// A required whole number that fits a `usize`; the pool checks its bounds.
    pub(super) fn count(&self, name: &'static str) -> Result<usize, Fault> {
        let bad = |message: String| Fault::new(StatusCode::BAD_REQUEST, name, message);
        match self.0.get(name) {
            None => Err(bad(format!("{name} is required"))),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(format!("{name} must be a whole number of at least 0"))),
            Some(_) => Err(bad(format!("{name} must be a number"))),
        }
    }

    /// An optional string.
    pub(super) fn text(&self, name: &'static str) -> Result<Option<String>, Fault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Fault::new(
                StatusCode::BAD_REQUEST,
                name,
                format!("{name} must be a string"),
            )),
        }
    }
}

pub(super) fn status(s: &Status) -> Value {
    json!({
        "max_size": s.max_size,
        "size": s.size,
        "idle": s.idle,
        "in_use": s.in_use,
        "dialing": s.dialing,
        "waiting": s.waiting,
        "max_waiters": s.max_waiters,
        "paused": s.paused,
        "closed": s.closed,
    })
}

fn stats(s: &PoolStats) -> Value {
    let c = &s.closed;
    json!({
        "gets": s.gets,
        "waited": s.waited,
        "timed_out": s.timed_out,
        "saturated": s.saturated,
        "paused": s.paused,
        "closed_gets": s.closed_gets,
        "create_failed": s.create_failed,
        "created": s.created,
        "create_errors": s.create_errors,
        "abandoned": s.abandoned,
        "recovered": s.recovered,
        "closed": {
            "broken": c.broken,
            "in_flight": c.in_flight,
            "lifetime": c.lifetime,
            "idle": c.idle,
            "other": c.other,
        },
        "wait_seconds": {
            "p50": s.wait.p50.as_secs_f64(),
            "p90": s.wait.p90.as_secs_f64(),
            "p99": s.wait.p99.as_secs_f64(),
            "max": s.wait.max.as_secs_f64(),
        },
    })
}

fn bulkhead(b: &BulkheadStats) -> Value {
    json!({
        "name": b.name,
        "limit": b.limit,
        "in_flight": b.in_flight,
        "peak_in_flight": b.peak_in_flight,
        "waiting": b.waiting,
        "acquired": b.acquired,
        "saturated": b.saturated,
        "timed_out": b.timed_out,
        "failed_in_pool": b.failed_in_pool,
    })
}

pub(super) fn pool_summary(name: &str, pool: &dyn Switchboard) -> Value {
    json!({"name": name, "target": pool.target(), "status": status(&pool.status())})
}

pub(super) fn pool_detail(name: &str, pool: &dyn Switchboard) -> Value {
    let bulkheads: Vec<Value> = pool.bulkheads().iter().map(bulkhead).collect();
    json!({
        "name": name,
        "target": pool.target(),
        "status": status(&pool.status()),
        "stats": stats(&pool.stats()),
        "bulkheads": bulkheads,
    })
}
