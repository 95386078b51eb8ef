//! The admin endpoint's wire format: the bodies of its requests and answers as serde types,
//! shared by the [`Admin`](super::Admin) handler and the `multiloop` command, so that a renamed
//! field breaks the build rather than a responder's call.
//!
//! Request bodies refuse unknown fields. Answers are read leniently (a newer service may add
//! fields), but every field a client reads is typed here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pool::{BulkheadStats, Status};
use crate::telemetry::PoolStats;

/// The body of `POST /pools/NAME/resize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// The new cap on the pool's open sockets.
    pub max_size: usize,
}

/// The body of `POST /pools/NAME/max-waiters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxWaiters {
    /// The new bound on the pool's wait queue.
    pub max_waiters: usize,
}

/// The body of `POST /pools/NAME/limit`: the pool's default concurrency limit, or one
/// bulkhead's when `bulkhead` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// The new limit.
    pub limit: usize,
    /// The bulkhead to change, instead of the pool's default limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<String>,
}

/// The body of `pause` and `resume`: nothing, or an empty object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// A change a responder asks for; the answer to a change carries it back, as made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "body", rename_all = "kebab-case")]
pub enum Change {
    /// Every get fails at once until `Resume`.
    Pause,
    /// Undoes `Pause`.
    Resume,
    /// A new cap on open sockets.
    Resize(Resize),
    /// A new bound on the wait queue.
    MaxWaiters(MaxWaiters),
    /// A new concurrency limit.
    Limit(Limit),
}

impl Change {
    /// Whether `status` shows this change in force (a limit is not part of the status).
    pub fn shown_in(&self, status: &PoolStatus) -> bool {
        match self {
            Change::Pause => status.paused,
            Change::Resume => !status.paused,
            Change::Resize(r) => status.max_size == r.max_size as u64,
            Change::MaxWaiters(m) => status.max_waiters == m.max_waiters as u64,
            Change::Limit(_) => true,
        }
    }
}

/// As the handler logs it: `pause`, `max_size=32`, `bulkhead "batch": limit=8`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Pause => f.write_str("pause"),
            Change::Resume => f.write_str("resume"),
            Change::Resize(r) => write!(f, "max_size={}", r.max_size),
            Change::MaxWaiters(m) => write!(f, "max_waiters={}", m.max_waiters),
            Change::Limit(Limit {
                limit,
                bulkhead: None,
            }) => write!(f, "default_limit={limit}"),
            Change::Limit(Limit {
                limit,
                bulkhead: Some(b),
            }) => write!(f, "bulkhead {}: limit={limit}", escaped(b)),
        }
    }
}

/// The answer to a change that was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    /// `true`: the change was made. A client treats anything else as not made.
    pub ok: bool,
    /// The pool's name.
    pub name: String,
    /// The pool's target.
    pub target: String,
    /// The change, as made.
    pub change: Change,
    /// The pool's status after the change.
    pub status: PoolStatus,
}

/// The answer to a refused request (any 4xx or 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What is wrong and what to do.
    pub error: String,
    /// The field or part of the request at fault, such as `max_size`, `path` or
    /// `authorization`.
    #[serde(default)]
    pub field: String,
}

/// The answer to `GET /pools`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolList {
    /// Every registered pool, by name.
    pub pools: Vec<PoolSummary>,
}

/// One pool in [`PoolList`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSummary {
    /// The pool's name.
    pub name: String,
    /// The pool's target.
    pub target: String,
    /// Its status.
    pub status: PoolStatus,
}

/// The answer to `GET /pools/NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolDetail {
    /// The pool's name.
    pub name: String,
    /// The pool's target.
    pub target: String,
    /// Its status.
    pub status: PoolStatus,
    /// Its counters.
    pub stats: PoolCounts,
    /// Its bulkheads.
    pub bulkheads: Vec<BulkheadCounts>,
}

/// A pool's [`Status`] on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PoolStatus {
    pub max_size: u64,
    pub size: u64,
    pub idle: u64,
    pub in_use: u64,
    pub dialing: u64,
    pub waiting: u64,
    pub max_waiters: u64,
    pub paused: bool,
    pub closed: bool,
}

/// A pool's [`PoolStats`] on the wire; see there for each counter's meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PoolCounts {
    pub gets: u64,
    pub waited: u64,
    pub timed_out: u64,
    pub saturated: u64,
    pub paused: u64,
    pub closed_gets: u64,
    pub create_failed: u64,
    pub created: u64,
    pub create_errors: u64,
    /// [`PoolStats::handed_off`]: dials whose caller no longer waited for them (served first
    /// by a connection given back, timed out or cancelled); their connections went to the pool.
    pub handed_off: u64,
    pub recovered: u64,
    pub closed: ClosedByReason,
    pub wait_seconds: WaitSeconds,
}

/// Connections closed, by reason ([`ClosedCounts`](crate::ClosedCounts)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ClosedByReason {
    pub broken: u64,
    pub in_flight: u64,
    pub lifetime: u64,
    pub idle: u64,
    pub other: u64,
}

