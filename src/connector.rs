//! What a pool holds: the [`Connector`] trait, and [`Raw`], the `TcpStream` itself.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;

use tokio::net::TcpStream;

/// Turns a dialed stream into a pooled connection, and checks one before it is reused.
///
/// This is the only thing a user implements to pool a protocol of their own: a handshake
/// (`connect`) and a liveness check (`check`). The pool dials, times out, counts and reaps.
///
/// ```
/// use multiloop::Connector;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tokio::net::TcpStream;
///
/// /// A line protocol that answers "PING" with "PONG".
/// struct Pinger;
///
/// impl Connector for Pinger {
///     type Conn = TcpStream;
///     type Error = std::io::Error;
///
///     async fn connect(&self, stream: TcpStream) -> Result<TcpStream, std::io::Error> {
///         Ok(stream)
///     }
///
///     async fn check(&self, conn: &mut TcpStream) -> Result<(), std::io::Error> {
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
        stream: TcpStream,
    ) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Checks an idle connection before the pool hands it out again. A failure closes it, and
    /// the pool takes another idle connection or dials a new one. Keep it cheap: it runs on
    /// every checkout of an idle connection.
    ///
    /// # Errors
    ///
    /// Any error means "do not reuse this connection".
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The plain `TcpStream`, checked without a round trip.
///
/// [`check`](Connector::check) peeks at the socket without blocking: end-of-stream means the
/// peer closed it, and unread bytes mean the last user left a reply half read. Either way the
/// stream is not handed out again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Connector for Raw {
    type Conn = TcpStream;
    type Error = io::Error;

    async fn connect(&self, stream: TcpStream) -> io::Result<TcpStream> {
        Ok(stream)
    }

    async fn check(&self, conn: &mut TcpStream) -> io::Result<()> {
        check_idle_stream(conn)
    }
}

/// Peeks one byte without blocking: `WouldBlock` is the healthy answer.
pub(crate) fn check_idle_stream(stream: &TcpStream) -> io::Result<()> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    // The tokio stream is non-blocking, so this returns at once.
    match socket2::SockRef::from(stream).peek(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection while it was idle",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an idle connection has unread bytes: a previous user left a reply half read",
        )),
    }
}
