//! Values as the driver hands them over, made exact: decimal text checked
//! against its scale, narrow text decoded from the code page (invalid
//! sequences an error or U+FFFD), times and timestamps parsed from text and
//! rounded to the microsecond as PostgreSQL rounds, GUIDs, and text or
//! binary values longer than the limit cut or refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use encoding_rs::Encoding;

use super::read::{Col, OdbcOptions};
use etl_pg::error::EtlError;

/// Decimal text must fit the declared scale: casting would round it.
pub(super) fn check_scale(
    text: &arrow::array::StringArray,
    name: &str,
    scale: i8,
    first_row: u64,
) -> Result<(), EtlError> {
    for (r, v) in text.iter().enumerate() {
        let Some(v) = v else { continue };
        let digits = v
            .split_once('.')
            .map_or(0, |(_, f)| f.trim_end_matches('0').len());
        if digits > scale.max(0) as usize {
            return Err(EtlError::Data(format!(
                "column {name:?}: row {} holds {v}, which has more decimal places than the driver's declared scale {scale}; read it as text with [source.casts] (\"{name}\" = \"text\") or cast it in the query",
                first_row + r as u64 + 1
            )));
        }
    }
    Ok(())
}

/// A column name from the driver, decoded from the source's code page.
pub(super) fn decode_name(bytes: &[u8], encoding: &'static Encoding) -> Result<String, String> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|s| s.into_owned())
        .ok_or_else(|| {
            format!(
                "its name's bytes ({}) are not valid {}; fix encoding",
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                encoding.name()
            )
        })
}

