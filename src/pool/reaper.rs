//! The pool's one background task: closes idle and over-age connections, keeps `min_idle` open,
//! warns about leaks and port utilization, and flushes error summaries.
//!
//! It holds a weak handle to the pool and ends when the pool is dropped or closed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::event::PoolEvent;
use super::inner::{CLOSED, PAUSED, PoolInner, REAPER_RUNNING, RUNTIME_GONE};
use super::slot::Slot;
use super::warm;
use crate::connector::Connector;
use crate::telemetry::counters::CloseReason;
use crate::telemetry::ports;
use crate::telemetry::report::ReportKind;

/// How often the reaper wakes: a quarter of the shortest lifetime it enforces, or the report
/// window if shorter (so that a window's summary comes soon after it ends), within 50 ms to
/// 1 s.
fn tick<C: Connector>(inner: &PoolInner<C>) -> Duration {
    let lifetimes = inner.lifetimes;
    [
        lifetimes.idle_timeout.map(|d| d / 4),
        lifetimes.max_lifetime.map(|d| d / 4),
        inner.leak_threshold.map(|d| d / 4),
        Some(inner.reporter.window()),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(Duration::from_secs(1))
    .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How long until the next port census, by how close the last one came to the warning: every
/// 30 s while under half of it, every 5 s above that, every second from 90% of it on, so the
/// census costs least when nothing is wrong and looks closest when something is. At 100,000
/// sockets towards the target a census costs about 60 ms of CPU (`benches/census.rs`): 0.2%
/// of a core every 30 s.
fn census_interval(utilization: Option<f64>, threshold: f64) -> Duration {
    match utilization {
        Some(u) if u >= threshold * 0.9 => Duration::from_secs(1),
        Some(u) if u >= threshold * 0.5 => Duration::from_secs(5),
        _ => Duration::from_secs(30),
    }
}

/// Starts the reaper if it is not running, and closes the connections made on a runtime
/// that has shut down: for a warm-up and a bulkhead's get. The pool's stage of every `get`
/// reads the state itself, with its paused flag.
#[inline]
pub(crate) fn start<C: Connector>(pool: &Arc<PoolInner<C>>) {
    let seen = pool.upkeep.load(Ordering::Acquire);
    if seen != REAPER_RUNNING {
        attend(pool, seen);
    }
}

/// Sees to what `seen` (the pool's upkeep state, not the steady one) asks: closes the
/// connections made on a runtime that has shut down (before any is handed out), starts the
/// reaper once (again after its runtime shut down; without a runtime it does not start, and
/// the next call tries again). Returns whether the pool is paused.
#[cold]
#[inline(never)]
pub(crate) fn attend<C: Connector>(pool: &Arc<PoolInner<C>>, seen: u8) -> bool {
    if seen & CLOSED != 0 {
        // Nothing to attend to: a closed pool's connections close as they come back.
        return false;
    }
    let upkeep = &pool.upkeep;
    if seen & RUNTIME_GONE != 0
        && upkeep.fetch_and(!RUNTIME_GONE, Ordering::AcqRel) & RUNTIME_GONE != 0
    {
        close_orphans(pool);
    }
    if seen & REAPER_RUNNING == 0
        && upkeep.fetch_or(REAPER_RUNNING, Ordering::AcqRel) & REAPER_RUNNING == 0
    {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => spawn(runtime, Arc::downgrade(pool)),
            Err(_) => {
                upkeep.fetch_and(!REAPER_RUNNING, Ordering::AcqRel);
            }
        }
    }
    seen & PAUSED != 0
}

/// Closes the idle connections made on a runtime that has shut down (their I/O would fail),
/// counted as broken.
fn close_orphans<C: Connector>(pool: &PoolInner<C>) {
    pool.sweep(Slot::orphaned);
}

fn spawn<C: Connector>(runtime: tokio::runtime::Handle, weak: Weak<PoolInner<C>>) {
    runtime.spawn(async move {
        let _restart = Restart(weak.clone());
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
            if inner.is_closed() {
                return;
            }
            let pool = &*inner;
            #[cfg(feature = "metrics")]
            publish(pool);
            pool.shed();
            reap(pool);
            warn_leaks(pool);
            flush_reports(pool);
            if let Some(threshold) = pool.port_warning
                && Instant::now() >= next_port_check
            {
                let utilization = check_ports(pool).await;
                next_port_check = Instant::now() + census_interval(utilization, threshold);
            }
            if pool.store.status().size < pool.min_idle && !pool.health.is_down() {
                let _ = warm::fill(&inner).await;
            }
        }
    });
}

