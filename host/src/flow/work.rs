//! The pool of workers of a run. Each owns a chain (its plugin instances),
//! takes the next unit of work from one shared channel, moves to a new
//! plugin version first if one was published, and gives the unit its chain
//! for the time it needs it. What is left of a unit then (a batch's commit
//! and acknowledgement) runs on as a task of its own while the worker
//! takes the next unit, up to `depth` such tasks a worker: the chain runs
//! while the database commits. Units are counted in work from dispatch to
//! their end, the rest included.
//!
//! Must not know what a unit does: that is its [`Job`]'s.

use super::{Flow, take_new_version};
use crate::reload::Generation;
use crate::transform::TransformChain;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, watch};

/// What is left of a unit once it no longer needs its chain.
pub type Rest = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A unit of work: a batch of messages, a notification, an object.
pub trait Job: Send + Sized + 'static {
    /// Runs the unit to its acknowledgement on `chain`; gives the chain
    /// back (a chain whose instance trapped comes back renewed).
    fn run(self, chain: TransformChain) -> impl Future<Output = TransformChain> + Send;

    /// Runs the unit as long as it needs `chain`, and gives the chain back
    /// with what is left of the unit, if anything: the worker runs that
    /// beside its next units. By default all of it, on the chain.
    fn run_split(self, chain: TransformChain) -> impl Future<Output = (TransformChain, Option<Rest>)> + Send {
        async move { (self.run(chain).await, None) }
    }
}

/// A unit's rest, run as a task of its own; aborted if dropped (the worker
/// that waits for it was aborted: see [`Workers::finish`]).
struct Running(tokio::task::JoinHandle<()>);

impl Future for Running {
    type Output = Result<(), tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The workers, and the channel they take units from.
pub struct Workers<J> {
    dispatch: Dispatch<J>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the workers to drop what they still have in work (after the
    /// grace).
    cancel: watch::Sender<bool>,
}

/// Hands units to the workers; clone-cheap. Holding one keeps the workers
/// waiting for more.
pub struct Dispatch<J> {
    flow: Arc<Flow>,
    /// Of capacity 1: a unit waits here only while every worker is busy.
    tx: mpsc::Sender<J>,
}

impl<J> Clone for Dispatch<J> {
    fn clone(&self) -> Self {
        Dispatch { flow: self.flow.clone(), tx: self.tx.clone() }
    }
}

impl<J: Job> Dispatch<J> {
    /// Waits for room for one unit, or for `until` (a stop) to resolve
    /// first, or the workers to be gone: then `None`.
    pub async fn room(&self, until: impl Future<Output = ()>) -> Option<Room<'_, J>> {
        // Counted from here: `--once` must not see a unit waiting for room
        // as nothing in work.
        self.flow.activity.begin();
        let permit = tokio::select! {
            permit = self.tx.reserve() => permit.ok(),
            () = until => None,
        };
        if permit.is_none() {
            self.flow.activity.end();
        }
        Some(Room { permit: Some(permit?), flow: &self.flow })
    }

    /// Waits for room and hands `job` over; gives it back if the workers
    /// are gone.
    pub async fn send(&self, job: J) -> Result<(), J> {
        match self.room(std::future::pending()).await {
            Some(room) => {
                room.send(job);
                Ok(())
            }
            None => Err(job),
        }
    }
}

/// Room for one unit with the workers (given back if dropped unused).
pub struct Room<'a, J> {
    permit: Option<mpsc::Permit<'a, J>>,
    flow: &'a Arc<Flow>,
}

impl<J> Room<'_, J> {
    pub fn send(mut self, job: J) {
        self.permit.take().expect("sent once").send(job);
    }
}

impl<J> Drop for Room<'_, J> {
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.flow.activity.end();
        }
    }
}

impl<J: Job> Workers<J> {
    /// A worker per chain. Each lets the rests of as many units run beside
    /// its next as the sink may commit batches together, its share of them
    /// (at least one: the chain of one batch runs while another commits).
    pub fn start(
        flow: &Arc<Flow>,
        chains: Vec<TransformChain>,
        generations: &watch::Receiver<Arc<Generation>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<J>(1);
        let rx = Arc::new(Mutex::new(rx));
        let group = flow.pipeline.sink.as_ref().map_or(1, |s| s.max_batches_per_commit);
        let depth = group.div_ceil(chains.len().max(1)).max(1);
        let (cancel, cancelled) = watch::channel(false);
        let handles = chains
            .into_iter()
            .map(|chain| {
                let (flow, generations, rx, cancel) =
                    (flow.clone(), generations.clone(), rx.clone(), cancelled.clone());
                tokio::spawn(worker(flow, chain, generations, rx, depth, cancel))
            })
            .collect();
        Workers { dispatch: Dispatch { flow: flow.clone(), tx }, handles, cancel }
    }

    pub fn dispatch(&self) -> &Dispatch<J> {
        &self.dispatch
    }

