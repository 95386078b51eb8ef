//! Dialing under churn and at high port occupancy, each measurement in a network namespace of
//! its own, the methods interleaved and repeated. Run with `cargo bench --bench churn` as root.
//!
//! Every measurement runs in a fresh namespace (the bench runs itself again under
//! `unshare -n`), so each starts from the same empty TIME_WAIT table and its own port range:
//! no method inherits another's TIME_WAIT, and the order of the methods, rotated each round,
//! cannot favour one. Without root it says so and does nothing.
//!
//! 1. **Churn.** 10,000 connect-and-close cycles, the client closing first, so each leaves a
//!    pair in TIME_WAIT: tokio's `TcpStream::connect` (from 127.0.0.1), the multiloop `Dialer`
//!    over 127.0.0.0/8 (`IP_BIND_ADDRESS_NO_PORT`), the same with `TCP_NODELAY` off, and
//!    `bind(127.x, 0)` without `NO_PORT`, from random sources and from one. Dials per second
//!    (wall) and CPU per dial (the thread's time on CPU, kernel included, from
//!    `/proc/thread-self/schedstat`).
//! 2. **Capacity.** With a per-socket range of 64 ports, how many dials complete before the
//!    first error, from 1, 16 and 256 source addresses; the physical limit is sources × 64.
//! 3. **Occupancy.** One source address (127.0.0.1) whose ephemeral range is 80%, 95% or 99%
//!    full of TIME_WAIT pairs towards the target (random ports, explicitly bound), then 2,000
//!    connects from it, the server closing first so that occupancy stays put: plain `connect`,
//!    `bind(0)` with `IP_BIND_ADDRESS_NO_PORT` (the dialer), and `bind(0)` without it. Only the
//!    `connect` calls are timed.
//! 4. **Fair** (`MULTILOOP_BENCH_ONLY=fair`). 4,000 dials in a loop, each closed at once, on
//!    tokio's default multi-thread runtime with the acceptor on the same runtime: tokio's
//!    `TcpStream::connect` and the `Dialer`, on a quiet machine and beside three threads that
//!    spin (more runnable threads than the machine's two cores), all four interleaved in each
//!    round. Dials per second, the ratio to `connect` under the same load in the same round,
//!    and the listen queue overflows the kernel counted (`TcpExt: ListenOverflows`, as `nstat`
//!    reads it, in the measurement's own namespace).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiloop::{Dialer, SourceSet, Strategy};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Rounds per table; `MULTILOOP_BENCH_ROUNDS` overrides it (1 to 100).
const ROUNDS: usize = 7;
const CYCLES: usize = 10_000;
const CONNECTS: usize = 2_000;
const CHURN: [&str; 5] = [
    "connect",
    "dialer",
    "dialer-nodelay-off",
    "bind-random",
    "bind-one",
];
/// The dial loop beside an acceptor on the same multi-thread runtime.
const FAIR: [&str; 2] = ["connect", "dialer"];
const FAIR_DIALS: usize = 4_000;
/// Threads that spin beside the runtime in the contended runs (the machine has 2 cores).
const BUSY_THREADS: usize = 3;
const OCCUPANCY: [&str; 3] = ["connect", "no-port", "bind"];
/// (ports in the range, share of them in TIME_WAIT before the connects).
const CELLS: [(u16, f64); 4] = [(5_000, 0.80), (5_000, 0.95), (5_000, 0.99), (28_232, 0.95)];

