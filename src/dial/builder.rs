//! The dialer's options, their defaults and their one validation.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::dialer::{Dialer, Options};
use super::probe::{Fallback, probe_bind, probe_options, probe_routes};
use super::source::SourceSet;
use super::source::Strategy;
use crate::error::{ConfigError, check_duration};
use crate::telemetry::ports;

/// The most sockets one dial may try, [`DialerBuilder::max_attempts`]'s bound.
pub const MAX_ATTEMPTS: u32 = 64;

/// The longest keepalive idle time Linux takes (`TCP_KEEPIDLE`): 32,767 s.
const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);

/// Default for [`DialerBuilder::connect_timeout`]: 2 s.
///
/// A loopback handshake takes microseconds. It only takes longer when the server's accept
/// backlog is full, and then Linux retransmits the SYN after 1 s: 2 s allows one retransmit and
/// still fails fast enough that callers do not pile up behind a stalled server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default for [`DialerBuilder::max_attempts`]: 4, enough to step past a few exhausted sources
/// without turning one dial into a storm when every source is exhausted.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

/// Default for [`DialerBuilder::quarantine`]: 60 s, one TIME_WAIT period on Linux.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(60);

/// Configures a [`Dialer`]. Made by [`Dialer::builder`].
///
/// Every option has a finite default; see each method. Invalid values are reported by
/// [`build`](DialerBuilder::build), which names the option.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct DialerBuilder {
    sources: SourceSet,
    strategy: Strategy,
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    bind_address_no_port: bool,
    local_port_range: Option<RangeInclusive<u16>>,
    max_attempts: u32,
    quarantine: Duration,
    fallback: Fallback,
}

impl Default for DialerBuilder {
    fn default() -> Self {
        DialerBuilder {
            sources: SourceSet::loopback(),
            strategy: Strategy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            nodelay: true,
            keepalive: None,
            bind_address_no_port: true,
            local_port_range: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            quarantine: DEFAULT_QUARANTINE,
            fallback: Fallback::default(),
        }
    }
}

impl Dialer {
    /// A builder with every option at its default.
    pub fn builder() -> DialerBuilder {
        DialerBuilder::default()
    }
}

impl DialerBuilder {
    /// The source addresses to bind. Default: [`SourceSet::loopback()`], all of 127.0.0.0/8.
    pub fn sources(mut self, sources: SourceSet) -> Self {
        self.sources = sources;
        self
    }

