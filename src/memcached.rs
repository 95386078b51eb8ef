//! memcached: a [`Connector`] that reads every reply by its structure and matches it to its
//! request, written to be cancelled.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use multiloop::memcached::Connector;
//!
//! let pool = multiloop::Pool::builder("127.0.0.1:11211")
//!     .connector(Connector::new())
//!     .build()?;
//! let mut conn = pool.get().await?;
//! conn.set("greeting", b"hello", 0).await?;
//! assert_eq!(conn.get("greeting").await?, Some(b"hello".to_vec()));
//! assert_eq!(conn.get("missing").await?, None);
//! let values = conn.get_multi(&["greeting", "missing"]).await?;
//! assert_eq!(values.get(&b"greeting"[..]).map(Vec::as_slice), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! # Trust
//!
//! A stored value is arbitrary bytes, and can hold text shaped like the protocol. So a reply is
//! never read by looking for a marker in the stream. Each connection keeps the queue of requests
//! whose replies are pending, with the shape each reply has, and reads exactly that: header
//! lines of at most 1 KiB, data blocks by their declared length (checked against
//! [`max_value_size`](Connector::max_value_size) before anything is reserved), every value's key
//! one its request asked for, in its order. In the meta protocol each request also carries an
//! opaque token that its reply echoes, with the key. A reply that does not fit is
//! [`Error::Mismatch`]: nothing of it is returned and the connection is closed. A request is
//! built whole, every key checked, before a byte of it is queued: a refused key sends nothing.
//!
//! When a caller gives up mid-request (a timeout, a dropped future, an aborted task), the
//! connection knows which replies are still owed; the pool does not hand it to the next caller,
//! whose reply would be the stale one. The connector [recovers](crate::Connector::recover) it
//! off the caller's path: it reads every pending reply to its end by its structure and drops
//! it. A timeout storm against a slow memcached then costs no new dials. A request cut off
//! mid-write is not finished behind its caller's back (a store sent late would overwrite a
//! later one): that connection closes, and the server drops the request.
//!
//! # Dialects
//!
//! memcached 1.6.10+ speaks the meta protocol, which its maintainers recommend for new clients;
//! twemproxy and memcached before 1.6.10 (whose meta protocol was still experimental) get the
//! text protocol. [`Dialect::Auto`] (the default) learns which at the first connect and uses
//! meta where it can: a batch is then quiet gets closed by `mn`, so misses cost no bytes, and
//! every value is matched by token and key.
//! See [`Connector`] for the probe, and BENCHMARKS.md for the two side by side.
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
//!     .connector(multiloop::memcached::Connector::new())
//!     .build()?;
//! let keys = (0..20_000).map(|i| format!("key:{i}"));
//! let batch = multiloop::memcached::get_many(&pool, keys, 500).await;
//! println!("{} found, {} answered, {} chunks failed", batch.values.len(), batch.answered, batch.failed.len());
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use futures_util::StreamExt;

use crate::pool::Pool;

#[doc(hidden)]
pub use crate::connector::memcached::fuzz_reply;
pub use crate::connector::memcached::{Connector, Dialect, Error, Item, Protocol, Store, Stored};

/// What [`get_many`] brings back.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Batch {
    /// The values found, by key (its bytes, as given). A key that is absent was a miss, or in a
    /// failed chunk.
    pub values: HashMap<Vec<u8>, Vec<u8>>,
    /// Keys whose chunk was answered: hits and misses.
    pub answered: usize,
    /// The chunks that failed: how many keys each held, and why.
    pub failed: Vec<(usize, Error)>,
}

/// How many entries [`get_many`] reserves ahead at most, whatever the keys' `size_hint` says.
const MAX_RESERVE: usize = 1 << 16;

/// Gets every key as multi-gets of `chunk` keys (0 counts as 1), on at most the pool's
/// [default limit](Pool::default_limit) connections at once, spawning no task, and puts the
/// replies together. Each connection keeps one request ahead of the reply it reads, so the
/// server answers one chunk while the client reads the one before. Keys are taken from `keys`
/// lazily, a chunk at a time, so a large batch is never held twice, and memory does not follow
/// what the iterator's `size_hint` claims.
///
/// A chunk that fails does not fail the others: its keys are counted in [`Batch::failed`]. A
/// chunk with a key memcached would not take is refused whole, before anything of it is sent.
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
    let (lower, upper) = keys.size_hint();
    let reserve = lower.min(MAX_RESERVE);
    let chunks = Mutex::new(std::iter::from_fn(move || {
        let next: Vec<I::Item> = keys.by_ref().take(chunk).collect();
        (!next.is_empty()).then_some(next)
    }));
    // Every worker takes chunks until none are left; one that finds none ends without a
    // connection. As many as the keys may need: the size hint's upper bound, which a `filter`
    // keeps (its lower bound is 0), or the pool's default limit when there is none.
    let most = upper.map_or(usize::MAX, |n| n.div_ceil(chunk));
    let workers = pool.default_limit().min(most).max(1);
    // Each worker puts its chunks' values straight into the batch; they take turns on one
    // thread, so the lock is never contended.
    let batch = Mutex::new(Batch {
        values: HashMap::with_capacity(reserve),
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
            // Queued whole or refused whole (a key memcached would not take): a refused chunk
            // leaves nothing behind, and the chunk before it is still owed its reply.
            if let Err(e) = c.queue_multi(&next) {
                lock(batch).failed.push((next.len(), e));
                continue;
            }
            match c.flush().await {
                Ok(()) => sent.push_back(next),
                Err(e) => {
                    broken(batch, &mut sent, Some(next), &e);
                    conn = None;
                }
            }
            continue;
        }
        let (Some(oldest), Some(c)) = (sent.pop_front(), conn.as_mut()) else {
            return;
        };
        // A chunk's values join the batch once its reply is read to its end: one that fails
        // part way through adds none.
        let mut found = Vec::with_capacity(oldest.len());
        let read = c
            .recv_multi(|i, value| {
                if let Some(key) = oldest.get(i) {
                    found.push((key.as_ref().to_vec(), value.to_vec()));
                }
            })
            .await;
        match read {
            Ok(()) => {
                let mut batch = lock(batch);
                batch.answered += oldest.len();
                batch.values.extend(found);
            }
            Err(e) => {
                broken(batch, &mut sent, Some(oldest), &e);
                conn = None;
            }
        }
    }
}

/// A connection failed: `first` and every chunk still out on it fail with `e`.
fn broken<K>(batch: &Mutex<Batch>, sent: &mut VecDeque<Vec<K>>, first: Option<Vec<K>>, e: &Error) {
    let mut batch = lock(batch);
    for chunk in first.into_iter().chain(sent.drain(..)) {
        batch.failed.push((chunk.len(), copy(e)));
    }
}

/// The same error for each chunk it failed.
fn copy(e: &Error) -> Error {
    match e {
        Error::Refused(why) => Error::Refused(why),
        Error::Server { target, line } => Error::Server {
            target: target.clone(),
            line: line.clone(),
        },
        Error::Mismatch { target, detail } => Error::Mismatch {
            target: target.clone(),
            detail: detail.clone(),
        },
        Error::Io { target, source } => Error::Io {
            target: target.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Pool(p) => Error::Io {
            target: "memcached".into(),
            source: std::io::Error::other(p.to_string()),
        },
    }
}

/// The batch the workers fill; a worker that panicked mid-insert left it usable.
fn lock(batch: &Mutex<Batch>) -> std::sync::MutexGuard<'_, Batch> {
    batch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
