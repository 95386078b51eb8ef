//! Signals to server processes, for the fault tests.

use std::time::{Duration, Instant};

/// Waits until every thread of `pid` is stopped (state `T` in `/proc`), for at most 5 s: `kill`
/// returns before the stop takes effect, and a memcached thread could answer one more request
/// in between.
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(") ")
                        .map(|(_, rest)| rest.starts_with('T'))
                })
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} did not stop within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}
