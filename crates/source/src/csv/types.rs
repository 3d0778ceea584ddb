//! Column types of a CSV file: named in `[source.columns]`, or inferred
//! from a sample of values; values parsed as PostgreSQL's input functions
//! read them; header names made usable.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Boolean,
    Smallint,
    Integer,
    Bigint,
    Real,
    Double,
    Numeric { precision: u8, scale: i8 },
    Date,
    Timestamp,
    Timestamptz,
    Text,
}

impl ColType {
    /// A type as `[source.columns]` names it.
    pub fn parse(text: &str) -> Result<ColType, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match t.as_str() {
            "boolean" | "bool" => ColType::Boolean,
            "smallint" | "int2" => ColType::Smallint,
            "integer" | "int" | "int4" => ColType::Integer,
            "bigint" | "int8" => ColType::Bigint,
            "real" | "float4" => ColType::Real,
            "double precision" | "double" | "float8" => ColType::Double,
            "date" => ColType::Date,
            "timestamp" | "timestamp without time zone" => ColType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColType::Timestamptz,
            "text" | "varchar" | "character varying" => ColType::Text,
            other => {
                let inner = other
                    .strip_prefix("numeric(")
                    .or_else(|| other.strip_prefix("decimal("))
                    .and_then(|r| r.strip_suffix(')'));
                let parsed = inner.and_then(|r| {
                    let (p, s) = r.split_once(',').unwrap_or((r, "0"));
                    Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?))
                });
                match parsed {
                    Some((p, s)) if (1..=38).contains(&p) && (0..=p as i8).contains(&s) => {
                        ColType::Numeric {
                            precision: p,
                            scale: s,
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{text:?} is not a type etl reads from CSV; use text, boolean, smallint, integer, bigint, real, double precision, numeric(p,s) (p up to 38), date, timestamp or timestamptz"
                        ))
                    }
                }
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            ColType::Boolean => "boolean".into(),
            ColType::Smallint => "smallint".into(),
            ColType::Integer => "integer".into(),
            ColType::Bigint => "bigint".into(),
            ColType::Real => "real".into(),
            ColType::Double => "double precision".into(),
            ColType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            ColType::Date => "date".into(),
            ColType::Timestamp => "timestamp".into(),
            ColType::Timestamptz => "timestamptz".into(),
            ColType::Text => "text".into(),
        }
    }

    pub fn arrow(&self) -> DataType {
        match self {
            ColType::Boolean => DataType::Boolean,
            ColType::Smallint => DataType::Int16,
            ColType::Integer => DataType::Int32,
            ColType::Bigint => DataType::Int64,
            ColType::Real => DataType::Float32,
            ColType::Double => DataType::Float64,
            ColType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColType::Date => DataType::Date32,
            ColType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColType::Text => DataType::Utf8,
        }
    }
}

/// What one sampled value looks like, from narrow to wide.
fn shape(v: &str) -> ColType {
    let b = v.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    // Leading zeros (postal codes, account numbers) stay text.
    let no_leading_zero = |s: &[u8]| s.len() == 1 || s[0] != b'0';
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    match v.to_ascii_lowercase().as_str() {
        "true" | "false" | "t" | "f" => return ColType::Boolean,
        _ => {}
    }
    if digits(unsigned) && no_leading_zero(unsigned) {
        return if v.parse::<i64>().is_ok() {
            ColType::Bigint
        } else {
            ColType::Text
        };
    }
    if let Some((int, frac)) = v.split_once('.') {
        let int_b = int
            .as_bytes()
            .strip_prefix(b"-")
            .or_else(|| int.as_bytes().strip_prefix(b"+"))
            .unwrap_or(int.as_bytes());
        if digits(int_b) && no_leading_zero(int_b) && digits(frac.as_bytes()) {
            let precision = int_b.len() + frac.len();
            return if precision <= 38 {
                ColType::Numeric {
                    precision: 38,
                    scale: frac.len() as i8,
                }
            } else {
                ColType::Text
            };
        }
    }
    if let Some(e) = v.find(['e', 'E']) {
        let (m, x) = (&v[..e], &v[e + 1..]);
        let x = x.strip_prefix(['-', '+']).unwrap_or(x);
        let m = m.strip_prefix(['-', '+']).unwrap_or(m);
        let mantissa = !m.is_empty()
            && m.chars().filter(|c| *c == '.').count() <= 1
            && m.chars().all(|c| c.is_ascii_digit() || c == '.')
            && m.chars().any(|c| c.is_ascii_digit());
        if mantissa && digits(x.as_bytes()) && v.parse::<f64>().is_ok() {
            return ColType::Double;
        }
    }
    if parse_date(v).is_some() && v.len() == 10 {
        return ColType::Date;
    }
    if v.len() >= 19 && v.as_bytes()[10] == b' ' || v.as_bytes().get(10) == Some(&b'T') {
        if parse_timestamp(v, false).is_some() {
            return ColType::Timestamp;
        }
        if parse_timestamp(v, true).is_some() {
            return ColType::Timestamptz;
        }
    }
    ColType::Text
}

