//! The gate under loom: every interleaving of the threads below, with the gate's own
//! accounting audited under its lock. Run with `--cfg multiloop_loom` (see `gate.rs`).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::Poll;

use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use super::{Gate, ONE};

/// Runs `f` in every interleaving loom explores, at most `LOOM_MAX_PREEMPTIONS` preemptions
/// per thread (3 unless set), and prints how many it ran (`--nocapture` shows it).
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(3);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, SeqCst);
        f();
    });
    eprintln!(
        "{name}: {} interleavings, preemption bound {bound}",
        runs.load(SeqCst)
    );
}

/// Checks, under the gate's lock, what must hold whenever it is called (at each grant, after
/// each resize). `held` counts permits their holders have (incremented after a grant,
/// decremented before the permit is dropped), so it never exceeds the permits out.
fn audit(gate: &Gate, held: &AtomicUsize) {
    let waiters = gate.lock();
    let free = gate.free.load(SeqCst) / ONE;
    let limit = gate.limit.load(SeqCst);
    let debt = gate.debt.load(SeqCst);
    let held = held.load(SeqCst);
    assert!(
        free + held <= limit + debt,
        "free {free} + held {held} > limit {limit} + debt {debt}"
    );
    assert!(debt == 0 || free == 0, "free {free} while in debt {debt}");
    assert!(
        free == 0 || waiters.head.is_none(),
        "free {free} while a waiter waits"
    );
}

/// Once every permit is back: nothing leaked, nothing owed, no one queued.
fn settled(gate: &Gate) {
    let waiters = gate.lock();
    assert_eq!(gate.free.load(SeqCst) / ONE, gate.limit.load(SeqCst));
    assert_eq!(gate.debt.load(SeqCst), 0);
    assert!(waiters.head.is_none() && waiters.tail.is_none());
    assert!(waiters.slots.is_empty(), "a waiter's slot outlived it");
}

/// A permit held: counted in `held`, audited, and given back.
async fn hold(gate: Arc<Gate>, held: Arc<AtomicUsize>) -> bool {
    let Some(permit) = gate.acquire().await else {
        return false;
    };
    held.fetch_add(1, SeqCst);
    audit(&gate, &held);
    held.fetch_sub(1, SeqCst);
    drop(permit);
    true
}

/// Two acquires, each polled once (and so queued, or granted), then dropped: a cancelled get.
async fn poll_once_and_cancel(gate: Arc<Gate>) {
    let mut first = Some(gate.acquire());
    let mut second = Some(gate.acquire());
    poll_fn(|cx| {
        if let Some(a) = first.take() {
            let _ = pin!(a).poll(cx);
        }
        if let Some(a) = second.take() {
            let _ = pin!(a).poll(cx);
        }
        Poll::Ready(())
    })
    .await;
}

#[test]
fn cancelled_acquires_pass_their_grant_on() {
    model("cancelled_acquires_pass_their_grant_on", || {
        let gate = Gate::new(0);
        let cancel: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                thread::spawn(move || block_on(poll_once_and_cancel(gate)))
            })
            .collect();
        // Grows while they wait: each new permit goes to the first waiter, whose future may
        // be dropped before or after the grant.
        gate.set(2);
        for t in cancel {
            t.join().unwrap();
        }
        settled(&gate);
    });
}

#[test]
fn cancelled_acquires_beside_a_returned_permit() {
    model("cancelled_acquires_beside_a_returned_permit", || {
        let gate = Gate::new(1);
        let permit = gate.try_acquire().unwrap();
        let cancel = {
            let gate = gate.clone();
            thread::spawn(move || block_on(poll_once_and_cancel(gate)))
        };
        let held = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (gate, held) = (gate.clone(), held.clone());
            thread::spawn(move || block_on(hold(gate, held)))
        };
        drop(permit);
        cancel.join().unwrap();
        assert!(waiter.join().unwrap(), "the permit reached the waiter");
        settled(&gate);
    });
}

#[test]
fn permits_out_stay_within_the_limit_while_it_shrinks_and_grows() {
    model(
        "permits_out_stay_within_the_limit_while_it_shrinks_and_grows",
        || {
            let gate = Gate::new(2);
            let held = Arc::new(AtomicUsize::new(0));
            let holders: Vec<_> = (0..2)
                .map(|_| {
                    let (gate, held) = (gate.clone(), held.clone());
                    thread::spawn(move || assert!(block_on(hold(gate, held))))
                })
                .collect();
            gate.set(1);
            audit(&gate, &held);
            gate.set(2);
            for t in holders {
                t.join().unwrap();
            }
            settled(&gate);
        },
    );
}

