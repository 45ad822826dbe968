//! The candidate's thread: takes offered batches, runs them through the
//! candidate chain (its own instances, production's limits), compares the
//! outputs and leaves what it measured for the task. One thread per
//! pipeline with a shadow, at a lower CPU priority than the host's others
//! (`nice` 10 on Linux, where niceness is per thread), so that production
//! gets the CPU first on a busy machine.
//!
//! Must not talk to the database or block production: it only reads its
//! queue.

use super::{Offer, Shared, store::Delta, thread_cpu};
use crate::config::{MergeMode, Pipeline};
use crate::diff::{self, Match};
use crate::mapping::Mapping;
use crate::transform::{Engine, Loaded, TransformChain};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// The candidate to run, as the task set it.
pub struct Wanted {
    pub fingerprint: String,
    /// Production's plugins (lineage JSON) it is compared with.
    pub lineage: String,
    /// The pipeline with the candidate promoted.
    pub pipeline: Pipeline,
    pub loaded: Loaded,
}

/// A candidate chain built for one fingerprint.
struct Built {
    fingerprint: String,
    chain: TransformChain,
    mapping: Mapping,
    key: Option<Vec<String>>,
}

/// Runs offers until the run stops or production is gone.
pub fn serve(engine: Arc<Engine>, shared: Arc<Shared>, rx: Receiver<Offer>) {
    // SAFETY: setpriority on the calling thread (who = 0) only.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    let mut built: Option<Built> = None;
    loop {
        let offer = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(o) => o,
            Err(RecvTimeoutError::Timeout) if !shared.stopped.load(Ordering::Relaxed) => continue,
            Err(_) => return,
        };
        let Some(wanted) = shared.wanted.lock().expect("not poisoned").clone() else { continue };
        let mut delta = Delta::default();
        if offer.lineage != wanted.lineage {
            // A batch of another production version (a swap in between).
            delta.skipped = 1;
        } else {
            if built.as_ref().is_none_or(|b| b.fingerprint != wanted.fingerprint) {
                built = match build(&engine, &wanted) {
                    Ok(b) => Some(b),
                    Err(why) => {
                        *shared.error.lock().expect("not poisoned") = Some(why);
                        None
                    }
                };
            }
            match built.as_mut() {
                Some(b) => {
                    if !compare(b, &offer, &mut delta, wanted.pipeline.record_values_in_logs) {
                        // Its instances could not be renewed: built again next time.
                        *shared.error.lock().expect("not poisoned") =
                            Some("the candidate's plugins could not be instantiated again after a failure".into());
                        built = None;
                    }
                }
                None => delta.skipped = 1,
            }
        }
        shared.measured.lock().expect("not poisoned").push((wanted.fingerprint.clone(), delta));
    }
}

fn build(engine: &Arc<Engine>, wanted: &Wanted) -> Result<Built, String> {
    let chain = TransformChain::instantiate(engine, &wanted.pipeline, &wanted.loaded).map_err(|e| e.to_string())?;
    let sink = wanted.pipeline.sink.as_ref().ok_or("the pipeline has no [sink]")?;
    let key = match &sink.mode {
        MergeMode::Upsert { key } | MergeMode::DeleteInsert { key } => Some(key.clone()),
        MergeMode::Append => None,
    };
    Ok(Built { fingerprint: wanted.fingerprint.clone(), chain, mapping: Mapping::new(sink), key })
}

/// Runs the offer through the candidate and compares; `false` if the
/// chain failed as a whole (its instances are gone).
fn compare(b: &mut Built, offer: &Offer, delta: &mut Delta, show_keys: bool) -> bool {
    let failed_before = b.chain.failed_batches();
    let start = thread_cpu();
    let out = b.chain.run(&offer.batch);
    delta.candidate_cpu_s = thread_cpu().saturating_sub(start).as_secs_f64();
    delta.production_cpu_s = offer.production_cpu.as_secs_f64();
    delta.batches = 1;
    let out = match out {
        Ok(out) => out,
        Err(_) => {
            delta.trapped = 1;
            return false;
        }
    };
    if b.chain.failed_batches() > failed_before {
        delta.trapped = 1;
    }
    let by = match &b.key {
        Some(k) => Match::Key(k),
        None => Match::Position,
    };
    let label = |i: u32| offer.labels.get(i as usize).cloned().unwrap_or_else(|| format!("record {i}"));
    let records = offer.batch.records.len();
    delta.summary = diff::compare(&b.mapping, &by, records, &offer.production, &out, &label, show_keys);
    true
}
