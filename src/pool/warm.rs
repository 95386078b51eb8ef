//! Warm-up: opens connections until `min_idle` are open, a few dials at a time.

use deadpool::managed::{self, TimeoutType};
use futures_util::StreamExt;

use super::inner::PoolInner;
use super::supply::convert;
use crate::connector::Connector;
use crate::error::PoolError;

/// Opens connections until `min_idle` are open, at most `warm_up_concurrency` at a time;
/// returns how many it opened. It never waits for a busy pool: a pool in use is warm.
pub(crate) async fn fill<C: Connector>(pool: &PoolInner<C>) -> Result<usize, PoolError<C::Error>> {
    let before = pool.pool.status().size;
    if before >= pool.min_idle || pool.pool.is_closed() {
        return Ok(0);
    }
    // Hold every connection until all are open, so that each get creates one rather than
    // taking the one the previous get returned.
    let held: Vec<_> = futures_util::stream::iter(0..pool.min_idle - before)
        .map(|_| pool.pool.timeout_get(&pool.first_try))
        .buffer_unordered(pool.warm_up_concurrency)
        .collect()
        .await;
    let opened = pool.pool.status().size.saturating_sub(before);
    let first_error = held.into_iter().find_map(Result::err);
    match first_error {
        Some(e) if opened == 0 => match e {
            managed::PoolError::Timeout(TimeoutType::Wait) => Ok(0),
            e => Err(convert(e)),
        },
        _ => Ok(opened),
    }
}
