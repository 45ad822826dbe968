//! Batches on the host side: building them record by record and joining
//! them. The record model itself (and its checked column form, which crosses
//! the WIT boundary) is `plugin_sdk::record`, shared with plugins.
//!
//! Must not decode input or talk to plugins.

pub mod json;

pub use plugin_sdk::record::{Batch, Cell, NO_KEY, Span, Value, fields, members};

/// Builds a batch record by record, interning keys.
pub struct BatchBuilder {
    batch: Batch,
    /// Keys by name. aHash (randomly keyed, so names from the input
    /// cannot be chosen to collide): every field of every record is looked
    /// up here, and SipHash was 5% of a JSON-lines load's CPU.
    index: ahash::AHashMap<Box<str>, u32>,
    /// For each key, the key asked for after it last time ([`NO_KEY`]:
    /// none yet), and the key asked for last ([`NO_KEY`] before any).
    follows: Vec<u32>,
    last: u32,
    /// Where the open record started, in cells and in text.
    record_cells: usize,
    record_text: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            batch: Batch::default(),
            index: Default::default(),
            follows: Vec::new(),
            last: NO_KEY,
            record_cells: 0,
            record_text: 0,
        }
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
        // Records of one shape ask for their keys in the same order: the
        // key that followed the last one asked for last time is checked
        // first, with one comparison instead of a hash.
        let guess = self.follows.get(self.last as usize).copied().unwrap_or(NO_KEY);
        if guess != NO_KEY && self.batch.keys[guess as usize] == name {
            self.last = guess;
            return guess;
        }
        let k = match self.index.get(name) {
            Some(&k) => k,
            None => {
                let k = self.batch.keys.len() as u32;
                self.batch.keys.push(name.to_string());
                self.index.insert(name.into(), k);
                self.follows.push(NO_KEY);
                k
            }
        };
        if let Some(f) = self.follows.get_mut(self.last as usize) {
            *f = k;
        }
        self.last = k;
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

    /// The cells of the open record so far.
    pub fn open_record(&self) -> &[Cell] {
        &self.batch.cells[self.record_cells..]
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
                Value::Text(s) => self.push_text(key, src.text(s)),
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
        b.append_record(&src, src.iter().next().unwrap());
        let out = b.finish();
        assert_eq!(out.keys, vec!["other".to_string(), "x".to_string()]);
        let second = out.iter().nth(1).unwrap();
        assert_eq!(second[0].key, 1);
        match second[0].value {
            Value::Text(s) => assert_eq!(out.text(s), "hello"),
            _ => panic!("text expected"),
        }
    }
}
