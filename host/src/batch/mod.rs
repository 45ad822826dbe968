//! Batches on the host side: building them record by record, reading them,
//! cutting and joining them, and checking what a plugin returned. The types
//! are the WIT ones (see `wit/transform.wit`); this module holds no wasmtime
//! logic.

pub mod json;
mod shape;

pub use crate::transform::wit::{Batch, Cell, NO_KEY, Span, Value};
pub use shape::check_output;

use std::collections::HashMap;

/// Builds a batch record by record, interning keys.
#[derive(Default)]
pub struct BatchBuilder {
    batch: Batch,
    index: HashMap<Box<str>, u32>,
    /// Where the open record started, in cells and in text.
    record_cells: usize,
    record_text: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { keys: Vec::new(), text: Vec::new(), cells: Vec::new(), records: Vec::new() }
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records closed so far.
    pub fn len(&self) -> usize {
        self.batch.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.records.is_empty()
    }

    /// The index of key `name`, added if new.
    pub fn key(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.index.get(name) {
            return k;
        }
        let k = self.batch.keys.len() as u32;
        self.batch.keys.push(name.to_string());
        self.index.insert(name.into(), k);
        k
    }

    pub fn push(&mut self, key: u32, value: Value) {
        self.batch.cells.push(Cell { key, value });
    }

    pub fn push_text(&mut self, key: u32, text: &str) {
        let offset = self.batch.text.len() as u32;
        self.batch.text.extend_from_slice(text.as_bytes());
        self.push(key, Value::Text(Span { offset, len: text.len() as u32 }));
    }

    /// Opens a container; close it with [`BatchBuilder::close`].
    pub fn open(&mut self, key: u32) -> usize {
        self.push(key, Value::Null);
        self.batch.cells.len() - 1
    }

    pub fn close(&mut self, at: usize, array: bool) {
        let n = (self.batch.cells.len() - at - 1) as u32;
        self.batch.cells[at].value = if array { Value::Array(n) } else { Value::Object(n) };
    }

    /// The index of key `name`, if the batch has it.
    pub fn find_key(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The cells of the last closed record.
    pub fn last_record(&self) -> &[Cell] {
        let n = self.batch.records.last().copied().unwrap_or(0) as usize;
        &self.batch.cells[self.batch.cells.len() - n..]
    }

    /// Removes the last closed record (its cells; its text stays unused).
    pub fn pop_record(&mut self) {
        if let Some(n) = self.batch.records.pop() {
            let len = self.batch.cells.len() - n as usize;
            self.batch.cells.truncate(len);
            self.record_cells = len;
        }
    }

    pub fn key_name(&self, key: u32) -> &str {
        &self.batch.keys[key as usize]
    }

    pub fn end_record(&mut self) {
        self.batch.records.push((self.batch.cells.len() - self.record_cells) as u32);
        self.record_cells = self.batch.cells.len();
        self.record_text = self.batch.text.len();
    }

    /// Forgets the open record.
    pub fn abandon_record(&mut self) {
        self.batch.cells.truncate(self.record_cells);
        self.batch.text.truncate(self.record_text);
    }

    /// Copies one record of `src` (its cells) as a new record.
    pub fn append_record(&mut self, src: &Batch, cells: &[Cell]) {
        let mut remap: Vec<u32> = Vec::new();
        for c in cells {
            let key = if c.key == NO_KEY {
                NO_KEY
            } else {
                let i = c.key as usize;
                if remap.len() <= i {
                    remap.resize(i + 1, u32::MAX);
                }
                if remap[i] == u32::MAX {
                    remap[i] = self.key(&src.keys[i]);
                }
                remap[i]
            };
            match c.value {
                Value::Text(s) => self.push_text(key, text(src, s)),
                v => self.push(key, v),
            }
        }
        self.end_record();
    }

    pub fn finish(mut self) -> Batch {
        self.abandon_record();
        self.batch
    }
}

/// The records of a batch, as cell slices.
pub fn records(batch: &Batch) -> impl Iterator<Item = &[Cell]> {
    let mut start = 0usize;
    batch.records.iter().map(move |&n| {
        let cells = &batch.cells[start..start + n as usize];
        start += n as usize;
        cells
    })
}

/// How many cells follow `cell` as its members.
pub fn members(cell: &Cell) -> usize {
    match cell.value {
        Value::Object(n) | Value::Array(n) => n as usize,
        _ => 0,
    }
}

/// Top-level fields of a record, each with its members.
pub fn fields(cells: &[Cell]) -> impl Iterator<Item = (&Cell, &[Cell])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let cell = cells.get(i)?;
        let end = (i + 1 + members(cell)).min(cells.len());
        let inner = &cells[i + 1..end];
        i = end;
        Some((cell, inner))
    })
}

/// A span's text. Spans in batches are checked before use, so this only
/// fails on a bug.
pub fn text(batch: &Batch, span: Span) -> &str {
    let bytes = &batch.text[span.offset as usize..(span.offset + span.len) as usize];
    std::str::from_utf8(bytes).expect("spans are checked UTF-8")
}

/// Records `range` of `batch` as a batch of their own (keys and text shared
/// by copy; used only when isolating a failing record).
pub fn slice(batch: &Batch, range: std::ops::Range<usize>) -> Batch {
    let start: usize = batch.records[..range.start].iter().map(|&n| n as usize).sum();
    let len: usize = batch.records[range.clone()].iter().map(|&n| n as usize).sum();
    Batch {
        keys: batch.keys.clone(),
        text: batch.text.clone(),
        cells: batch.cells[start..start + len].to_vec(),
        records: batch.records[range].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_remaps_keys_and_text() {
        let mut a = BatchBuilder::new();
        let k = a.key("x");
        a.push_text(k, "hello");
        a.end_record();
        let src = a.finish();
        let mut b = BatchBuilder::new();
        let other = b.key("other");
        b.push(other, Value::Integer(1));
        b.end_record();
        b.append_record(&src, records(&src).next().unwrap());
        let out = b.finish();
        assert_eq!(out.keys, vec!["other".to_string(), "x".to_string()]);
        let second = records(&out).nth(1).unwrap();
        assert_eq!(second[0].key, 1);
        match second[0].value {
            Value::Text(s) => assert_eq!(text(&out, s), "hello"),
            _ => panic!("text expected"),
        }
    }

    #[test]
    fn slice_keeps_the_chosen_records() {
        let mut b = BatchBuilder::new();
        for i in 0..4 {
            let k = b.key("i");
            b.push(k, Value::Integer(i));
            b.end_record();
        }
        let s = slice(&b.finish(), 1..3);
        assert_eq!(s.records, vec![1, 1]);
        assert!(matches!(s.cells[0].value, Value::Integer(1)));
        assert!(matches!(s.cells[1].value, Value::Integer(2)));
    }
}