/// The narrowest type holding both.
fn join(a: Option<ColType>, b: ColType) -> ColType {
    use ColType::*;
    let Some(a) = a else { return b };
    match (a, b) {
        (x, y) if x == y => x,
        (Bigint, Numeric { scale, .. }) | (Numeric { scale, .. }, Bigint) => Numeric {
            precision: 38,
            scale,
        },
        (Numeric { scale: s1, .. }, Numeric { scale: s2, .. }) => Numeric {
            precision: 38,
            scale: s1.max(s2),
        },
        (Bigint | Numeric { .. } | Double, Bigint | Numeric { .. } | Double) => Double,
        (Date, Timestamp) | (Timestamp, Date) => Timestamp,
        _ => Text,
    }
}

/// Each column's type from sampled records (NULLs and empty values say
/// nothing; a column with no value is text).
pub fn infer<'a>(
    columns: usize,
    values: impl Iterator<Item = &'a [Option<String>]>,
) -> Vec<ColType> {
    let mut types: Vec<Option<ColType>> = vec![None; columns];
    for record in values {
        for (i, v) in record.iter().enumerate().take(columns) {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                types[i] = Some(join(types[i], shape(v)));
            }
        }
    }
    types
        .into_iter()
        .map(|t| t.unwrap_or(ColType::Text))
        .collect()
}

fn parse_date(v: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").ok()
}

/// `2025-06-01 12:00:00[.ffffff]` (or with `T`), with an offset
/// (`Z`, `+09`, `+0900`, `+09:00`) when `zoned`; µs since 1970 UTC.
fn parse_timestamp(v: &str, zoned: bool) -> Option<i64> {
    if let Some(us) = fast_timestamp(v.as_bytes(), zoned) {
        return Some(us);
    }
    let t = v.trim().replacen('T', " ", 1);
    if !zoned {
        return ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(&t, f).ok())
            .map(|n| n.and_utc().timestamp_micros());
    }
    let t = match t.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => t,
    };
    // `+09` as PostgreSQL prints it: hours only.
    let t = match t.rfind(['+', '-']) {
        Some(i) if i > 10 && t.len() - i == 3 => format!("{t}:00"),
        _ => t,
    };
    ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"]
        .iter()
        .find_map(|f| chrono::DateTime::parse_from_str(&t, f).ok())
        .map(|d| d.timestamp_micros())
}

