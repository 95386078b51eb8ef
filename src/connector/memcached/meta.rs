//! Meta protocol reply lines (`VA`, `HD`, `EN`, `NS`, `EX`, `NF`, `MN`): their flags read word
//! by word, and the one-reply requests they answer matched by opaque token and echoed key.

use super::wire::{
    Decoded, Mismatch, Status, Step, Value, Verb, block, failure, mismatch, number, value_len,
};

/// A meta reply line: its code, size (for `VA`), and the flags multiloop reads.
pub(super) struct Meta<'a> {
    pub(super) code: [u8; 2],
    pub(super) size: Option<&'a [u8]>,
    pub(super) token: Option<u32>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) flags: u32,
    pub(super) cas: u64,
}

/// The first word of `s` and what follows its space.
#[inline]
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', s) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

impl<'a> Meta<'a> {
    pub(super) fn parse(l: &'a [u8]) -> Result<Meta<'a>, Mismatch> {
        let (code, mut rest) = word(l);
        let code = match code {
            [a, b] => [*a, *b],
            _ => return Err(mismatch("not a meta reply", l)),
        };
        let mut meta = Meta {
            code,
            size: None,
            token: None,
            key: None,
            flags: 0,
            cas: 0,
        };
        if code == *b"VA" {
            let (size, after) = word(rest);
            if size.is_empty() {
                return Err(mismatch("a VA line without a size", l));
            }
            meta.size = Some(size);
            rest = after;
        }
        if l.ends_with(b" ") {
            return Err(mismatch("a meta reply ending in a space", l));
        }
        while !rest.is_empty() {
            let (part, after) = word(rest);
            rest = after;
            let Some((&flag, value)) = part.split_first() else {
                return Err(mismatch("an empty meta flag", l));
            };
            match flag {
                b'O' => {
                    let t = number(value).and_then(|t| u32::try_from(t).ok());
                    meta.token = Some(t.ok_or_else(|| mismatch("a bad opaque token", l))?);
                }
                b'k' => meta.key = Some(value),
                b'f' => {
                    let f = number(value).and_then(|f| u32::try_from(f).ok());
                    meta.flags = f.ok_or_else(|| mismatch("bad flags", l))?;
                }
                b'c' => meta.cas = number(value).ok_or_else(|| mismatch("a bad CAS value", l))?,
                // Flags multiloop did not ask for are not read, but must be well formed.
                f if f.is_ascii_alphabetic() => {}
                _ => return Err(mismatch("a malformed meta flag", l)),
            }
        }
        Ok(meta)
    }
}

pub(super) fn meta_line(
    l: &[u8],
    verb: Verb,
    token: u32,
    key: &[u8],
    buf: &[u8],
    max_value: usize,
) -> Result<Decoded, Mismatch> {
    let header = l.len() + 2;
    let only = |status| {
        Ok(Decoded::Step(Step {
            used: header,
            value: None,
            status: Some(status),
        }))
    };
    if verb == Verb::NoOp {
        return match l {
            b"MN" => only(Status::Ok),
            // A server without the meta protocol read `mn` whole and did not know it.
            b"ERROR" => only(Status::Failed {
                line: 0..l.len(),
                fatal: false,
            }),
            _ => Err(mismatch("not the MN of a no-op", l)),
        };
    }
    // Meta errors carry no token; the request in front is the one they answer.
    if let Some(status) = failure(l, 0, verb == Verb::Store && l.starts_with(b"CLIENT_ERROR")) {
        return only(status);
    }
    let meta = Meta::parse(l)?;
    if meta.token != Some(token) {
        return Err(mismatch(
            "a reply whose opaque token is not its request's",
            l,
        ));
    }
    if meta.key.is_some_and(|k| k != key) {
        return Err(mismatch("a reply whose key is not its request's", l));
    }
    let status = match (verb, &meta.code) {
        (Verb::Get | Verb::Arith, b"VA") => {
            if verb == Verb::Get && meta.key.is_none() {
                return Err(mismatch("a value without its key", l));
            }
            let len = value_len(meta.size.unwrap_or_default(), max_value, l)?;
            let data = match block(buf, header, len)? {
                Ok(data) => data,
                Err(need) => return Ok(Decoded::Need(need)),
            };
            let status = match verb {
                Verb::Arith => Status::Number(
                    number(&buf[data.clone()])
                        .ok_or_else(|| mismatch("an arithmetic result that is no number", l))?,
                ),
                _ => Status::Done,
            };
            return Ok(Decoded::Step(Step {
                used: data.end + 2,
                value: Some(Value {
                    index: 0,
                    flags: meta.flags,
                    cas: meta.cas,
                    data,
                }),
                status: Some(status),
            }));
        }
        (Verb::Get | Verb::Touch, b"EN") | (Verb::Store | Verb::Delete | Verb::Arith, b"NF") => {
            Status::NotFound
        }
        (Verb::Store | Verb::Delete | Verb::Touch, b"HD") => Status::Ok,
        (Verb::Store, b"NS") => Status::NotStored,
        (Verb::Store | Verb::Delete, b"EX") => Status::Exists,
        _ => {
            return Err(mismatch(
                "a meta reply that answers no request of this kind",
                l,
            ));
        }
    };
    only(status)
}