/// Narrow text decoded from the configured encoding: an invalid sequence
/// is an error naming the column, row and bytes, or (replace) U+FFFD, counted.
pub fn decode_texts<'a>(
    options: &OdbcOptions,
    replaced: &mut BTreeMap<String, u64>,
    truncated: &mut BTreeMap<String, (u64, u64)>,
    name: &str,
    first_row: u64,
    values: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<ArrayRef, EtlError> {
    let encoding = options.encoding;
    let mut b = StringBuilder::new();
    for (r, v) in values.enumerate() {
        let Some(bytes) = v else {
            b.append_null();
            continue;
        };
        let row = first_row + r as u64 + 1;
        let bytes = cap_value(options, truncated, name, row, bytes, Some(encoding))?;
        match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
            Some(s) => b.append_value(s),
            None if options.replace_invalid => {
                let (s, _) = encoding.decode_without_bom_handling(bytes);
                *replaced.entry(name.to_string()).or_default() += 1;
                b.append_value(s);
            }
            None => {
                let shown: Vec<String> =
                    bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
                return Err(EtlError::Data(format!(
                    "column {name:?}: row {} holds bytes that are not valid {} ({}{}); set on_invalid_text = \"replace\" to load them as U+FFFD, or fix encoding",
                    first_row + r as u64 + 1,
                    encoding.name(),
                    shown.join(" "),
                    if bytes.len() > 32 { " ..." } else { "" }
                )));
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

/// Nanoseconds to microseconds, to the nearest, ties to even: what
/// PostgreSQL does with a longer fraction in text (`'...00.1234565'` is
/// `.123456`, `'23:59:59.9999996'` the next second). SQL Server's
/// datetime2 and time(7) have 100 ns steps.
pub fn round_to_micros(nanos: u32) -> i64 {
    let (micros, rest) = ((nanos / 1000) as i64, nanos % 1000);
    if rest > 500 || (rest == 500 && micros % 2 == 1) {
        micros + 1
    } else {
        micros
    }
}

/// The fraction after `.` in `text`, to microseconds (see
/// [`round_to_micros`]); digits past the ninth are ignored.
pub(super) fn fraction_micros(digits: &str) -> Option<i64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nine: String = digits
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    Some(round_to_micros(nine.parse().ok()?))
}

/// `HH:MM:SS[.fffffff]` to microseconds since midnight.
pub(super) fn parse_time(text: &str) -> Option<i64> {
    let (hms, fraction) = text.split_once('.').unwrap_or((text, ""));
    let t = chrono::NaiveTime::parse_from_str(hms, "%H:%M:%S").ok()?;
    let base = chrono::Timelike::num_seconds_from_midnight(&t) as i64 * 1_000_000;
    Some(
        base + if fraction.is_empty() {
            0
        } else {
            fraction_micros(fraction)?
        },
    )
}

/// `YYYY-MM-DD HH:MM:SS[.fffffff] +HH:MM` (SQL Server's datetimeoffset)
/// to microseconds since the epoch, UTC.
pub(super) fn parse_timestamptz(text: &str) -> Option<i64> {
    let (at, offset) = text.trim().rsplit_once(' ')?;
    let (at, fraction) = at.split_once('.').unwrap_or((at, ""));
    let local = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S").ok()?;
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let offset_secs = sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60);
    let fraction = if fraction.is_empty() {
        0
    } else {
        fraction_micros(fraction)?
    };
    Some((local.and_utc().timestamp() - offset_secs) * 1_000_000 + fraction)
}

/// A GUID's text (`6F9619FF-8B86-D011-B42D-00C04FC964FF`, braces allowed)
/// as its 16 bytes in the order written, as PostgreSQL's uuid reads it.
pub(super) fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .bytes()
        .filter(|&b| b != b'-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Columns fetched as text and parsed by etl: GUIDs (an error when not
/// one), times and datetimeoffsets (invalid ones NULL, counted like dates).
pub(super) fn parse_texts<'a>(
    col: Col,
    invalid_dates: &mut BTreeMap<String, (u64, u64)>,
    name: &str,
    first_row: u64,
    values: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<ArrayRef, EtlError> {
    let values = values.map(|v| v.map(String::from_utf8_lossy));
    Ok(match col {
        Col::Uuid => {
            let mut b = arrow::array::FixedSizeBinaryBuilder::new(16);
            for (r, v) in values.enumerate() {
                match v {
                    None => b.append_null(),
                    Some(v) => {
                        let bytes = parse_guid(&v).ok_or_else(|| {
                            EtlError::Data(format!(
                                "column {name:?}: row {} holds {v:?}, which is not a GUID; read it as text with [source.casts]",
                                first_row + r as u64 + 1
                            ))
                        })?;
                        b.append_value(bytes)
                            .map_err(|e| EtlError::Bug(format!("a 16-byte GUID: {e}")))?;
                    }
                }
            }
            Arc::new(b.finish())
        }
        Col::TimeText | Col::TimestampTzText => {
            let parse = if matches!(col, Col::TimeText) {
                parse_time
            } else {
                parse_timestamptz
            };
            let parsed: Vec<Option<i64>> = values
                .enumerate()
                .map(|(r, v)| {
                    let v = v?;
                    let v = v.trim();
                    let parsed = parse(v);
                    if parsed.is_none() {
                        invalid_date(invalid_dates, name, first_row + r as u64 + 1, v);
                    }
                    parsed
                })
                .collect();
            if matches!(col, Col::TimeText) {
                Arc::new(arrow::array::Time64MicrosecondArray::from(parsed))
            } else {
                Arc::new(arrow::array::TimestampMicrosecondArray::from(parsed).with_timezone("UTC"))
            }
        }
        other => return Err(EtlError::Bug(format!("{other:?} is not parsed from text"))),
    })
}

/// A column had a value longer than its fetch buffer (`buffer` bytes):
/// when its buffers start small ([`ADAPTIVE_BYTES`]) and may grow, the
/// chunk must be read again with buffers that hold `needed` bytes (at
/// least twice the current, at most one byte over `max_text_bytes`, where
/// the long value rules apply).
pub(super) fn grow(
    adaptive: bool,
    buffer: usize,
    max_text_bytes: usize,
    column: &str,
    needed: odbc_api::buffers::Indicator,
) -> Result<(), EtlError> {
    let over_cap = max_text_bytes + 1;
    if !adaptive || buffer >= over_cap {
        return Ok(());
    }
    let needed = match needed {
        odbc_api::buffers::Indicator::Length(n) => n,
        _ => over_cap,
    };
    Err(EtlError::ReadAgain {
        column: column.to_string(),
        bytes: needed.max(buffer.saturating_mul(2)).min(over_cap),
    })
}

/// The error for a driver that returned more than a column's declared
/// length (the fetch buffer was sized from it).
pub(super) fn declared_too_short(first_row: u64, rows: usize, buffer: usize) -> String {
    format!(
        "a value in rows {} to {} is longer than the driver declared for the column ({buffer} bytes); read the column as text (or binary) with [source.casts]",
        first_row + 1,
        first_row + rows as u64
    )
}

/// A binary column's values, each within `max_text_bytes` ([`cap_value`]:
/// longer is an error naming the row, or cut and counted).
pub(super) fn capped_binaries<'a>(
    options: &OdbcOptions,
    truncated: &mut BTreeMap<String, (u64, u64)>,
    column: &str,
    first_row: u64,
    values: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<ArrayRef, EtlError> {
    let mut b = arrow::array::BinaryBuilder::new();
    for (r, v) in values.enumerate() {
        let row = first_row + r as u64 + 1;
        let value = v.map(|v| cap_value(options, truncated, column, row, v, None));
        b.append_option(value.transpose()?);
    }
    Ok(Arc::new(b.finish()))
}

/// A value within `max_text_bytes`. Longer ones (fetch buffers hold one
/// byte more, so they show as longer) are an error naming the column and
/// row, or with `truncate_long` are cut to the limit, on a whole character
/// of `encoding` for text, and counted.
pub(super) fn cap_value<'a>(
    options: &OdbcOptions,
    truncated: &mut BTreeMap<String, (u64, u64)>,
    column: &str,
    row: u64,
    value: &'a [u8],
    encoding: Option<&'static Encoding>,
) -> Result<&'a [u8], EtlError> {
    let max = options.max_text_bytes;
    if value.len() <= max {
        return Ok(value);
    }
    if !options.truncate_long {
        return Err(EtlError::Data(format!(
            "column {column:?}: row {row} holds a value longer than max_text_bytes = {max}; raise max_text_bytes, or set on_long_value = \"truncate\" to cut such values (counted)"
        )));
    }
    let entry = truncated.entry(column.to_string()).or_insert((0, row));
    if entry.0 == 0 {
        tracing::warn!(
            column,
            row,
            max_text_bytes = max,
            "A value is longer than max_text_bytes; cutting it (counted in the summary)."
        );
    }
    entry.0 += 1;
    let cut = &value[..max];
    let Some(encoding) = encoding else {
        return Ok(cut);
    };
    // Drop a character the cut split (at most 3 bytes of one).
    Ok((0..cut.len().min(4))
        .map(|drop| &cut[..cut.len() - drop])
        .find(|prefix| {
            encoding
                .decode_without_bom_handling_and_without_replacement(prefix)
                .is_some()
        })
        .unwrap_or(cut))
}

