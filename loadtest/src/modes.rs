//! The four clients: naive (the incident's), spread (its emergency fix), pooled (the fix) and
//! batched (the fix that is also fast: the same pool, the batch as chunked multi-gets).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use multiloop::{Dialer, Pool, SourceSet};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::metrics::{ErrKind, Outcome, Plan, Recorder};

/// A batch's keys, made one at a time from their index: the batch costs no memory of its own,
/// so what a mode holds does not grow with `--batch`.
#[derive(Clone, Copy)]
pub struct Keys(pub usize);

impl Keys {
    pub fn len(self) -> usize {
        self.0
    }

    pub fn get(self, i: usize) -> String {
        format!("key:{i}")
    }
}

/// A failed key: its kind and the error's text.
type Failure = (ErrKind, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Naive = 0,
    Spread = 1,
    Pooled = 2,
    Batched = 3,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Naive => "naive",
            Mode::Spread => "spread",
            Mode::Pooled => "pooled",
            Mode::Batched => "batched",
        }
    }
}

/// What every mode shares.
#[derive(Clone)]
pub struct Settings {
    pub batch: usize,
    pub rps: f64,
    pub duration: Duration,
    pub max_idle: usize,
    pub pool_size: usize,
    /// Keys per multi-get in the batched mode.
    pub chunk: usize,
    pub naive_source: IpAddr,
    pub port_range: Option<RangeInclusive<u16>>,
    /// Bounds every key's round trip, so that every mode stops by itself.
    pub key_timeout: Duration,
    /// How long in-flight requests may finish after the mode's duration.
    pub drain: Duration,
    /// When the harness stops the mode's process, whatever it is stuck in.
    pub time_limit: Duration,
}

impl Settings {
    /// What a mode is asked for: a request every `1/rps` seconds for `duration`, the first at
    /// once.
    pub fn plan(&self) -> Plan {
        let requests = (self.duration.as_secs_f64() * self.rps - 1e-9)
            .ceil()
            .max(1.0) as u64;
        Plan {
            requests,
            batch: self.batch as u64,
        }
    }
}

/// One memcached `get` round trip; a miss or a hit both count as success.
async fn get_key<S>(conn: &mut S, key: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.write_all(format!("get {key}\r\n").as_bytes()).await?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "END\r\n" {
            return Ok(());
        }
        let len: usize = line
            .strip_prefix("VALUE ")
            .and_then(|rest| rest.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected reply {line:?}")))?;
        let mut value = vec![0u8; len + 2];
        reader.read_exact(&mut value).await?;
    }
}

/// The incident's client: a connection per key, dialed on demand, at most `max_idle` kept for
/// reuse and the rest closed (gomemcache's free list). Concurrency is unbounded.
struct PerKeyClient {
    dialer: Dialer,
    target: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
    max_idle: usize,
}

impl PerKeyClient {
    async fn get(&self, key: &str) -> Result<(), Failure> {
        let reused = self.idle.lock().unwrap().pop();
        let mut conn = match reused {
            Some(conn) => conn,
            None => self
                .dialer
                .connect(self.target)
                .await
                .map_err(|e| (ErrKind::of_dial(e.kind()), e.to_string()))?,
        };
        get_key(&mut conn, key)
            .await
            .map_err(|e| (ErrKind::of_io(&e), e.to_string()))?;
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        Ok(())
    }
}

enum Client {
    PerKey(Arc<PerKeyClient>),
    Pooled(Pool),
    Batched(Pool<multiloop::memcached::Connector>, usize),
}

