//! Numbers and times as people read them in summaries, plans and logs.
//! Below every other module of the crate: it imports none.

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
    }
}
