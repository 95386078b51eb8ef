//! The /proc/net/tcp parser and the snapshot built on it never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiloop::ports::{PortSnapshot, parse_proc_net_tcp};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = parse_proc_net_tcp(&text);
    let target = "127.0.0.1:11211".parse().unwrap();
    let snap = PortSnapshot::from_entries(target, 32768..=60999, Some(40000..=40049), entries);
    assert!(snap.utilization() >= 0.0);
    let _ = snap.summary();
    let _ = snap.to_string();
});
