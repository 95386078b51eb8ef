//! Where new connections come from: a dial task per connection, which outlives the get that
//! started it.
//!
//! deadpool's managed pool runs `create` inside the caller's future, so a caller that timed out
//! or was cancelled would drop a socket already connected: a handshake the server saw, a port
//! left in TIME_WAIT, and nothing counted. Here a dial runs in a task of its own, holding its
//! socket's permit of the cap from the start, bounded by the create timeout, and its connection
//! goes to the store, where the first waiting get takes it. The get that started it learns only
//! how it ended. A dial, once started, ends as a pooled connection or a counted failure,
//! whatever happens to the caller.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::{Notify, oneshot};

use super::gate::{Counted, GatePermit};
use super::health::DialTicket;
use super::inner::{PoolInner, RUNTIME_GONE};
use super::slot::Slot;
use crate::connector::Connector;
use crate::dial::Target;
use crate::error::{DialError, DialErrorKind, PoolError, TimeoutKind};

/// How a dial ended, for the get that started it: its connection is in the store, or why not.
pub(crate) type Outcome<E> = Result<(), PoolError<E>>;

/// A socket's permit of the cap and one of the dial bound: the right to start a dial now.
pub(crate) struct Room(GatePermit, GatePermit);

impl<C: Connector> PoolInner<C> {
    /// Room for a dial now, if the cap and the dial bound both have it.
    pub(crate) fn try_room(&self) -> Option<Room> {
        let socket = self.sockets.try_acquire()?;
        let dial = self.dials.try_acquire()?;
        Some(Room(socket, dial))
    }

    /// Room under the cap now, and a dial permit once one is free; `None` without room or
    /// once the pool is closed. For warm-up, which never waits for a busy pool.
    pub(crate) async fn warm_room(&self) -> Option<Room> {
        let socket = self.sockets.try_acquire()?;
        let dial = self.dials.acquire().await?;
        Some(Room(socket, dial))
    }

    /// Room for a dial once there is; `None` once the pool is closed.
    pub(crate) async fn room(&self) -> Option<Room> {
        let socket = self.sockets.acquire().await?;
        let dial = self.dials.acquire().await?;
        Some(Room(socket, dial))
    }
}

/// Starts a dial in a task of its own. The receiver learns how it ended; dropped, it changes
/// nothing for the dial.
pub(crate) fn spawn<C: Connector>(
    pool: &Arc<PoolInner<C>>,
    room: Room,
) -> Result<oneshot::Receiver<Outcome<C::Error>>, PoolError<C::Error>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        PoolError::Dial(DialError::new(
            DialErrorKind::Io,
            None,
            Vec::new(),
            0,
            std::io::Error::other("a pool dials from inside a tokio runtime"),
        ))
    })?;
    let (tx, rx) = oneshot::channel();
    drop(runtime.spawn(task(pool.clone(), room, tx)));
    Ok(rx)
}

/// Dials and sets up one connection under the create timeout, then adds it to the store.
async fn task<C: Connector>(
    pool: Arc<PoolInner<C>>,
    Room(socket, dial): Room,
    tx: oneshot::Sender<Outcome<C::Error>>,
) {
    let dialing = Counted::enter(&pool.dialing);
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let made = tokio::time::timeout(pool.create_timeout, async {
        // While the target is down this fails at once with the last dial error, and while
        // nothing is known yet it waits for the one caller that probes.
        let ticket = pool.health.ticket().await.map_err(PoolError::Dial)?;
        make(&pool, ticket).await
    })
    .await;
    drop(dial);
    let outcome = match made {
        Ok(Ok(conn)) => {
            pool.counters.created.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            pool.export.created(started.elapsed());
            let slot = Slot::new(
                conn,
                &pool.lifetimes,
                pool.counters.clone(),
                socket,
                pool.checkouts.as_ref().map(|c| c.enter()),
                sentinel(&pool),
            );
            if tx.is_closed() {
                // Its get no longer waits for it (served first, timed out or cancelled): the
                // connection goes to whoever waits, or idle.
                pool.counters.handed_off.fetch_add(1, Ordering::Relaxed);
            }
            pool.add(slot);
            Ok(())
        }
        Ok(Err(e)) => {
            drop(socket);
            Err(e)
        }
        Err(_elapsed) => {
            drop(socket);
            Err(PoolError::Timeout(TimeoutKind::Create))
        }
    };
    if outcome.is_err() {
        pool.counters.create_errors.fetch_add(1, Ordering::Relaxed);
    }
    // Sent after the connection is in the store, so a get told of success finds it there
    // (unless an older waiter took it).
    drop(tx.send(outcome));
    // Last: once no dial is counted, every dial's connection, counters and permits are
    // settled (for an instant a landing connection is counted in the store and here).
    drop(dialing);
}

/// Dials, then the connector's handshake; once more if the connector learned something that
/// makes another dial worth it.
async fn make<C: Connector>(
    pool: &PoolInner<C>,
    ticket: DialTicket,
) -> Result<C::Conn, PoolError<C::Error>> {
    let pinned: Option<IpAddr> = pool.connector.source();
    let dialed = pool.dialer.connect_target(&pool.target, pinned).await;
    ticket.finish(dialed.as_ref().map(|_| ()));
    let stream = dialed.map_err(PoolError::Dial)?;
    if let (Target::Host { .. }, Some(peer)) = (
        &pool.target,
        stream.as_tcp().and_then(|s| s.peer_addr().ok()),
    ) {
        *pool
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(peer);
    }
    match pool.connector.connect(stream).await {
        Ok(conn) => Ok(conn),
        Err(e) => {
            // The connector learned something that makes one more dial worth it: the server
            // takes only this source (redis protected mode), or it speaks another dialect
            // (memcached behind a text-only proxy). The failed stream is closed.
            let source = pool.connector.source();
            let moved = source.is_some() && source != pinned;
            if !moved && !pool.connector.retry_handshake(&e) {
                return Err(PoolError::Backend(e));
            }
            let stream = pool
                .dialer
                .connect_target(&pool.target, source.or(pinned))
                .await
                .map_err(PoolError::Dial)?;
            pool.connector
                .connect(stream)
                .await
                .map_err(PoolError::Backend)
        }
    }
}

/// Flags a runtime's shutdown to the pool when dropped armed.
struct Watch<C: Connector> {
    pool: Weak<PoolInner<C>>,
    armed: bool,
}

impl<C: Connector> Drop for Watch<C> {
    fn drop(&mut self) {
        if self.armed
            && let Some(pool) = self.pool.upgrade()
        {
            pool.upkeep.fetch_or(RUNTIME_GONE, Ordering::AcqRel);
        }
    }
}

/// A sentinel for a connection made on this runtime (see `Slot::orphaned`): a task that
/// holds it until the connection closes. If the runtime shuts down first, the task is
/// dropped mid-wait, and it flags that in `upkeep`, so that the next `get` closes the
/// connections made there before any is handed out.
fn sentinel<C: Connector>(pool: &Arc<PoolInner<C>>) -> Arc<Notify> {
    let sentinel = Arc::new(Notify::new());
    let held = sentinel.clone();
    let watch = Watch {
        pool: Arc::downgrade(pool),
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
