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
//! Exit status, for every command:
//!
//! - 0: all is well: `doctor` finds every source below `--max-utilization`; the service's
//!   answer (2xx) is its JSON and, for a change, confirms the change was made.
//! - 1: `doctor` finds a source at risk; the service refused the call (any 4xx or 5xx answer,
//!   JSON or not).
//! - 2: bad input (arguments), or no usable answer: the target does not resolve or the socket
//!   tables cannot be read; the service cannot be reached, does not answer within 10 s, or
//!   answers with something other than the admin endpoint's JSON (a 2xx that is not it or does
//!   not confirm the change, or another status, such as a redirect).
//!
//! A closed stdout (a pipe into `head`) changes nothing: the command ends quietly with the
//! status it would have had.

mod args;
mod census;
mod out;
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
            out::complain!("multiloop: cannot start: {e}");
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

/// A duration for `--interval` and `--for`: see [`args::duration`]; at most 24 hours.
fn parse_duration(s: &str) -> Result<Duration, String> {
    args::duration(s, multiloop::ConfigError::MAX_DURATION)
}

/// A port range for `--port-range`: see [`args::port_range`].
fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    args::port_range(s)
}