impl Client {
    fn new(mode: Mode, target: SocketAddr, s: &Settings) -> Result<Client, multiloop::ConfigError> {
        let with_range = |b: multiloop::DialerBuilder| match &s.port_range {
            Some(r) => b.local_port_range(r.clone()),
            None => b,
        };
        let per_key = |dialer: Dialer| {
            Client::PerKey(Arc::new(PerKeyClient {
                dialer,
                target,
                idle: Mutex::new(Vec::new()),
                max_idle: s.max_idle,
            }))
        };
        Ok(match mode {
            // One fixed source, `bind(addr, 0)` without IP_BIND_ADDRESS_NO_PORT, no retry and
            // no quarantine: the dialer as the incident had it.
            Mode::Naive => per_key(
                with_range(Dialer::builder())
                    .sources(SourceSet::from_addrs([s.naive_source])?)
                    .bind_address_no_port(false)
                    .max_attempts(1)
                    .quarantine(Duration::ZERO)
                    .build()?,
            ),
            Mode::Spread => per_key(with_range(Dialer::builder()).build()?),
            Mode::Pooled => Client::Pooled(
                Pool::builder(target)
                    .dialer(with_range(Dialer::builder()).build()?)
                    .max_size(s.pool_size)
                    .build()?,
            ),
            Mode::Batched => Client::Batched(
                Pool::builder(target)
                    .dialer(with_range(Dialer::builder()).build()?)
                    .connector(multiloop::memcached::Connector::new())
                    .max_size(s.pool_size)
                    .build()?,
                s.chunk,
            ),
        })
    }

