//! `${NAME}` in pipeline strings, replaced from the environment while the
//! file is parsed, so a missing variable is reported at its line.
//! `$${` stands for a literal `${`.

use serde::{de::Error, Deserialize, Deserializer};

pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    interpolate(&raw, |name| std::env::var(name).ok()).map_err(D::Error::custom)
}

pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    raw.map(|r| interpolate(&r, |name| std::env::var(name).ok()).map_err(D::Error::custom))
        .transpose()
}

/// Replaces each `${NAME}` with `lookup(NAME)`.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in {text:?}"))?;
            let name = &body[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("`${{{name}}}` is not an environment variable name"));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set (used as ${{{name}}}); export it or write the value")
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "db1".to_string())
    }

    #[test]
    fn replaces_escapes_and_reports() {
        assert_eq!(
            interpolate("postgresql://${HOST}:5432/x", env).unwrap(),
            "postgresql://db1:5432/x"
        );
        assert_eq!(
            interpolate("cost $5, $${HOST}", env).unwrap(),
            "cost $5, ${HOST}"
        );
        assert_eq!(
            interpolate("${NOPE}", env).unwrap_err(),
            "environment variable NOPE is not set (used as ${NOPE}); export it or write the value"
        );
        assert!(interpolate("${HOST", env).is_err());
        assert!(interpolate("${1A}", env).is_err());
    }
}
