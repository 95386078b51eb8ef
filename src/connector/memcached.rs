//! The memcached connector (public as `multiloop::memcached`, see `src/memcached.rs` for its
//! docs).

use std::collections::HashMap;
use std::fmt::Display;
use std::io::{self, ErrorKind};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::Stream;

/// The longest key memcached takes.
const MAX_KEY: usize = 250;
/// How much room each read has at least.
const READ_CHUNK: usize = 64 * 1024;
/// The most bytes a recovery drains before it gives up on the connection.
const MAX_DRAIN: usize = 64 << 20;

/// A pooled memcached connection: the text protocol over a dialed stream, with `get`,
/// `get_multi`, `set`, `add`, `delete`, `version` and `flush`.
pub struct Protocol {
    stream: Stream,
    /// Bytes read and not yet consumed: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// The request being written, and how much of it went out.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Requests sent whose replies are not read to their end (more than one when pipelined).
    pending: usize,
    /// The server's `VERSION …` line, learned at connect: the marker a recovery reads up to.
    version: String,
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("memcached::Protocol")
            .field("stream", &self.stream)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

fn check_key(key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "a memcached key is 1 to 250 bytes without spaces or control characters",
        ));
    }
    Ok(())
}

fn invalid(what: &str, line: &[u8]) -> io::Error {
    let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    io::Error::new(ErrorKind::InvalidData, format!("{what}: {shown:?}"))
}

