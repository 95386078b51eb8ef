//! What a pool holds: the [`Connector`] trait, the [`Stream`] it is handed, and [`Raw`], the
//! stream itself.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

/// A dialed connection: TCP from a spread source address, or a unix domain socket.
///
/// It reads and writes like either, so a connector's handshake works on both.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection from the dialer.
    Tcp(TcpStream),
    /// A unix domain socket connection ([`Pool::builder_unix`](crate::Pool::builder_unix)).
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    /// The TCP stream, if this is one.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            #[cfg(unix)]
            Stream::Unix(_) => None,
        }
    }

    /// The unix stream, if this is one.
    #[cfg(unix)]
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match self {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }

    /// Peeks one byte without blocking: `WouldBlock` is the healthy answer for an idle stream.
    fn peek_idle(&self) -> io::Result<usize> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1];
        // Both streams are non-blocking, so this returns at once.
        match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).peek(&mut buf),
            #[cfg(unix)]
            Stream::Unix(s) => socket2::SockRef::from(s).peek(&mut buf),
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

#[cfg(unix)]
impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Unix(s)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

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

    /// Checks an idle connection before the pool hands it out again. A failure closes it, and
    /// the pool takes another idle connection or dials a new one. Keep it cheap: it runs on
    /// every checkout of an idle connection.
    ///
    /// # Errors
    ///
    /// Any error means "do not reuse this connection".
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The plain [`Stream`], checked without a round trip.
///
/// [`check`](Connector::check) peeks at the socket without blocking: end-of-stream means the
/// peer closed it, and unread bytes mean the last user left a reply half read. Either way the
/// stream is not handed out again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Connector for Raw {
    type Conn = Stream;
    type Error = io::Error;

    async fn connect(&self, stream: Stream) -> io::Result<Stream> {
        Ok(stream)
    }

    async fn check(&self, conn: &mut Stream) -> io::Result<()> {
        match conn.peek_idle() {
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
}
