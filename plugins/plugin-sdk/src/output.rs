//! Building a transform's output in column form: records as cells over the
//! text arena taken from the input, and one outcome per input record.

use crate::read::Cells;
use crate::record::{Cell, Columns, Outcome, Span, Value, encode_value};

/// Builds the output batch. It starts with the input's keys and text, so a
/// copied cell needs no rewriting; new text is appended to the arena.
pub struct OutputBuilder {
    keys: Vec<String>,
    text: Vec<u8>,
    cell_keys: Vec<u32>,
    cell_kinds: Vec<u8>,
    cell_values: Vec<u64>,
    records: Vec<u32>,
    outcomes: Vec<Outcome>,
    /// Cell count when the open record started.
    record_start: usize,
    /// Records closed since the last outcome, and the cell count before them.
    emitted: u32,
    emitted_cells: usize,
}

impl OutputBuilder {
    pub(crate) fn new(keys: Vec<String>, text: Vec<u8>, cells: usize, records: usize) -> Self {
        OutputBuilder {
            keys,
            text,
            cell_keys: Vec::with_capacity(cells + records),
            cell_kinds: Vec::with_capacity(cells + records),
            cell_values: Vec::with_capacity(cells + records),
            records: Vec::with_capacity(records),
            outcomes: Vec::with_capacity(records),
            record_start: 0,
            emitted: 0,
            emitted_cells: 0,
        }
    }

    /// The text of a span of the arena (input spans are valid here too).
    #[inline]
    pub fn text(&self, span: Span) -> &str {
        std::str::from_utf8(self.bytes(span)).expect("the host sends UTF-8 text")
    }

    /// The bytes of a span of the arena.
    #[inline]
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.text[span.offset as usize..span.offset as usize + span.len as usize]
    }

    /// The name of a key.
    pub fn key_name(&self, key: u32) -> &str {
        &self.keys[key as usize]
    }

    /// The index of `name` among the batch's keys, added if new. Look keys up
    /// once per batch, not once per record.
    pub fn key(&mut self, name: &str) -> u32 {
        if let Some(i) = self.find_key(name) {
            return i;
        }
        self.keys.push(name.to_string());
        (self.keys.len() - 1) as u32
    }

    /// The index of `name` if the batch has it.
    pub fn find_key(&self, name: &str) -> Option<u32> {
        self.keys.iter().position(|k| k == name).map(|i| i as u32)
    }

    /// Appends a cell to the open record.
    #[inline]
    pub fn push(&mut self, cell: Cell) {
        let (kind, value) = encode_value(&cell.value);
        self.cell_keys.push(cell.key);
        self.cell_kinds.push(kind);
        self.cell_values.push(value);
    }

    /// Appends a run of cells unchanged.
    #[inline]
    pub fn copy(&mut self, cells: Cells<'_>) {
        // Short runs (most fields are one cell) element by element: in a
        // component, a bulk copy is a call out of the guest.
        if cells.len() <= 4 {
            for i in 0..cells.len() {
                self.cell_keys.push(cells.keys[i]);
                self.cell_kinds.push(cells.kinds[i]);
                self.cell_values.push(cells.values[i]);
            }
        } else {
            self.cell_keys.extend_from_slice(cells.keys);
            self.cell_kinds.extend_from_slice(cells.kinds);
            self.cell_values.extend_from_slice(cells.values);
        }
    }

    /// Appends a text field, its bytes added to the arena.
    #[inline]
    pub fn push_text(&mut self, key: u32, text: &str) {
        let span = self.add_text(text);
        self.push(Cell { key, value: Value::Text(span) });
    }

    /// Appends a text field from bytes that are UTF-8 (such as ASCII hex),
    /// without checking them here; the host checks every batch and refuses
    /// one with invalid text.
    #[inline]
    pub fn push_utf8(&mut self, key: u32, bytes: &[u8]) {
        let offset = self.text.len() as u32;
        self.text.extend_from_slice(bytes);
        let span = Span { offset, len: bytes.len() as u32 };
        self.push(Cell { key, value: Value::Text(span) });
    }

    /// Adds text to the arena and returns its span.
    #[inline]
    pub fn add_text(&mut self, text: &str) -> Span {
        let offset = self.text.len() as u32;
        self.text.extend_from_slice(text.as_bytes());
        Span { offset, len: text.len() as u32 }
    }

    /// Closes the open record as one output record.
    pub fn end_record(&mut self) {
        self.records.push((self.cell_keys.len() - self.record_start) as u32);
        self.record_start = self.cell_keys.len();
        self.emitted += 1;
    }

    /// Closes the open record and records that the current input record
    /// emitted it (and any records closed before it).
    pub fn emit(&mut self) {
        self.end_record();
        self.outcomes.push(Outcome::Emit(self.emitted));
        self.settle();
    }

    /// The current input record is filtered out deliberately.
    pub fn drop_record(&mut self) {
        self.discard();
        self.outcomes.push(Outcome::Drop);
    }

    /// The current input record is refused; `reason` names fields and rules,
    /// never values.
    pub fn reject(&mut self, reason: impl Into<String>) {
        self.discard();
        self.outcomes.push(Outcome::Reject(reason.into()));
    }

    /// Finishes the batch.
    pub fn finish(mut self) -> (Columns, Vec<Outcome>) {
        self.discard();
        let columns = Columns {
            keys: self.keys,
            text: self.text,
            cell_keys: self.cell_keys,
            cell_kinds: self.cell_kinds,
            cell_values: self.cell_values,
            records: self.records,
        };
        (columns, self.outcomes)
    }

    fn settle(&mut self) {
        self.emitted = 0;
        self.emitted_cells = self.cell_keys.len();
    }

    /// Forgets cells and records since the last outcome.
    fn discard(&mut self) {
        self.cell_keys.truncate(self.emitted_cells);
        self.cell_kinds.truncate(self.emitted_cells);
        self.cell_values.truncate(self.emitted_cells);
        self.records.truncate(self.records.len() - self.emitted as usize);
        self.record_start = self.cell_keys.len();
        self.settle();
    }
}
