//! The memcached connector (public as `multiloop::memcached`, see `src/memcached.rs` for its
//! docs): [`Connector`] chooses the dialect at connect, [`Protocol`] is the connection.
//!
//! - `wire.rs`: replies read by their structure, without I/O (the part fuzzed and
//!   property-tested).
//! - `meta.rs`: the meta protocol's reply lines, for `wire.rs`.
//! - `request.rs`: requests built whole and checked before anything is queued.
//! - `protocol.rs`: the connection, its buffers and the queue of pending replies.
//! - `commands.rs`: the public commands.

mod commands;
mod error;
mod meta;
mod protocol;
mod request;
mod wire;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

pub use commands::Stored;
pub use error::Error;
pub use protocol::{Item, Protocol};
pub use request::Store;

use crate::dial::Stream;
use crate::error::ConfigError;

/// Which of memcached's protocols a [`Connector`] speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// The meta protocol where the server speaks it, else the text protocol: learned once per
    /// connector, at its first connect (see [`Connector`]).
    #[default]
    Auto,
    /// The meta protocol (memcached 1.6.10+): `mg`/`ms`/`md`/`ma`, every reply matched to its
    /// request by an opaque token, batches of quiet gets closed by `mn`.
    Meta,
    /// The text protocol (`get`/`set`/…), for servers and proxies without the meta protocol
    /// (twemproxy, memcached before 1.6.10).
    Text,
}

const UNKNOWN: u8 = 0;
const META: u8 = 1;
const TEXT: u8 = 2;

/// Pools memcached connections ([`Protocol`]).
///
/// Its check is a non-blocking peek; a connection given back mid-request is recovered (every
/// pending reply read to its end by its structure) instead of closed.
///
/// With [`Dialect::Auto`] (the default) the first connection asks the server's `version`, and,
/// for 1.6.10 or later, sends the meta no-op `mn`: `MN` means the meta protocol, `ERROR` the text
/// one. A text-only proxy in front of a 1.6 server (twemproxy forwards `version`) closes the
/// connection instead; the connector then speaks text, and the pool dials once more for that
/// connection. What it learned holds for every connection of this connector and its clones:
/// one probe, at most one connection closed by it, per connector (concurrent first connections
/// wait for that probe's answer).
#[derive(Clone, Debug)]
pub struct Connector {
    dialect: Dialect,
    max_value: usize,
    learned: Arc<AtomicU8>,
    /// Held by the one handshake that probes; the others wait for what it learns.
    probing: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Connector {
    fn default() -> Self {
        Connector {
            dialect: Dialect::Auto,
            max_value: Connector::DEFAULT_MAX_VALUE_SIZE,
            learned: Arc::new(AtomicU8::new(UNKNOWN)),
            probing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// The error of a handshake whose meta probe the server answered by closing the connection.
#[derive(Debug)]
struct ProbeClosed(Error);

impl std::fmt::Display for ProbeClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on the meta protocol's no-op (`mn`): it speaks only the text protocol, which \
             this connector uses from now on",
            self.0
        )
    }
}

impl std::error::Error for ProbeClosed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Connector {
    /// memcached's default item size limit (`-I 1m`): the default bound on a value's length.
    pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;
    /// The largest item size memcached can be run with (`-I 1024m`).
    pub const MAX_VALUE_SIZE: usize = 1 << 30;

    /// A connector with the default dialect ([`Dialect::Auto`]) and value bound (1 MiB).
    pub fn new() -> Connector {
        Connector::default()
    }

    /// Speaks `dialect` ([`Dialect::Auto`] by default).
    #[must_use]
    pub fn dialect(mut self, dialect: Dialect) -> Connector {
        self.dialect = dialect;
        self
    }

