//! Every ConfigError path names the option at fault and says what to change.

use std::net::IpAddr;
use std::time::Duration;

use multiloop::{ConfigError, Dialer, DialerBuilder, DialerConfig, Fallback, SourceSet, Strategy};
use proptest::prelude::*;

fn expect_error(builder: DialerBuilder, option: &str, phrase: &str) {
    let err = builder.build().unwrap_err();
    assert_eq!(err.option(), option, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("`{option}`")), "{text}");
    assert!(text.contains(phrase), "{text} should contain {phrase:?}");
}

#[test]
fn zero_connect_timeout() {
    expect_error(
        Dialer::builder().connect_timeout(Duration::ZERO),
        "connect_timeout",
        "greater than zero",
    );
}

#[test]
fn zero_max_attempts() {
    expect_error(
        Dialer::builder().max_attempts(0),
        "max_attempts",
        "at least 1",
    );
}

#[test]
fn zero_keepalive() {
    expect_error(
        Dialer::builder().keepalive(Duration::ZERO),
        "keepalive",
        "greater than zero",
    );
}

#[test]
#[allow(clippy::reversed_empty_ranges)]
fn port_range_with_lo_above_hi() {
    expect_error(
        Dialer::builder().local_port_range(40_049..=40_000),
        "local_port_range",
        "40049..=40000 is empty",
    );
}

#[test]
fn port_range_starting_at_zero() {
    expect_error(
        Dialer::builder().local_port_range(0..=100),
        "local_port_range",
        "port 0",
    );
}

#[cfg(target_os = "linux")]
#[test]
fn port_range_outside_the_system_range() {
    let system = multiloop::ports::local_port_range().unwrap();
    if *system.start() <= 1_000 {
        println!("the system range starts below 1000; nothing to check");
        return;
    }
    expect_error(
        Dialer::builder().local_port_range(1_000..=1_049),
        "local_port_range",
        "net.ipv4.ip_local_port_range",
    );
}

#[test]
fn a_valid_port_range_is_kept() {
    let dialer = Dialer::builder()
        .local_port_range(40_000..=40_049)
        .build()
        .unwrap();
    assert_eq!(dialer.local_port_range(), Some(40_000..=40_049));
}

#[test]
fn malformed_and_non_loopback_sources() {
    let cases = [
        ("127.0.0.0/40", "prefix length"),
        ("127.0.0.1/8", "did you mean 127.0.0.0/8"),
        ("127.0.0.0/x", "prefix length"),
        ("localhost", "expected an address"),
        ("10.0.0.0/8", "not a loopback address"),
        ("192.168.1.10", "not a loopback address"),
        ("::1, 2001:db8::1", "not a loopback address"),
        (" , ", "holds no address"),
    ];
    for (input, phrase) in cases {
        let err = input.parse::<SourceSet>().unwrap_err();
        assert_eq!(err.option(), "sources", "{input}");
        assert!(err.to_string().contains(phrase), "{input}: {err}");
    }
}

#[test]
fn opted_in_sources_must_be_assigned_to_this_host() {
    // 192.0.2.0/24 is reserved for documentation: no host has it. The probe only binds, so no
    // packet goes anywhere.
    let sources = SourceSet::parse_allowing_non_loopback("192.0.2.1").unwrap();
    expect_error(
        Dialer::builder().sources(sources),
        "sources",
        "not an address of this host",
    );
}

#[test]
fn the_platform_routes_127_slash_8_here() {
    // On Linux the probe passes and the set is kept; on macOS without aliases it would fall back.
    let dialer = Dialer::builder().build().unwrap();
    if cfg!(target_os = "linux") {
        assert!(!dialer.fell_back());
        assert_eq!(dialer.sources().len(), 16_777_214);
        assert!(dialer.bind_address_no_port());
    }
}

/// Every cause in an error chain, as a chain printer (anyhow, eyre) would print it.
fn chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