/// Dropped with the reaper's task. A task dropped while its pool is open (the runtime it ran on
/// shut down, as a test's runtime does, while the pool lives on in a static or in another
/// runtime) clears the started flag, so the next `get`, on a runtime that runs, starts the
/// reaper again instead of leaving the pool without one.
struct Restart<C: Connector>(Weak<PoolInner<C>>);

impl<C: Connector> Drop for Restart<C> {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade()
            && !pool.is_closed()
        {
            pool.upkeep.fetch_and(!REAPER_RUNNING, Ordering::AcqRel);
        }
    }
}

/// Closes idle connections past the idle timeout (down to `min_idle`) and any past their
/// lifetime. Connections are reused most recent first,
/// so under light load the spare ones stay idle and close here.
fn reap<C: Connector>(pool: &PoolInner<C>) {
    let lifetimes = pool.lifetimes;
    let now = Instant::now();
    let size = pool.store.status().size;
    let mut above_min = size.saturating_sub(pool.min_idle);
    let close = |slot: &Slot<C::Conn>| match slot.stale(&lifetimes, now) {
        _ if slot.orphaned() => {
            above_min = above_min.saturating_sub(1);
            true
        }
        Some(reason @ CloseReason::Lifetime) => {
            slot.set_close_reason(reason);
            above_min = above_min.saturating_sub(1);
            true
        }
        Some(reason) if above_min > 0 => {
            slot.set_close_reason(reason);
            above_min -= 1;
            true
        }
        _ => false,
    };
    pool.sweep(close);
}

/// One warning per connection held past the leak threshold, naming where it was taken.
fn warn_leaks<C: Connector>(pool: &PoolInner<C>) {
    let (Some(threshold), Some(checkouts)) = (pool.leak_threshold, &pool.checkouts) else {
        return;
    };
    let leaks = checkouts.overdue(Instant::now(), threshold);
    // Logged after the registry's locks are released.
    for (caller, age) in leaks.into_iter().take(16) {
        tracing::warn!(
            pool = %pool.name,
            target = %pool.target(),
            taken_at = %caller,
            held = ?age,
            threshold = ?threshold,
            "multiloop pool: a connection has been held longer than the leak threshold; \
             drop it when done, or raise PoolBuilder::leak_threshold if this is by design"
        );
    }
}

/// Summaries of the windows that ended: how many, and why.
fn flush_reports<C: Connector>(pool: &PoolInner<C>) {
    let target = pool.target();
    pool.reporter.flush(|event, count, window| {
        let what = event.describe();
        tracing::warn!(pool = %pool.name, %target, count, window = ?window, "multiloop pool: {count} more {what} in the last window");
    });
    pool.dialer.flush_reports();
}

/// Counts the sockets towards the target on a blocking thread, warns above the threshold, and
/// returns the busiest source's utilization.
async fn check_ports<C: Connector>(pool: &PoolInner<C>) -> Option<f64> {
    let threshold = pool.port_warning?;
    // A unix socket uses no ports; a host name is counted towards the address it last
    // resolved to.
    let target = census_target(pool)?;
    let range = pool.dialer.local_port_range();
    let snap = tokio::task::spawn_blocking(move || ports::snapshot(target, range)).await;
    let Ok(Ok(snap)) = snap else {
        return None;
    };
    #[cfg(feature = "metrics")]
    pool.export.census(&snap);
    let utilization = snap.utilization();
    if utilization < threshold {
        return Some(utilization);
    }
    pool.reporter.report(PoolEvent::Ports, |suppressed| {
        tracing::warn!(
            pool = %pool.name,
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
    Some(utilization)
}

/// The address the port census counts towards: the target's own, or for a host name the one
/// the last dial reached (none before the first).
fn census_target<C: Connector>(pool: &PoolInner<C>) -> Option<std::net::SocketAddr> {
    pool.target.tcp().or_else(|| {
        *pool
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    })
}

/// The pool's gauges and counters, to the `metrics` recorder.
#[cfg(feature = "metrics")]
fn publish<C: Connector>(pool: &PoolInner<C>) {
    let s = pool.store.status();
    let now = crate::telemetry::export::Occupancy {
        idle: s.available,
        used: s.size.saturating_sub(s.available),
        max: pool.max_size(),
        idle_min: pool.min_idle,
        pending: pool.waiters.load(Ordering::Relaxed),
        dialing: pool.dialing.load(Ordering::Relaxed),
    };
    let stats = pool.counters.snapshot();
    pool.export.publish(&now, &stats, &pool.dialer.stats());
}