    /// The longest value a reply may declare, checked before anything is read or reserved for
    /// it; a longer one closes the connection with [`Error::Mismatch`], and a store of a longer
    /// value is refused before sending. Default [`DEFAULT_MAX_VALUE_SIZE`](Self::DEFAULT_MAX_VALUE_SIZE)
    /// (memcached's default item size); raise it for a server run with a larger `-I`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max_value_size` for 0 or more than
    /// [`MAX_VALUE_SIZE`](Self::MAX_VALUE_SIZE).
    pub fn max_value_size(mut self, bytes: usize) -> Result<Connector, ConfigError> {
        if bytes == 0 || bytes > Connector::MAX_VALUE_SIZE {
            return Err(ConfigError::new(
                "max_value_size",
                format!(
                    "{bytes} bytes is outside 1..={} (memcached's largest item size, -I 1024m); \
                     use the server's -I value",
                    Connector::MAX_VALUE_SIZE
                ),
            ));
        }
        self.max_value = bytes;
        Ok(self)
    }

    /// The dialect new connections speak: the one set, or for [`Dialect::Auto`] the one
    /// learned (`Auto` until the first connect).
    pub fn speaks(&self) -> Dialect {
        match (self.dialect, self.learned.load(Ordering::Relaxed)) {
            (Dialect::Auto, META) => Dialect::Meta,
            (Dialect::Auto, TEXT) => Dialect::Text,
            (d, _) => d,
        }
    }

    async fn handshake(&self, stream: Stream) -> io::Result<Protocol> {
        let target = describe(&stream);
        let mut p = Protocol::new(stream, target, self.max_value);
        let version = p.version().await?;
        p.meta = match self.speaks() {
            Dialect::Meta => true,
            Dialect::Text => false,
            _ => {
                // Concurrent first connections probe one at a time: the first learns, the
                // others find the answer, so a proxy closes at most one probe.
                let _turn = self.probing.lock().await;
                match self.speaks() {
                    Dialect::Meta => true,
                    Dialect::Text => false,
                    _ => self.learn(&mut p, &version).await?,
                }
            }
        };
        Ok(p)
    }

    /// Learns the dialect on a connection to a server of `version`.
    async fn learn(&self, p: &mut Protocol, version: &str) -> io::Result<bool> {
        let meta = match before_meta(version) {
            true => false,
            false => match p.probe_meta().await {
                Ok(meta) => meta,
                Err(e @ Error::Io { .. }) => {
                    self.settle(TEXT, &e);
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        ProbeClosed(e),
                    ));
                }
                Err(e) => return Err(e.into()),
            },
        };
        self.learned
            .store(if meta { META } else { TEXT }, Ordering::Relaxed);
        Ok(meta)
    }

    /// Records that the server closed the probe; the first to learn it says so once.
    fn settle(&self, dialect: u8, e: &Error) {
        let first = self
            .learned
            .compare_exchange(UNKNOWN, dialect, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first {
            tracing::info!(
                error = %e,
                "memcached closed the connection on the meta protocol's no-op (`mn`): a \
                 text-only front such as twemproxy; speaking the text protocol to it from now on \
                 (set Dialect::Text to skip the probe)"
            );
        }
    }
}

/// Whether a `version` reply names a memcached older than 1.6.10: before 1.6 there is no meta
/// protocol, and until 1.6.10 it was experimental and spoke otherwise on the wire (`OK` for
/// `HD`, another `ms` syntax), so a store's data block could be read as a command.
fn before_meta(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| {
        let digits = p.bytes().take_while(u8::is_ascii_digit).count();
        p[..digits].parse::<u32>().ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => {
            let patch = parts.next().flatten().unwrap_or(0);
            (major, minor, patch) < (1, 6, 10)
        }
        _ => false,
    }
}

/// The server as dialed, for errors.
fn describe(stream: &Stream) -> Arc<str> {
    if let Some(addr) = stream.as_tcp().and_then(|s| s.peer_addr().ok()) {
        return addr.to_string().into();
    }
    #[cfg(unix)]
    if let Some(addr) = stream.as_unix().and_then(|s| s.peer_addr().ok())
        && let Some(path) = addr.as_pathname()
    {
        return path.display().to_string().into();
    }
    "memcached".into()
}

