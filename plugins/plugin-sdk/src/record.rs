//! The record model shared by the host and plugins: a batch as interned keys,
//! a text arena and runs of cells; and its column form, which is what crosses
//! the WIT boundary (`batch` in `wit/transform.wit`).
//!
//! Decoding columns checks everything a reader relies on (lengths, kinds,
//! keys, spans, UTF-8, containers), so code holding a [`Batch`] may index
//! without fear.

/// The key of an array element's cell.
pub const NO_KEY: u32 = u32::MAX;

/// Bytes `[offset, offset + len)` of a batch's text arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
}

/// One value. `Object(n)` / `Array(n)`: the next `n` cells of the record
/// (nested ones included) are its members.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(Span),
    Object(u32),
    Array(u32),
}

/// A field: `key` indexes the batch's keys ([`NO_KEY`] in arrays).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub key: u32,
    pub value: Value,
}

/// A batch of records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub keys: Vec<String>,
    pub text: Vec<u8>,
    pub cells: Vec<Cell>,
    /// Cells per record, in order.
    pub records: Vec<u32>,
}

/// What became of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The next `n` output records came from it.
    Emit(u32),
    Drop,
    /// Refused; the reason names fields and rules, never values.
    Reject(String),
}

/// A transform's result: one outcome per input record, the emitted records
/// in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub batch: Batch,
    pub outcomes: Vec<Outcome>,
}

/// How many cells follow `cell` as its members.
#[inline]
pub fn members(cell: &Cell) -> usize {
    match cell.value {
        Value::Object(n) | Value::Array(n) => n as usize,
        _ => 0,
    }
}

/// Top-level fields of a run of cells, each with its members.
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

impl Batch {
    /// The records, as cell slices.
    pub fn iter(&self) -> impl Iterator<Item = &[Cell]> {
        let mut start = 0usize;
        self.records.iter().map(move |&n| {
            let end = (start + n as usize).min(self.cells.len());
            let cells = &self.cells[start.min(end)..end];
            start = end;
            cells
        })
    }

    /// A span's text ("" if the span is not valid, which a checked batch
    /// never has).
    pub fn text(&self, span: Span) -> &str {
        let bytes = self.text.get(span.offset as usize..span.offset as usize + span.len as usize).unwrap_or(&[]);
        std::str::from_utf8(bytes).unwrap_or("")
    }
}

/// The column form of a batch: what crosses the boundary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub keys: Vec<String>,
    pub text: Vec<u8>,
    pub cell_keys: Vec<u32>,
    pub cell_kinds: Vec<u8>,
    pub cell_values: Vec<u64>,
    pub records: Vec<u32>,
}

/// The kind bytes of `cell-kinds` (see `kind` in `wit/transform.wit`).
pub mod kind {
    use super::Value;

    pub const NULL: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const INTEGER: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const TEXT: u8 = 4;
    pub const OBJECT: u8 = 5;
    pub const ARRAY: u8 = 6;

    /// The kind byte of a value.
    #[inline]
    pub fn of(v: &Value) -> u8 {
        match v {
            Value::Null => NULL,
            Value::Boolean(_) => BOOLEAN,
            Value::Integer(_) => INTEGER,
            Value::Float(_) => FLOAT,
            Value::Text(_) => TEXT,
            Value::Object(_) => OBJECT,
            Value::Array(_) => ARRAY,
        }
    }
}

use kind::{ARRAY, BOOLEAN, FLOAT, INTEGER, NULL, OBJECT, TEXT};

impl Batch {
    /// Into columns, moving keys and text.
    pub fn into_columns(self) -> Columns {
        let (kinds, values) = encode_cells(&self.cells);
        let cell_keys = self.cells.iter().map(|c| c.key).collect();
        Columns {
            keys: self.keys,
            text: self.text,
            cell_keys,
            cell_kinds: kinds,
            cell_values: values,
            records: self.records,
        }
    }

    /// Into columns, copying.
    pub fn to_columns(&self) -> Columns {
        let (kinds, values) = encode_cells(&self.cells);
        Columns {
            keys: self.keys.clone(),
            text: self.text.clone(),
            cell_keys: self.cells.iter().map(|c| c.key).collect(),
            cell_kinds: kinds,
            cell_values: values,
            records: self.records.clone(),
        }
    }
}

fn encode_cells(cells: &[Cell]) -> (Vec<u8>, Vec<u64>) {
    let mut kinds = vec![0u8; cells.len()];
    let mut values = vec![0u64; cells.len()];
    for ((c, kind), value) in cells.iter().zip(&mut kinds).zip(&mut values) {
        (*kind, *value) = encode_value(&c.value);
    }
    (kinds, values)
}

