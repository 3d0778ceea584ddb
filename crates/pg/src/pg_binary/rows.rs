//! Row boundaries of COPY data forwarded as it arrives (a PostgreSQL table
//! into a table of the same types, or into a CSV file as the server prints
//! it): no value is decoded, the walk only counts rows and checks the
//! stream is whole (binary: header, tuples, trailer; text and CSV: whole
//! lines), so a truncated stream is an error, not a chunk committed short.

use super::decode::DecodeError;

use super::SIGNATURE;

/// COPY's data formats etl forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Binary,
    /// CSV, its first line a header when `header`.
    Csv {
        header: bool,
    },
}

impl CopyFormat {
    /// The `FORMAT` option of a COPY statement.
    pub fn sql(self) -> &'static str {
        match self {
            CopyFormat::Text => "text",
            CopyFormat::Binary => "binary",
            CopyFormat::Csv { .. } => "csv",
        }
    }
}

/// COPY's CSV as a CSV file sink writes it: the options of a `COPY ... TO
/// STDOUT` whose output is the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvCopy {
    pub header: bool,
    pub delimiter: u8,
    pub null: String,
    /// The server's name of the file's encoding (`UTF8`, `UHC`, ...).
    pub encoding: &'static str,
}

impl CsvCopy {
    pub fn format(&self) -> CopyFormat {
        CopyFormat::Csv {
            header: self.header,
        }
    }

    /// `FORMAT csv, HEADER true, DELIMITER ',', NULL '', ENCODING 'UTF8'`.
    pub fn options(&self) -> String {
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        format!(
            "FORMAT csv, HEADER {}, DELIMITER {}, NULL {}, ENCODING {}",
            self.header,
            literal(&(self.delimiter as char).to_string()),
            literal(&self.null),
            literal(self.encoding)
        )
    }

    /// The server's name of an encoding (WHATWG's label, as `encoding_rs`
    /// names it), where the server has it.
    pub fn server_encoding(name: &str) -> Option<&'static str> {
        Some(match name {
            "UTF-8" => "UTF8",
            // WHATWG's EUC-KR is windows-949 (UHC), a superset of EUC-KR.
            "EUC-KR" => "UHC",
            "Shift_JIS" => "SJIS",
            "EUC-JP" => "EUC_JP",
            "GBK" => "GBK",
            "gb18030" => "GB18030",
            "Big5" => "BIG5",
            "KOI8-R" => "KOI8R",
            "KOI8-U" => "KOI8U",
            "windows-866" => "WIN866",
            "windows-874" => "WIN874",
            "windows-1250" => "WIN1250",
            "windows-1251" => "WIN1251",
            "windows-1252" => "WIN1252",
            "windows-1253" => "WIN1253",
            "windows-1254" => "WIN1254",
            "windows-1255" => "WIN1255",
            "windows-1256" => "WIN1256",
            "windows-1257" => "WIN1257",
            "windows-1258" => "WIN1258",
            "ISO-8859-2" => "LATIN2",
            "ISO-8859-3" => "LATIN3",
            "ISO-8859-4" => "LATIN4",
            "ISO-8859-5" => "ISO_8859_5",
            "ISO-8859-6" => "ISO_8859_6",
            "ISO-8859-7" => "ISO_8859_7",
            "ISO-8859-8" => "ISO_8859_8",
            "ISO-8859-10" => "LATIN6",
            "ISO-8859-13" => "LATIN7",
            "ISO-8859-14" => "LATIN8",
            "ISO-8859-15" => "LATIN9",
            "ISO-8859-16" => "LATIN10",
            _ => return None,
        })
    }
}

/// Where the walk of a binary stream is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// In the 19 fixed bytes of the header (signature, flags, extension length).
    Header,
    /// Skipping `n` more bytes (the header extension, a field's value).
    Skip(u64),
    /// At a tuple's field count.
    Count,
    /// At a field's length, `n` fields left in the tuple (this one included).
    Length(u16),
    /// After the trailer: nothing may follow.
    End,
}

/// Counts the rows of one chunk's COPY data fed piece by piece.
#[derive(Debug)]
pub struct RowWalker {
    format: CopyFormat,
    state: State,
    /// The bytes of a fixed-size part (header, count, length) split across pieces.
    part: Vec<u8>,
    /// Fields left after the current value is skipped.
    after_skip: Option<u16>,
    rows: u64,
    /// Text and CSV: whether the last byte seen ends a line.
    at_line_start: bool,
    /// CSV: inside a quoted value (its line breaks are data).
    in_quotes: bool,
    /// CSV: the header line is still to come (not a row).
    header_left: bool,
}

impl RowWalker {
    pub fn new(format: CopyFormat) -> Self {
        RowWalker {
            format,
            state: State::Header,
            part: Vec::with_capacity(19),
            after_skip: None,
            rows: 0,
            at_line_start: true,
            in_quotes: false,
            header_left: matches!(format, CopyFormat::Csv { header: true }),
        }
    }

