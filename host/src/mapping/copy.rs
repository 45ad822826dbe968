//! Values in PostgreSQL's `COPY ... FROM STDIN` text format: tab-separated,
//! `\N` for null, backslash escapes. PostgreSQL converts each value to its
//! column's type; a value that does not fit is a data error for that row.
//! The row layout (which value goes in which column) is [`super::Rows`]'s.
//!
//! Must not decide which value goes where.

use crate::batch::{Batch, Cell, Value, json};
use std::borrow::Cow;

/// `text` (rows in COPY text) with `id` in each place `at` (offsets,
/// ascending) of a `batch-id` column, null without an id; the text itself
/// when it has no such place. The id is known only when the commit takes
/// it, after the rows were encoded (and a commit that isolates a refused
/// row is another batch, with another id).
pub fn with_batch_id<'t>(text: &'t [u8], at: &[usize], id: Option<i64>) -> Cow<'t, [u8]> {
    if at.is_empty() {
        return Cow::Borrowed(text);
    }
    let id = id.map_or_else(|| "\\N".to_string(), |id| id.to_string());
    let mut out = Vec::with_capacity(text.len() + id.len() * at.len());
    let mut from = 0;
    for &place in at {
        out.extend_from_slice(&text[from..place]);
        out.extend_from_slice(id.as_bytes());
        from = place;
    }
    out.extend_from_slice(&text[from..]);
    Cow::Owned(out)
}

pub(super) fn write_value(out: &mut Vec<u8>, batch: &Batch, cell: &Cell, members: &[Cell]) {
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

/// A JSON value in the text [`write_value`] writes for the same value of a
/// record: how a test case's expected value would reach the table (`host
/// check --db` tries them).
pub fn write_json(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Null => out.extend_from_slice(b"\\N"),
        J::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        // Floats as Rust writes them (serde_json's own text can differ: `1e20`).
        J::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.extend_from_slice(f.to_string().as_bytes()),
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        J::String(s) => escape(out, s.as_bytes()),
        J::Array(_) | J::Object(_) => escape(out, value.to_string().as_bytes()),
    }
}

pub(super) fn text_or_null(out: &mut Vec<u8>, text: Option<&str>) {
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
    fn json_values_are_written_as_record_values_are() {
        let text = |v: serde_json::Value| {
            let mut out = Vec::new();
            write_json(&mut out, &v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(serde_json::json!(null)), "\\N");
        assert_eq!(text(serde_json::json!(true)), "t");
        assert_eq!(text(serde_json::json!(-2)), "-2");
        assert_eq!(text(serde_json::json!(2.5)), "2.5");
        assert_eq!(text(serde_json::json!(u64::MAX)), "18446744073709551615");
        assert_eq!(text(serde_json::json!("a\tb")), "a\\tb");
        assert_eq!(text(serde_json::json!({"k": [1, "x"]})), r#"{"k":[1,"x"]}"#);
    }

    #[test]
    fn the_batch_id_goes_into_its_places() {
        let text = b"a\t\tb\nc\t\t\n";
        assert_eq!(&*with_batch_id(text, &[2, 8], Some(42)), b"a\t42\tb\nc\t\t42\n");
        assert_eq!(&*with_batch_id(text, &[2, 8], None), b"a\t\\N\tb\nc\t\t\\N\n");
        assert!(matches!(with_batch_id(b"x\n", &[], Some(1)), Cow::Borrowed(b"x\n")));
    }

    #[test]
    fn escapes_the_four_specials() {
        let mut out = Vec::new();
        escape(&mut out, b"a\\b\tc\nd\re");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re");
    }
}
