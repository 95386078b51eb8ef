//! The pool's one background task: closes idle and over-age connections, keeps `min_idle` open,
//! warns about leaks and port utilization, and flushes error summaries.
//!
//! It holds a weak handle to the pool and ends when the pool is dropped or closed.

use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::connector::Connector;
use crate::pool::{Pool, PoolInner, report};
use crate::telemetry::CloseReason;

/// How often the reaper wakes: a quarter of the shortest lifetime it enforces, within
/// 50 ms to 1 s.
fn tick<C: Connector>(inner: &PoolInner<C>) -> Duration {
    let lifetimes = inner.shared.lifetimes;
    [
        lifetimes.idle_timeout,
        lifetimes.max_lifetime,
        inner.leak_threshold,
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(Duration::from_secs(1), |d| d / 4)
    .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How often port utilization is read from `/proc`.
const PORT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) fn spawn<C: Connector>(weak: Weak<PoolInner<C>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut next_port_check = Instant::now();
        loop {
            let period = match weak.upgrade() {
                Some(inner) => tick(&inner),
                None => return,
            };
            tokio::time::sleep(period).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.pool.is_closed() {
                return;
            }
            let pool = Pool { inner };
            reap(&pool);
            warn_leaks(&pool);
            flush_reports(&pool);
            if pool.inner.port_warning.is_some() && Instant::now() >= next_port_check {
                next_port_check = Instant::now() + PORT_CHECK_INTERVAL;
                check_ports(&pool).await;
            }
            if pool.status().size < pool.inner.min_idle && !pool.target_down() {
                let _ = pool.warm_up().await;
            }
        }
    });
}

/// Closes idle connections past the idle timeout (down to `min_idle`) and any past their
/// lifetime.
fn reap<C: Connector>(pool: &Pool<C>) {
    let inner = &*pool.inner;
    let lifetimes = inner.shared.lifetimes;
    let now = Instant::now();
    let mut above_min = inner.pool.status().size.saturating_sub(inner.min_idle);
    let removed = inner.pool.retain(|slot, _| {
        if slot.expired(now) {
            slot.set_close_reason(CloseReason::Lifetime);
            return false;
        }
        if above_min > 0
            && lifetimes
                .idle_timeout
                .is_some_and(|t| now.duration_since(slot.idle_since) >= t)
        {
            above_min -= 1;
            slot.set_close_reason(CloseReason::Idle);
            return false;
        }
        true
    });
    // The connections close here, outside deadpool's lock.
    drop(removed);
}

/// One warning per connection held past the leak threshold, naming where it was taken.
fn warn_leaks<C: Connector>(pool: &Pool<C>) {
    let Some(threshold) = pool.inner.leak_threshold else {
        return;
    };
    let now = Instant::now();
    let mut leaks = Vec::new();
    {
        let mut held = pool.inner.checkouts.lock();
        for (_, c) in held.iter_mut() {
            let age = now.duration_since(c.taken);
            if !c.warned && age >= threshold {
                c.warned = true;
                leaks.push((c.caller, age));
            }
        }
    }
    // Logged after the lock is released.
    for (caller, age) in leaks.into_iter().take(16) {
        tracing::warn!(
            target = %pool.inner.target,
            taken_at = %caller,
            held = ?age,
            threshold = ?threshold,
            "multiloop pool: a connection has been held longer than the leak threshold; \
             drop it when done, or raise PoolBuilder::leak_threshold if this is by design"
        );
    }
}

fn flush_reports<C: Connector>(pool: &Pool<C>) {
    let target = &pool.inner.target;
    pool.inner.reporter.flush(|kind, count, window| {
        let what = match kind {
            report::WAIT_TIMEOUT => "wait timeouts",
            report::SATURATED => "saturated gets",
            report::CREATE_FAILED => "connection setup failures",
            _ => "port utilization warnings",
        };
        tracing::warn!(%target, count, window = ?window, "multiloop pool: {count} more {what} in the last window");
    });
    pool.inner.dialer.flush_reports();
}

/// Reads the port budget towards the target and warns above the threshold.
async fn check_ports<C: Connector>(pool: &Pool<C>) {
    let Some(threshold) = pool.inner.port_warning else {
        return;
    };
    // A unix socket uses no ports.
    let Some(target) = pool.inner.target.tcp() else {
        return;
    };
    let range = pool.inner.dialer.local_port_range();
    let snap = tokio::task::spawn_blocking(move || crate::ports::snapshot(target, range)).await;
    let Ok(Ok(snap)) = snap else {
        return;
    };
    let utilization = snap.utilization();
    if utilization < threshold {
        return;
    }
    pool.inner.reporter.report(report::PORTS, |suppressed| {
        tracing::warn!(
            %target,
            utilization,
            threshold,
            busiest = %snap.summary(),
            time_wait = snap.time_wait(),
            suppressed_in_last_window = suppressed,
            "multiloop: a source address is close to running out of ports towards the target; \
             spread over more sources or reuse connections longer"
        );
    });
}
