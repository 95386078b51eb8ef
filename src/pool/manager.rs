//! The deadpool manager: `create` takes a connection from the [`Supply`], `recycle` checks an
//! idle one before reuse. deadpool is the model: a two-method trait, nothing more.
//!
//! A checkout reads the clock once, as deadpool does: `recycle` runs what needs no clock (the
//! connector's peek), deadpool stamps the object's `recycled` time as it hands it out, and
//! admission takes the idle decisions on that stamp ([`Manager::settle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};

use super::slot::Slot;
use super::supply::{CreateError, Supply};
use crate::connector::Connector;
use crate::error::{PoolError, TimeoutKind};
use crate::telemetry::counters::CloseReason;

pub(crate) struct Manager<C: Connector> {
    pub(crate) supply: Arc<Supply<C>>,
    /// Applied by the full check itself, only to checks that do not finish at once.
    pub(crate) check_timeout: Duration,
    /// Below this idle time, only the connector's peek runs.
    pub(crate) check_after_idle: Duration,
    /// Whether `check_after_idle` is at most the idle timeout (or there is none), so that a
    /// connection idle for less than the one is not past the other.
    pub(crate) fresh_is_not_idle: bool,
}

/// What admission does with a connection deadpool recycled, by [`Manager::settle`].
pub(crate) enum Verdict {
    /// Ready to lend.
    Ready,
    /// Past its lifetime or idle timeout: to close (its close reason is set). The get tries
    /// again.
    Stale,
    /// Idle past `check_after_idle` and only peeked: the connector's check is owed, by
    /// [`Manager::check_idle`].
    Check,
}

impl<C: Connector> Manager<C> {
    /// The connector's check, under the check timeout if it does not finish on its first poll.
    async fn full_check(&self, slot: &mut Slot<C::Conn>) -> RecycleResult<CreateError<C::Error>> {
        let result = {
            let mut check = std::pin::pin!(self.supply.connector.check(&mut slot.conn));
            // Most checks (Raw's peek) finish on their first poll: only a check that has to wait
            // gets a timer, so the common checkout registers none.
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(check.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => {
                    match tokio::time::timeout(self.check_timeout, check).await {
                        Ok(result) => result,
                        Err(_) => return Err(RecycleError::message("check timed out")),
                    }
                }
            }
        };
        result.map_err(|e| RecycleError::Backend(CreateError::Backend(e)))?;
        slot.set_close_reason(CloseReason::Other);
        Ok(())
    }

    /// The checkout's idle decisions, on `now`, the time deadpool read as it handed the
    /// connection out: past its lifetime or idle timeout, it is to close; idle past
    /// `check_after_idle` with only a peek behind it, it owes the full check.
    #[inline]
    pub(crate) fn settle(&self, slot: &mut Slot<C::Conn>, now: Instant) -> Verdict {
        let fresh = !slot.idle_for(self.check_after_idle, now);
        // Idle for less than `check_after_idle` is idle for less than an idle timeout at least
        // as long: the common checkout asks the clock one question, not two.
        let stale = if fresh && self.fresh_is_not_idle {
            slot.expired(now).then_some(CloseReason::Lifetime)
        } else {
            slot.stale(&self.supply.lifetimes, now)
        };
        if let Some(reason) = stale {
            slot.set_close_reason(reason);
            return Verdict::Stale;
        }
        slot.touched = now;
        if fresh || !slot.peeked {
            Verdict::Ready
        } else {
            Verdict::Check
        }
    }

    /// The full check [`settle`](Manager::settle) found owed; `waited_since` is set to
    /// `started` if it has to wait. Failed, timed out or cancelled (the get dropped mid-check),
    /// the connection closes, counted as broken, instead of going back to the pool with a round
    /// trip half done.
    pub(crate) async fn check_idle(
        &self,
        obj: Object<Manager<C>>,
        started: Instant,
        waited_since: &mut Option<Instant>,
    ) -> Result<Object<Manager<C>>, PoolError<C::Error>> {
        obj.set_close_reason(CloseReason::Broken);
        let mut held = Checking(Some(obj));
        let Some(obj) = held.0.as_mut() else {
            return Err(PoolError::Closed);
        };
        let result = {
            let mut check = std::pin::pin!(self.full_check(&mut **obj));
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(check.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => {
                    waited_since.get_or_insert(started);
                    check.await
                }
            }
        };
        match result {
            Ok(()) => held.0.take().ok_or(PoolError::Closed),
            Err(RecycleError::Backend(CreateError::Backend(e))) => Err(PoolError::Backend(e)),
            Err(_) => Err(PoolError::Timeout(TimeoutKind::Check)),
        }
    }
}

/// A connection under its full check at checkout: dropped unsettled, it closes (its close
/// reason already says broken) rather than returning to the pool.
struct Checking<C: Connector>(Option<Object<Manager<C>>>);

impl<C: Connector> Drop for Checking<C> {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            drop(Object::take(obj));
        }
    }
}

impl<C: Connector> managed::Manager for Manager<C> {
    type Type = Slot<C::Conn>;
    type Error = CreateError<C::Error>;

    async fn create(&self) -> Result<Slot<C::Conn>, CreateError<C::Error>> {
        self.supply.obtain().await
    }

    /// What needs no clock: the connector's peek, or, for a connector without one, its check
    /// (on every checkout, as it has nothing cheaper). The idle decisions follow in
    /// [`Manager::settle`].
    async fn recycle(
        &self,
        slot: &mut Slot<C::Conn>,
        _: &Metrics,
    ) -> RecycleResult<CreateError<C::Error>> {
        // An idle slot's close reason is `Other`: it changes only on the way to a close.
        if let Some(peeked) = self.supply.connector.peek(&mut slot.conn) {
            slot.peeked = true;
            // The peek cannot be cancelled half way.
            return peeked.map_err(|e| {
                slot.set_close_reason(CloseReason::Broken);
                RecycleError::Backend(CreateError::Backend(e))
            });
        }
        slot.peeked = false;
        // No peek, so a round trip: not for a connection about to close anyway. Off the
        // common path, so a clock read of its own.
        if let Some(reason) = slot.stale(&self.supply.lifetimes, Instant::now()) {
            slot.set_close_reason(reason);
            return Err(RecycleError::message("past its lifetime or idle timeout"));
        }
        // If the check is cancelled or times out, the connection counts as broken.
        slot.set_close_reason(CloseReason::Broken);
        // The round trip, in a future of its own: the common checkout above stays a small
        // state machine (deadpool moves it by value), and only a full check pays for the box.
        // Its wait is seen by admission's first-poll wrapper.
        Box::pin(self.full_check(slot)).await
    }

    /// Closes are counted when a [`Slot`] drops, on every path, so detaching counts nothing.
    fn detach(&self, _: &mut Slot<C::Conn>) {}
}
