//! The platform probe, run once when a dialer is built: which socket options the OS has, and
//! whether it routes the source set (macOS routes only 127.0.0.1 without aliases).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::sockopt;
use super::source::{Class, SourceSet};
use crate::error::ConfigError;

/// What [`DialerBuilder::build`](crate::DialerBuilder::build) does when the platform does not route the source set, as on
/// macOS, which routes only 127.0.0.1 unless aliases are added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Dial from 127.0.0.1 alone and log one warning at build time. The default: the dialer
    /// keeps working, with the port budget of a plain `connect`.
    #[default]
    Localhost,
    /// Fail the build with a [`ConfigError`] that says how to add the aliases.
    Fail,
}

pub(super) struct ProbedOptions {
    pub(super) no_port: bool,
}

/// Checks that the OS has the socket options asked for.
pub(super) fn probe_options(
    sources: &SourceSet,
    no_port: bool,
    port_range: Option<(u16, u16)>,
) -> Result<ProbedOptions, ConfigError> {
    let domain =
        if sources.class(Class::V4Loopback).len() > 0 || sources.class(Class::V4Other).len() > 0 {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| {
        ConfigError::new("sources", "could not create a socket to probe the platform")
            .with_source(e)
    })?;
    let no_port = no_port
        && match sockopt::set_bind_address_no_port(&socket, true) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "IP_BIND_ADDRESS_NO_PORT is unavailable; binding without it");
                false
            }
        };
    if let Some((lo, hi)) = port_range {
        sockopt::set_local_port_range(&socket, lo, hi).map_err(|e| {
            ConfigError::new(
                "local_port_range",
                "this OS does not support IP_LOCAL_PORT_RANGE (Linux 6.3+); leave it unset",
            )
            .with_source(e)
        })?;
    }
    Ok(ProbedOptions { no_port })
}

/// Binds a few members of the set to check that the host routes them, and applies the fallback
/// policy if it does not. Sends no packet.
///
/// `bind` binds one address without connecting; tests pass a stand-in for platforms that do not
/// route all of 127.0.0.0/8.
pub(super) fn probe_routes(
    sources: SourceSet,
    fallback: Fallback,
    bind: impl Fn(IpAddr) -> io::Result<()>,
) -> Result<(SourceSet, bool), ConfigError> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for class in [Class::V4Loopback, Class::V4Other, Class::V6Other] {
        let blocks = sources.class(class);
        let len = blocks.len();
        // The first two, middle and last members: enough to catch a platform that routes only
        // 127.0.0.1 (then 127.0.0.2, the usual first alias, is named), or only a few aliases of
        // a wide block.
        let mut probes: Vec<IpAddr> = [0, 1, len / 2, len.saturating_sub(1)]
            .into_iter()
            .filter_map(|i| blocks.get(i))
            .filter(|&ip| ip != localhost)
            .collect();
        probes.dedup();
        for ip in probes {
            let Err(e) = bind(ip) else {
                continue;
            };
            let unroutable = e.raw_os_error() == Some(libc::EADDRNOTAVAIL);
            if !unroutable {
                return Err(ConfigError::new(
                    "sources",
                    format!("could not probe source address {ip}"),
                )
                .with_source(e));
            }
            if class != Class::V4Loopback {
                return Err(ConfigError::new(
                    "sources",
                    format!("{ip} is not an address of this host; list only assigned addresses"),
                )
                .with_source(e));
            }
            return match fallback {
                Fallback::Fail => Err(ConfigError::new(
                    "sources",
                    format!(
                        "this host does not route {ip}: only some loopback addresses are \
                         configured (macOS routes only 127.0.0.1 by default); add aliases, e.g. \
                         `sudo ifconfig lo0 alias {ip} up` for each source, or use \
                         Fallback::Localhost"
                    ),
                )
                .with_source(e)),
                Fallback::Localhost => {
                    tracing::warn!(
                        unroutable = %ip,
                        sources = %sources,
                        "this host does not route the loopback source set; dialing from \
                         127.0.0.1 alone, which has one address's ports (about 28,000) instead \
                         of a port range per source. On macOS add aliases with \
                         `sudo ifconfig lo0 alias <addr> up`."
                    );
                    let only_localhost = SourceSet::from_addrs([localhost])?;
                    let fallback = sources.with_class_from(Class::V4Loopback, &only_localhost);
                    Ok((fallback, true))
                }
            };
        }
    }
    Ok((sources, false))
}

/// Binds `ip` without connecting, to check that the host routes it.
pub(super) fn probe_bind(ip: IpAddr, no_port: bool) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        Type::STREAM,
        None,
    )?;
    if no_port {
        // Binds the address without reserving a port, so the probe works even while the
        // address is out of ports.
        sockopt::set_bind_address_no_port(&socket, true)?;
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that routes only 127.0.0.1 and ::1, as macOS does without aliases.
    fn macos_like(ip: IpAddr) -> io::Result<()> {
        if ip.is_loopback() && ip != IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)) && ip.is_ipv4() {
            Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
        } else {
            Ok(())
        }
    }

    #[test]
    fn unroutable_loopback_falls_back_to_localhost_by_default() {
        let (sources, fell_back) =
            probe_routes(SourceSet::loopback(), Fallback::Localhost, macos_like).unwrap();
        assert!(fell_back);
        assert_eq!(sources.len(), 1);
        assert_eq!(sources.get(0), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn fallback_keeps_ipv6_members() {
        let set: SourceSet = "127.0.0.0/24, ::1".parse().unwrap();
        let (sources, fell_back) = probe_routes(set, Fallback::Localhost, macos_like).unwrap();
        assert!(fell_back);
        assert_eq!(sources.to_string(), "127.0.0.1, ::1");
    }

    #[test]
    fn unroutable_loopback_fails_under_fallback_fail_and_says_how_to_add_aliases() {
        let err = probe_routes(SourceSet::loopback(), Fallback::Fail, macos_like).unwrap_err();
        assert_eq!(err.option(), "sources");
        let text = err.to_string();
        assert!(text.contains("does not route 127.0.0.2"), "{text}");
        assert!(
            text.contains("sudo ifconfig lo0 alias 127.0.0.2 up"),
            "{text}"
        );
        assert!(text.contains("Fallback::Localhost"), "{text}");
    }

    #[test]
    fn localhost_alone_needs_no_probe() {
        let set: SourceSet = "127.0.0.1".parse().unwrap();
        let (sources, fell_back) = probe_routes(set.clone(), Fallback::Fail, macos_like).unwrap();
        assert!(!fell_back);
        assert_eq!(sources, set);
    }

    #[test]
    fn other_probe_errors_are_reported_not_fallen_back_from() {
        let emfile = |_| Err(io::Error::from_raw_os_error(libc::EMFILE));
        let err = probe_routes(SourceSet::loopback(), Fallback::Localhost, emfile).unwrap_err();
        assert_eq!(err.option(), "sources");
        assert!(err.to_string().contains("could not probe"), "{err}");
    }
}
