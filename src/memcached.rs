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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::Mutex;

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

/// Gets every key as multi-gets of `chunk` keys (0 counts as 1), on at most the pool's
/// [default limit](Pool::default_limit) connections at once, spawning no task, and puts the
/// replies together. Each connection keeps one request ahead of the reply it reads, so the
/// server answers one chunk while the client reads the one before. Keys are taken from `keys`
/// lazily, a chunk at a time, so a large batch is never held twice.
///
/// A chunk that fails does not fail the others: its keys are counted in [`Batch::failed`].
/// A caller that gives up (a timeout around this future) leaves nothing behind: connections
/// with a multi-get in flight are recovered by the connector.
pub async fn get_many<I>(pool: &Pool<Connector>, keys: I, chunk: usize) -> Batch
where
    I: IntoIterator,
    I::Item: AsRef<[u8]> + Send,
    I::IntoIter: Send,
{
    let chunk = chunk.max(1);
    let mut keys = keys.into_iter();
    let expected = keys.size_hint().0;
    let chunks = Mutex::new(std::iter::from_fn(move || {
        let next: Vec<I::Item> = keys.by_ref().take(chunk).collect();
        (!next.is_empty()).then_some(next)
    }));
    let workers = pool.default_limit().min(expected.div_ceil(chunk)).max(1);
    // Each worker puts its chunks' values straight into the batch; they take turns on one
    // thread, so the lock is never contended.
    let batch = Mutex::new(Batch {
        values: HashMap::with_capacity(expected),
        ..Batch::default()
    });
    // Polled as they wake, not all on every wake.
    let mut running: futures_util::stream::FuturesUnordered<_> = (0..workers)
        .map(|_| worker(pool, &chunks, &batch))
        .collect();
    while running.next().await.is_some() {}
    drop(running);
    batch
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes chunks until none are left, on one connection at a time, one request ahead.
async fn worker<T, K>(pool: &Pool<Connector>, chunks: &Mutex<T>, batch: &Mutex<Batch>)
where
    T: Iterator<Item = Vec<K>>,
    K: AsRef<[u8]>,
{
    let take = || {
        chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()
    };
    let mut conn = None;
    // Chunks whose requests are out on `conn`, oldest first: at most two.
    let mut sent: VecDeque<Vec<K>> = VecDeque::with_capacity(2);
    loop {
        if sent.len() < 2
            && let Some(next) = take()
        {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match pool.get().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        lock(batch).failed.push((next.len(), Error::Pool(e)));
                        continue;
                    }
                },
            };
            match c.send_get(&next).await {
                Ok(()) => sent.push_back(next),
                // A key memcached would refuse: nothing was sent for this chunk.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    lock(batch).failed.push((next.len(), Error::Request(e)));
                }
                Err(e) => {
                    broken(batch, &mut sent, Some(next), e);
                    conn = None;
                }
            }
            continue;
        }
        let (Some(oldest), Some(c)) = (sent.pop_front(), conn.as_mut()) else {
            return;
        };
        match c.recv_pairs(oldest.len()).await {
            Ok(pairs) => {
                let mut batch = lock(batch);
                batch.answered += oldest.len();
                batch.values.extend(pairs);
            }
            Err(e) => {
                broken(batch, &mut sent, Some(oldest), e);
                conn = None;
            }
        }
    }
}

/// A connection failed: `first` and every chunk still out on it fail with `e`.
fn broken<K>(
    batch: &Mutex<Batch>,
    sent: &mut VecDeque<Vec<K>>,
    first: Option<Vec<K>>,
    e: io::Error,
) {
    let mut batch = lock(batch);
    for chunk in first.into_iter().chain(sent.drain(..)) {
        let copy = io::Error::new(e.kind(), e.to_string());
        batch.failed.push((chunk.len(), Error::Request(copy)));
    }
}

/// The batch the workers fill; a worker that panicked mid-insert left it usable.
fn lock(batch: &Mutex<Batch>) -> std::sync::MutexGuard<'_, Batch> {
    batch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
