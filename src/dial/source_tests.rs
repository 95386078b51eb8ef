//! Tests of `SourceSet` parsing, indexing and membership.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn loopback_is_the_slash_8_less_network_and_broadcast() {
    let set = SourceSet::loopback();
    assert_eq!(set.len(), 16_777_214);
    assert_eq!(set.get(0), Some(ip("127.0.0.1")));
    assert_eq!(set.get(16_777_213), Some(ip("127.255.255.254")));
    assert_eq!(set.get(16_777_214), None);
    assert!(set.contains(ip("127.32.0.1")));
    assert!(!set.contains(ip("127.0.0.0")));
    assert!(!set.contains(ip("127.255.255.255")));
    assert!(!set.contains(ip("::1")));
    assert_eq!(SourceSet::default(), set);
}

#[test]
fn parses_cidrs_and_lists() {
    let set: SourceSet = "127.0.0.0/16".parse().unwrap();
    assert_eq!(set.len(), 65_534);
    let one: SourceSet = "127.1.2.3/32".parse().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one.get(0), Some(ip("127.1.2.3")));
    let pair: SourceSet = "127.0.0.4/31".parse().unwrap();
    assert_eq!(pair.len(), 2);
    let mixed: SourceSet = " 127.0.0.9 , 127.0.0.8/31, ::1".parse().unwrap();
    assert_eq!(mixed.len(), 3, "127.0.0.9 is merged into 127.0.0.8/31");
    assert_eq!(mixed.get(2), Some(ip("::1")));
    assert_eq!(mixed.to_string(), "127.0.0.8-127.0.0.9, ::1");
}

#[test]
fn index_walks_across_blocks_in_order() {
    let set: SourceSet = "127.0.1.0/30, 127.0.0.5, 127.0.0.7".parse().unwrap();
    let all: Vec<IpAddr> = (0..set.len()).map(|i| set.get(i).unwrap()).collect();
    assert_eq!(
        all,
        vec![
            ip("127.0.0.5"),
            ip("127.0.0.7"),
            ip("127.0.1.1"),
            ip("127.0.1.2")
        ]
    );
}

#[test]
fn explicit_lists_merge_duplicates() {
    let set = SourceSet::from_addrs([ip("127.0.0.2"), ip("127.0.0.2"), ip("127.0.0.3")]).unwrap();
    assert_eq!(set.len(), 2);
    let mapped = SourceSet::from_addrs([ip("::ffff:127.0.0.9")]).unwrap();
    assert_eq!(mapped.get(0), Some(ip("127.0.0.9")));
}

#[test]
fn refusals_name_the_option_and_the_fix() {
    let cases = [
        ("10.0.0.0/24", "not a loopback address"),
        ("127.0.0.0/33", "prefix length must be 0 to 32"),
        ("127.0.0.1/8", "did you mean 127.0.0.0/8"),
        ("0.0.0.0/0", "at most /8"),
        ("127.0.0", "expected an address"),
        ("", "holds no address"),
        ("::/64", "at most /96"),
        ("::/127", "only IPv6 loopback"),
        ("0.0.0.0", "unspecified"),
    ];
    for (input, expected) in cases {
        let err = input.parse::<SourceSet>().unwrap_err();
        assert_eq!(err.option(), "sources", "{input}");
        assert!(
            err.to_string().contains(expected),
            "{input}: {err} should contain {expected:?}"
        );
    }
    let err = SourceSet::from_addrs([ip("192.0.2.1")]).unwrap_err();
    assert!(err.to_string().contains("allowing_non_loopback"), "{err}");
    let err = SourceSet::from_addrs([]).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn non_loopback_needs_the_opt_in() {
    let set = SourceSet::parse_allowing_non_loopback("192.0.2.0/30, 127.0.0.1").unwrap();
    assert_eq!(set.len(), 3);
    assert!(!set.is_loopback_only());
    assert_eq!(set.class(Class::V4Other).len(), 2);
    assert!(SourceSet::loopback().is_loopback_only());
    let set = SourceSet::from_addrs_allowing_non_loopback([ip("2001:db8::1"), ip("2001:db8::2")])
        .unwrap();
    assert_eq!(set.class(Class::V6Other).len(), 2);
}
