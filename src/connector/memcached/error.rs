//! What a memcached request fails with.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::error::PoolError;

/// Why a memcached request, or a chunk of [`get_many`](crate::memcached::get_many), failed.
///
/// Every variant but [`Pool`](Error::Pool) and [`Refused`](Error::Refused) names the server.
/// [`Mismatch`](Error::Mismatch) and [`Io`](Error::Io) leave the connection closed (the pool
/// does not lend it again); the others leave it usable.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No connection: the pool shed the chunk (saturated, paused) or could not dial.
    Pool(PoolError<io::Error>),
    /// A key or value memcached would not take: nothing of the request was sent.
    Refused(&'static str),
    /// The server answered with an error line (`SERVER_ERROR …`, `CLIENT_ERROR …`, `ERROR`).
    Server {
        /// The server, as dialed.
        target: Arc<str>,
        /// Its line.
        line: String,
    },
    /// The reply did not fit its request (a value for another key, a length past
    /// `max_value_size`, a line that answers no such request). Nothing of it was returned, and
    /// the connection was closed.
    Mismatch {
        /// The server, as dialed.
        target: Arc<str>,
        /// What did not fit, and the line it was found in.
        detail: String,
    },
    /// The connection failed or closed mid-request; it is not used again.
    Io {
        /// The server, as dialed.
        target: Arc<str>,
        /// The cause.
        source: io::Error,
    },
}

impl Error {
    /// The [`io::ErrorKind`] that best describes this error, for code that handles I/O errors.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Pool(_) => io::ErrorKind::Other,
            Error::Refused(_) => io::ErrorKind::InvalidInput,
            Error::Server { .. } => io::ErrorKind::Other,
            Error::Mismatch { .. } => io::ErrorKind::InvalidData,
            Error::Io { source, .. } => source.kind(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Pool(e) => write!(f, "{e}"),
            Error::Refused(why) => write!(f, "memcached request refused before sending: {why}"),
            Error::Server { target, line } => write!(f, "memcached at {target} answered {line:?}"),
            Error::Mismatch { target, detail } => write!(
                f,
                "memcached at {target} sent a reply that does not fit the request ({detail}); \
                 the connection was closed and nothing of the reply was used"
            ),
            Error::Io { target, .. } => write!(f, "memcached connection to {target} failed"),
        }
    }
}

/// [`Pool`](Error::Pool) shows its inner error in `Display`, so `source()` continues from that
/// error's own source.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Pool(e) => e.source(),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}
