//! [`DialerConfig`]: every option of a dialer as a documented field with its default, and the
//! one validation every value goes through.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::probe::Fallback;
use super::source::{SourceSet, Strategy};
use crate::error::{ConfigError, check_duration};
use crate::telemetry::ports;

/// Every option of a dialer, with its default. [`DialerBuilder`](crate::DialerBuilder) sets
/// these one by one, or all at once with [`DialerBuilder::config`](crate::DialerBuilder::config).
///
/// Bounds, checked by [`validate`](DialerConfig::validate) (which
/// [`DialerBuilder::build`](crate::DialerBuilder::build) runs first), each failure a
/// [`ConfigError`] naming the field: every duration at most
/// [`ConfigError::MAX_DURATION`] (24 h), other bounds as documented on each field and in the
/// associated constants.
///
/// ```
/// use std::time::Duration;
///
/// let mut config = multiloop::DialerConfig::default();
/// config.sources = "127.0.0.0/16".parse()?;
/// config.connect_timeout = Duration::from_millis(500);
/// let dialer = multiloop::Dialer::builder().config(config).build()?;
/// assert_eq!(dialer.connect_timeout(), Duration::from_millis(500));
/// assert_eq!(dialer.sources().len(), 65_534);
/// # Ok::<(), multiloop::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DialerConfig {
    /// The source addresses to bind. Default: [`SourceSet::loopback()`], all of 127.0.0.0/8.
    pub sources: SourceSet,
    /// How to walk the sources. Default: [`Strategy::RoundRobin`].
    pub strategy: Strategy,
    /// The time one [`Dialer::connect`](crate::Dialer::connect) call may take, name lookup and
    /// retries included. Default: 2 s. A loopback handshake takes microseconds; it only takes
    /// longer when the server's accept backlog is full, and then Linux retransmits the SYN
    /// after 1 s: 2 s allows one retransmit and still fails fast enough that callers do not
    /// pile up behind a stalled server. Greater than zero.
    pub connect_timeout: Duration,
    /// Sets `TCP_NODELAY` on every connection. Default: `true`, since cache protocols send
    /// small requests and wait for the answer, which Nagle's algorithm would delay.
    pub nodelay: bool,
    /// TCP keepalive's idle time before the first probe. Default: `None`, off; a pool's
    /// liveness checks find dead peers on loopback sooner. Greater than zero, at most
    /// [`MAX_KEEPALIVE`](Self::MAX_KEEPALIVE).
    pub keepalive: Option<Duration>,
    /// Sets `IP_BIND_ADDRESS_NO_PORT` before binding (Linux 4.2+). Default: `true`. With it,
    /// the kernel picks the source port at `connect` by the full 4-tuple, as a plain `connect`
    /// does; without it, `bind` reserves a port per address, cannot reuse a TIME_WAIT pair and
    /// is slower under churn. Where the OS lacks the option the dialer binds without it.
    pub bind_address_no_port: bool,
    /// Limits every socket's ephemeral ports to this range, inclusive, with
    /// `IP_LOCAL_PORT_RANGE` (Linux 6.3+). Default: `None`, the system's
    /// `net.ipv4.ip_local_port_range`.
    ///
    /// Mostly for tests and demonstrations: with 50 ports per address, exhaustion takes 50
    /// dials instead of 28,232. Not empty, not starting at 0, and within the system range, or
    /// the kernel would ignore it.
    pub local_port_range: Option<RangeInclusive<u16>>,
    /// The most sockets one [`Dialer::connect`](crate::Dialer::connect) call tries, each from
    /// another source, when sources run out of ports. Default: 4, enough to step past a few
    /// exhausted sources without turning one dial into a storm when every source is
    /// exhausted. From 1 (the first attempt counts) to [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS).
    pub max_attempts: u32,
    /// How long a source that ran out of ports is skipped. Default: 60 s, one TIME_WAIT period
    /// on Linux. Zero turns quarantine off. At most 4,096 addresses are held at once.
    pub quarantine: Duration,
    /// What [`build`](crate::DialerBuilder::build) does when the platform does not route the
    /// source set. Default: [`Fallback::Localhost`].
    pub fallback: Fallback,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            sources: SourceSet::loopback(),
            strategy: Strategy::default(),
            connect_timeout: Duration::from_secs(2),
            nodelay: true,
            keepalive: None,
            bind_address_no_port: true,
            local_port_range: None,
            max_attempts: 4,
            quarantine: Duration::from_secs(60),
            fallback: Fallback::default(),
        }
    }
}

impl DialerConfig {
    /// The largest [`max_attempts`](Self::max_attempts): 64 sockets for one dial.
    pub const MAX_ATTEMPTS: u32 = 64;

    /// The longest [`keepalive`](Self::keepalive) Linux takes (`TCP_KEEPIDLE`): 32,767 s.
    pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);

    /// Checks every field against its bounds. It reads the system's port range
    /// (`/proc/sys/net/ipv4/ip_local_port_range`) when `local_port_range` is set, and probes
    /// nothing else: [`DialerBuilder::build`](crate::DialerBuilder::build) then probes the
    /// platform.
    ///
    /// ```
    /// let mut config = multiloop::DialerConfig::default();
    /// config.max_attempts = 0;
    /// assert_eq!(config.validate().unwrap_err().option(), "max_attempts");
    /// ```
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`], naming the field and its bound: `connect_timeout` of zero or
    /// above 24 h, `keepalive` of zero or above [`MAX_KEEPALIVE`](Self::MAX_KEEPALIVE),
    /// `max_attempts` of zero or above [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS), `quarantine`
    /// above 24 h, or a `local_port_range` that is empty, starts at 0 or lies outside the
    /// system range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration("connect_timeout", self.connect_timeout, false)?;
        check_duration("quarantine", self.quarantine, true)?;
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!(
                    "{} is out of range: it must be at least 1 (the first attempt counts) and at \
                     most {}",
                    self.max_attempts,
                    Self::MAX_ATTEMPTS
                ),
            ));
        }
        if let Some(k) = self.keepalive
            && (k.is_zero() || k > Self::MAX_KEEPALIVE)
        {
            return Err(ConfigError::new(
                "keepalive",
                format!(
                    "{k:?} is out of range: the idle time before the first probe must be greater \
                     than zero and at most {} s (TCP_KEEPIDLE's limit)",
                    Self::MAX_KEEPALIVE.as_secs()
                ),
            ));
        }
        if let Some(range) = &self.local_port_range {
            check_port_range(range)?;
        }
        Ok(())
    }
}

fn check_port_range(range: &RangeInclusive<u16>) -> Result<(), ConfigError> {
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
    Ok(())
}