/// The common shapes without chrono's format interpreter (the largest
/// cost of a CSV load with a timestamp column):
/// `YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}]` then, when `zoned`, `Z`, `+HH`,
/// `+HHMM` or `+HH:MM` (or `-`). Anything else (spaces, a missing offset
/// on a zoned column, out-of-range fields) returns None and goes through
/// chrono, which then accepts it or not.
fn fast_timestamp(b: &[u8], zoned: bool) -> Option<i64> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date =
        chrono::NaiveDate::from_ymd_opt(num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?)?;
    let time =
        chrono::NaiveTime::from_hms_opt(num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?)?;
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let [b'.', tail @ ..] = rest {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        // Six digits kept, the rest truncated as chrono's %.f then
        // timestamp_micros would.
        let kept = &tail[..digits.min(6)];
        micros = i64::from(num(kept)?) * 10i64.pow(6 - kept.len() as u32);
        rest = &tail[digits..];
    }
    let offset_secs = match (zoned, rest) {
        (false, []) => 0,
        (true, [b'Z']) => 0,
        (true, [sign @ (b'+' | b'-'), tail @ ..]) => {
            let (h, m) = match tail {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return None,
            };
            if h > 15 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let local = date.and_time(time).and_utc().timestamp_micros();
    Some(local + micros - offset_secs * 1_000_000)
}

/// Builds one column of a batch.
pub enum Builder {
    Boolean(BooleanBuilder),
    Smallint(Int16Builder),
    Integer(Int32Builder),
    Bigint(Int64Builder),
    Real(Float32Builder),
    Double(Float64Builder),
    Numeric(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Text(StringBuilder),
}

impl Builder {
    pub fn new(t: ColType, rows: usize) -> Builder {
        match t {
            ColType::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(rows)),
            ColType::Smallint => Builder::Smallint(Int16Builder::with_capacity(rows)),
            ColType::Integer => Builder::Integer(Int32Builder::with_capacity(rows)),
            ColType::Bigint => Builder::Bigint(Int64Builder::with_capacity(rows)),
            ColType::Real => Builder::Real(Float32Builder::with_capacity(rows)),
            ColType::Double => Builder::Double(Float64Builder::with_capacity(rows)),
            ColType::Numeric { precision, scale } => {
                Builder::Numeric(Decimal128Builder::with_capacity(rows), precision, scale)
            }
            ColType::Date => Builder::Date(Date32Builder::with_capacity(rows)),
            ColType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows), false)
            }
            ColType::Timestamptz => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows), true)
            }
            ColType::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends a NULL.
    pub fn null(&mut self) {
        match self {
            Builder::Boolean(b) => b.append_null(),
            Builder::Smallint(b) => b.append_null(),
            Builder::Integer(b) => b.append_null(),
            Builder::Bigint(b) => b.append_null(),
            Builder::Real(b) => b.append_null(),
            Builder::Double(b) => b.append_null(),
            Builder::Numeric(b, _, _) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b, _) => b.append_null(),
            Builder::Text(b) => b.append_null(),
        }
    }

    /// Appends a value [`parse`] read for this column's type.
    pub fn append(&mut self, v: Value, text: &str) {
        match (self, v) {
            (Builder::Text(b), _) => b.append_value(text),
            (Builder::Boolean(b), Value::Bool(x)) => b.append_value(x),
            (Builder::Smallint(b), Value::I64(x)) => b.append_value(x as i16),
            (Builder::Integer(b), Value::I64(x)) => b.append_value(x as i32),
            (Builder::Bigint(b), Value::I64(x)) => b.append_value(x),
            (Builder::Real(b), Value::F64(x)) => b.append_value(x as f32),
            (Builder::Double(b), Value::F64(x)) => b.append_value(x),
            (Builder::Numeric(b, _, _), Value::I128(x)) => b.append_value(x),
            (Builder::Date(b), Value::I64(x)) => b.append_value(x as i32),
            (Builder::Timestamp(b, _), Value::I64(x)) => b.append_value(x),
            (b, _) => b.null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::Smallint(b) => Arc::new(b.finish()),
            Builder::Integer(b) => Arc::new(b.finish()),
            Builder::Bigint(b) => Arc::new(b.finish()),
            Builder::Real(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Numeric(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale were checked"),
            ),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b, zoned) => {
                let a = b.finish();
                Arc::new(if *zoned { a.with_timezone("UTC") } else { a })
            }
            Builder::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// A value read for a column's type (text stays in its field).
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Text,
    Bool(bool),
    I64(i64),
    F64(f64),
    I128(i128),
}

/// Reads `v` as PostgreSQL's input function for `t` would (blanks around
/// numbers, dates and booleans allowed); `Err` says why not.
pub fn parse(t: ColType, v: &str) -> Result<Value, String> {
    let s = v.trim();
    Ok(match t {
        ColType::Text => Value::Text,
        ColType::Boolean => Value::Bool(match s.to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => true,
            "f" | "false" | "n" | "no" | "off" | "0" => false,
            _ => return Err("is not a boolean".into()),
        }),
        ColType::Smallint => Value::I64(s.parse::<i16>().map_err(|_| "is not a smallint")? as i64),
        ColType::Integer => Value::I64(s.parse::<i32>().map_err(|_| "is not an integer")? as i64),
        ColType::Bigint => Value::I64(s.parse::<i64>().map_err(|_| "is not a bigint")?),
        ColType::Real => {
            let x = float(s).ok_or("is not a real")?;
            if x.is_finite() && (x as f32).is_infinite() {
                return Err("is out of range for a real".into());
            }
            Value::F64(x)
        }
        ColType::Double => Value::F64(float(s).ok_or("is not a double precision")?),
        ColType::Numeric { precision, scale } => Value::I128(decimal(s, precision, scale)?),
        ColType::Date => {
            let d = parse_date(s).ok_or("is not a date (YYYY-MM-DD)")?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
            Value::I64((d - epoch).num_days())
        }
        ColType::Timestamp => Value::I64(
            parse_timestamp(s, false).ok_or("is not a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])")?,
        ),
        // Without an offset PostgreSQL takes the session's zone: etl's
        // sessions run in UTC.
        ColType::Timestamptz => Value::I64(
            parse_timestamp(s, true)
                .or_else(|| parse_timestamp(s, false))
                .ok_or("is not a timestamptz (YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]])")?,
        ),
    })
}