#[test]
fn a_shrink_retires_returned_permits_before_granting_any() {
    model(
        "a_shrink_retires_returned_permits_before_granting_any",
        || {
            let gate = Gate::new(2);
            let (a, b) = (gate.try_acquire().unwrap(), gate.try_acquire().unwrap());
            let granted = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (gate, granted) = (gate.clone(), granted.clone());
                thread::spawn(move || {
                    let permit = block_on(gate.acquire());
                    granted.store(true, SeqCst);
                    permit.is_some()
                })
            };
            gate.set(1);
            // Two out, limit 1: the first back is retired, not granted.
            drop(a);
            assert!(gate.try_acquire().is_none(), "one out, limit 1");
            assert!(
                !granted.load(SeqCst),
                "granted while one was out of a limit of 1"
            );
            assert_eq!(gate.over(), 0);
            drop(b);
            assert!(waiter.join().unwrap());
            settled(&gate);
        },
    );
}

#[test]
fn a_closed_gate_grants_nothing() {
    model("a_closed_gate_grants_nothing", || {
        let gate = Gate::new(1);
        let permit = gate.try_acquire().unwrap();
        let waiter = {
            let gate = gate.clone();
            thread::spawn(move || block_on(gate.acquire()).is_some())
        };
        let cancel = {
            let gate = gate.clone();
            thread::spawn(move || block_on(poll_once_and_cancel(gate)))
        };
        gate.close();
        // Back after the close: not granted to the waiter.
        drop(permit);
        assert!(!waiter.join().unwrap(), "a permit granted after close");
        cancel.join().unwrap();
        assert!(gate.try_acquire().is_none());
        assert!(block_on(gate.acquire()).is_none());
        settled(&gate);
    });
}

#[test]
fn close_races_a_grow_and_a_return() {
    model("close_races_a_grow_and_a_return", || {
        let gate = Gate::new(1);
        let permit = gate.try_acquire().unwrap();
        let held = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (gate, held) = (gate.clone(), held.clone());
            thread::spawn(move || block_on(hold(gate, held)))
        };
        let grow = {
            let gate = gate.clone();
            thread::spawn(move || {
                gate.set(2);
                drop(permit);
            })
        };
        gate.close();
        assert!(gate.try_acquire().is_none());
        grow.join().unwrap();
        // Granted before the close, or refused: either way its permit came back.
        let _ = waiter.join().unwrap();
        settled(&gate);
    });
}

#[test]
fn a_grant_not_yet_taken_at_close_is_refused() {
    model("a_grant_not_yet_taken_at_close_is_refused", || {
        let gate = Gate::new(0);
        let closed = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (gate, closed) = (gate.clone(), closed.clone());
            thread::spawn(move || {
                block_on(async {
                    let mut acquire = pin!(gate.acquire());
                    let first = poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
                    if let Poll::Ready(permit) = first {
                        // Granted (by the grow below) before it was first polled.
                        return permit.is_some();
                    }
                    while !closed.load(SeqCst) {
                        thread::yield_now();
                    }
                    // Granted or not, it is polled again only after the close.
                    assert!(acquire.await.is_none(), "a permit handed out after close");
                    false
                })
            })
        };
        gate.set(1);
        gate.close();
        closed.store(true, SeqCst);
        let _ = waiter.join().unwrap();
        settled(&gate);
    });
}

#[test]
fn try_acquire_races_a_shrink_and_a_waiter() {
    model("try_acquire_races_a_shrink_and_a_waiter", || {
        let gate = Gate::new(2);
        let held = Arc::new(AtomicUsize::new(0));
        let first = gate.try_acquire().unwrap();
        let waiter = {
            let (gate, held) = (gate.clone(), held.clone());
            thread::spawn(move || assert!(block_on(hold(gate, held))))
        };
        let taker = {
            let (gate, held) = (gate.clone(), held.clone());
            thread::spawn(move || {
                if let Some(permit) = gate.try_acquire() {
                    held.fetch_add(1, SeqCst);
                    audit(&gate, &held);
                    held.fetch_sub(1, SeqCst);
                    drop(permit);
                }
            })
        };
        gate.set(1);
        audit(&gate, &held);
        drop(first);
        waiter.join().unwrap();
        taker.join().unwrap();
        settled(&gate);
    });
}
