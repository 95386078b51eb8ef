//! The redis connector (public as `multiloop::redis`, see `src/redis.rs` for its docs).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis as rs;
use rs::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dial::{Stream, Target};
use crate::error::ConfigError;

/// Pools redis connections: each is a `redis::aio::MultiplexedConnection` over a stream from
/// multiloop's dialer, authenticated and on the database from its connection info.
pub struct Connector {
    info: rs::RedisConnectionInfo,
    response_timeout: Option<Duration>,
    fallback_to_localhost: bool,
    /// Set once redis refused a spread source for protected mode, with the fallback on: new
    /// connections are then dialed from 127.0.0.1.
    denied: AtomicBool,
}

impl Connector {
    /// A connector with this username, password and database.
    pub fn new(info: rs::RedisConnectionInfo) -> Connector {
        Connector {
            info,
            response_timeout: None,
            fallback_to_localhost: false,
            denied: AtomicBool::new(false),
        }
    }

    /// A connector with the username, password and database of a `redis://` URL.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `url` when the URL does not parse.
    pub fn from_url(url: &str) -> Result<Connector, ConfigError> {
        let info = parse_url(url)?;
        Ok(Connector::new(info.redis_settings().clone()))
    }

    /// When redis refuses the dialed source because of protected mode, dial from 127.0.0.1
    /// from then on (the pool redials the refused connection once, through its dialer) and log
    /// one warning, instead of failing. Default: off. The pool then has one source address's
    /// ports (28,232), as without multiloop; fix the server's configuration instead where you
    /// can.
    pub fn fallback_to_localhost(mut self, on: bool) -> Connector {
        self.fallback_to_localhost = on;
        self
    }

    /// How long a command may wait for its reply. Default: redis-rs's.
    pub fn response_timeout(mut self, timeout: Duration) -> Connector {
        self.response_timeout = Some(timeout);
        self
    }

    async fn handshake(&self, stream: Stream) -> Result<MultiplexedConnection, Error> {
        let mut config = rs::AsyncConnectionConfig::new();
        if let Some(t) = self.response_timeout {
            config = config.set_response_timeout(Some(t));
        }
        let (conn, driver) = MultiplexedConnection::new_with_config(&self.info, stream, config)
            .await
            .map_err(Error::Redis)?;
        // The driver ends when the last handle to the connection is dropped.
        tokio::spawn(driver);
        Ok(conn)
    }
}

impl fmt::Debug for Connector {
    /// Never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("redis::Connector")
            .field("username", &self.info.username())
            .field("password", &self.info.password().map(|_| "<redacted>"))
            .field("db", &self.info.db())
            .field("fallback_to_localhost", &self.fallback_to_localhost)
            .finish()
    }
}

/// The target and connector of a `redis://…` or `redis+unix://…` URL.
///
/// # Errors
///
/// A [`ConfigError`] naming `url` when it does not parse or names neither a TCP address nor a
/// unix socket.
pub(crate) fn target_and_connector(url: &str) -> Result<(Target, Connector), ConfigError> {
    let info = parse_url(url)?;
    let connector = Connector::new(info.redis_settings().clone());
    let target = match info.addr() {
        rs::ConnectionAddr::Tcp(host, port) => {
            crate::dial::IntoTarget::into_target((host.as_str(), *port))?
        }
        #[cfg(unix)]
        rs::ConnectionAddr::Unix(path) => Target::Unix(path.clone()),
        _ => {
            return Err(ConfigError::new(
                "url",
                "only redis:// and redis+unix:// URLs are supported",
            ));
        }
    };
    Ok((target, connector))
}

fn parse_url(url: &str) -> Result<rs::ConnectionInfo, ConfigError> {
    rs::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        // redis-rs's message does not repeat the URL, which may hold a password.
        ConfigError::new("url", format!("not a valid redis URL ({:?})", e.kind()))
    })
}

