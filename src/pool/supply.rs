//! Where new connections come from: the cap on sockets, the bound on dials in progress, the
//! dial tasks, and the stash of connections whose caller left.
//!
//! deadpool runs `Manager::create` inside the caller's future, so a caller that times out or is
//! cancelled would drop a socket that is already connected: a handshake the server saw, a port
//! left in TIME_WAIT, and nothing counted. Here `create` only *waits*: the dial and the
//! connector's handshake run in a task of their own, bounded by the create timeout. The task
//! hands its connection to the caller, or, if the caller has gone, leaves it in the stash, where
//! the next `create` takes it before it would dial. A dial, once started, ends as a pooled
//! connection or as a counted failure, whatever happens to the caller.
//!
//! The cap is kept here, on sockets: every dial in progress, every stashed connection and every
//! connection deadpool holds has a permit of [`Supply::sockets`], released when the socket
//! closes ([`Slot`]'s drop). deadpool's own cap (its `max_size`) counts only what it holds, so
//! it cannot see a dial whose caller left; this one does.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::gate::{Counted, Gate, GatePermit};
use super::health::{DialTicket, Health};
use super::leak::Checkouts;
use super::slot::{Lifetimes, Slot};
use crate::connector::Connector;
use crate::dial::{Dialer, Target};
use deadpool::managed::{self, TimeoutType};

use crate::error::{DialError, DialErrorKind, PoolError, TimeoutKind};
use crate::telemetry::counters::PoolCounters;

/// What creating a connection fails with.
#[derive(Debug)]
pub(crate) enum CreateError<E> {
    Dial(DialError),
    Backend(E),
    /// The dial and handshake took longer than the create timeout.
    Timeout,
    /// The pool was closed while the create waited.
    Closed,
}

/// What a dial task hands over.
type Made<C> = Result<Slot<<C as Connector>::Conn>, CreateError<<C as Connector>::Error>>;

/// The supply of new connections to one target.
pub(crate) struct Supply<C: Connector> {
    pub(crate) dialer: Dialer,
    pub(crate) target: Target,
    pub(crate) connector: C,
    pub(crate) counters: Arc<PoolCounters>,
    pub(crate) health: Arc<Health>,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) create_timeout: Duration,
    /// The cap on sockets: dialing, stashed, and held by deadpool.
    pub(crate) sockets: Arc<Gate>,
    /// The bound on dials in progress.
    dials: Arc<Gate>,
    stash: Mutex<Vec<Slot<C::Conn>>>,
    /// Woken when a connection lands in the stash.
    arrived: Notify,
    /// Creates waiting now: a connection given back while one waits is handed over.
    waiting: AtomicUsize,
    /// Dial tasks running now.
    dialing: AtomicUsize,
    closed: AtomicBool,
    /// For a host-name target, the address the last dial reached: what the port census
    /// counts towards.
    resolved: Mutex<Option<SocketAddr>>,
    /// The leak registry each new connection enters, when the pool keeps one.
    checkouts: Option<Arc<Checkouts>>,
    /// The pool's state as every `get` reads it, in one load: `REAPER_RUNNING` alone is the
    /// steady state. Otherwise the get sees to it first: `REAPER_RUNNING` clear (start the
    /// reaper), `RUNTIME_GONE` (close the connections whose runtime has shut down), `PAUSED`
    /// (fail). The reaper's start, the sentinels, `pause` and `resume` write it.
    pub(crate) upkeep: AtomicU8,
    #[cfg(feature = "metrics")]
    pub(crate) export: Arc<crate::telemetry::export::Export>,
}

/// Bits of [`Supply::upkeep`]: the reaper runs.
pub(crate) const REAPER_RUNNING: u8 = 1;
/// Bits of [`Supply::upkeep`]: a runtime that connections were made on has shut down.
pub(crate) const RUNTIME_GONE: u8 = 2;
/// Bits of [`Supply::upkeep`]: the pool is paused.
pub(crate) const PAUSED: u8 = 4;