fn server_error(line: &[u8]) -> Option<io::Error> {
    let errors: [&[u8]; 3] = [b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"];
    errors
        .iter()
        .any(|e| line.starts_with(e))
        .then(|| io::Error::other(String::from_utf8_lossy(line).into_owned()))
}

impl Protocol {
    /// Wraps a dialed stream and asks the server its version (the recovery marker).
    ///
    /// # Errors
    ///
    /// An I/O error, or [`ErrorKind::InvalidData`] if the server does not speak memcached.
    pub async fn new(stream: Stream) -> io::Result<Protocol> {
        let mut p = Protocol {
            stream,
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            wbuf: Vec::with_capacity(256),
            wpos: 0,
            pending: 0,
            version: String::new(),
        };
        let v = p.version().await?;
        p.version = format!("VERSION {v}\r\n");
        Ok(p)
    }

    /// Whether a request was sent and its reply not read to its end: its caller gave up.
    pub fn in_flight(&self) -> bool {
        self.pending > 0
    }

    /// One reply read to its end.
    fn answered(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Sends the request in `wbuf` with one write (more only if the socket takes less).
    async fn send(&mut self) -> io::Result<()> {
        self.pending += 1;
        self.wpos = 0;
        while self.wpos < self.wbuf.len() {
            let n = self.stream.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            self.wpos += n;
        }
        Ok(())
    }

    /// Reads more bytes into the buffer; end of stream is an error mid-reply.
    async fn fill(&mut self) -> io::Result<()> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
        // Large reads: a multi-get's reply is megabytes, and each read is a syscall and a wake.
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "memcached closed the connection mid-reply",
            ));
        }
        Ok(())
    }

    /// The next line, without its `\r\n`, as a range of `rbuf`.
    async fn line(&mut self) -> io::Result<std::ops::Range<usize>> {
        // How far past `rpos` has been searched; `fill` keeps offsets from `rpos`.
        let mut from = 0;
        loop {
            let unread = &self.rbuf[self.rpos..];
            if let Some(i) = unread[from..].iter().position(|&b| b == b'\n') {
                let at = from + i;
                if at == 0 || unread[at - 1] != b'\r' {
                    return Err(invalid("a line not ended by CRLF", &unread[..at]));
                }
                let start = self.rpos;
                self.rpos = start + at + 1;
                return Ok(start..start + at - 1);
            }
            if unread.len() > MAX_KEY + 128 {
                return Err(invalid("a reply line too long", unread));
            }
            from = unread.len();
            self.fill().await?;
        }
    }

    /// The next `n` bytes and the `\r\n` after them.
    async fn data(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.rbuf.len() - self.rpos < n + 2 {
            self.fill().await?;
        }
        let value = self.rbuf[self.rpos..self.rpos + n].to_vec();
        if &self.rbuf[self.rpos + n..self.rpos + n + 2] != b"\r\n" {
            return Err(invalid("a value not followed by CRLF", &value));
        }
        self.rpos += n + 2;
        Ok(value)
    }

    /// Reads `VALUE` blocks up to `END`.
    async fn values(&mut self, expected: usize) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut found = Vec::with_capacity(expected);
        loop {
            let range = self.line().await?;
            let line = &self.rbuf[range];
            if line == b"END" {
                self.answered();
                return Ok(found);
            }
            if let Some(e) = server_error(line) {
                self.answered();
                return Err(e);
            }
            // VALUE <key> <flags> <bytes> [<cas>]
            let mut parts = line.split(|&b| b == b' ');
            let (Some(b"VALUE"), Some(key), Some(_flags), Some(len)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("not a VALUE line", line));
            };
            let len: usize = std::str::from_utf8(len)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("a bad length", line))?;
            let key = String::from_utf8_lossy(key).into_owned();
            let value = self.data(len).await?;
            found.push((key, value));
        }
    }

    /// The value of `key`; [`ErrorKind::NotFound`] when it is not there.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a key memcached would not take, the server's error, or
    /// an I/O error.
    pub async fn get<K: AsRef<[u8]>>(&mut self, key: K) -> io::Result<Vec<u8>> {
        let found = self.get_pairs(&[key.as_ref()]).await?;
        found
            .into_iter()
            .next()
            .map(|(_, value)| value)
            .ok_or_else(|| ErrorKind::NotFound.into())
    }

    /// The values of the keys found, in one request and one reply; missing keys are absent.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a key memcached would not take (nothing is sent), the
    /// server's error, or an I/O error.
    pub async fn get_multi<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> io::Result<HashMap<String, Vec<u8>>> {
        Ok(self.get_pairs(keys).await?.into_iter().collect())
    }

    /// [`get_multi`](Protocol::get_multi)'s keys and values in reply order, without a map.
    ///
    /// # Errors
    ///
    /// As [`get_multi`](Protocol::get_multi).
    pub async fn get_pairs<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> io::Result<Vec<(String, Vec<u8>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.send_get(keys).await?;
        self.values(keys.len()).await
    }

    /// Sends a multi-get without reading its reply, so that the next request can go out while
    /// the server answers this one; [`recv_pairs`](Protocol::recv_pairs) reads the replies in
    /// order. `get_many` keeps one request ahead this way.
    pub(crate) async fn send_get<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> io::Result<()> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"get");
        for key in keys {
            check_key(key.as_ref())?;
            self.wbuf.push(b' ');
            self.wbuf.extend_from_slice(key.as_ref());
        }
        self.wbuf.extend_from_slice(b"\r\n");
        self.send().await
    }

    /// The reply to the oldest multi-get sent by [`send_get`](Protocol::send_get).
    pub(crate) async fn recv_pairs(
        &mut self,
        expected: usize,
    ) -> io::Result<Vec<(String, Vec<u8>)>> {
        self.values(expected).await
    }

    async fn store<K: Display>(
        &mut self,
        verb: &str,
        key: K,
        value: &[u8],
        expiration: u32,
    ) -> io::Result<bool> {
        let key = key.to_string();
        check_key(key.as_bytes())?;
        self.wbuf.clear();
        let header = format!("{verb} {key} 0 {expiration} {}\r\n", value.len());
        self.wbuf.extend_from_slice(header.as_bytes());
        self.wbuf.extend_from_slice(value);
        self.wbuf.extend_from_slice(b"\r\n");
        self.send().await?;
        let range = self.line().await?;
        self.answered();
        match &self.rbuf[range] {
            b"STORED" => Ok(true),
            b"NOT_STORED" => Ok(false),
            line => Err(server_error(line).unwrap_or_else(|| invalid("not a store reply", line))),
        }
    }

    /// Stores `value` under `key`, expiring after `expiration` seconds (0: never).
    ///
    /// # Errors
    ///
    /// As [`get_multi`](Protocol::get_multi); the server's refusal is an error.
    pub async fn set<K: Display>(
        &mut self,
        key: K,
        value: &[u8],
        expiration: u32,
    ) -> io::Result<()> {
        match self.store("set", key, value, expiration).await? {
            true => Ok(()),
            false => Err(io::Error::other("memcached did not store the value")),
        }
    }

    /// Stores `value` under `key` unless the key exists; [`ErrorKind::AlreadyExists`] then.
    ///
    /// # Errors
    ///
    /// As [`set`](Protocol::set).
    pub async fn add<K: Display>(
        &mut self,
        key: K,
        value: &[u8],
        expiration: u32,
    ) -> io::Result<()> {
        match self.store("add", key, value, expiration).await? {
            true => Ok(()),
            false => Err(ErrorKind::AlreadyExists.into()),
        }
    }

    /// Deletes `key`; returns whether it was there.
    ///
    /// # Errors
    ///
    /// As [`get_multi`](Protocol::get_multi).
    pub async fn delete<K: Display>(&mut self, key: K) -> io::Result<bool> {
        let key = key.to_string();
        check_key(key.as_bytes())?;
        self.wbuf.clear();
        self.wbuf
            .extend_from_slice(format!("delete {key}\r\n").as_bytes());
        self.simple(&[b"DELETED", b"NOT_FOUND"])
            .await
            .map(|i| i == 0)
    }

    /// Sends the request in `wbuf` and reads a one-line reply, one of `expected`.
    async fn simple(&mut self, expected: &[&[u8]]) -> io::Result<usize> {
        self.send().await?;
        let range = self.line().await?;
        self.answered();
        let line = &self.rbuf[range];
        expected.iter().position(|e| *e == line).ok_or_else(|| {
            server_error(line).unwrap_or_else(|| invalid("an unexpected reply", line))
        })
    }

    /// Empties the cache.
    ///
    /// # Errors
    ///
    /// The server's error, or an I/O error.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"flush_all\r\n");
        self.simple(&[b"OK"]).await.map(drop)
    }

    /// The server's version.
    ///
    /// # Errors
    ///
    /// The server's error, or an I/O error.
    pub async fn version(&mut self) -> io::Result<String> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"version\r\n");
        self.send().await?;
        let range = self.line().await?;
        self.answered();
        let line = &self.rbuf[range];
        match line.strip_prefix(b"VERSION ") {
            Some(v) => Ok(String::from_utf8_lossy(v).into_owned()),
            None => Err(server_error(line).unwrap_or_else(|| invalid("not a VERSION line", line))),
        }
    }

    /// Makes the connection clean after a caller gave up mid-request: finishes writing the
    /// request, sends `version` behind it and reads up to its reply, dropping the rest.
    async fn recover(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        // A half-written request is finished, so that the server does not read `version` as
        // part of it.
        while self.wpos < self.wbuf.len() {
            let n = self.stream.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            self.wpos += n;
        }
        self.stream.write_all(b"version\r\n").await?;
        loop {
            // Everything before the marker is stale; the marker is the last thing sent to us.
            let unread = &self.rbuf[self.rpos..];
            if unread.ends_with(self.version.as_bytes()) {
                self.rbuf.clear();
                self.rpos = 0;
                self.pending = 0;
                return Ok(());
            }
            if unread.len() > MAX_DRAIN {
                return Err(io::Error::other("too much stale data to drain"));
            }
            self.fill().await?;
        }
    }
}

