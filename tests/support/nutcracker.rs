//! nutcracker (twemproxy) in front of memcached processes, for the distributed-front test.

use std::net::SocketAddr;

use super::{Server, find_binary, free_port, spawn};

/// nutcracker (twemproxy) on a free loopback port, fronting `backends` (memcached) with ketama
/// hashing; its stats, as JSON, on `stats`.
pub struct Nutcracker {
    /// The proxy.
    pub server: Server,
    /// Where its stats are served (aggregated every 100 ms).
    pub stats: SocketAddr,
}

/// Starts nutcracker in front of `backends`, or returns `None` (after a notice) when it is not
/// installed.
pub fn start(backends: &[SocketAddr]) -> Option<Nutcracker> {
    let binary = find_binary("nutcracker")?;
    let stats_port = free_port();
    let servers: String = backends.iter().map(|b| format!("   - {b}:1\n")).collect();
    let server = spawn("nutcracker", &binary, None, move |port, dir| {
        let conf = dir.join("nutcracker.yml");
        let yaml = format!(
            "fleet:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             timeout: 2000\n  auto_eject_hosts: false\n  servers:\n{servers}"
        );
        std::fs::write(&conf, yaml).expect("write nutcracker.yml");
        [
            "-c".to_string(),
            conf.display().to_string(),
            "-s".to_string(),
            stats_port.to_string(),
            "-a".to_string(),
            "127.0.0.1".to_string(),
            "-i".to_string(),
            "100".to_string(),
            "-o".to_string(),
            dir.join("nutcracker.log").display().to_string(),
            "-p".to_string(),
            dir.join("nutcracker.pid").display().to_string(),
        ]
        .to_vec()
    });
    Some(Nutcracker {
        server,
        stats: ([127, 0, 0, 1], stats_port).into(),
    })
}
