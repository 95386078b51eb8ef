//! memcached: a [`Connector`](crate::Connector) for memcache-async's ASCII protocol.
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

use std::io;

use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::connector::Stream;

/// A pooled memcached connection: memcache-async's protocol over a dialed stream, ready for
/// `get`, `get_multi`, `set` and the rest.
pub type Protocol = memcache_async::ascii::Protocol<Compat<Stream>>;

/// Pools memcache-async connections. [`check`](crate::Connector::check) sends `version`, a
/// round trip per checkout of an idle connection: memcache-async buffers the stream, so a
/// connection cannot be checked without one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Connector;

impl crate::Connector for Connector {
    type Conn = Protocol;
    type Error = io::Error;

    async fn connect(&self, stream: Stream) -> io::Result<Protocol> {
        Ok(memcache_async::ascii::Protocol::new(stream.compat()))
    }

    async fn check(&self, conn: &mut Protocol) -> io::Result<()> {
        conn.version().await.map(|_| ())
    }
}
