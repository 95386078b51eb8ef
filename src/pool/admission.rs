//! The one admission path every `get` takes — plain, through `fan_out`, or through a bulkhead —
//! with one deadline: the bulkhead's permit and a free connection share the caller's
//! `wait_timeout`, each stage's refusals counted where they happened.
//!
//! The pool's stage takes an idle connection from the store if one is there (a hit: no await),
//! and settles it on one read of the clock ([`settle`]). Otherwise ([`wait`]) it starts a dial
//! if the cap has room, and waits in the store's queue for whichever connection comes first,
//! returned or dialed; a busy pool's get joins the bounded queue.

use std::panic::Location;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::bulkhead::{Limit, LimitPermit, Refused};
use super::conn::Conn;
use super::dial::{self, Outcome};
use super::event::PoolEvent;
use super::gate::Counted;
use super::inner::{self, CLOSED, Object, PoolInner, REAPER_RUNNING};
use super::reaper;
use super::slot::Slot;
use crate::connector::Connector;
use crate::error::{DialError, DialErrorKind, PoolError, TimeoutKind};
use crate::telemetry::counters::CloseReason;

/// A connection for `caller`, with no bulkhead: the pool's stage alone, one future fewer
/// between the caller and the store on the common path.
pub(crate) fn plain<'a, C: Connector>(
    pool: &'a Arc<PoolInner<C>>,
    caller: &'static Location<'static>,
) -> impl Future<Output = Result<Conn<C>, PoolError<C::Error>>> + Send + 'a {
    in_pool(pool, caller, None, None)
}

/// A connection for `caller`, through `bulkhead` if given.
pub(crate) async fn get<C: Connector>(
    pool: &Arc<PoolInner<C>>,
    caller: &'static Location<'static>,
    bulkhead: Option<&Arc<Limit>>,
) -> Result<Conn<C>, PoolError<C::Error>> {
    // Before the bulkhead's stage, so that a pool whose every get a bulkhead refuses still
    // has its reaper (its error summaries, its port census).
    reaper::start(pool);
    // A plain get reads no clock until it has to wait; a bulkhead's get starts its one
    // deadline here, as the bulkhead's stage may wait.
    let (permit, deadline) = match bulkhead {
        None => (None, None),
        Some(limit) => {
            let (permit, deadline) = in_bulkhead(pool, limit).await?;
            (Some(permit), Some(deadline))
        }
    };
    let conn = in_pool(pool, caller, deadline, permit).await;
    if conn.is_err()
        && let Some(limit) = bulkhead
    {
        limit.failed_in_pool.fetch_add(1, Ordering::Relaxed);
    }
    conn
}

/// The bulkhead's stage, for a bulkhead's `get` and `acquire`: a permit, and the deadline it
/// started (`wait_timeout` from now), which the pool's stage shares. Refusals are counted by
/// the bulkhead and reported by the pool.
pub(crate) async fn in_bulkhead<C: Connector>(
    pool: &PoolInner<C>,
    limit: &Arc<Limit>,
) -> Result<(LimitPermit, Instant), PoolError<C::Error>> {
    let started = Instant::now();
    // wait_timeout is validated at most 24 h, so the deadline exists.
    let deadline = started.checked_add(pool.wait_timeout).unwrap_or(started);
    limit.follow(pool.default_limit());
    let max_waiters = pool.max_waiters.load(Ordering::Relaxed);
    match limit.acquire(deadline, max_waiters).await {
        Ok(permit) => Ok((permit, deadline)),
        Err(refused) => {
            let event = match refused {
                Refused::Saturated => PoolEvent::BulkheadSaturated,
                Refused::TimedOut => PoolEvent::BulkheadTimeout,
                Refused::Closed => PoolEvent::Closed,
            };
            let err = refused.error();
            pool.report(event, &format_args!("bulkhead {}: {err}", limit.name));
            Err(err)
        }
    }
}

