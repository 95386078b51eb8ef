//! `multiloop`: the port budget towards a target, and the switches of a running service.
//!
//! ```text
//! cargo install --path . --features cli --locked
//! multiloop doctor localhost:11211            # exit 1 when a source is above 80% of its ports
//! multiloop watch 127.0.0.1:11211 --for 60s   # a live view once a second
//! multiloop pools                             # the pools of a service serving multiloop::admin
//! multiloop pause cache                       # shed load now; `resume` to undo
//! multiloop resize cache 16
//! multiloop limit cache 4 --bulkhead batch
//! ```
//!
//! Exit status: 0 when all is well, 1 when `doctor` finds a source at risk or the service
//! refuses a call, 2 on bad input or when the tables or the service cannot be reached.

mod census;
mod remote;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "multiloop",
    version,
    about = "Port budget towards a loopback target, and the switches of a running service's pools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Counts the sockets towards TARGET and gives a verdict on its port budget.
    Doctor(census::DoctorArgs),
    /// Shows the port budget towards TARGET once a second: states, busiest sources, trend.
    Watch(census::WatchArgs),
    /// Lists a service's pools, or shows one with its stats and bulkheads.
    Pools {
        /// One pool's name, for its details.
        name: Option<String>,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Pauses a pool: every get fails at once until `resume` (load shedding).
    Pause {
        /// The pool's name, as `multiloop pools` lists it.
        pool: String,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Resumes a paused pool.
    Resume {
        /// The pool's name.
        pool: String,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Changes a pool's cap on open sockets.
    Resize {
        /// The pool's name.
        pool: String,
        /// The new cap.
        max_size: usize,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Changes a pool's default concurrency limit, or one bulkhead's.
    Limit {
        /// The pool's name.
        pool: String,
        /// The new limit.
        limit: usize,
        /// The bulkhead to change, instead of the pool's default limit.
        #[arg(long)]
        bulkhead: Option<String>,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
    /// Changes the bound on a pool's wait queue.
    MaxWaiters {
        /// The pool's name.
        pool: String,
        /// The new bound.
        max_waiters: usize,
        #[command(flatten)]
        remote: remote::RemoteArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("multiloop: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    use remote::Call;
    match command {
        Command::Doctor(args) => census::doctor(args).await,
        Command::Watch(args) => census::watch(args).await,
        Command::Pools { name, remote } => remote::pools(&remote, name.as_deref()).await,
        Command::Pause { pool, remote } => remote::call(&remote, &pool, Call::Pause).await,
        Command::Resume { pool, remote } => remote::call(&remote, &pool, Call::Resume).await,
        Command::Resize {
            pool,
            max_size,
            remote,
        } => remote::call(&remote, &pool, Call::Resize(max_size)).await,
        Command::Limit {
            pool,
            limit,
            bulkhead,
            remote,
        } => remote::call(&remote, &pool, Call::Limit(limit, bulkhead)).await,
        Command::MaxWaiters {
            pool,
            max_waiters,
            remote,
        } => remote::call(&remote, &pool, Call::MaxWaiters(max_waiters)).await,
    }
}

/// Parses `500ms`, `30s`, `5m` or `1h`, up to 24 hours.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, such as 30s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    if d.is_zero() || d > multiloop::MAX_DURATION {
        return Err(format!("{s:?}: must be above 0 and at most 24h"));
    }
    Ok(d)
}

/// Parses `LO-HI` with 1 <= LO <= HI.
fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or("expected LO-HI, such as 40000-40999")?;
    let lo: u16 = lo.parse().map_err(|_| format!("{lo:?} is not a port"))?;
    let hi: u16 = hi.parse().map_err(|_| format!("{hi:?} is not a port"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: need 1 <= LO <= HI"));
    }
    Ok(lo..=hi)
}
