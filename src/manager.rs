//! The deadpool manager: dials through the [`Dialer`], runs the [`Connector`], checks idle
//! connections, and fails fast while the target is down.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use crate::connector::{Connector, Stream};
use crate::dial::Dialer;
use crate::error::{DialError, DialErrorKind};
use crate::pool::Target;
use crate::telemetry::{CloseReason, PoolCounters};

/// The shortest and longest wait between probes of a target that refuses or stalls.
const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(50);
const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// A pooled connection and what the pool knows about it.
pub(crate) struct Slot<T> {
    pub(crate) conn: T,
    /// When it must close: creation plus the jittered maximum lifetime.
    expires: Option<Instant>,
    /// When it was last returned to the pool (or created).
    pub(crate) idle_since: Instant,
    /// Why it is being closed, read when deadpool detaches it. Atomic, not a `Cell`, so that
    /// connections stay `Sync`.
    close_reason: AtomicU8,
}

impl<T> Slot<T> {
    pub(crate) fn set_close_reason(&self, reason: CloseReason) {
        self.close_reason.store(reason as u8, Ordering::Relaxed);
    }

    fn close_reason(&self) -> CloseReason {
        CloseReason::from_u8(self.close_reason.load(Ordering::Relaxed))
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// Lifetimes, shared by the manager and the reaper.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub(crate) max_lifetime: Option<Duration>,
    /// The fraction of `max_lifetime` taken off at random, so that connections created together
    /// do not all expire together.
    pub(crate) jitter: f64,
    pub(crate) idle_timeout: Option<Duration>,
}

impl Lifetimes {
    fn expiry(&self, now: Instant) -> Option<Instant> {
        let max = self.max_lifetime?;
        let cut = if self.jitter > 0.0 {
            rand::random_range(0.0..self.jitter)
        } else {
            0.0
        };
        Some(now + max.mul_f64(1.0 - cut))
    }
}

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

/// The right to dial. Dropped unfinished (a cancelled get), it frees the probe slot.
pub(crate) struct DialTicket<'a> {
    health: &'a Health,
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
    pub(crate) async fn ticket(&self) -> Result<DialTicket<'_>, DialError> {
        loop {
            let probe_done = {
                let mut state = self.lock();
                if state.up {
                    return Ok(DialTicket {
                        health: self,
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
                        health: self,
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

impl DialTicket<'_> {
    /// Records the dial's outcome.
    pub(crate) fn finish(mut self, result: Result<(), &DialError>) {
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

impl Drop for DialTicket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.finished {
            self.health.lock().probing = false;
            self.health.probed.notify_waiters();
        }
    }
}

/// What creating a connection fails with.
#[derive(Debug)]
pub(crate) enum CreateError<E> {
    Dial(DialError),
    Backend(E),
}

/// State shared by the manager, the pool and its connections.
pub(crate) struct Shared {
    pub(crate) counters: PoolCounters,
    /// Applied by `recycle` itself, only to checks that do not finish at once.
    pub(crate) check_timeout: Duration,
    pub(crate) health: Health,
    pub(crate) lifetimes: Lifetimes,
}

pub(crate) struct Manager<C: Connector> {
    pub(crate) dialer: Dialer,
    pub(crate) target: Target,
    pub(crate) connector: C,
    pub(crate) shared: Arc<Shared>,
}

impl<C: Connector> managed::Manager for Manager<C> {
    type Type = Slot<C::Conn>;
    type Error = CreateError<C::Error>;

    async fn create(&self) -> Result<Slot<C::Conn>, CreateError<C::Error>> {
        let ticket = self
            .shared
            .health
            .ticket()
            .await
            .map_err(CreateError::Dial)?;
        let dialed = match &self.target {
            Target::Tcp(addr) => self.dialer.connect(*addr).await.map(Stream::Tcp),
            #[cfg(unix)]
            Target::Unix(path) => dial_unix(path, self.dialer.connect_timeout()).await,
        };
        ticket.finish(dialed.as_ref().map(|_| ()));
        let stream = dialed.map_err(CreateError::Dial)?;
        let conn = self
            .connector
            .connect(stream)
            .await
            .map_err(CreateError::Backend)?;
        let now = Instant::now();
        self.shared.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            conn,
            expires: self.shared.lifetimes.expiry(now),
            idle_since: now,
            close_reason: AtomicU8::new(CloseReason::Other as u8),
        })
    }

    async fn recycle(
        &self,
        slot: &mut Slot<C::Conn>,
        _: &Metrics,
    ) -> RecycleResult<CreateError<C::Error>> {
        let now = Instant::now();
        if slot.expired(now) {
            slot.set_close_reason(CloseReason::Lifetime);
            return Err(RecycleError::message("past its maximum lifetime"));
        }
        if let Some(idle) = self.shared.lifetimes.idle_timeout
            && now.duration_since(slot.idle_since) >= idle
        {
            slot.set_close_reason(CloseReason::Idle);
            return Err(RecycleError::message("idle past the idle timeout"));
        }
        // If the check is cancelled or times out, the connection counts as broken.
        slot.set_close_reason(CloseReason::Broken);
        let result = {
            let mut check = std::pin::pin!(self.connector.check(&mut slot.conn));
            // Most checks (Raw's peek) finish on their first poll: only a check that has to wait
            // gets a timer, so the common checkout registers none.
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(check.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => {
                    match tokio::time::timeout(self.shared.check_timeout, check).await {
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

    fn detach(&self, slot: &mut Slot<C::Conn>) {
        self.shared.counters.closed(slot.close_reason());
    }
}

/// Connects to a unix domain socket under the dialer's timeout. A missing socket file counts as
/// refused: the server is not there.
#[cfg(unix)]
async fn dial_unix(path: &std::path::Path, timeout: Duration) -> Result<Stream, DialError> {
    let fail = |kind: DialErrorKind, e: std::io::Error| {
        let error = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        DialError::new(kind, None, Vec::new(), 1, error)
    };
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(stream)) => Ok(Stream::Unix(stream)),
        Ok(Err(e)) => {
            let kind = match DialErrorKind::classify(&e, false) {
                DialErrorKind::Io if e.kind() == std::io::ErrorKind::NotFound => {
                    DialErrorKind::Refused
                }
                kind => kind,
            };
            Err(fail(kind, e))
        }
        Err(_) => Err(fail(
            DialErrorKind::Timeout,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ),
        )),
    }
}
