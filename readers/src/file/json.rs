//! JSON lines and JSON arrays on the parsing thread: lines are split (and
//! left to their consumer to parse), an array is walked element by element
//! by serde_json ([`RawValue`]), so neither the file nor the array is ever
//! held whole.

use std::fmt;
use std::io::{self, BufRead};

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserializer as _, de};
use serde_json::value::RawValue;

use super::{BadRow, FileError, Item, Row, RowError, RowSender};

/// Sends one row per non-blank line after the first `skip` such rows.
pub(super) fn lines(mut input: impl BufRead, max: usize, skip: u64, rows: &mut RowSender) -> Result<(), FileError> {
    let (mut buf, mut line, mut seen) = (Vec::new(), 0, 0);
    while let Some(complete) = read_line(&mut input, &mut buf, max).map_err(FileError::Read)? {
        line += 1;
        let text = buf.trim_ascii();
        if complete && text.is_empty() {
            continue;
        }
        seen += 1;
        if seen <= skip {
            continue;
        }
        let item = match complete {
            true => json_value(text, max),
            // `buf` holds the line's first `max` + 2 bytes.
            false => Err(BadRow { cut: true, ..BadRow::new(RowError::TooLong { max }, buf.trim_ascii_start(), max) }),
        };
        if !rows.send(Row { line, item }) {
            break;
        }
    }
    Ok(())
}

/// Reads a line (with its LF, if any) into `buf`: `None` at the end,
/// `Some(false)` if it is longer than `max` + 2 (the line end), and then
/// `buf` holds only its start.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let (mut any, mut complete) = (false, true);
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(complete));
        }
        any = true;
        let (take, end) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_add(2).saturating_sub(buf.len());
        buf.extend_from_slice(&available[..take.min(room)]);
        complete &= take <= room;
        input.consume(take);
        if end {
            return Ok(Some(complete));
        }
    }
}

/// A JSON line as the file holds it, unchecked: every consumer parses it
/// into a record and says then what is wrong with it. Checking it here as
/// well cost a second parse of every line (about 12% of a JSON-lines load's
/// CPU, `perf`, 1,000,000 rows).
fn json_value(text: &[u8], max: usize) -> Result<Item, BadRow> {
    if text.len() > max {
        return Err(BadRow::new(RowError::TooLong { max }, text, max));
    }
    Ok(Item::Json(text.to_vec()))
}

/// Sends one row per element of the top-level array after the first `skip`.
/// A file of only whitespace has no rows.
pub(super) fn array(mut input: impl BufRead, max: usize, skip: u64, rows: &mut RowSender) -> Result<(), FileError> {
    if only_whitespace(&mut input).map_err(FileError::Read)? {
        return Ok(());
    }
    // An element is held whole while it is parsed: the input is cut off
    // once one runs past the limit (with room for the syntax around it).
    let read = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let limit = max.saturating_mul(2).saturating_add(1 << 16);
    let capped = Capped { input, read: read.clone(), limit };
    let mut de = serde_json::Deserializer::from_reader(capped);
    let mut index = 0;
    let result = de
        .deserialize_seq(Elements { max, skip, index: &mut index, rows: &mut *rows, read: &read })
        .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        // The reader is gone: stopping early is no error.
        Err(_) if rows.is_closed() => Ok(()),
        Err(_) if read.get() > limit => Err(FileError::JsonArray {
            element: index + 1,
            reason: format!("the element is longer than max_row_bytes ({max}); the rest of the array is not read"),
        }),
        Err(e) => Err(match e.classify() {
            serde_json::error::Category::Io => FileError::Read(e.into()),
            serde_json::error::Category::Data => FileError::NotJsonArray,
            _ => FileError::JsonArray { element: index + 1, reason: reason(&e) },
        }),
    }
}

/// Sends elements as rows; `index` counts those read.
struct Elements<'a> {
    max: usize,
    skip: u64,
    index: &'a mut u64,
    rows: &'a mut RowSender,
    /// Bytes read since the last element ended (see [`Capped`]).
    read: &'a std::cell::Cell<usize>,
}

/// The input, failing once more than `limit` bytes were read since the
/// last element ended (`read`, reset by [`Elements`]).
struct Capped<R> {
    input: R,
    read: std::rc::Rc<std::cell::Cell<usize>>,
    limit: usize,
}

impl<R: io::Read> io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read.get() > self.limit {
            return Err(io::Error::other("a JSON array element longer than the limit"));
        }
        let n = self.input.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while *self.index < self.skip {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            self.read.set(0);
            *self.index += 1;
        }
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            self.read.set(0);
            *self.index += 1;
            let item = match Box::<str>::from(raw).into_boxed_bytes().into_vec() {
                text if text.len() > self.max => Err(BadRow::new(RowError::TooLong { max: self.max }, &text, self.max)),
                text => Ok(Item::Json(text)),
            };
            if !self.rows.send(Row { line: *self.index, item }) {
                // Ends the walk with an error that `array` ignores.
                return Err(de::Error::custom("the reader is gone"));
            }
        }
        Ok(())
    }
}

/// Consumes leading whitespace; true if nothing else is left.
fn only_whitespace(input: &mut impl BufRead) -> io::Result<bool> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let done = blank < buf.len();
        input.consume(blank);
        if done {
            return Ok(false);
        }
    }
}

/// serde_json's message without its position. Syntax messages are fixed
/// texts; data messages (which may quote the input) are never passed here.
fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" at line ") {
        Some((reason, _)) => reason.to_owned(),
        None => text,
    }
}
