//! The dialer as a service for hyper and tonic: `tower_service::Service<http::Uri>`.
//!
//! hyper-util's legacy `Client` and tonic's `Endpoint::connect_with_connector` take any
//! `Service<Uri>` whose response is a readable, writable connection. [`Dialer`] is one, so HTTP
//! and gRPC clients to local services dial from spread sources too:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! let dialer = multiloop::Dialer::builder().build()?;
//! let client: Client<_, String> = Client::builder(TokioExecutor::new()).build(dialer);
//! let response = client.get("http://127.0.0.1:8080/health".parse()?).await?;
//! # drop(response);
//! # Ok(())
//! # }
//! ```
//!
//! With tonic (feature `transport`), the same dialer goes to the channel's endpoint:
//!
//! ```text
//! let dialer = multiloop::Dialer::builder().build()?;
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
//!     .connect_with_connector(dialer)
//!     .await?;
//! ```
//!
//! Any URI's host and port is dialed over plain TCP (port 80 for `http`, 443 for `https` when the
//! URI has none), as hyper-util's `HttpConnector` does with `enforce_http(false)`; TLS, where the
//! scheme asks for it, is a connector layered on top.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::dial::Dialer;
use crate::error::{DialError, DialErrorKind};

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, DialError>> + Send>>;

    /// Always ready: the dialer has no queue of its own.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    /// Dials the URI's host and port (80 for `http`, 443 for `https` when the URI has none).
    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.clone();
        Box::pin(async move {
            let (host, port) = host_and_port(&uri)?;
            let stream = dialer.connect_host(&host, port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

fn host_and_port(uri: &Uri) -> Result<(String, u16), DialError> {
    let bad = |why: &str| {
        DialError::new(
            DialErrorKind::Io,
            None,
            Vec::new(),
            0,
            io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {why}")),
        )
    };
    let host = uri.host().ok_or_else(|| bad("the URI has no host"))?;
    // IPv6 literals come bracketed: "[::1]".
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some("http")) | (None, None) => 80,
        (None, Some(other)) => return Err(bad(&format!("no default port for scheme {other}"))),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_from_uris() {
        let cases = [
            ("http://127.0.0.1:8080/x", ("127.0.0.1", 8080)),
            ("http://127.0.0.1/", ("127.0.0.1", 80)),
            ("https://localhost/", ("localhost", 443)),
            ("http://[::1]:9000", ("::1", 9000)),
        ];
        for (uri, (host, port)) in cases {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(host_and_port(&uri).unwrap(), (host.to_string(), port));
        }
        let err = host_and_port(&"/path-only".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no host"), "{err}");
    }
}
