//! Rows in PostgreSQL's `COPY ... FROM STDIN` text format: tab-separated,
//! `\N` for null, backslash escapes. PostgreSQL converts each value to its
//! column's type; a value that does not fit is a data error for that row.

use crate::batch::{Batch, Cell, Value, json};
use crate::config::Generated;
use crate::mapping::{LoadTime, Mapping, Slot};

/// Appends one row (and a newline) to `out`.
pub fn write_row(
    out: &mut Vec<u8>,
    mapping: &Mapping,
    batch: &Batch,
    keys: &[Option<u32>],
    cells: &[Cell],
    load: &LoadTime,
) {
    let mut first = true;
    for slot in mapping.slots(keys, cells) {
        if !first {
            out.push(b'\t');
        }
        first = false;
        match slot {
            Slot::Missing => out.extend_from_slice(b"\\N"),
            Slot::Generated(Generated::LoadDate) => out.extend_from_slice(load.date.as_bytes()),
            Slot::Generated(Generated::LoadTime) => out.extend_from_slice(load.time.as_bytes()),
            Slot::Generated(Generated::SourceFile) => text_or_null(out, load.source_file.as_deref()),
            Slot::Generated(Generated::SourceVersion) => text_or_null(out, load.source_version.as_deref()),
            Slot::Field(cell, members) => write_value(out, batch, cell, members),
        }
    }
    out.push(b'\n');
}

/// Appends `rows` to `out` with each row's 0-based number after `first` as
/// a last column: the staging table's order, where the later row of a key
/// wins.
pub fn numbered(out: &mut Vec<u8>, rows: &[u8], first: u64) -> u64 {
    use std::io::Write;
    let mut n = first;
    for row in rows.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(&row[..row.len() - 1]);
        // Formatted in place: no string per row.
        write!(out, "\t{n}\n").expect("writing to a Vec cannot fail");
        n += 1;
    }
    n
}

fn write_value(out: &mut Vec<u8>, batch: &Batch, cell: &Cell, members: &[Cell]) {
    match cell.value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Boolean(b) => out.push(if b { b't' } else { b'f' }),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" }),
        Value::Float(f) => out.extend_from_slice(f.to_string().as_bytes()),
        Value::Text(s) => escape(out, batch.text(s).as_bytes()),
        Value::Object(_) | Value::Array(_) => {
            // Containers load as JSON text (json, jsonb or text columns).
            let mut text = String::new();
            json::write_value(&mut text, batch, cell, members);
            escape(out, text.as_bytes());
        }
    }
}

fn text_or_null(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(t) => escape(out, t.as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
}

/// Text with `\`, tab, newline and carriage return escaped.
pub fn escape(out: &mut Vec<u8>, text: &[u8]) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_four_specials() {
        let mut out = Vec::new();
        escape(&mut out, b"a\\b\tc\nd\re");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn numbers_rows_across_units() {
        let mut out = Vec::new();
        let next = numbered(&mut out, b"a\tb\nc\\nd\te\n", 0);
        assert_eq!(numbered(&mut out, b"f\t\\N\n", next), 3);
        assert_eq!(out, b"a\tb\t0\nc\\nd\te\t1\nf\t\\N\t2\n");
    }
}
