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
use serde::Serialize;

use super::fault::{self, Fault, Kind};
use super::route::Route;
use super::serve::Peer;
use super::wire::{
    self, Change, Changed, Limit, MaxWaiters, NoFields, PoolDetail, PoolList, PoolSummary, Resize,
    escaped,
};
use super::{Registry, Switchboard};

/// The largest request body the handler reads, in bytes; a larger one gets 413.
pub const MAX_BODY: usize = 4096;

/// How long the handler waits for a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The header the CLI sends to say who asks, logged with each change.
const ACTOR: &str = "x-multiloop-actor";

/// The fields of each change's body, to name the one at fault (checked against the wire types
/// in a test).
pub(super) const RESIZE: &[(&str, Kind)] = &[("max_size", Kind::Count)];
pub(super) const MAX_WAITERS: &[(&str, Kind)] = &[("max_waiters", Kind::Count)];
pub(super) const LIMIT: &[(&str, Kind)] = &[("bulkhead", Kind::Text), ("limit", Kind::Count)];

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

    /// The token mutating calls must carry as `Authorization: Bearer TOKEN` (the scheme in any
    /// case). An empty token leaves mutating calls refused.
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
            Ok(Ok(body)) => reply(StatusCode::OK, body),
            Ok(Err(fault)) => reply(fault.status, json(&fault.to_refusal())),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json(&wire::Refusal {
                    error: "the admin handler failed on this request; the service is \
                            unaffected (`multiloop pools` reads its state)"
                        .to_owned(),
                    field: "handler".to_owned(),
                }),
            ),
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Result<Vec<u8>, Fault>
    where
        B: Body + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let (route, name) = Route::parse(parts.uri.path()).map_err(Fault::path)?;
        expect_method(&parts.method, route.method())?;
        if route == Route::List {
            let pools = self
                .registry
                .all()
                .iter()
                .map(|(name, pool)| PoolSummary {
                    name: name.clone(),
                    target: pool.target(),
                    status: (&pool.status()).into(),
                })
                .collect();
            return Ok(json(&PoolList { pools }));
        }
        let pool = self.registry.get(&name).ok_or_else(|| {
            Fault::new(
                StatusCode::NOT_FOUND,
                "pool",
                format!(
                    "no pool named {}; `multiloop pools` (GET /pools) lists them",
                    escaped(&name)
                ),
            )
        })?;
        if route == Route::Show {
            return Ok(json(&PoolDetail {
                name,
                target: pool.target(),
                status: (&pool.status()).into(),
                stats: (&pool.stats()).into(),
                bulkheads: pool.bulkheads().iter().map(Into::into).collect(),
            }));
        }
        self.authorize(&parts.headers)?;
        let body = read_body(body).await?;
        let change = match route {
            Route::Pause => fault::body::<NoFields>(&body, &[]).map(|_| Change::Pause),
            Route::Resume => fault::body::<NoFields>(&body, &[]).map(|_| Change::Resume),
            Route::Resize => fault::body::<Resize>(&body, RESIZE).map(Change::Resize),
            Route::MaxWaiters => {
                fault::body::<MaxWaiters>(&body, MAX_WAITERS).map(Change::MaxWaiters)
            }
            _ => fault::body::<Limit>(&body, LIMIT).map(Change::Limit),
        }?;
        apply(&*pool, &name, &change)?;
        let shown = escaped(&name);
        tracing::warn!(
            target: "multiloop::admin",
            pool = %shown,
            change = %change,
            actor = %fault::actor(parts.headers.get(ACTOR)),
            peer = %parts.extensions.get::<Peer>().map_or_else(|| "unknown".to_owned(), |p| p.0.to_string()),
            "multiloop admin: {change} on pool {shown}"
        );
        Ok(json(&Changed {
            ok: true,
            target: pool.target(),
            status: (&pool.status()).into(),
            name,
            change,
        }))
    }

    /// Whether `headers` carry the token: `Authorization: Bearer TOKEN`, the scheme in any
    /// case (RFC 9110), compared in constant time.
    pub(super) fn authorized(&self, headers: &http::HeaderMap) -> Result<bool, ()> {
        let Some(expected) = &self.token else {
            return Err(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(6)?;
                let token = rest.strip_prefix(b" ")?;
                scheme
                    .eq_ignore_ascii_case(b"bearer")
                    .then(|| token.trim_ascii_start())
            });
        Ok(given.is_some_and(|given| constant_time_eq(given, expected)))
    }

    fn authorize(&self, headers: &http::HeaderMap) -> Result<(), Fault> {
        match self.authorized(headers) {
            Ok(true) => Ok(()),
            Err(()) => Err(Fault::new(
                StatusCode::FORBIDDEN,
                "authorization",
                "changes are off: the service set no admin token (its owners set one with \
                 Admin::token); `multiloop pools` still reads",
            )),
            Ok(false) if headers.contains_key(header::AUTHORIZATION) => Err(Fault::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "wrong token: check --token or MULTILOOP_ADMIN_TOKEN against the token the \
                 service set",
            )),
            Ok(false) => Err(Fault::new(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "changes need the service's admin token: pass --token or set \
                 MULTILOOP_ADMIN_TOKEN (over HTTP, `Authorization: Bearer TOKEN`)",
            )),
        }
    }
}