/// PostgreSQL's float8in spellings: numbers, `NaN`, `Infinity`, `-Infinity`.
fn float(t: &str) -> Option<f64> {
    match t.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        s if s.chars().all(|c| c.is_ascii_digit() || "+-.e".contains(c)) => t.parse().ok(),
        _ => None,
    }
}

/// A decimal as the scaled integer of `numeric(p,s)`; more fractional
/// digits than the scale round half away from zero, as PostgreSQL does.
fn decimal(t: &str, p: u8, s: i8) -> Result<i128, String> {
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(format!("is not a numeric({p},{s})"));
    }
    let s = s as usize;
    let mut digits: String = int.to_string();
    let kept: String = frac.chars().take(s).collect();
    digits.push_str(&kept);
    digits.push_str(&"0".repeat(s - kept.len()));
    let mut v: i128 = digits
        .trim_start_matches('0')
        .parse::<i128>()
        .or_else(|e| {
            if digits.trim_start_matches('0').is_empty() {
                Ok(0)
            } else {
                Err(e)
            }
        })
        .map_err(|_| format!("is not a numeric({p},{s})"))?;
    if frac.as_bytes().get(s).is_some_and(|d| *d >= b'5') {
        v += 1;
    }
    if v >= 10i128.pow(p as u32) {
        return Err(format!("does not fit numeric({p},{s})"));
    }
    Ok(if neg { -v } else { v })
}

