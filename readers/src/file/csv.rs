//! CSV on the parsing thread. `csv_core` parses (RFC 4180 quoting, LF or
//! CRLF, a leading BOM); this file drives it over a buffered input so each
//! row knows the line it starts on and no row grows past the size limit,
//! then checks field counts, decodes UTF-8 and maps empty fields. (The `csv`
//! crate's positions miss blank lines and the LF of a CRLF before a record.)

use std::io::{self, BufRead};

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};
use tokio::sync::oneshot;

use super::{BadRow, CsvOptions, EmptyAs, FileError, Item, Row, RowError, RowSender};

/// What [`read`] can tell without reading.
pub(super) fn check(o: &CsvOptions) -> Result<(), FileError> {
    match (o.header, o.columns.is_empty()) {
        (false, true) => Err(FileError::Options("a CSV without a header needs column names")),
        (true, false) => Err(FileError::Options("a CSV with a header takes its column names from it")),
        _ => Ok(()),
    }
}

/// Sends the column names to `columns` (none for an empty file with a
/// header), then the rows after the first `skip` to `rows`.
pub(super) fn read(
    input: impl BufRead,
    o: &CsvOptions,
    max_row_bytes: usize,
    skip: u64,
    columns: oneshot::Sender<Vec<String>>,
    rows: &mut RowSender,
) -> Result<(), FileError> {
    let mut records = Records::new(input, o.delimiter, max_row_bytes);
    let names = if o.header {
        let Some(_) = records.next().map_err(FileError::Read)? else {
            let _ = columns.send(Vec::new());
            return Ok(());
        };
        if records.too_long {
            return Err(FileError::Header("longer than max_row_bytes"));
        }
        let names: Option<Vec<_>> = records.fields().map(|f| std::str::from_utf8(f).ok().map(str::to_owned)).collect();
        records.keep_header();
        names.ok_or(FileError::Header("not valid UTF-8"))?
    } else {
        o.columns.clone()
    };
    let empty = empty_as(o, &names)?;
    // A reader gone already shows at the first send.
    let _ = columns.send(names);
    let mut seen = 0;
    while let Some(line) = records.next().map_err(FileError::Read)? {
        seen += 1;
        if seen <= skip {
            continue;
        }
        let item = fields(&records, &empty).map(Item::Fields).map_err(|e| records.bad(e));
        if !rows.send(Row { line, item }) {
            break;
        }
    }
    Ok(())
}

/// What an empty field becomes, column by column.
fn empty_as(o: &CsvOptions, names: &[String]) -> Result<Vec<EmptyAs>, FileError> {
    if let Some(unknown) = o.empty_overrides.keys().find(|k| !names.contains(k)) {
        return Err(FileError::UnknownColumn(unknown.clone()));
    }
    Ok(names.iter().map(|n| o.empty_overrides.get(n).copied().unwrap_or(o.empty)).collect())
}

fn fields<R>(records: &Records<R>, empty: &[EmptyAs]) -> Result<Vec<Option<String>>, RowError> {
    if records.too_long {
        return Err(RowError::TooLong { max: records.max_bytes });
    }
    let found = records.fields().count();
    if found != empty.len() {
        return Err(RowError::FieldCount { expected: empty.len(), found });
    }
    let field = |(i, (bytes, empty)): (usize, (&[u8], &EmptyAs))| match (bytes.is_empty(), empty) {
        (true, EmptyAs::Null) => Ok(None),
        (true, EmptyAs::EmptyString) => Ok(Some(String::new())),
        (false, _) => {
            std::str::from_utf8(bytes).map(|s| Some(s.to_owned())).map_err(|_| RowError::FieldNotUtf8 { field: i + 1 })
        }
    };
    records.fields().zip(empty).enumerate().map(field).collect()
}

