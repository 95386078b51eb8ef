//! The gate on std's primitives and a real tokio runtime (the loom model is `model.rs`).

use super::*;
use std::sync::atomic::AtomicUsize;

#[test]
fn a_counted_place_is_left_on_drop_and_refused_past_the_bound() {
    let n = AtomicUsize::new(0);
    let a = Counted::join(&n, 2).unwrap();
    let b = Counted::join(&n, 2).unwrap();
    assert!(Counted::join(&n, 2).is_none(), "two of two");
    assert_eq!(n.load(Relaxed), 2, "a refused join leaves no trace");
    drop(a);
    let c = Counted::enter(&n);
    assert_eq!(n.load(Relaxed), 2);
    drop((b, c));
    assert_eq!(n.load(Relaxed), 0);
}

#[test]
fn shrinking_retires_permits_as_they_come_back() {
    let gate = Gate::new(3);
    let held: Vec<_> = (0..3).map(|_| gate.try_acquire().unwrap()).collect();
    gate.set(1);
    drop(held);
    let one = gate.try_acquire();
    assert!(one.is_some());
    assert!(gate.try_acquire().is_none(), "the limit is 1");
    gate.set(2);
    assert!(gate.try_acquire().is_some());
}

/// The models are small; this is the same gate on a real multi-thread runtime, with
/// acquires cut short by timeouts at every point, a resizer and a closer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_acquires_and_resizes_leak_nothing_on_a_real_runtime() {
    use std::time::Duration;
    let gate = Gate::new(4);
    let held = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let (gate, held, peak) = (gate.clone(), held.clone(), peak.clone());
            let done = done.clone();
            tokio::spawn(async move {
                for n in 0..300u64 {
                    let wait = Duration::from_micros((i * 7 + n * 13) % 60);
                    let Ok(Some(permit)) = tokio::time::timeout(wait, gate.acquire()).await else {
                        continue;
                    };
                    let now = held.fetch_add(1, Relaxed) + 1;
                    peak.fetch_max(now, Relaxed);
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    held.fetch_sub(1, Relaxed);
                    drop(permit);
                }
                done.fetch_add(1, Relaxed);
            })
        })
        .collect();
    // Shrinks and grows for as long as the tasks run (bounded), ending at 4.
    for n in 0..1_000_000 {
        if done.load(Relaxed) == 16 {
            break;
        }
        gate.set(if n % 2 == 0 { 2 } else { 4 });
        tokio::task::yield_now().await;
    }
    gate.set(4);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Relaxed) <= 4, "more out than the largest limit");
    assert_eq!(gate.over(), 0);
    let all: Vec<_> = std::iter::from_fn(|| gate.try_acquire()).take(10).collect();
    assert_eq!(all.len(), 4, "every permit came back, none twice");
    gate.close();
    drop(all);
    assert!(gate.try_acquire().is_none());
    assert!(gate.acquire().await.is_none());
}

#[test]
fn a_shrink_racing_with_a_return_leaves_no_permit_past_the_new_limit() {
    let gate = Gate::new(2);
    let (send, recv) = std::sync::mpsc::channel::<GatePermit>();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let returner = {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            for permit in recv {
                barrier.wait();
                drop(permit);
                barrier.wait();
            }
        })
    };
    for round in 0..20_000 {
        let back = gate.try_acquire().unwrap();
        let kept = gate.try_acquire().unwrap();
        send.send(back).unwrap();
        barrier.wait();
        gate.set(1);
        barrier.wait();
        assert!(
            gate.try_acquire().is_none(),
            "round {round}: a second permit under a limit of 1 (debt {})",
            gate.over()
        );
        drop(kept);
        gate.set(2);
    }
    drop(send);
    returner.join().unwrap();
}
