//! Replays the incident multiloop exists for, and shows how each layer stops it.
//!
//! ```text
//! cargo run --release -p loadtest                      # all modes, about 95 s
//! cargo run --release -p loadtest -- --mode naive --duration 10s
//! cargo run --release -p loadtest -- --json out.json --svg timeline.svg
//! cargo run --release -p loadtest -- --target 127.0.0.1:11211   # a real memcached
//! ```
//!
//! A stream of batch requests (`--batch` keys each, `--rps` per second) goes to a memcached
//! target through four clients, one after another:
//!
//! - **naive**, the original: a new connection per key from one fixed source address, bound
//!   with `bind(addr, 0)` and no `IP_BIND_ADDRESS_NO_PORT`, unbounded concurrency, and at most
//!   `--max-idle` idle connections kept (gomemcache's free list). It runs out of ports.
//! - **spread**, the emergency fix: the same client, with each dial's source spread over
//!   127.0.0.0/8 by multiloop's dialer. Ports stop running out; concurrency is still unbounded.
//! - **pooled**, the real fix: a multiloop `Pool` of `--pool-size` connections, driven through
//!   `fan_out`, one `get` per key.
//! - **batched**, the fix that is also fast: the same pool and keys, each batch sent as
//!   multi-gets of `--chunk` keys through `multiloop::memcached::get_many`.
//!
//! Keys are *served*, *shed* (`Saturated`, `Paused`: a bounded pool refusing work it could not
//! do within its wait timeout, by design) or *failed* (ports, descriptors, timeouts, other);
//! the table keeps the three apart. Each mode runs in a process of its own and is stopped at
//! its duration plus 20 s, whatever it is stuck in.
//!
//! By default the target is an embedded memcached-text server, started in a child process on a
//! free loopback port, fresh for each mode, so the command works with nothing installed.
//! `--port-range` limits every socket's ephemeral ports (Linux 6.3+), so that the exhaustion
//! production meets at 28,232 ports happens here within the run.
//!
//! Each mode gets a block of ports of that size of its own: naive the range itself, spread the
//! next block, pooled and batched the ones after; none may reach 60000-60999, the tests' ports. A port reserved by a plain `bind(addr, 0)`, as the naive
//! client does, is skipped by `connect` for every source address until its TIME_WAIT ends, so
//! a shared range would let naive's leftovers fail the modes after it.

// The `multiloop` command's parsers for durations and port ranges: one set of rules for both.
#[path = "../../src/bin/multiloop/args.rs"]
mod args;
mod chart;
mod child;
mod metrics;
mod modes;
mod netns;
mod report;
mod server;
mod summary;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use metrics::{Recorder, Sampler};
use modes::{Keys, Mode, Settings};
use server::Target;
use summary::ModeSummary;

#[derive(Parser, Debug)]
#[command(about = "Replays the port-exhaustion incident against a memcached target, mode by mode")]
struct Args {
    /// Keys per batch request.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Batch requests per second.
    #[arg(long, default_value_t = 3.0)]
    rps: f64,
    /// How long each mode sends requests, such as 20s or 500ms.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Which modes to run, in order naive, spread, pooled, batched.
    #[arg(long, value_enum, default_value = "all")]
    mode: ModeArg,
    /// The naive client's one source address.
    #[arg(long, default_value = "127.0.0.1")]
    naive_source: IpAddr,
    /// Idle connections the naive and spread clients keep; the rest are closed.
    #[arg(long, default_value_t = 1000)]
    max_idle: usize,
    /// The pooled and batched clients' max_size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pool_size: u64,
    /// Keys per multi-get in the batched mode.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    chunk: u64,
    /// The ephemeral port range per socket, LO-HI, or "system" for the system's range. The
    /// default gives each source address 4,000 ports: the naive client fills them within its
    /// first requests, keeps 1,000 idle and leaves the rest in TIME_WAIT, as production did
    /// with 28,232. Spread, pooled and batched use the next three blocks of the same size.
    #[arg(long, default_value = "40000-43999", value_parser = parse_range)]
    port_range: PortRange,
    /// A memcached to use instead of the embedded server (loopback only).
    #[arg(long, conflicts_with = "spawn_memcached")]
    target: Option<SocketAddr>,
    /// Start the system's memcached binary for the run instead of the embedded server.
    #[arg(long)]
    spawn_memcached: bool,
    /// Stop a mode still running after this long, whatever it is stuck in; its figures are
    /// then its last report. Default: --duration plus 20 s.
    #[arg(long, value_parser = parse_duration)]
    time_limit: Option<Duration>,
    /// Write the summary as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a timeline chart (errors per second, TIME_WAIT sockets) as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Exit with status 3 unless naive failed and pooled and batched had no port, descriptor or
    /// timeout failures, kept their sockets within the pool size and their memory flat.
    #[arg(long)]
    check: bool,
    /// Run as the embedded server (used by the harness itself).
    #[arg(long, hide = true)]
    serve_embedded: bool,
    /// Run one mode against --target and print its summary (used by the harness itself).
    #[arg(long, hide = true)]
    child: bool,
    /// The child runs in a network namespace of its own and starts its own server there.
    #[arg(long, hide = true)]
    isolated: bool,
    /// Run every mode in the harness's own network namespace even as root. By default, as
    /// root, each mode runs in a namespace of its own (`unshare -n`): its own port range and
    /// TIME_WAIT table, nothing left behind on the host.
    #[arg(long)]
    no_netns: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    All,
    Naive,
    Spread,
    Pooled,
    Batched,
}

