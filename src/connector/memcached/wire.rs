//! memcached replies read by their structure, without I/O: [`decode`] takes the bytes buffered so
//! far and the reply the oldest pending request expects ([`Expect`]), and returns one complete
//! unit of that reply (a value with its data block, or the line that ends the reply), or asks for
//! more bytes. It never searches the stream for a marker: a header line is read up to its CRLF
//! (at most [`MAX_LINE`] bytes), a data block by its declared length, checked against the
//! request's bound before anything is reserved for it, and every value is matched to a key the
//! request asked for (text: in request order; meta: by its opaque token and echoed key). A unit is
//! consumed whole or not at all, so a reader cancelled between two units leaves nothing half read.

use std::ops::Range;

use super::meta::{Meta, meta_line};

/// The longest reply line taken: a key is at most 250 bytes, and a header's other fields fit in
/// the rest.
pub(crate) const MAX_LINE: usize = 1024;

/// The keys of one request, in the order they were sent.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    pub(crate) fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1],
        };
        self.bytes.get(start..end)
    }
}

/// A one-reply request's verb: which reply lines answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    /// A single get; meta: `mg` with `v f c k`.
    Get,
    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`; meta: `ms`.
    Store,
    /// `delete`; meta: `md`.
    Delete,
    /// `touch`; meta: `mg` with `T` and no value.
    Touch,
    /// `incr`/`decr`; meta: `ma` with `v`.
    Arith,
    /// `version` (text on both dialects).
    Version,
    /// `flush_all` (text on both dialects).
    Flush,
    /// `mn`, the meta no-op.
    NoOp,
}

/// The reply a sent request expects.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Text `get`/`gets`: `VALUE` blocks for keys of the request, in its order (misses
    /// skipped), then `END`. `cas`: the headers carry a CAS value (`gets`).
    TextGet { keys: Keys, next: usize, cas: bool },
    /// A text one-line reply (a get's value read as [`TextGet`](Expect::TextGet)).
    Text(Verb),
    /// Meta: a quiet `mg <key> v k O<base+i> q` per key, then `mn`: `VA` blocks whose tokens
    /// rise within `base..base + keys.len()`, each echoing its key, then `MN`.
    MetaBatch { keys: Keys, base: u32, next: usize },
    /// Meta: one reply line carrying `token` (a value with its block for a hit of `Get` and for
    /// `Arith`), echoing `key` where the request asked for it.
    Meta {
        verb: Verb,
        token: u32,
        key: Vec<u8>,
    },
}

/// How a reply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// A get's reply is complete (`END`, `MN`, or one meta `VA`/`EN`).
    Done,
    /// `STORED` / `HD` (store), `DELETED` / `HD`, `TOUCHED` / `HD`, `OK`, `MN`.
    Ok,
    /// `NOT_STORED` / `NS`.
    NotStored,
    /// `EXISTS` / `EX`.
    Exists,
    /// `NOT_FOUND` / `NF` / `EN`.
    NotFound,
    /// An `incr`/`decr` result.
    Number(u64),
    /// `VERSION <this>`.
    Version(Range<usize>),
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …` (the whole line). `fatal`: the server may
    /// not have read the request as it was meant (or the line cannot be matched to one request
    /// of a batch), so the connection must close.
    Failed { line: Range<usize>, fatal: bool },
}

/// A value of the reply: key `index` of the request, its data block at `data` (offsets in the
/// buffer given to [`decode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) index: usize,
    pub(crate) flags: u32,
    pub(crate) cas: u64,
    pub(crate) data: Range<usize>,
}

/// One complete unit of a reply: `used` bytes, a value, and the status if it ended the reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) used: usize,
    pub(crate) value: Option<Value>,
    pub(crate) status: Option<Status>,
}

/// What [`decode`] needs or found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// One unit, consumed.
    Step(Step),
    /// The unit is not complete: at least this many bytes must be buffered (from the start of
    /// the buffer given).
    Need(usize),
}

/// A reply that does not fit its request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) what: &'static str,
    /// The offending line, shortened, as text.
    pub(crate) line: String,
}

