//! [`Admin`]: the handler, a `tower_service::Service` over `http` requests.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use super::json::{self, Fault};
use super::serve::Peer;
use super::{Registry, Switchboard};

/// The largest request body the handler reads, in bytes; a larger one gets 413.
pub const MAX_BODY: usize = 4096;

/// How long the handler waits for a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The header the CLI sends to say who asks, logged with each change.
const ACTOR: &str = "x-multiloop-actor";

/// The admin handler over a [`Registry`]: see the [module docs](crate::admin) for its routes.
///
/// Cheap to clone. As a `tower_service::Service<http::Request<B>>` for any body type, it
/// answers every request (never an `Err`): a server mounts it as it is.
#[derive(Clone)]
pub struct Admin {
    registry: Registry,
    token: Option<Arc<[u8]>>,
}

impl Admin {
    /// A handler over `registry` that answers reads and refuses every mutating call until a
    /// [token](Admin::token) is set.
    pub fn new(registry: Registry) -> Admin {
        Admin {
            registry,
            token: None,
        }
    }

    /// The token mutating calls must carry as `Authorization: Bearer TOKEN`. An empty token
    /// leaves mutating calls refused.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Admin {
        let token = token.as_ref();
        self.token = (!token.is_empty()).then(|| token.into());
        self
    }

    /// The registry the handler serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match AssertUnwindSafe(self.route(request)).catch_unwind().await {
            Ok(Ok(value)) => reply(StatusCode::OK, &value),
            Ok(Err(fault)) => reply(fault.status, &fault.to_json()),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "the admin handler failed; the service is unaffected"}),
            ),
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Result<Value, Fault>
    where
        B: Body + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let segments = json::path_segments(parts.uri.path())?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (pool_name, action) = match segments.as_slice() {
            ["pools"] => return self.list(&parts.method),
            ["pools", name] => (*name, None),
            ["pools", name, action] => (*name, Some(*action)),
            _ => {
                return Err(Fault::new(
                    StatusCode::NOT_FOUND,
                    "path",
                    "no such route; try GET /pools",
                ));
            }
        };
        let pool = self.registry.get(pool_name).ok_or_else(|| {
            Fault::new(
                StatusCode::NOT_FOUND,
                "pool",
                format!(
                    "no pool named {}; GET /pools lists them",
                    json::quoted(pool_name)
                ),
            )
        })?;
        let Some(action) = action else {
            expect_method(&parts.method, Method::GET)?;
            return Ok(json::pool_detail(pool_name, &*pool));
        };
        expect_method(&parts.method, Method::POST)?;
        self.authorize(&parts.headers)?;
        let body = read_body(body).await?;
        let change = apply(&*pool, action, &body)?;
        tracing::warn!(
            target: "multiloop::admin",
            pool = pool_name,
            change = %change,
            actor = %json::actor(parts.headers.get(ACTOR)),
            peer = %parts.extensions.get::<Peer>().map_or_else(|| "unknown".to_owned(), |p| p.0.to_string()),
            "multiloop admin: {change} on pool {pool_name}"
        );
        Ok(json!({
            "ok": true,
            "name": pool_name,
            "target": pool.target(),
            "change": change,
            "status": json::status(&pool.status()),
        }))
    }

    fn list(&self, method: &Method) -> Result<Value, Fault> {
        expect_method(method, Method::GET)?;
        let pools: Vec<Value> = self
            .registry
            .all()
            .iter()
            .map(|(name, pool)| json::pool_summary(name, &**pool))
            .collect();
        Ok(json!({ "pools": pools }))
    }

    fn authorize(&self, headers: &http::HeaderMap) -> Result<(), Fault> {
        let Some(expected) = &self.token else {
            return Err(Fault::new(
                StatusCode::FORBIDDEN,
                "authorization",
                "mutating calls are off: the service set no admin token (Admin::token)",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match given {
            Some(given) if constant_time_eq(given, expected) => Ok(()),
            Some(_) => Err(Fault::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "wrong token",
            )),
            None => Err(Fault::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "mutating calls need `Authorization: Bearer TOKEN` (the CLI's --token or MULTILOOP_ADMIN_TOKEN)",
            )),
        }
    }
}

/// Carries out one mutating call; returns what changed, for the log and the answer.
fn apply(pool: &dyn Switchboard, action: &str, body: &[u8]) -> Result<String, Fault> {
    let config = |e: crate::ConfigError| Fault::config(&e);
    match action {
        "pause" => {
            json::fields(body, &[])?;
            pool.pause();
            Ok("pause".to_owned())
        }
        "resume" => {
            json::fields(body, &[])?;
            pool.resume();
            Ok("resume".to_owned())
        }
        "resize" => {
            let n = json::fields(body, &["max_size"])?.count("max_size")?;
            pool.resize(n).map_err(config)?;
            Ok(format!("max_size={n}"))
        }
        "max-waiters" => {
            let n = json::fields(body, &["max_waiters"])?.count("max_waiters")?;
            pool.set_max_waiters(n).map_err(config)?;
            Ok(format!("max_waiters={n}"))
        }
        "limit" => {
            let fields = json::fields(body, &["limit", "bulkhead"])?;
            let n = fields.count("limit")?;
            match fields.text("bulkhead")? {
                None => {
                    pool.set_default_limit(n).map_err(config)?;
                    Ok(format!("default_limit={n}"))
                }
                Some(name) => {
                    if !pool.set_bulkhead_limit(&name, n).map_err(config)? {
                        return Err(Fault::new(
                            StatusCode::NOT_FOUND,
                            "bulkhead",
                            format!(
                                "no bulkhead named {}; GET /pools/NAME lists them",
                                json::quoted(&name)
                            ),
                        ));
                    }
                    Ok(format!("bulkhead {}: limit={n}", json::quoted(&name)))
                }
            }
        }
        _ => Err(Fault::new(
            StatusCode::NOT_FOUND,
            "path",
            "no such action; use pause, resume, resize, max-waiters or limit",
        )),
    }
}

fn expect_method(method: &Method, expected: Method) -> Result<(), Fault> {
    if *method == expected {
        Ok(())
    } else {
        Err(Fault::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!("use {expected} here"),
        ))
    }
}

async fn read_body<B>(body: B) -> Result<Bytes, Fault>
where
    B: Body + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(Fault::too_large());
    }
    let collect = Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Fault::too_large()),
        Ok(Err(_)) => Err(Fault::new(
            StatusCode::BAD_REQUEST,
            "body",
            "the body could not be read",
        )),
        Err(_) => Err(Fault::new(
            StatusCode::REQUEST_TIMEOUT,
            "body",
            "the body did not arrive within 5 s",
        )),
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (only whether its length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn reply(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

impl<B> tower_service::Service<Request<B>> for Admin
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    /// Always ready.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Answers the request; never fails.
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let admin = self.clone();
        Box::pin(async move { Ok(admin.handle(request).await) })
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("registry", &self.registry)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a `tower_service::Service`, with a body type of the caller's (not hyper's), the way a
    /// router mounts it.
    #[tokio::test]
    async fn the_handler_is_a_tower_service_over_any_body() {
        use tower_service::Service;
        let mut admin = Admin::new(Registry::new()).token("t");
        let get = Request::get("/pools")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = admin.call(get).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"pools\":[]}\n");
        let post = Request::post("/pools/x/pause")
            .header(header::AUTHORIZATION, "Bearer t")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = admin.call(post).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn constant_time_eq_matches_only_equal_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"s", b""));
    }
}
