//! Reading an input batch in its column form, without decoding it: records
//! and containers are runs of cells ([`Cells`]), a cell is decoded only when
//! looked at, and unchanged fields are copied as slices.

use crate::OutputBuilder;
use crate::record::{Cell, Columns, kind, value_of};

/// The cells of an input batch, split from its keys and text.
pub struct Input {
    keys: Vec<u32>,
    kinds: Vec<u8>,
    values: Vec<u64>,
    records: Vec<u32>,
}

/// Splits a batch: the cells stay readable in [`Input`]; the keys and the text
/// arena move into the builder, so copied cells keep their key and span.
pub(crate) fn split(c: Columns) -> (Input, OutputBuilder) {
    let builder = OutputBuilder::new(c.keys, c.text, c.cell_keys.len(), c.records.len());
    let input = Input { keys: c.cell_keys, kinds: c.cell_kinds, values: c.cell_values, records: c.records };
    (input, builder)
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
    pub fn records(&self) -> impl Iterator<Item = Cells<'_>> {
        let n = self.keys.len().min(self.kinds.len()).min(self.values.len());
        let all = Cells { keys: &self.keys[..n], kinds: &self.kinds[..n], values: &self.values[..n] };
        let mut start = 0usize;
        self.records.iter().map(move |&len| {
            let end = (start + len as usize).min(n);
            let cells = all.range(start.min(end), end);
            start = end;
            cells
        })
    }
}

/// A run of cells: a record, or the members of a container.
#[derive(Clone, Copy, Default)]
pub struct Cells<'a> {
    pub(crate) keys: &'a [u32],
    pub(crate) kinds: &'a [u8],
    pub(crate) values: &'a [u64],
}

/// One top-level field of a run: its cell, its members (empty for scalars)
/// and the whole field (cell and members), for copying.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    pub cell: Cell,
    pub members: Cells<'a>,
    pub whole: Cells<'a>,
}

impl<'a> Cells<'a> {
    #[inline]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The kind byte of each cell (see [`kind`]).
    #[inline]
    pub fn kinds(&self) -> &'a [u8] {
        self.kinds
    }

    /// Cell `i`, decoded.
    #[inline]
    pub fn cell(&self, i: usize) -> Cell {
        Cell { key: self.keys[i], value: value_of(self.kinds[i], self.values[i]) }
    }

    /// Every cell in order, nested ones included.
    pub fn iter(&self) -> impl Iterator<Item = Cell> + 'a {
        let c = *self;
        (0..c.len()).map(move |i| c.cell(i))
    }

    #[inline]
    fn range(&self, from: usize, to: usize) -> Cells<'a> {
        Cells { keys: &self.keys[from..to], kinds: &self.kinds[from..to], values: &self.values[from..to] }
    }

    /// How many cells follow cell `i` as its members.
    #[inline]
    fn members_of(&self, i: usize) -> usize {
        match self.kinds[i] {
            kind::OBJECT | kind::ARRAY => self.values[i] as usize,
            _ => 0,
        }
    }

    /// Top-level fields in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let c = *self;
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= c.len() {
                return None;
            }
            let end = (i + 1 + c.members_of(i)).min(c.len());
            let field = Field { cell: c.cell(i), members: c.range(i + 1, end), whole: c.range(i, end) };
            i = end;
            Some(field)
        })
    }

    /// The top-level field with `key`, if any.
    #[inline]
    pub fn get(&self, key: u32) -> Option<Cell> {
        let mut i = 0;
        while i < self.len() {
            if self.keys[i] == key {
                return Some(self.cell(i));
            }
            i += 1 + self.members_of(i);
        }
        None
    }
}

impl OutputBuilder {
    /// Copies a field (its cell and members) unchanged.
    #[inline]
    pub fn copy_field(&mut self, field: &Field<'_>) {
        self.copy(field.whole);
    }
}
