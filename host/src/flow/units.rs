//! A chunk of records through the chain and into the sink's units: the
//! chain runs on a blocking thread (plugins are synchronous), and each
//! output row, rejection and drop lands in the unit its record came from.
//! Shared by message batches and the chunks of an S3 object.
//!
//! Must not commit: the caller does.

use crate::batch::Batch;
use crate::mapping::{LoadTime, Mapping, RowOrigin};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{Lineage, Unit};
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
/// receive count of unit `u`'s message, `origin(u)` where its rows came
/// from.
pub fn fill_units<'o>(
    mapping: &Mapping,
    load: &LoadTime,
    out: &ChainOutput,
    record_unit: &[usize],
    units: &mut [Unit],
    received: impl Fn(usize) -> i32,
    origin: impl Fn(usize) -> RowOrigin<'o>,
) {
    let rows = mapping.rows(&out.batch);
    // Room for a row as long as the last one, taken once: a unit's rows
    // otherwise grow by doubling from 8 bytes, five reallocations a row.
    let mut room = 0;
    for (cells, &record) in out.batch.iter().zip(&out.origin) {
        let i = record_unit[record as usize];
        let u = &mut units[i];
        let before = u.rows.len();
        u.rows.reserve(room);
        rows.write_copy(&mut u.rows, &mut u.batch_id_at, cells, load, origin(i));
        room = u.rows.len() - before + 16;
        u.row_count += 1;
    }
    for r in &out.rejected {
        let i = record_unit[r.record as usize];
        units[i].dead.push(DeadLetter::transform(r.step, &r.plugin, &r.digest, &r.reason, received(i)));
    }
}

/// The lineage of what `chain` writes: its steps' plugin names, digests
/// and params digests, its params, and its pipeline file's revision.
pub fn lineage(chain: &TransformChain) -> Lineage {
    let mut lineage = Lineage { revision: Some(chain.revision().to_string()), ..Lineage::default() };
    let mut plugins = Vec::new();
    for (step, p) in chain.steps() {
        plugins.push(serde_json::json!({"name": p.name, "digest": p.digest, "params": step.params_digest}));
        if !lineage.params_digests.contains(&step.params_digest) {
            lineage.params_digests.push(step.params_digest.clone());
            lineage.params.push(step.params.clone());
        }
    }
    lineage.plugins = serde_json::Value::Array(plugins).to_string();
    lineage
}

/// The load time of rows `chain` writes now, with its pipeline file's
/// revision.
pub fn load_time(chain: &TransformChain) -> LoadTime {
    LoadTime { revision: Some(chain.revision().to_string()), ..LoadTime::now() }
}

/// The lineage of what `chain` writes: its plugins' names and digests as
/// JSON.
pub fn plugins_json(chain: &TransformChain) -> String {
    crate::transform::lineage(chain.plugins())
}
