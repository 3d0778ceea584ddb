//! PostgreSQL's `COPY ... CSV` rules, by hand: the csv crate does not say
//! whether a field was quoted, and COPY reads an unquoted empty field as
//! NULL but a quoted one as an empty string. A field may mix quoted and
//! unquoted parts (`"ab"cd` is `abcd`); inside quotes the escape character
//! (the quote by default, so `""`) makes the next quote or escape literal;
//! a record ends at a newline (`\n` or `\r\n`) outside quotes. Also the
//! scan that finds record boundaries in raw bytes, for cutting a file into
//! ranges that each start at a record.

/// The characters that shape a file; ASCII, so they can be matched in the
/// raw bytes of any ASCII-compatible encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: u8,
    pub comment: Option<u8>,
}

/// One field: its text, and whether any part of it was quoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub text: String,
    pub quoted: bool,
}

/// A record: its fields and the physical line it starts on (1-based).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub fields: Vec<Field>,
    pub line: u64,
}

/// What [`Parser::next`] found.
#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// The text ends inside a record: more input is needed (or, at the end
    /// of the input, the record is cut off).
    NeedMore,
    /// A comment line, skipped.
    Comment,
}

/// Parses records from decoded text, keeping its place between calls.
#[derive(Debug)]
pub struct Parser {
    d: Dialect,
    /// The line the next record starts on.
    line: u64,
}

impl Parser {
    pub fn new(d: Dialect, first_line: u64) -> Self {
        Parser {
            d,
            line: first_line,
        }
    }

    /// The line the next record starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Parses one record from the start of `text`; returns what it found and
    /// how many bytes it used. `at_end`: no more text follows, so a record
    /// without its final newline is whole.
    pub fn next(&mut self, text: &str, at_end: bool) -> (Next, usize) {
        let mut record = Record::default();
        match self.next_into(text, at_end, &mut record) {
            (Found::Record, n) => (Next::Record(record), n),
            (Found::Comment, n) => (Next::Comment, n),
            (Found::NeedMore, n) => (Next::NeedMore, n),
        }
    }

    /// [`Parser::next`] into `record`, reusing its fields' buffers: no
    /// allocation per record once the buffers have grown.
    pub fn next_into(&mut self, text: &str, at_end: bool, record: &mut Record) -> (Found, usize) {
        let b = text.as_bytes();
        let d = self.d;
        if let Some(found) = self.comment(b, at_end) {
            return found;
        }
        let fields = &mut record.fields;
        // Fields in use; those after it are buffers kept for later records.
        let mut n = 0;
        start_field(fields, &mut n);
        let mut in_quote = false;
        let mut newlines = 0u64;
        let mut i = 0;
        // Start of the run of plain bytes not yet copied into the field.
        let mut run = 0;
        while i < b.len() {
            let c = b[i];
            if in_quote {
                if c == d.escape {
                    match b.get(i + 1) {
                        Some(&q) if q == d.quote || q == d.escape => {
                            let f = &mut fields[n - 1];
                            f.text.push_str(&text[run..i]);
                            f.text.push(q as char);
                            i += 2;
                            run = i;
                            continue;
                        }
                        // Closing, or the first of a pair: the next input tells.
                        None if !at_end => return (Found::NeedMore, 0),
                        _ => {}
                    }
                }
                if c == d.quote {
                    fields[n - 1].text.push_str(&text[run..i]);
                    in_quote = false;
                    i += 1;
                    run = i;
                    continue;
                }
                if c == b'\n' {
                    newlines += 1;
                }
                i += 1;
                continue;
            }
            if c == d.quote {
                let f = &mut fields[n - 1];
                f.text.push_str(&text[run..i]);
                f.quoted = true;
                in_quote = true;
                i += 1;
                run = i;
                continue;
            }
            if c == d.delimiter {
                fields[n - 1].text.push_str(&text[run..i]);
                start_field(fields, &mut n);
                i += 1;
                run = i;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                fields[n - 1].text.push_str(&text[run..i]);
                // A lone `\r` at the end of the text may be the first half
                // of `\r\n`.
                if c == b'\r' && i + 1 == b.len() && !at_end {
                    return (Found::NeedMore, 0);
                }
                let crlf = c == b'\r' && b.get(i + 1) == Some(&b'\n');
                return (self.end(record, n, newlines), i + 1 + usize::from(crlf));
            }
            i += 1;
        }
        if !at_end || in_quote || b.is_empty() {
            return (Found::NeedMore, 0);
        }
        fields[n - 1].text.push_str(&text[run..]);
        (self.end(record, n, newlines), b.len())
    }

    /// A comment line at the start of `b`, skipped: what was found and the
    /// bytes it took; `None` when `b` does not start with one.
    fn comment(&mut self, b: &[u8], at_end: bool) -> Option<(Found, usize)> {
        let c = self.d.comment?;
        if b.first() != Some(&c) {
            return None;
        }
        Some(match memchr(b'\n', b) {
            Some(i) => {
                self.line += 1;
                (Found::Comment, i + 1)
            }
            None if at_end => (Found::Comment, b.len()),
            None => (Found::NeedMore, 0),
        })
    }

    /// Ends `record` at its `n` fields, which span `newlines` line breaks
    /// inside quotes besides the one that ends it.
    fn end(&mut self, record: &mut Record, n: usize, newlines: u64) -> Found {
        record.fields.truncate(n);
        record.line = self.line;
        self.line += 1 + newlines;
        Found::Record
    }
}

