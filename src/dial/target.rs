//! [`Target`]: where a pool connects, kept unresolved until a dial, and [`IntoTarget`], what
//! `Pool::builder` accepts.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
#[cfg(unix)]
use std::path::PathBuf;

use crate::error::ConfigError;

/// Where a pool connects: a TCP address, a host name to look up at each dial, or a unix domain
/// socket.
///
/// A host name is resolved asynchronously by the dialer, inside its connect timeout, when a
/// connection is dialed: never in `Pool::builder` and never on the caller's thread, so a silent
/// resolver costs one bounded dial, not a blocked runtime.
///
/// When the server offers a unix socket (`memcached -s PATH`, redis's `unixsocket`), it is the
/// strongest cure for port exhaustion: a unix socket uses no ports at all.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A host name and port, looked up at each dial.
    Host {
        /// The name, such as `localhost`.
        host: String,
        /// The port.
        port: u16,
    },
    /// A unix domain socket's path.
    #[cfg(unix)]
    Unix(PathBuf),
}

impl Target {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Target::Tcp(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
            #[cfg(unix)]
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What [`Pool::builder`](crate::Pool::builder) takes as a target: a [`SocketAddr`], an
/// `(IpAddr, u16)` or `(&str, u16)` pair, a `"host:port"` string, or a [`Target`]. Nothing is
/// resolved here.
pub trait IntoTarget {
    /// The target, or a [`ConfigError`] naming `target` when the text is not `host:port`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `target` for text without a port, or with a port that is not a
    /// number from 1 to 65,535.
    fn into_target(self) -> Result<Target, ConfigError>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target, ConfigError> {
        Ok(self)
    }
}

impl IntoTarget for SocketAddr {
    fn into_target(self) -> Result<Target, ConfigError> {
        Ok(Target::Tcp(self))
    }
}

impl IntoTarget for (IpAddr, u16) {
    fn into_target(self) -> Result<Target, ConfigError> {
        Ok(Target::Tcp(self.into()))
    }
}

impl IntoTarget for (&str, u16) {
    fn into_target(self) -> Result<Target, ConfigError> {
        host_port(self.0, self.1)
    }
}

impl IntoTarget for (String, u16) {
    fn into_target(self) -> Result<Target, ConfigError> {
        host_port(&self.0, self.1)
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target, ConfigError> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return Ok(Target::Tcp(addr));
        }
        let bad = |why: &str| {
            // The text is not echoed whole: a target may come from configuration.
            ConfigError::new("target", format!("not host:port ({why})"))
        };
        let (host, port) = self.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        host_port(host, port)
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target, ConfigError> {
        self.as_str().into_target()
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target, ConfigError> {
        self.as_str().into_target()
    }
}

fn host_port(host: &str, port: u16) -> Result<Target, ConfigError> {
    if port == 0 {
        return Err(ConfigError::new("target", "port 0 cannot be dialed"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.len() > 253 {
        return Err(ConfigError::new(
            "target",
            "the host name is empty or longer than 253 characters",
        ));
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => Target::Tcp(SocketAddr::new(ip, port)),
        Err(_) => Target::Host {
            host: host.to_string(),
            port,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_without_resolving() {
        assert_eq!(
            "127.0.0.1:11211".into_target().unwrap(),
            Target::Tcp("127.0.0.1:11211".parse().unwrap())
        );
        assert_eq!(
            "localhost:6379".into_target().unwrap(),
            Target::Host {
                host: "localhost".into(),
                port: 6379
            }
        );
        assert_eq!(
            ("::1", 80).into_target().unwrap(),
            Target::Tcp("[::1]:80".parse().unwrap())
        );
        for bad in ["localhost", "localhost:x", "localhost:0", ":80", "h:70000"] {
            let err = bad.into_target().unwrap_err();
            assert_eq!(err.option(), "target", "{bad}");
        }
    }
}
