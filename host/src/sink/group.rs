//! Group commit: batches of messages that wait for the database together
//! commit in one transaction: one COPY of their rows, one lineage row, one
//! ledger look-up and write, one WAL flush. A small batch's commit is
//! mostly fixed cost (a transaction, the pipeline's ledger lock held
//! through the flush, round trips; see `bench/sink-sql/FINDINGS.md`), and
//! the ledger lock makes a pipeline's commits take turns anyway, so the
//! batches that queue behind a commit in work are better committed
//! together than one after the other.
//!
//! There is no timer: a batch that finds a committer free commits at once,
//! alone. Only batches that wait (both committers busy) are grouped, by
//! whichever of them gets a committer first; a group holds batches of one
//! lineage (the same chain version and pipeline revision), at most
//! `max_batches_per_commit`. Each batch is answered only after the
//! transaction holding its rows committed, with its own report, so its
//! messages are acknowledged after that commit and never before. A group
//! is one batch to the sink: a message delivered into two of its batches
//! counts once, a refused row is isolated among all of its units, and a
//! failure of the transaction is every batch's failure.
//!
//! Must not acknowledge anything: the callers do, after their answer.

use super::receipt::Ledger;
use super::{Lineage, PostgresSink, Report, SinkError, Unit};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// Transactions of one sink's message batches in work at once: while one
/// waits for its WAL flush, the next one's rows load.
const COMMITTERS: usize = 2;

/// The batches waiting for a commit, and the committers.
pub(crate) struct Group {
    waiting: Mutex<VecDeque<Waiting>>,
    committers: Semaphore,
    max_batches: usize,
}

/// A batch waiting for its commit, and where its answer goes.
struct Waiting {
    units: Vec<Unit>,
    lineage: Lineage,
    answer: oneshot::Sender<Result<Report, SinkError>>,
}

impl Group {
    pub(crate) fn new(max_batches: usize) -> Self {
        Group { waiting: Mutex::new(VecDeque::new()), committers: Semaphore::new(COMMITTERS), max_batches }
    }

    /// The batches of the next transaction: the one waiting longest, and
    /// those behind it of the same lineage, up to `max_batches`.
    fn take(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let Some(first) = waiting.pop_front() else { return Vec::new() };
        let mut taken = vec![first];
        let mut i = 0;
        while taken.len() < self.max_batches && i < waiting.len() {
            if waiting[i].lineage == taken[0].lineage {
                taken.extend(waiting.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    }
}

impl PostgresSink {
    /// Batches waiting for a committer now (for tests that order them).
    #[doc(hidden)]
    pub fn waiting_batches(&self) -> usize {
        self.group.waiting.lock().expect("not poisoned").len()
    }

    /// Commits message `units` under the message ledger (see the module
    /// docs of [`super`]), with the chain's `lineage`, in one transaction
    /// with other batches waiting at the same time (see [`self`]).
    /// Returns once the transaction holding them committed, or failed.
    /// Dropped while it commits others' batches, those are answered
    /// [`SinkError::Abandoned`]: nothing of them is acknowledged.
    pub async fn commit(&self, units: Vec<Unit>, lineage: &Lineage) -> Result<Report, SinkError> {
        let (answer, mut answered) = oneshot::channel();
        self.group.waiting.lock().expect("not poisoned").push_back(Waiting { units, lineage: lineage.clone(), answer });
        loop {
            let committer = tokio::select! {
                biased;
                answer = &mut answered => return answer.unwrap_or(Err(SinkError::Abandoned)),
                committer = self.group.committers.acquire() => committer.expect("never closed"),
            };
            let taken = self.group.take();
            if taken.is_empty() {
                // Another committer took this batch: its answer comes.
                drop(committer);
                return answered.await.unwrap_or(Err(SinkError::Abandoned));
            }
            self.commit_group(taken).await;
        }
    }

    /// Commits `taken` in one transaction and answers each batch.
    async fn commit_group(&self, taken: Vec<Waiting>) {
        let lineage = taken[0].lineage.clone();
        let owners = taken.len();
        let mut units = Vec::with_capacity(taken.iter().map(|w| w.units.len()).sum());
        let mut answers = Vec::with_capacity(owners);
        for (owner, w) in taken.into_iter().enumerate() {
            units.extend(w.units.into_iter().map(|u| Unit { owner, ..u }));
            answers.push(w.answer);
        }
        self.metrics.batches_per_commit.record(owners as f64);
        if owners > 1 {
            tracing::debug!(pipeline = %self.pipeline, batches = owners, "batches commit in one transaction");
        }
        match self.commit_measured(units, &lineage, &Ledger, owners).await {
            Ok(done) => {
                let mut results: Vec<Result<Report, SinkError>> = done.reports.into_iter().map(Ok).collect();
                // A unit refused even as a dead letter: its batch stays
                // unacknowledged (it comes back and adds only itself); the
                // others committed.
                for (owner, e) in done.unstorable {
                    if results[owner].is_ok() {
                        results[owner] = Err(e);
                    }
                }
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) if owners == 1 => {
                let _ = answers.pop().expect("one").send(Err(e));
            }
            Err(e) => {
                let e = Arc::new(e);
                for answer in answers {
                    let _ = answer.send(Err(SinkError::Shared(e.clone())));
                }
            }
        }
    }
}
