//! How connections move into, out of and past the store, under loom: a connection given back
//! or landing from a dial while the cap shrinks or the pool closes. Run with
//! `--cfg multiloop_loom` (see `gate.rs`).
//!
//! The model mirrors `PoolInner`'s `give_back`, `add`, `shed`, `set_cap` and `close` line for
//! line, on the real [`Gate`]; keep the two in step. deadpool's unmanaged store, which loom
//! cannot see into, is modelled as it is built: a connection is pushed on a mutex-guarded
//! queue, then a permit of its semaphore is added (`available`); a get takes a permit, then
//! pops, and deadpool unwraps that pop, so a permit without a connection would be a panic.
//! Each connection is its socket's permit of the gate, so the gate counts every open socket.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use loom::sync::atomic::{AtomicBool, AtomicUsize, fence};
use loom::sync::{Mutex, RwLock};
use loom::thread;

use super::super::gate::{Gate, GatePermit};

/// deadpool's unmanaged store: the queue, and its semaphore's permits.
#[derive(Default)]
struct Store {
    queue: Mutex<Vec<GatePermit>>,
    available: AtomicUsize,
}

impl Store {
    /// `Object::drop` and `try_add`: the push, then the permit.
    fn push(&self, conn: GatePermit) {
        self.queue.lock().unwrap().push(conn);
        self.available.fetch_add(1, Release);
    }

    /// `try_get`: a permit if one is there, then the pop.
    fn try_pop(&self) -> Option<GatePermit> {
        let mut n = self.available.load(Acquire);
        loop {
            if n == 0 {
                return None;
            }
            match self.available.compare_exchange(n, n - 1, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let conn = self.queue.lock().unwrap().pop();
        assert!(
            conn.is_some(),
            "a permit without a connection (deadpool would panic)"
        );
        conn
    }

    fn idle(&self) -> usize {
        self.queue.lock().unwrap().len()
    }
}

/// The pool's state that the moves touch.
struct Pool {
    sockets: Arc<Gate>,
    store: Store,
    adding: RwLock<()>,
    closed: AtomicBool,
}

impl Pool {
    fn new(cap: usize) -> Arc<Pool> {
        Arc::new(Pool {
            sockets: Gate::new(cap),
            store: Store::default(),
            adding: RwLock::new(()),
            closed: AtomicBool::new(false),
        })
    }

    /// A connection: its socket's permit.
    fn dial(&self) -> GatePermit {
        self.sockets.try_acquire().expect("room under the cap")
    }

    fn give_back(&self, conn: GatePermit) {
        if self.sockets.over() == 0 {
            self.store.push(conn);
            fence(SeqCst);
            if self.sockets.over() > 0 {
                self.shed();
            }
        } else {
            drop(conn);
        }
    }

    fn add(&self, conn: GatePermit) {
        let _adding = self.adding.read().unwrap();
        if self.sockets.over() > 0 {
            drop(conn);
            return;
        }
        self.store.push(conn);
    }

    fn set_cap(&self, max_size: usize) {
        let _adding = self.adding.write().unwrap();
        if max_size != 0 && self.closed.load(Acquire) {
            return;
        }
        self.sockets.set(max_size);
        self.shed();
    }

    fn shed(&self) {
        fence(SeqCst);
        for _ in 0..self.sockets.over() {
            match self.store.try_pop() {
                Some(conn) => drop(conn),
                None => break,
            }
        }
    }

    fn close(&self) {
        self.closed.fetch_or(true, AcqRel);
        self.set_cap(0);
        self.sockets.close();
    }
}

/// Runs `f` on another thread, on the same pool.
fn beside(pool: &Arc<Pool>, f: impl FnOnce(&Pool) + Send + 'static) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || f(&pool))
}

/// Runs `f` in every interleaving loom explores (at most `LOOM_MAX_PREEMPTIONS` preemptions
/// a thread, 3 unless set).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}

#[test]
fn a_return_racing_with_a_shrink_leaves_no_idle_connection_past_the_cap() {
    model(|| {
        let pool = Pool::new(2);
        let (first, second) = (pool.dial(), pool.dial());
        let back = beside(&pool, move |pool| pool.give_back(first));
        pool.set_cap(1);
        back.join().unwrap();
        pool.give_back(second);
        assert!(
            pool.store.idle() <= 1,
            "{} idle past a cap of 1",
            pool.store.idle()
        );
        assert_eq!(pool.sockets.over(), 0, "every socket past the cap closed");
    });
}

#[test]
fn a_return_racing_with_a_close_leaves_nothing_open() {
    model(|| {
        let pool = Pool::new(2);
        let (first, second) = (pool.dial(), pool.dial());
        let back = beside(&pool, move |pool| pool.give_back(first));
        pool.give_back(second);
        pool.close();
        back.join().unwrap();
        assert_eq!(pool.store.idle(), 0, "an idle connection in a closed pool");
        assert_eq!(pool.sockets.over(), 0);
        assert_eq!(pool.sockets.limit(), 0);
    });
}

#[test]
fn a_dial_landing_as_the_pool_closes_closes() {
    model(|| {
        let pool = Pool::new(2);
        let landing = pool.dial();
        let dial = beside(&pool, move |pool| pool.add(landing));
        pool.close();
        dial.join().unwrap();
        assert_eq!(pool.store.idle(), 0, "a dial landed in a closed pool");
        assert_eq!(pool.sockets.over(), 0);
    });
}

#[test]
fn a_resize_racing_with_a_close_does_not_reopen_it() {
    model(|| {
        let pool = Pool::new(1);
        let lent = pool.dial();
        let resize = beside(&pool, move |pool| pool.set_cap(3));
        pool.close();
        resize.join().unwrap();
        pool.give_back(lent);
        assert_eq!(pool.sockets.limit(), 0, "the close was undone");
        assert_eq!(pool.store.idle(), 0);
    });
}

#[test]
fn gets_racing_with_a_shrink_and_returns_never_find_a_permit_without_a_connection() {
    model(|| {
        let pool = Pool::new(2);
        let (first, second) = (pool.dial(), pool.dial());
        pool.give_back(first);
        let get = beside(&pool, move |pool| {
            // A get that takes what is idle, and gives it back.
            if let Some(conn) = pool.store.try_pop() {
                pool.give_back(conn);
            }
        });
        let back = beside(&pool, move |pool| pool.give_back(second));
        pool.set_cap(1);
        get.join().unwrap();
        back.join().unwrap();
        assert!(pool.store.idle() <= 1);
        assert_eq!(pool.sockets.over(), 0);
        // Whatever is idle is counted by the store's permits, one each.
        assert_eq!(pool.store.available.load(Relaxed), pool.store.idle());
    });
}
