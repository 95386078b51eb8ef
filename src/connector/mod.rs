//! What a pool holds: the [`Connector`] trait, and [`Raw`], the dialed [`Stream`] itself. The
//! protocol connectors (`memcached`, `redis`) live beside it, behind their features.

use std::future::Future;
use std::io;
use std::net::IpAddr;

use crate::dial::Stream;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Turns a dialed stream into a pooled connection, and checks one before it is reused.
///
/// This is the only thing a user implements to pool a protocol of their own: a handshake
/// (`connect`) and a liveness check (`check`). The pool dials, times out, counts and reaps.
///
/// ```
/// use multiloop::{Connector, Stream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// /// A line protocol that answers "PING" with "PONG".
/// struct Pinger;
///
/// impl Connector for Pinger {
///     type Conn = Stream;
///     type Error = std::io::Error;
///
///     async fn connect(&self, stream: Stream) -> Result<Stream, std::io::Error> {
///         Ok(stream)
///     }
///
///     async fn check(&self, conn: &mut Stream) -> Result<(), std::io::Error> {
///         conn.write_all(b"PING\r\n").await?;
///         let mut reply = [0u8; 6];
///         conn.read_exact(&mut reply).await?;
///         if &reply == b"PONG\r\n" {
///             Ok(())
///         } else {
///             Err(std::io::Error::other("unexpected reply"))
///         }
///     }
/// }
/// ```
pub trait Connector: Send + Sync + 'static {
    /// The pooled connection.
    type Conn: Send + 'static;
    /// What `connect` and `check` fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sets up a connection on a freshly dialed stream (a handshake, AUTH, SELECT, …).
    ///
    /// # Errors
    ///
    /// Whatever the handshake fails with; the pool reports it as
    /// [`PoolError::Backend`](crate::PoolError::Backend) and closes the stream.
    fn connect(
        &self,
        stream: Stream,
    ) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Checks a connection idle for at least
    /// [`check_after_idle`](crate::PoolConfig::check_after_idle) before the pool hands it out
    /// again; it may take a round trip (redis sends `PING`). A failure closes it, and the pool
    /// takes another idle connection or dials a new one. A get that sees more than `max_size`
    /// checks fail returns the last one's error: [`PoolError::Backend`](crate::PoolError::Backend),
    /// or a [`Check`](crate::TimeoutKind::Check) timeout.
    ///
    /// # Errors
    ///
    /// Any error means "do not reuse this connection".
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Checks a connection used moments ago (idle for less than
    /// [`check_after_idle`](crate::PoolConfig::check_after_idle)) without a round trip and
    /// without waiting, such as a non-blocking peek at its socket. `None` (the default) means
    /// the connector has no such check, and the pool runs [`check`](Connector::check) as for
    /// any idle connection; a connector whose `check` costs a round trip should answer here.
    /// `Some(Ok(()))` without looking is fine where a dead connection shows anyway at its next
    /// request (redis-rs's driver task owns the socket and fails the request).
    ///
    /// # Errors
    ///
    /// `Some(Err(_))` means "do not reuse this connection".
    fn peek(&self, conn: &mut Self::Conn) -> Option<Result<(), Self::Error>> {
        let _ = conn;
        None
    }

    /// Whether a request may still be in flight on a connection its user gave back: the user
    /// timed out or was cancelled between sending a request and reading all of its reply, so a
    /// reply is still on its way. Default: `false`.
    ///
    /// The pool tracks this by itself for I/O done through [`Conn`](crate::Conn)'s
    /// `AsyncRead`/`AsyncWrite` (a write not followed by a completed read, or a read left
    /// pending); a connector whose connection type speaks the protocol itself (as
    /// [`memcached::Protocol`](crate::memcached::Protocol) does) answers here. Such a connection
    /// is never handed to the next caller: it is [recovered](Connector::recover) or closed.
    fn in_flight(&self, conn: &Self::Conn) -> bool {
        let _ = conn;
        false
    }

    /// Makes a connection whose request was cancelled in flight clean again, so that a timeout
    /// storm against a slow server does not turn every timeout into a close and a new dial (the
    /// churn that fills TIME_WAIT). Returns whether it succeeded; on `false` the connection is
    /// closed and counted in [`ClosedCounts::in_flight`](crate::ClosedCounts::in_flight).
    ///
    /// It runs in a task of its own, off the caller's path, under the pool's check timeout; the
    /// connection counts as in use meanwhile. Default: `false`, close it. memcached drains up to
    /// the reply of a `version` sent behind the lost request; a protocol that cannot find the
    /// end of a stale reply must keep the default.
    fn recover(&self, conn: &mut Self::Conn) -> impl Future<Output = bool> + Send {
        let _ = conn;
        std::future::ready(false)
    }

    /// Whether a handshake that failed with `error` is worth one more dial, right away: the
    /// connector learned from it something that makes the next handshake go otherwise
    /// (memcached: the server closed the connection on the meta protocol's probe, so the next
    /// one speaks text). The failed connection is closed first, so the cap holds. Default:
    /// `false`.
    fn retry_handshake(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// The source address new connections must be dialed from, once the connector has learned
    /// that the server refuses the others (redis 7.0's protected mode, with
    /// [`fallback_to_localhost`](crate::redis::Connector::fallback_to_localhost)). Default:
    /// `None`, any source of the dialer's set. When a handshake fails and this has changed, the
    /// pool dials once more from the new source, through its dialer.
    fn source(&self) -> Option<IpAddr> {
        None
    }
}

/// The plain [`Stream`], checked without a round trip.
///
/// [`check`](Connector::check) peeks at the socket without blocking: end-of-stream means the
/// peer closed it, and unread bytes mean the last user left a reply half read. Either way the
/// stream is not handed out again. Raw knows no protocol, so it cannot
/// [recover](Connector::recover) a connection given back with a request in flight: the pool
/// closes those.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Connector for Raw {
    type Conn = Stream;
    type Error = io::Error;

    async fn connect(&self, stream: Stream) -> io::Result<Stream> {
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> io::Result<()> {
        conn.check_idle()
    }

    fn peek(&self, conn: &mut Stream) -> Option<io::Result<()>> {
        Some(conn.check_idle())
    }
}