/// Usable, unique column names: an empty name becomes `column_N`, a
/// repeated one gets `_2`, `_3`..., one over 63 bytes is shortened with a
/// hash. Returns the names and the (header, name) pairs that changed.
pub fn column_names(header: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    let mut changed = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let base = if h.is_empty() {
            format!("column_{}", i + 1)
        } else {
            h.clone()
        };
        // Shortened (with a hash) only when over 63 bytes; `_2`, `_3`...
        // after a name already taken.
        let mut n = 1;
        let name = loop {
            let candidate = if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            let fitted = etl_pg::text::fit_identifier(&candidate, &|_| false);
            if !names.contains(&fitted) {
                break fitted;
            }
            n += 1;
        };
        if name != *h {
            changed.push((h.clone(), name.clone()));
        }
        names.push(name);
    }
    (names, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path agrees with chrono's formats wherever it answers.
    #[test]
    fn fast_timestamps_agree_with_chrono() {
        fn slow(v: &str, zoned: bool) -> Option<i64> {
            let t = v.replacen('T', " ", 1);
            let t = match t.strip_suffix('Z') {
                Some(rest) => format!("{rest}+00:00"),
                None => t,
            };
            let t = match t.rfind(['+', '-']) {
                Some(i) if i > 10 && t.len() - i == 3 => format!("{t}:00"),
                _ => t,
            };
            if zoned {
                ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"]
                    .iter()
                    .find_map(|f| chrono::DateTime::parse_from_str(&t, f).ok())
                    .map(|d| d.timestamp_micros())
            } else {
                chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc().timestamp_micros())
            }
        }
        for v in [
            "2025-06-01 00:00:00",
            "2025-06-01T23:59:59.5",
            "1899-12-30 12:00:00.123456789",
            "0001-01-01 00:00:00.000001",
            "9999-12-31 23:59:59.999999",
            "2024-02-29 01:02:03.1",
            "2023-02-29 01:02:03",
            "2025-13-01 00:00:00",
            "2025-06-01 24:00:00",
        ] {
            let fast = fast_timestamp(v.as_bytes(), false);
            assert!(fast.is_none() || fast == slow(v, false), "{v}: {fast:?}");
            assert_eq!(parse_timestamp(v, false), slow(v, false), "{v}");
        }
        for v in [
            "2025-06-01 00:00:00+00",
            "2025-06-01 00:00:00Z",
            "2025-06-01 09:00:00+09",
            "2025-06-01 09:00:00.25+0930",
            "2025-06-01 09:00:00.25-03:30",
            "1969-12-31 23:59:59.999999-01",
            "2025-06-01 09:00:00",
            "2025-06-01 09:00:00+9",
        ] {
            let fast = fast_timestamp(v.as_bytes(), true);
            assert!(
                fast.is_some() || slow(v, true).is_none(),
                "{v}: fast path missed"
            );
            assert_eq!(fast, slow(v, true), "{v}");
            assert_eq!(parse_timestamp(v, true), slow(v, true), "{v}");
        }
    }

    fn col(values: &[&str]) -> ColType {
        let rows: Vec<Vec<Option<String>>> =
            values.iter().map(|v| vec![Some(v.to_string())]).collect();
        infer(1, rows.iter().map(|r| r.as_slice()))[0]
    }

    #[test]
    fn types_are_inferred_and_leading_zeros_stay_text() {
        assert_eq!(col(&["1", "-20", "300"]), ColType::Bigint);
        assert_eq!(col(&["007", "12"]), ColType::Text);
        assert_eq!(
            col(&["1.50", "2"]),
            ColType::Numeric {
                precision: 38,
                scale: 2
            }
        );
        assert_eq!(col(&["1e3", "2.5"]), ColType::Double);
        assert_eq!(col(&["t", "false"]), ColType::Boolean);
        assert_eq!(
            col(&["2025-06-01", "2025-06-02 10:00:00"]),
            ColType::Timestamp
        );
        assert_eq!(col(&["2025-06-01 10:00:00+09"]), ColType::Timestamptz);
        assert_eq!(col(&["2025-06-01"]), ColType::Date);
        assert_eq!(col(&["01012"]), ColType::Text);
        assert_eq!(col(&["99999999999999999999"]), ColType::Text);
        assert_eq!(col(&[]), ColType::Text);
    }

    #[test]
    fn values_parse_as_postgresql_reads_them() {
        let t = ColType::Numeric {
            precision: 5,
            scale: 2,
        };
        let mut b = Builder::new(t, 4);
        for v in ["1.005", " -12.3 "] {
            b.append(parse(t, v).unwrap(), v);
        }
        assert!(parse(t, "1234.5").is_err());
        assert!(parse(t, "abc").is_err());
        let a = b.finish();
        let d = a
            .as_any()
            .downcast_ref::<arrow::array::Decimal128Array>()
            .unwrap();
        assert_eq!(d.value(0), 101);
        assert_eq!(d.value(1), -1230);
        let mut t = Builder::new(ColType::Timestamptz, 1);
        let v = "2025-06-01 09:00:00+09";
        t.append(parse(ColType::Timestamptz, v).unwrap(), v);
        let a = t.finish();
        let ts = a
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(
            etl_base::time::format_timestamp(ts.value(0)),
            "2025-06-01 00:00:00"
        );
    }

    #[test]
    fn header_names_become_usable_and_unique() {
        let long = "x".repeat(70);
        let (names, changed) = column_names(&["a".into(), "".into(), "a".into(), long.clone()]);
        assert_eq!(names[..3], ["a", "column_2", "a_2"]);
        assert!(names[3].len() <= 63 && names[3].starts_with("xxx"));
        assert_eq!(changed.len(), 3);
    }
}