#[tokio::test]
async fn errors_show_their_cause_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let dial = multiloop::connect(addr).await.unwrap_err();
    let os = dial.io_error().to_string();
    let pool = multiloop::Pool::builder(addr).build().unwrap();
    let get = pool.get().await.unwrap_err();
    let config = Dialer::builder().max_attempts(0).build().unwrap_err();
    for printed in [chain(&dial), chain(&get), chain(&config)] {
        let all = printed.join(": ");
        let times = |needle: &str| all.matches(needle).count();
        assert!(times(&os) <= 1, "the OS error appears once: {printed:#?}");
        assert!(times("connection refused") <= 1, "{printed:#?}");
    }
    assert!(chain(&dial)[0].contains(&os), "Display says what happened");
}

const NS: Duration = Duration::from_nanos(1);

/// A default config with one field changed.
fn with(change: impl FnOnce(&mut DialerConfig)) -> DialerConfig {
    let mut config = DialerConfig::default();
    change(&mut config);
    config
}

#[test]
fn dialer_config_extremes_name_their_field() {
    let day = ConfigError::MAX_DURATION;
    let cases = [
        (
            with(|c| c.connect_timeout = Duration::ZERO),
            "connect_timeout",
        ),
        (with(|c| c.connect_timeout = day + NS), "connect_timeout"),
        (
            with(|c| c.connect_timeout = Duration::MAX),
            "connect_timeout",
        ),
        (with(|c| c.quarantine = day + NS), "quarantine"),
        (with(|c| c.quarantine = Duration::MAX), "quarantine"),
        (with(|c| c.keepalive = Some(Duration::ZERO)), "keepalive"),
        (
            with(|c| c.keepalive = Some(DialerConfig::MAX_KEEPALIVE + NS)),
            "keepalive",
        ),
        (with(|c| c.keepalive = Some(Duration::MAX)), "keepalive"),
        (with(|c| c.max_attempts = 0), "max_attempts"),
        (
            with(|c| c.max_attempts = DialerConfig::MAX_ATTEMPTS + 1),
            "max_attempts",
        ),
        (with(|c| c.max_attempts = u32::MAX), "max_attempts"),
        (
            with(|c| c.local_port_range = Some(0..=0)),
            "local_port_range",
        ),
        (
            with(|c| c.local_port_range = Some(reversed(u16::MAX, 1))),
            "local_port_range",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.option(), field, "{err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        // The builder runs the same check before it probes anything.
        let err = Dialer::builder().config(config).build().unwrap_err();
        assert_eq!(err.option(), field, "{err}");
    }
}

#[test]
fn dialer_config_bounds_themselves_are_accepted() {
    let cases = [
        with(|c| c.connect_timeout = ConfigError::MAX_DURATION),
        with(|c| c.connect_timeout = NS),
        with(|c| c.quarantine = Duration::ZERO),
        with(|c| c.quarantine = ConfigError::MAX_DURATION),
        with(|c| c.keepalive = Some(NS)),
        with(|c| c.keepalive = Some(DialerConfig::MAX_KEEPALIVE)),
        with(|c| c.max_attempts = 1),
        with(|c| c.max_attempts = DialerConfig::MAX_ATTEMPTS),
    ];
    for config in cases {
        config.validate().unwrap();
        Dialer::builder().config(config).build().unwrap();
    }
}

proptest! {
    /// Any duration or count: valid exactly within the documented bounds, and an error names
    /// the field that was set.
    #[test]
    fn dialer_config_validates_any_value(
        nanos in prop_oneof![Just(0u64), 1..u64::MAX, Just(u64::MAX)],
        secs in prop_oneof![Just(0u64), 0..200_000u64, Just(u64::MAX)],
        attempts in prop_oneof![Just(0u32), 0..200u32, Just(u32::MAX)],
        which in 0..4u8,
    ) {
        let d = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        let day = ConfigError::MAX_DURATION;
        let (config, field, ok) = match which {
            0 => (with(|c| c.connect_timeout = d), "connect_timeout", !d.is_zero() && d <= day),
            1 => (with(|c| c.quarantine = d), "quarantine", d <= day),
            2 => (
                with(|c| c.keepalive = Some(d)),
                "keepalive",
                !d.is_zero() && d <= DialerConfig::MAX_KEEPALIVE,
            ),
            _ => (
                with(|c| c.max_attempts = attempts),
                "max_attempts",
                (1..=DialerConfig::MAX_ATTEMPTS).contains(&attempts),
            ),
        };
        match config.validate() {
            Ok(()) => prop_assert!(ok, "{config:?} was accepted"),
            Err(e) => {
                prop_assert!(!ok, "{config:?} was refused: {e}");
                prop_assert_eq!(e.option(), field);
            }
        }
    }
}

/// A config that differs from the default in every field.
fn every_field_changed() -> DialerConfig {
    let mut config = DialerConfig::default();
    config.sources = SourceSet::from_addrs(["127.0.0.7".parse::<IpAddr>().unwrap()]).unwrap();
    config.strategy = Strategy::Random;
    config.connect_timeout = Duration::from_millis(750);
    config.nodelay = false;
    config.keepalive = Some(Duration::from_secs(30));
    config.bind_address_no_port = false;
    config.local_port_range = None;
    config.max_attempts = 2;
    config.quarantine = Duration::from_secs(5);
    config.fallback = Fallback::Fail;
    config
}

#[tokio::test]
async fn dialer_config_replaces_every_option_set_before_it() {
    let config = every_field_changed();
    assert_ne!(config, DialerConfig::default());
    // Options set before `config` are replaced: neither the bad max_attempts nor the other
    // sources survive.
    let dialer = Dialer::builder()
        .max_attempts(0)
        .sources("127.0.0.0/16".parse().unwrap())
        .keepalive(Duration::ZERO)
        .config(config.clone())
        .build()
        .unwrap();
    assert_eq!(dialer.sources(), &config.sources);
    assert_eq!(dialer.connect_timeout(), config.connect_timeout);
    assert!(!dialer.bind_address_no_port());
    assert_eq!(dialer.local_port_range(), None);
    let shown = format!("{dialer:?}");
    for field in [
        "strategy: Random",
        "nodelay: false",
        "keepalive: Some(30s)",
        "max_attempts: 2",
    ] {
        assert!(shown.contains(field), "{shown} should show {field}");
    }
    // And the dialer uses them: every connection comes from the one configured source.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..4 {
        let stream = dialer.connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip().to_string(), "127.0.0.7");
        assert_eq!(peer, stream.local_addr().unwrap());
        assert!(!stream.nodelay().unwrap(), "nodelay: false was applied");
        drop(accepted);
    }
}

#[test]
fn setters_after_config_change_only_their_field() {
    let config = every_field_changed();
    let built = format!(
        "{:?}",
        Dialer::builder()
            .config(config.clone())
            .max_attempts(3)
            .build()
            .unwrap()
    );
    let mut expected = config;
    expected.max_attempts = 3;
    let from_config = format!("{:?}", Dialer::builder().config(expected).build().unwrap());
    assert_eq!(built, from_config);
    assert!(built.contains("max_attempts: 3"), "{built}");
}

#[test]
fn the_default_config_is_the_builder_default() {
    let a = format!("{:?}", Dialer::builder().build().unwrap());
    let b = format!(
        "{:?}",
        Dialer::builder()
            .config(DialerConfig::default())
            .build()
            .unwrap()
    );
    assert_eq!(a, b);
    let defaults = DialerConfig::default();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(2));
    assert_eq!(defaults.max_attempts, 4);
    assert_eq!(defaults.quarantine, Duration::from_secs(60));
    assert!(defaults.nodelay && defaults.bind_address_no_port);
}

/// An empty range, high bound first, as hostile input would give it.
fn reversed(lo: u16, hi: u16) -> std::ops::RangeInclusive<u16> {
    lo..=hi
}
