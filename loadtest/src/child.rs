//! Runs one mode in a process of its own, so that its peak threads and memory are its own, and
//! stops it at its time limit whatever it is stuck in.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::modes::{Mode, Settings};
use crate::summary::ModeSummary;

/// What a mode may take past its duration and drain before it is stopped: populating the
/// target, starting up and writing its summary.
pub const GRACE: Duration = Duration::from_secs(15);

/// Where a mode's process runs and what it dials.
pub enum Place {
    /// In the harness's namespace, against this target.
    Shared(SocketAddr),
    /// In a network namespace of its own, against a server it starts there (the system's
    /// memcached if `true`, else the embedded one).
    Isolated { memcached: bool },
}

/// Runs `mode` in a child process and reads back its summary. A mode still running at its time
/// limit (`duration + drain + GRACE` unless set) is killed, and its last report (the mode
/// prints its summary so far every half second) stands as its summary, marked as stopped.
pub fn run(mode: Mode, place: &Place, s: &Settings) -> Result<ModeSummary, String> {
    let range = s.port_range.as_ref().map_or_else(
        || "system".to_string(),
        |r| format!("{}-{}", r.start(), r.end()),
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = match place {
        Place::Shared(target) => {
            let mut c = Command::new(&exe);
            c.args(["--target", &target.to_string()]);
            c
        }
        Place::Isolated { memcached } => {
            let mut c = crate::netns::command(&exe);
            c.arg("--isolated");
            if *memcached {
                c.arg("--spawn-memcached");
            }
            c
        }
    };
    let mut child = command
        .args(["--child", "--mode", mode.name()])
        .args(["--batch", &s.batch.to_string(), "--rps", &s.rps.to_string()])
        .args(["--duration", &format!("{}ms", s.duration.as_millis())])
        .args(["--naive-source", &s.naive_source.to_string()])
        .args(["--max-idle", &s.max_idle.to_string()])
        .args(["--pool-size", &s.pool_size.to_string()])
        .args(["--chunk", &s.chunk.to_string()])
        .args(["--port-range", &range])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not run the {} mode: {e}", mode.name()))?;
    let stdout = child.stdout.take().ok_or("no stdout from the mode")?;
    // The last report and the summary, read on a thread of their own.
    let seen: Arc<Mutex<(Option<String>, Option<String>)>> = Arc::default();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut seen = seen.lock().unwrap();
                if let Some(p) = line.strip_prefix("SNAPSHOT ") {
                    seen.0 = Some(p.to_string());
                } else if let Some(json) = line.strip_prefix("SUMMARY ") {
                    seen.1 = Some(json.to_string());
                }
            }
        })
    };
    let limit = s.time_limit;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for the {} mode: {e}", mode.name())),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reader.join();
    let (last, summary) = seen.lock().unwrap().clone();
    let summary = match (status, summary) {
        (_, Some(json)) => serde_json::from_str(&json).map_err(|e| e.to_string())?,
        (None, None) => {
            let last: Option<ModeSummary> = last.and_then(|json| serde_json::from_str(&json).ok());
            let why = match &last {
                Some(m) => format!(
                    "stopped at its time limit ({limit:?}); its figures are its last report, \
                     {:.1} s into its run",
                    m.run_s
                ),
                None => format!("stopped at its time limit ({limit:?}) before its first report"),
            };
            println!("{:>7}: {why}", mode.name());
            ModeSummary::stopped(mode.name(), last, s.plan(), why)
        }
        (Some(status), None) => {
            return Err(format!(
                "the {} mode ended with {status} and no summary",
                mode.name()
            ));
        }
    };
    println!(
        "{:>7}: of {} keys, {} served, {} shed, {} failed, {} not attempted; batch p99 {:.0} ms",
        summary.mode,
        summary.keys_requested,
        summary.keys_ok,
        summary.errors.shed(),
        summary.errors.failed(),
        summary.keys_not_attempted,
        summary.latency_ms.p99
    );
    if let Some(e) = &summary.first_error {
        println!("         first error: {e}");
    }
    Ok(summary)
}
