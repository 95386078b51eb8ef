//! The parsers for durations and port ranges, with one set of rules wherever the project takes
//! them on a command line: the `multiloop` command and `examples/loadtest` (which includes this
//! file). Only `std`.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Parses a duration: a number (decimals allowed) and a unit, `ms`, `s`, `m` or `h`, such as
/// `500ms`, `1.5s`, `30s`, `5m` or `1h`; a bare number is seconds. It must be above 0 and at
/// most `max`.
pub fn duration(s: &str, max: Duration) -> Result<Duration, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shown: String = text.chars().take(32).collect();
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{shown:?}: expected a number and a unit, such as 30s or 500ms"))?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{shown:?}: the unit must be ms, s, m or h")),
    };
    let secs = n * scale;
    let out_of_range = || format!("{shown:?}: must be above 0 and at most {max:?}");
    if !(secs.is_finite() && secs > 0.0 && secs <= max.as_secs_f64()) {
        return Err(out_of_range());
    }
    let d = Duration::from_secs_f64(secs).min(max);
    if d.is_zero() {
        return Err(out_of_range());
    }
    Ok(d)
}

/// Parses a port range, `LO-HI` with 1 <= LO <= HI, such as `40000-40999`.
pub fn port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let shown: String = s.chars().take(32).collect();
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{shown:?}: expected LO-HI, such as 40000-40999"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{shown:?}: {:?} is not a port from 1 to 65535", p.trim()))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo == 0 || lo > hi {
        return Err(format!("{shown:?}: need 1 <= LO <= HI"));
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn durations_take_one_set_of_rules_and_refuse_the_rest() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            (" 30s ", Duration::from_secs(30)),
            ("20", Duration::from_secs(20)),
            ("5m", Duration::from_secs(300)),
            ("24h", DAY),
        ];
        for (text, want) in ok {
            assert_eq!(duration(text, DAY), Ok(want), "{text}");
        }
        let long = "9".repeat(400);
        for bad in [
            "",
            "0s",
            "0.0000000001s",
            "-1s",
            "1.2.3s",
            "s",
            "25h",
            "1e3s",
            "NaN",
            "inf",
            "1 d",
            "3d",
            &long,
        ] {
            let err = duration(bad, DAY).unwrap_err();
            assert!(
                err.len() < 120,
                "{bad:?}: the input is not echoed whole: {err}"
            );
        }
        assert!(duration("2h", Duration::from_secs(3600)).is_err());
        // Arbitrary text of digits, dots and units: a duration in bounds or an error, never a
        // panic.
        let alphabet = ['0', '1', '9', '.', 'm', 's', 'h', ' ', '-', 'e'];
        for _ in 0..5_000 {
            let text: String = (0..rand::random_range(0..30))
                .map(|_| alphabet[rand::random_range(0..alphabet.len())])
                .collect();
            if let Ok(d) = duration(&text, DAY) {
                assert!(!d.is_zero() && d <= DAY, "{text:?}: {d:?}");
            }
        }
    }

    #[test]
    fn port_ranges_need_one_to_hi() {
        assert_eq!(port_range("40000-40999"), Ok(40000..=40999));
        assert_eq!(port_range(" 1 - 1 "), Ok(1..=1));
        for bad in ["", "9-3", "0-10", "1-65536", "x-y", "100", "-5", "1--2"] {
            assert!(port_range(bad).is_err(), "{bad:?}");
        }
    }
}
