//! A target whose name does not resolve, as a new user writes it: its own error kind, naming
//! the host and the fix, counted, and logged once per window without an empty field.

mod support;

use multiloop::{DialErrorKind, Pool, PoolError};

const HOST: &str = "no-such-host.invalid:11211";

/// On one thread, so that the capture sees every event.
#[tokio::test(flavor = "current_thread")]
async fn an_unresolvable_host_is_a_resolve_error_naming_the_host_and_the_fix() {
    let (captured, _guard) = support::logs::capture();
    let pool = Pool::builder(HOST).name("cache").build().unwrap();
    let mut errors = Vec::new();
    for _ in 0..20 {
        match pool.get().await {
            Err(PoolError::Dial(e)) => errors.push(e),
            other => panic!("expected a dial error, got {:?}", other.map(|_| ())),
        }
    }
    let first = &errors[0];
    assert_eq!(first.kind(), DialErrorKind::Resolve, "{first}");
    assert_eq!(first.host(), Some(HOST));
    let text = first.to_string();
    assert!(
        text.starts_with(&format!("name lookup failed for {HOST}")),
        "{text}"
    );
    assert!(
        text.contains("/etc/hosts") && text.contains("127.0.0.1:11211"),
        "{text}"
    );
    // Callers that fail fast on the same cause get the same words.
    assert!(
        errors
            .iter()
            .all(|e| e.kind() == DialErrorKind::Resolve && e.host() == Some(HOST))
    );

    let stats = pool.dialer().stats();
    assert!(stats.failures.resolve >= 1, "{stats:?}");
    assert_eq!(stats.failures.io, 0, "{stats:?}");
    assert_eq!(stats.failures.total(), stats.failures.resolve);

    // Logged, not once per get; and no empty port budget beside it.
    let dial_lines: Vec<String> = captured
        .events()
        .into_iter()
        .filter(|e| e.contains("kind=\"resolve\"") || e.contains("kind=resolve"))
        .collect();
    assert!(!dial_lines.is_empty(), "{:?}", captured.events());
    assert!(dial_lines.len() <= 2, "rate-limited: {dial_lines:?}");
    for line in &dial_lines {
        assert!(!line.contains("port_budget"), "{line}");
        assert!(line.contains(HOST), "{line}");
    }

    // The drop-in names the fix too; its caller holds the name.
    let e = multiloop::connect(HOST).await.unwrap_err();
    assert_eq!(e.kind(), DialErrorKind::Resolve);
    assert!(e.to_string().contains("/etc/hosts"), "{e}");
}
