//! The redis connector (public as `multiloop::redis`, see `src/redis.rs` for its docs).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis as rs;
use rs::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            crate::dial::IntoTarget::into_target((host.as_str(), *port)).map_err(|e| {
                ConfigError::new("url", format!("not a valid redis URL: {}", e.message()))
            })?
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
    rs::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| ConfigError::new("url", url_problem(url, &e)))
}

/// What is wrong with a redis URL and how to write it, without repeating the URL, which may
/// hold a password.
fn url_problem(url: &str, e: &rs::RedisError) -> String {
    // redis-rs's description, such as "Invalid database number", without its kind's name.
    let full = e.to_string();
    let what = full.split(" - ").next().unwrap_or("it does not parse");
    let hint = match url.split_once("://") {
        None => "it has no scheme; write redis://HOST:PORT/DB or redis+unix:///PATH".to_owned(),
        Some(("rediss" | "valkeys", _)) => "TLS (rediss://) is not enabled in multiloop's redis \
            connector; on the same host use redis:// over loopback or redis+unix:// instead"
            .to_owned(),
        Some((scheme, _))
            if !matches!(
                scheme,
                "redis" | "valkey" | "redis+unix" | "unix" | "valkey+unix"
            ) =>
        {
            "the scheme must be redis:// or redis+unix://".to_owned()
        }
        Some(_) if what.contains("database") => {
            "the database is a number, after the port (redis://HOST:PORT/0) or as ?db=0 for a unix \
             socket"
                .to_owned()
        }
        Some((_, rest)) => authority_problem(rest),
    };
    format!("not a valid redis URL: {what}; {hint}")
}

/// The problem with `HOST:PORT` in `[USER:PASSWORD@]HOST:PORT[/DB]`.
fn authority_problem(rest: &str) -> String {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            None => {
                return "an IPv6 address needs its closing bracket, as in [::1]:6379".to_owned();
            }
            Some((_, after)) => after.strip_prefix(':'),
        }
    } else {
        host_port.rsplit_once(':').map(|(_, p)| p)
    };
    if host_port.is_empty() || host_port.starts_with(':') {
        return "it has no host; write redis://HOST:PORT, such as redis://127.0.0.1:6379"
            .to_owned();
    }
    match port {
        Some(p) if p.parse::<u16>().map_or(true, |p| p == 0) => {
            "the port must be a number from 1 to 65535".to_owned()
        }
        _ => "write redis://[USER:PASSWORD@]HOST:PORT[/DB]; a password with @, : or / in it must \
              be percent-encoded"
            .to_owned(),
    }
}

/// Why redis refused to authenticate, in [`Error::Auth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthProblem {
    /// The server requires a password (it answered `NOAUTH`) and the URL gives none.
    Required,
    /// The server refused the URL's credentials: a wrong password, an ACL user that does not
    /// exist or is disabled, or a password sent to a server that has none.
    Rejected,
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
    /// redis refused to authenticate the connection.
    Auth {
        /// The redis server, as an address or a socket path.
        target: String,
        /// The ACL user from the URL; `None` is the default user.
        user: Option<String>,
        /// What went wrong.
        problem: AuthProblem,
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
            Error::Auth {
                target,
                problem: AuthProblem::Required,
                ..
            } => write!(
                f,
                "redis at {target} requires a password (it answered NOAUTH) and the URL gives \
                 none: put it in the URL, as redis://:PASSWORD@HOST:PORT, or \
                 redis://USER:PASSWORD@HOST:PORT for an ACL user"
            ),
            Error::Auth {
                target,
                user,
                problem: AuthProblem::Rejected,
            } => write!(
                f,
                "redis at {target} refused the credentials for user {:?} (AUTH failed): check the \
                 password in the redis URL (not shown here); for an ACL user, that it exists and \
                 is enabled (ACL LIST); if the server sets no password (no requirepass), remove \
                 it from the URL",
                user.as_deref().unwrap_or("default")
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
            Error::ProtectedMode { .. } | Error::Auth { .. } => None,
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

/// What a `PING` sent before the handshake says about the server.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// `-DENIED`: protected mode refuses this source.
    Denied,
    /// `-NOAUTH`: the server requires a password.
    NoAuth,
    /// Anything else (`+PONG`): go on with the handshake.
    Other,
}

/// Sends `PING` and reads its one-line reply, so the stream stays in step for redis-rs.
async fn probe(stream: &mut Stream) -> io::Result<Probe> {
    stream.write_all(b"PING\r\n").await?;
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        if reply.starts_with(b"-DENIED") {
            return Ok(Probe::Denied);
        }
        if reply.ends_with(b"\r\n") || reply.len() >= 4096 {
            break;
        }
        // One byte at a time once the reply is long enough to tell, so that nothing after the
        // line is consumed; the first read takes what is there.
        let want = if reply.len() >= 7 { 1 } else { buf.len() };
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            if reply.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "redis closed the connection before answering PING",
                ));
            }
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(if reply.starts_with(b"-NOAUTH") {
        Probe::NoAuth
    } else {
        Probe::Other
    })
}

