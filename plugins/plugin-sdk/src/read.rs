//! Reading an input batch: records as runs of cells, containers skipped in
//! one step. Text is read through the [`OutputBuilder`], which owns the arena.

use crate::{Batch, Cell, OutputBuilder, members};

/// The cells of an input batch, split from its keys and text.
pub struct Input {
    cells: Vec<Cell>,
    records: Vec<u32>,
}

/// Splits a batch: the cells stay readable in [`Input`]; the keys and the text
/// arena move into the builder, so copied cells keep their key and span.
pub(crate) fn split(batch: Batch) -> (Input, OutputBuilder) {
    let builder = OutputBuilder::new(batch.keys, batch.text, batch.cells.len(), batch.records.len());
    (Input { cells: batch.cells, records: batch.records }, builder)
}

impl Input {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in order.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let mut start = 0usize;
        self.records.iter().map(move |&n| {
            let end = (start + n as usize).min(self.cells.len());
            let cells = &self.cells[start.min(end)..end];
            start = end;
            RecordRef { cells }
        })
    }
}

/// One record: its cells, top-level fields and their members.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    pub cells: &'a [Cell],
}

impl<'a> RecordRef<'a> {
    /// Top-level fields, each with the cells of its members (empty for
    /// scalars).
    pub fn fields(&self) -> impl Iterator<Item = (&'a Cell, &'a [Cell])> + 'a {
        let cells = self.cells;
        let mut i = 0;
        std::iter::from_fn(move || {
            let cell = cells.get(i)?;
            let end = (i + 1 + members(cell)).min(cells.len());
            let inner = &cells[i + 1..end];
            i = end;
            Some((cell, inner))
        })
    }

    /// The top-level field with `key`, if any.
    #[inline]
    pub fn get(&self, key: u32) -> Option<&'a Cell> {
        self.fields().find(|(c, _)| c.key == key).map(|(c, _)| c)
    }
}

impl OutputBuilder {
    /// Copies a field and its members unchanged.
    #[inline]
    pub fn copy_field(&mut self, cell: &Cell, members: &[Cell]) {
        self.push(*cell);
        self.push_all(members);
    }
}
