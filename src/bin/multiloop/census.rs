//! `doctor` and `watch`: the port budget towards a target, from the kernel's socket tables.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use multiloop::ports::{self, Census, PortSnapshot};
use serde_json::{Value, json};

use crate::out::{complain, say};

/// How long a name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The most addresses a name's lookup is checked for.
const MAX_ADDRESSES: usize = 8;

#[derive(Args)]
pub(crate) struct DoctorArgs {
    /// The target: an address or a host name with a port, such as localhost:11211.
    target: String,
    /// Exit with status 1 when the busiest source uses more than this share of its ports.
    #[arg(long, default_value_t = 0.8)]
    max_utilization: f64,
    /// The per-socket ephemeral range the client sets (IP_LOCAL_PORT_RANGE), LO-HI; only
    /// sockets from these ports are counted.
    #[arg(long, value_parser = crate::parse_range)]
    port_range: Option<RangeInclusive<u16>>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct WatchArgs {
    /// The target: an address or a host name with a port.
    target: String,
    /// The per-socket ephemeral range the client sets, LO-HI.
    #[arg(long, value_parser = crate::parse_range)]
    port_range: Option<RangeInclusive<u16>>,
    /// Time between views, such as 1s or 500ms.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    interval: Duration,
    /// Stop after this long, such as 60s, whatever the interval; otherwise when interrupted
    /// (Ctrl-C), or after 24 hours.
    #[arg(long = "for", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// How many of the busiest sources to show.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
    top: u16,
}

/// The target's addresses: the address itself, or the name's, looked up within 2 s.
async fn resolve(target: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let lookup = tokio::net::lookup_host(target);
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Err(_) => {
            return Err(format!(
                "looking up {target:?} took over 2 s; give TARGET as an address, such as \
                 127.0.0.1:11211"
            ));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "{target:?} is not host:port or does not resolve: {e}; check the name \
                 (`getent hosts NAME` looks it up the same way) or give TARGET as an address, \
                 such as 127.0.0.1:11211"
            ));
        }
        Ok(Ok(found)) => found,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if !addrs.contains(&addr) && addrs.len() < MAX_ADDRESSES {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!(
            "{target:?} resolves to no address; give TARGET as an address, such as 127.0.0.1:11211"
        ));
    }
    Ok(addrs)
}