    /// One batch request: every key, as this client does it.
    async fn request(&self, keys: Keys, recorder: &Recorder, timeout: Duration) -> Outcome {
        let (mut shed, mut failed) = (false, false);
        let mut note = |kind: ErrKind, n: u64, text: String| {
            recorder.errors(kind, n);
            recorder.first_error(|| text);
            if kind.is_shed() {
                shed = true;
            } else {
                failed = true;
            }
        };
        let mut record = |result: Result<(), Failure>| match result {
            Ok(()) => recorder.key_ok(),
            Err((kind, text)) => note(kind, 1, text),
        };
        match self {
            Client::PerKey(client) => {
                // One task per key, as in the incident.
                let mut tasks = JoinSet::new();
                for i in 0..keys.len() {
                    let client = client.clone();
                    tasks.spawn(async move {
                        tokio::time::timeout(timeout, client.get(&keys.get(i)))
                            .await
                            .unwrap_or_else(|_| {
                                Err((ErrKind::Timeout, "key timed out".to_string()))
                            })
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    record(done.unwrap_or_else(|e| Err((ErrKind::Other, e.to_string()))));
                }
            }
            Client::Pooled(pool) => {
                let mut results = pool.fan_out(0..keys.len(), move |mut conn, i| async move {
                    match tokio::time::timeout(timeout, get_key(&mut conn, &keys.get(i))).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => {
                            conn.discard();
                            Err((ErrKind::of_io(&e), e.to_string()))
                        }
                        Err(_) => {
                            conn.discard();
                            Err((ErrKind::Timeout, "key timed out".to_string()))
                        }
                    }
                });
                while let Some(result) = results.next().await {
                    record(
                        result
                            .map_err(|e| (ErrKind::of_pool(&e), e.to_string()))
                            .and_then(|r| r),
                    );
                }
            }
            Client::Batched(pool, chunk) => {
                let keys_iter = (0..keys.len()).map(move |i| keys.get(i));
                let batch = multiloop::memcached::get_many(pool, keys_iter, *chunk);
                match tokio::time::timeout(timeout, batch).await {
                    Ok(batch) => {
                        recorder.keys_ok_n(batch.answered as u64);
                        for (n, e) in batch.failed {
                            let kind = match &e {
                                multiloop::memcached::Error::Pool(p) => ErrKind::of_pool(p),
                                multiloop::memcached::Error::Io { source, .. } => {
                                    ErrKind::of_io(source)
                                }
                                _ => ErrKind::Other,
                            };
                            note(kind, n as u64, e.to_string());
                        }
                    }
                    Err(_) => note(
                        ErrKind::Timeout,
                        keys.len() as u64,
                        "batch timed out".to_string(),
                    ),
                }
            }
        }
        match (failed, shed) {
            (true, _) => Outcome::Failed,
            (false, true) => Outcome::Shed,
            (false, false) => Outcome::Served,
        }
    }
}

/// One line of progress on the terminal (stderr), rewritten in place; nothing when stderr is
/// not a terminal.
#[derive(Clone)]
pub struct Progress {
    mode: &'static str,
    duration: Duration,
    terminal: bool,
}

impl Progress {
    pub fn new(mode: &'static str, duration: Duration) -> Progress {
        use std::io::IsTerminal;
        Progress {
            mode,
            duration,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, elapsed: Duration, message: &str) -> String {
        let done = (elapsed.as_secs_f64() / self.duration.as_secs_f64()).min(1.0);
        let filled = (done * 30.0) as usize;
        format!(
            "\r\x1b[2K{:>7} [{}{}] {:>4.0}s {message}",
            self.mode,
            "=".repeat(filled),
            " ".repeat(30 - filled),
            elapsed.as_secs_f64()
        )
    }

    pub fn show(&self, elapsed: Duration, message: &str) {
        if self.terminal {
            eprint!("{}", self.line(elapsed, message));
        }
    }

    pub fn finish(&self, elapsed: Duration, message: &str) {
        if self.terminal {
            eprintln!("{}", self.line(elapsed, message));
        }
    }
}

/// The counters so far, for the progress line.
fn progress_line(recorder: &Recorder) -> String {
    let (shed, failed) = recorder.shed_and_failed();
    format!(
        "{} keys served, {shed} shed, {failed} failed; requests {} served, {} shed, {} failed",
        recorder.keys_ok.load(Ordering::Relaxed),
        recorder.requests_ok.load(Ordering::Relaxed),
        recorder.requests_shed.load(Ordering::Relaxed),
        recorder.requests_failed.load(Ordering::Relaxed),
    )
}

/// Stores every key once, through a pool, so that the modes' gets hit.
pub async fn populate(target: SocketAddr, keys: Keys) -> Result<(), String> {
    let pool = Pool::builder(target)
        .max_size(16)
        .build()
        .map_err(|e| e.to_string())?;
    let mut stored = pool.fan_out(0..keys.len(), move |mut conn, i| async move {
        let key = keys.get(i);
        let value = format!("value-of-{key}");
        conn.write_all(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes())
            .await?;
        let mut reply = [0u8; 8];
        conn.read_exact(&mut reply).await?;
        if &reply == b"STORED\r\n" {
            Ok(())
        } else {
            Err(std::io::Error::other("set was not stored"))
        }
    });
    while let Some(r) = stored.next().await {
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    pool.close();
    Ok(())
}

/// Sends `rps` batch requests per second for the mode's duration, then waits for the ones in
/// flight (at most `drain`) and closes the client's connections.
pub async fn run(
    mode: Mode,
    target: SocketAddr,
    s: &Settings,
    keys: Keys,
    recorder: Arc<Recorder>,
    bar: &Progress,
) -> Result<(), String> {
    let client = Arc::new(Client::new(mode, target, s).map_err(|e| e.to_string())?);
    let started = Instant::now();
    let end = started + s.duration;
    let running = Arc::new(AtomicBool::new(true));
    let progress = {
        let (bar, recorder, running) = (bar.clone(), recorder.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                bar.show(started.elapsed(), &progress_line(&recorder));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / s.rps));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut requests = JoinSet::new();
    // At most the planned requests: a tick period rounded down must not add one at the end.
    for _ in 0..s.plan().requests {
        ticker.tick().await;
        if Instant::now() >= end {
            break;
        }
        recorder.request_sent();
        let (client, recorder) = (client.clone(), recorder.clone());
        let timeout = s.key_timeout;
        requests.spawn(async move {
            let t0 = Instant::now();
            let outcome = client.request(keys, &recorder, timeout).await;
            recorder.request(outcome, t0.elapsed());
        });
    }
    let drained = tokio::time::timeout(s.drain, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Requests still running after the drain count as failed. Dropping the set aborts
        // them; the mode's process exits soon after, which closes every socket at once.
        for _ in 0..requests.len() {
            recorder.request_unfinished();
        }
        drop(requests);
    }
    running.store(false, Ordering::Relaxed);
    let _ = progress.await;
    bar.finish(started.elapsed(), &progress_line(&recorder));
    // Close every connection the client holds.
    match &*client {
        Client::Pooled(pool) => pool.close(),
        Client::Batched(pool, _) => pool.close(),
        Client::PerKey(_) => {}
    }
    drop(client);
    Ok(())
}
