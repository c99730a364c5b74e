//! Durations written as `250ms`, `10s`, `5m`, `1h30m`, `2d`.
//!
//! Units: `ms`, `s`, `m`, `h`, `d`. Several parts may be combined, largest first or not;
//! whitespace is not allowed. A bare number is refused so that `"10"` cannot silently mean
//! seconds to one reader and milliseconds to another.

use std::time::Duration;

/// Parses a duration such as `1h30m`.
///
/// # Errors
/// A message saying what is wrong, suitable to follow a field name.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("is empty; expected a duration such as `30s`, `5m` or `1h30m`".into());
    }
    let mut total: u128 = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{text}` is not a duration; expected a number followed by a unit (ms, s, m, h, d)"
            ));
        }
        let number: u128 = text[start..i]
            .parse()
            .map_err(|_| format!("`{text}` has a number that is too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor_ms: u128 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}` is missing a unit after {number}; use ms, s, m, h or d"
                ));
            }
            other => {
                return Err(format!("`{text}` has an unknown unit `{other}`; use ms, s, m, h or d"));
            }
        };
        total = total
            .checked_add(number.saturating_mul(factor_ms))
            .filter(|t| *t <= u128::from(u64::MAX))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    Ok(Duration::from_millis(u64::try_from(total).unwrap_or(u64::MAX)))
}

/// Formats a duration in the same notation, largest units first (`1h30m`, `250ms`).
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_combined_units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("1m500ms").unwrap(), Duration::from_millis(60_500));
    }

    #[test]
    fn refuses_malformed_text_with_a_reason() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("10").unwrap_err().contains("missing a unit"));
        assert!(parse("10x").unwrap_err().contains("unknown unit `x`"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("1 s").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("99999999999999999999999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "10s", "5m", "1h30m", "2d", "1m500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
