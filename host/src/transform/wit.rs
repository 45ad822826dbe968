//! Host bindings of `wit/transform.wit` (world `plugin`; the `fields`
//! export of world `projecting-plugin` is looked up by name, see
//! `step.rs`), and projection onto `plugin_sdk::projection`.
//!
//! Must not trust a plugin's output: every output is checked here before use.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});

pub use etl::transform::host::Algorithm;
pub use etl::transform::types::{Changed, Outcome, Projection};

use plugin_sdk::projection::{Declared, Places};
use plugin_sdk::record::{self, ColumnsRef};

/// The column form of a batch, for a call.
pub fn to_wit(b: &record::Batch) -> Batch {
    from_columns(b.to_columns())
}

impl Batch {
    pub fn columns(&self) -> ColumnsRef<'_> {
        ColumnsRef {
            keys: &self.keys,
            text: &self.text,
            cell_keys: &self.cell_keys,
            cell_kinds: &self.cell_kinds,
            cell_values: &self.cell_values,
            records: &self.records,
        }
    }

    /// Decodes a batch that was checked (every batch the host holds is).
    pub fn into_record(self) -> record::Batch {
        let cells = self.columns().decode_cells();
        record::Batch { keys: self.keys, text: self.text, cells, records: self.records }
    }

    /// Records `range` as a batch of their own (keys and text copied whole).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let start: usize = self.records[..range.start].iter().map(|&n| n as usize).sum();
        let len: usize = self.records[range.clone()].iter().map(|&n| n as usize).sum();
        let cells = start..start + len;
        Batch {
            keys: self.keys.clone(),
            text: self.text.clone(),
            cell_keys: self.cell_keys[cells.clone()].to_vec(),
            cell_kinds: self.cell_kinds[cells.clone()].to_vec(),
            cell_values: self.cell_values[cells].to_vec(),
            records: self.records[range].to_vec(),
        }
    }
}

/// `batch` as a step with projection `reads` sees it, and where its cells
/// came from.
pub fn project(batch: &Batch, declared: &Declared) -> (Batch, Places) {
    let (columns, places) = plugin_sdk::projection::project(batch.columns(), declared);
    (from_columns(columns), places)
}

/// A projected step's checked output, completed with the fields of its
/// input records that the step does not own (`plugin_sdk::projection`).
pub fn merge(
    input: &Batch,
    places: &Places,
    out: &Batch,
    outcomes: &[record::Outcome],
    declared: &Declared,
) -> Result<Batch, String> {
    plugin_sdk::projection::merge(input.columns(), places, out.columns(), outcomes, declared).map(from_columns)
}

fn from_columns(c: record::Columns) -> Batch {
    Batch {
        keys: c.keys,
        text: c.text,
        cell_keys: c.cell_keys,
        cell_kinds: c.cell_kinds,
        cell_values: c.cell_values,
        records: c.records,
    }
}

/// Checks a call's changed output for `inputs` input records; `Err` says
/// what is malformed.
pub fn check(out: Changed, inputs: usize) -> Result<(Batch, Vec<record::Outcome>), String> {
    if out.outcomes.len() != inputs {
        return Err(format!("{} outcomes for {inputs} input records", out.outcomes.len()));
    }
    let emitted: u64 = out.outcomes.iter().map(|o| if let Outcome::Emit(n) = o { u64::from(*n) } else { 0 }).sum();
    if emitted != out.batch.records.len() as u64 {
        return Err(format!("outcomes emit {emitted} records but the batch has {}", out.batch.records.len()));
    }
    out.batch.columns().check()?;
    let outcomes = out
        .outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Emit(n) => record::Outcome::Emit(n),
            Outcome::Drop => record::Outcome::Drop,
            Outcome::Reject(r) => record::Outcome::Reject(r),
        })
        .collect();
    Ok((out.batch, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, Value};

    #[test]
    fn slice_keeps_the_chosen_records() {
        let mut b = BatchBuilder::new();
        for i in 0..4 {
            let k = b.key("i");
            b.push(k, Value::Integer(i));
            b.end_record();
        }
        let s = to_wit(&b.finish()).slice(1..3).into_record();
        assert_eq!(s.records, vec![1, 1]);
        assert!(matches!(s.cells[0].value, Value::Integer(1)));
        assert!(matches!(s.cells[1].value, Value::Integer(2)));
    }
}