    /// Rows completed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Walks one piece; returns the rows it completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<u64, DecodeError> {
        let before = self.rows;
        if self.format == CopyFormat::Text {
            // A text row ends at a newline; newlines inside values are
            // escaped (`\n`), so every 0x0A byte ends a row.
            self.rows += memchr::memchr_iter(b'\n', bytes).count() as u64;
            if let Some(last) = bytes.last() {
                self.at_line_start = *last == b'\n';
            }
            return Ok(self.rows - before);
        }
        if let CopyFormat::Csv { .. } = self.format {
            // A CSV row ends at a line break outside quotes; a quote inside
            // a quoted value is doubled, so each one flips the state. No
            // byte of a multibyte character in the encodings the server
            // writes is a quote or a line break.
            for at in memchr::memchr2_iter(b'"', b'\n', bytes) {
                match bytes[at] {
                    b'"' => self.in_quotes = !self.in_quotes,
                    _ if self.in_quotes => {}
                    _ if self.header_left => self.header_left = false,
                    _ => self.rows += 1,
                }
            }
            if let Some(last) = bytes.last() {
                self.at_line_start = *last == b'\n' && !self.in_quotes;
            }
            return Ok(self.rows - before);
        }
        while !bytes.is_empty() {
            // The server sends a message per row: walk whole tuples in
            // place, the states only for one split across pieces.
            if matches!(self.state, State::Count) && self.part.is_empty() {
                if let Some(len) = whole_tuple(bytes) {
                    bytes = &bytes[len..];
                    self.rows += 1;
                    continue;
                }
            }
            match self.state {
                State::Header => {
                    if !self.take(&mut bytes, 19) {
                        continue;
                    }
                    if &self.part[..11] != SIGNATURE {
                        return Err(broken("it does not start with the binary COPY signature"));
                    }
                    let ext = u32::from_be_bytes(self.part[15..19].try_into().expect("4 bytes"));
                    self.part.clear();
                    self.after_skip = None;
                    self.state = State::Skip(ext as u64);
                }
                State::Skip(n) => {
                    let k = (n as usize).min(bytes.len());
                    bytes = &bytes[k..];
                    let left = n - k as u64;
                    if left > 0 {
                        self.state = State::Skip(left);
                        continue;
                    }
                    self.state = match self.after_skip.take() {
                        None => State::Count,
                        Some(fields) => self.next_field(fields),
                    };
                }
                State::Count => {
                    if !self.take(&mut bytes, 2) {
                        continue;
                    }
                    let n = i16::from_be_bytes([self.part[0], self.part[1]]);
                    self.part.clear();
                    self.state = match n {
                        -1 => State::End,
                        0 => {
                            self.rows += 1;
                            State::Count
                        }
                        n if n > 0 => State::Length(n as u16),
                        n => return Err(broken(&format!("a tuple has {n} fields"))),
                    };
                }
                State::Length(fields) => {
                    if !self.take(&mut bytes, 4) {
                        continue;
                    }
                    let len = i32::from_be_bytes(self.part[..4].try_into().expect("4 bytes"));
                    self.part.clear();
                    self.state = match len {
                        -1 => self.next_field(fields),
                        len if len >= 0 => {
                            self.after_skip = Some(fields);
                            State::Skip(len as u64)
                        }
                        len => return Err(broken(&format!("a field is {len} bytes long"))),
                    };
                }
                State::End => return Err(broken("bytes follow its trailer")),
            }
        }
        Ok(self.rows - before)
    }

    /// After the last piece: the stream ended where a row does.
    pub fn finish(&self) -> Result<u64, DecodeError> {
        match (self.format, self.state) {
            (CopyFormat::Text | CopyFormat::Csv { .. }, _) if self.at_line_start => Ok(self.rows),
            (CopyFormat::Text | CopyFormat::Csv { .. }, _) => {
                Err(broken("its last row has no end of line"))
            }
            (CopyFormat::Binary, State::End) => Ok(self.rows),
            (CopyFormat::Binary, _) => Err(broken(
                "it ends inside a row, or before the trailer (the connection was cut?)",
            )),
        }
    }

    /// After a field: the next one, or the next tuple.
    fn next_field(&mut self, fields: u16) -> State {
        if fields <= 1 {
            self.rows += 1;
            State::Count
        } else {
            State::Length(fields - 1)
        }
    }

    /// Adds up to `n` bytes of a fixed-size part; whether it is complete.
    fn take(&mut self, bytes: &mut &[u8], n: usize) -> bool {
        let k = (n - self.part.len()).min(bytes.len());
        self.part.extend_from_slice(&bytes[..k]);
        *bytes = &bytes[k..];
        self.part.len() == n
    }
}

/// The length of the tuple `bytes` starts with, when all of it is there
/// and well formed (anything else is left to the states, which report it).
pub fn whole_tuple(bytes: &[u8]) -> Option<usize> {
    let fields = i16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    if fields < 0 {
        return None;
    }
    let mut at = 2usize;
    for _ in 0..fields {
        let len = i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        match len {
            -1 => {}
            len if len >= 0 => at += len as usize,
            _ => return None,
        }
    }
    (at <= bytes.len()).then_some(at)
}

