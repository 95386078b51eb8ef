//! Every ConfigError path names the option at fault and says what to change.

use std::time::Duration;

use multiloop::{Dialer, DialerBuilder, SourceSet};

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
