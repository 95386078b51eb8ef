//! memcached requests, built whole and checked before a byte of them is queued: a key or value
//! the server would refuse fails the request here, and the bytes already appended are cut off.

use super::wire::{Expect, Keys, Verb};

/// The longest key memcached takes.
pub(crate) const MAX_KEY: usize = 250;

/// How [`Protocol::store`](super::Protocol::store) treats the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Store {
    /// Store whatever is there.
    Set,
    /// Store only if the key is absent.
    Add,
    /// Store only if the key is present.
    Replace,
    /// Add the bytes after the stored value (flags and expiry unchanged).
    Append,
    /// Add the bytes before the stored value (flags and expiry unchanged).
    Prepend,
    /// Store only if the item's CAS value is still this one ([`Item::cas`](super::Item::cas)).
    Cas(u64),
}

/// One request of a single reply.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Command<'a> {
    /// A single get; `cas`: with the item's CAS value (`gets`).
    Get(&'a [u8], bool),
    Store {
        mode: Store,
        key: &'a [u8],
        value: &'a [u8],
        flags: u32,
        ttl: u32,
    },
    Delete(&'a [u8]),
    Touch(&'a [u8], u32),
    Arith {
        key: &'a [u8],
        delta: u64,
        incr: bool,
    },
    Version,
    Flush,
    NoOp,
}

/// Why a request was refused before anything was sent.
pub(crate) type Refused = &'static str;

pub(crate) fn check_key(key: &[u8]) -> Result<(), Refused> {
    // Every byte looked at, without an early exit: the loop vectorizes.
    let printable = key
        .iter()
        .fold(true, |ok, &b| ok & (b > b' ') & (b != 0x7f));
    if key.is_empty() || key.len() > MAX_KEY || !printable {
        return Err("a memcached key is 1 to 250 bytes without spaces or control characters");
    }
    Ok(())
}

/// memcached reads an expiry as a signed 32-bit number: past `i32::MAX` it is negative, and
/// the item expires at once (a `touch` deletes it).
fn check_ttl(ttl: u32) -> Result<(), Refused> {
    match i32::try_from(ttl) {
        Ok(_) => Ok(()),
        Err(_) => Err("an expiry is at most 2^31-1 (seconds, or past 30 days a Unix time)"),
    }
}

/// Appends a decimal number.
fn num(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends ` <flag><n>`.
fn flag(out: &mut Vec<u8>, f: u8, n: u64) {
    out.push(b' ');
    out.push(f);
    num(out, n);
}

/// Appends one request to `out` (nothing on refusal) and says what its reply is. `meta`: the
/// meta command, carrying `token`.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    command: Command<'_>,
    meta: bool,
    token: u32,
    max_value: usize,
) -> Result<Expect, Refused> {
    let mark = out.len();
    let result = build(out, command, meta, token, max_value);
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

fn build(
    out: &mut Vec<u8>,
    command: Command<'_>,
    meta: bool,
    token: u32,
    max_value: usize,
) -> Result<Expect, Refused> {
    let expect = |verb, key: &[u8]| match meta {
        true => Expect::Meta {
            verb,
            token,
            key: key.to_vec(),
        },
        false => Expect::Text(verb),
    };
    let t = u64::from(token);
    match command {
        Command::Get(key, cas) => {
            check_key(key)?;
            if meta {
                out.extend_from_slice(b"mg ");
                out.extend_from_slice(key);
                out.extend_from_slice(if cas { b" v f c k" } else { b" v f k" });
                flag(out, b'O', t);
                out.extend_from_slice(b"\r\n");
                return Ok(expect(Verb::Get, key));
            }
            out.extend_from_slice(if cas { b"gets " } else { b"get " });
            out.extend_from_slice(key);
            out.extend_from_slice(b"\r\n");
            let mut keys = Keys::default();
            keys.push(key);
            Ok(Expect::TextGet { keys, next: 0, cas })
        }
        Command::Store {
            mode,
            key,
            value,
            flags,
            ttl,
        } => {
            check_key(key)?;
            check_ttl(ttl)?;
            if value.len() > max_value {
                return Err("the value is longer than the connector's max_value_size");
            }
            let len = value.len() as u64;
            if meta {
                out.extend_from_slice(b"ms ");
                out.extend_from_slice(key);
                out.push(b' ');
                num(out, len);
                flag(out, b'F', u64::from(flags));
                flag(out, b'T', u64::from(ttl));
                flag(out, b'O', t);
                match mode {
                    Store::Set => {}
                    Store::Add => out.extend_from_slice(b" ME"),
                    Store::Replace => out.extend_from_slice(b" MR"),
                    Store::Append => out.extend_from_slice(b" MA"),
                    Store::Prepend => out.extend_from_slice(b" MP"),
                    Store::Cas(cas) => flag(out, b'C', cas),
                }
            } else {
                out.extend_from_slice(match mode {
                    Store::Set => b"set ",
                    Store::Add => b"add ",
                    Store::Replace => b"replace ",
                    Store::Append => b"append ",
                    Store::Prepend => b"prepend ",
                    Store::Cas(_) => b"cas ",
                });
                out.extend_from_slice(key);
                for n in [u64::from(flags), u64::from(ttl), len] {
                    out.push(b' ');
                    num(out, n);
                }
                if let Store::Cas(cas) = mode {
                    out.push(b' ');
                    num(out, cas);
                }
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
            Ok(expect(Verb::Store, key))
        }
        Command::Delete(key) => {
            check_key(key)?;
            out.extend_from_slice(if meta { b"md " } else { b"delete " });
            out.extend_from_slice(key);
            if meta {
                flag(out, b'O', t);
            }
            out.extend_from_slice(b"\r\n");
            Ok(expect(Verb::Delete, key))
        }
        Command::Touch(key, ttl) => {
            check_key(key)?;
            check_ttl(ttl)?;
            out.extend_from_slice(if meta { b"mg " } else { b"touch " });
            out.extend_from_slice(key);
            if meta {
                flag(out, b'T', u64::from(ttl));
                flag(out, b'O', t);
            } else {
                out.push(b' ');
                num(out, u64::from(ttl));
            }
            out.extend_from_slice(b"\r\n");
            Ok(expect(Verb::Touch, key))
        }
        Command::Arith { key, delta, incr } => {
            check_key(key)?;
            if meta {
                out.extend_from_slice(b"ma ");
                out.extend_from_slice(key);
                out.extend_from_slice(b" v");
                flag(out, b'D', delta);
                flag(out, b'O', t);
                if !incr {
                    out.extend_from_slice(b" MD");
                }
            } else {
                out.extend_from_slice(if incr { b"incr " } else { b"decr " });
                out.extend_from_slice(key);
                out.push(b' ');
                num(out, delta);
            }
            out.extend_from_slice(b"\r\n");
            Ok(expect(Verb::Arith, key))
        }
        Command::Version => {
            out.extend_from_slice(b"version\r\n");
            Ok(Expect::Text(Verb::Version))
        }
        Command::Flush => {
            out.extend_from_slice(b"flush_all\r\n");
            Ok(Expect::Text(Verb::Flush))
        }
        Command::NoOp => {
            out.extend_from_slice(b"mn\r\n");
            Ok(Expect::Meta {
                verb: Verb::NoOp,
                token,
                key: Vec::new(),
            })
        }
    }
}

/// Appends a multi-get of `keys` (nothing on refusal: every key is checked first). Text: one
/// `get`; meta: a quiet `mg` per key, tokens `base..`, closed by `mn`.
pub(crate) fn encode_multi<K: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    keys: &[K],
    meta: bool,
    base: u32,
) -> Result<Expect, Refused> {
    let mut list = Keys::default();
    for key in keys {
        check_key(key.as_ref())?;
        list.push(key.as_ref());
    }
    if meta {
        for (i, key) in keys.iter().enumerate() {
            out.extend_from_slice(b"mg ");
            out.extend_from_slice(key.as_ref());
            out.extend_from_slice(b" v k");
            flag(out, b'O', u64::from(base) + i as u64);
            out.extend_from_slice(b" q\r\n");
        }
        out.extend_from_slice(b"mn\r\n");
        return Ok(Expect::MetaBatch {
            keys: list,
            base,
            next: 0,
        });
    }
    out.extend_from_slice(b"get");
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key.as_ref());
    }
    out.extend_from_slice(b"\r\n");
    Ok(Expect::TextGet {
        keys: list,
        next: 0,
        cas: false,
    })
}
