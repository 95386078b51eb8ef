//! The commands of a [`Protocol`]: one request each, its reply read whole.

use std::collections::HashMap;

use super::error::Error;
use super::protocol::{Item, Protocol};
use super::request::{Command, Store};
use super::wire::Status;

/// What a store did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// Stored.
    Stored,
    /// Not stored: the condition of [`Store::Add`], [`Replace`](Store::Replace),
    /// [`Append`](Store::Append) or [`Prepend`](Store::Prepend) did not hold.
    NotStored,
    /// [`Store::Cas`]: the item changed since its CAS value was read.
    Exists,
    /// [`Store::Cas`]: the item is gone.
    NotFound,
}

/// The reply was the server's, but not one this request can have (a status of another verb):
/// the decoder lets through only the statuses of the request's verb, so this is unreachable
/// in practice, and still an error, never a panic.
fn unexpected(p: &Protocol, status: &dyn std::fmt::Debug) -> Error {
    Error::Mismatch {
        target: p.target.clone(),
        detail: format!("an answer of the wrong kind: {status:?}"),
    }
}

impl Protocol {
    /// The value of `key`, or `None` on a miss.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a key memcached would not take (nothing is sent), the server's
    /// error, a reply that does not fit, or an I/O error.
    pub async fn get<K: AsRef<[u8]>>(&mut self, key: K) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.item(key.as_ref(), false).await?.map(|item| item.value))
    }

    /// The item under `key` with its flags and CAS value, or `None` on a miss.
    ///
    /// # Errors
    ///
    /// As [`get`](Protocol::get).
    pub async fn gets<K: AsRef<[u8]>>(&mut self, key: K) -> Result<Option<Item>, Error> {
        self.item(key.as_ref(), true).await
    }

    async fn item(&mut self, key: &[u8], cas: bool) -> Result<Option<Item>, Error> {
        match self.call(Command::Get(key, cas)).await? {
            (item, Status::Done) => Ok(item),
            (_, Status::NotFound) => Ok(None),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// The values of the keys found, by key, in one request and one reply; misses are absent.
    /// Keys are bytes end to end: no two keys share an entry.
    ///
    /// # Errors
    ///
    /// As [`get`](Protocol::get); a refused key refuses the whole request.
    pub async fn get_multi<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<HashMap<Vec<u8>, Vec<u8>>, Error> {
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        self.recover().await?;
        self.queue_multi(keys)?;
        self.flush().await?;
        self.recv_multi(|i, value| {
            if let Some(key) = keys.get(i) {
                found.insert(key.as_ref().to_vec(), value.to_vec());
            }
        })
        .await?;
        Ok(found)
    }

    /// Stores `value` under `key` with client `flags`, expiring after `ttl` seconds (0: never;
    /// past 30 days memcached reads it as a Unix time), as `mode` says.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a key memcached would not take, a `ttl` past `i32::MAX` (memcached
    /// would read it as negative and expire the item at once), or a value longer than the
    /// connector's `max_value_size` (nothing is sent); the server's error (for example
    /// `SERVER_ERROR object too large for cache`); a reply that does not fit; an I/O error.
    pub async fn store<K: AsRef<[u8]>>(
        &mut self,
        mode: Store,
        key: K,
        value: &[u8],
        flags: u32,
        ttl: u32,
    ) -> Result<Stored, Error> {
        let command = Command::Store {
            mode,
            key: key.as_ref(),
            value,
            flags,
            ttl,
        };
        match self.call(command).await? {
            (_, Status::Ok) => Ok(Stored::Stored),
            (_, Status::NotStored) => Ok(Stored::NotStored),
            (_, Status::Exists) => Ok(Stored::Exists),
            (_, Status::NotFound) => Ok(Stored::NotFound),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// Stores `value` under `key` (flags 0), expiring after `ttl` seconds (0: never).
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store); a store the server declines is an error here.
    pub async fn set<K: AsRef<[u8]>>(
        &mut self,
        key: K,
        value: &[u8],
        ttl: u32,
    ) -> Result<(), Error> {
        match self.store(Store::Set, key, value, 0, ttl).await? {
            Stored::Stored => Ok(()),
            other => Err(unexpected(self, &other)),
        }
    }

    /// Stores `value` under `key` unless the key exists; whether it stored.
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store).
    pub async fn add<K: AsRef<[u8]>>(
        &mut self,
        key: K,
        value: &[u8],
        ttl: u32,
    ) -> Result<bool, Error> {
        Ok(self.store(Store::Add, key, value, 0, ttl).await? == Stored::Stored)
    }

    /// Stores `value` under `key` only if the key exists; whether it stored.
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store).
    pub async fn replace<K: AsRef<[u8]>>(
        &mut self,
        key: K,
        value: &[u8],
        ttl: u32,
    ) -> Result<bool, Error> {
        Ok(self.store(Store::Replace, key, value, 0, ttl).await? == Stored::Stored)
    }

    /// Adds `value` after the value stored under `key`; whether the key was there.
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store).
    pub async fn append<K: AsRef<[u8]>>(&mut self, key: K, value: &[u8]) -> Result<bool, Error> {
        Ok(self.store(Store::Append, key, value, 0, 0).await? == Stored::Stored)
    }

    /// Adds `value` before the value stored under `key`; whether the key was there.
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store).
    pub async fn prepend<K: AsRef<[u8]>>(&mut self, key: K, value: &[u8]) -> Result<bool, Error> {
        Ok(self.store(Store::Prepend, key, value, 0, 0).await? == Stored::Stored)
    }

    /// Stores `value` under `key` only if its CAS value is still `cas` (from
    /// [`gets`](Protocol::gets)): [`Stored::Exists`] if it changed since, [`Stored::NotFound`]
    /// if it is gone.
    ///
    /// # Errors
    ///
    /// As [`store`](Protocol::store).
    pub async fn cas<K: AsRef<[u8]>>(
        &mut self,
        key: K,
        value: &[u8],
        ttl: u32,
        cas: u64,
    ) -> Result<Stored, Error> {
        self.store(Store::Cas(cas), key, value, 0, ttl).await
    }

    /// Deletes `key`; whether it was there.
    ///
    /// # Errors
    ///
    /// As [`get`](Protocol::get).
    pub async fn delete<K: AsRef<[u8]>>(&mut self, key: K) -> Result<bool, Error> {
        self.found(Command::Delete(key.as_ref())).await
    }

    /// Sets the expiry of `key` to `ttl` seconds from now; whether it was there.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a `ttl` past `i32::MAX` (nothing is sent); otherwise as
    /// [`get`](Protocol::get).
    pub async fn touch<K: AsRef<[u8]>>(&mut self, key: K, ttl: u32) -> Result<bool, Error> {
        self.found(Command::Touch(key.as_ref(), ttl)).await
    }

    async fn found(&mut self, command: Command<'_>) -> Result<bool, Error> {
        match self.call(command).await? {
            (_, Status::Ok) => Ok(true),
            (_, Status::NotFound) => Ok(false),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// Adds `delta` to the number stored under `key` (wrapping at 2^64, as memcached does);
    /// the new value, or `None` if the key is absent.
    ///
    /// # Errors
    ///
    /// As [`get`](Protocol::get); a value that is not a number is the server's error.
    pub async fn incr<K: AsRef<[u8]>>(&mut self, key: K, delta: u64) -> Result<Option<u64>, Error> {
        self.arith(key.as_ref(), delta, true).await
    }

    /// Subtracts `delta` from the number stored under `key` (stopping at 0, as memcached
    /// does); the new value, or `None` if the key is absent.
    ///
    /// # Errors
    ///
    /// As [`incr`](Protocol::incr).
    pub async fn decr<K: AsRef<[u8]>>(&mut self, key: K, delta: u64) -> Result<Option<u64>, Error> {
        self.arith(key.as_ref(), delta, false).await
    }

    async fn arith(&mut self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>, Error> {
        match self.call(Command::Arith { key, delta, incr }).await? {
            (_, Status::Number(n)) => Ok(Some(n)),
            (_, Status::NotFound) => Ok(None),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// Empties the cache.
    ///
    /// # Errors
    ///
    /// The server's error, a reply that does not fit, or an I/O error.
    pub async fn flush_all(&mut self) -> Result<(), Error> {
        match self.call(Command::Flush).await? {
            (_, Status::Ok) => Ok(()),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// The server's version.
    ///
    /// # Errors
    ///
    /// As [`flush_all`](Protocol::flush_all).
    pub async fn version(&mut self) -> Result<String, Error> {
        match self.call(Command::Version).await? {
            (_, Status::Version(v)) => Ok(String::from_utf8_lossy(self.bytes(v)).into_owned()),
            (_, status) => Err(unexpected(self, &status)),
        }
    }

    /// Sends the meta no-op (`mn`) and reads its `MN`: whether the server speaks the meta
    /// protocol. A server without it answers `ERROR` (the connection stays usable) or closes
    /// the connection (a text-only proxy; an I/O error then).
    pub(super) async fn probe_meta(&mut self) -> Result<bool, Error> {
        match self.call(Command::NoOp).await {
            Ok((_, Status::Ok)) => Ok(true),
            Err(Error::Server { .. }) => Ok(false),
            Ok((_, status)) => Err(unexpected(self, &status)),
            Err(e) => Err(e),
        }
    }
}
