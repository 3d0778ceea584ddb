//! PostgreSQL `numeric` in its binary form: base-10000 digits with a weight,
//! a sign word and a display scale. Converted to and from decimal text (which
//! keeps every digit) and to and from `i128` scaled integers (Decimal128).

use bytes::{BufMut, BytesMut};

const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;

/// Why a numeric value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("numeric value is malformed ({0})")]
    Malformed(&'static str),
    #[error("numeric value {0} cannot be held in a Decimal128; declare the column as unconstrained numeric or cast it to text in `query`")]
    Special(&'static str),
    #[error("numeric value does not fit in Decimal128 with scale {0}")]
    Overflow(i8),
    #[error("{0:?} is not a decimal number")]
    NotANumber(String),
}

struct Raw<'a> {
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

impl Raw<'_> {
    fn digit(&self, i: usize) -> i16 {
        i16::from_be_bytes([self.digits[2 * i], self.digits[2 * i + 1]])
    }
    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }
}

fn parse(bytes: &[u8]) -> Result<Raw<'_>, NumericError> {
    if bytes.len() < 8 {
        return Err(NumericError::Malformed("shorter than its 8-byte header"));
    }
    let ndigits = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    let weight = i16::from_be_bytes([bytes[2], bytes[3]]);
    let sign = u16::from_be_bytes([bytes[4], bytes[5]]);
    let dscale = u16::from_be_bytes([bytes[6], bytes[7]]);
    let digits = &bytes[8..];
    if digits.len() != ndigits * 2 {
        return Err(NumericError::Malformed(
            "digit count does not match its length",
        ));
    }
    Ok(Raw {
        weight,
        sign,
        dscale,
        digits,
    })
}

/// Decodes to decimal text, exactly as PostgreSQL prints it
/// (`-12.3400`, `NaN`, `Infinity`, `-Infinity`).
pub fn to_text(bytes: &[u8], out: &mut String) -> Result<(), NumericError> {
    let raw = parse(bytes)?;
    match raw.sign {
        SIGN_NAN => {
            out.push_str("NaN");
            return Ok(());
        }
        SIGN_PINF => {
            out.push_str("Infinity");
            return Ok(());
        }
        SIGN_NINF => {
            out.push_str("-Infinity");
            return Ok(());
        }
        SIGN_NEG => out.push('-'),
        SIGN_POS => {}
        _ => return Err(NumericError::Malformed("unknown sign word")),
    }
    let weight = raw.weight as i32;
    // Integer part: digit groups 0..=weight.
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight as usize {
            let d = if i < raw.ndigits() { raw.digit(i) } else { 0 };
            if i == 0 {
                out.push_str(&d.to_string());
            } else {
                push_group(out, d, 4);
            }
        }
    }
    if raw.dscale > 0 {
        out.push('.');
        let mut written = 0usize;
        let mut group = weight + 1; // first fractional group index
        while written < raw.dscale as usize {
            let d = if group >= 0 && (group as usize) < raw.ndigits() {
                raw.digit(group as usize)
            } else {
                0
            };
            let take = (raw.dscale as usize - written).min(4);
            let s = format!("{d:04}");
            out.push_str(&s[..take]);
            written += take;
            group += 1;
        }
    }
    Ok(())
}

fn push_group(out: &mut String, d: i16, width: usize) {
    let s = format!("{d:0width$}");
    out.push_str(&s);
}

/// Decodes to an integer scaled by `10^scale`. Digits beyond `scale` must
/// be zero (they are for columns declared `numeric(p, scale)`).
pub fn to_i128(bytes: &[u8], scale: i8) -> Result<i128, NumericError> {
    let raw = parse(bytes)?;
    let negative = match raw.sign {
        SIGN_POS => false,
        SIGN_NEG => true,
        SIGN_NAN => return Err(NumericError::Special("NaN")),
        SIGN_PINF => return Err(NumericError::Special("Infinity")),
        SIGN_NINF => return Err(NumericError::Special("-Infinity")),
        _ => return Err(NumericError::Malformed("unknown sign word")),
    };
    let mut acc: i128 = 0;
    for i in 0..raw.ndigits() {
        let d = raw.digit(i) as i128;
        // This digit is worth d * 10^(4 * (weight - i) + scale) in the result.
        let exp = 4 * (raw.weight as i32 - i as i32) + scale as i32;
        let term = if exp >= 0 {
            pow10(exp as u32).and_then(|p| d.checked_mul(p))
        } else {
            let p = pow10((-exp) as u32).unwrap_or(i128::MAX);
            if d % p != 0 {
                return Err(NumericError::Overflow(scale));
            }
            Some(d / p)
        };
        acc = term
            .and_then(|t| acc.checked_add(t))
            .ok_or(NumericError::Overflow(scale))?;
    }
    Ok(if negative { -acc } else { acc })
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

/// Encodes a scaled integer (a Decimal128 value) as a binary numeric.
pub fn write_i128(value: i128, scale: i8, out: &mut BytesMut) {
    let mut text = String::with_capacity(42);
    let digits = value.unsigned_abs().to_string();
    if value < 0 {
        text.push('-');
    }
    if scale <= 0 {
        text.push_str(&digits);
        text.extend(std::iter::repeat_n('0', (-scale) as usize));
    } else {
        let scale = scale as usize;
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            text.push_str(int);
            text.push('.');
            text.push_str(frac);
        } else {
            text.push_str("0.");
            text.extend(std::iter::repeat_n('0', scale - digits.len()));
            text.push_str(&digits);
        }
    }
    write_text(&text, out).expect("text rendered from an i128 is a valid decimal");
}

