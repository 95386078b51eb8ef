//! [`Protocol`]: one memcached connection, its buffers, and the queue of requests whose replies
//! are pending. Every await is in [`Protocol::flush`] (writing what is queued) or
//! [`Protocol::fill`] (reading more); the queue and the buffers change only between awaits, a
//! whole unit at a time, so a future dropped at any await leaves a state that
//! [`Protocol::recover`] finishes exactly: every pending reply read to its end by its
//! structure (a request cut off mid-write closes the connection instead of being finished).

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::Error;
use super::request::{self, Command};
use super::wire::{self, Decoded, Expect, Status, Value};
use crate::dial::Stream;

/// How much room each read has at least.
const READ_CHUNK: usize = 64 * 1024;
/// The most a read reserves ahead of bytes that have arrived, for a long value.
const MAX_RESERVE: usize = 1 << 20;

/// A pooled memcached connection, in the text or the meta protocol (chosen at connect by the
/// [`Connector`](crate::memcached::Connector)).
///
/// Every reply is read by its structure and matched to the request it answers: a value's key is
/// one its request asked for (in the meta protocol, its opaque token and echoed key too), and a
/// declared length is checked against `max_value_size` before anything is reserved for it. A
/// reply that does not fit is [`Error::Mismatch`]: nothing of it is returned, and the
/// connection is not used again.
pub struct Protocol {
    pub(super) stream: Stream,
    pub(super) target: Arc<str>,
    pub(super) meta: bool,
    pub(super) max_value: usize,
    /// Bytes read and not yet consumed: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Whole requests queued; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// The replies owed, oldest first, each with its progress.
    pending: VecDeque<Expect>,
    /// The next meta opaque token.
    token: u32,
    /// A reply did not fit, an I/O error, or a server error that leaves the stream in doubt.
    broken: bool,
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("memcached::Protocol")
            .field("target", &self.target)
            .field("meta", &self.meta)
            .field("pending", &self.pending.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// A value of a reply, copied out of the read buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Item {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The client flags stored with it.
    pub flags: u32,
    /// Its CAS value, for [`Protocol::cas`].
    pub cas: u64,
}

impl Protocol {
    pub(super) fn new(stream: Stream, target: Arc<str>, max_value: usize) -> Protocol {
        Protocol {
            stream,
            target,
            meta: false,
            max_value,
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            wbuf: Vec::with_capacity(256),
            wpos: 0,
            pending: VecDeque::with_capacity(2),
            token: 0,
            broken: false,
        }
    }

    /// Whether this connection speaks memcached's meta protocol (`mg`/`ms`/…), or the text one.
    pub fn is_meta(&self) -> bool {
        self.meta
    }

    /// Whether a reply is owed or a request half written (a caller gave up), bytes are buffered
    /// that no request asked for, or the connection failed: either way the pool does not lend
    /// it as it is.
    pub fn in_flight(&self) -> bool {
        self.broken
            || !self.pending.is_empty()
            || self.wpos < self.wbuf.len()
            || self.rpos < self.rbuf.len()
    }

    fn io_error(&mut self, source: io::Error) -> Error {
        self.broken = true;
        Error::Io {
            target: self.target.clone(),
            source,
        }
    }

    /// Queues one request; a refused one queues nothing.
    pub(super) fn queue(&mut self, command: Command<'_>) -> Result<(), Error> {
        self.compact_writes();
        let token = self.tokens(1);
        let expect = request::encode(&mut self.wbuf, command, self.meta, token, self.max_value)
            .map_err(Error::Refused)?;
        self.pending.push_back(expect);
        Ok(())
    }

    /// Queues a multi-get of `keys`; a refused one (any key) queues nothing.
    pub(crate) fn queue_multi<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<(), Error> {
        self.compact_writes();
        let count = u32::try_from(keys.len()).map_err(|_| Error::Refused("too many keys"))?;
        let base = self.tokens(count);
        let expect =
            request::encode_multi(&mut self.wbuf, keys, self.meta, base).map_err(Error::Refused)?;
        self.pending.push_back(expect);
        Ok(())
    }

    /// `n` consecutive opaque tokens that do not wrap.
    fn tokens(&mut self, n: u32) -> u32 {
        let base = match self.token.checked_add(n) {
            Some(_) => self.token,
            None => 0,
        };
        self.token = base.wrapping_add(n);
        base
    }

    fn compact_writes(&mut self) {
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
    }