/// Counts an invalid date or timestamp (loaded as NULL) and warns once per
/// column with its row and value.
pub(super) fn invalid_date(
    counts: &mut BTreeMap<String, (u64, u64)>,
    column: &str,
    row: u64,
    value: &str,
) {
    let entry = counts.entry(column.to_string()).or_insert((0, row));
    if entry.0 == 0 {
        tracing::warn!(
            column,
            row,
            value,
            "The driver returned an invalid date; loading NULL (counted in the summary)."
        );
    }
    entry.0 += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_round_to_microseconds_like_postgresql() {
        // Ties to even, as PostgreSQL's own input does.
        assert_eq!(round_to_micros(123_456_500), 123_456);
        assert_eq!(round_to_micros(123_457_500), 123_458);
        assert_eq!(round_to_micros(123_456_501), 123_457);
        assert_eq!(round_to_micros(999_999_600), 1_000_000);
        assert_eq!(parse_time("23:59:59.9999996"), Some(86_400_000_000));
        assert_eq!(parse_time("12:34:56.7890125"), Some(45_296_789_012));
        assert_eq!(parse_time("12:34:56"), Some(45_296_000_000));
        assert_eq!(parse_time("12:34"), None);
        // datetimeoffset: 2025-01-01 10:00:00.1234567 +09:00 is 01:00 UTC
        let utc = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
            .unwrap()
            .and_hms_opt(1, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert_eq!(
            parse_timestamptz("2025-01-01 10:00:00.1234567 +09:00"),
            Some(utc + 123_457)
        );
        assert_eq!(parse_timestamptz("2024-12-31 20:30:00 -04:30"), Some(utc));
        assert_eq!(parse_timestamptz("2025-01-01 10:00:00"), None);
    }

    #[test]
    fn guids_parse_in_written_order() {
        let g = parse_guid("{6F9619FF-8B86-D011-B42D-00C04FC964FF}").unwrap();
        assert_eq!(g[0], 0x6f);
        assert_eq!(g[15], 0xff);
        assert_eq!(parse_guid("6f9619ff8b86d011b42d00c04fc964ff"), Some(g));
        assert_eq!(parse_guid("6F9619FF-8B86"), None);
        assert_eq!(parse_guid("zz9619ff8b86d011b42d00c04fc964ff"), None);
    }
}
