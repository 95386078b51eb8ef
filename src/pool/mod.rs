//! The pool layer, on `deadpool::unmanaged`: one store of connections, a cap on sockets, one
//! admission path, dials that outlive their caller, lifetimes, checks, switches and the reaper.
//!
//! **Why deadpool's unmanaged pool.** A pool that caps sockets must own creation: a dial that
//! outlives its caller must still land somewhere the pool counts and every switch reaches.
//! deadpool's managed pool creates inside the caller's future (its open issue #462), so the
//! crate ran its own queue beside it, a second store for orphaned dials and a second cap. Its
//! unmanaged pool is a store any task can `add` to, where a waiting get takes whichever
//! connection arrives first, returned or newly dialed: go-redis's handoff, with no second
//! store, no second queue and `max_size` kept once, in the socket gate.
//!
//! Files, from the top down (imports go down the list, or into telemetry):
//!
//! - `fanout`: [`Pool::fan_out`], a batch's limit on items in flight;
//! - `bulkhead`: [`Bulkhead`], a call site's limit, with all its machinery in one file: a
//!   name's `Limit`, its [`LimitPermit`], the pool's registry `Bulkheads`. The one file
//!   imported from below: `admission` and `conn` carry its permit, `inner` and `builder` hold
//!   its registry, `config` checks a limit against [`Bulkhead::MAX_LIMIT`];
//! - `handle`: [`Pool`], its snapshots and switches; `builder` and `config`: options;
//! - `admission`: the one path every `get` takes, with one deadline, and the checkout's idle
//!   decisions and check;
//! - `reaper` and `warm`: the pool's background work;
//! - `conn`: [`Conn`], which knows whether a request is in flight when it comes back;
//! - `dial`: the dial tasks, which add their connections to the store;
//! - `inner`: `PoolInner`, the one home of the pool's state, and the moves
//!   into and out of the store (`add`, `give_back`, `shed`, `sweep`, `close`);
//! - `event`, `health`, `slot`, `gate`, `leak`: the small pieces below.
//!
//! **A get served from the pool (a hit)**, through `handle`, `admission`, `slot` and `conn`:
//! [`Pool::get`] enters `admission::in_pool`: one load of the upkeep state, the store's
//! `try_get` (no await), `settle` (the connector's peek and the idle decisions on one read of
//! the clock), wrapped in a [`Conn`]. Dropped, the `Conn` gives it back to the store
//! (`PoolInner::give_back`), where the first waiting get takes it.
//!
//! **A miss.** `admission::wait`: with room under the cap (a permit of the socket gate and one
//! of the dial bound), it spawns a dial task (`dial`), and waits in the store's queue for the
//! first connection to arrive; a busy pool's get takes a place in the bounded wait queue
//! instead. The dial task adds its connection to the store and tells its get how it ended: a
//! failure fails that get.
//!
//! **A cancellation.** Dropping a get drops its place in the queues (each one `Counted` guard
//! or a tokio semaphore's waiter, which passes on a permit it was given; while the pool is
//! over its cap, the get leaving sheds the idle surplus, so a connection promised to it
//! closes). Its dial runs on and adds its connection to the store for the next get (counted
//! `handed_off`). A `Conn` dropped with a request in flight goes to a recovery task, still
//! counted as in use, or closes; the task dropped unfinished (its runtime shut down) closes
//! it too. Each socket's permit returns when its `Slot` drops, on every path.
//!
//! **Where connections are.** In the store (idle, lent, or being recovered), or in a dial task;
//! the socket gate counts them all. A shrink (`resize`) closes idle surplus at once, and every
//! connection that comes back, or lands from a dial, while the gate is over its new cap;
//! `close` is a shrink to zero, for good.

mod admission;
mod builder;
mod bulkhead;
mod config;
mod conn;
mod dial;
mod event;
mod fanout;
mod gate;
mod handle;
mod health;
mod inner;
mod leak;
mod reaper;
mod slot;
mod warm;

pub use builder::PoolBuilder;
pub use bulkhead::{Bulkhead, BulkheadStats, LimitPermit};
pub use config::PoolConfig;
pub use conn::Conn;
pub use handle::{Pool, Status};