/// Flags a runtime's shutdown to the pool when dropped armed.
struct Watch<C: Connector> {
    supply: Weak<Supply<C>>,
    armed: bool,
}

impl<C: Connector> Drop for Watch<C> {
    fn drop(&mut self) {
        if self.armed
            && let Some(supply) = self.supply.upgrade()
        {
            supply.upkeep.fetch_or(RUNTIME_GONE, Ordering::AcqRel);
        }
    }
}

/// A sentinel for a connection made on this runtime (see `Slot::orphaned`): a task that
/// holds it until the connection closes. If the runtime shuts down first, the task is
/// dropped mid-wait, and it flags that in `upkeep`, so that the next `get` closes the
/// connections made there before any is handed out.
fn sentinel<C: Connector>(supply: &Arc<Supply<C>>) -> Arc<Notify> {
    let sentinel = Arc::new(Notify::new());
    let held = sentinel.clone();
    let watch = Watch {
        supply: Arc::downgrade(supply),
        armed: true,
    };
    tokio::spawn(async move {
        // The whole guard moves into the task, not just its flag.
        let mut watch = watch;
        held.notified().await;
        // The connection closed: nothing to flag.
        watch.armed = false;
    });
    sentinel
}

/// The receiving end of a dial task. Dropped before the task answered (the caller left), it
/// closes the channel so that the task stashes its connection; a connection already sent is
/// stashed here.
struct Pending<'a, C: Connector> {
    rx: oneshot::Receiver<Made<C>>,
    supply: &'a Supply<C>,
}

impl<C: Connector> Drop for Pending<'_, C> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(slot)) = self.rx.try_recv() {
            self.supply
                .counters
                .handed_off
                .fetch_add(1, Ordering::Relaxed);
            self.supply.stash(slot);
        }
    }
}