    /// How to walk the sources. Default: [`Strategy::RoundRobin`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The time one [`Dialer::connect`] call may take, name lookup and retries included.
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`]. Greater than zero, at most 24 h.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on every connection. Default: on, since cache protocols send small
    /// requests and wait for the answer, which Nagle's algorithm would delay.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Enables TCP keepalive with this idle time before the first probe. Default: off; a pool's
    /// liveness checks find dead peers on loopback sooner. Greater than zero, at most 32,767 s.
    pub fn keepalive(mut self, idle: Duration) -> Self {
        self.keepalive = Some(idle);
        self
    }

    /// Sets `IP_BIND_ADDRESS_NO_PORT` before binding (Linux 4.2+). Default: on. With it, the
    /// kernel picks the source port at `connect` by the full 4-tuple, as a plain `connect` does;
    /// without it, `bind` reserves a port per address, cannot reuse a TIME_WAIT pair and is
    /// slower under churn. Where the OS lacks the option the dialer binds without it.
    pub fn bind_address_no_port(mut self, on: bool) -> Self {
        self.bind_address_no_port = on;
        self
    }

    /// Limits every socket's ephemeral ports to `range`, inclusive, with `IP_LOCAL_PORT_RANGE`
    /// (Linux 6.3+). Default: unset, the system's `net.ipv4.ip_local_port_range`.
    ///
    /// Mostly for tests and demonstrations: with 50 ports per address, exhaustion takes 50 dials
    /// instead of 28,232. The range must lie within the system range, or the kernel ignores it.
    pub fn local_port_range(mut self, range: RangeInclusive<u16>) -> Self {
        self.local_port_range = Some(range);
        self
    }

    /// The most sockets one [`Dialer::connect`] call tries, each from another source, when
    /// sources run out of ports. Default: [`DEFAULT_MAX_ATTEMPTS`]. From 1 to [`MAX_ATTEMPTS`].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How long a source that ran out of ports is skipped. Default: [`DEFAULT_QUARANTINE`].
    /// `Duration::ZERO` turns quarantine off; at most 24 h. At most 4,096 addresses are held at
    /// once.
    pub fn quarantine(mut self, duration: Duration) -> Self {
        self.quarantine = duration;
        self
    }

    /// What to do when the platform does not route the source set. Default:
    /// [`Fallback::Localhost`].
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Validates the options, probes the platform and builds the dialer.
    ///
    /// The probe binds (without connecting) a few members of the source set other than
    /// 127.0.0.1, and checks that the OS has the socket options asked for. It sends no packet.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option at fault and its bound: `connect_timeout` of zero or
    /// above 24 h, `keepalive` of zero or above 32,767 s, `max_attempts` of zero or above
    /// [`MAX_ATTEMPTS`], `quarantine` above 24 h, a `local_port_range` that is empty, starts at
    /// 0, lies outside the system range or is not supported by the OS, or `sources` that the
    /// host does not route under [`Fallback::Fail`].
    pub fn build(self) -> Result<Dialer, ConfigError> {
        check_duration("connect_timeout", self.connect_timeout, false)?;
        check_duration("quarantine", self.quarantine, true)?;
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!(
                    "{} is out of range: it must be at least 1 (the first attempt counts) and at \
                     most {MAX_ATTEMPTS}",
                    self.max_attempts
                ),
            ));
        }
        if let Some(k) = self.keepalive
            && (k.is_zero() || k > MAX_KEEPALIVE)
        {
            return Err(ConfigError::new(
                "keepalive",
                format!(
                    "{k:?} is out of range: the idle time before the first probe must be greater \
                     than zero and at most {} s (TCP_KEEPIDLE's limit)",
                    MAX_KEEPALIVE.as_secs()
                ),
            ));
        }
        let port_range = match &self.local_port_range {
            Some(range) => Some(check_port_range(range)?),
            None => None,
        };
        let probe = probe_options(&self.sources, self.bind_address_no_port, port_range)?;
        let (sources, fell_back) = probe_routes(self.sources, self.fallback, |ip| {
            probe_bind(ip, probe.no_port)
        })?;
        Ok(Dialer::new(Options {
            sources,
            strategy: self.strategy,
            connect_timeout: self.connect_timeout,
            nodelay: self.nodelay,
            keepalive: self.keepalive,
            no_port: probe.no_port,
            port_range,
            max_attempts: self.max_attempts,
            quarantine: self.quarantine,
            fell_back,
        }))
    }
}

fn check_port_range(range: &RangeInclusive<u16>) -> Result<(u16, u16), ConfigError> {
    let (lo, hi) = (*range.start(), *range.end());
    if lo > hi {
        return Err(ConfigError::new(
            "local_port_range",
            format!("{lo}..={hi} is empty: the low port is above the high port"),
        ));
    }
    if lo == 0 {
        return Err(ConfigError::new(
            "local_port_range",
            "port 0 is not an ephemeral port; start the range at 1 or above",
        ));
    }
    // The kernel applies each bound only if it lies within the system range, and silently
    // ignores it otherwise. Refuse instead of letting the setting do nothing.
    if let Ok(system) = ports::local_port_range()
        && !(system.contains(&lo) && system.contains(&hi))
    {
        return Err(ConfigError::new(
            "local_port_range",
            format!(
                "{lo}..={hi} is not within net.ipv4.ip_local_port_range ({}-{}), so the \
                 kernel would ignore it; pick ports inside that range",
                system.start(),
                system.end()
            ),
        ));
    }
    Ok((lo, hi))
}
