//! Test support: real `memcached` and `redis-server` processes on free loopback ports, killed on
//! drop, and small in-process servers for what a real server cannot do.
//!
//! When a server binary is missing, [`memcached`] and [`redis`] print a visible notice and return
//! `None`, so the test can skip. With `MULTILOOP_REQUIRE_SERVERS=1` (as CI sets it) a missing
//! binary fails the test instead.
#![allow(dead_code)]

pub mod faulty;
pub mod logs;
pub mod nutcracker;
pub mod servers;
pub mod signals;
pub mod wire;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    name: &'static str,
    _dir: Option<TempDir>,
}

impl Server {
    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.name, self.addr)
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `cond` holds, polling every 10 ms (for effects of the reaper and of servers,
/// which run on their own schedule); fails the test, naming `what`, after 10 s. It asserts the
/// outcome, never the time taken.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether CI asked for server-backed tests to fail instead of skipping.
pub fn servers_required() -> bool {
    std::env::var("MULTILOOP_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Finds `name` on PATH or in the usual system directories, or reports the skip.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if servers_required() {
        panic!(
            "{name} is not installed and MULTILOOP_REQUIRE_SERVERS=1: install it (apt-get install memcached redis-server nutcracker)"
        );
    }
    notice(&format!(
        "SKIPPED: {name} is not installed, so this server-backed test did not run. Install it \
         (apt-get install memcached redis-server nutcracker), or set MULTILOOP_REQUIRE_SERVERS=1 to make \
         this a failure."
    ));
    None
}

/// Prints a notice that `cargo test`'s output capture does not hide: `eprintln!` output of a
/// passing test is swallowed, a direct write to the stderr handle is not.
pub fn notice(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** NOTICE: {text} ***\n");
}

/// Address `host` of a /24 under `127.<tag>` that is new to this run: TIME_WAIT pairs from an
/// earlier run (up to 60 s ago) must not eat into this run's port budget. Each test picks its
/// own `tag`.
pub fn fresh_source(tag: u8, host: u8) -> std::net::IpAddr {
    use std::sync::OnceLock;
    static RUN: OnceLock<u8> = OnceLock::new();
    let run = *RUN.get_or_init(|| (std::process::id() % 256) as u8);
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, tag, run, host))
}

/// The port blocks the tests narrow their sockets to, all in 60000-60999. Nothing else in the
/// project uses that block: the load-test harness refuses a `--port-range` whose blocks reach
/// it, and the examples stay below it (README, "Port blocks"). A plain `bind(addr, 0)` reserves
/// its port for every source address until its TIME_WAIT ends, so a harness run just before
/// the tests could otherwise exhaust their ranges.
pub mod blocks {
    use std::ops::RangeInclusive;

    /// 50 ports for `IP_BIND_ADDRESS_NO_PORT` exhaustion tests.
    pub const DIAL: RangeInclusive<u16> = 60_000..=60_049;
    /// 50 ports for the plain-bind test, which poisons them for everyone else.
    pub const PLAIN_BIND: RangeInclusive<u16> = 60_100..=60_149;
    /// 64 ports for exhaustion at scale.
    pub const SCALE: RangeInclusive<u16> = 60_200..=60_263;
    /// One port, for the test that a plain bind reserves its port for every source.
    pub const SINGLE: u16 = 60_900;
    /// 12 ports the CLI's census test binds explicitly: 4 inside the range it asks about,
    /// the rest outside.
    pub const CENSUS: std::ops::RangeInclusive<u16> = 60_950..=60_961;
}

/// A dialer from `source` alone, with 50 ports per socket ([`blocks::DIAL`]): it runs out of
/// ports after about 50 churned dials.
pub fn one_source_dialer(source: std::net::IpAddr) -> multiloop::Dialer {
    multiloop::Dialer::builder()
        .sources(multiloop::SourceSet::from_addrs([source]).unwrap())
        .local_port_range(blocks::DIAL)
        .build()
        .unwrap()
}

/// A free port on 127.0.0.1 that no socket on the host points at: a port an earlier test's
/// server listened on can still have clients' TIME_WAIT pairs towards it for 60 s, which the
/// census tests would count. The server may lose a race for it; [`spawn`] retries with another.
pub fn free_port() -> u16 {
    let mut last = 0;
    for _ in 0..32 {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener addr");
        last = addr.port();
        if untouched(addr) {
            return last;
        }
    }
    last
}

