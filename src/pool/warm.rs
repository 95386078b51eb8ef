//! Warm-up: opens connections until `min_idle` are open, a few dials at a time.

use std::sync::Arc;

use futures_util::StreamExt;

use super::dial;
use super::inner::PoolInner;
use crate::connector::Connector;
use crate::error::PoolError;

/// Opens connections until `min_idle` are open, at most `warm_up_concurrency` dials at a
/// time; returns how many it opened. It never waits for a busy pool (no room under the cap:
/// a pool in use is warm), and its connections go to the store like any other dial's.
pub(crate) async fn fill<C: Connector>(
    pool: &Arc<PoolInner<C>>,
) -> Result<usize, PoolError<C::Error>> {
    let _one_at_a_time = pool.filling.lock().await;
    let before = pool.store.status().size;
    if before >= pool.min_idle || pool.is_closed() {
        return Ok(0);
    }
    let outcomes: Vec<_> = futures_util::stream::iter(0..pool.min_idle - before)
        .map(|_| async {
            // No room under the cap: the pool is in use, so warm.
            let room = pool.warm_room().await.ok_or(None)?;
            let outcome = dial::spawn(pool, room).map_err(Some)?;
            match outcome.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            }
        })
        .buffer_unordered(pool.warm_up_concurrency)
        .collect()
        .await;
    let opened = outcomes.iter().filter(|o| o.is_ok()).count();
    match outcomes.into_iter().find_map(Result::err) {
        Some(Some(e)) if opened == 0 => Err(e),
        _ => Ok(opened),
    }
}