#[derive(Clone, Debug)]
struct PortRange(Option<RangeInclusive<u16>>);

fn parse_range(s: &str) -> Result<PortRange, String> {
    if s == "system" {
        return Ok(PortRange(None));
    }
    args::port_range(s).map(|r| PortRange(Some(r)))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    args::duration(s, Duration::from_secs(3600))
}

/// The ports the crate's tests narrow their sockets to (tests/support, `blocks`).
const TESTS_BLOCK: RangeInclusive<u16> = 60_000..=60_999;

/// The mode's own block of ports: the range, shifted by its size once per mode before it.
fn block_for(
    mode: Mode,
    range: &Option<RangeInclusive<u16>>,
) -> Result<Option<RangeInclusive<u16>>, String> {
    let Some(r) = range else {
        return Ok(None);
    };
    let size = u32::from(*r.end()) - u32::from(*r.start()) + 1;
    let shift = size * mode as u32;
    let (lo, hi) = (u32::from(*r.start()) + shift, u32::from(*r.end()) + shift);
    match (u16::try_from(lo), u16::try_from(hi)) {
        (Ok(lo), Ok(hi)) => Ok(Some(lo..=hi)),
        _ => Err(format!(
            "--port-range {}-{} leaves no room for the {} mode's block ({lo}-{hi}); pick a lower range",
            r.start(),
            r.end(),
            mode.name()
        )),
    }
}

/// Populates the target, then runs one mode with its progress line and sampler.
async fn run_mode(
    mode: Mode,
    target: SocketAddr,
    settings: &Settings,
    keys: Keys,
) -> Result<ModeSummary, String> {
    modes::populate(target, keys).await?;
    let bar = modes::Progress::new(mode.name(), settings.duration);
    let seconds = (settings.duration + settings.drain).as_secs() as usize + 2;
    let recorder = Arc::new(Recorder::new(seconds, settings.plan()));
    let settings = Settings {
        port_range: block_for(mode, &settings.port_range)?,
        ..settings.clone()
    };
    let sampler = Sampler::start(
        mode.name(),
        target,
        settings.port_range.clone(),
        recorder.clone(),
    );
    modes::run(mode, target, &settings, keys, recorder.clone(), &bar).await?;
    let samples = sampler.finish();
    Ok(ModeSummary::build(mode.name(), &recorder, &samples))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.serve_embedded {
        return match server::serve_main() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("embedded server: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if args.child {
        // A mode's process exits without tearing down its runtime: the naive client may leave
        // a million tasks behind, and exiting closes their sockets at once.
        let code = match runtime.block_on(run(args)) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("loadtest: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Creates the directories an output file goes in.
fn create_parent(path: &std::path::Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "could not create {} for {}: {e}",
                dir.display(),
                path.display()
            )
        }),
        _ => Ok(()),
    }
}

