//! In-process servers for what a real server cannot do on demand: count every handshake and the
//! sockets open at once, and answer slowly, in order, like a stalled cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server side saw.
#[derive(Default)]
pub struct Seen {
    accepted: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Seen {
    /// Handshakes accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The most connections open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// How the server answers each line it reads.
#[derive(Clone, Copy)]
pub enum Reply {
    /// Reads and never answers.
    Silent,
    /// `req-N` is answered `reply-N` after the delay, in order.
    Echo(Duration),
    /// A memcached lookalike: `get k` is answered with the value `k` after the delay,
    /// `version` at once (after what came before it, in order).
    SlowMemcached(Duration),
}

/// A loopback server that counts what it sees, stopped when dropped.
pub struct Counting {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counting {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(reply: Reply) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                let now = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                counts.peak.fetch_max(now, Ordering::SeqCst);
                let counts = counts.clone();
                conns.spawn(async move {
                    serve(stream, reply).await;
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Counting { addr, seen, task }
    }
}

async fn serve(stream: tokio::net::TcpStream, reply: Reply) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match reply {
            Reply::Silent => continue,
            Reply::Echo(delay) => {
                tokio::time::sleep(delay).await;
                format!("{}\r\n", line.replacen("req-", "reply-", 1))
            }
            Reply::SlowMemcached(delay) => {
                if line == "version" {
                    "VERSION 1.0-slow\r\n".to_string()
                } else if let Some(keys) = line.strip_prefix("get ") {
                    tokio::time::sleep(delay).await;
                    let mut out = String::new();
                    for k in keys.split(' ') {
                        out.push_str(&format!("VALUE {k} 0 {}\r\n{k}\r\n", k.len()));
                    }
                    out + "END\r\n"
                } else {
                    "ERROR\r\n".to_string()
                }
            }
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            break;
        }
    }
}