/// A value's kind byte and `cell-values` entry.
#[inline]
pub fn encode_value(v: &Value) -> (u8, u64) {
    match *v {
        Value::Null => (NULL, 0),
        Value::Boolean(b) => (BOOLEAN, u64::from(b)),
        Value::Integer(i) => (INTEGER, i as u64),
        Value::Float(f) => (FLOAT, f.to_bits()),
        Value::Text(s) => (TEXT, (u64::from(s.offset) << 32) | u64::from(s.len)),
        Value::Object(n) => (OBJECT, u64::from(n)),
        Value::Array(n) => (ARRAY, u64::from(n)),
    }
}

/// How deep containers may nest in a record: as deep as the host's JSON
/// input allows (serde_json's limit), so every reader and writer of a
/// record may recurse without running out of stack.
pub const MAX_NESTING: usize = 128;

/// A borrowed view of columns, for checking and decoding in place.
#[derive(Clone, Copy)]
pub struct ColumnsRef<'a> {
    pub keys: &'a [String],
    pub text: &'a [u8],
    pub cell_keys: &'a [u32],
    pub cell_kinds: &'a [u8],
    pub cell_values: &'a [u64],
    pub records: &'a [u32],
}

impl Columns {
    pub fn as_ref(&self) -> ColumnsRef<'_> {
        ColumnsRef {
            keys: &self.keys,
            text: &self.text,
            cell_keys: &self.cell_keys,
            cell_kinds: &self.cell_kinds,
            cell_values: &self.cell_values,
            records: &self.records,
        }
    }

    /// Checks (see [`ColumnsRef::check`]) and decodes.
    pub fn into_batch(self) -> Result<Batch, String> {
        self.as_ref().check()?;
        Ok(self.into_batch_unchecked())
    }

    /// Decodes without checking: for columns checked already (or sent by
    /// the host, which checks). Malformed input cannot cause undefined
    /// behaviour, only wrong values: an unknown kind reads as null, and
    /// reading a bad span gives "".
    pub fn into_batch_unchecked(self) -> Batch {
        let cells = self.as_ref().decode_cells();
        Batch { keys: self.keys, text: self.text, cells, records: self.records }
    }
}

impl ColumnsRef<'_> {
    /// The cells, without checks.
    pub fn decode_cells(&self) -> Vec<Cell> {
        let n = self.cell_keys.len().min(self.cell_kinds.len()).min(self.cell_values.len());
        let (keys, kinds, values) = (&self.cell_keys[..n], &self.cell_kinds[..n], &self.cell_values[..n]);
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            cells.push(Cell { key: keys[i], value: value_of(kinds[i], values[i]) });
        }
        cells
    }

    /// Checks everything a reader relies on: equal column lengths, counts
    /// that add up, known kinds, keys in range, text spans inside the arena
    /// and valid UTF-8, containers inside their record. `Err` says what is
    /// malformed (never a value).
    pub fn check(&self) -> Result<(), String> {
        let n = self.cell_keys.len();
        if self.cell_kinds.len() != n || self.cell_values.len() != n {
            return Err(format!(
                "cell columns differ in length ({} keys, {} kinds, {} values)",
                n,
                self.cell_kinds.len(),
                self.cell_values.len()
            ));
        }
        let total: u64 = self.records.iter().map(|&r| u64::from(r)).sum();
        if total != n as u64 {
            return Err(format!("records count {total} cells but the batch has {n}"));
        }
        // A valid arena makes every span valid that starts and ends on a
        // character boundary; only if the arena is not valid as a whole is
        // each span checked on its own.
        let arena_ok = std::str::from_utf8(self.text).is_ok();
        let mut start = 0usize;
        for (r, &len) in self.records.iter().enumerate() {
            let end = start + len as usize;
            self.check_record(start, end, arena_ok).map_err(|e| format!("record {r}: {e}"))?;
            start = end;
        }
        Ok(())
    }

    fn check_record(&self, start: usize, end: usize, arena_ok: bool) -> Result<(), String> {
        // Open containers: (end cell, is array).
        let mut open: Vec<(usize, bool)> = Vec::new();
        for i in start..end {
            while open.last().is_some_and(|&(e, _)| e <= i) {
                open.pop();
            }
            let key = self.cell_keys[i];
            if key == NO_KEY {
                if !open.last().is_some_and(|&(_, array)| array) {
                    return Err("a field without a key outside an array".into());
                }
            } else if key as usize >= self.keys.len() {
                return Err(format!("key index {key} out of range ({} keys)", self.keys.len()));
            }
            let v = self.cell_values[i];
            match self.cell_kinds[i] {
                NULL | BOOLEAN | INTEGER | FLOAT => {}
                TEXT => self.check_span(v, arena_ok)?,
                OBJECT | ARRAY => {
                    let inner_end = (i as u64 + 1).saturating_add(v);
                    if inner_end > end as u64 || open.last().is_some_and(|&(e, _)| inner_end > e as u64) {
                        return Err("a container longer than its record".into());
                    }
                    open.push((inner_end as usize, self.cell_kinds[i] == ARRAY));
                    if open.len() > MAX_NESTING {
                        return Err(format!("containers nested deeper than {MAX_NESTING} levels"));
                    }
                }
                other => return Err(format!("unknown value kind {other}")),
            }
        }
        Ok(())
    }

    fn check_span(&self, v: u64, arena_ok: bool) -> Result<(), String> {
        let (from, to) = ((v >> 32) as usize, (v >> 32) as usize + (v as u32) as usize);
        let bytes = self.text.get(from..to).ok_or_else(|| format!("text span {from}..{to} outside the arena"))?;
        let boundary = |at: usize| self.text.get(at).is_none_or(|&b| (b as i8) >= -0x40);
        let valid = if arena_ok { boundary(from) && boundary(to) } else { std::str::from_utf8(bytes).is_ok() };
        if valid { Ok(()) } else { Err("text that is not UTF-8".into()) }
    }
}