    /// Lets the workers finish what was dispatched, then waits for them;
    /// once the run stops, for the flow's `grace` at most: a unit still in work
    /// then (a commit waiting on a lock, a database that stalls) is
    /// abandoned. Nothing of it was acknowledged, so it comes back: when
    /// this returns, every hold it kept was dropped, so the run's last
    /// release of orphans makes its messages visible at once.
    pub async fn finish(self) {
        let flow = self.dispatch.flow.clone();
        drop(self.dispatch);
        let aborts: Vec<_> = self.handles.iter().map(|h| h.abort_handle()).collect();
        // One future for all: a handle is never polled again once it ended.
        let mut all = std::pin::pin!(futures_util::future::join_all(self.handles));
        tokio::select! {
            _ = &mut all => return,
            () = flow.grace_over() => {}
        }
        tracing::warn!(pipeline = %flow.pipeline.name, grace_s = flow.grace.as_secs_f64(), "units still in work after the stop are abandoned; nothing of theirs was acknowledged, they come back");
        self.cancel.send_replace(true);
        // Each worker drops its units and waits for their tasks to end; one
        // that does not within a second is aborted.
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut all).await.is_err() {
            for a in &aborts {
                a.abort();
            }
            let _ = all.await;
        }
    }
}

/// The rests of a worker's units, each a task of its own.
type Rests = futures_util::stream::FuturesUnordered<Running>;

/// A worker: its units until there are no more, or until `cancel` turns
/// true (or `Workers` is dropped unfinished). Then the unit in work is
/// dropped and its rests' tasks are aborted and waited for: a task's end
/// drops what it held (its messages' holds), which an abort alone does not
/// wait for.
async fn worker<J: Job>(
    flow: Arc<Flow>,
    chain: TransformChain,
    generations: watch::Receiver<Arc<Generation>>,
    rx: Arc<Mutex<mpsc::Receiver<J>>>,
    depth: usize,
    mut cancel: watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    let mut rests = Rests::new();
    let cancelled = tokio::select! {
        () = run_units(flow.clone(), chain, generations, rx, depth, &mut rests) => false,
        _ = cancel.wait_for(|c| *c) => true,
    };
    if cancelled {
        for rest in rests.iter() {
            rest.0.abort();
        }
        while let Some(ended) = rests.next().await {
            rest_ended(&flow, ended);
        }
    }
}

/// A worker's units, taken from `rx` until it closes, their rests pushed
/// onto `rests` and counted when they end.
async fn run_units<J: Job>(
    flow: Arc<Flow>,
    mut chain: TransformChain,
    mut generations: watch::Receiver<Arc<Generation>>,
    rx: Arc<Mutex<mpsc::Receiver<J>>>,
    depth: usize,
    rests: &mut Rests,
) {
    use futures_util::{FutureExt, StreamExt};
    loop {
        // The next unit while fewer than `depth` rests run; meanwhile
        // their ends are counted.
        let job = tokio::select! {
            job = async { rx.lock().await.recv().await }, if rests.len() < depth => job,
            Some(ended) = rests.next(), if !rests.is_empty() => {
                rest_ended(&flow, ended);
                continue;
            }
        };
        let Some(job) = job else { break };
        chain = take_new_version(&flow.engine, chain, &mut generations).await;
        let ran = std::panic::AssertUnwindSafe(job.run_split(chain)).catch_unwind().await;
        chain = match ran {
            Ok((chain, Some(rest))) => {
                // Still in work (for `--once`) until the rest ends.
                rests.push(Running(tokio::spawn(rest)));
                chain
            }
            Ok((chain, None)) => {
                flow.activity.end();
                chain
            }
            // A bug, not an input: the unit's messages were dropped with
            // it (nothing keeps them invisible; they come back), and the
            // worker goes on with fresh plugin instances.
            Err(_) => {
                flow.activity.end();
                tracing::error!(pipeline = %flow.pipeline.name, "a worker panicked; its unit comes back later, the worker goes on");
                flow.failed(true, "a unit whose worker panicked", "worker panicked");
                let current = generations.borrow().clone();
                let engine = flow.engine.clone();
                let built = tokio::task::spawn_blocking(move || {
                    TransformChain::instantiate(&engine, &current.pipeline, &current.loaded)
                })
                .await;
                match built {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        flow.failed(false, "a worker", &format!("cannot renew its plugins after a panic: {e}"));
                        break;
                    }
                    Err(_) => {
                        flow.failed(false, "a worker", "cannot renew its plugins after a panic");
                        break;
                    }
                }
            }
        };
    }
    // No more units: the rests still running end first.
    while let Some(ended) = rests.next().await {
        rest_ended(&flow, ended);
    }
}

/// A unit's rest ended: it is no longer in work. One that panicked is a
/// bug, not an input: what it had not acknowledged comes back.
fn rest_ended(flow: &Flow, ended: Result<(), tokio::task::JoinError>) {
    flow.activity.end();
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!(pipeline = %flow.pipeline.name, "the commit of a unit panicked; what it had not acknowledged comes back later");
        flow.failed(true, "a unit whose commit panicked", "commit panicked");
    }
}
