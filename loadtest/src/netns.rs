//! Network namespaces: where the harness runs as root, each mode runs in a namespace of its own
//! (`unshare -n`), with its own loopback, port range and TIME_WAIT table, so that nothing it
//! leaves behind (plain binds, TIME_WAIT) reaches the host, the other modes or the tests.

use std::process::{Command, Stdio};

/// Whether modes can run in namespaces of their own; `Err` says why not. Root, `unshare` and
/// `ip` are needed, and a probe that brings loopback up in a fresh namespace must succeed (a
/// container may forbid it).
pub fn available() -> Result<(), String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !root {
        return Err("not root".into());
    }
    let probe = Command::new("unshare")
        .args(["-n", "--", "ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`unshare -n ip link set lo up` failed ({s})")),
        Err(e) => Err(format!("`unshare` or `ip` is missing ({e})")),
    }
}

/// A command that runs `exe` in a new network namespace.
pub fn command(exe: &std::path::Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "--"]).arg(exe);
    cmd
}

/// Brings up loopback in this process's (new) namespace.
pub fn bring_up_loopback() -> Result<(), String> {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip link set lo up: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("ip link set lo up failed ({status})"))
    }
}
