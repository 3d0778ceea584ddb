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
