//! [`DialerBuilder`]: a [`DialerConfig`] set option by option; `build` validates it once,
//! probes the platform and makes the dialer.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::config::DialerConfig;
use super::dialer::{Dialer, Options};
use super::probe::{Fallback, probe_bind, probe_options, probe_routes};
use super::source::{SourceSet, Strategy};
use crate::error::ConfigError;

/// Configures a [`Dialer`]. Made by [`Dialer::builder`]. Each option is a field of
/// [`DialerConfig`], where its default and bounds are documented; invalid values are reported
/// by [`build`](DialerBuilder::build), which names the option.
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct DialerBuilder {
    config: DialerConfig,
}

impl Dialer {
    /// A builder with every option at its default.
    pub fn builder() -> DialerBuilder {
        DialerBuilder::default()
    }
}

impl DialerBuilder {
    /// Every option at once, replacing those set so far.
    pub fn config(mut self, config: DialerConfig) -> Self {
        self.config = config;
        self
    }

    setters! {
        /// [`DialerConfig::sources`]: the source addresses to bind.
        sources: SourceSet;
        /// [`DialerConfig::strategy`]: how to walk the sources.
        strategy: Strategy;
        /// [`DialerConfig::connect_timeout`]: the time one `connect` may take, in all.
        connect_timeout: Duration;
        /// [`DialerConfig::nodelay`]: `TCP_NODELAY` on every connection.
        nodelay: bool;
        /// [`DialerConfig::bind_address_no_port`]: `IP_BIND_ADDRESS_NO_PORT` before binding.
        bind_address_no_port: bool;
        /// [`DialerConfig::max_attempts`]: the most sockets one `connect` tries.
        max_attempts: u32;
        /// [`DialerConfig::quarantine`]: how long a source out of ports is skipped.
        quarantine: Duration;
        /// [`DialerConfig::fallback`]: what to do when the platform does not route the sources.
        fallback: Fallback;
    }

    /// [`DialerConfig::keepalive`]: enables TCP keepalive with this idle time before the first
    /// probe.
    pub fn keepalive(mut self, idle: Duration) -> Self {
        self.config.keepalive = Some(idle);
        self
    }

    /// [`DialerConfig::local_port_range`]: limits every socket's ephemeral ports to `range`,
    /// inclusive (Linux 6.3+).
    pub fn local_port_range(mut self, range: RangeInclusive<u16>) -> Self {
        self.config.local_port_range = Some(range);
        self
    }

    /// Validates the options, probes the platform and builds the dialer.
    ///
    /// The probe binds (without connecting) a few members of the source set other than
    /// 127.0.0.1, and checks that the OS has the socket options asked for. It sends no packet.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option at fault and its bound (see
    /// [`DialerConfig::validate`]); naming `local_port_range` when the OS does not support
    /// it, or `sources` when the host does not route them under [`Fallback::Fail`].
    pub fn build(self) -> Result<Dialer, ConfigError> {
        let config = self.config;
        config.validate()?;
        let port_range = config
            .local_port_range
            .map(|range| (*range.start(), *range.end()));
        let probe = probe_options(&config.sources, config.bind_address_no_port, port_range)?;
        let (sources, fell_back) = probe_routes(config.sources, config.fallback, |ip| {
            probe_bind(ip, probe.no_port)
        })?;
        Ok(Dialer::new(Options {
            sources,
            strategy: config.strategy,
            connect_timeout: config.connect_timeout,
            nodelay: config.nodelay,
            keepalive: config.keepalive,
            no_port: probe.no_port,
            port_range,
            max_attempts: config.max_attempts,
            quarantine: config.quarantine,
            fell_back,
        }))
    }
}