/// The records of a CSV input, one at a time, in buffers that grow to
/// twice `max_bytes` at most: a record with more than `max_bytes` of field
/// content (or more fields) is parsed to its end but not kept.
struct Records<R> {
    input: R,
    core: Reader,
    max_bytes: usize,
    /// The last record's unquoted fields, back to back, and their ends.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
    /// Whether the last record outgrew `max_bytes` (its fields are gone).
    too_long: bool,
    /// The last record's bytes as read (at most `max_bytes` of them), and
    /// whether there were more.
    raw: Vec<u8>,
    raw_cut: bool,
    /// The header's `raw` and `raw_cut`, kept by [`Records::keep_header`].
    header: Option<(Vec<u8>, bool)>,
}

impl<R: BufRead> Records<R> {
    fn new(input: R, delimiter: u8, max_bytes: usize) -> Self {
        let core = ReaderBuilder::new().delimiter(delimiter).build();
        Records {
            input,
            core,
            max_bytes,
            bytes: vec![0; 1024],
            ends: vec![0; 16],
            fields: 0,
            too_long: false,
            raw: Vec::new(),
            raw_cut: false,
            header: None,
        }
    }

    /// Reads the next record; returns the line it starts on, or `None` at
    /// the end.
    fn next(&mut self) -> io::Result<Option<u64>> {
        let line = self.skip_line_ends()?;
        let (mut used, mut ended) = (0, 0);
        (self.too_long, self.raw_cut) = (false, false);
        self.raw.clear();
        loop {
            let input = self.input.fill_buf()?;
            let (result, read, written, new_ends) =
                self.core.read_record(input, &mut self.bytes[used..], &mut self.ends[ended..]);
            let room = self.max_bytes.saturating_add(2).saturating_sub(self.raw.len());
            self.raw.extend_from_slice(&input[..read.min(room)]);
            self.raw_cut |= read > room;
            self.input.consume(read);
            (used, ended) = (used + written, ended + new_ends);
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if self.bytes.len() < self.max_bytes => {
                    self.bytes.resize(self.bytes.len() * 2, 0);
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() < self.max_bytes => {
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {
                    // Parse on to the record's end, dropping its fields.
                    (used, ended, self.too_long) = (0, 0, true);
                }
                ReadRecordResult::Record => {
                    self.end_raw();
                    self.too_long |= used > self.max_bytes;
                    self.fields = if self.too_long { 0 } else { ended };
                    return Ok(Some(line));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// Consumes the line ends (and so blank lines) before a record, which
    /// the parser would skip too but after the position of the record was
    /// taken; returns the line the record starts on.
    fn skip_line_ends(&mut self) -> io::Result<u64> {
        loop {
            let input = self.input.fill_buf()?;
            let ends = input.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
            let lines = input[..ends].iter().filter(|&&b| b == b'\n').count();
            let done = ends < input.len() || input.is_empty();
            self.input.consume(ends);
            self.core.set_line(self.core.line() + lines as u64);
            if done {
                return Ok(self.core.line());
            }
        }
    }
}

impl<R> Records<R> {
    /// Drops the line end from `raw` and cuts it to `max_bytes`.
    fn end_raw(&mut self) {
        while self.raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            self.raw.pop();
        }
        self.raw_cut |= self.raw.len() > self.max_bytes;
        self.raw.truncate(self.max_bytes);
    }

    /// Keeps the last record's bytes as the header that comes before the
    /// bytes of every bad row.
    fn keep_header(&mut self) {
        self.header = Some((std::mem::take(&mut self.raw), self.raw_cut));
    }

    /// The last record as a bad row: `error`, after the header if any.
    fn bad(&self, error: RowError) -> BadRow {
        let (mut raw, mut cut) = (Vec::new(), self.raw_cut);
        if let Some((header, header_cut)) = &self.header {
            raw.extend_from_slice(header);
            raw.push(b'\n');
            cut |= header_cut;
        }
        raw.extend_from_slice(&self.raw);
        BadRow { error, raw, cut }
    }

    /// The fields of the last record (none if it was too long).
    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends[..self.fields].iter().copied());
        starts.zip(&self.ends[..self.fields]).map(|(start, &end)| &self.bytes[start..end])
    }
}