pub(super) fn mismatch(what: &'static str, line: &[u8]) -> Mismatch {
    let shown = &line[..line.len().min(120)];
    Mismatch {
        what,
        line: String::from_utf8_lossy(shown).into_owned(),
    }
}

/// A decimal number: digits only, no sign, no overflow.
#[inline]
pub(crate) fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = d.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(v))?;
    }
    Some(n)
}

/// The first line of `buf` without its CRLF, or how much must be buffered to find it.
pub(super) fn line(buf: &[u8]) -> Result<Result<&[u8], usize>, Mismatch> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(0) => Err(mismatch("an empty line", b"")),
        Some(at) if window[at - 1] == b'\r' => Ok(Ok(&window[..at - 1])),
        Some(at) => Err(mismatch("a line not ended by CRLF", &window[..at])),
        None if window.len() >= MAX_LINE => Err(mismatch("a reply line too long", window)),
        None => Ok(Err(buf.len() + 1)),
    }
}

/// A data block of `len` bytes after a header of `header` bytes (its CRLF included), with the
/// CRLF that must follow it; or how much must be buffered.
pub(super) fn block(
    buf: &[u8],
    header: usize,
    len: usize,
) -> Result<Result<Range<usize>, usize>, Mismatch> {
    let end = header
        .checked_add(len)
        .ok_or_else(|| mismatch("a value length past any bound", b""))?;
    let total = end
        .checked_add(2)
        .ok_or_else(|| mismatch("a value length past any bound", b""))?;
    if buf.len() < total {
        return Ok(Err(total));
    }
    if &buf[end..total] != b"\r\n" {
        return Err(mismatch(
            "a value not followed by CRLF where its length says",
            &buf[end..total],
        ));
    }
    Ok(Ok(header..end))
}

/// An error line's status, fatal or not, if `l` is one.
pub(super) fn failure(l: &[u8], at: usize, fatal_anyway: bool) -> Option<Status> {
    let line = at..at + l.len();
    if l == b"ERROR" || l.starts_with(b"ERROR ") {
        // The server did not know the command: it read our bytes otherwise than we wrote them.
        return Some(Status::Failed { line, fatal: true });
    }
    let client = l.starts_with(b"CLIENT_ERROR");
    (client || l.starts_with(b"SERVER_ERROR")).then_some(Status::Failed {
        line,
        fatal: fatal_anyway,
    })
}

/// Decodes the next unit of the reply `expect` describes from `buf`, updating `expect`'s progress
/// only when a unit is complete. `max_value` bounds a declared data length.
///
/// # Errors
///
/// A [`Mismatch`] when the bytes are no reply to this request: the connection must close.
pub(crate) fn decode(
    buf: &[u8],
    expect: &mut Expect,
    max_value: usize,
) -> Result<Decoded, Mismatch> {
    let l = match line(buf)? {
        Ok(l) => l,
        Err(need) => return Ok(Decoded::Need(need)),
    };
    let header = l.len() + 2;
    let ends = |status| {
        Ok(Decoded::Step(Step {
            used: header,
            value: None,
            status: Some(status),
        }))
    };
    match expect {
        Expect::TextGet { keys, next, cas } => {
            if l == b"END" {
                return ends(Status::Done);
            }
            // Any error inside a multi-get: which key it answers is unknowable.
            if let Some(status) = failure(l, 0, true) {
                return ends(status);
            }
            let mut parts = l.split(|&b| b == b' ');
            let (Some(b"VALUE"), Some(key), Some(flags), Some(len)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(mismatch("not a VALUE line", l));
            };
            let cas_value = match (parts.next(), *cas) {
                (Some(c), true) => number(c).ok_or_else(|| mismatch("a bad CAS value", l))?,
                (None, false) => 0,
                _ => return Err(mismatch("a VALUE line of the wrong shape", l)),
            };
            if parts.next().is_some() {
                return Err(mismatch("a VALUE line of the wrong shape", l));
            }
            let flags = number(flags)
                .and_then(|f| u32::try_from(f).ok())
                .ok_or_else(|| mismatch("bad flags", l))?;
            let len = value_len(len, max_value, l)?;
            // The key must be one asked for, at or after the last one answered.
            let index = (*next..keys.len())
                .find(|&i| keys.get(i) == Some(key))
                .ok_or_else(|| mismatch("a value for a key not asked for (or out of order)", l))?;
            valued(buf, header, len, next, index, (flags, cas_value))
        }
        Expect::Text(verb) => text_line(l, *verb, header),
        Expect::MetaBatch { keys, base, next } => {
            if l == b"MN" {
                return ends(Status::Done);
            }
            if let Some(status) = failure(l, 0, true) {
                return ends(status);
            }
            let meta = Meta::parse(l)?;
            if meta.code != *b"VA" {
                return Err(mismatch("not a value in a quiet batch", l));
            }
            let len = value_len(meta.size.unwrap_or_default(), max_value, l)?;
            let index = meta
                .token
                .and_then(|t| t.checked_sub(*base))
                .map(|i| i as usize)
                .filter(|&i| i >= *next && i < keys.len())
                .ok_or_else(|| mismatch("a value whose token no pending request holds", l))?;
            if meta.key != keys.get(index) {
                return Err(mismatch("a value whose key is not its request's", l));
            }
            valued(buf, header, len, next, index, (meta.flags, meta.cas))
        }
        Expect::Meta { verb, token, key } => meta_line(l, *verb, *token, key, buf, max_value),
    }
}

