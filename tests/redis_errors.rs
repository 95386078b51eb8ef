//! redis errors that name the fix: a password the server requires and the URL lacks, refused
//! credentials, and URLs that do not parse; none repeats a password or the whole URL.
#![cfg(feature = "redis")]

mod support;

use multiloop::PoolError;
use multiloop::redis::{AuthProblem, Error};

/// The error of one get through a pool built from `url`, from the dialer's default sources or,
/// with `localhost`, from 127.0.0.1 alone (which protected mode and the probe treat apart).
async fn first_error(url: &str, localhost: bool) -> PoolError<Error> {
    let mut builder = multiloop::redis::pool(url).unwrap();
    if localhost {
        let sources = multiloop::SourceSet::from_addrs(["127.0.0.1".parse().unwrap()]).unwrap();
        builder = builder.dialer(
            multiloop::Dialer::builder()
                .sources(sources)
                .build()
                .unwrap(),
        );
    }
    let pool = builder.build().unwrap();
    pool.get().await.expect_err("the server refuses")
}

#[tokio::test]
async fn a_missing_password_is_named_at_once_not_at_the_first_command() {
    let Some(server) = support::redis(&["--requirepass", "needed-pw"]) else {
        return;
    };
    for localhost in [false, true] {
        let err = first_error(&format!("redis://{}", server.addr), localhost).await;
        let PoolError::Backend(Error::Auth {
            target,
            user,
            problem,
        }) = &err
        else {
            panic!("expected Error::Auth, got {err}");
        };
        assert_eq!(*problem, AuthProblem::Required);
        assert_eq!(*target, server.addr.to_string());
        assert_eq!(*user, None);
        let message = err.to_string();
        for phrase in [
            "NOAUTH",
            "requires a password",
            "redis://:PASSWORD@HOST:PORT",
            target,
        ] {
            assert!(
                message.contains(phrase),
                "{message} should contain {phrase}"
            );
        }
    }
}

#[tokio::test]
async fn refused_credentials_name_the_user_and_never_the_password() {
    let Some(server) = support::redis(&["--requirepass", "right-pw"]) else {
        return;
    };
    for (url, user) in [
        (format!("redis://:wrong-pw-1@{}", server.addr), "default"),
        (format!("redis://bob:wrong-pw-2@{}", server.addr), "bob"),
    ] {
        let err = first_error(&url, false).await;
        assert!(
            matches!(
                &err,
                PoolError::Backend(Error::Auth {
                    problem: AuthProblem::Rejected,
                    ..
                })
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains(&format!("{user:?}")), "{message}");
        assert!(message.contains("AUTH failed"), "{message}");
        assert!(message.contains(&server.addr.to_string()), "{message}");
        assert!(!message.contains("wrong-pw") && !format!("{err:?}").contains("wrong-pw"));
    }

    // A password sent to a server that has none is refused too, and the message says so.
    let Some(open) = support::redis(&["--protected-mode", "no"]) else {
        return;
    };
    let err = first_error(&format!("redis://:stray-pw@{}", open.addr), false).await;
    let message = err.to_string();
    assert!(message.contains("remove it from the URL"), "{message}");
    assert!(!message.contains("stray-pw"), "{message}");
}

#[test]
fn bad_urls_name_the_part_at_fault_without_echoing_the_url() {
    let cases = [
        ("127.0.0.1:6379", "no scheme"),
        (
            "http://:pw-SECRET@127.0.0.1:6379",
            "scheme must be redis://",
        ),
        ("rediss://:pw-SECRET@127.0.0.1:6379", "TLS"),
        (
            "redis://:pw-SECRET@127.0.0.1:99999",
            "port must be a number",
        ),
        ("redis://:pw-SECRET@127.0.0.1:0", "port 0 cannot be dialed"),
        (
            "redis://:pw-SECRET@127.0.0.1:6379/notadb",
            "database is a number",
        ),
        ("redis://:pw-SECRET@[::1:6379", "closing bracket"),
        ("redis://", "no host"),
    ];
    for (url, phrase) in cases {
        let err = multiloop::redis::pool(url).expect_err(url);
        assert_eq!(err.option(), "url", "{url}: {err}");
        let (message, debug) = (err.to_string(), format!("{err:?}"));
        assert!(message.contains(phrase), "{url}: {message}");
        assert!(!message.contains("InvalidClientConfig"), "{url}: {message}");
        assert!(
            !message.contains("pw-SECRET") && !debug.contains("pw-SECRET"),
            "{message}"
        );
        assert!(
            url.len() < 10 || !message.contains(url),
            "the URL is not echoed: {message}"
        );
    }
}
