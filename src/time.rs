//! Event-time durations: parsing (`500ms`, `1s`, `2m`, `1h`, `1m30s`) and display.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The largest magnitude accepted for an event timestamp, in milliseconds (2^53, about
/// 285,000 years either side of the epoch). Window arithmetic on timestamps and durations inside
/// this range never overflows an `i64`.
pub const MAX_ABS_TIMESTAMP_MS: i64 = 1 << 53;

/// The largest duration accepted, in milliseconds (2^50, about 35,000 years).
pub const MAX_DURATION_MS: i64 = 1 << 50;

/// A signed span of event time with millisecond resolution.
///
/// ```
/// use fenestra::Duration;
/// let d: Duration = "1m30s".parse().unwrap();
/// assert_eq!(d.as_millis(), 90_000);
/// assert_eq!(d.to_string(), "90s");
/// assert!("10".parse::<Duration>().is_err()); // a unit is required
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(i64);

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(0);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Duration(ms)
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: i64) -> Self {
        Duration(s * 1000)
    }

    /// The duration in milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Duration {
    /// The shortest exact rendering with one unit: `500ms`, `2s`, `5m`, `1h`, `3d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0ms");
        }
        for (unit, scale) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms % scale == 0 {
                return write!(f, "{}{}", ms / scale, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl FromStr for Duration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_duration(s)
    }
}

fn bad(input: &str, reason: impl Into<String>) -> Error {
    Error::InvalidDuration {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Parses `[-]<number><unit>[<number><unit>...]` with units `ms`, `s`, `m`, `h`, `d`.
/// Fractions are allowed when the result is a whole number of milliseconds (`1.5s`).
pub fn parse_duration(input: &str) -> Result<Duration> {
    let s = input.trim();
    if s.is_empty() {
        return Err(bad(input, "empty"));
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return Err(bad(input, "no number"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad(input, format!("expected a number at '{rest}'")));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(bad(
                    input,
                    format!("'{num}' has no unit; use ms, s, m, h or d (e.g. {num}ms)"),
                ));
            }
            other => {
                return Err(bad(input, format!("unknown unit '{other}'; use ms, s, m, h or d")));
            }
        };
        total += parse_scaled(input, num, scale)?;
        if total > MAX_DURATION_MS as i128 {
            return Err(bad(input, format!("longer than the maximum of {MAX_DURATION_MS} ms")));
        }
        rest = tail;
    }
    let v = total as i64;
    Ok(Duration(if neg { -v } else { v }))
}

/// `num * scale` in milliseconds, exactly; fractions must resolve to whole milliseconds.
fn parse_scaled(input: &str, num: &str, scale: i128) -> Result<i128> {
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(bad(input, format!("'{num}' is not a number")));
    }
    if int_part.len() > 18 || frac_part.len() > 18 {
        return Err(bad(input, format!("'{num}' is too long")));
    }
    let ip: i128 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| bad(input, format!("'{num}' is not a number")))?
    };
    let mut value = ip * scale;
    if !frac_part.is_empty() {
        let fp: i128 = frac_part
            .parse()
            .map_err(|_| bad(input, format!("'{num}' is not a number")))?;
        let denom = 10i128.pow(frac_part.len() as u32);
        let frac_ms = fp * scale;
        if frac_ms % denom != 0 {
            return Err(bad(input, "not a whole number of milliseconds"));
        }
        value += frac_ms / denom;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        let ms = |s: &str| parse_duration(s).unwrap().as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1s"), 1000);
        assert_eq!(ms("2m"), 120_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("-200ms"), -200);
        assert_eq!(ms("0ms"), 0);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for s in [
            "",
            "10",
            "1x",
            "s",
            "1.2.3s",
            "0.0001s",
            "-",
            "1s2",
            "99999999999999999999d",
        ] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for ms in [1, 999, 1000, 1500, 60_000, 3_600_000, 86_400_000, -2000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&d.to_string()).unwrap(), d);
        }
    }
}
