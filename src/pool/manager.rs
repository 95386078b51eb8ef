//! The deadpool manager: `create` takes a connection from the [`Supply`], `recycle` checks an
//! idle one before reuse. deadpool is the model: a two-method trait, nothing more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use super::slot::Slot;
use super::supply::{CreateError, Supply};
use crate::connector::Connector;
use crate::telemetry::counters::CloseReason;

pub(crate) struct Manager<C: Connector> {
    pub(crate) supply: Arc<Supply<C>>,
    /// Applied by `recycle` itself, only to checks that do not finish at once.
    pub(crate) check_timeout: Duration,
    /// Below this idle time, only the connector's peek runs.
    pub(crate) check_after_idle: Duration,
    /// Whether `check_after_idle` is at most the idle timeout (or there is none), so that a
    /// connection idle for less than the one is not past the other.
    pub(crate) fresh_is_not_idle: bool,
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
}

impl<C: Connector> managed::Manager for Manager<C> {
    type Type = Slot<C::Conn>;
    type Error = CreateError<C::Error>;

    async fn create(&self) -> Result<Slot<C::Conn>, CreateError<C::Error>> {
        self.supply.obtain().await
    }

    async fn recycle(
        &self,
        slot: &mut Slot<C::Conn>,
        _: &Metrics,
    ) -> RecycleResult<CreateError<C::Error>> {
        let now = Instant::now();
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
            return Err(RecycleError::message("past its lifetime or idle timeout"));
        }
        slot.touched = now;
        // An idle slot's close reason is `Other`: it changes only on the way to a close.
        if fresh && let Some(peeked) = self.supply.connector.peek(&mut slot.conn) {
            // Used moments ago: no round trip. The peek cannot be cancelled half way.
            return peeked.map_err(|e| {
                slot.set_close_reason(CloseReason::Broken);
                RecycleError::Backend(CreateError::Backend(e))
            });
        }
        // If the check is cancelled or times out, the connection counts as broken.
        slot.set_close_reason(CloseReason::Broken);
        // The round trip, in a future of its own: the common checkout above stays a small
        // state machine (deadpool moves it by value), and only a full check pays for the box.
        Box::pin(self.full_check(slot)).await
    }

    /// Closes are counted when a [`Slot`] drops, on every path, so detaching counts nothing.
    fn detach(&self, _: &mut Slot<C::Conn>) {}
}