    /// Writes what is queued (one write, more only if the socket takes less).
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]).await {
                Ok(0) => return Err(self.io_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wpos += n,
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    /// Reads more, so that at least `need` bytes are unread; end of stream is an error.
    async fn fill(&mut self, need: usize) -> Result<(), Error> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
        let unread = self.rbuf.len() - self.rpos;
        let want = need
            .saturating_sub(unread)
            .clamp(READ_CHUNK / 2, MAX_RESERVE);
        if self.rbuf.capacity() - self.rbuf.len() < want {
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(want.max(READ_CHUNK));
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(self.io_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "memcached closed the connection mid-reply",
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The next unit of the oldest pending reply: a value, and the status if the reply ended
    /// (then it is no longer pending). Ranges index [`Protocol::bytes`].
    pub(crate) async fn step(&mut self) -> Result<(Option<Value>, Option<Status>), Error> {
        loop {
            if self.broken {
                return Err(self.unusable());
            }
            let Some(head) = self.pending.front_mut() else {
                return Err(Error::Refused("no request is pending on this connection"));
            };
            match wire::decode(&self.rbuf[self.rpos..], head, self.max_value) {
                Ok(Decoded::Step(step)) => {
                    let at = self.rpos;
                    self.rpos += step.used;
                    let shift = |r: Range<usize>| r.start + at..r.end + at;
                    let value = step.value.map(|v| Value {
                        data: shift(v.data),
                        ..v
                    });
                    let status = step.status.map(|s| match s {
                        Status::Version(r) => Status::Version(shift(r)),
                        Status::Failed { line, fatal } => {
                            self.broken |= fatal;
                            Status::Failed {
                                line: shift(line),
                                fatal,
                            }
                        }
                        s => s,
                    });
                    if status.is_some() {
                        self.pending.pop_front();
                    }
                    return Ok((value, status));
                }
                Ok(Decoded::Need(need)) => self.fill(need).await?,
                Err(m) => {
                    self.broken = true;
                    return Err(Error::Mismatch {
                        target: self.target.clone(),
                        detail: format!("{}: {:?}", m.what, m.line),
                    });
                }
            }
        }
    }

    /// Bytes of the read buffer that [`step`](Protocol::step) pointed at.
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.rbuf.get(range).unwrap_or_default()
    }

    /// A server error line as the caller's error.
    pub(crate) fn server_error(&self, line: Range<usize>) -> Error {
        Error::Server {
            target: self.target.clone(),
            line: String::from_utf8_lossy(self.bytes(line)).into_owned(),
        }
    }

    fn unusable(&self) -> Error {
        Error::Io {
            target: self.target.clone(),
            source: io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection failed earlier (an I/O error or a reply that did not fit its \
                 request) and is not used again: take another from the pool",
            ),
        }
    }

    /// Makes the connection clean after a caller gave up mid-request: every pending reply read
    /// to its end by its structure and dropped. Bounded: each reply has at most as many values
    /// as its request has keys, each at most `max_value_size` long. A request not all written
    /// when its caller gave up is not finished here: sent after the caller moved on, a store
    /// would land after whatever the caller (or another) stored since. The connection closes
    /// instead, and the server drops the cut-off request.
    ///
    /// # Errors
    ///
    /// A request was cut off mid-write, the connection failed, or a reply did not fit: it must
    /// be closed.
    pub async fn recover(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(self.unusable());
        }
        if self.wpos < self.wbuf.len() {
            self.broken = true;
            return Err(Error::Io {
                target: self.target.clone(),
                source: io::Error::new(
                    io::ErrorKind::Interrupted,
                    "a request was given up before all of it was written; the connection closes \
                     so that the server drops it instead of running it later",
                ),
            });
        }
        while !self.pending.is_empty() {
            self.step().await?;
        }
        match self.broken {
            true => Err(self.unusable()),
            false => Ok(()),
        }
    }

    /// One request and its whole reply, after whatever an earlier caller left behind.
    pub(super) async fn call(
        &mut self,
        command: Command<'_>,
    ) -> Result<(Option<Item>, Status), Error> {
        self.recover().await?;
        self.queue(command)?;
        self.flush().await?;
        let mut item = None;
        loop {
            let (value, status) = self.step().await?;
            if let Some(v) = value {
                item = Some(Item {
                    value: self.bytes(v.data).to_vec(),
                    flags: v.flags,
                    cas: v.cas,
                });
            }
            match status {
                None => {}
                Some(Status::Failed { line, .. }) => return Err(self.server_error(line)),
                Some(status) => return Ok((item, status)),
            }
        }
    }

    /// Reads the oldest pending multi-get's reply to its end, handing each value to `found`
    /// with its key's index in the request.
    pub(crate) async fn recv_multi(
        &mut self,
        mut found: impl FnMut(usize, &[u8]),
    ) -> Result<(), Error> {
        loop {
            let (value, status) = self.step().await?;
            if let Some(v) = value {
                found(v.index, self.bytes(v.data));
            }
            match status {
                None => {}
                Some(Status::Failed { line, .. }) => return Err(self.server_error(line)),
                Some(_) => return Ok(()),
            }
        }
    }
}
