//! Quantities as policy files write them: bandwidth rates (`1MiB/s`, for `throttle`) and durations (`500ms`, `2s`,
//! `7d`, for the `keystrokes` section). Each parser returns a one-line reason on error, which the compiler reports
//! with the line and field.

use std::time::Duration;

/// Rate units and their size in bytes per second.
const RATE_UNITS: [(&str, u64); 7] = [
    ("B/s", 1),
    ("KB/s", 1_000),
    ("KiB/s", 1 << 10),
    ("MB/s", 1_000_000),
    ("MiB/s", 1 << 20),
    ("GB/s", 1_000_000_000),
    ("GiB/s", 1 << 30),
];

/// The rate units, for messages.
pub(crate) const RATE_UNIT_NAMES: &str = "B/s, KB/s, KiB/s, MB/s, MiB/s, GB/s, GiB/s";

/// Duration units and their length in milliseconds (longest suffix first, so `ms` is not read as `m`).
const DURATION_UNITS: [(&str, u64); 6] =
    [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000)];

/// The duration units, for messages.
pub(crate) const DURATION_UNIT_NAMES: &str = "ms, s, m, h, d, w";

/// Parses a rate such as `1MiB/s`, `512 KiB/s` or `1.5MB/s` into bytes per second. Zero, a missing or unknown
/// unit, and anything that is not a positive number are errors.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let Some(&(_, scale)) = RATE_UNITS.iter().find(|(u, _)| *u == unit) else {
        let message = if unit.is_empty() {
            format!("rate `{t}` has no unit; write e.g. `1MiB/s` (units: {RATE_UNIT_NAMES})")
        } else {
            format!("unknown rate unit `{unit}` in `{t}`; expected one of {RATE_UNIT_NAMES}")
        };
        return Err(message);
    };
    let value: f64 = number.parse().map_err(|_| format!("`{t}` is not a rate: expected a number, then a unit"))?;
    let bytes = (value * scale as f64).round();
    if bytes < 1.0 {
        return Err(format!("rate `{t}` is zero; a throttle needs at least 1 B/s (use `block` to stop traffic)"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("rate `{t}` is too large"));
    }
    Ok(bytes as u64)
}

/// A rate for people: the largest unit that divides it exactly (`1MiB/s`, `1500B/s`).
pub fn format_rate(bytes_per_sec: u64) -> String {
    RATE_UNITS
        .iter()
        .rev()
        .find(|(_, scale)| bytes_per_sec >= *scale && bytes_per_sec.is_multiple_of(*scale))
        .map_or_else(|| format!("{bytes_per_sec}B/s"), |(unit, scale)| format!("{}{unit}", bytes_per_sec / scale))
}

/// Parses a duration such as `500ms`, `2s`, `5m`, `12h` or `7d` (a whole number, then a unit). Zero is an error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() {
        return Err(format!("`{t}` is not a duration: expected a whole number and a unit, e.g. `2s` or `500ms`"));
    }
    let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        let message = if unit.is_empty() {
            format!("duration `{t}` has no unit; write e.g. `{t}s` (units: {DURATION_UNIT_NAMES})")
        } else {
            format!("unknown duration unit `{unit}` in `{t}`; expected one of {DURATION_UNIT_NAMES}")
        };
        return Err(message);
    };
    let n: u64 = number.parse().map_err(|_| format!("duration `{t}` is too large"))?;
    if n == 0 {
        return Err(format!("duration `{t}` is zero"));
    }
    n.checked_mul(scale).map(Duration::from_millis).ok_or_else(|| format!("duration `{t}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_every_unit() {
        assert_eq!(parse_rate("1MiB/s"), Ok(1 << 20));
        assert_eq!(parse_rate("1 MiB/s"), Ok(1 << 20));
        assert_eq!(parse_rate("512KiB/s"), Ok(512 * 1024));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate("1.5KB/s"), Ok(1_500));
        assert_eq!(parse_rate("100B/s"), Ok(100));
        assert_eq!(parse_rate("1GiB/s"), Ok(1 << 30));
        assert_eq!(parse_rate("3GB/s"), Ok(3_000_000_000));
    }

    #[test]
    fn bad_rates_say_why() {
        assert!(parse_rate("0MiB/s").expect_err("zero").contains("is zero"));
        assert!(parse_rate("0.1B/s").expect_err("rounds to zero").contains("is zero"));
        assert!(parse_rate("10").expect_err("no unit").contains("has no unit"));
        assert!(parse_rate("10 mbps").expect_err("unit").contains("unknown rate unit `mbps`"));
        assert!(parse_rate("fast").expect_err("not a number").contains("unknown rate unit"));
        assert!(parse_rate("MiB/s").expect_err("no number").contains("expected a number"));
        assert!(parse_rate("1.2.3MiB/s").expect_err("bad number").contains("expected a number"));
        assert!(parse_rate("-1MiB/s").is_err());
    }

    #[test]
    fn rates_print_in_the_largest_exact_unit() {
        assert_eq!(format_rate(1 << 20), "1MiB/s");
        assert_eq!(format_rate(2_000_000), "2MB/s");
        assert_eq!(format_rate(1_500), "1500B/s");
        assert_eq!(format_rate(3 << 30), "3GiB/s");
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_duration("2").expect_err("no unit").contains("has no unit"));
        assert!(parse_duration("0s").expect_err("zero").contains("is zero"));
        assert!(parse_duration("1.5s").expect_err("fraction").contains("unknown duration unit"));
        assert!(parse_duration("soon").expect_err("word").contains("not a duration"));
        assert!(parse_duration("99999999999999999999d").expect_err("huge").contains("too large"));
    }
}