fn main() {
    let mut args = std::env::args().skip(1);
    if std::env::var_os("MULTILOOP_CHURN_CHILD").is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
        let kind = args.next().expect("child kind");
        let method = args.next().expect("child method");
        if kind == "fair" {
            let load: usize = args.next().unwrap().parse().unwrap();
            let (rate, overflows) = fair(&method, load);
            println!("RESULT {rate} {overflows}");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (rate, cpu_us) = match kind.as_str() {
            "churn" => runtime.block_on(churn(&method)),
            "capacity" => runtime.block_on(capacity(method.parse().unwrap())),
            _ => {
                let size: u16 = args.next().unwrap().parse().unwrap();
                let share: f64 = args.next().unwrap().parse().unwrap();
                runtime.block_on(occupancy(&method, size, share))
            }
        };
        println!("RESULT {rate} {cpu_us}");
        return;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !root || !args.all(|a| a == "--bench") {
        println!("churn bench: needs root, for a network namespace per measurement; skipped");
        return;
    }

    let rounds = std::env::var("MULTILOOP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| (1..=100).contains(r))
        .unwrap_or(ROUNDS);
    // MULTILOOP_BENCH_ONLY=churn|fair|capacity|occupancy runs one section.
    let only = std::env::var("MULTILOOP_BENCH_ONLY").ok();
    let runs = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if runs("churn") {
        churn_table(rounds);
    }
    if runs("fair") {
        fair_table(rounds);
    }
    if runs("capacity") {
        capacity_table();
    }
    if runs("occupancy") {
        occupancy_tables(rounds);
    }
}

fn churn_table(rounds: usize) {
    println!("churn: {CYCLES} connect-and-close cycles, client closes first; {rounds} rounds");
    let mut results = vec![Vec::new(); CHURN.len()];
    for round in 0..rounds {
        for k in 0..CHURN.len() {
            let m = (k + round) % CHURN.len();
            results[m].push(child(&["churn", CHURN[m]]));
        }
    }
    table(&CHURN, &results, "dials/s");
}

/// Quiet and contended side by side: each round runs both methods on a quiet machine and beside
/// `BUSY_THREADS` spinning threads, in rotated order.
fn fair_table(rounds: usize) {
    println!(
        "\nfair: {FAIR_DIALS} dials in a loop on tokio's default multi-thread runtime with an \
         acceptor on it; quiet, and beside {BUSY_THREADS} busy threads; {rounds} rounds"
    );
    let cells: Vec<(&str, usize)> = [0, BUSY_THREADS]
        .into_iter()
        .flat_map(|load| FAIR.iter().map(move |m| (*m, load)))
        .collect();
    let mut results = vec![Vec::new(); cells.len()];
    for round in 0..rounds {
        for k in 0..cells.len() {
            let c = (k + round) % cells.len();
            let (method, load) = cells[c];
            results[c].push(child(&["fair", method, &load.to_string()]));
        }
    }
    println!(
        "  {:<24} {:>28}   {:>22}   {:>24}",
        "method",
        "dials/s min/median/max",
        "vs connect min/med/max",
        "listen overflows min/med/max"
    );
    for (c, runs) in results.iter().enumerate() {
        let (method, load) = cells[c];
        // The same round's `connect` under the same load.
        let base = cells
            .iter()
            .position(|&(m, l)| m == "connect" && l == load)
            .unwrap();
        let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let ratios: Vec<f64> = runs
            .iter()
            .zip(&results[base])
            .map(|(r, b)| r.0 / b.0)
            .collect();
        let overflows: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let (lo, med, hi) = spread(&rates);
        let (rlo, rmed, rhi) = spread(&ratios);
        let (olo, omed, ohi) = spread(&overflows);
        let name = format!("{method} ({})", if load == 0 { "quiet" } else { "busy" });
        println!(
            "  {name:<24} {lo:>8.0} {med:>9.0} {hi:>9.0}   {rlo:>6.2} {rmed:>6.2} {rhi:>6.2}   {olo:>7.0} {omed:>7.0} {ohi:>7.0}"
        );
    }
}

fn capacity_table() {
    println!(
        "\ncapacity: dials before the first error with 64 ports per socket, client closes first"
    );
    for sources in [1u32, 16, 256] {
        let (done, limit) = child(&["capacity", &sources.to_string()]);
        println!(
            "  {sources:>4} sources: {done:>6} dials of a physical limit of {limit:>6} ({:.2}x)",
            done / limit
        );
    }
}

fn occupancy_tables(rounds: usize) {
    for (size, share) in CELLS {
        println!(
            "\noccupancy: {size} ports, {:.0}% in TIME_WAIT from 127.0.0.1; {CONNECTS} connects \
             timed; {rounds} rounds",
            100.0 * share
        );
        let mut results = vec![Vec::new(); OCCUPANCY.len()];
        for round in 0..rounds {
            for k in 0..OCCUPANCY.len() {
                let m = (k + round) % OCCUPANCY.len();
                let (size, share) = (size.to_string(), share.to_string());
                results[m].push(child(&["occupancy", OCCUPANCY[m], &size, &share]));
            }
        }
        table(&OCCUPANCY, &results, "connects/s");
    }
}

/// Runs one measurement in a fresh namespace: (rate, CPU µs per dial).
fn child(args: &[&str]) -> (f64, f64) {
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().expect("the bench's own path"))
        .args(args)
        .env("MULTILOOP_CHURN_CHILD", "1")
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{args:?}: {}\n{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut parts = line.split(' ').map(|p| p.parse::<f64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Per method: its rate min/median/max, and each round's ratios to the first method's rate and
/// CPU per dial (above 1.0: faster, or cheaper, than the first method).
fn table(methods: &[&str], results: &[Vec<(f64, f64)>], unit: &str) {
    println!(
        "  {:<20} {:>28}   {:>20}   {:>17}   {:>20}",
        "method",
        format!("{unit} min/median/max"),
        "rate ratio min/med/max",
        "CPU µs/dial median",
        "CPU ratio min/med/max"
    );
    for (m, runs) in results.iter().enumerate() {
        let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let ratio = |f: fn(&(f64, f64), &(f64, f64)) -> f64| {
            let v: Vec<f64> = runs.iter().zip(&results[0]).map(|(r, b)| f(r, b)).collect();
            spread(&v)
        };
        let (lo, med, hi) = spread(&rates);
        let (rlo, rmed, rhi) = ratio(|r, b| r.0 / b.0);
        let (clo, cmed, chi) = ratio(|r, b| b.1 / r.1);
        let cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
        println!(
            "  {:<20} {lo:>8.0} {med:>9.0} {hi:>9.0}   {rlo:>6.2} {rmed:>6.2} {rhi:>6.2}   {:>17.1}   {clo:>6.2} {cmed:>6.2} {chi:>6.2}",
            methods[m],
            spread(&cpu).1
        );
    }
}

fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Accepts; each connection is read to EOF, or closed at once while `close_first` is set.
async fn acceptor(close_first: Arc<AtomicBool>) -> SocketAddr {
    // Below the ranges the occupancy runs set, so that it takes none of their ports.
    let listener = TcpListener::bind("127.0.0.1:20000").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if close_first.load(Ordering::Relaxed) {
                drop(stream);
                continue;
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// This thread's time on CPU, kernel time included, in µs. The runtime is current-thread, so
/// the thread is the whole client and its acceptor.
fn cpu_us() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e3)
}

fn block(n: u32) -> SourceSet {
    SourceSet::from_addrs(
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 150, (i / 256) as u8, (i % 256) as u8))),
    )
    .unwrap()
}

fn dialer(method: &str) -> Option<Dialer> {
    let builder = Dialer::builder();
    let builder = match method {
        "dialer" => builder.sources(block(65_536)),
        "dialer-nodelay-off" => builder.sources(block(65_536)).nodelay(false),
        "bind-random" => builder
            .sources(block(65_536))
            .strategy(Strategy::Random)
            .bind_address_no_port(false),
        "bind-one" | "bind" => builder
            .sources(SourceSet::from_addrs([IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap())
            .bind_address_no_port(false)
            .quarantine(Duration::ZERO)
            .max_attempts(1),
        "no-port" => builder
            .sources(SourceSet::from_addrs([IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap())
            .quarantine(Duration::ZERO)
            .max_attempts(1),
        _ => return None,
    };
    Some(builder.build().unwrap())
}

async fn dial(dialer: &Option<Dialer>, target: SocketAddr) -> TcpStream {
    match dialer {
        None => TcpStream::connect(target).await.unwrap(),
        Some(d) => d.connect(target).await.unwrap(),
    }
}

async fn churn(method: &str) -> (f64, f64) {
    let target = acceptor(Arc::default()).await;
    let dialer = dialer(method);
    let (started, cpu) = (Instant::now(), cpu_us());
    for _ in 0..CYCLES {
        drop(dial(&dialer, target).await);
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_us() - cpu);
    (CYCLES as f64 / wall, cpu / CYCLES as f64)
}

/// Dials from `sources` addresses with a 64-port range until the first error: (dials, limit).
async fn capacity(sources: u32) -> (f64, f64) {
    let target = acceptor(Arc::default()).await;
    let dialer = Dialer::builder()
        .sources(block(sources))
        .local_port_range(40_000..=40_063)
        .build()
        .unwrap();
    let limit = sources as usize * 64;
    let mut done = 0;
    while done < limit * 2 {
        match dialer.connect(target).await {
            Ok(s) => {
                drop(s);
                done += 1;
            }
            Err(_) => break,
        }
    }
    (done as f64, limit as f64)
}

async fn occupancy(method: &str, size: u16, share: f64) -> (f64, f64) {
    let (lo, hi) = (30_000u16, 30_000 + size - 1);
    std::fs::write(
        "/proc/sys/net/ipv4/ip_local_port_range",
        format!("{lo} {hi}"),
    )
    .unwrap();
    // The filler: TIME_WAIT pairs towards the target from random ports of the range, the
    // client closing first.
    let close_first = Arc::new(AtomicBool::new(false));
    let target = acceptor(close_first.clone()).await;
    let mut ports: Vec<u16> = (lo..=hi).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..ports.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ports.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let fill = (f64::from(size) * share) as usize;
    for (i, &port) in ports[..fill].iter().enumerate() {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .unwrap();
        drop(socket.connect(target).await.unwrap());
        if i % 64 == 0 {
            // Let the acceptor drain its backlog.
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    close_first.store(true, Ordering::Relaxed);
    let dialer = dialer(method);
    let (mut timed, cpu) = (Duration::ZERO, cpu_us());
    let mut buf = [0u8; 1];
    for _ in 0..CONNECTS {
        let t = Instant::now();
        let mut stream = dial(&dialer, target).await;
        timed += t.elapsed();
        // The server closes first: no TIME_WAIT on this side, so occupancy stays put.
        let _ = stream.read(&mut buf).await;
    }
    let cpu = cpu_us() - cpu;
    (CONNECTS as f64 / timed.as_secs_f64(), cpu / CONNECTS as f64)
}

/// The kernel's count of connections dropped because a listen queue was full, in this
/// namespace (`TcpExt: ListenOverflows` of `/proc/net/netstat`, as `nstat` reads it).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `FAIR_DIALS` dials in a loop, each closed at once, on tokio's default multi-thread runtime
/// with the acceptor on the same runtime, beside `load` threads that spin: (dials per second,
/// listen queue overflows).
fn fair(method: &str, load: usize) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..load)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(
                        x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                    );
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let target = acceptor(Arc::new(AtomicBool::new(true))).await;
        let dialer = dialer(if method == "connect" {
            "connect"
        } else {
            "dialer"
        });
        let before = listen_overflows();
        let started = Instant::now();
        for _ in 0..FAIR_DIALS {
            drop(dial(&dialer, target).await);
        }
        let wall = started.elapsed().as_secs_f64();
        (
            FAIR_DIALS as f64 / wall,
            (listen_overflows() - before) as f64,
        )
    });
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    result
}