/// Pools memcached connections ([`Protocol`]). Its check is a non-blocking peek; a connection
/// given back mid-request is recovered (drained up to a `version` reply) instead of closed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Connector;

/// An idle connection is clean: no reply pending or half read, and a socket still open.
fn idle(conn: &Protocol) -> io::Result<()> {
    if conn.pending > 0 || conn.rpos < conn.rbuf.len() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "a reply is pending on an idle connection",
        ));
    }
    conn.stream.check_idle()
}

impl crate::Connector for Connector {
    type Conn = Protocol;
    type Error = io::Error;

    async fn connect(&self, stream: Stream) -> io::Result<Protocol> {
        Protocol::new(stream).await
    }

    /// The peek: memcached closes idle connections only when told to (`-o idle_timeout`), and
    /// a closed or half-read one shows on the socket, so the check needs no round trip.
    async fn check(&self, conn: &mut Protocol) -> io::Result<()> {
        idle(conn)
    }

    fn peek(&self, conn: &mut Protocol) -> Option<io::Result<()>> {
        Some(idle(conn))
    }

    fn in_flight(&self, conn: &Protocol) -> bool {
        conn.pending > 0
    }

    async fn recover(&self, conn: &mut Protocol) -> bool {
        conn.recover().await.is_ok()
    }
}
