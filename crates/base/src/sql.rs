//! Quoting for the SQL etl writes itself. Identifiers are always quoted;
//! values that must be literals (chunk keys inside `COPY (query)`, which
//! takes no bind parameters) are quoted as standard-conforming strings.

use std::fmt;

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled. Safe with
/// `standard_conforming_strings = on`, which etl sets on every connection.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A PostgreSQL type name as `format_type` writes it (`numeric(12,2)`,
/// `timestamp(3) with time zone`, `"sales"."mood"[]`, `character
/// varying(20)`), checked and written again from its parts, so that text
/// read from data (a Parquet file's `etl.pg_type` field metadata) can only
/// ever name a type inside CREATE TABLE, never add SQL to it.
pub fn type_name(text: &str) -> Result<String, String> {
    let mut chars = text.trim().chars().peekable();
    type_path(&mut chars)
        .and_then(|name| type_rest(&mut chars, name))
        .map_err(|why| {
            format!(
                "{text:?} is not a PostgreSQL type name ({why}); etl writes names like numeric(12,2), timestamp with time zone or \"schema\".\"type\"[]"
            )
        })
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// A type's name: one or two parts, quoted or not.
fn type_path(chars: &mut Chars<'_>) -> Result<String, String> {
    let mut out = String::new();
    let mut parts = 0;
    loop {
        let part = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut part = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err("a quote is not closed".into()),
                    }
                }
                ident(&part)
            }
            _ => {
                let word = take_word(chars);
                if word.is_empty() {
                    return Err("a name is missing".into());
                }
                word
            }
        };
        out.push_str(&part);
        parts += 1;
        if chars.peek() != Some(&'.') {
            return Ok(out);
        }
        if parts == 2 {
            return Err("more than schema.type".into());
        }
        chars.next();
        out.push('.');
    }
}

/// After the name: modifiers and the words of multi-word types, then
/// array marks.
fn type_rest(chars: &mut Chars<'_>, mut out: String) -> Result<String, String> {
    const WORDS: [&str; 13] = [
        "precision",
        "varying",
        "with",
        "without",
        "time",
        "zone",
        "to",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
    ];
    loop {
        match chars.peek() {
            None => return Ok(out),
            Some('(') => {
                chars.next();
                out.push_str(&type_modifiers(chars)?);
            }
            Some('[') => {
                chars.next();
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                if chars.next() != Some(']') {
                    return Err("an array mark is not closed".into());
                }
                out.push_str("[]");
            }
            Some(' ') => {
                chars.next();
                if chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    let word = take_word(chars);
                    if !WORDS.contains(&word.as_str()) || out.ends_with(']') {
                        return Err(format!("{word:?} does not belong in a type name"));
                    }
                    out.push(' ');
                    out.push_str(&word);
                }
            }
            Some(c) => return Err(format!("{c:?} does not belong in a type name")),
        }
    }
}

/// `(12, 2)` after its opening parenthesis, as `(12,2)`.
fn type_modifiers(chars: &mut Chars<'_>) -> Result<String, String> {
    let mut numbers = Vec::new();
    loop {
        let mut n = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() || (c == '-' && n.is_empty()) {
                n.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if n.parse::<i32>().is_err() {
            return Err("a type modifier is not a number".into());
        }
        numbers.push(n);
        match chars.next() {
            Some(',') => {
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            Some(')') => return Ok(format!("({})", numbers.join(","))),
            _ => return Err("a type modifier is not closed".into()),
        }
    }
}

/// An unquoted name: letters, digits, `_` and `$`, not starting with a digit.
fn take_word(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut word = String::new();
    while let Some(&c) = chars.peek() {
        let fits = c.is_ascii_alphabetic()
            || c == '_'
            || (!word.is_empty() && (c.is_ascii_digit() || c == '$'));
        if !fits {
            break;
        }
        word.push(c);
        chars.next();
    }
    word
}

/// A table name, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `schema.table`, `table`, `"My Schema"."My.Table"`. Unquoted
    /// parts are folded to lower case, as PostgreSQL does.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts = split_qualified(text)?;
        match parts.as_slice() {
            [name] => Ok(TableName { schema: None, name: name.clone() }),
            [schema, name] => Ok(TableName { schema: Some(schema.clone()), name: name.clone() }),
            _ => Err(format!("{text:?} is not a table name; write table or schema.table, quoting parts with \" as needed")),
        }
    }

    /// The schema, or `public` when none was given.
    pub fn schema_or_public(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// `"schema"."table"`, with `public` when no schema was given: the form
    /// etl uses in SQL and records in its ledger.
    pub fn qualified(&self) -> String {
        format!("{}.{}", ident(self.schema_or_public()), ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.schema {
            write!(f, "{}.", ident(s))?;
        }
        write!(f, "{}", ident(&self.name))
    }
}

fn split_qualified(text: &str) -> Result<Vec<String>, String> {
    let bad = |why: &str| format!("{text:?} is not a table name: {why}");
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(bad("a quote is not closed")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    return Err(bad("unquoted names cannot hold quotes or spaces"));
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(bad("a part is empty"));
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(_) => return Err(bad("expected a dot after a quoted part")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_as_format_type_writes_them_pass_and_sql_does_not() {
        for (given, written) in [
            ("integer", "integer"),
            ("numeric(12,2)", "numeric(12,2)"),
            ("numeric(5, -2)", "numeric(5,-2)"),
            ("character varying(20)", "character varying(20)"),
            ("timestamp(3) with time zone", "timestamp(3) with time zone"),
            ("double precision[]", "double precision[]"),
            ("interval day to second(3)", "interval day to second(3)"),
            ("\"my schema\".\"Mood\"[]", "\"my schema\".\"Mood\"[]"),
            ("public.mood", "public.mood"),
            (
                "\"x\"\"); DROP TABLE t; --\"",
                "\"x\"\"); DROP TABLE t; --\"",
            ),
        ] {
            assert_eq!(type_name(given).as_deref(), Ok(written), "{given}");
        }
        for crafted in [
            "text); DROP TABLE t; --",
            "text, evil int",
            "text DEFAULT now()",
            "text /* x */",
            "int[] with",
            "a.b.c",
            "numeric(1",
            "\"open",
            "",
            "text COLLATE \"C\"",
        ] {
            let e = type_name(crafted).unwrap_err();
            assert!(
                e.contains("is not a PostgreSQL type name"),
                "{crafted}: {e}"
            );
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("O'Neil"), "'O''Neil'");
    }

    #[test]
    fn table_names() {
        let t = TableName::parse("Tenant.TBL_data").unwrap();
        assert_eq!(t.to_string(), "\"tenant\".\"tbl_data\"");
        let t = TableName::parse("\"My Schema\".\"a.b\"\"c\"").unwrap();
        assert_eq!(t.schema.as_deref(), Some("My Schema"));
        assert_eq!(t.name, "a.b\"c");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a b").is_err());
        assert!(TableName::parse("").is_err());
    }
}