/// A get that had to wait: since when, until when, and its place in the bounded queue once
/// it has had to join it.
struct Waiting<'a> {
    since: Instant,
    deadline: Instant,
    place: Option<Counted<'a>>,
}

impl Waiting<'_> {
    /// Waiting from `since`, until the caller's deadline or `wait_timeout` from `since`.
    fn new<C: Connector>(pool: &PoolInner<C>, since: Instant, deadline: Option<Instant>) -> Self {
        Waiting {
            since,
            // wait_timeout is validated at most 24 h, so the deadline exists.
            deadline: deadline
                .unwrap_or_else(|| since.checked_add(pool.wait_timeout).unwrap_or(since)),
            place: None,
        }
    }
}

/// The pool's stage: an idle connection, a new one, or one given back while this get waits,
/// until the deadline (the caller's, or `wait_timeout` from when it first has to wait).
async fn in_pool<C: Connector>(
    pool: &Arc<PoolInner<C>>,
    caller: &'static Location<'static>,
    deadline: Option<Instant>,
    permit: Option<LimitPermit>,
) -> Result<Conn<C>, PoolError<C::Error>> {
    pool.counters.gets.fetch_add(1, Ordering::Relaxed);
    // The pool's upkeep, paused and closed flags in one load: in the steady state (the reaper
    // running, nothing to close, not paused, not closed) nothing else to do.
    let seen = pool.upkeep.load(Ordering::Acquire);
    if seen != REAPER_RUNNING {
        if seen & CLOSED != 0 {
            return Err(fail(pool, PoolError::Closed));
        }
        if reaper::attend(pool, seen) {
            return Err(fail(pool, PoolError::Paused));
        }
    }
    // A get served on its first poll (most of them) reads the clock once, for the idle
    // decisions, and counts as no wait.
    let mut waiting: Option<Waiting<'_>> = None;
    let mut failed_checks = 0;
    let obj = loop {
        // The store is never closed: an error is an empty store (or one whose idle connections
        // are promised to gets that waited first).
        let mut obj = match pool.store.try_get() {
            Ok(obj) => obj,
            Err(_) => {
                let w = waiting.get_or_insert_with(|| Waiting::new(pool, Instant::now(), deadline));
                // Boxed: the common checkout stays a small future.
                match Box::pin(wait(pool, w)).await {
                    Ok(obj) => obj,
                    Err(e) => return Err(fail(pool, e)),
                }
            }
        };
        let now = Instant::now();
        match settle(pool, &mut obj, now) {
            Verdict::Ready => break obj,
            // Past its lifetime or idle timeout, or broken: closed, and the next one, or a new
            // one. As many times as the pool holds such connections, no more: each closes for
            // good, and a new one is fresh.
            Verdict::Stale => inner::close(obj),
            Verdict::Check => {
                let mut waited = false;
                let checked = Box::pin(check(pool, obj, &mut waited)).await;
                if waited && waiting.is_none() {
                    // A check that had to wait is a wait, from the checkout's time.
                    waiting = Some(Waiting::new(pool, now, deadline));
                }
                match checked {
                    Ok(obj) => break obj,
                    // Closed; the get takes another, a bounded number of times.
                    Err(e) if failed_checks >= pool.max_size() => return Err(fail(pool, e)),
                    Err(_) => failed_checks += 1,
                }
            }
        }
    };
    match waiting {
        None => {
            pool.counters.wait.record_zero();
            #[cfg(feature = "metrics")]
            pool.export.waited(std::time::Duration::ZERO);
        }
        // Paused while this get waited: the connection goes back, unused.
        Some(_) if pool.paused() => {
            pool.give_back(obj);
            return Err(fail(pool, PoolError::Paused));
        }
        Some(w) => {
            let waited = w.since.elapsed();
            pool.counters.wait.record(waited);
            #[cfg(feature = "metrics")]
            pool.export.waited(waited);
        }
    }
    // Into the connection's own leak record, when the pool keeps them: a lock no other
    // connection shares. The time taken is the one the checkout read, not another read of
    // the clock.
    if let Some(loan) = &obj.loan {
        loan.lend(caller, obj.touched);
    }
    Ok(Conn::new(obj, pool.clone(), permit))
}