/// Whether no socket on the host, in any state, has `addr` for its remote end.
pub fn untouched(addr: SocketAddr) -> bool {
    multiloop::ports::snapshot(addr, None)
        .map(|s| s.total() + s.outside_range == 0)
        .unwrap_or(true)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Starts a server binary in `dir` with its output discarded.
fn start_child(binary: &Path, args: Vec<String>, dir: &Path) -> Child {
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

fn spawn(
    name: &'static str,
    binary: &Path,
    port: Option<u16>,
    args: impl Fn(u16, &Path) -> Vec<String>,
) -> Server {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = port.unwrap_or_else(free_port);
        let dir =
            std::env::temp_dir().join(format!("multiloop-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create server temp dir");
        let dir = TempDir(dir);
        let mut child = start_child(binary, args(port, &dir.0), &dir.0);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!("{name} exited with {status} (port {port} taken?)");
                break;
            }
            if listening(&addr) && alive_after_start(&mut child) {
                return Server {
                    child,
                    addr,
                    name,
                    _dir: Some(dir),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                last_error = format!("{name} did not listen on {addr} within 10 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not start {name}: {last_error}");
}

/// Whether something listens on `addr`. A connect from an ephemeral port equal to `addr`'s own
/// port (possible while nothing listens yet: the port is in the ephemeral range) connects the
/// socket to itself; that is not a server.
fn listening(addr: &SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(addr, Duration::from_millis(100))
        .is_ok_and(|probe| probe.local_addr().ok() != probe.peer_addr().ok())
}

/// Whether the child still runs a moment after its port answered: a server that failed to
/// bind (another test's server took the port first, and answered the probe) exits at once.
fn alive_after_start(child: &mut Child) -> bool {
    std::thread::sleep(Duration::from_millis(20));
    matches!(child.try_wait(), Ok(None))
}

/// Starts memcached on a free loopback port, or returns `None` (after a notice) when it is not
/// installed.
pub fn memcached() -> Option<Server> {
    memcached_on(None)
}

/// Starts memcached on `port` (a free one if `None`), for tests that restart a server where it
/// was.
pub fn memcached_on(port: Option<u16>) -> Option<Server> {
    let binary = find_binary("memcached")?;
    let root = is_root();
    Some(spawn("memcached", &binary, port, move |port, _| {
        let mut args: Vec<String> = [
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-t",
            "2",
            "-c",
            "8192",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if root {
            args.extend(["-u".to_string(), "root".to_string()]);
        }
        args
    }))
}

/// Starts redis-server on a free loopback port with `extra` configuration arguments (such as
/// `["--requirepass", "secret"]`), or returns `None` (after a notice) when it is not installed.
///
/// Unless `extra` says otherwise it binds 127.0.0.1 only, saves nothing, and turns protected
/// mode off, which is safe on a loopback-only bind.
pub fn redis(extra: &[&str]) -> Option<Server> {
    let binary = find_binary("redis-server")?;
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Some(spawn("redis-server", &binary, None, move |port, dir| {
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        if !extra.iter().any(|a| a == "--protected-mode") {
            args.extend(["--protected-mode".into(), "no".into()]);
        }
        args.extend(extra.iter().cloned());
        args
    }))
}

/// A server process listening on a unix domain socket, killed when dropped.
pub struct UnixServer {
    child: Child,
    /// The socket's path.
    pub path: PathBuf,
    _dir: TempDir,
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_unix(
    name: &'static str,
    binary: &Path,
    args: impl Fn(&Path) -> Vec<String>,
) -> UnixServer {
    let dir = std::env::temp_dir().join(format!(
        "multiloop-{name}-unix-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create server temp dir");
    let dir = TempDir(dir);
    let path = dir.0.join(format!("{name}.sock"));
    let mut child = start_child(binary, args(&path), &dir.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited with {status} before listening on {}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    UnixServer {
        child,
        path,
        _dir: dir,
    }
}

/// Starts memcached on a unix socket, or returns `None` (after a notice) when not installed.
pub fn memcached_unix() -> Option<UnixServer> {
    let binary = find_binary("memcached")?;
    let root = is_root();
    Some(spawn_unix("memcached", &binary, move |path| {
        let mut args = vec![
            "-s".to_string(),
            path.display().to_string(),
            "-a".into(),
            "0700".into(),
        ];
        if root {
            args.extend(["-u".to_string(), "root".to_string()]);
        }
        args
    }))
}

/// Starts redis-server on a unix socket only, or returns `None` (after a notice).
pub fn redis_unix() -> Option<UnixServer> {
    let binary = find_binary("redis-server")?;
    Some(spawn_unix("redis-server", &binary, |path| {
        [
            "--port",
            "0",
            "--unixsocket",
            &path.display().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }))
}

/// An in-process server that accepts, records each peer address, reads until the client closes
/// and then closes: the client closes first, so the client side ends in TIME_WAIT.
pub struct Acceptor {
    /// Where it listens.
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Acceptor {
    /// Listens on a free port of `ip`.
    pub async fn start(ip: &str) -> Acceptor {
        // A port no earlier test's clients still point at (see `free_port`).
        let mut listener = TcpListener::bind((ip, 0)).await.expect("bind acceptor");
        for _ in 0..32 {
            let addr = listener.local_addr().expect("acceptor addr");
            if untouched(addr) {
                break;
            }
            listener = TcpListener::bind((ip, 0)).await.expect("bind acceptor");
        }
        let addr = listener.local_addr().expect("acceptor addr");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            loop {
                // Keep accepting after errors such as EMFILE, as a real server does.
                let (mut stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                };
                seen.lock().unwrap().push(peer);
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Acceptor { addr, peers, task }
    }

    /// The peer addresses accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port held by a bound socket that does not listen: connections to it are refused,
/// and no other test or server can take the port meanwhile.
pub struct ClosedPort {
    /// The refused address.
    pub addr: SocketAddr,
    socket: socket2::Socket,
}

impl ClosedPort {
    /// Starts listening on the held port, for tests where a dead target comes back.
    pub fn listen(self) -> tokio::net::TcpListener {
        self.socket.listen(128).expect("listen on the held port");
        self.socket.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(self.socket.into()).expect("tokio listener")
    }
}

/// A loopback address where nothing listens, held for the test's duration.
pub fn closed_port() -> ClosedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    ClosedPort { addr, socket }
}