/// An idle connection is clean: no reply pending or half read, and a socket still open.
fn idle(conn: &Protocol) -> io::Result<()> {
    if conn.in_flight() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a reply is pending on an idle memcached connection, or it failed",
        ));
    }
    conn.stream.check_idle()
}

impl crate::Connector for Connector {
    type Conn = Protocol;
    type Error = io::Error;

    async fn connect(&self, stream: Stream) -> io::Result<Protocol> {
        self.handshake(stream).await
    }

    /// The peek: memcached closes idle connections only when told to (`-o idle_timeout`), and
    /// a closed or half-read one shows on the socket, so the check needs no round trip.
    async fn check(&self, conn: &mut Protocol) -> io::Result<()> {
        idle(conn)
    }

    fn peek(&self, conn: &mut Protocol) -> Option<io::Result<()>> {
        Some(idle(conn))
    }

    /// A reply owed, a request half written, or a failed connection (which
    /// [`recover`](crate::Connector::recover) then refuses, so the pool closes it).
    fn in_flight(&self, conn: &Protocol) -> bool {
        conn.in_flight()
    }

    async fn recover(&self, conn: &mut Protocol) -> bool {
        conn.recover().await.is_ok()
    }

    /// The handshake whose meta probe the server closed: the next one speaks text.
    fn retry_handshake(&self, error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<ProbeClosed>())
    }
}

#[cfg(test)]
#[test]
fn the_meta_protocol_starts_at_1_6_10() {
    for old in ["1.4.39", "1.5.22", "1.6.0", "1.6.9", "1.6.9-rc1"] {
        assert!(before_meta(old), "{old}");
    }
    for new in ["1.6.10", "1.6.18", "1.6.38", "1.7.0", "2.0", "x"] {
        assert!(!before_meta(new), "{new}");
    }
}

/// Decodes `data` as the reply to each kind of request, in both dialects, the way a connection
/// reads it (a unit at a time), and checks what the decoder promises: values only for keys
/// asked for, never past the bound, every unit inside the bytes given. Returns the first
/// promise broken; the fuzz target (`fuzz/fuzz_targets/memcached_reply.rs`) fails on it, and
/// on any panic. Not part of the API.
#[doc(hidden)]
pub fn fuzz_reply(data: &[u8]) -> Result<(), &'static str> {
    use wire::{Decoded, Expect, Keys, Verb, decode};
    const MAX: usize = 64;
    let keys = || {
        let mut k = Keys::default();
        for key in [&b"a"[..], b"k1", b"b"] {
            k.push(key);
        }
        k
    };
    let mut expects = vec![
        Expect::TextGet {
            keys: keys(),
            next: 0,
            cas: false,
        },
        Expect::TextGet {
            keys: keys(),
            next: 0,
            cas: true,
        },
        Expect::MetaBatch {
            keys: keys(),
            base: 1,
            next: 0,
        },
    ];
    for verb in [
        Verb::Get,
        Verb::Store,
        Verb::Delete,
        Verb::Touch,
        Verb::Arith,
        Verb::Version,
        Verb::Flush,
        Verb::NoOp,
    ] {
        expects.push(Expect::Text(verb));
        expects.push(Expect::Meta {
            verb,
            token: 1,
            key: b"k1".to_vec(),
        });
    }
    for mut expect in expects {
        let mut at = 0;
        while let Ok(Decoded::Step(step)) = decode(&data[at..], &mut expect, MAX) {
            if step.used == 0 || at + step.used > data.len() {
                return Err("a unit outside the bytes given");
            }
            if let Some(v) = step.value
                && (v.data.len() > MAX || v.data.end > step.used || v.index >= 3)
            {
                return Err("a value past its bound or for a key not asked for");
            }
            at += step.used;
            if step.status.is_some() {
                break;
            }
        }
    }
    Ok(())
}
