//! Telemetry, read across by every layer and calling back into none: counters and their
//! snapshots, the wait-time histogram, the rate-limited reporter, and the port census.

pub(crate) mod counters;
#[cfg(feature = "metrics")]
pub(crate) mod export;
pub(crate) mod histogram;
pub mod ports;
pub(crate) mod report;

pub use counters::{ClosedCounts, DialStats, FailureCounts, PoolStats};
pub use histogram::WaitPercentiles;
