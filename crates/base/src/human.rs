//! Numbers, sizes and times as people read them in summaries, plans and
//! logs: the one place etl formats them.

/// `12,345,678`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `-1,234`: a count that may be negative (the planner's `reltuples` is
/// -1 before a table's first ANALYZE).
pub fn thousands_signed(n: i64) -> String {
    match n < 0 {
        true => format!("-{}", thousands(n.unsigned_abs())),
        false => thousands(n as u64),
    }
}

/// `512 B`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `~40 s`, `~12 min`, `~2 h 5 min`.
pub fn duration(secs: f64) -> String {
    let s = secs.round().max(1.0) as u64;
    match s {
        0..=89 => format!("~{s} s"),
        90..=5399 => format!("~{} min", (s + 30) / 60),
        _ => format!("~{} h {} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.2), "~1 s");
        assert_eq!(duration(42.0), "~42 s");
        assert_eq!(duration(750.0), "~13 min");
        assert_eq!(duration(7500.0), "~2 h 5 min");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(thousands_signed(-1), "-1");
        assert_eq!(thousands_signed(-1234), "-1,234");
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
