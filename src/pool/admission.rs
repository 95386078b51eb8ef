//! The one admission path every `get` takes — plain, through `fan_out`, or through a bulkhead —
//! with one deadline: the bulkhead's permit and a free connection share the caller's
//! `wait_timeout`, each stage's refusals counted where they happened.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use deadpool::managed::{self, Object, TimeoutType, Timeouts};

use super::bulkhead::{Limit, LimitPermit, Refused};
use super::conn::Conn;
use super::gate::Counted;
use super::inner::{PoolEvent, PoolInner};
use super::manager::Verdict;
use super::reaper;
use super::supply::{REAPER_RUNNING, convert};
use crate::connector::Connector;
use crate::error::PoolError;

/// A connection for `caller`, with no bulkhead: the pool's stage alone, one future fewer
/// between the caller and deadpool on the common path.
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
    let mut deadline = None;
    let permit = match bulkhead {
        None => None,
        Some(limit) => {
            let started = Instant::now();
            // wait_timeout is validated at most 24 h, so the deadline exists.
            let deadline =
                *deadline.insert(started.checked_add(pool.wait_timeout).unwrap_or(started));
            limit.follow(pool.default_limit());
            let max_waiters = pool.max_waiters.load(Ordering::Relaxed);
            match limit.acquire(deadline, max_waiters).await {
                Ok(permit) => Some(permit),
                Err(refused) => {
                    let event = match refused {
                        Refused::Saturated => PoolEvent::BulkheadSaturated,
                        Refused::TimedOut => PoolEvent::BulkheadTimeout,
                        Refused::Closed => PoolEvent::Closed,
                    };
                    let err = refused.error();
                    pool.report(event, &format_args!("bulkhead {}: {err}", limit.name));
                    return Err(err);
                }
            }
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

/// The pool's stage: an idle connection, a free slot to create one in, or a place in the
/// bounded queue until the deadline (the caller's, or `wait_timeout` from when it queues).
async fn in_pool<C: Connector>(
    pool: &Arc<PoolInner<C>>,
    caller: &'static Location<'static>,
    deadline: Option<Instant>,
    permit: Option<LimitPermit>,
) -> Result<Conn<C>, PoolError<C::Error>> {
    let counters = &pool.counters;
    counters.gets.fetch_add(1, Ordering::Relaxed);
    // The pool's upkeep and its paused flag in one load: in the steady state (the reaper
    // running, nothing to close, not paused) nothing else to do. A closed pool needs no check
    // of its own here: deadpool refuses the get as closed, counted and reported below.
    let seen = pool.supply.upkeep.load(Ordering::Acquire);
    if seen != REAPER_RUNNING && reaper::attend(pool, seen) {
        return Err(fail(pool, PoolError::Paused));
    }
    // The time to a connection is measured from the first time the get has to wait: a get
    // served on its first poll (most of them) reads no clock and counts as no wait.
    let mut waited_since: Option<Instant> = None;
    // Its place in the bounded queue and its deadline, once it has had to join.
    let mut queued: Option<(Counted<'_>, Instant)> = None;
    let mut failed_checks = 0;
    let obj = loop {
        let got = match &queued {
            None => {
                let mut get = std::pin::pin!(pool.pool.timeout_get(&pool.first_try));
                std::future::poll_fn(|cx| {
                    let poll = get.as_mut().poll(cx);
                    if poll.is_pending() && waited_since.is_none() {
                        waited_since = Some(Instant::now());
                    }
                    poll
                })
                .await
            }
            Some((_, deadline)) => {
                let timeouts = Timeouts {
                    wait: Some(deadline.saturating_duration_since(Instant::now())),
                    ..pool.first_try
                };
                pool.pool.timeout_get(&timeouts).await
            }
        };
        let mut obj = match got {
            Ok(obj) => obj,
            Err(managed::PoolError::Timeout(TimeoutType::Wait))
                if queued.is_none() && !pool.wait_timeout.is_zero() =>
            {
                // Busy: join the bounded queue, or fail at once.
                let max = pool.max_waiters.load(Ordering::Relaxed);
                let Some(waiter) = Counted::join(&pool.waiters, max) else {
                    return Err(fail(pool, PoolError::Saturated));
                };
                counters.waited.fetch_add(1, Ordering::Relaxed);
                let now = *waited_since.get_or_insert_with(Instant::now);
                queued = Some((waiter, deadline.unwrap_or(now + pool.wait_timeout)));
                continue;
            }
            Err(e) => return Err(fail(pool, convert(e))),
        };
        // Recycled (not just made): the idle decisions, on the time deadpool read for it.
        if let Some(now) = Object::metrics(&obj).recycled {
            let manager = pool.pool.manager();
            match manager.settle(&mut obj, now) {
                Verdict::Ready => {}
                // Past its lifetime or idle timeout: closed, and the next one, or a new one. As
                // many times as the pool holds stale connections, no more: each closes for good,
                // and a new one is not recycled.
                Verdict::Stale => {
                    drop(Object::take(obj));
                    continue;
                }
                Verdict::Check => {
                    match Box::pin(manager.check_idle(obj, now, &mut waited_since)).await {
                        Ok(obj) => break obj,
                        // Closed; as deadpool does with a connection that fails its recycle,
                        // the get takes another, a bounded number of times.
                        Err(e) if failed_checks >= pool.max_size.load(Ordering::Relaxed) => {
                            return Err(fail(pool, e));
                        }
                        Err(_) => {
                            failed_checks += 1;
                            continue;
                        }
                    }
                }
            }
        }
        break obj;
    };
    match waited_since {
        None => {
            counters.wait.record_zero();
            #[cfg(feature = "metrics")]
            pool.supply.export.waited(std::time::Duration::ZERO);
        }
        // Paused while this get waited: the connection goes back, unused.
        Some(_) if pool.supply.paused() => {
            return Err(fail(pool, PoolError::Paused));
        }
        Some(t) => {
            let waited = t.elapsed();
            counters.wait.record(waited);
            #[cfg(feature = "metrics")]
            pool.supply.export.waited(waited);
        }
    }
    // Into the connection's own leak record, when the pool keeps them: a lock no other
    // connection shares. The time taken is the one the check read (or the connection's
    // making, for a new one), not another read of the clock.
    if let Some(loan) = &obj.loan {
        loan.lend(caller, obj.touched);
    }
    Ok(Conn::new(obj, pool.clone(), permit))
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
