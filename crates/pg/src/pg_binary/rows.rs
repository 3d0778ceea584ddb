//! Row boundaries of COPY data forwarded as it arrives (a PostgreSQL table
//! into a table of the same types): no value is decoded, the walk only
//! counts rows and checks the stream is whole (binary: header, tuples,
//! trailer; text: whole lines), so a truncated stream is an error, not a
//! chunk committed short.

use super::decode::DecodeError;

use super::SIGNATURE;

/// COPY's two data formats etl forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Binary,
}

impl CopyFormat {
    /// The `FORMAT` option of a COPY statement.
    pub fn sql(self) -> &'static str {
        match self {
            CopyFormat::Text => "text",
            CopyFormat::Binary => "binary",
        }
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
    /// Text: whether the last byte seen ends a line.
    at_line_start: bool,
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
            (CopyFormat::Text, _) if self.at_line_start => Ok(self.rows),
            (CopyFormat::Text, _) => Err(broken("its last row has no end of line")),
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
fn whole_tuple(bytes: &[u8]) -> Option<usize> {
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
}
