//! Building a transform's output: records as cells over the text arena taken
//! from the input, and one outcome per input record.

use crate::{Batch, Cell, Outcome, Output, Span, Value};

/// Builds the output batch. It starts with the input's keys and text, so a
/// copied cell needs no rewriting; new text is appended to the arena.
pub struct OutputBuilder {
    keys: Vec<String>,
    text: Vec<u8>,
    cells: Vec<Cell>,
    records: Vec<u32>,
    outcomes: Vec<Outcome>,
    /// `cells.len()` when the open record started.
    record_start: usize,
    /// Records closed since the last outcome, and where they started.
    emitted: u32,
    emitted_cells: usize,
}

impl OutputBuilder {
    pub(crate) fn new(keys: Vec<String>, text: Vec<u8>, cells: usize, records: usize) -> Self {
        OutputBuilder {
            keys,
            text,
            cells: Vec::with_capacity(cells + records),
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
        if let Some(i) = self.keys.iter().position(|k| k == name) {
            return i as u32;
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
        self.cells.push(cell);
    }

    /// Appends cells to the open record.
    #[inline]
    pub fn push_all(&mut self, cells: &[Cell]) {
        self.cells.extend_from_slice(cells);
    }

    /// Appends a text field, its bytes added to the arena.
    #[inline]
    pub fn push_text(&mut self, key: u32, text: &str) {
        let span = self.add_text(text.as_bytes());
        self.push(Cell { key, value: Value::Text(span) });
    }

    /// Adds UTF-8 bytes to the arena and returns their span.
    pub fn add_text(&mut self, bytes: &[u8]) -> Span {
        let offset = self.text.len() as u32;
        self.text.extend_from_slice(bytes);
        Span { offset, len: bytes.len() as u32 }
    }

    /// Closes the open record as one output record.
    pub fn end_record(&mut self) {
        self.records.push((self.cells.len() - self.record_start) as u32);
        self.record_start = self.cells.len();
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
    pub fn finish(mut self) -> Output {
        self.discard();
        Output {
            batch: Batch { keys: self.keys, text: self.text, cells: self.cells, records: self.records },
            outcomes: self.outcomes,
        }
    }

    fn settle(&mut self) {
        self.emitted = 0;
        self.emitted_cells = self.cells.len();
    }

    /// Forgets cells and records since the last outcome.
    fn discard(&mut self) {
        self.cells.truncate(self.emitted_cells);
        self.records.truncate(self.records.len() - self.emitted as usize);
        self.record_start = self.cells.len();
        self.settle();
    }
}
