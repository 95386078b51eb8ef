//! The port census at 100,000 sockets in TIME_WAIT: CPU per `ports::snapshot` through netlink
//! (`NETLINK_SOCK_DIAG`, filtered in the kernel) beside the `/proc/net/tcp` text it replaced,
//! interleaved and repeated. Run with `cargo bench --bench census` as root.
//!
//! It builds the sockets in a network namespace of its own (it runs itself again under
//! `unshare -n`), so the host's table and TIME_WAIT are untouched and the figures do not depend
//! on what else the host holds. Without root it says so and does nothing.
//!
//! Two targets: `busy`, with the 100,000 TIME_WAIT sockets towards it, and `quiet`, with 10
//! open connections on the same host (a pool's target while another client churns). CPU time
//! is the thread's own, from `/proc/thread-self/schedstat`, kernel time included.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use multiloop::{Dialer, ports};

#[path = "common/stats.rs"]
mod stats;
use stats::stats;

const SOCKETS: usize = 100_000;
const ROUNDS: usize = 5;
const CALLS: usize = 5;

fn main() {
    if std::env::var_os("MULTILOOP_CENSUS_NS").is_none() {
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
        if !root {
            println!("census bench: needs root, for a network namespace of its own; skipped");
            return;
        }
        let status = Command::new("unshare")
            .args(["-n", "--"])
            .arg(std::env::current_exe().expect("the bench's own path"))
            .env("MULTILOOP_CENSUS_NS", "1")
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => std::process::exit(s.code().unwrap_or(1)),
            Err(e) => println!("census bench: could not run unshare ({e}); skipped"),
        }
        return;
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (busy, quiet, _open) = runtime.block_on(build());
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let by_proc = ports::PortSnapshot::from_entries(
        busy,
        32768..=60999,
        None,
        ports::parse_proc_net_tcp(&text),
    );
    println!(
        "{} sockets towards the busy target ({} by /proc), {} in TIME_WAIT; the quiet one has {}",
        ports::snapshot(busy, None).unwrap().total(),
        by_proc.total(),
        ports::snapshot(busy, None).unwrap().time_wait(),
        ports::snapshot(quiet, None).unwrap().total(),
    );
    println!(
        "\n{:<7} {:<8} {:>12} {:>12} {:>12}   CPU ms per census",
        "target", "census", "min", "median", "max"
    );
    for (name, target) in [("busy", busy), ("quiet", quiet)] {
        let (mut netlink, mut proc, mut hashed) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            // Interleaved, so that drift hits both alike.
            netlink.push(cpu_ms(|| {
                let snap = ports::snapshot(target, None).unwrap();
                assert_eq!(snap.census, ports::Census::SockDiag);
            }));
            proc.push(cpu_ms(|| {
                let mut text = std::fs::read_to_string("/proc/net/tcp").unwrap();
                text.push_str(&std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default());
                let rows = ports::parse_proc_net_tcp(&text);
                ports::PortSnapshot::from_entries(target, 32768..=60999, None, rows);
            }));
            hashed.push(cpu_ms(|| {
                let mut text = std::fs::read_to_string("/proc/net/tcp").unwrap();
                text.push_str(&std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default());
                std::hint::black_box(hashed_tally(target, ports::parse_proc_net_tcp(&text)));
            }));
        }
        let n = stats(&mut netlink);
        let p = stats(&mut proc);
        let h = stats(&mut hashed);
        println!(
            "{name:<7} {:<8} {:>12.2} {:>12.2} {:>12.2}",
            "netlink", n.0, n.1, n.2
        );
        println!(
            "{name:<7} {:<8} {:>12.2} {:>12.2} {:>12.2}",
            "/proc", p.0, p.1, p.2
        );
        println!(
            "{name:<7} {:<8} {:>12.2} {:>12.2} {:>12.2}   (/proc, counted in a hash set and map per socket, as before)",
            "hashed", h.0, h.1, h.2
        );
        println!(
            "{name:<7} /proc / netlink, medians: {:.1}x; hashed / netlink: {:.1}x; the reaper's \
             census every 30 s (far from the warning): {:.3}% of a core, every 1 s (near it): \
             {:.2}%",
            p.1 / n.1,
            h.1 / n.1,
            n.1 / 30_000.0 * 100.0,
            n.1 / 1_000.0 * 100.0
        );
    }
}

/// 100,000 connections to `busy`, each closed by the client first (TIME_WAIT on its side), from
/// sources spread over 127.0.0.0/8; 10 open ones to `quiet`.
async fn build() -> (SocketAddr, SocketAddr, Vec<tokio::net::TcpStream>) {
    let busy = acceptor().await;
    let quiet = acceptor().await;
    let dialer = Dialer::builder().build().unwrap();
    let mut dials = futures_util::stream::iter(0..SOCKETS)
        .map(|_| dialer.connect(busy))
        .buffer_unordered(64);
    let mut done = 0;
    while let Some(stream) = dials.next().await {
        drop(stream.expect("a dial towards the busy target"));
        done += 1;
    }
    assert_eq!(done, SOCKETS);
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(dialer.connect(quiet).await.unwrap());
    }
    // Let the server side finish its closes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (busy, quiet, open)
}

/// A listener that reads each connection to its end, so that the client closes first.
async fn acceptor() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// The tally as the census kept it before it sorted rows: each socket towards the target in a
/// set of local addresses (a repeat counted once), each source in a map. Only the baseline.
fn hashed_tally(
    target: SocketAddr,
    rows: Vec<ports::TcpEntry>,
) -> std::collections::HashMap<std::net::IpAddr, [usize; 3]> {
    let mut seen = std::collections::HashSet::new();
    let mut by_source = std::collections::HashMap::new();
    for e in rows {
        if e.remote != target || e.state == ports::TcpState::Listen || !seen.insert(e.local) {
            continue;
        }
        let counts: &mut [usize; 3] = by_source.entry(e.local.ip()).or_default();
        counts[match e.state {
            ports::TcpState::Established => 0,
            ports::TcpState::TimeWait => 1,
            _ => 2,
        }] += 1;
    }
    by_source
}

/// The CPU time `CALLS` calls of `f` take on this thread, per call, in milliseconds.
fn cpu_ms(mut f: impl FnMut()) -> f64 {
    let on_cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = on_cpu();
    for _ in 0..CALLS {
        f();
    }
    (on_cpu() - before) as f64 / 1e6 / CALLS as f64
}
