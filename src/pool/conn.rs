//! [`Conn`]: a connection on loan. It tracks whether a request is in flight, and when it comes
//! back, it goes to the store (where the first waiting get takes it), to a recovery task, or
//! closed; never, with a reply still on its way, to the next caller.

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::bulkhead::LimitPermit;
use super::inner::{self, Object, PoolInner};
use crate::connector::Connector;
use crate::telemetry::counters::CloseReason;

/// Where a request stands, as seen through the `Conn`'s own reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// Nothing sent, or the last read completed.
    Idle,
    /// Bytes were written and no read has completed since: a reply may be on its way.
    Sent,
    /// A read is pending: the reply has not (all) arrived.
    Reading,
    /// An I/O error or a shutdown: the connection's state is unknown.
    Broken,
}

/// A connection on loan from a [`Pool`](crate::Pool). Dereferences to the connector's
/// connection (a [`Stream`](crate::Stream) for [`Raw`](crate::Raw)).
///
/// Dropping it gives it back. A connection given back with a request in flight (its user timed
/// out or was cancelled after writing a request and before reading its whole reply through this
/// `Conn`, or the connector's [`in_flight`](Connector::in_flight) says so) is never handed to
/// the next caller: the connector [recovers](Connector::recover) it in a task of its own, or it
/// is closed. [`discard`](Conn::discard) closes it outright.
pub struct Conn<C: Connector> {
    obj: Option<Object<C>>,
    pool: Arc<PoolInner<C>>,
    io: Io,
    /// The bulkhead place it holds, released when it drops (by `drop`, below: a
    /// `ManuallyDrop` has no drop glue of its own).
    limit: ManuallyDrop<Option<LimitPermit>>,
}

impl<C: Connector> Conn<C> {
    /// A connection on loan, holding its bulkhead place if it has one.
    pub(crate) fn new(obj: Object<C>, pool: Arc<PoolInner<C>>, limit: Option<LimitPermit>) -> Self {
        Conn {
            obj: Some(obj),
            pool,
            io: Io::Idle,
            limit: ManuallyDrop::new(limit),
        }
    }

    /// Closes the connection instead of returning it, for a connection left in an unknown
    /// state (say, after an I/O error mid-request). It counts as broken.
    pub fn discard(mut self) {
        if let Some(obj) = self.obj.take() {
            obj.set_close_reason(CloseReason::Broken);
            inner::close(obj);
        }
    }

    /// Tells the pool that no reply is on its way, after a request that has none (memcached's
    /// `noreply`, a fire-and-forget write). Without it, a write not followed by a completed read
    /// counts as a request in flight, and the connection is recovered or closed when it comes
    /// back instead of being reused.
    pub fn mark_idle(&mut self) {
        if self.io != Io::Broken {
            self.io = Io::Idle;
        }
    }

    fn track<T>(&mut self, poll: &Poll<io::Result<T>>, done: Io) {
        self.io = match poll {
            Poll::Ready(Ok(_)) => done,
            Poll::Ready(Err(_)) => Io::Broken,
            Poll::Pending if done == Io::Idle => Io::Reading,
            Poll::Pending => self.io,
        };
    }
}

impl<C: Connector> Deref for Conn<C> {
    type Target = C::Conn;

    fn deref(&self) -> &C::Conn {
        match &self.obj {
            Some(obj) => &obj.conn,
            // `obj` is only taken by `discard` and `drop`, which consume the Conn.
            None => unreachable!("a Conn is never used after discard"),
        }
    }
}

impl<C: Connector> DerefMut for Conn<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        match &mut self.obj {
            Some(obj) => &mut obj.conn,
            None => unreachable!("a Conn is never used after discard"),
        }
    }
}