/// What a get does with a connection it took from the store, by [`settle`].
enum Verdict {
    /// Ready to lend.
    Ready,
    /// Broken, or past its lifetime or idle timeout: to close (its close reason is set).
    Stale,
    /// Idle past `check_after_idle`, or its connector has no peek: the connector's check is
    /// owed, by [`check`].
    Check,
}

/// The checkout's decisions on `now`: for a connection lent before, the connector's peek (no
/// round trip), then, on its idle time, whether it is past its lifetime or idle timeout, or owes the full
/// check.
#[inline]
fn settle<C: Connector>(pool: &PoolInner<C>, slot: &mut Slot<C::Conn>, now: Instant) -> Verdict {
    if slot.new {
        // Just made: its handshake was its check.
        slot.new = false;
        slot.touched = now;
        return Verdict::Ready;
    }
    let peeked = match pool.connector.peek(&mut slot.conn) {
        Some(Ok(())) => true,
        Some(Err(_)) => {
            slot.set_close_reason(CloseReason::Broken);
            return Verdict::Stale;
        }
        None => false,
    };
    let fresh = !slot.idle_for(pool.check_after_idle, now);
    // Idle for less than `check_after_idle` is idle for less than an idle timeout at least
    // as long: the common checkout asks the clock one question, not two.
    let stale = if fresh && pool.fresh_is_not_idle {
        slot.expired(now).then_some(CloseReason::Lifetime)
    } else {
        slot.stale(&pool.lifetimes, now)
    };
    // The idle timeout closes down to `min_idle`, as the reaper does: below it, a connection
    // closed here is dialed again by the reaper (its user was only slow to come back).
    if let Some(reason) = stale
        && (reason != CloseReason::Idle || pool.store.status().size > pool.min_idle)
    {
        slot.set_close_reason(reason);
        return Verdict::Stale;
    }
    slot.touched = now;
    if fresh && peeked {
        Verdict::Ready
    } else {
        Verdict::Check
    }
}

/// The full check [`settle`] found owed, under the check timeout if it does not finish on its
/// first poll. Failed, timed out or cancelled (the get dropped mid-check), the connection
/// closes, counted as broken, instead of going back to the pool with a round trip half done.
/// `waited` is set if the check had to wait.
async fn check<C: Connector>(
    pool: &PoolInner<C>,
    obj: Object<C>,
    waited: &mut bool,
) -> Result<Object<C>, PoolError<C::Error>> {
    obj.set_close_reason(CloseReason::Broken);
    let mut held = Checking::<C>(Some(obj));
    let Some(obj) = held.0.as_mut() else {
        return Err(PoolError::Closed);
    };
    let result = {
        let mut check = pin!(pool.connector.check(&mut obj.conn));
        // Most checks finish on their first poll: only one that has to wait gets a timer.
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(check.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => {
                *waited = true;
                match tokio::time::timeout(pool.check_timeout, check).await {
                    Ok(result) => result,
                    Err(_) => return Err(PoolError::Timeout(TimeoutKind::Check)),
                }
            }
        }
    };
    result.map_err(PoolError::Backend)?;
    obj.set_close_reason(CloseReason::Other);
    held.0.take().ok_or(PoolError::Closed)
}

/// A connection under its full check at checkout: dropped unsettled, it closes (its close
/// reason already says broken) rather than returning to the pool.
struct Checking<C: Connector>(Option<Object<C>>);

impl<C: Connector> Drop for Checking<C> {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            inner::close(obj);
        }
    }
}

