//! The pool layer, on `deadpool::managed`: a cap on sockets, one admission path, creation that
//! outlives its caller, lifetimes, checks, switches and the reaper.
//!
//! Files, from the top down (imports go down the list, or into telemetry):
//!
//! - `fanout`: [`Pool::fan_out`] and [`Bulkhead`], the limits on every call site;
//! - `handle`: [`Pool`], its snapshots and switches; `builder` and `config`: options;
//! - `admission`: the one path every `get` takes, with one deadline;
//! - `reaper` and `warm`: the pool's background work;
//! - `conn`: [`Conn`], which knows whether a request is in flight when it comes back;
//! - `inner`: what the handles share, and the pool's report kinds;
//! - `manager`: deadpool's `create` and `recycle`, and the idle decisions admission takes on
//!   the time deadpool reads at checkout;
//! - `supply`: the socket cap, the dial tasks and the stash of connections whose caller left;
//! - `health`, `slot`, `limit`, `gate`, `leak`: the small pieces below.

mod admission;
mod builder;
mod config;
mod conn;
mod fanout;
mod gate;
mod handle;
mod health;
mod inner;
mod leak;
mod limit;
mod manager;
mod reaper;
mod slot;
mod supply;
mod warm;

pub use builder::PoolBuilder;
pub use config::{
    DEFAULT_CHECK_AFTER_IDLE, DEFAULT_CHECK_TIMEOUT, DEFAULT_CREATE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LEAK_THRESHOLD, DEFAULT_MAX_CONCURRENT_DIALS, DEFAULT_MAX_LIFETIME, DEFAULT_MAX_SIZE,
    DEFAULT_MAX_WAITERS, DEFAULT_PORT_WARNING, DEFAULT_WAIT_TIMEOUT, MAX_POOL_SIZE, MAX_WAITERS,
    PoolConfig,
};
pub use conn::Conn;
pub use fanout::Bulkhead;
pub use handle::{Pool, Status};
pub use limit::{BulkheadStats, LimitPermit, MAX_BULKHEADS, MAX_LIMIT, OVERFLOW_BULKHEAD};