impl<C: Connector> Drop for Conn<C> {
    /// The common return (no request in flight) inline; the rest out of line.
    #[inline]
    fn drop(&mut self) {
        if let Some(slot) = self.obj.as_deref_mut() {
            if let Some(loan) = &slot.loan {
                loan.back();
            }
            let now = Instant::now();
            #[cfg(feature = "metrics")]
            self.pool
                .export
                .used(now.saturating_duration_since(slot.touched));
            slot.touched = now;
            if self.io == Io::Idle && !self.pool.connector.in_flight(&slot.conn) {
                if let Some(obj) = self.obj.take() {
                    self.pool.give_back(obj);
                }
            } else {
                self.give_back_in_flight();
            }
        }
        // The bulkhead's place goes last, once the connection is back: the get it lets in
        // finds it there. Taken here, so that a `Conn` without one drops no field for it.
        if let Some(permit) = self.limit.take() {
            drop(permit);
        }
    }
}

impl<C: Connector> Conn<C> {
    /// A return off the common path: a broken connection closes, one with a request in flight
    /// is recovered or closed.
    #[cold]
    #[inline(never)]
    fn give_back_in_flight(&mut self) {
        let Some(obj) = self.obj.take() else {
            return;
        };
        if self.io == Io::Broken {
            obj.set_close_reason(CloseReason::Broken);
            inner::close(obj);
            return;
        }
        // A request is in flight: recover it off the caller's path, or close it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let pool = self.pool.clone();
                drop(runtime.spawn(recover(pool, Recovering::new(obj))));
            }
            Err(_) => {
                obj.set_close_reason(CloseReason::InFlight);
                inner::close(obj);
            }
        }
    }
}

/// Makes a connection given back mid-request clean again, under the check timeout, then gives
/// it back; or closes it, counted as `in_flight`. It counts as in use meanwhile.
async fn recover<C: Connector>(pool: Arc<PoolInner<C>>, mut held: Recovering<C>) {
    let Some(obj) = held.0.as_mut() else {
        return;
    };
    let clean = tokio::time::timeout(pool.check_timeout, pool.connector.recover(&mut obj.conn))
        .await
        .unwrap_or(false);
    if clean && !pool.connector.in_flight(&obj.conn) {
        pool.counters.recovered.fetch_add(1, Ordering::Relaxed);
        obj.touched = Instant::now();
        obj.set_close_reason(CloseReason::Other);
        if let Some(obj) = held.0.take() {
            pool.give_back(obj);
        }
    }
}

/// A connection being recovered: dropped unsettled (the recovery failed, or its task was
/// dropped with its runtime, before it ran or mid-way), it closes, counted as `in_flight`,
/// instead of returning to the store with a reply on its way.
struct Recovering<C: Connector>(Option<Object<C>>);

impl<C: Connector> Recovering<C> {
    /// Held from before its task is spawned, so that a task dropped unpolled closes it too.
    fn new(obj: Object<C>) -> Self {
        obj.set_close_reason(CloseReason::InFlight);
        Recovering(Some(obj))
    }
}

impl<C: Connector> Drop for Recovering<C> {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            inner::close(obj);
        }
    }
}

/// A `Conn` reads and writes like its connection, so it goes straight to functions generic over
/// `AsyncRead`/`AsyncWrite`; it notes where a request stands as it does.
impl<C: Connector> AsyncRead for Conn<C>
where
    C::Conn: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut **this).poll_read(cx, buf);
        this.track(&poll, Io::Idle);
        poll
    }
}

impl<C: Connector> AsyncWrite for Conn<C>
where
    C::Conn: AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut **this).poll_write(cx, buf);
        this.track(&poll, Io::Sent);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut **this).poll_write_vectored(cx, bufs);
        this.track(&poll, Io::Sent);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        (**self).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut **this).poll_flush(cx);
        if let Poll::Ready(Err(_)) = poll {
            this.io = Io::Broken;
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A connection shut down for writing cannot carry another request.
        this.io = Io::Broken;
        Pin::new(&mut **this).poll_shutdown(cx)
    }
}

impl<C: Connector> fmt::Debug for Conn<C>
where
    C::Conn: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("conn", &self.obj.as_ref().map(|o| &o.conn))
            .finish_non_exhaustive()
    }
}