fn broken(what: &str) -> DecodeError {
    DecodeError::Broken(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary stream of rows with the given fields (None: NULL).
    fn binary(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u32.to_be_bytes());
        out.extend_from_slice(b"extx");
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn binary_rows_counted_whatever_the_pieces() {
        let data = binary(&[
            vec![Some(b"abc"), None, Some(b"")],
            vec![None, None, Some(b"0123456789")],
            vec![],
            vec![Some(b"x"), Some(b"yy"), None],
        ]);
        for piece in [1, 2, 3, 7, 19, 20, data.len()] {
            let mut w = RowWalker::new(CopyFormat::Binary);
            let mut seen = 0;
            for p in data.chunks(piece) {
                seen += w.feed(p).unwrap();
            }
            assert_eq!(seen, 4, "piece {piece}");
            assert_eq!(w.finish().unwrap(), 4);
        }
    }

    #[test]
    fn a_cut_or_foreign_stream_is_an_error() {
        let data = binary(&[vec![Some(b"abc")], vec![Some(b"def")]]);
        for cut in [5, 19, 30, data.len() - 2, data.len() - 1] {
            let mut w = RowWalker::new(CopyFormat::Binary);
            w.feed(&data[..cut]).unwrap();
            let e = w.finish().unwrap_err().to_string();
            assert!(e.contains("not whole"), "{cut}: {e}");
        }
        let mut w = RowWalker::new(CopyFormat::Binary);
        assert!(w.feed(b"1\tabc\n2\tdef\n3\tghi\n4\tjkl\n").is_err());
        let mut extra = data.clone();
        extra.push(0);
        assert!(RowWalker::new(CopyFormat::Binary).feed(&extra).is_err());
    }

    #[test]
    fn a_piece_per_tuple_as_the_server_sends_them() {
        let rows = [vec![Some(&b"abc"[..]), None], vec![None, Some(b"")]];
        let data = binary(&rows);
        // Header (19 bytes and the 4-byte extension), each tuple, the trailer.
        let (header, mut rest) = data.split_at(23);
        let mut w = RowWalker::new(CopyFormat::Binary);
        assert_eq!(w.feed(header).unwrap(), 0);
        for len in [2 + 4 + 3 + 4, 2 + 4 + 4] {
            let (tuple, tail) = rest.split_at(len);
            assert_eq!(w.feed(tuple).unwrap(), 1);
            rest = tail;
        }
        assert_eq!(w.feed(rest).unwrap(), 0);
        assert_eq!(w.finish().unwrap(), 2);
        // A negative length inside a whole tuple is refused, not skipped.
        let mut bad = binary(&[vec![Some(b"abc")]]);
        bad[25..29].copy_from_slice(&(-7i32).to_be_bytes());
        let e = RowWalker::new(CopyFormat::Binary).feed(&bad).unwrap_err();
        assert!(e.to_string().contains("-7 bytes"), "{e}");
    }

    #[test]
    fn text_rows_are_lines() {
        let mut w = RowWalker::new(CopyFormat::Text);
        assert_eq!(w.feed(b"1\ta\\nb\n2\t").unwrap(), 1);
        assert!(w.finish().is_err());
        assert_eq!(w.feed(b"\\N\n").unwrap(), 1);
        assert_eq!(w.finish().unwrap(), 2);
    }

    #[test]
    fn csv_rows_end_at_line_breaks_outside_quotes_after_the_header() {
        let mut w = RowWalker::new(CopyFormat::Csv { header: true });
        // The header, a value with a line break and doubled quotes, split
        // across pieces inside the quotes.
        assert_eq!(w.feed(b"id,\"a\nb\"\n1,\"x\"\"\n").unwrap(), 0);
        assert!(w.finish().is_err(), "inside quotes");
        assert_eq!(w.feed(b"y\"\n2,\n3,").unwrap(), 2);
        assert!(w.finish().is_err());
        assert_eq!(w.feed(b"z\n").unwrap(), 1);
        assert_eq!(w.finish().unwrap(), 3);
        let mut bare = RowWalker::new(CopyFormat::Csv { header: false });
        assert_eq!(bare.feed(b"1\n2\n").unwrap(), 2);
        assert_eq!(
            RowWalker::new(CopyFormat::Csv { header: true })
                .finish()
                .unwrap(),
            0
        );
    }

    #[test]
    fn csv_copy_options_quote_their_values() {
        let c = CsvCopy {
            header: true,
            delimiter: b';',
            null: "it's".into(),
            encoding: CsvCopy::server_encoding("EUC-KR").unwrap(),
        };
        assert_eq!(
            c.options(),
            "FORMAT csv, HEADER true, DELIMITER ';', NULL 'it''s', ENCODING 'UHC'"
        );
        assert_eq!(CsvCopy::server_encoding("x-user-defined"), None);
    }
}