/// A value for key `index` of a multi-get, its `len`-byte block after a `header`-byte line, with
/// its `(flags, cas)`; the request's progress moves past it only once the block is whole.
fn valued(
    buf: &[u8],
    header: usize,
    len: usize,
    next: &mut usize,
    index: usize,
    (flags, cas): (u32, u64),
) -> Result<Decoded, Mismatch> {
    let data = match block(buf, header, len)? {
        Ok(data) => data,
        Err(need) => return Ok(Decoded::Need(need)),
    };
    *next = index + 1;
    Ok(Decoded::Step(Step {
        used: data.end + 2,
        value: Some(Value {
            index,
            flags,
            cas,
            data,
        }),
        status: None,
    }))
}

/// A declared data length, bounded before anything is reserved for it.
pub(super) fn value_len(digits: &[u8], max_value: usize, l: &[u8]) -> Result<usize, Mismatch> {
    let n = number(digits).ok_or_else(|| mismatch("a bad value length", l))?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= max_value)
        .ok_or_else(|| mismatch("a value longer than max_value_size", l))
}

fn text_line(l: &[u8], verb: Verb, header: usize) -> Result<Decoded, Mismatch> {
    // A store's CLIENT_ERROR may mean its data block was read as a command; SERVER_ERROR
    // ("object too large", "out of memory") comes after the server swallowed the block.
    if let Some(status) = failure(l, 0, verb == Verb::Store && l.starts_with(b"CLIENT_ERROR")) {
        return Ok(Decoded::Step(Step {
            used: header,
            value: None,
            status: Some(status),
        }));
    }
    let status = match (verb, l) {
        (Verb::Store, b"STORED")
        | (Verb::Delete, b"DELETED")
        | (Verb::Touch, b"TOUCHED")
        | (Verb::Flush, b"OK") => Status::Ok,
        (Verb::Store, b"NOT_STORED") => Status::NotStored,
        (Verb::Store, b"EXISTS") => Status::Exists,
        (Verb::Store | Verb::Delete | Verb::Touch | Verb::Arith, b"NOT_FOUND") => Status::NotFound,
        (Verb::Arith, digits) if number(digits).is_some() => {
            Status::Number(number(digits).unwrap_or_default())
        }
        (Verb::Version, l) if l.starts_with(b"VERSION ") => Status::Version(8..l.len()),
        _ => return Err(mismatch("a line that answers no request of this kind", l)),
    };
    Ok(Decoded::Step(Step {
        used: header,
        value: None,
        status: Some(status),
    }))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
