//! The embedded target: a memcached text-protocol server (get, set, version), enough for the
//! harness, so that the harness needs nothing installed.
//!
//! It runs in a child process (the harness started again with `--serve-embedded`), so that
//! its sockets, threads and memory do not count as the client's. It exits when the harness
//! closes its stdin, or when killed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader as StdBufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// The most keys the embedded server stores, and the largest value it accepts.
const MAX_KEYS: usize = 1_000_000;
const MAX_VALUE: usize = 1 << 20;

/// A server process, killed on drop.
pub struct Target {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Target {
    /// A server that the harness does not own (`--target`).
    pub fn external(addr: SocketAddr) -> Target {
        Target { addr, child: None }
    }

    /// Starts the embedded server in a child process on a free loopback port.
    pub fn embedded() -> std::io::Result<Target> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--serve-embedded")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout from the embedded server"))?;
        let mut line = String::new();
        StdBufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("embedded server said {line:?}")))?;
        Ok(Target {
            addr,
            child: Some(child),
        })
    }

    /// Starts the system's memcached on a free loopback port.
    pub fn spawn_memcached() -> std::io::Result<Target> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut args = vec![
            "-l".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
            "-c".into(),
            max_connections().to_string(),
            "-t".into(),
            "2".into(),
        ];
        if std::env::var("USER").is_ok_and(|u| u == "root")
            || std::fs::read_to_string("/proc/self/status")
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        {
            args.extend(["-u".into(), "root".into()]);
        }
        let child = Command::new("memcached")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::other(format!("could not start memcached: {e}")))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        for _ in 0..250 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Target {
                    addr,
                    child: Some(child),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(std::io::Error::other("memcached did not start listening"))
    }
}

/// As many connections as memcached can open under this host's descriptor limit.
fn max_connections() -> u64 {
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(_, hard)| hard);
    hard.saturating_sub(64).clamp(1024, 65_536)
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

type Store = Arc<Mutex<HashMap<String, (u32, Vec<u8>)>>>;

/// The child process's main: serve until stdin closes.
pub fn serve_main() -> std::io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("LISTENING {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        // The harness holds our stdin; when it ends, so do we.
        let parent_gone = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let store: Store = Arc::default();
        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let _ = serve(stream, store).await;
                        });
                    }
                    // Out of descriptors: wait for connections to close.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
        };
        tokio::select! {
            _ = parent_gone => {}
            _ = accept => {}
        }
        Ok(())
    })
}

async fn serve(stream: TcpStream, store: Store) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("get") | Some("gets") => {
                let out = lookup(&store, words);
                writer.write_all(&out).await?;
                writer.write_all(b"END\r\n").await?;
            }
            Some("set") => {
                let (key, flags, len) = match (words.next(), words.next(), words.nth(1)) {
                    (Some(k), Some(f), Some(n)) => (
                        k.to_string(),
                        f.parse::<u32>().unwrap_or(0),
                        n.parse::<usize>().unwrap_or(usize::MAX),
                    ),
                    _ => {
                        writer.write_all(b"ERROR\r\n").await?;
                        writer.flush().await?;
                        continue;
                    }
                };
                if len > MAX_VALUE {
                    writer
                        .write_all(b"SERVER_ERROR object too large for cache\r\n")
                        .await?;
                    writer.flush().await?;
                    return Ok(());
                }
                let mut value = vec![0u8; len + 2];
                reader.read_exact(&mut value).await?;
                value.truncate(len);
                {
                    let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                    if store.len() < MAX_KEYS || store.contains_key(&key) {
                        store.insert(key, (flags, value));
                    }
                }
                writer.write_all(b"STORED\r\n").await?;
            }
            Some("version") => {
                writer
                    .write_all(b"VERSION 1.6-multiloop-embedded\r\n")
                    .await?
            }
            Some("quit") => return Ok(()),
            _ => writer.write_all(b"ERROR\r\n").await?,
        }
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// The `VALUE` lines for the keys found, built without holding the lock across an await.
fn lookup<'a>(store: &Store, keys: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let store = store.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for key in keys {
        if let Some((flags, value)) = store.get(key) {
            out.extend_from_slice(format!("VALUE {key} {flags} {}\r\n", value.len()).as_bytes());
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}
