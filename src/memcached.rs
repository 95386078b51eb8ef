//! memcached: a [`Connector`](crate::Connector) for memcached's text protocol, written to be
//! cancelled.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = multiloop::Pool::builder("127.0.0.1:11211")
//!     .connector(multiloop::memcached::Connector)
//!     .build()?;
//! let mut conn = pool.get().await?;
//! conn.set("greeting", b"hello", 0).await?;
//! let values = conn.get_multi(&["greeting", "missing"]).await?;
//! assert_eq!(values.get("greeting").map(Vec::as_slice), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! Each request is written with one `write` (a 500-key multi-get is one syscall, not one per
//! key), and replies are read through a buffer the [`Protocol`] owns. So when a caller gives up
//! mid-request, the protocol knows it: the pool does not hand that connection to the next
//! caller, whose reply would be the stale one. Instead the connector
//! [recovers](crate::Connector::recover) it off the caller's path: it finishes writing a
//! half-written request, sends `version` behind it, and reads up to that reply, dropping what
//! came before. A timeout storm against a slow memcached then costs no new dials.
//!
//! The [check](crate::Connector::check) on checkout is a non-blocking peek, no round trip: it
//! catches a connection the server closed and one with stray bytes.
//!
//! # Batches
//!
//! [`get_many`] is the fix for the incident's endpoint that is also fast: a batch's keys go as
//! multi-gets of `chunk` keys each, fanned out over the pool (at most its default limit at
//! once), and the replies are put back together.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = multiloop::Pool::builder("127.0.0.1:11211")
//!     .connector(multiloop::memcached::Connector)
//!     .build()?;
//! let keys = (0..20_000).map(|i| format!("key:{i}"));
//! let batch = multiloop::memcached::get_many(&pool, keys, 500).await;
//! println!("{} found, {} answered, {} chunks failed", batch.values.len(), batch.answered, batch.failed.len());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;

use futures_util::StreamExt;

use crate::error::PoolError;
use crate::pool::Pool;

pub use crate::connector::memcached::{Connector, Protocol};

/// What [`get_many`] brings back.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Batch {
    /// The values found, by key. A key that is absent was a miss, or in a failed chunk.
    pub values: HashMap<String, Vec<u8>>,
    /// Keys whose chunk was answered: hits and misses.
    pub answered: usize,
    /// The chunks that failed: how many keys each held, and why.
    pub failed: Vec<(usize, Error)>,
}

/// Why a chunk of [`get_many`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No connection: the pool shed the chunk (saturated, paused) or could not dial.
    Pool(PoolError<io::Error>),
    /// The multi-get itself failed.
    Request(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Pool(e) => write!(f, "{e}"),
            Error::Request(e) => write!(f, "memcached multi-get failed: {e}"),
        }
    }
}

/// Each variant shows its inner error in `Display`, so `source()` continues from that error's
/// own source.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Pool(e) => e.source(),
            Error::Request(e) => e.source(),
        }
    }
}

/// Gets every key as multi-gets of `chunk` keys (0 counts as 1), at most the pool's
/// [default limit](Pool::default_limit) in flight, spawning no task, and puts the replies together. Keys are
/// taken from `keys` lazily, a chunk at a time, so a large batch is never held twice.
///
/// A chunk that fails does not fail the others: its keys are counted in [`Batch::failed`].
/// A caller that gives up (a timeout around this future) leaves nothing behind: connections
/// with a multi-get in flight are recovered by the connector.
pub async fn get_many<I>(pool: &Pool<Connector>, keys: I, chunk: usize) -> Batch
where
    I: IntoIterator<Item = String>,
    I::IntoIter: Send + 'static,
{
    let chunk = chunk.max(1);
    let mut keys = keys.into_iter();
    let chunks = std::iter::from_fn(move || {
        let next: Vec<String> = keys.by_ref().take(chunk).collect();
        (!next.is_empty()).then_some(next)
    });
    let limit = pool.default_limit();
    let pool = pool.clone();
    let mut replies = futures_util::stream::iter(chunks)
        .map(move |chunk| {
            let pool = pool.clone();
            async move {
                let n = chunk.len();
                let reply = match pool.get().await {
                    Ok(mut conn) => conn.get_multi(&chunk).await.map_err(Error::Request),
                    Err(e) => Err(Error::Pool(e)),
                };
                (n, reply)
            }
        })
        .buffer_unordered(limit);
    let mut batch = Batch::default();
    while let Some((n, reply)) = replies.next().await {
        match reply {
            Ok(values) => {
                batch.answered += n;
                batch.values.extend(values);
            }
            Err(e) => batch.failed.push((n, e)),
        }
    }
    batch
}