/// The value of a kind byte and `cell-values` entry (an unknown kind reads
/// as null).
#[inline]
pub fn value_of(kind: u8, v: u64) -> Value {
    match kind {
        BOOLEAN => Value::Boolean(v != 0),
        INTEGER => Value::Integer(v as i64),
        FLOAT => Value::Float(f64::from_bits(v)),
        TEXT => Value::Text(Span { offset: (v >> 32) as u32, len: v as u32 }),
        OBJECT => Value::Object(v as u32),
        ARRAY => Value::Array(v as u32),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(cells: Vec<Cell>, records: Vec<u32>) -> Batch {
        Batch { keys: vec!["k".into()], text: b"abc".to_vec(), cells, records }
    }

    #[test]
    fn columns_round_trip() {
        let cells = vec![
            Cell { key: 0, value: Value::Array(3) },
            Cell { key: NO_KEY, value: Value::Text(Span { offset: 0, len: 3 }) },
            Cell { key: NO_KEY, value: Value::Float(-1.5) },
            Cell { key: NO_KEY, value: Value::Integer(-7) },
            Cell { key: 0, value: Value::Boolean(true) },
            Cell { key: 0, value: Value::Null },
        ];
        let b = batch(cells, vec![4, 2]);
        assert_eq!(b.to_columns().into_batch(), Ok(b.clone()));
        assert_eq!(b.clone().into_columns().into_batch(), Ok(b));
    }

    #[test]
    fn names_each_malformation() {
        let text = |offset, len| Cell { key: 0, value: Value::Text(Span { offset, len }) };
        let cases = [
            (batch(vec![text(0, 1)], vec![2]), "records count 2 cells but the batch has 1"),
            (batch(vec![text(2, 5)], vec![1]), "record 0: text span 2..7 outside the arena"),
            (batch(vec![Cell { key: 7, value: Value::Null }], vec![1]), "record 0: key index 7 out of range (1 keys)"),
            (
                batch(vec![Cell { key: NO_KEY, value: Value::Null }], vec![1]),
                "record 0: a field without a key outside an array",
            ),
            (
                batch(vec![Cell { key: 0, value: Value::Object(3) }], vec![1]),
                "record 0: a container longer than its record",
            ),
        ];
        for (b, want) in cases {
            assert_eq!(b.to_columns().into_batch(), Err(want.to_string()));
        }
        let mut c = batch(vec![Cell { key: 0, value: Value::Null }], vec![1]).to_columns();
        c.cell_kinds[0] = 9;
        assert_eq!(c.clone().into_batch(), Err("record 0: unknown value kind 9".into()));
        c.cell_values.pop();
        assert!(c.into_batch().unwrap_err().starts_with("cell columns differ in length"));
        let mut c = batch(vec![text(0, 2)], vec![1]).to_columns();
        c.text = vec![0xff, 0xfe, 0];
        assert_eq!(c.into_batch(), Err("record 0: text that is not UTF-8".into()));
        // A valid arena, but the span cuts a character in two.
        let mut c = batch(vec![text(0, 1)], vec![1]).to_columns();
        c.text = "é".as_bytes().to_vec();
        assert_eq!(c.into_batch(), Err("record 0: text that is not UTF-8".into()));
        // Garbage outside the spans is tolerated.
        let mut c = batch(vec![text(0, 2)], vec![1]).to_columns();
        c.text = vec![b'o', b'k', 0xff];
        assert!(c.into_batch().is_ok());
    }
}