/// Carries out one change, or says in the CLI's words why not.
fn apply(pool: &dyn Switchboard, name: &str, change: &Change) -> Result<(), Fault> {
    let name = escaped(name);
    let refused = |e: crate::ConfigError, n: usize, command: &str, min, max, zero: &str| {
        let message = if n < min && !zero.is_empty() {
            format!("{n} is too small: {zero}")
        } else if n < min || n > max {
            format!("{n} is out of bounds: `multiloop {command} {name} N` takes {min} to {max}")
        } else {
            // Another option's bound (min_idle above the new max_size): its own words.
            format!("{}; see `multiloop pools {name}`", e.message())
        };
        Fault::new(StatusCode::BAD_REQUEST, e.option(), message)
    };
    let pause_instead = format!(
        "to stop the pool's traffic use `multiloop pause {name}` (and `multiloop resume {name}` after)"
    );
    match change {
        Change::Pause => pool.pause(),
        Change::Resume => pool.resume(),
        Change::Resize(Resize { max_size: n }) => pool.resize(*n).map_err(|e| {
            let zero = format!("a pool needs at least 1 connection; {pause_instead}");
            refused(e, *n, "resize", 1, crate::PoolConfig::MAX_SIZE, &zero)
        })?,
        Change::MaxWaiters(MaxWaiters { max_waiters: n }) => pool
            .set_max_waiters(*n)
            .map_err(|e| refused(e, *n, "max-waiters", 0, crate::PoolConfig::MAX_WAITERS, ""))?,
        Change::Limit(Limit { limit: n, bulkhead }) => {
            let zero = format!("a limit of 0 would block the call site; {pause_instead}");
            let refused = |e| refused(e, *n, "limit", 1, crate::Bulkhead::MAX_LIMIT, &zero);
            match bulkhead {
                None => pool.set_default_limit(*n).map_err(refused)?,
                Some(b) => {
                    if !pool.set_bulkhead_limit(b, *n).map_err(refused)? {
                        return Err(Fault::new(
                            StatusCode::NOT_FOUND,
                            "bulkhead",
                            format!(
                                "no bulkhead named {}; `multiloop pools {name}` lists the pool's bulkheads",
                                escaped(b)
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
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

/// A wire type as JSON, with a newline. The wire types hold no maps, so this cannot fail; if
/// it did, the answer would be empty, not a panic.
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    body
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
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

    /// A hostile pool name cannot split or forge the change's log line, nor reach a terminal
    /// that shows the log; and the scheme of `Authorization` is matched in any case.
    #[tokio::test(flavor = "current_thread")]
    async fn the_change_log_line_escapes_the_pool_name() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let name = "evil\nWARN forged line\x1b]0;pwned\x07";
        let pool = crate::Pool::builder("127.0.0.1:1")
            .name(name)
            .build()
            .unwrap();
        let registry = Registry::new();
        registry.register(&pool).unwrap();
        let admin = Admin::new(registry).token("t");
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let post = Request::post(Route::Pause.path(Some(name)))
                .header(header::AUTHORIZATION, format!("{scheme} t"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = admin.handle(post).await;
            assert_eq!(response.status(), StatusCode::OK, "{scheme}");
        }
        assert!(pool.status().paused);
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 3, "one line per change: {log}");
        assert!(!log.contains('\x1b') && !log.contains('\x07'), "{log:?}");
        assert!(log.contains("evil\\u{a}WARN forged line"), "{log}");
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
