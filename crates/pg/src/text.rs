//! PostgreSQL's text rules that other layers must follow exactly: how
//! `float8out` prints a double, how long an identifier may be.

/// A double as PostgreSQL's `float8out` prints it (shortest round-trip
/// digits; plain notation for decimal exponents -4 to 14, else `d.ddde+NN`).
pub fn pg_float_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the same shortest digits: `-1.2345e17`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} prints an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..15).contains(&exp) {
        if exp < 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if digits.len() as i32 > exp + 1 {
            let (int, frac) = digits.split_at(exp as usize + 1);
            format!("{sign}{int}.{frac}")
        } else {
            format!(
                "{sign}{digits}{}",
                "0".repeat((exp + 1) as usize - digits.len())
            )
        }
    } else {
        let e_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{e_sign}{:02}", exp.abs())
    }
}

/// PostgreSQL's longest identifier, in bytes.
const MAX_IDENTIFIER: usize = 63;

/// `name` as a column or table name: itself when it fits and is free, else
/// its first bytes and a hash of the whole (then a counter, if even that is taken).
pub fn fit_identifier(name: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let usable = !name.is_empty() && name.len() <= MAX_IDENTIFIER && !name.contains('\0');
    if usable && !taken(name) {
        return name.to_string();
    }
    // FNV-1a: stable across versions and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    for attempt in 0u32.. {
        let suffix = match attempt {
            0 => format!("_{:08x}", hash as u32),
            n => format!("_{:08x}_{n}", hash as u32),
        };
        let mut prefix = String::new();
        for c in name.chars().filter(|c| *c != '\0') {
            if prefix.len() + c.len_utf8() + suffix.len() > MAX_IDENTIFIER {
                break;
            }
            prefix.push(c);
        }
        let candidate = format!("{prefix}{suffix}");
        if !taken(&candidate) {
            return candidate;
        }
    }
    unreachable!("some counter leaves the name free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_as_postgresql_prints_them() {
        for (v, pg) in [
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (-0.0, "-0"),
            (1e300, "1e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (12.0, "12"),
        ] {
            assert_eq!(pg_float_text(v), pg, "{v:e}");
        }
    }

    #[test]
    fn names_fit_postgresql_and_never_collide() {
        let none = |_: &str| false;
        assert_eq!(fit_identifier("ch_0001", &none), "ch_0001");
        assert_eq!(fit_identifier("select \"x\" ü", &none), "select \"x\" ü");
        let long = "가".repeat(30); // 90 bytes
        let short = fit_identifier(&long, &none);
        assert!(short.len() <= 63, "{short}");
        assert!(short.starts_with("가가가"), "{short}");
        assert_eq!(short, fit_identifier(&long, &none), "deterministic");
        let other = fit_identifier(&format!("{long}x"), &none);
        assert_ne!(short, other);
        assert_eq!(fit_identifier("", &none).len(), 9);
        // Taken (an index column's name): shortened; that taken too: a counter.
        let first = fit_identifier("created_time", &|n| n == "created_time");
        assert!(first.starts_with("created_time_"));
        let second = fit_identifier("created_time", &|n| n == "created_time" || n == first);
        assert_eq!(second, format!("{first}_1"));
    }
}
