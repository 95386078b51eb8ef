//! The port budget: how many ephemeral ports a source address has towards a target.

use std::io;
use std::ops::RangeInclusive;

/// The system's ephemeral port range, `net.ipv4.ip_local_port_range`, inclusive.
///
/// Every source address has this many ports towards one target (28,232 by default on Linux).
///
/// # Errors
///
/// The error from reading `/proc/sys/net/ipv4/ip_local_port_range`, or
/// [`io::ErrorKind::InvalidData`] when its contents are not two ports; on platforms without it,
/// [`io::ErrorKind::Unsupported`].
pub fn local_port_range() -> io::Result<RangeInclusive<u16>> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
        parse_port_range(&text)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the ephemeral port range is read from /proc on Linux only",
        ))
    }
}

fn parse_port_range(text: &str) -> io::Result<RangeInclusive<u16>> {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next(), ports.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Ok(lo..=hi),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ip_local_port_range holds {text:?}, not two ports"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl() {
        assert_eq!(parse_port_range("32768\t60999\n").unwrap(), 32768..=60999);
        assert!(parse_port_range("60999 32768").is_err());
        assert!(parse_port_range("1").is_err());
        assert!(parse_port_range("1 2 3").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_live_range() {
        let range = local_port_range().unwrap();
        assert!(range.start() <= range.end());
    }
}
