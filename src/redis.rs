//! redis: a [`Connector`](crate::Connector) for redis-rs's `MultiplexedConnection`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use redis::AsyncCommands;
//!
//! let pool = multiloop::redis::pool("redis://:secret@127.0.0.1:6379/0")?.max_size(16).build()?;
//! let mut conn = pool.get().await?;
//! let _: () = conn.set("greeting", "hello").await?;
//! let value: String = conn.get("greeting").await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Protected mode
//!
//! redis-server 7.0 with `protected-mode yes` (the default) and no password for the default
//! user accepts connections only from 127.0.0.1 and `::1`. From any other source, which is what
//! multiloop dials from, it answers `-DENIED` and closes, and redis-rs reports only a broken
//! pipe. This connector recognizes it and returns [`Error::ProtectedMode`], which names the
//! refused source and the fix: a password or ACL user, or `protected-mode no` on a
//! loopback-only bind. [`Connector::fallback_to_localhost`] dials from 127.0.0.1 instead, with a
//! loud warning; the default is to fail. Later redis versions treat all of 127.0.0.0/8 as local.
//!
//! # Errors that name the fix
//!
//! A server that requires a password the URL does not give (`NOAUTH`, which redis-rs would
//! report only at the first command) and credentials the server refuses (a wrong password, a
//! missing or disabled ACL user, a password sent to a server without one) are
//! [`Error::Auth`], naming the server, the user and what to change; a URL that does not parse
//! is a [`ConfigError`] naming the part at fault. None repeats a password or
//! the whole URL.

use crate::error::ConfigError;
use crate::pool::PoolBuilder;

pub use crate::connector::redis::{AuthProblem, Connector, Error};

/// A pool builder for the redis at `url` (`redis://…` or `redis+unix://…`): the target and the
/// connector both come from it. A host name in the URL is looked up at each dial, not here.
///
/// # Errors
///
/// A [`ConfigError`] naming `url` when it does not parse or names neither a TCP address nor a
/// unix socket.
pub fn pool(url: &str) -> Result<PoolBuilder<Connector>, ConfigError> {
    let (target, connector) = crate::connector::redis::target_and_connector(url)?;
    Ok(PoolBuilder::with_target(Ok(target)).connector(connector))
}
