//! Host bindings of `wit/transform.wit` (world `plugin`).

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});

pub use etl::transform::host::Algorithm;
pub use etl::transform::types::Outcome;

use plugin_sdk::record;

/// The column form of a batch, for a call.
pub fn to_wit(b: &record::Batch) -> Batch {
    let c = b.to_columns();
    Batch {
        keys: c.keys,
        text: c.text,
        cell_keys: c.cell_keys,
        cell_kinds: c.cell_kinds,
        cell_values: c.cell_values,
        records: c.records,
    }
}

/// Checks and decodes a call's output for `inputs` input records. `Err`
/// says what is malformed.
pub fn from_wit(out: Output, inputs: usize) -> Result<record::Output, String> {
    if out.outcomes.len() != inputs {
        return Err(format!("{} outcomes for {inputs} input records", out.outcomes.len()));
    }
    let emitted: u64 = out.outcomes.iter().map(|o| if let Outcome::Emit(n) = o { u64::from(*n) } else { 0 }).sum();
    if emitted != out.batch.records.len() as u64 {
        return Err(format!("outcomes emit {emitted} records but the batch has {}", out.batch.records.len()));
    }
    let b = out.batch;
    let columns = record::Columns {
        keys: b.keys,
        text: b.text,
        cell_keys: b.cell_keys,
        cell_kinds: b.cell_kinds,
        cell_values: b.cell_values,
        records: b.records,
    };
    let outcomes = out
        .outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Emit(n) => record::Outcome::Emit(n),
            Outcome::Drop => record::Outcome::Drop,
            Outcome::Reject(r) => record::Outcome::Reject(r),
        })
        .collect();
    Ok(record::Output { batch: columns.into_batch()?, outcomes })
}
