//! Shadow runs: a candidate version of a pipeline's chain (another plugin,
//! other params or grants for one or more steps, each written as
//! `shadow = { ... }` in its `[[transforms]]`) runs on the same batches as
//! production, and what it would change is counted with [`crate::diff`]:
//! kept in PostgreSQL (`etl.shadows`, [`store`]), shown on the panel,
//! exported as metrics, printed by `host shadow report`. Decisions
//! (promote, discard) are read from `etl.shadow_decisions`, wherever they
//! were made (the CLI, the admin endpoint, `[shadow] promote_when`); a
//! promotion goes through the watcher's checked path (`crate::reload`).
//!
//! Production never waits for the candidate: a batch is offered on a
//! bounded queue ([`Tap::offer`], never blocking) and skipped when the
//! queue is full. The candidate runs on its own instances, with
//! production's sandbox limits, on a thread of its own at a lower CPU
//! priority (`run.rs`); its traps, timeouts and slowness cost only its
//! own comparisons.
//!
//! Must not write the pipeline's table, acknowledge anything, or keep
//! values: a summary holds counts, column names and labels (message ids,
//! object lines; key values only with `[logging] record_values`).

mod run;
pub mod store;
mod task;

pub use task::{Setup, start};

use crate::batch::Batch;
use crate::transform::ChainOutput;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A batch production ran, offered to the candidate.
pub struct Offer {
    /// Production's plugins (as lineage JSON): the candidate compares only
    /// batches of the production version it shadows.
    pub lineage: String,
    pub batch: Batch,
    pub production: ChainOutput,
    pub production_cpu: Duration,
    /// What names each input record in a sample (a message id, an
    /// object's line), never its values.
    pub labels: Vec<String>,
}

/// Production's side of a shadow: where batches are offered.
pub struct Tap {
    tx: std::sync::mpsc::SyncSender<Offer>,
    shared: Arc<Shared>,
}

impl Tap {
    /// Whether a candidate runs now: only then are batches offered.
    pub fn active(&self) -> bool {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Hands `offer` to the candidate, or drops it (counted as skipped)
    /// when the candidate is behind. Never waits.
    pub fn offer(&self, offer: Offer) {
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = self.tx.try_send(offer) {
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a
    // constant Linux and the BSDs know.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What production, the candidate's thread and the task share.
#[derive(Default)]
struct Shared {
    /// A candidate runs: production offers batches.
    active: AtomicBool,
    /// Offers dropped because the queue was full, since the task looked.
    skipped: AtomicU64,
    /// The run stopped: the thread ends.
    stopped: AtomicBool,
    /// The candidate the thread runs, set by the task.
    wanted: Mutex<Option<Arc<run::Wanted>>>,
    /// What the thread measured, by candidate fingerprint, since the task
    /// looked.
    measured: Mutex<Vec<(String, store::Delta)>>,
    /// Why the candidate could not run, since the task looked.
    error: Mutex<Option<String>>,
}
