//! Switches without a deploy: an HTTP handler over a service's named pools (feature `admin`).
//!
//! A service registers its pools in a [`Registry`] and mounts one [`Admin`] handler, a
//! `tower_service::Service` over `http` requests, so it fits hyper, axum and tonic servers
//! alike; or it calls [`serve`] to run it on a loopback listener of its own. Responders then
//! read and switch the pools from `multiloop pools|pause|resume|resize|limit` (feature `cli`) or
//! from `curl`:
//!
//! | Request | Body | Effect |
//! |---|---|---|
//! | `GET /pools` | | every pool's name, target and status |
//! | `GET /pools/NAME` | | one pool: status, stats and bulkheads |
//! | `POST /pools/NAME/pause` | | [`Pool::pause`]: every get fails at once (load shedding) |
//! | `POST /pools/NAME/resume` | | [`Pool::resume`] |
//! | `POST /pools/NAME/resize` | `{"max_size": 32}` | [`Pool::resize`] |
//! | `POST /pools/NAME/max-waiters` | `{"max_waiters": 64}` | [`Pool::set_max_waiters`] |
//! | `POST /pools/NAME/limit` | `{"limit": 8}` or `{"bulkhead": "batch", "limit": 8}` | [`Pool::set_default_limit`] or [`Bulkhead::set_limit`](crate::Bulkhead::set_limit) |
//!
//! In code the routes are one list, [`Route`], and the bodies of requests and answers are the
//! serde types of [`wire`], shared by this handler and the `multiloop` command.
//!
//! `NAME` is the pool's [name](Pool::name), percent-encoded where it has to be. Answers are
//! JSON; an error is `{"error": "...", "field": "..."}` ([`wire::Refusal`]) with a 4xx status
//! naming the field or part of the request at fault, and the `multiloop` command or flag that
//! fixes it.
//!
//! **Safe by default.** Reads are open to whoever reaches the handler; every mutating call
//! needs `Authorization: Bearer TOKEN` (the scheme in any case) with the token the service set
//! ([`Admin::token`], compared in constant time), and without one set mutating calls are
//! refused. Each change is
//! logged once (a `tracing` warning, target `multiloop::admin`) with who asked: the peer
//! address where the server records it ([`Peer`]) and the `X-Multiloop-Actor` header the CLI
//! sends, names escaped so that a hostile name cannot split or forge a log line. Bodies are
//! capped at 4 KiB and read within 5 s; nothing in the handler panics, and a panic there would
//! still become a 500, not a dead server task. [`serve`] keeps room for responders whatever
//! idle, slow or polling clients do (see there).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use multiloop::admin::{self, Admin, Registry};
//!
//! let pool = multiloop::Pool::builder("127.0.0.1:11211").name("cache").build()?;
//! let registry = Registry::new();
//! registry.register(&pool)?;
//! let admin = Admin::new(registry).token(std::env::var("MULTILOOP_ADMIN_TOKEN")?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! tokio::spawn(admin::serve(listener, admin));
//! # Ok(())
//! # }
//! ```

mod fault;
mod handler;
mod route;
mod serve;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use handler::{Admin, MAX_BODY};
pub use route::Route;
pub use serve::{MAX_CONNECTIONS, MAX_REQUESTS_PER_CONNECTION, Peer, serve};

use crate::connector::Connector;
use crate::error::ConfigError;
use crate::pool::{BulkheadStats, Pool, Status};
use crate::telemetry::PoolStats;

/// The most pools a registry holds.
pub const MAX_POOLS: usize = 1024;

/// What the handler needs of a pool, whatever its connector.
trait Switchboard: Send + Sync {
    fn target(&self) -> String;
    fn status(&self) -> Status;
    fn stats(&self) -> PoolStats;
    fn bulkheads(&self) -> Vec<BulkheadStats>;
    fn pause(&self);
    fn resume(&self);
    fn resize(&self, n: usize) -> Result<(), ConfigError>;
    fn set_max_waiters(&self, n: usize) -> Result<(), ConfigError>;
    fn set_default_limit(&self, n: usize) -> Result<(), ConfigError>;
    /// `Ok(false)` when no bulkhead has that name.
    fn set_bulkhead_limit(&self, name: &str, n: usize) -> Result<bool, ConfigError>;
}

impl<C: Connector> Switchboard for Pool<C> {
    fn target(&self) -> String {
        Pool::target(self).to_string()
    }
    fn status(&self) -> Status {
        Pool::status(self)
    }
    fn stats(&self) -> PoolStats {
        Pool::stats(self)
    }
    fn bulkheads(&self) -> Vec<BulkheadStats> {
        self.bulkhead_stats()
    }
    fn pause(&self) {
        Pool::pause(self)
    }
    fn resume(&self) {
        Pool::resume(self)
    }
    fn resize(&self, n: usize) -> Result<(), ConfigError> {
        Pool::resize(self, n)
    }
    fn set_max_waiters(&self, n: usize) -> Result<(), ConfigError> {
        Pool::set_max_waiters(self, n)
    }
    fn set_default_limit(&self, n: usize) -> Result<(), ConfigError> {
        Pool::set_default_limit(self, n)
    }
    fn set_bulkhead_limit(&self, name: &str, n: usize) -> Result<bool, ConfigError> {
        // Only bulkheads the service made: the handler must not create one per request.
        if !self.bulkhead_stats().iter().any(|b| b.name == name) {
            return Ok(false);
        }
        self.bulkhead(name).set_limit(n).map(|()| true)
    }
}

/// A service's pools by name, for the [`Admin`] handler. Cheap to clone; clones share the
/// pools. It holds a handle to each pool, so a registered pool lives until it is
/// [unregistered](Registry::unregister) or the registry is dropped.
#[derive(Clone, Default)]
pub struct Registry {
    pools: Arc<RwLock<BTreeMap<String, Arc<dyn Switchboard>>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a pool under its [name](Pool::name).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `name` when a pool of that name is registered already, when
    /// the name is empty or longer than 512 bytes (the admin endpoint could not address it), or
    /// when the registry holds [`MAX_POOLS`] pools.
    pub fn register<C: Connector>(&self, pool: &Pool<C>) -> Result<(), ConfigError> {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        let name = pool.name();
        if name.is_empty() || name.len() > route::MAX_NAME {
            return Err(ConfigError::new(
                "name",
                format!(
                    "the admin endpoint serves pools named with 1 to {} bytes; give the pool a \
                     shorter name (PoolBuilder::name)",
                    route::MAX_NAME
                ),
            ));
        }
        if pools.contains_key(name) {
            return Err(ConfigError::new(
                "name",
                format!(
                    "a pool named {name:?} is registered already; give each pool its own name (PoolBuilder::name)"
                ),
            ));
        }
        if pools.len() >= MAX_POOLS {
            return Err(ConfigError::new(
                "name",
                format!("the registry holds {MAX_POOLS} pools already"),
            ));
        }
        pools.insert(name.to_owned(), Arc::new(pool.clone()));
        Ok(())
    }

    /// Removes a pool; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        pools.remove(name).is_some()
    }

    /// The registered pools' names, in order.
    pub fn names(&self) -> Vec<String> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<Arc<dyn Switchboard>> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.get(name).cloned()
    }

    fn all(&self) -> Vec<(String, Arc<dyn Switchboard>)> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("pools", &self.names())
            .finish()
    }
}