/// The store had no idle connection: start a dial if the cap has room, and wait in the
/// store's queue for the first connection to arrive (this get's dial's, or one given back),
/// until the deadline. While its own dial runs, the get waits for the dial's outcome (bounded
/// by the create timeout), and fails with the dial's error.
async fn wait<'a, C: Connector>(
    pool: &'a Arc<PoolInner<C>>,
    w: &mut Waiting<'a>,
) -> Result<Object<C>, PoolError<C::Error>> {
    {
        // The reaper may have the idle connections out of the store for a moment: what looks
        // empty while it does is not, and worth no dial.
        let _sweep = pool
            .sweeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(obj) = pool.store.try_get() {
            return Ok(obj);
        }
    }
    // Dropped after the place in the store's queue, below, on every path out (cancelled
    // included).
    let _shed = ShedIfOver(pool);
    // This get's dial in progress: how it ends.
    let mut own: Option<oneshot::Receiver<Outcome<C::Error>>> = None;
    // Its place in the store's queue, kept for as long as it waits.
    let mut taken = pin!(pool.store.timeout_get(None));
    let mut expiry = pin!(tokio::time::sleep_until(w.deadline.into()));
    loop {
        if own.is_none() {
            if let Some(room) = pool.try_room() {
                own = Some(dial::spawn(pool, room)?);
            } else if w.place.is_none() {
                // Busy: a place in the bounded queue, or fail at once.
                if w.deadline <= w.since {
                    return Err(PoolError::Timeout(TimeoutKind::Wait));
                }
                let max = pool.max_waiters.load(Ordering::Relaxed);
                let place = Counted::join(&pool.waiters, max).ok_or(PoolError::Saturated)?;
                w.place = Some(place);
                pool.counters.waited.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            biased;
            taken = &mut taken => {
                let obj = taken.map_err(|_| PoolError::Closed)?;
                if pool.is_closed() {
                    // Promised before the close: it closes on its way back.
                    pool.give_back(obj);
                    return Err(PoolError::Closed);
                }
                return Ok(obj);
            }
            outcome = outcome_of(own.as_mut()), if own.is_some() => {
                own = None;
                match outcome {
                    // Its connection is in the store, this get's unless an older waiter's.
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(PoolError::Dial(DialError::new(
                        DialErrorKind::Io,
                        None,
                        Vec::new(),
                        0,
                        std::io::Error::other("the connection setup task panicked"),
                    ))),
                }
            }
            room = pool.room(), if own.is_none() => match room {
                Some(room) => own = Some(dial::spawn(pool, room)?),
                None => return Err(PoolError::Closed),
            },
            () = &mut expiry, if own.is_none() => return Err(PoolError::Timeout(TimeoutKind::Wait)),
        }
    }
}

/// A get leaving the store's queue after an idle connection was promised to it (a cancelled
/// get, woken but not polled again) passes the promise on to the next waiter, or leaves the
/// connection free in the store. While the pool is over its cap (shrunk, or closed: no reaper
/// tick sheds then), that connection must close, not wait there.
struct ShedIfOver<'a, C: Connector>(&'a PoolInner<C>);

impl<C: Connector> Drop for ShedIfOver<'_, C> {
    fn drop(&mut self) {
        if self.0.sockets.over() > 0 {
            self.0.shed();
        }
    }
}

/// How this get's dial ended; never, without one (its branch is off then).
async fn outcome_of<E>(
    own: Option<&mut oneshot::Receiver<Outcome<E>>>,
) -> Result<Outcome<E>, oneshot::error::RecvError> {
    match own {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// Counts a failed get in exactly one counter, reports it (rate-limited), and returns it.
fn fail<C: Connector>(pool: &PoolInner<C>, err: PoolError<C::Error>) -> PoolError<C::Error> {
    let c = &pool.counters;
    let counter = match &err {
        PoolError::Timeout(_) => &c.timed_out,
        PoolError::Saturated => &c.saturated,
        PoolError::Paused => &c.paused,
        PoolError::Closed => &c.closed_gets,
        PoolError::Dial(_) | PoolError::Backend(_) => &c.create_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    pool.report(PoolEvent::of(&err), &err);
    err
}