/// Encodes decimal text (`-12.340`, `1e5` is not accepted, `NaN`,
/// `Infinity`, `-Infinity`) as a binary numeric: length prefix included.
pub fn write_text(text: &str, out: &mut BytesMut) -> Result<(), NumericError> {
    let t = text.trim();
    let special = match t {
        "NaN" | "nan" | "NAN" => Some(SIGN_NAN),
        "Infinity" | "infinity" | "+Infinity" | "inf" => Some(SIGN_PINF),
        "-Infinity" | "-infinity" | "-inf" => Some(SIGN_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_i32(8);
        out.put_u16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let valid = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !valid(int) || !valid(frac) {
        return Err(NumericError::NotANumber(text.to_string()));
    }
    let int = int.trim_start_matches('0');
    let dscale = frac.len();
    // Pad the integer part on the left and the fraction on the right to
    // whole groups of four decimal digits.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut all = Vec::with_capacity(int_pad + int.len() + frac.len() + frac_pad);
    all.extend(std::iter::repeat_n(0u8, int_pad));
    all.extend(int.bytes().map(|b| b - b'0'));
    all.extend(frac.bytes().map(|b| b - b'0'));
    all.extend(std::iter::repeat_n(0u8, frac_pad));
    let mut groups: Vec<i16> = all
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + *d as i16))
        .collect();
    let mut weight = ((int_pad + int.len()) / 4) as i32 - 1;
    // Strip leading and trailing zero groups; they are implied by weight and dscale.
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= lead as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    if groups.len() > u16::MAX as usize || !(i16::MIN as i32..=i16::MAX as i32).contains(&weight) {
        return Err(NumericError::NotANumber(text.to_string()));
    }
    out.put_i32(8 + 2 * groups.len() as i32);
    out.put_u16(groups.len() as u16);
    out.put_i16(weight as i16);
    out.put_u16(if negative && !groups.is_empty() {
        SIGN_NEG
    } else {
        SIGN_POS
    });
    out.put_u16(dscale as u16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = BytesMut::new();
        write_text(text, &mut buf).unwrap();
        let mut out = String::new();
        to_text(&buf[4..], &mut out).unwrap();
        out
    }

    #[test]
    fn text_round_trips_every_digit() {
        // Given values with leading/trailing zeros, tiny, huge and special values
        for v in [
            "0",
            "1",
            "-1",
            "10000",
            "0.0001",
            "-0.00012300",
            "123456789.987654321",
            "1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
            "NaN",
            "Infinity",
            "-Infinity",
            "0.000",
        ] {
            // Then the text comes back unchanged
            assert_eq!(round_trip(v), v);
        }
    }

    #[test]
    fn negative_zero_is_zero() {
        assert_eq!(round_trip("-0.00"), "0.00");
    }

    #[test]
    fn scaled_integers_round_trip() {
        for (v, s) in [
            (0i128, 2i8),
            (12345, 2),
            (-5, 3),
            (i128::MAX / 10, 0),
            (7, -2),
            (-1, 38),
        ] {
            let mut buf = BytesMut::new();
            write_i128(v, s, &mut buf);
            assert_eq!(to_i128(&buf[4..], s).unwrap(), v, "value {v} scale {s}");
        }
    }

    #[test]
    fn special_values_do_not_fit_decimal128() {
        let mut buf = BytesMut::new();
        write_text("NaN", &mut buf).unwrap();
        assert_eq!(to_i128(&buf[4..], 2), Err(NumericError::Special("NaN")));
    }

    #[test]
    fn garbage_is_rejected_with_the_text() {
        let err = write_text("12a", &mut BytesMut::new()).unwrap_err();
        assert_eq!(err.to_string(), "\"12a\" is not a decimal number");
    }
}
