//! The pool layer, on `deadpool::managed`: a cap on sockets, one admission path, creation that
//! outlives its caller, lifetimes, checks, switches and the reaper.
//!
//! Files, from the top down (imports go down the list, or into telemetry):
//!
//! - `fanout`: [`Pool::fan_out`], a batch's limit on items in flight;
//! - `bulkhead`: [`Bulkhead`], a call site's limit, with all its machinery in one file: a
//!   name's `Limit`, its [`LimitPermit`], the pool's registry `Bulkheads`. The one file
//!   imported from below: `admission` and `conn` carry its permit, `inner` and `builder` hold
//!   its registry, `config` checks a limit against [`Bulkhead::MAX_LIMIT`];
//! - `handle`: [`Pool`], its snapshots and switches; `builder` and `config`: options;
//! - `admission`: the one path every `get` takes, with one deadline;
//! - `reaper` and `warm`: the pool's background work;
//! - `conn`: [`Conn`], which knows whether a request is in flight when it comes back;
//! - `inner`: what the handles share, and the pool's report kinds;
//! - `manager`: deadpool's `create` and `recycle`, and the idle decisions admission takes on
//!   the time deadpool reads at checkout;
//! - `supply`: the socket cap, the dial tasks and the stash of connections whose caller left;
//! - `health`, `slot`, `gate`, `leak`: the small pieces below.
//!
//! **A get served from the pool (a hit).** [`Pool::get`] (`handle`) enters `admission::in_pool`:
//! one load of the upkeep state, then deadpool's `timeout_get` with no wait, whose
//! `Manager::recycle` (`manager`) peeks at the idle connection; admission settles its idle
//! time on the clock deadpool read, and wraps it in a [`Conn`] (`conn`). Dropped, the `Conn`
//! gives it back to deadpool.
//!
//! **A miss.** deadpool, with room under its cap, calls `Manager::create`, which waits in
//! `Supply::obtain` (`supply`) for a stashed connection, or for a permit of the socket cap and
//! one of the dial bound (`gate`), then spawns a dial task: the dialer, the connector's
//! handshake, a `Slot` (`slot`) that holds the socket's permit. The task hands the connection
//! back over a oneshot, or to the stash if the get has gone. A connection given back while
//! a create waits goes to the stash too, and the create takes it first. A busy pool (no room)
//! joins the bounded wait queue (a `Counted` place, `gate`) and waits on deadpool until the
//! deadline.
//!
//! **A cancellation.** Dropping a get undoes its count (its queue place, its waiting create);
//! a dial it started runs on and lands in the stash (counted `handed_off`); a `Conn` dropped
//! with a request in flight goes to a recovery task or closes. Each socket's permit returns
//! when its `Slot` drops, on every path.
//!
//! **Where connections are.** In deadpool's queue (idle), on loan, in a dial task, or in the
//! stash; the socket gate counts them all. A shrink (`resize`) and every reaper tick close the
//! stash's and deadpool's idle surplus while the gate is over its cap (`PoolInner::shed`);
//! `close` empties both.

mod admission;
mod builder;
mod bulkhead;
mod config;
mod conn;
mod fanout;
mod gate;
mod handle;
mod health;
mod inner;
mod leak;
mod manager;
mod reaper;
mod slot;
mod supply;
mod warm;

pub use builder::PoolBuilder;
pub use bulkhead::{Bulkhead, BulkheadStats, LimitPermit};
pub use config::PoolConfig;
pub use conn::Conn;
pub use handle::{Pool, Status};
