//! Servers that control which bytes arrive when: a proxy that cuts a real server's replies into
//! segments (as TCP segmentation, a slow server or a proxy do), and a scripted fake server that
//! sends whatever a test wants and records every line it receives.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How a [`Slicer`] cuts the server's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    /// Seeds the piece lengths and delays.
    pub seed: u64,
    /// Pieces are 1 to this many bytes long (0: whole reads, no cutting).
    pub max_piece: usize,
    /// A delay of up to this long before each piece.
    pub max_delay: Duration,
    /// A delay before the first byte of each read from the server.
    pub hold: Duration,
    /// Cut after every CRLF too.
    pub at_lines: bool,
}

/// A proxy in front of `upstream` that delivers its replies in pieces, stopped when dropped.
pub struct Slicer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Slicer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// xorshift: the pieces' lengths and delays, reproducible from the seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl Slicer {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(upstream: SocketAddr, cut: Cut) -> Slicer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                n += 1;
                let seed = cut.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n | 1;
                conns.spawn(relay(client, upstream, Cut { seed, ..cut }));
            }
        });
        Slicer { addr, task }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, cut: Cut) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut state = cut.seed;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !cut.hold.is_zero() {
            tokio::time::sleep(cut.hold).await;
        }
        let mut at = 0;
        while at < n {
            let mut end = match cut.max_piece {
                0 => n,
                max => (at + 1 + (next(&mut state) as usize % max)).min(n),
            };
            if cut.at_lines
                && let Some(i) = buf[at..end].windows(2).position(|w| w == b"\r\n")
            {
                end = at + i + 2;
            }
            // A pause before one piece in four (a timer rounds up to a millisecond); the others
            // go as writes of their own.
            let max_us = cut.max_delay.as_micros() as u64;
            if max_us > 0 && next(&mut state).is_multiple_of(4) {
                let us = next(&mut state) % (max_us + 1);
                tokio::time::sleep(Duration::from_micros(us)).await;
            } else {
                tokio::task::yield_now().await;
            }
            if client_write.write_all(&buf[at..end]).await.is_err() {
                up.abort();
                return;
            }
            at = end;
        }
    }
    up.abort();
}

/// A fake memcached: answers each request line with the reply of the first rule whose prefix
/// the line starts with (`"ERROR\r\n"` if none), after the rule's delay; records every line.
/// Data blocks of stores are not read as lines: a store's line is followed by its block, which
/// the fake reads by the length the line declares.
pub struct Scripted {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every line received, in order, from every connection.
    pub lines: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections accepted.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One rule of a [`Scripted`] server.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The request line's start.
    pub prefix: Vec<u8>,
    /// The reply's pieces, each sent after `delay`.
    pub pieces: Vec<Vec<u8>>,
    /// The pause before each piece.
    pub delay: Duration,
}

/// A rule answering lines that start with `prefix` with `reply`, at once.
pub fn rule(prefix: &str, reply: &[u8]) -> Rule {
    Rule {
        prefix: prefix.as_bytes().to_vec(),
        pieces: vec![reply.to_vec()],
        delay: Duration::ZERO,
    }
}

impl Scripted {
    /// Listens on a free port of 127.0.0.1. `version` and `mn` get text-only answers
    /// (`VERSION 1.5.0`, `ERROR`) unless a rule says otherwise.
    pub async fn start(rules: Vec<Rule>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut rules = rules;
        rules.push(rule("version", b"VERSION 1.5.0\r\n"));
        let rules = Arc::new(rules);
        let (seen, count) = (lines.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conns.spawn(serve(stream, rules.clone(), seen.clone()));
            }
        });
        Scripted {
            addr,
            lines,
            accepted,
            task,
        }
    }

    /// Whether any line received contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .any(|l| l.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

async fn serve(stream: TcpStream, rules: Arc<Vec<Rule>>, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
        seen.lock().unwrap().push(trimmed.clone());
        // A text store: skip its data block.
        let words: Vec<&[u8]> = trimmed.split(|&b| b == b' ').collect();
        let verb = words.first().copied().unwrap_or_default();
        let block = match verb {
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => words.get(4),
            b"ms" => words.get(2),
            _ => None,
        };
        if let Some(n) = block.and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok()) {
            let mut data = vec![0u8; n + 2];
            if read.read_exact(&mut data).await.is_err() {
                return;
            }
        }
        let rule = rules.iter().find(|r| trimmed.starts_with(&r.prefix));
        let pieces = rule.map_or_else(|| vec![b"ERROR\r\n".to_vec()], |r| r.pieces.clone());
        let delay = rule.map_or(Duration::ZERO, |r| r.delay);
        for piece in pieces {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if write.write_all(&piece).await.is_err() {
                return;
            }
        }
    }
}

/// Polls a future at most `polls` times: `None` if it was still pending then (it is dropped
/// there, mid-request: a cancellation at that await point).
pub struct Cancelled<F> {
    fut: Pin<Box<F>>,
    polls: u32,
}

impl<F: Future> Future for Cancelled<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        self.polls = self.polls.saturating_sub(1);
        match self.polls {
            0 => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

/// `fut`, cancelled after `polls` polls if it has not finished by then.
pub fn cancelled<F: Future>(fut: F, polls: u32) -> Cancelled<F> {
    Cancelled {
        fut: Box::pin(fut),
        polls,
    }
}

/// A pool of `size` connections to `addr` through `connector`.
#[cfg(feature = "memcached")]
pub fn pool_of(
    addr: SocketAddr,
    connector: multiloop::memcached::Connector,
    size: usize,
) -> multiloop::Pool<multiloop::memcached::Connector> {
    multiloop::Pool::builder(addr)
        .connector(connector)
        .max_size(size)
        .build()
        .unwrap()
}
