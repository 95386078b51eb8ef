//! Metrics through the `metrics` facade (feature `metrics`), in OpenTelemetry's
//! connection-pool names, each labelled `db.client.connection.pool.name`, plus what only
//! multiloop knows. A pool's reaper publishes the gauges and counters once per tick; the three
//! histograms are recorded where they happen. Without a recorder installed, every call is a
//! no-op. The series, their units and the alerts they serve are listed in the README.
//!
//! It takes plain values and snapshots, so it looks at no layer above it.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

use super::counters::{DialStats, PoolStats};
use super::ports::PortSnapshot;
use crate::error::DialErrorKind;

const POOL: &str = "db.client.connection.pool.name";

/// What a pool holds now, for the gauges.
pub(crate) struct Occupancy {
    pub(crate) idle: usize,
    pub(crate) used: usize,
    pub(crate) max: usize,
    pub(crate) idle_min: usize,
    pub(crate) pending: usize,
    pub(crate) dialing: usize,
}

/// A pool's handles, registered once, so that recording costs no lookup.
pub(crate) struct Export {
    name: String,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    idle_min: Gauge,
    pending: Gauge,
    dialing: Gauge,
    timeouts: Counter,
    create_time: Histogram,
    wait_time: Histogram,
    use_time: Histogram,
}

impl Export {
    pub(crate) fn new(name: &str) -> Export {
        describe();
        let n = name.to_string();
        let state = |s: &'static str| metrics::gauge!("db.client.connection.count", POOL => n.clone(), "db.client.connection.state" => s);
        Export {
            idle: state("idle"),
            used: state("used"),
            max: metrics::gauge!("db.client.connection.max", POOL => n.clone()),
            idle_min: metrics::gauge!("db.client.connection.idle.min", POOL => n.clone()),
            pending: metrics::gauge!("db.client.connection.pending_requests", POOL => n.clone()),
            dialing: metrics::gauge!("multiloop.pool.connections.dialing", POOL => n.clone()),
            timeouts: metrics::counter!("db.client.connection.timeouts", POOL => n.clone()),
            create_time: metrics::histogram!("db.client.connection.create_time", POOL => n.clone()),
            wait_time: metrics::histogram!("db.client.connection.wait_time", POOL => n.clone()),
            use_time: metrics::histogram!("db.client.connection.use_time", POOL => n.clone()),
            name: n,
        }
    }

    pub(crate) fn waited(&self, d: Duration) {
        self.wait_time.record(d.as_secs_f64());
    }

    pub(crate) fn created(&self, d: Duration) {
        self.create_time.record(d.as_secs_f64());
    }

    pub(crate) fn used(&self, d: Duration) {
        self.use_time.record(d.as_secs_f64());
    }

    /// The gauges and counters, from the pool's occupancy and stats; the reaper calls it.
    pub(crate) fn publish(&self, now: &Occupancy, stats: &PoolStats, dial: &DialStats) {
        self.idle.set(now.idle as f64);
        self.used.set(now.used as f64);
        self.max.set(now.max as f64);
        self.idle_min.set(now.idle_min as f64);
        self.pending.set(now.pending as f64);
        self.dialing.set(now.dialing as f64);
        self.timeouts.absolute(stats.timed_out);
        let n = &self.name;
        for (reason, count) in [
            ("saturated", stats.saturated),
            ("paused", stats.paused),
            ("closed", stats.closed_gets),
        ] {
            metrics::counter!("multiloop.pool.gets.shed", POOL => n.clone(), "reason" => reason)
                .absolute(count);
        }
        metrics::counter!("multiloop.pool.gets.failed", POOL => n.clone())
            .absolute(stats.create_failed);
        metrics::counter!("multiloop.pool.connections.handed_off", POOL => n.clone())
            .absolute(stats.handed_off);
        metrics::counter!("multiloop.pool.connections.recovered", POOL => n.clone())
            .absolute(stats.recovered);
        let c = stats.closed;
        for (reason, count) in [
            ("broken", c.broken),
            ("in_flight", c.in_flight),
            ("lifetime", c.lifetime),
            ("idle", c.idle),
            ("other", c.other),
        ] {
            metrics::counter!("multiloop.pool.connections.closed", POOL => n.clone(), "reason" => reason)
                .absolute(count);
        }
        for kind in DialErrorKind::ALL {
            metrics::counter!("multiloop.dial.failures", POOL => n.clone(), "kind" => kind.as_str())
                .absolute(dial.failures.get(kind));
        }
        metrics::gauge!("multiloop.dial.sources.quarantined", POOL => n.clone())
            .set(dial.quarantined as f64);
    }

    /// The last port census.
    pub(crate) fn census(&self, snap: &PortSnapshot) {
        let n = &self.name;
        metrics::gauge!("multiloop.ports.utilization", POOL => n.clone()).set(snap.utilization());
        metrics::gauge!("multiloop.ports.time_wait", POOL => n.clone())
            .set(snap.time_wait() as f64);
    }
}

/// Units and descriptions, once per process.
fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            "db.client.connection.count",
            Unit::Count,
            "connections open, by state (idle, used)"
        );
        describe_gauge!(
            "db.client.connection.max",
            Unit::Count,
            "the cap on open sockets (max_size)"
        );
        describe_gauge!(
            "db.client.connection.idle.min",
            Unit::Count,
            "connections kept open (min_idle)"
        );
        describe_gauge!(
            "db.client.connection.pending_requests",
            Unit::Count,
            "gets waiting for a connection"
        );
        describe_counter!(
            "db.client.connection.timeouts",
            Unit::Count,
            "gets that timed out"
        );
        describe_histogram!(
            "db.client.connection.create_time",
            Unit::Seconds,
            "dial and handshake of a new connection"
        );
        describe_histogram!(
            "db.client.connection.wait_time",
            Unit::Seconds,
            "time from get to a connection"
        );
        describe_histogram!(
            "db.client.connection.use_time",
            Unit::Seconds,
            "time a connection was out"
        );
        describe_gauge!(
            "multiloop.pool.connections.dialing",
            Unit::Count,
            "dials in progress"
        );
        describe_counter!(
            "multiloop.pool.gets.shed",
            Unit::Count,
            "gets refused on purpose, by reason"
        );
        describe_counter!(
            "multiloop.pool.gets.failed",
            Unit::Count,
            "gets that failed to dial or set up a connection"
        );
        describe_counter!(
            "multiloop.pool.connections.handed_off",
            Unit::Count,
            "dials whose caller was served first (or gave up), their connections pooled"
        );
        describe_counter!(
            "multiloop.pool.connections.recovered",
            Unit::Count,
            "connections made clean after a cancelled request"
        );
        describe_counter!(
            "multiloop.pool.connections.closed",
            Unit::Count,
            "connections closed, by reason"
        );
        describe_counter!(
            "multiloop.dial.failures",
            Unit::Count,
            "dial failures, by kind"
        );
        describe_gauge!(
            "multiloop.dial.sources.quarantined",
            Unit::Count,
            "source addresses out of ports, skipped for now"
        );
        describe_gauge!(
            "multiloop.ports.utilization",
            Unit::Count,
            "the busiest source's share of its ports towards the target"
        );
        describe_gauge!(
            "multiloop.ports.time_wait",
            Unit::Count,
            "sockets towards the target in TIME_WAIT"
        );
    });
}
