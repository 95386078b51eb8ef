//! [`serve`]: the handler on a loopback listener of its own, for services without an HTTP server.
//!
//! Built so that no number of idle, slow or keep-alive clients keeps a responder out:
//!
//! - the accept loop never waits for a free slot: it always accepts, and when every slot is
//!   taken it evicts the connection that has waited longest for a request (neither answering
//!   one nor authorized), so a new connection that sends its request at once is served;
//! - a connection without the admin token gets one answer and is closed (`Connection: close`),
//!   so polling clients cannot hold slots between requests;
//! - a connection has 2 s to send each request's headers, including the first, and at most
//!   [`MAX_REQUESTS_PER_CONNECTION`] requests and 30 s in all.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use slab::Slab;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::handler::Admin;

/// The most connections [`serve`] keeps at once. Past it, a new connection evicts the one
/// that has waited longest for a request; authorized connections and requests being answered
/// are never evicted.
pub const MAX_CONNECTIONS: usize = 64;

/// The most requests one connection makes before it is closed.
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 100;

/// How long a connection may take to send a request's headers, counted from the connection or
/// from the previous answer: an idle keep-alive connection is closed after this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`serve`] keeps one connection, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request head read, in bytes (hyper's minimum).
const MAX_HEAD: usize = 8192;

/// The peer's address, which [`serve`] puts in each request's extensions so that the handler
/// logs who made a change. A server of your own can insert it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Serves `admin` over HTTP/1.1 on `listener` until the returned future is dropped.
///
/// Bounded, and kept open for responders: at most [`MAX_CONNECTIONS`] connections, the one
/// waiting longest for a request evicted when a new one arrives; 2 s to send each request's
/// headers; one answer for a request without the admin token, then the connection closes;
/// at most [`MAX_REQUESTS_PER_CONNECTION`] requests and 30 s per connection. An accept error
/// (out of file descriptors) pauses accepting for 100 ms instead of spinning.
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
    let table = Arc::new(Table::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(target: "multiloop::admin", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(seat) = table.admit() else {
            // Every slot answers a request or holds an authorized client: this one waits for
            // none of them, and its client may try again.
            drop(stream);
            continue;
        };
        tokio::spawn(connection(stream, peer, admin.clone(), seat));
    }
}

/// One connection, until it ends, is evicted, or reaches its time.
async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, admin: Admin, seat: Seat) {
    let requests = Arc::new(AtomicU32::new(0));
    let service = {
        let seat = seat.clone();
        service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let (admin, seat, requests) = (admin.clone(), seat.clone(), requests.clone());
            async move {
                request.extensions_mut().insert(Peer(peer));
                let trusted = admin.authorized(request.headers()) == Ok(true);
                seat.busy(trusted);
                let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
                let mut response = admin.handle(request).await;
                if !trusted || n >= MAX_REQUESTS_PER_CONNECTION {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                seat.idle();
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = seat.evicted.notified() => {}
        () = tokio::time::sleep(CONNECTION_TIMEOUT) => {}
    }
    seat.leave();
}

/// The connections being served, for choosing which to evict.
#[derive(Default)]
struct Table {
    seats: Mutex<Slab<State>>,
}

struct State {
    /// When the connection last began to wait for a request; `None` while one is answered.
    waiting_since: Option<Instant>,
    /// Whether its last request carried the admin token.
    trusted: bool,
    evicted: Arc<Notify>,
}

/// A connection's place in the [`Table`].
#[derive(Clone)]
struct Seat {
    table: Arc<Table>,
    key: usize,
    evicted: Arc<Notify>,
}

impl Table {
    /// A seat for a new connection, evicting the one that has waited longest for a request
    /// when all are taken; `None` when none can be evicted.
    fn admit(self: &Arc<Self>) -> Option<Seat> {
        let mut seats = self.seats.lock().unwrap_or_else(|e| e.into_inner());
        if seats.len() >= MAX_CONNECTIONS {
            let victim = seats
                .iter()
                .filter(|(_, s)| !s.trusted)
                .filter_map(|(key, s)| s.waiting_since.map(|since| (since, key)))
                .min()
                .map(|(_, key)| key)?;
            let state = seats.remove(victim);
            // The evicted task ends at its next poll; its seat is free now.
            state.evicted.notify_one();
            tracing::debug!(target: "multiloop::admin", "all connections taken: closed the one idle longest");
        }
        let evicted = Arc::new(Notify::new());
        let key = seats.insert(State {
            waiting_since: Some(Instant::now()),
            trusted: false,
            evicted: evicted.clone(),
        });
        Some(Seat {
            table: self.clone(),
            key,
            evicted,
        })
    }
}

impl Seat {
    /// Runs `f` on this connection's state, if it still holds its seat.
    fn with(&self, f: impl FnOnce(&mut State)) {
        let mut seats = self.table.seats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = seats.get_mut(self.key)
            && Arc::ptr_eq(&state.evicted, &self.evicted)
        {
            f(state);
        }
    }

    fn busy(&self, trusted: bool) {
        self.with(|s| {
            s.waiting_since = None;
            s.trusted = trusted;
        });
    }

    fn idle(&self) {
        self.with(|s| s.waiting_since = Some(Instant::now()));
    }

    fn leave(&self) {
        let mut seats = self.table.seats.lock().unwrap_or_else(|e| e.into_inner());
        if seats
            .get(self.key)
            .is_some_and(|s| Arc::ptr_eq(&s.evicted, &self.evicted))
        {
            seats.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_longest_waiting_untrusted_seat_and_never_a_busy_or_trusted_one() {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let table = Arc::new(Table::default());
                let mut seats: Vec<Seat> = Vec::new();
                for _ in 0..MAX_CONNECTIONS {
                    seats.push(table.admit().unwrap());
                    tokio::time::advance(Duration::from_millis(1)).await;
                }
                seats[0].busy(false);
                seats[1].busy(true);
                seats[1].idle();
                // Seat 2 is now the longest waiting, untrusted and idle.
                let new = table.admit().unwrap();
                assert_eq!(new.key, seats[2].key, "seat 2's slot was reused");
                seats[2].leave(); // The evicted task's exit does not free the new seat.
                assert_eq!(table.seats.lock().unwrap().len(), MAX_CONNECTIONS);
                // Nothing can be evicted when every seat is busy or trusted.
                for seat in &seats[3..] {
                    seat.busy(false);
                }
                new.busy(false);
                assert!(table.admit().is_none());
                seats[0].idle();
                assert!(table.admit().is_some(), "an idle seat is evictable again");
            });
    }
}