/// Wait-time percentiles, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct WaitSeconds {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A bulkhead's [`BulkheadStats`] on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BulkheadCounts {
    pub name: String,
    pub limit: u64,
    pub in_flight: u64,
    pub peak_in_flight: u64,
    pub waiting: u64,
    pub acquired: u64,
    pub saturated: u64,
    pub timed_out: u64,
    pub failed_in_pool: u64,
}

impl From<&Status> for PoolStatus {
    fn from(s: &Status) -> Self {
        PoolStatus {
            max_size: s.max_size as u64,
            size: s.size as u64,
            idle: s.idle as u64,
            in_use: s.in_use as u64,
            dialing: s.dialing as u64,
            waiting: s.waiting as u64,
            max_waiters: s.max_waiters as u64,
            paused: s.paused,
            closed: s.closed,
        }
    }
}

impl From<&PoolStats> for PoolCounts {
    fn from(s: &PoolStats) -> Self {
        let c = &s.closed;
        PoolCounts {
            gets: s.gets,
            waited: s.waited,
            timed_out: s.timed_out,
            saturated: s.saturated,
            paused: s.paused,
            closed_gets: s.closed_gets,
            create_failed: s.create_failed,
            created: s.created,
            create_errors: s.create_errors,
            handed_off: s.handed_off,
            recovered: s.recovered,
            closed: ClosedByReason {
                broken: c.broken,
                in_flight: c.in_flight,
                lifetime: c.lifetime,
                idle: c.idle,
                other: c.other,
            },
            wait_seconds: WaitSeconds {
                p50: s.wait.p50.as_secs_f64(),
                p90: s.wait.p90.as_secs_f64(),
                p99: s.wait.p99.as_secs_f64(),
                max: s.wait.max.as_secs_f64(),
            },
        }
    }
}

impl From<&BulkheadStats> for BulkheadCounts {
    fn from(b: &BulkheadStats) -> Self {
        BulkheadCounts {
            name: b.name.clone(),
            limit: b.limit as u64,
            in_flight: b.in_flight as u64,
            peak_in_flight: b.peak_in_flight as u64,
            waiting: b.waiting as u64,
            acquired: b.acquired,
            saturated: b.saturated,
            timed_out: b.timed_out,
            failed_in_pool: b.failed_in_pool,
        }
    }
}

/// Text from elsewhere (a pool name, an error from a service) made safe to print or log: cut
/// to `max` characters, with control characters (C0, DEL, C1) and the bidirectional overrides
/// written as `\u{..}` escapes and backslashes doubled, so that it can neither move a
/// terminal's cursor, retitle its window, nor split a log line.
///
/// ```
/// use multiloop::admin::wire::printable;
/// assert_eq!(printable("cache", 64), "cache");
/// assert_eq!(printable("\x1b]0;pwned\x07", 64), "\\u{1b}]0;pwned\\u{7}");
/// assert_eq!(printable("a\nb", 64), "a\\u{a}b");
/// assert_eq!(printable("abcdef", 3), "abc…");
/// ```
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let unsafe_char = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if unsafe_char {
            out.extend(c.escape_unicode());
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// A name quoted and made [printable], at most 64 characters: `"cache"`.
pub(crate) fn escaped(name: &str) -> String {
    format!("\"{}\"", printable(name, 64).replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_changes_round_trip() {
        assert!(serde_json::from_str::<Resize>(r#"{"max_size": 4, "x": 1}"#).is_err());
        assert!(serde_json::from_str::<NoFields>(r#"{"x": 1}"#).is_err());
        let limit: Limit = serde_json::from_str(r#"{"limit": 2}"#).unwrap();
        assert_eq!(limit.bulkhead, None);
        for change in [
            Change::Pause,
            Change::Resume,
            Change::Resize(Resize { max_size: 3 }),
            Change::MaxWaiters(MaxWaiters { max_waiters: 0 }),
            Change::Limit(Limit {
                limit: 2,
                bulkhead: Some("batch".into()),
            }),
        ] {
            let text = serde_json::to_string(&change).unwrap();
            assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
        }
    }

    #[test]
    fn printable_escapes_every_control_and_bidi_character() {
        for c in (0u32..0x20).chain(0x7f..0xa0).chain([0x202e, 0x2066]) {
            let c = char::from_u32(c).unwrap();
            let shown = printable(&format!("a{c}b"), 64);
            assert!(shown.chars().all(|c| !c.is_control()), "{shown:?}");
            assert!(
                shown.starts_with("a\\u{") && shown.ends_with('b'),
                "{shown:?}"
            );
        }
        // An escape cannot be forged: a backslash in the text is doubled.
        assert_eq!(printable("\\u{1b}", 64), "\\\\u{1b}");
        assert_eq!(escaped("a\"b"), "\"a\\\"b\"");
        // Arbitrary text: nothing unsafe comes out, and the length is bounded.
        for _ in 0..10_000 {
            let text: String = (0..rand::random_range(0..100))
                .map(|_| char::from_u32(rand::random_range(0..0x11_0000)).unwrap_or('\u{1b}'))
                .collect();
            let shown = printable(&text, 64);
            assert!(shown.chars().all(|c| !c.is_control()), "{shown:?}");
            assert!(shown.chars().count() <= 64 * 10 + 1);
        }
    }
}
