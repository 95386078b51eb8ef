//! [`serve`]: the handler on a loopback listener of its own, for services without an HTTP server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::handler::Admin;

/// The most connections [`serve`] handles at once; more wait in the listener's backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a connection may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`serve`] keeps one connection, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer's address, which [`serve`] puts in each request's extensions so that the handler
/// logs who made a change. A server of your own can insert it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Serves `admin` over HTTP/1.1 on `listener` until the returned future is dropped.
///
/// Bounded: at most [`MAX_CONNECTIONS`] connections at once, 5 s to send headers, 30 s per
/// connection. An accept error (out of file descriptors) pauses accepting for 100 ms instead
/// of spinning.
///
/// # Errors
///
/// `InvalidInput` at once when the listener is not on a loopback address: the admin endpoint
/// switches production pools, so exposing it further is a decision to make with a server (and
/// authentication) of your own, mounting [`Admin`] as a service.
pub async fn serve(listener: TcpListener, admin: Admin) -> io::Result<()> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "multiloop admin: refusing to serve on {local}, which is not loopback; bind 127.0.0.1 or ::1"
            ),
        ));
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(target: "multiloop::admin", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |mut request| {
                request.extensions_mut().insert(Peer(peer));
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}