/// Starts field `n` of a record: a buffer kept from an earlier record,
/// emptied, or a new one.
#[inline]
fn start_field(fields: &mut Vec<Field>, n: &mut usize) {
    if *n == fields.len() {
        fields.push(Field::default());
    } else {
        fields[*n].text.clear();
        fields[*n].quoted = false;
    }
    *n += 1;
}

/// What [`Parser::next_into`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Record,
    NeedMore,
    Comment,
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Walks raw bytes and reports where records start, keeping the quote
/// state across calls.
#[derive(Debug)]
pub struct Scanner {
    d: Dialect,
    in_quote: bool,
    /// The previous byte was the escape inside quotes (escape != quote).
    escaped: bool,
    /// The next byte starts a line (where a comment may start).
    at_line_start: bool,
    in_comment: bool,
}

impl Scanner {
    pub fn new(d: Dialect) -> Self {
        Scanner {
            d,
            in_quote: false,
            escaped: false,
            at_line_start: true,
            in_comment: false,
        }
    }

    /// Calls `record_end(i)` for each byte `i` of `bytes` that ends a
    /// record (its newline; comment lines are not records). Jumps between
    /// the bytes that matter with `memchr` (the planning scan of a large
    /// file is otherwise a byte loop on one core before any worker starts).
    pub fn scan(&mut self, bytes: &[u8], mut record_end: impl FnMut(usize)) {
        let d = self.d;
        let mut i = 0;
        while i < bytes.len() {
            if self.at_line_start {
                self.at_line_start = false;
                if d.comment == Some(bytes[i]) && !self.in_quote {
                    self.in_comment = true;
                }
            }
            if self.in_comment {
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(j) => {
                        i += j + 1;
                        self.in_comment = false;
                        self.at_line_start = true;
                        continue;
                    }
                    None => return,
                }
            }
            if self.in_quote {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let found = if d.escape != d.quote {
                    memchr::memchr2(d.quote, d.escape, &bytes[i..])
                } else {
                    memchr::memchr(d.quote, &bytes[i..])
                };
                let Some(j) = found else { return };
                i += j;
                if d.escape != d.quote && bytes[i] == d.escape {
                    self.escaped = true;
                } else {
                    // With escape == quote, `""` closes and reopens: the
                    // state comes out right without looking ahead.
                    self.in_quote = false;
                }
                i += 1;
                continue;
            }
            let Some(j) = memchr::memchr2(b'\n', d.quote, &bytes[i..]) else {
                return;
            };
            i += j;
            if bytes[i] == d.quote {
                self.in_quote = true;
            } else {
                self.at_line_start = true;
                record_end(i);
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Dialect = Dialect {
        delimiter: b',',
        quote: b'"',
        escape: b'"',
        comment: None,
    };

    fn all(text: &str, d: Dialect) -> Vec<Vec<(String, bool)>> {
        let mut p = Parser::new(d, 1);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match p.next(&text[at..], true) {
                (Next::Record(r), n) => {
                    out.push(r.fields.into_iter().map(|f| (f.text, f.quoted)).collect());
                    at += n;
                }
                (Next::Comment, n) => at += n,
                (Next::NeedMore, _) => break,
            }
        }
        out
    }

    #[test]
    fn fields_follow_copy_csv() {
        let got = all(
            "a,,\"\", x ,\"1,2\"\n\"say \"\"hi\"\"\",\"two\nlines\",ab\"cd\"ef\r\nlast",
            D,
        );
        assert_eq!(
            got,
            vec![
                vec![
                    ("a".into(), false),
                    ("".into(), false),
                    ("".into(), true),
                    (" x ".into(), false),
                    ("1,2".into(), true)
                ],
                vec![
                    ("say \"hi\"".into(), true),
                    ("two\nlines".into(), true),
                    ("abcdef".into(), true)
                ],
                vec![("last".into(), false)],
            ]
        );
    }

    #[test]
    fn a_backslash_escape_and_comments() {
        let d = Dialect {
            escape: b'\\',
            comment: Some(b'#'),
            ..D
        };
        let got = all("# note\n\"a\\\"b\",\"c\\\\d\"\n", d);
        assert_eq!(
            got,
            vec![vec![("a\"b".into(), true), ("c\\d".into(), true)]]
        );
    }

    #[test]
    fn records_split_across_inputs_wait_for_more() {
        let mut p = Parser::new(D, 1);
        assert!(matches!(p.next("\"open,", false), (Next::NeedMore, 0)));
        assert!(matches!(p.next("a,\"b\"", false), (Next::NeedMore, 0)));
        match p.next("a,b\n\"x\ny\",z\n", false) {
            (Next::Record(r), 4) => assert_eq!(r.line, 1),
            other => panic!("{other:?}"),
        }
        match p.next("\"x\ny\",z\nq", false) {
            (Next::Record(r), 8) => assert_eq!(r.line, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.line(), 4);
    }

    #[test]
    fn the_scanner_finds_record_ends_outside_quotes() {
        let text = b"a,\"x\ny\"\nb,\"\"\"\n\"\n# c\nd\n";
        let mut ends = Vec::new();
        let d = Dialect {
            comment: Some(b'#'),
            ..D
        };
        Scanner::new(d).scan(text, |i| ends.push(i));
        assert_eq!(ends, vec![7, 15, 21]);
    }
}
