//! Chunk bounds as typed values: microseconds since 1970-01-01 UTC, parsed
//! from the pipeline file and the failed-chunk CSV, and rendered as SQL
//! literals (never spliced in from user text).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Microseconds since 1970-01-01 00:00:00 UTC.
pub type Micros = i64;

pub const MICROS_PER_SEC: i64 = 1_000_000;

/// Parses `2025-06-01T00:00:00Z`, `2025-06-15 14:40:40.388958` (any number
/// of fraction digits; beyond microseconds they are truncated), an explicit
/// offset (`+09:00`), or a bare date. Times without an offset are UTC.
pub fn parse_timestamp(text: &str) -> Result<Micros, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a timestamp; use a form like \"2025-06-01T00:00:00Z\" or \"2025-06-15 14:40:40.388958\""
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let normalized = t.replacen(' ', "T", 1);
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok(dt.with_timezone(&Utc).timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&normalized, format) {
            return Ok(naive.and_utc().timestamp_micros());
        }
    }
    // An offset without colon (+0900) or hours only (+09), as PostgreSQL prints.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, format) {
            return Ok(dt.with_timezone(&Utc).timestamp_micros());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros());
    }
    Err(bad())
}

/// Renders as `2025-06-15 14:40:40.388958` (UTC, trailing fraction zeros
/// dropped as PostgreSQL does): the failed-chunk CSV's form.
pub fn format_timestamp(micros: Micros) -> String {
    let Some(dt) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = micros.rem_euclid(MICROS_PER_SEC);
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s
}

/// A SQL literal for a chunk bound, typed for the time column.
pub fn sql_literal(micros: Micros, with_time_zone: bool) -> String {
    if with_time_zone {
        format!("'{}+00'::timestamptz", format_timestamp(micros))
    } else {
        format!("'{}'::timestamp", format_timestamp(micros))
    }
}

/// Parses a chunk length: a whole number of `s`, `m`, `h` or `d`.
pub fn parse_interval(text: &str) -> Result<Micros, String> {
    let bad =
        || format!("{text:?} is not an interval; use a whole number of s, m, h or d, like \"24h\"");
    let t = text.trim();
    let unit = t.chars().last().ok_or_else(bad)?;
    let secs_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: i64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    n.checked_mul(secs_per)
        .and_then(|s| s.checked_mul(MICROS_PER_SEC))
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_form_round_trips_at_any_precision() {
        // Given the timestamps users keep in their CSV files
        for (text, back) in [
            ("2025-06-15 14:40:40.388958", "2025-06-15 14:40:40.388958"),
            ("2025-06-15 14:40:40.3", "2025-06-15 14:40:40.3"),
            ("2025-06-15 14:40:40", "2025-06-15 14:40:40"),
            ("2025-06-15T14:40:40Z", "2025-06-15 14:40:40"),
            ("2025-06-15T23:40:40+09:00", "2025-06-15 14:40:40"),
            ("2025-06-15 23:40:40+09", "2025-06-15 14:40:40"),
            ("2025-06-15", "2025-06-15 00:00:00"),
            ("2025-06-15 14:40:40.1234567", "2025-06-15 14:40:40.123456"),
        ] {
            // Then they parse and render in the CSV form
            assert_eq!(
                format_timestamp(parse_timestamp(text).unwrap()),
                back,
                "{text}"
            );
        }
    }

    #[test]
    fn garbage_timestamps_say_what_to_write() {
        let err = parse_timestamp("yesterday").unwrap_err();
        assert!(err.starts_with("\"yesterday\" is not a timestamp"), "{err}");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("24h").unwrap(), 86_400 * MICROS_PER_SEC);
        assert_eq!(parse_interval("90s").unwrap(), 90 * MICROS_PER_SEC);
        assert_eq!(parse_interval("7d").unwrap(), 7 * 86_400 * MICROS_PER_SEC);
        assert!(parse_interval("0h").is_err());
        assert!(parse_interval("1.5h").is_err());
        assert!(parse_interval("h").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn literals_carry_the_type() {
        let t = parse_timestamp("2025-06-01T00:00:00Z").unwrap();
        assert_eq!(
            sql_literal(t, true),
            "'2025-06-01 00:00:00+00'::timestamptz"
        );
        assert_eq!(sql_literal(t, false), "'2025-06-01 00:00:00'::timestamp");
    }
}
