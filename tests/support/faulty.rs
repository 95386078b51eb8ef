//! Faults on demand for the pool's red-team tests: busy CPUs beside a test, and a connector
//! whose handshakes are slow, fail or hang, whose connections can be left mid-request and
//! recovered, and which counts the sockets the client holds; a storm of gets given up at
//! every await point.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use std::pin::pin;
use std::task::Poll;

use multiloop::{Connector, Pool, PoolError, Stream, TimeoutKind};

/// Three threads spinning beside the test (the machine has two cores), stopped when dropped.
pub struct Busy(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

pub fn busy_threads() -> Busy {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    Busy(stop, threads)
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// A cheap random number, without a dependency.
pub fn rand(seed: &mut u64, max: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % max
}

/// A connector whose handshake takes a little while, so that gets, returns and switches
/// interleave with dials; `failing` makes every 3rd handshake fail and every 5th hang past
/// the create timeout; `recover_after` makes a connection given back mid-request clean after
/// that long.
#[derive(Clone, Default)]
pub struct Test {
    pub handshake: Duration,
    pub failing: Arc<AtomicBool>,
    pub handshakes: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    pub hung: Arc<AtomicUsize>,
    pub recover_after: Option<Duration>,
    /// Sockets the client holds from their handshake on, now and at peak: the pool's own view,
    /// without the lag of the server noticing a close.
    pub live: Arc<(AtomicUsize, AtomicUsize)>,
}

/// A socket counted in `Test::live` while it lives; `pending` stands for a request in flight.
pub struct Live {
    pub stream: Stream,
    pub pending: bool,
    pub live: Arc<(AtomicUsize, AtomicUsize)>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Test {
    pub fn client_peak(&self) -> usize {
        self.live.1.load(Ordering::SeqCst)
    }
}

impl Connector for Test {
    type Conn = Live;
    type Error = std::io::Error;

    async fn connect(&self, stream: Stream) -> std::io::Result<Live> {
        let now = self.live.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.live.1.fetch_max(now, Ordering::SeqCst);
        let live = Live {
            stream,
            pending: false,
            live: self.live.clone(),
        };
        let n = self.handshakes.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.handshake).await;
        if self.failing.load(Ordering::SeqCst) {
            if n.is_multiple_of(3) {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return Err(std::io::Error::other("handshake refused"));
            }
            if n.is_multiple_of(5) {
                self.hung.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
        Ok(live)
    }

    async fn check(&self, conn: &mut Live) -> std::io::Result<()> {
        multiloop::Raw.check(&mut conn.stream).await
    }

    fn in_flight(&self, conn: &Live) -> bool {
        conn.pending
    }

    async fn recover(&self, conn: &mut Live) -> bool {
        match self.recover_after {
            Some(d) => {
                tokio::time::sleep(d).await;
                conn.pending = false;
                true
            }
            None => false,
        }
    }
}

pub fn quick() -> Test {
    Test {
        handshake: Duration::from_micros(300),
        ..Test::default()
    }
}

/// Holds a connection a moment, sometimes discarding it; counts errors a live server should
/// not cause.
pub async fn hold(
    got: Result<multiloop::Conn<Test>, PoolError<std::io::Error>>,
    odd: &AtomicUsize,
) {
    match got {
        Ok(conn) => {
            tokio::task::yield_now().await;
            if conn
                .stream
                .as_tcp()
                .and_then(|s| s.local_addr().ok())
                .is_some_and(|a| a.port() % 7 == 0)
            {
                conn.discard();
            }
        }
        Err(PoolError::Timeout(TimeoutKind::Wait) | PoolError::Saturated | PoolError::Paused) => {}
        Err(PoolError::Closed) => {}
        Err(e) => {
            eprintln!("unexpected: {e}");
            odd.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Tasks getting connections until `stop`, each get given up at a random point: polled a few
/// times then dropped, under a 0-2 ms timeout, in a task aborted, or awaited.
pub fn storm(
    pool: &Pool<Test>,
    stop: &Arc<AtomicBool>,
    odd: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..32u64)
        .map(|t| {
            let (pool, stop, odd) = (pool.clone(), stop.clone(), odd.clone());
            tokio::spawn(async move {
                let mut seed = t * 7919 + 1;
                while !stop.load(Ordering::Relaxed) {
                    match rand(&mut seed, 4) {
                        0 => {
                            let mut get = pin!(pool.get());
                            for _ in 0..rand(&mut seed, 6) {
                                if let Poll::Ready(got) = futures_util::poll!(get.as_mut()) {
                                    hold(got, &odd).await;
                                    break;
                                }
                                tokio::task::yield_now().await;
                            }
                        }
                        1 => {
                            let budget = Duration::from_micros(rand(&mut seed, 2000));
                            if let Ok(got) = tokio::time::timeout(budget, pool.get()).await {
                                hold(got, &odd).await;
                            }
                        }
                        2 => {
                            let pool = pool.clone();
                            let task = tokio::spawn(async move {
                                let conn = pool.get().await;
                                tokio::task::yield_now().await;
                                drop(conn);
                            });
                            tokio::task::yield_now().await;
                            task.abort();
                            let _ = task.await;
                        }
                        _ => hold(pool.get().await, &odd).await,
                    }
                }
            })
        })
        .collect()
}