async fn run(args: Args) -> Result<std::process::ExitCode, String> {
    if !(args.rps > 0.0 && args.rps <= 1000.0) {
        return Err(format!(
            "--rps {} is out of range: above 0, at most 1000",
            args.rps
        ));
    }
    if let Some(t) = args.target
        && !t.ip().is_loopback()
    {
        return Err(format!(
            "--target {t} is not a loopback address; the harness sends load to this host only"
        ));
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if !args.child => println!("file descriptor limit: {n}"),
        Ok(_) => {}
        Err(e) => eprintln!("could not raise the file descriptor limit: {e}"),
    }
    let modes: Vec<Mode> = match args.mode {
        ModeArg::All => vec![Mode::Naive, Mode::Spread, Mode::Pooled, Mode::Batched],
        ModeArg::Naive => vec![Mode::Naive],
        ModeArg::Spread => vec![Mode::Spread],
        ModeArg::Pooled => vec![Mode::Pooled],
        ModeArg::Batched => vec![Mode::Batched],
    };
    let settings = Settings {
        batch: args.batch as usize,
        rps: args.rps,
        duration: args.duration,
        max_idle: args.max_idle,
        pool_size: args.pool_size as usize,
        chunk: args.chunk as usize,
        naive_source: args.naive_source,
        port_range: args.port_range.0.clone(),
        key_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(5),
        time_limit: args
            .time_limit
            .unwrap_or(args.duration + Duration::from_secs(5) + child::GRACE),
    };
    let keys = Keys(settings.batch);
    if !args.child {
        print_settings(&settings);
    }
    let _ = print_settings;
    fn print_settings(settings: &Settings) {
        println!(
            "{} keys per request, {} requests/s, {:?} per mode, {} ports per source address\n",
            settings.batch,
            settings.rps,
            settings.duration,
            settings.port_range.as_ref().map_or_else(
                || "the system's".to_string(),
                |r| (u32::from(*r.end()) - u32::from(*r.start()) + 1).to_string()
            )
        );
    }

    if args.child {
        let [mode] = modes.as_slice() else {
            return Err("--child runs one mode".into());
        };
        // An isolated child brings up its namespace's loopback and starts its own server.
        let own = if args.isolated {
            netns::bring_up_loopback()?;
            Some(match args.spawn_memcached {
                true => Target::spawn_memcached().map_err(|e| e.to_string())?,
                false => Target::embedded().map_err(|e| format!("embedded server: {e}"))?,
            })
        } else {
            None
        };
        let Some(target) = own.as_ref().map(|t| t.addr).or(args.target) else {
            return Err("--child runs one mode against --target, or --isolated".into());
        };
        let summary = run_mode(*mode, target, &settings, keys).await?;
        println!(
            "SUMMARY {}",
            serde_json::to_string(&summary).map_err(|e| e.to_string())?
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }

    // No mode's block may reach the tests' ports: a plain bind reserves its port for every
    // source address until its TIME_WAIT ends, so naive's leftovers would exhaust them.
    for &mode in &modes {
        if let Some(block) = block_for(mode, &settings.port_range)?
            && block.start() <= TESTS_BLOCK.end()
            && TESTS_BLOCK.start() <= block.end()
        {
            return Err(format!(
                "the {} mode's ports, {}-{}, reach {}-{}, which the crate's tests use; pick a \
                 --port-range whose blocks, one per mode, stay clear of it (README, \"Port blocks\")",
                mode.name(),
                block.start(),
                block.end(),
                TESTS_BLOCK.start(),
                TESTS_BLOCK.end()
            ));
        }
    }
    // Every mode's block must lie within the system range, or its dialer would refuse it.
    if let Ok(system) = multiloop::ports::local_port_range() {
        for &mode in &modes {
            if let Some(block) = block_for(mode, &settings.port_range)?
                && !(system.contains(block.start()) && system.contains(block.end()))
            {
                return Err(format!(
                    "the {} mode's ports, {}-{}, lie outside net.ipv4.ip_local_port_range \
                     {}-{}; pick a --port-range that leaves room for a block per mode",
                    mode.name(),
                    block.start(),
                    block.end(),
                    system.start(),
                    system.end()
                ));
            }
        }
    }

    // As root, each mode runs in a network namespace of its own.
    let isolated = match (args.no_netns, args.target) {
        (true, _) => Err("--no-netns".to_string()),
        (false, Some(_)) => Err("--target is in this namespace".to_string()),
        (false, None) => netns::available(),
    };
    match &isolated {
        Ok(()) => println!(
            "Each mode runs in a network namespace of its own (unshare -n): its own port range \
             and TIME_WAIT table, nothing left on the host.\n"
        ),
        Err(why) => println!(
            "Each mode runs in this network namespace ({why}), with a port block of its own.\n"
        ),
    }
    let mut summaries = Vec::new();
    let mut targets = Vec::new();
    for mode in modes {
        // Each mode runs in a process of its own, so that its peak threads and memory are its
        // own too, against a fresh server: its sockets and TIME_WAIT are its own.
        let place = if isolated.is_ok() {
            child::Place::Isolated {
                memcached: args.spawn_memcached,
            }
        } else {
            let target = match (args.target, args.spawn_memcached) {
                (Some(addr), _) => Target::external(addr),
                (None, true) => Target::spawn_memcached().map_err(|e| e.to_string())?,
                (None, false) => Target::embedded().map_err(|e| format!("embedded server: {e}"))?,
            };
            let place = child::Place::Shared(target.addr);
            targets.push(target);
            place
        };
        summaries.push(child::run(mode, &place, &settings)?);
    }

    println!("\n{}", report::table(&summaries));
    if isolated.is_ok() {
        println!("All sockets are closed; each mode's TIME_WAIT went with its namespace.");
    } else {
        let left: usize = targets
            .iter()
            .filter_map(|t| multiloop::ports::snapshot(t.addr, None).ok())
            .map(|s| s.time_wait())
            .sum();
        drop(targets);
        println!(
            "All sockets are closed. {left} client sockets remain in TIME_WAIT; the kernel \
             clears them within about 60 s."
        );
    }
    if let Some(path) = &args.json {
        create_parent(path)?;
        std::fs::write(path, report::json(&summaries))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        create_parent(path)?;
        let setting = chart::Setting {
            title: format!(
                "multiloop load test: {} batch requests/s of {} keys each, for {:?} per mode",
                settings.rps, settings.batch, settings.duration
            ),
            asked_per_s: settings.rps * settings.batch as f64,
        };
        chart::svg(path, &summaries, &setting).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if args.check {
        let problems = report::check(&summaries, settings.pool_size);
        if !problems.is_empty() {
            eprintln!("check failed:\n  {}", problems.join("\n  "));
            return Ok(std::process::ExitCode::from(3));
        }
        println!(
            "check passed: naive failed; pooled and batched had no port, descriptor or timeout \
             failures, stayed within {} sockets and kept their memory flat (shedding is \
             reported above, not failed)",
            settings.pool_size
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