/// What the redis connector fails with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// redis refused the source address because it runs in protected mode.
    ProtectedMode {
        /// The source address redis refused.
        source: IpAddr,
        /// The redis server.
        target: SocketAddr,
    },
    /// A redis-rs error.
    Redis(rs::RedisError),
    /// An I/O error before the redis handshake.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ProtectedMode { source, target } => write!(
                f,
                "redis at {target} refused the connection from {source} (-DENIED): it runs in \
                 protected mode, with protected-mode yes and no password for the default user, \
                 and redis 7.0 accepts only 127.0.0.1 and ::1 then. Fix one of: set a password \
                 (requirepass, or an ACL user) and put it in the redis URL; set `protected-mode \
                 no` if redis binds to loopback only; or build the connector with \
                 fallback_to_localhost(true) to dial from 127.0.0.1 alone"
            ),
            Error::Redis(e) => write!(f, "redis: {e}"),
            Error::Io(e) => write!(f, "redis connection: {e}"),
        }
    }
}

/// The inner error is part of `Display`, so `source()` continues from the inner error's own
/// source: each cause is printed once.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ProtectedMode { .. } => None,
            Error::Redis(e) => e.source(),
            Error::Io(e) => e.source(),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// redis 7.0 counts only these as local in protected mode.
fn exempt_from_protected_mode(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// Sends `PING` and reads the first bytes of the reply: `-DENIED` means protected mode.
/// Reads one line at most, so the stream stays in step for redis-rs.
async fn denied(stream: &mut TcpStream) -> io::Result<bool> {
    stream.write_all(b"PING\r\n").await?;
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "redis closed the connection before answering PING",
            ));
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.starts_with(b"-DENIED") {
            return Ok(true);
        }
        if reply.len() >= 7 || reply.ends_with(b"\r\n") {
            // `+PONG` or `-NOAUTH …`: read the rest of the line, then hand over.
            while !reply.ends_with(b"\r\n") && reply.len() < 4096 {
                let n = stream.read(&mut buf[..1]).await?;
                if n == 0 {
                    break;
                }
                reply.push(buf[0]);
            }
            return Ok(false);
        }
    }
}

impl crate::Connector for Connector {
    type Conn = MultiplexedConnection;
    type Error = Error;

    async fn connect(&self, stream: Stream) -> Result<MultiplexedConnection, Error> {
        let Stream::Tcp(mut tcp) = stream else {
            // A unix socket is always local to redis: no protected-mode question.
            return self.handshake(stream).await;
        };
        let source = tcp.local_addr()?.ip();
        let target = tcp.peer_addr()?;
        // Only a server without a password can be in protected mode; with one, skip the probe.
        if self.info.password().is_none()
            && !exempt_from_protected_mode(source)
            && denied(&mut tcp).await?
        {
            if self.fallback_to_localhost && !self.denied.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %target,
                    refused = %source,
                    "redis is in protected mode and refuses sources other than 127.0.0.1; \
                     falling back to 127.0.0.1 for this pool, which has one address's ports. \
                     Set a password or `protected-mode no` (on a loopback-only bind) to spread."
                );
            }
            // With the fallback on, the pool sees `source()` change and redials from there.
            return Err(Error::ProtectedMode { source, target });
        }
        self.handshake(Stream::Tcp(tcp)).await.map_err(|e| match e {
            Error::Redis(ref r) if r.to_string().contains("DENIED") => {
                Error::ProtectedMode { source, target }
            }
            e => e,
        })
    }

    /// 127.0.0.1 once protected mode refused a spread source and the fallback is on.
    fn source(&self) -> Option<IpAddr> {
        (self.fallback_to_localhost && self.denied.load(Ordering::Relaxed))
            .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    async fn check(&self, conn: &mut MultiplexedConnection) -> Result<(), Error> {
        let pong: String = rs::cmd("PING")
            .query_async(conn)
            .await
            .map_err(Error::Redis)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Io(io::Error::other(format!(
                "redis answered PING with {pong:?}"
            ))))
        }
    }
}
