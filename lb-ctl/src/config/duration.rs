//! Durations as written in the service file: `500ms`, `50s`, `1m30s`, `2h`.

use std::time::Duration;

/// Units from the largest to the smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses a duration: one or more `<integer><unit>` parts, units `h`, `m`, `s`, `ms`, each used at
/// most once and from the largest to the smallest (`1h30m`, `1m30s`, `2s500ms`, `0s`).
/// Surrounding whitespace is ignored. The error is a message for a diagnostic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. `5s`, `500ms`, `1m30s`".to_string());
    }
    let shown_text = super::shown(text);
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    // Index in UNITS of the last unit used: the next one must come after it.
    let mut last_unit: Option<usize> = None;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start {
            return Err(format!(
                "`{shown_text}` is not a duration: expected a number at `{}`",
                super::shown(&text[start..])
            ));
        }
        let digits = &text[start..pos];
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            let hint = if pos < bytes.len() {
                format!("unexpected `{}`", super::shown(&text[pos..]))
            } else {
                format!("`{}` has no unit (ms, s, m or h)", super::shown(digits))
            };
            return Err(format!("`{shown_text}` is not a duration: {hint}"));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "`{shown_text}` is not a duration: unknown unit `{}` (use ms, s, m or h)",
                super::shown(unit)
            ));
        };
        if let Some(last) = last_unit
            && index <= last
        {
            return Err(format!(
                "`{shown_text}` is not a duration: units must go from the largest to the smallest, \
                 each at most once (e.g. `1h30m`, `1m30s`)"
            ));
        }
        last_unit = Some(index);
        let too_long = || format!("`{shown_text}` is too long a duration");
        let value: u64 = digits.parse().map_err(|_| too_long())?;
        let part = value.checked_mul(UNITS[index].1).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("50s"), Ok(ms(50_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration(" 10s "), Ok(ms(10_000)));
        assert_eq!(parse_duration("0010ms"), Ok(ms(10)));
    }

    #[test]
    fn bad() {
        for bad in [
            "",
            "  ",
            "5",
            "s",
            "ms5",
            "5x",
            "5d",
            "1.5s",
            "-1s",
            "5 s",
            "1s1m",
            "1s1s",
            "10ms5s",
            "+5s",
            "5S",
            "1m30",
            "99999999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        let msg = parse_duration("5d").unwrap_err();
        assert!(msg.contains("unknown unit `d`"), "{msg}");
        let msg = parse_duration("5").unwrap_err();
        assert!(msg.contains("no unit"), "{msg}");
    }
}