/// One census per address, on a blocking thread: it reads the kernel's tables.
async fn snapshots(
    addrs: &[SocketAddr],
    range: &Option<RangeInclusive<u16>>,
) -> Result<Vec<PortSnapshot>, String> {
    let (addrs, range) = (addrs.to_vec(), range.clone());
    tokio::task::spawn_blocking(move || {
        addrs
            .iter()
            .map(|a| ports::snapshot(*a, range.clone()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| format!("the census failed: {e}"))?
    .map_err(|e| {
        format!(
            "could not read the socket tables: {e}; run `multiloop doctor` on the host, and in \
             the network namespace, where the client runs"
        )
    })
}

pub(crate) async fn doctor(args: DoctorArgs) -> ExitCode {
    if !(args.max_utilization > 0.0 && args.max_utilization <= 1.0) {
        complain!("multiloop doctor: --max-utilization must be above 0.0 and at most 1.0");
        return ExitCode::from(2);
    }
    let result = match resolve(&args.target).await {
        Ok(addrs) => snapshots(&addrs, &args.port_range).await,
        Err(e) => Err(e),
    };
    let snaps = match result {
        Ok(s) => s,
        Err(e) => {
            complain!("multiloop doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let worst = snaps
        .iter()
        .max_by(|a, b| a.utilization().total_cmp(&b.utilization()));
    let utilization = worst.map_or(0.0, PortSnapshot::utilization);
    let at_risk = utilization > args.max_utilization;
    if args.json {
        let out = json!({
            "target": args.target,
            "verdict": if at_risk { "at_risk" } else { "ok" },
            "utilization": utilization,
            "max_utilization": args.max_utilization,
            "addresses": snaps.iter().map(snapshot_json).collect::<Vec<_>>(),
        });
        say!("{out:#}");
    } else {
        for s in &snaps {
            say!("{s}\n");
        }
        if let (true, Some(w)) = (at_risk, worst) {
            say!(
                "VERDICT: AT RISK. {} ({:.0}% > {:.0}%). New connections from that source will \
                 soon fail; spread sources over 127.0.0.0/8 and bound connections with a pool.",
                w.summary(),
                100.0 * utilization,
                100.0 * args.max_utilization
            );
        } else {
            say!(
                "VERDICT: OK. Busiest source at {:.1}% of its ports (threshold {:.0}%).",
                100.0 * utilization,
                100.0 * args.max_utilization
            );
        }
    }
    if at_risk {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn snapshot_json(s: &PortSnapshot) -> Value {
    let range = |r: &RangeInclusive<u16>| json!([r.start(), r.end()]);
    json!({
        "target": s.target.to_string(),
        "system_range": range(&s.system_range),
        "socket_range": s.socket_range.as_ref().map(range),
        "ports_per_source": s.ports_per_source(),
        "utilization": s.utilization(),
        "sockets": s.total(),
        "established": s.established(),
        "time_wait": s.time_wait(),
        "outside_range": s.outside_range,
        "states": s.states.iter().map(|(state, n)| (state.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "census": match s.census { Census::SockDiag => "sock_diag", Census::ProcNet => "proc", _ => "other" },
        "sources": s.sources.iter().map(|u| json!({
            "source": u.source.map(|ip| ip.to_string()),
            "established": u.established,
            "time_wait": u.time_wait,
            "other": u.other,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) async fn watch(args: WatchArgs) -> ExitCode {
    let addrs = match resolve(&args.target).await {
        Ok(a) => a,
        Err(e) => {
            complain!("multiloop watch: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    // A deadline no interval outlasts: a view is cut short, not waited for.
    let deadline = tokio::time::Instant::from_std(started)
        + args
            .duration
            .unwrap_or(multiloop::ConfigError::MAX_DURATION);
    let tty = std::io::stdout().is_terminal();
    // The busiest source's ports over the last ten views, for the trend.
    let mut history: VecDeque<(Instant, usize)> = VecDeque::with_capacity(11);
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let over = tokio::time::sleep_until(deadline);
    tokio::pin!(over);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut interrupted => return ExitCode::SUCCESS,
            () = &mut over => return ExitCode::SUCCESS,
        }
        let snaps = tokio::select! {
            snaps = snapshots(&addrs, &args.port_range) => snaps,
            _ = &mut interrupted => return ExitCode::SUCCESS,
            () = &mut over => return ExitCode::SUCCESS,
        };
        let snaps = match snaps {
            Ok(s) => s,
            Err(e) => {
                complain!("multiloop watch: {e}");
                return ExitCode::from(2);
            }
        };
        let now = Instant::now();
        let busiest = snaps
            .iter()
            .filter_map(|s| s.busiest().map(|b| (b.total(), s.ports_per_source())))
            .max();
        history.push_back((now, busiest.map_or(0, |b| b.0)));
        if history.len() > 10 {
            history.pop_front();
        }
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&view(&args, &snaps, &history, started.elapsed()));
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing left to show.
            return ExitCode::SUCCESS;
        }
    }
}

fn view(
    args: &WatchArgs,
    snaps: &[PortSnapshot],
    history: &VecDeque<(Instant, usize)>,
    elapsed: Duration,
) -> String {
    let mut out = format!(
        "multiloop watch {} — {:.0}s\n",
        args.target,
        elapsed.as_secs_f64()
    );
    for s in snaps {
        let states: Vec<String> = s
            .states
            .iter()
            .map(|(state, n)| format!("{} {n}", state.name()))
            .collect();
        let states = if states.is_empty() {
            "no sockets".to_owned()
        } else {
            states.join(", ")
        };
        out.push_str(&format!(
            "{}: {states}; {} ports per source\n",
            s.target,
            s.ports_per_source()
        ));
        for u in s.sources.iter().take(usize::from(args.top)) {
            let source = u.source.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
            let share = u.total() as f64 / s.ports_per_source() as f64;
            out.push_str(&format!(
                "  {source:<16} {:>7} ports {} {:>5.1}%\n",
                u.total(),
                bar(share, 30),
                100.0 * share
            ));
        }
        if s.sources.len() > usize::from(args.top) {
            out.push_str(&format!(
                "  … and {} more sources\n",
                s.sources.len() - usize::from(args.top)
            ));
        }
    }
    let per = snaps
        .iter()
        .map(PortSnapshot::ports_per_source)
        .max()
        .unwrap_or(1);
    let utilization = snaps
        .iter()
        .map(PortSnapshot::utilization)
        .fold(0.0, f64::max);
    out.push_str(&format!(
        "busiest source: {} {:.1}%\n{}\n",
        bar(utilization, 40),
        100.0 * utilization,
        trend(history, per)
    ));
    out
}

/// `[#######.............]` for a share from 0.0 to 1.0.
fn bar(share: f64, width: usize) -> String {
    let filled = ((share.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The busiest source's ports per second over the views kept, and when it reaches the limit.
fn trend(history: &VecDeque<(Instant, usize)>, per_source: usize) -> String {
    let (Some(&(t0, first)), Some(&(t1, last))) = (history.front(), history.back()) else {
        return "trend: —".to_owned();
    };
    let secs = t1.duration_since(t0).as_secs_f64();
    if secs < 0.5 {
        return "trend: measuring…".to_owned();
    }
    let rate = (last as f64 - first as f64) / secs;
    if rate > 0.5 {
        let left = per_source.saturating_sub(last) as f64;
        format!(
            "trend: +{rate:.0} ports/s; at this rate the busiest source runs out in {:.0}s",
            left / rate
        )
    } else if rate < -0.5 {
        format!("trend: {rate:.0} ports/s, easing")
    } else {
        "trend: steady".to_owned()
    }
}
