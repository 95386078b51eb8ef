//! The registry of connections that are out, for the leak warning.

use std::panic::Location;
use std::sync::Mutex;
use std::time::Instant;

/// Connections that are out, for the leak warning: a slab, so a checkout and its return are an
/// uncontended lock and an index, no hashing.
#[derive(Default)]
pub(crate) struct Checkouts {
    held: Mutex<slab::Slab<Checkout>>,
}

pub(crate) struct Checkout {
    pub(crate) taken: Instant,
    pub(crate) caller: &'static Location<'static>,
    pub(crate) warned: bool,
}

impl Checkouts {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, slab::Slab<Checkout>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, caller: &'static Location<'static>, taken: Instant) -> usize {
        self.lock().insert(Checkout {
            taken,
            caller,
            warned: false,
        })
    }

    pub(crate) fn remove(&self, key: usize) {
        self.lock().try_remove(key);
    }
}
