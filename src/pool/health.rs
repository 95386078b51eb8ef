//! Fail-fast while the target is down: one caller probes, the others get the last dial error
//! at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{DialError, DialErrorKind};

/// The shortest and longest wait between probes of a target that refuses or stalls.
const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(50);
const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Whether the target accepts connections, and who probes it.
///
/// Until a dial has succeeded (at start, and after a refusal or a timeout) only one caller at a
/// time dials: the probe. While the target is known to be down, the others get the last dial
/// error at once; while nothing is known yet, they wait for the probe's outcome. Once a dial
/// succeeds, everyone dials freely.
#[derive(Default)]
pub(crate) struct Health {
    state: Mutex<HealthState>,
    probed: tokio::sync::Notify,
}

#[derive(Default)]
struct HealthState {
    /// A dial has succeeded since the last failure.
    up: bool,
    /// The last dial error while the target is down.
    down: Option<DialError>,
    retry_at: Option<Instant>,
    backoff: Duration,
    probing: bool,
}

/// The right to dial. Dropped unfinished, it frees the probe slot.
pub(crate) struct DialTicket {
    health: Arc<Health>,
    probe: bool,
    finished: bool,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until this caller may dial, or fails at once with the last dial error while the
    /// target is down.
    pub(crate) async fn ticket(self: &Arc<Self>) -> Result<DialTicket, DialError> {
        loop {
            let probe_done = {
                let mut state = self.lock();
                if state.up {
                    return Ok(DialTicket {
                        health: self.clone(),
                        probe: false,
                        finished: false,
                    });
                }
                if let Some(down) = &state.down
                    && (state.probing || state.retry_at.is_some_and(|at| Instant::now() < at))
                {
                    return Err(down.duplicate());
                }
                if !state.probing {
                    state.probing = true;
                    return Ok(DialTicket {
                        health: self.clone(),
                        probe: true,
                        finished: false,
                    });
                }
                // Nothing known yet and a probe in flight: wait for it. A `Notified` created
                // before the lock is released cannot miss the wake-up.
                self.probed.notified()
            };
            probe_done.await;
        }
    }

    /// Whether the target is marked down now.
    pub(crate) fn is_down(&self) -> bool {
        self.lock().down.is_some()
    }
}

impl DialTicket {
    /// Records the dial's outcome.
    pub(crate) fn finish(mut self, result: Result<(), &DialError>) {
        self.record(result);
    }

    fn record(&mut self, result: Result<(), &DialError>) {
        self.finished = true;
        {
            let mut state = self.health.lock();
            if self.probe {
                state.probing = false;
            }
            match result {
                Ok(()) => {
                    state.up = true;
                    state.down = None;
                    state.retry_at = None;
                    state.backoff = Duration::ZERO;
                }
                Err(e) if matches!(e.kind(), DialErrorKind::Refused | DialErrorKind::Timeout) => {
                    state.up = false;
                    state.backoff = if self.probe {
                        (state.backoff * 2).clamp(PROBE_BACKOFF_MIN, PROBE_BACKOFF_MAX)
                    } else {
                        PROBE_BACKOFF_MIN
                    };
                    state.retry_at = Some(Instant::now() + state.backoff);
                    state.down = Some(e.duplicate());
                }
                // Other failures (ports, descriptors) say nothing about the target.
                Err(_) => {}
            }
        }
        if self.probe {
            self.health.probed.notify_waiters();
        }
    }
}

impl Drop for DialTicket {
    /// A ticket dropped unfinished is a dial that did not end within the pool's create timeout
    /// (the dial task's timer dropped it mid-connect; nothing else drops one): the target
    /// stalls, which is recorded as a timeout, so that the next gets fail fast instead of each
    /// waiting out its own create timeout (with a create timeout below the dialer's connect
    /// timeout, no dial would ever report one).
    fn drop(&mut self) {
        if !self.finished {
            let stalled = DialError::new(
                DialErrorKind::Timeout,
                None,
                Vec::new(),
                1,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the connect did not finish within the pool's create timeout",
                ),
            );
            self.record(Err(&stalled));
        }
    }
}
