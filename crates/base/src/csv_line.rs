//! One line of a small CSV file etl reads itself (a failed-chunk file, a
//! column_groups file): quoted fields, `""` inside quotes.

/// Splits one CSV line. An unquoted empty field is `None`; `""` is `Some("")`.
pub fn split(line: &str) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut field = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            fields.push(Some(field));
            match chars.next() {
                None => return Ok(fields),
                Some(',') => continue,
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            let mut field = String::new();
            loop {
                match chars.next() {
                    None => {
                        fields.push((!field.trim().is_empty()).then(|| field.trim().to_string()));
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push((!field.trim().is_empty()).then(|| field.trim().to_string()));
        }
    }
}
