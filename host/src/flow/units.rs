//! A chunk of records through the chain and into the sink's units: the
//! chain runs on a blocking thread (plugins are synchronous), and each
//! output row, rejection and drop lands in the unit its record came from.
//! Shared by message batches and the chunks of an S3 object.
//!
//! Must not commit: the caller does.

use crate::batch::Batch;
use crate::mapping::{LoadTime, Mapping};
use crate::sink::Unit;
use crate::sink::dead_letter::DeadLetter;
use crate::transform::{ChainOutput, StepError, TransformChain};

/// Runs `batch` through `chain` on a blocking thread; gives the chain back.
pub async fn run_chain(chain: TransformChain, batch: Batch) -> (TransformChain, Result<ChainOutput, StepError>) {
    let ran = run_chain_kept(chain, batch).await;
    (ran.chain, ran.out)
}

/// A batch through the chain, kept for the shadow with the CPU time the
/// chain took.
pub struct Ran {
    pub chain: TransformChain,
    pub batch: Batch,
    pub out: Result<ChainOutput, StepError>,
    pub cpu: std::time::Duration,
}

/// [`run_chain`] that gives the batch back too, and the CPU time taken.
pub async fn run_chain_kept(chain: TransformChain, batch: Batch) -> Ran {
    tokio::task::spawn_blocking(move || {
        let mut chain = chain;
        let start = crate::shadow::thread_cpu();
        let out = chain.run(&batch);
        let cpu = crate::shadow::thread_cpu().saturating_sub(start);
        Ran { chain, batch, out, cpu }
    })
    .await
    .expect("the chain does not panic")
}

/// Writes a chain's output into the units its records came from:
/// `record_unit[r]` is the unit of input record `r`; `received(u)` the
/// receive count of unit `u`'s message.
pub fn fill_units(
    mapping: &Mapping,
    load: &LoadTime,
    out: &ChainOutput,
    record_unit: &[usize],
    units: &mut [Unit],
    received: impl Fn(usize) -> i32,
) {
    let rows = mapping.rows(&out.batch);
    for (cells, &record) in out.batch.iter().zip(&out.origin) {
        let u = &mut units[record_unit[record as usize]];
        rows.write_copy(&mut u.rows, cells, load);
        u.row_count += 1;
    }
    for r in &out.rejected {
        let i = record_unit[r.record as usize];
        units[i].dead.push(DeadLetter::transform(r.step, &r.plugin, &r.digest, &r.reason, received(i)));
    }
}

/// The lineage of what `chain` writes: its plugins' names and digests as
/// JSON.
pub fn plugins_json(chain: &TransformChain) -> String {
    crate::transform::lineage(chain.plugins())
}
