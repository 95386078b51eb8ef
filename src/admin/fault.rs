//! [`Fault`]: a refused request, naming the field at fault and the command that fixes it; and
//! the typed reading of request bodies.

use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::handler::MAX_BODY;
use super::route::PathError;
use super::wire::{Refusal, escaped};

/// A refused request: its status, the field or part at fault, and what to change.
#[derive(Debug)]
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

    pub(super) fn path(e: PathError) -> Self {
        let bad = |message| Fault::new(StatusCode::BAD_REQUEST, "path", message);
        match e {
            PathError::NoRoute => Fault::new(
                StatusCode::NOT_FOUND,
                "path",
                "no such route; `multiloop pools` (GET /pools) lists the pools",
            ),
            PathError::NoAction => Fault::new(
                StatusCode::NOT_FOUND,
                "path",
                "no such action; use pause, resume, resize, max-waiters or limit \
                 (`multiloop --help` lists them)",
            ),
            PathError::BadHex => bad("a % in the path is not followed by two hex digits"),
            PathError::NotUtf8 => bad("the path is not UTF-8 once percent-decoded"),
        }
    }

    pub(super) fn too_large() -> Self {
        Fault::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("bodies are at most {MAX_BODY} bytes"),
        )
    }

    pub(super) fn to_refusal(&self) -> Refusal {
        Refusal {
            error: self.message.clone(),
            field: self.field.to_owned(),
        }
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

/// What JSON a request field takes, for naming the field at fault.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// A whole number that fits a `usize`.
    Count,
    /// A string, or absent.
    Text,
}

/// Parses a request body as `T`, whose fields are `fields`. An empty body is an empty object.
/// Every refusal names the field at fault.
pub(super) fn body<T: DeserializeOwned>(
    body: &[u8],
    fields: &[(&'static str, Kind)],
) -> Result<T, Fault> {
    let bad = |field, message: String| Fault::new(StatusCode::BAD_REQUEST, field, message);
    let map = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(bad("body", "expected a JSON object".to_owned())),
            Err(e) => {
                return Err(bad(
                    "body",
                    format!("not JSON: {e} (send an object such as {{\"max_size\": 32}})"),
                ));
            }
        }
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !fields.iter().any(|(name, _)| name == k))
    {
        let expected = if fields.is_empty() {
            "this action takes no fields".to_owned()
        } else {
            let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            format!("this action takes {}", names.join(", "))
        };
        return Err(bad(
            "body",
            format!("unknown field {}: {expected}", escaped(unknown)),
        ));
    }
    for &(name, kind) in fields {
        match (kind, map.get(name)) {
            (Kind::Count, None) => return Err(bad(name, format!("{name} is required"))),
            (Kind::Count, Some(Value::Number(n))) => {
                if n.as_u64().and_then(|n| usize::try_from(n).ok()).is_none() {
                    return Err(bad(
                        name,
                        format!("{name} must be a whole number of at least 0"),
                    ));
                }
            }
            (Kind::Count, Some(_)) => return Err(bad(name, format!("{name} must be a number"))),
            (Kind::Text, None | Some(Value::Null | Value::String(_))) => {}
            (Kind::Text, Some(_)) => return Err(bad(name, format!("{name} must be a string"))),
        }
    }
    // The checks above name the field; the typed parse is the one that decides.
    serde_json::from_value(Value::Object(map)).map_err(|e| {
        let message = super::wire::printable(&e.to_string(), 200);
        bad("body", message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::handler::{LIMIT, MAX_WAITERS, RESIZE};
    use crate::admin::wire::{Limit, MaxWaiters, Resize};

    /// The field lists the handler checks against are the wire types' fields: a renamed field
    /// fails here, not at a responder.
    #[test]
    fn the_field_lists_are_the_wire_types_fields() {
        fn keys<T: serde::Serialize>(value: &T) -> Vec<String> {
            match serde_json::to_value(value).unwrap() {
                Value::Object(map) => map.keys().cloned().collect(),
                _ => unreachable!(),
            }
        }
        let names = |fields: &[(&str, Kind)]| -> Vec<String> {
            let mut names: Vec<String> = fields.iter().map(|(n, _)| (*n).to_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(keys(&Resize { max_size: 1 }), names(RESIZE));
        assert_eq!(keys(&MaxWaiters { max_waiters: 1 }), names(MAX_WAITERS));
        let limit = Limit {
            limit: 1,
            bulkhead: Some("b".into()),
        };
        assert_eq!(keys(&limit), names(LIMIT));
        let parsed: Limit = body(br#"{"limit": 3, "bulkhead": null}"#, LIMIT).unwrap();
        assert_eq!(parsed.limit, 3);
        let err = body::<Resize>(br#"{"max_size": "8"}"#, RESIZE).unwrap_err();
        assert_eq!(err.field, "max_size");
    }
}
