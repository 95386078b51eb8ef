//! Prints the port budget towards a target, for a health check during an incident.
//!
//! ```text
//! cargo run --example doctor -- 127.0.0.1:11211
//! cargo run --example doctor -- 127.0.0.1:11211 --max-utilization 0.5
//! cargo run --example doctor -- 127.0.0.1:11211 --port-range 40000-40049
//! ```
//!
//! It reads `/proc/net/tcp` and `/proc/net/tcp6` and prints the ephemeral port range, the
//! sockets to the target by source address and TCP state, the busiest source's utilization and
//! a one-line verdict. It exits with status 1 when the busiest source is above
//! `--max-utilization` (default 0.8), and 2 on bad input or when /proc cannot be read.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Port budget towards a target: range, sockets by source and state, verdict")]
struct Args {
    /// The target, such as 127.0.0.1:11211.
    target: SocketAddr,
    /// Exit with status 1 when the busiest source uses more than this share of its ports.
    #[arg(long, default_value_t = 0.8)]
    max_utilization: f64,
    /// The per-socket ephemeral range the client sets (IP_LOCAL_PORT_RANGE), LO-HI.
    #[arg(long)]
    port_range: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.max_utilization > 0.0 && args.max_utilization <= 1.0) {
        eprintln!("--max-utilization must be above 0.0 and at most 1.0");
        return ExitCode::from(2);
    }
    let range = match args.port_range.as_deref().map(parse_range).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--port-range: {e}");
            return ExitCode::from(2);
        }
    };
    let snap = match multiloop::ports::snapshot(args.target, range) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("could not read the socket tables: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{snap}");
    let utilization = snap.utilization();
    if utilization > args.max_utilization {
        println!(
            "VERDICT: AT RISK. {} ({:.0}% > {:.0}%). New connections from that source will soon \
             fail; spread sources over 127.0.0.0/8 and bound connections with a pool.",
            snap.summary(),
            100.0 * utilization,
            100.0 * args.max_utilization
        );
        ExitCode::from(1)
    } else {
        println!(
            "VERDICT: OK. Busiest source at {:.1}% of its ports (threshold {:.0}%).",
            100.0 * utilization,
            100.0 * args.max_utilization
        );
        ExitCode::SUCCESS
    }
}

fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LO-HI")?;
    let lo: u16 = lo.parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u16 = hi.parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: need 1 <= LO <= HI"));
    }
    Ok(lo..=hi)
}