/// The server, for messages: its address, or its socket's path.
fn describe(stream: &Stream) -> String {
    match stream {
        Stream::Tcp(tcp) => tcp
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
        #[cfg(unix)]
        Stream::Unix(unix) => unix
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "a unix socket".to_owned()),
    }
}

impl Connector {
    /// Protected mode refused `source`: with the fallback on, warn once; the pool sees
    /// `source()` change and redials from 127.0.0.1.
    fn protected_mode(&self, source: IpAddr, target: SocketAddr) {
        if self.fallback_to_localhost && !self.denied.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %target,
                refused = %source,
                "redis is in protected mode and refuses sources other than 127.0.0.1; \
                 falling back to 127.0.0.1 for this pool, which has one address's ports. \
                 Set a password or `protected-mode no` (on a loopback-only bind) to spread."
            );
        }
    }
}

impl crate::Connector for Connector {
    type Conn = MultiplexedConnection;
    type Error = Error;

    async fn connect(&self, mut stream: Stream) -> Result<MultiplexedConnection, Error> {
        let target = describe(&stream);
        let auth = |problem| Error::Auth {
            target: target.clone(),
            user: self.info.username().map(str::to_owned),
            problem,
        };
        let tcp = match &stream {
            Stream::Tcp(tcp) => Some((tcp.local_addr()?.ip(), tcp.peer_addr()?)),
            #[cfg(unix)]
            Stream::Unix(_) => None,
        };
        // Without a password, a PING first: redis-rs would report protected mode as a broken
        // pipe and a required password only at the first command.
        if self.info.password().is_none() {
            match probe(&mut stream).await? {
                Probe::NoAuth => return Err(auth(AuthProblem::Required)),
                Probe::Denied => {
                    let Some((source, target)) = tcp else {
                        return Err(Error::Io(io::Error::other(
                            "redis refused the connection (-DENIED)",
                        )));
                    };
                    self.protected_mode(source, target);
                    return Err(Error::ProtectedMode { source, target });
                }
                Probe::Other => {}
            }
        }
        self.handshake(stream).await.map_err(|e| match e {
            Error::Redis(r) if r.kind() == rs::ErrorKind::AuthenticationFailed => {
                auth(AuthProblem::Rejected)
            }
            Error::Redis(r) if r.to_string().contains("DENIED") => match tcp {
                Some((source, target)) => Error::ProtectedMode { source, target },
                None => Error::Redis(r),
            },
            e => e,
        })
    }

    /// 127.0.0.1 once protected mode refused a spread source and the fallback is on.
    fn source(&self) -> Option<IpAddr> {
        (self.fallback_to_localhost && self.denied.load(Ordering::Relaxed))
            .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Nothing to peek at (the driver task owns the socket); a connection that died since its
    /// last use fails its next command, which the caller sees anyway.
    fn peek(&self, _: &mut MultiplexedConnection) -> Option<Result<(), Error>> {
        Some(Ok(()))
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
