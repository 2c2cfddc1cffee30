//! Human units on the command line: sizes (`512MiB`, `2GB`, `1048576`) and ages (`90s`, `30m`, `12h`, `7d`).

use crate::UsageError;

/// Parses a byte size: a number with an optional unit (B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in
/// powers of 1024; case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, UsageError> {
    let bad = || UsageError(format!("bad size {text:?}: expected a number with an optional unit, e.g. 512MiB or 2GB"));
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses an age: a number with a unit s, m, h or d (`7d`, `36h`).
pub fn parse_age(text: &str) -> Result<std::time::Duration, UsageError> {
    let bad = || UsageError(format!("bad age {text:?}: expected a number and a unit s, m, h or d, e.g. 7d or 12h"));
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    std::time::Duration::try_from_secs_f64(number * secs).ok().filter(|d| !d.is_zero()).ok_or_else(bad)
}

/// clap value parser for `--duration SECS`: a positive, finite number of seconds.
pub fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("must be a positive number of seconds, got {text}"));
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").ok(), Some(1 << 20));
        assert_eq!(parse_size("512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("2GB").ok(), Some(2_000_000_000));
        assert_eq!(parse_size("1.5 kib").ok(), Some(1536));
        for bad in ["", "MiB", "12 parsecs", "-1MB", "0", "1e999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(positive_seconds("1.5").ok(), Some(std::time::Duration::from_millis(1500)));
        for bad in ["", "0", "-1", "inf", "NaN", "1s"] {
            assert!(positive_seconds(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("90s").ok(), Some(std::time::Duration::from_secs(90)));
        assert_eq!(parse_age("7d").ok(), Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("1.5h").ok(), Some(std::time::Duration::from_secs(5400)));
        for bad in ["", "7", "d", "7w", "0s", "-1d"] {
            assert!(parse_age(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