impl<C: Connector> Supply<C> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dialer: Dialer,
        target: Target,
        connector: C,
        counters: Arc<PoolCounters>,
        lifetimes: Lifetimes,
        create_timeout: Duration,
        max_size: usize,
        max_dials: usize,
        checkouts: Option<Arc<Checkouts>>,
        #[cfg(feature = "metrics")] export: Arc<crate::telemetry::export::Export>,
    ) -> Supply<C> {
        Supply {
            dialer,
            target,
            connector,
            counters,
            health: Arc::new(Health::default()),
            lifetimes,
            create_timeout,
            sockets: Gate::new(max_size),
            dials: Gate::new(max_dials),
            stash: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            waiting: AtomicUsize::new(0),
            dialing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            resolved: Mutex::new(None),
            checkouts,
            upkeep: AtomicU8::new(0),
            #[cfg(feature = "metrics")]
            export,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot<C::Conn>>> {
        self.stash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leaves a connection for the next `create`, most recent on top; closes it instead if the
    /// pool is closed or holds more sockets than its cap (after a shrink).
    ///
    /// Both are read under the stash's lock, which `close` and `trim` take after they change
    /// them: a connection is either seen by them in the stash or sees what they set.
    pub(crate) fn stash(&self, slot: Slot<C::Conn>) {
        let mut stash = self.lock();
        if self.closed.load(Ordering::Relaxed) || self.sockets.over() > 0 {
            drop(stash);
            // The connection closes here, counted by its slot; its permit pays the debt.
            drop(slot);
            return;
        }
        stash.push(slot);
        drop(stash);
        self.arrived.notify_waiters();
    }

    /// After a shrink: closes stashed connections, oldest first, while the pool holds more
    /// sockets than its cap. deadpool's resize sees only what deadpool holds; this is the rest.
    pub(crate) fn trim(&self) {
        let removed: Vec<_> = {
            let mut stash = self.lock();
            let n = self.sockets.over().min(stash.len());
            stash.drain(..n).collect()
        };
        // They close outside the lock, each paying one permit of the debt.
        drop(removed);
    }

    /// A stashed connection, if one is; one whose runtime has shut down closes instead.
    fn take_stashed(&self) -> Option<Slot<C::Conn>> {
        loop {
            let slot = self.lock().pop()?;
            if !slot.orphaned() {
                return Some(slot);
            }
        }
    }

    /// Connections in the stash now.
    pub(crate) fn stashed(&self) -> usize {
        self.lock().len()
    }

    /// Removes stashed connections that `close` picks; they close outside the lock.
    pub(crate) fn retain_stash(&self, mut close: impl FnMut(&Slot<C::Conn>) -> bool) {
        let removed: Vec<_> = {
            let mut stash = self.lock();
            let (gone, kept) = std::mem::take(&mut *stash)
                .into_iter()
                .partition(|s| close(s));
            *stash = kept;
            gone
        };
        drop(removed);
    }

    /// Dial tasks running now.
    pub(crate) fn dialing(&self) -> usize {
        self.dialing.load(Ordering::Relaxed)
    }

    /// Whether the pool is paused.
    pub(crate) fn paused(&self) -> bool {
        self.upkeep.load(Ordering::Acquire) & PAUSED != 0
    }

    /// Pauses or resumes the pool.
    pub(crate) fn set_paused(&self, paused: bool) {
        if paused {
            self.upkeep.fetch_or(PAUSED, Ordering::AcqRel);
        } else {
            self.upkeep.fetch_and(!PAUSED, Ordering::AcqRel);
        }
    }

    /// Whether a `create` is waiting, so that a connection given back should go to it.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn set_max_dials(&self, n: usize) {
        self.dials.set(n);
    }

    /// A connection for deadpool's `create`: a stashed one, one handed over, or a new one from
    /// a dial task. Cancelling this future cancels only the waiting, never the dial.
    pub(crate) async fn obtain(self: &Arc<Self>) -> Result<Slot<C::Conn>, CreateError<C::Error>> {
        let _waiting = Counted::enter(&self.waiting);
        let (socket, dial) = loop {
            let mut arrived = pin!(self.arrived.notified());
            arrived.as_mut().enable();
            if let Some(slot) = self.take_stashed() {
                return Ok(slot);
            }
            let Some(socket) = permit_unless_arrived(&self.sockets, arrived.as_mut()).await? else {
                continue;
            };
            let Some(dial) = permit_unless_arrived(&self.dials, arrived.as_mut()).await? else {
                continue;
            };
            break (socket, dial);
        };
        let ticket = self.health.ticket().await.map_err(CreateError::Dial)?;
        let (tx, rx) = oneshot::channel();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            CreateError::Dial(DialError::new(
                DialErrorKind::Io,
                None,
                Vec::new(),
                0,
                std::io::Error::other("a pool dials from inside a tokio runtime"),
            ))
        })?;
        runtime.spawn(self.clone().dial_task(socket, dial, ticket, tx));
        let mut pending = Pending { rx, supply: self };
        loop {
            let mut arrived = pin!(self.arrived.notified());
            arrived.as_mut().enable();
            if let Some(slot) = self.take_stashed() {
                // Something else came first; this dial will land in the stash.
                return Ok(slot);
            }
            tokio::select! {
                biased;
                answer = &mut pending.rx => {
                    return answer.unwrap_or_else(|_| Err(CreateError::Dial(DialError::new(
                        DialErrorKind::Io,
                        None,
                        Vec::new(),
                        0,
                        std::io::Error::other("the connection setup task panicked"),
                    ))));
                }
                () = &mut arrived => {}
            }
        }
    }

    /// Dials and sets up one connection under the create timeout, then hands it to the caller
    /// or, if the caller has gone, to the stash.
    async fn dial_task(
        self: Arc<Self>,
        socket: GatePermit,
        dial: GatePermit,
        ticket: DialTicket,
        tx: oneshot::Sender<Made<C>>,
    ) {
        let _dialing = Counted::enter(&self.dialing);
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let made = tokio::time::timeout(self.create_timeout, self.make(ticket)).await;
        drop(dial);
        let result = match made {
            Ok(Ok(conn)) => {
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                self.export.created(started.elapsed());
                Ok(Slot::new(
                    conn,
                    &self.lifetimes,
                    self.counters.clone(),
                    socket,
                    self.checkouts.as_ref().map(|c| c.enter()),
                    sentinel(&self),
                ))
            }
            Ok(Err(e)) => Err(e),
            Err(_elapsed) => Err(CreateError::Timeout),
        };
        if result.is_err() {
            self.counters.create_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(Ok(slot)) = tx.send(result) {
            self.counters.handed_off.fetch_add(1, Ordering::Relaxed);
            self.stash(slot);
        }
    }

    async fn make(&self, ticket: DialTicket) -> Result<C::Conn, CreateError<C::Error>> {
        let pinned: Option<IpAddr> = self.connector.source();
        let dialed = self.dialer.connect_target(&self.target, pinned).await;
        ticket.finish(dialed.as_ref().map(|_| ()));
        let stream = dialed.map_err(CreateError::Dial)?;
        if let (Target::Host { .. }, Some(peer)) = (
            &self.target,
            stream.as_tcp().and_then(|s| s.peer_addr().ok()),
        ) {
            *self
                .resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(peer);
        }
        match self.connector.connect(stream).await {
            Ok(conn) => Ok(conn),
            Err(e) => {
                // The connector learned something that makes one more dial worth it: the
                // server takes only this source (redis protected mode), or it speaks another
                // dialect (memcached behind a text-only proxy). The failed stream is closed.
                let source = self.connector.source();
                let moved = source.is_some() && source != pinned;
                if !moved && !self.connector.retry_handshake(&e) {
                    return Err(CreateError::Backend(e));
                }
                let stream = self
                    .dialer
                    .connect_target(&self.target, source.or(pinned))
                    .await
                    .map_err(CreateError::Dial)?;
                self.connector
                    .connect(stream)
                    .await
                    .map_err(CreateError::Backend)
            }
        }
    }

    /// The address the port census counts towards: the target's own, or for a host name
    /// the one the last dial reached (none before the first).
    pub(crate) fn census_target(&self) -> Option<SocketAddr> {
        self.target.tcp().or_else(|| {
            *self
                .resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// Closes the gates: waiting creates end, and no dial starts after.
    pub(crate) fn close(&self) {
        // Set before the stash's lock is taken below: a `stash` that takes the lock after
        // `retain_stash` sees it.
        self.closed.store(true, Ordering::Release);
        self.sockets.close();
        self.dials.close();
        self.retain_stash(|_| true);
    }
}

/// A permit of `gate`, or `None` if a connection lands in the stash first.
async fn permit_unless_arrived<E>(
    gate: &Arc<Gate>,
    arrived: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> Result<Option<GatePermit>, CreateError<E>> {
    if let Some(p) = gate.try_acquire() {
        return Ok(Some(p));
    }
    tokio::select! {
        biased;
        p = gate.acquire() => p.map(Some).ok_or(CreateError::Closed),
        () = arrived => Ok(None),
    }
}

/// The error a caller sees for what deadpool reports.
pub(crate) fn convert<E>(e: managed::PoolError<CreateError<E>>) -> PoolError<E> {
    match e {
        managed::PoolError::Timeout(TimeoutType::Wait) => PoolError::Timeout(TimeoutKind::Wait),
        managed::PoolError::Timeout(TimeoutType::Create)
        | managed::PoolError::Backend(CreateError::Timeout) => {
            PoolError::Timeout(TimeoutKind::Create)
        }
        managed::PoolError::Timeout(TimeoutType::Recycle) => PoolError::Timeout(TimeoutKind::Check),
        managed::PoolError::Backend(CreateError::Dial(e)) => PoolError::Dial(e),
        managed::PoolError::Backend(CreateError::Backend(e)) => PoolError::Backend(e),
        // The pool is built with a runtime and without hooks, so only closing leads here.
        managed::PoolError::Closed
        | managed::PoolError::Backend(CreateError::Closed)
        | managed::PoolError::NoRuntimeSpecified
        | managed::PoolError::PostCreateHook(_) => PoolError::Closed,
    }
}
