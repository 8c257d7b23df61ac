//! Parsing of human-written durations such as `200ms`, `10s`, `5m`, `1h`.

use std::time::Duration;

use crate::error::InvalidSetting;

/// Parses `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d` (a bare number is an error,
/// because a silent unit is how outages start).
///
/// ```
/// use std::time::Duration;
/// use sluice_core::duration::parse_duration;
/// assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, InvalidSetting> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| InvalidSetting(format!("duration '{s}' has no unit (use ms, s, m, h or d)")))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| InvalidSetting(format!("duration '{s}' does not start with a number")))?;
    let ms_per_unit = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(InvalidSetting(format!(
                "duration '{s}' has an unknown unit '{other}' (use ms, s, m, h or d)"
            )))
        }
    };
    let ms = value * ms_per_unit;
    if !ms.is_finite() || ms > 1e15 {
        return Err(InvalidSetting(format!("duration '{s}' is too large")));
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        for bad in ["", "s", "10", "10x", "-5s", "ten seconds"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
